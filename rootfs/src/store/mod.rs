//! The content store under `<root>/images/`: blobs addressed by sha256 (verified on write,
//! published by an atomic rename), and the image database (records, tags, repo digests)
//! updated under an exclusive `flock` with atomic rewrites, so two husk processes can pull,
//! load and tag at once and a crash leaves only temporary files behind.
//!
//! Layout: `blobs/sha256/<hex>`, `tmp/` (blobs being written), `db.json` (image records),
//! `lock` (the database lock).

pub mod config;
mod db;
mod images;
pub mod manifest;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::{Digest, DigestWriter};
use crate::reference::ReferenceError;

pub use db::{ImageRecord, LayerRecord, intermediates};
pub use images::RemoveEvent;

/// Temporary files older than this are leftovers of a crashed writer and are removed by
/// [`Store::open`].
const STALE_TMP: Duration = Duration::from_secs(3600);

/// Errors from the content store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Filesystem failure on a path of the store.
    #[error("image store: {0}")]
    Io(PathBuf, #[source] io::Error),
    /// Written content does not hash to the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What the writer announced.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// A blob an image needs is not in the store.
    #[error("blob {0} is missing from the store")]
    MissingBlob(Digest),
    /// No image matches.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// An ID prefix matches several images.
    #[error("image ID prefix {0} is ambiguous")]
    Ambiguous(String),
    /// The manifest or config of an image is unusable.
    #[error("image {image}: {reason}")]
    BadImage {
        /// Manifest digest or name.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest failed to parse.
    #[error("manifest {0}")]
    Manifest(Digest, #[source] manifest::ManifestError),
    /// The image config failed to parse.
    #[error("image config {0} is malformed")]
    Config(Digest, #[source] serde_json::Error),
    /// The image database failed to parse.
    #[error("image database {0} is corrupt")]
    Db(PathBuf, #[source] serde_json::Error),
    /// A reference failed to parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// Removal refused (in use, or several references without force).
    #[error("conflict: {0}")]
    Conflict(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |e| StoreError::Io(path.to_owned(), e)
}

/// An opened content store.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    state_root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store of the husk state directory `root`, and removes
    /// temporary files a crashed writer left more than an hour ago.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let dir = root.join("images");
        let s = Self {
            dir,
            state_root: root.to_owned(),
        };
        for d in [s.blobs_dir(), s.tmp_dir()] {
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        s.clean_tmp(STALE_TMP);
        Ok(s)
    }

    /// The `images/` directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The husk state directory this store belongs to.
    pub fn state_root(&self) -> &Path {
        &self.state_root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs").join("sha256")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Removes blobs a crashed writer left in `tmp/` and database rewrites (`.tmp-*`) it
    /// left in `images/`, if older than `older_than`.
    fn clean_tmp(&self, older_than: Duration) {
        let tmp = fs::read_dir(self.tmp_dir()).into_iter().flatten().flatten();
        let db_tmp = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"));
        let now = SystemTime::now();
        for e in tmp.chain(db_tmp) {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= older_than);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Where the blob `d` lives (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// Whether the blob `d` is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Opens the blob `d` for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(d.clone()),
            _ => StoreError::Io(p.clone(), e),
        })
    }

    /// Reads a (small) blob into memory.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut v = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut v)
            .map_err(io_err(&self.blob_path(d)))?;
        Ok(v)
    }

    /// Streams `reader` into the store: hashed while written to a temporary file, synced,
    /// checked against `expected` (a mismatch removes the temporary file and is an error)
    /// and renamed into place. Returns the digest and size. Safe to run concurrently with
    /// other writers of the same or other blobs.
    pub fn ingest_blob(
        &self,
        expected: Option<&Digest>,
        reader: impl Read,
    ) -> Result<(Digest, u64), StoreError> {
        let tmp_dir = self.tmp_dir();
        // Removed on drop unless persisted.
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempfile_in(&tmp_dir)
            .map_err(io_err(&tmp_dir))?;
        let tmp_path = tmp.path().to_owned();
        let mut reader = reader;
        let mut w = DigestWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
        io::copy(&mut reader, &mut w).map_err(io_err(&tmp_path))?;
        let (mut buf, digest, size) = w.finish();
        buf.flush().map_err(io_err(&tmp_path))?;
        drop(buf);
        if let Some(exp) = expected.filter(|e| **e != digest) {
            return Err(StoreError::DigestMismatch {
                expected: exp.clone(),
                actual: digest,
            });
        }
        let dest = self.blob_path(&digest);
        if dest.is_file() {
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().map_err(io_err(&tmp_path))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::Io(dest.clone(), e.error))?;
        Ok((digest, size))
    }

    /// Stores `bytes` (checked against `expected` if given).
    pub fn put_bytes(&self, expected: Option<&Digest>, bytes: &[u8]) -> Result<Digest, StoreError> {
        self.ingest_blob(expected, bytes).map(|(d, _)| d)
    }

    /// Every blob digest present.
    pub fn blobs(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies_and_dedups() {
        let root = tempfile::tempdir().unwrap();
        let s = Store::open(root.path()).unwrap();
        let (d, n) = s.ingest_blob(None, &b"hello"[..]).unwrap();
        assert_eq!((d.clone(), n), (Digest::of(b"hello"), 5));
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        assert_eq!(s.put_bytes(Some(&d), b"hello").unwrap(), d);
        let wrong = Digest::of(b"other");
        let e = s.put_bytes(Some(&wrong), b"evil").unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(!s.has_blob(&wrong));
        assert!(!s.has_blob(&Digest::of(b"evil")), "mismatch leaves nothing");
        assert_eq!(s.blobs().unwrap(), vec![d]);
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn open_removes_only_stale_tmp() {
        let root = tempfile::tempdir().unwrap();
        let s = Store::open(root.path()).unwrap();
        let fresh = s.tmp_dir().join("1-fresh");
        fs::write(&fresh, b"x").unwrap();
        s.clean_tmp(STALE_TMP);
        assert!(fresh.exists());
        s.clean_tmp(Duration::ZERO);
        assert!(!fresh.exists());
    }
}
