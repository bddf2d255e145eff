//! Downloading one blob into the content store: skipped when the store has it; otherwise
//! appended to `<root>/images/partial/<hex>` (held under an exclusive `flock`, so two husk
//! processes never write the same partial and the second one finds the finished blob),
//! resumed with `Range` when a partial exists, hashed while streaming, capped at the size
//! the manifest declares, and renamed into the store only when the digest matches.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::client::{Client, ClientError};
use super::progress::Progress;
use crate::digest::Digest;
use crate::store::Store;

const CHUNK: usize = 256 << 10;

/// Errors downloading a blob.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The registry request failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The registry does not have a blob the manifest references.
    #[error("blob unknown to the registry (the manifest references a missing blob)")]
    Missing,
    /// The content does not hash to its digest.
    #[error("digest mismatch: got {0}")]
    DigestMismatch(Digest),
    /// The registry sent more bytes than the manifest declares.
    #[error("registry sent more than the {0} bytes the manifest declares")]
    TooLong(u64),
    /// The transfer ended early.
    #[error("download interrupted after {got} of {want} bytes (rerun to resume)")]
    Short {
        /// Bytes on disk.
        got: u64,
        /// Bytes wanted.
        want: u64,
    },
    /// The registry answered a range request with a different range.
    #[error("registry answered a request from byte {0} with range {1:?}")]
    BadRange(u64, String),
    /// Local filesystem failure.
    #[error("{0}")]
    Io(PathBuf, #[source] io::Error),
}

/// What fetching a blob did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The store already had it (from an earlier pull or another image).
    AlreadyExists,
    /// Downloaded; `bytes` came over the network, the first `resumed_from` were on disk.
    Downloaded {
        /// Bytes transferred now.
        bytes: u64,
        /// Bytes reused from an earlier partial download.
        resumed_from: u64,
    },
}

/// The directory of partial downloads.
pub fn partial_dir(store: &Store) -> PathBuf {
    store.dir().join("partial")
}

/// Fetches blob `digest` of `size` bytes into `store`.
pub fn fetch_blob(
    client: &Client,
    store: &Store,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<Outcome, DownloadError> {
    if store.has_blob(digest) {
        return Ok(Outcome::AlreadyExists);
    }
    let dir = partial_dir(store);
    fs::create_dir_all(&dir).map_err(|e| DownloadError::Io(dir.clone(), e))?;
    let path = dir.join(digest.hex());
    let mut file = lock_partial(&path)?;
    // Another process may have finished it while we waited for the lock.
    if store.has_blob(digest) {
        let _ = fs::remove_file(&path);
        return Ok(Outcome::AlreadyExists);
    }
    let id = digest.short().to_owned();
    progress.start(&id, size);
    let resumed = partial_len(&file) > 0;
    let result = match download(client, &mut file, &path, digest, size, progress) {
        // A stale or corrupt partial: start over once.
        Err(DownloadError::DigestMismatch(got)) if resumed => {
            log::warn!("{digest}: resumed download did not verify ({got}); starting over");
            file.set_len(0)
                .map_err(|e| DownloadError::Io(path.clone(), e))?;
            download(client, &mut file, &path, digest, size, progress)
        }
        r => r,
    };
    match result {
        Ok(o) => {
            file.sync_all()
                .map_err(|e| DownloadError::Io(path.clone(), e))?;
            let dest = store.blob_path(digest);
            fs::rename(&path, &dest).map_err(|e| DownloadError::Io(dest, e))?;
            Ok(o)
        }
        Err(e) => {
            if matches!(
                e,
                DownloadError::DigestMismatch(_) | DownloadError::TooLong(_)
            ) {
                let _ = fs::remove_file(&path);
            }
            Err(e)
        }
    }
}

fn partial_len(file: &File) -> u64 {
    file.metadata().map(|m| m.len()).unwrap_or(0)
}

/// Opens and exclusively locks the partial file, making sure the locked inode is still the
/// one at `path` (a previous holder may have renamed or removed it).
fn lock_partial(path: &Path) -> Result<File, DownloadError> {
    let io = |e| DownloadError::Io(path.to_owned(), e);
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io(io::Error::last_os_error()));
        }
        let locked = file.metadata().map_err(io)?;
        match fs::metadata(path) {
            Ok(m) if m.ino() == locked.ino() && m.dev() == locked.dev() => return Ok(file),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        }
    }
}

