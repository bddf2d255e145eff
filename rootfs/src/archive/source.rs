//! The files of an archive being loaded, whether it is a directory or a (gzip) tar. A tar is
//! read in one pass: small files are kept in memory, big ones are streamed into the store
//! straight away (they are blobs), symlinks are remembered. Paths from manifests are
//! resolved inside the archive only: `..` and absolute paths never reach the filesystem.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::ArchiveError;
use crate::digest::Digest;
use crate::store::{Store, StoreError};

/// Files at most this big are kept in memory while a tar is scanned.
const IN_MEMORY: u64 = 1 << 20;
/// Metadata files bigger than this are refused.
const MAX_METADATA: u64 = 64 << 20;

enum Entry {
    Mem(Vec<u8>),
    Blob(Digest),
    Link(String),
}

enum Kind {
    Dir(PathBuf),
    Tar(HashMap<String, Entry>),
}

/// An opened archive.
pub(super) struct Source {
    path: PathBuf,
    kind: Kind,
    /// Blobs this load stored (removed again at the end unless an image uses them).
    new_blobs: Vec<Digest>,
}

/// `a/./b`, `./a` -> `a/b`; `None` if it leaves the archive's root or is absolute.
fn normalise(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    if p.starts_with('/') {
        return None;
    }
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

impl Source {
    /// Opens a directory, or scans a tar (gzip detected by magic) into `store`.
    pub(super) fn open(store: &Store, path: &Path) -> Result<Self, ArchiveError> {
        let io_err = |e| ArchiveError::Io(path.to_owned(), e);
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let mut src = Self {
            path: path.to_owned(),
            kind: Kind::Dir(path.to_owned()),
            new_blobs: Vec::new(),
        };
        if meta.is_dir() {
            return Ok(src);
        }
        let mut r = BufReader::new(File::open(path).map_err(io_err)?);
        let gz = r.fill_buf().map_err(io_err)?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::GzDecoder::new(r))
        } else {
            Box::new(r)
        };
        let files = src.scan(store, reader);
        match files {
            Ok(files) => {
                src.kind = Kind::Tar(files);
                Ok(src)
            }
            Err(e) => {
                src.cleanup(store);
                Err(e)
            }
        }
    }

    fn scan(
        &mut self,
        store: &Store,
        reader: impl Read,
    ) -> Result<HashMap<String, Entry>, ArchiveError> {
        let path = self.path.clone();
        let corrupt = |e| ArchiveError::Corrupt(path.clone(), e);
        let mut files = HashMap::new();
        let mut ar = tar::Archive::new(reader);
        for entry in ar.entries().map_err(corrupt)? {
            let mut entry = entry.map_err(corrupt)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(name) = normalise(&name) else {
                continue;
            };
            let kind = entry.header().entry_type();
            if kind.is_symlink() {
                if let Some(t) = entry.link_name().map_err(corrupt)? {
                    files.insert(name, Entry::Link(t.to_string_lossy().into_owned()));
                }
            } else if kind.is_file() {
                if entry.size() <= IN_MEMORY {
                    let mut v = Vec::new();
                    entry.read_to_end(&mut v).map_err(corrupt)?;
                    files.insert(name, Entry::Mem(v));
                } else {
                    let mut counting = CountingReader::new(&mut entry);
                    let res = store.ingest_blob(None, &mut counting);
                    let (d, _) = res.map_err(|e| match e {
                        StoreError::Io(_, io) if counting.failed => corrupt(io),
                        other => ArchiveError::Store(other),
                    })?;
                    self.note(&d);
                    files.insert(name, Entry::Blob(d));
                }
            }
        }
        Ok(files)
    }

    /// The archive's path (for messages).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    fn lookup(&self, p: &str) -> Option<Lookup<'_>> {
        let mut name = normalise(p)?;
        match &self.kind {
            Kind::Dir(d) => {
                let full = d.join(&name);
                full.is_file().then_some(Lookup::File(full))
            }
            Kind::Tar(files) => {
                for _ in 0..16 {
                    match files.get(&name)? {
                        Entry::Mem(v) => return Some(Lookup::Mem(v)),
                        Entry::Blob(d) => return Some(Lookup::Blob(d)),
                        Entry::Link(t) => {
                            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                            name = normalise(&format!("{dir}/{t}"))?;
                        }
                    }
                }
                None
            }
        }
    }

    /// The contents of the small metadata file `p`, or `None` if absent.
    pub(super) fn bytes(&self, store: &Store, p: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let io_err = |e| ArchiveError::Io(self.path.clone(), e);
        match self.lookup(p) {
            None => Ok(None),
            Some(Lookup::Mem(v)) => Ok(Some(v.clone())),
            Some(Lookup::Blob(d)) => Ok(Some(store.read_blob(d)?)),
            Some(Lookup::File(f)) => {
                let file = File::open(&f).map_err(io_err)?;
                let mut v = Vec::new();
                file.take(MAX_METADATA)
                    .read_to_end(&mut v)
                    .map_err(io_err)?;
                Ok(Some(v))
            }
        }
    }

    /// Stores the file `p` (checked against `expected`); `None` if `p` is absent.
    pub(super) fn ingest(
        &mut self,
        store: &Store,
        p: &str,
        expected: Option<&Digest>,
    ) -> Result<Option<Digest>, StoreError> {
        let d = match self.lookup(p) {
            None => return Ok(None),
            Some(Lookup::Mem(v)) => {
                let v = v.clone();
                let d = store.put_bytes(expected, &v)?;
                self.note(&d);
                d
            }
            Some(Lookup::Blob(d)) => match expected {
                Some(e) if e != d => {
                    return Err(StoreError::DigestMismatch {
                        expected: e.clone(),
                        actual: d.clone(),
                    });
                }
                _ => d.clone(),
            },
            Some(Lookup::File(f)) => {
                let file = File::open(&f).map_err(|e| StoreError::Io(f.clone(), e))?;
                let (d, _) = store.ingest_blob(expected, BufReader::new(file))?;
                self.note(&d);
                d
            }
        };
        Ok(Some(d))
    }

    fn note(&mut self, d: &Digest) {
        if !self.new_blobs.contains(d) {
            self.new_blobs.push(d.clone());
        }
    }

    /// Removes the blobs this load stored that no image uses (after a failure, or files of
    /// the archive that were not part of any image).
    pub(super) fn cleanup(&self, store: &Store) {
        if let Err(e) = store.remove_unreferenced(&self.new_blobs) {
            log::warn!("cleaning up after loading {}: {e}", self.path.display());
        }
    }
}

enum Lookup<'a> {
    Mem(&'a Vec<u8>),
    Blob(&'a Digest),
    File(PathBuf),
}

/// Remembers whether the underlying reader failed (a truncated tar) as opposed to the
/// store's own writes.
struct CountingReader<R> {
    inner: R,
    failed: bool,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            failed: false,
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalise_stays_inside() {
        assert_eq!(normalise("./a/./b").as_deref(), Some("a/b"));
        assert_eq!(normalise("a/../b").as_deref(), Some("b"));
        assert_eq!(normalise("../x"), None);
        assert_eq!(normalise("/etc/passwd"), None);
    }
}
