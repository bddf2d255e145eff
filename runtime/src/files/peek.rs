//! Small looks into a container's files for the builder: the stat of one path, and one
//! small file's bytes (`/etc/passwd` for `COPY --chown=NAME`). Both read the archive tool's
//! `Get` only as far as they need and drop the rest.

use std::io::{self, Read};
use std::path::Path;

use agent_proto::archive::ArchiveOp;

use super::stat::{PathStat, first_entry};
use super::{FilesError, Session};

/// The most of a tar read to find its first entry.
const MAX_HEAD: usize = 64 << 10;

/// The stat of `path` in container `query` (a final symlink not followed); `None` if it
/// does not exist.
pub fn stat(root: &Path, query: &str, path: &str) -> Result<Option<PathStat>, FilesError> {
    let session = Session::open(root, query)?;
    let op = ArchiveOp::Get {
        path: path.to_owned(),
    };
    // The tool may fail once this stops reading (a broken pipe): what was seen stands.
    let mut seen = None;
    let read = session.tool_reading(op, path, |r| {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while head.len() < MAX_HEAD && seen.is_none() {
            let n = r
                .read(&mut buf)
                .map_err(|e| FilesError::Local("read the archive".into(), e))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            seen = first_entry(&head);
        }
        Ok(())
    });
    session.close();
    match (seen, read) {
        (Some(stat), _) => Ok(Some(stat)),
        (None, Ok(()) | Err(FilesError::NotFound { .. })) => Ok(None),
        (None, Err(e)) => Err(e),
    }
}

/// The bytes of the regular file `path` in container `query` (at most `max`); `None` if it
/// is missing or not a regular file.
pub fn read_file(
    root: &Path,
    query: &str,
    path: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, FilesError> {
    let session = Session::open(root, query)?;
    let op = ArchiveOp::Get {
        path: path.to_owned(),
    };
    let found = session.tool_reading(op, path, |r| {
        let bad = |e: io::Error| FilesError::BadArchive(e.to_string());
        let mut tar = tar::Archive::new(r);
        let Some(entry) = tar.entries().map_err(bad)?.next() else {
            return Ok(None);
        };
        let entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        entry.take(max).read_to_end(&mut bytes).map_err(bad)?;
        // The rest (one file's end and the end blocks), so that the tool ends well.
        let _ = io::copy(tar.into_inner(), &mut io::sink());
        Ok(Some(bytes))
    });
    session.close();
    match found {
        Ok(bytes) => Ok(bytes),
        Err(FilesError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