/// Downloads the rest of the blob into `file` and verifies it.
fn download(
    client: &Client,
    file: &mut File,
    path: &Path,
    digest: &Digest,
    size: u64,
    progress: &dyn Progress,
) -> Result<Outcome, DownloadError> {
    let io = |e| DownloadError::Io(path.to_owned(), e);
    let mut have = partial_len(file);
    if have > size {
        file.set_len(0).map_err(io)?;
        have = 0;
    }
    let mut hasher = Sha256::new();
    if have > 0 {
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        io::copy(&mut (&*file).take(have), &mut HashSink(&mut hasher)).map_err(io)?;
    }
    let resp = client.blob(digest, have)?;
    let status = resp.status().as_u16();
    let start = match status {
        200 => 0,
        206 => {
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if range_start(&range) != Some(have) {
                return Err(DownloadError::BadRange(have, range));
            }
            have
        }
        416 if have > 0 => {
            drop(resp);
            file.set_len(0).map_err(io)?;
            return download(client, file, path, digest, size, progress);
        }
        404 => return Err(DownloadError::Missing),
        _ => return Err(client.status_error(resp, &digest.to_string()).into()),
    };
    if start == 0 && have > 0 {
        file.set_len(0).map_err(io)?;
        hasher = Sha256::new();
    }
    progress.advance(digest.short(), start);
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut body = resp.into_body().into_reader();
    let got = stream(
        &mut body,
        file,
        &mut hasher,
        start,
        size,
        digest,
        progress,
        path,
    )?;
    if got < size {
        return Err(DownloadError::Short { got, want: size });
    }
    let actual =
        Digest::from_hex(&hex::encode(hasher.finalize())).map_err(|e| io(io::Error::other(e)))?;
    if actual != *digest {
        return Err(DownloadError::DigestMismatch(actual));
    }
    Ok(Outcome::Downloaded {
        bytes: size - start,
        resumed_from: start,
    })
}

/// Copies the body to the file, hashing, until EOF; more than `size` bytes is an error.
#[allow(clippy::too_many_arguments)]
fn stream(
    body: &mut impl Read,
    file: &mut File,
    hasher: &mut Sha256,
    start: u64,
    size: u64,
    digest: &Digest,
    progress: &dyn Progress,
    path: &Path,
) -> Result<u64, DownloadError> {
    let id = digest.short().to_owned();
    let mut buf = vec![0u8; CHUNK];
    let mut got = start;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(got),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("{digest}: body read failed: {e}");
                let _ = file.flush();
                return Err(DownloadError::Short { got, want: size });
            }
        };
        if got + n as u64 > size {
            return Err(DownloadError::TooLong(size));
        }
        file.write_all(&buf[..n])
            .map_err(|e| DownloadError::Io(path.to_owned(), e))?;
        hasher.update(&buf[..n]);
        got += n as u64;
        progress.advance(&id, n as u64);
    }
}

/// `bytes 100-199/200` -> 100.
fn range_start(content_range: &str) -> Option<u64> {
    let r = content_range.trim().strip_prefix("bytes")?.trim_start();
    r.split('-').next()?.trim().parse().ok()
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-9/*"), Some(0));
        assert_eq!(range_start("items 1-2"), None);
        assert_eq!(range_start(""), None);
    }

    #[test]
    fn lock_survives_a_removed_partial() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let f = lock_partial(&p).unwrap();
        fs::remove_file(&p).unwrap();
        drop(f);
        let g = lock_partial(&p).unwrap();
        assert_eq!(g.metadata().unwrap().ino(), fs::metadata(&p).unwrap().ino());
    }
}
