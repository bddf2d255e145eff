//! What a `cp` archive's root entry says about the copied path (docker's "path stat": name,
//! size, mode, mtime, link target), read from the archive's first entry as it streams by,
//! so that one run of the container's archive tool both describes and carries the copy.

use std::io::{self, Write};

/// docker's `ContainerPathStat`, with the mode in Go's `os.FileMode` encoding (permission
/// bits, plus `1<<31` for a directory and `1<<27` for a symlink), as clients decode it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PathStat {
    /// The path's last component.
    pub name: String,
    /// Bytes (files).
    pub size: i64,
    /// Go's `os.FileMode`.
    pub mode: u32,
    /// RFC 3339.
    pub mtime: String,
    /// A symlink's target (empty otherwise).
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Go's `os.ModeDir`.
const GO_MODE_DIR: u32 = 1 << 31;

impl PathStat {
    /// Whether the path is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & GO_MODE_DIR != 0
    }
}
/// Go's `os.ModeSymlink`.
const GO_MODE_SYMLINK: u32 = 1 << 27;

/// The stat of the first entry of a tar that starts with `head`; `None` while `head` does
/// not hold a whole first entry header yet (or it is not a tar).
pub fn first_entry(head: &[u8]) -> Option<PathStat> {
    let mut archive = tar::Archive::new(io::Cursor::new(head));
    let mut entries = archive.entries().ok()?;
    let entry = entries.next()?.ok()?;
    let h = entry.header();
    let perm = h.mode().ok()? & 0o7777;
    let kind = h.entry_type();
    let mode = match () {
        _ if kind.is_dir() => perm | GO_MODE_DIR,
        _ if kind.is_symlink() => perm | GO_MODE_SYMLINK,
        _ => perm,
    };
    let name = entry
        .path()
        .ok()?
        .to_string_lossy()
        .trim_end_matches('/')
        .to_owned();
    let link_target = entry
        .link_name()
        .ok()
        .flatten()
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mtime = chrono::DateTime::from_timestamp(h.mtime().ok()? as i64, 0)?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Some(PathStat {
        name,
        size: i64::try_from(h.size().ok()?).unwrap_or(i64::MAX),
        mode,
        mtime,
        link_target,
    })
}

/// A writer that passes a tar through to `out` and reports its first entry's stat to
/// `report` once it has seen it (held back until then, at most [`MAX_HEAD`] bytes).
pub struct StatTap<W: Write, F: FnMut(Option<PathStat>)> {
    out: W,
    head: Vec<u8>,
    report: Option<F>,
}

/// The most bytes held back while looking for the first entry's header.
pub const MAX_HEAD: usize = 64 << 10;

impl<W: Write, F: FnMut(Option<PathStat>)> std::fmt::Debug for StatTap<W, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatTap")
            .field("held", &self.head.len())
            .field("reported", &self.report.is_none())
            .finish()
    }
}

impl<W: Write, F: FnMut(Option<PathStat>)> StatTap<W, F> {
    /// A tap in front of `out`.
    pub fn new(out: W, report: F) -> Self {
        Self {
            out,
            head: Vec::new(),
            report: Some(report),
        }
    }

    /// Ends the stream: reports (even `None`) if nothing was reported yet, and passes on
    /// what was held back.
    pub fn finish(mut self) -> io::Result<W> {
        if let Some(mut report) = self.report.take() {
            report(first_entry(&self.head));
            self.out.write_all(&self.head)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write, F: FnMut(Option<PathStat>)> Write for StatTap<W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(report) = self.report.as_mut() else {
            return self.out.write(buf);
        };
        self.head.extend_from_slice(buf);
        let stat = first_entry(&self.head);
        if stat.is_some() || self.head.len() >= MAX_HEAD {
            report(stat);
            self.report = None;
            let head = std::mem::take(&mut self.head);
            self.out.write_all(&head)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tar_of(kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn directories_files_and_links_in_gos_encoding() {
        let dir = first_entry(&tar_of(tar::EntryType::Directory, "etc/", None, b"")).unwrap();
        assert_eq!(dir.name, "etc");
        assert_eq!(dir.mode, 0o755 | GO_MODE_DIR);
        assert_eq!(dir.mtime, "2023-11-14T22:13:20Z");
        let file = first_entry(&tar_of(tar::EntryType::Regular, "hostname", None, b"abc")).unwrap();
        assert_eq!((file.size, file.mode), (3, 0o755));
        let link = first_entry(&tar_of(tar::EntryType::Symlink, "l", Some("/x"), b"")).unwrap();
        assert_eq!(link.mode, 0o755 | GO_MODE_SYMLINK);
        assert_eq!(link.link_target, "/x");
        assert!(first_entry(b"short").is_none());
    }

    #[test]
    fn the_tap_holds_back_only_until_the_header() {
        let tar = tar_of(tar::EntryType::Regular, "f", None, &[7u8; 3000]);
        let mut seen = Vec::new();
        let mut tap = StatTap::new(Vec::new(), |s| seen.push(s));
        for chunk in tar.chunks(100) {
            tap.write_all(chunk).unwrap();
        }
        let out = tap.finish().unwrap();
        assert_eq!(out, tar);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].as_ref().unwrap().size, 3000);
    }
}
