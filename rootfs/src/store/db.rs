//! The image database `db.json`: one record per image (keyed by image ID, the config
//! digest) with its tags and repo digests. Writers hold an exclusive `flock` on `lock` for
//! the whole read-modify-write and publish with an atomic rename; readers need no lock since
//! they always see a complete old or new file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::ImageConfig;
use super::{Store, StoreError, io_err};
use crate::cache::{CacheError, write_atomic};
use crate::digest::Digest;
use crate::reference::Reference;

const DB_VERSION: u32 = 1;

/// One layer of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the blob as stored (possibly compressed).
    pub digest: Digest,
    /// Media type of the blob.
    pub media_type: String,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar (from the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the config digest.
    pub id: Digest,
    /// Tags, fully qualified (`docker.io/library/busybox:latest`).
    pub references: Vec<String>,
    /// Repo digests (`docker.io/library/busybox@sha256:...`).
    pub repo_digests: Vec<String>,
    /// Digest of the manifest the image came with.
    pub manifest_digest: Digest,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// The parsed config.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// Creation time from the config (RFC 3339).
    pub created: Option<String>,
    /// Sum of the layer blob sizes.
    pub size: u64,
    /// When the image was added to this store (RFC 3339).
    pub added: String,
    /// The image a build step made this one on (docker's `Parent`; builds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// The build cache's key of the step that made it (builds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
}

impl ImageRecord {
    /// The tags as references.
    pub fn tags(&self) -> Vec<Reference> {
        self.references
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .collect()
    }

    /// Every blob the image needs: manifest, config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, &self.id]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

/// The untagged images of `images` that other images were built on (docker's intermediate
/// images, which `images` lists only with `-a`).
pub fn intermediates(images: &[ImageRecord]) -> std::collections::BTreeSet<Digest> {
    let parents: std::collections::BTreeSet<&Digest> =
        images.iter().filter_map(|r| r.parent.as_ref()).collect();
    images
        .iter()
        .filter(|r| r.references.is_empty() && parents.contains(&r.id))
        .map(|r| r.id.clone())
        .collect()
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Db {
    version: u32,
    pub(super) images: BTreeMap<Digest, ImageRecord>,
}

/// Holds the database lock until dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub(super) struct DbLock {
    _file: File,
}

impl Store {
    fn db_path(&self) -> PathBuf {
        self.dir.join("db.json")
    }

    /// Takes the exclusive database lock, waiting for other writers.
    pub(super) fn lock(&self) -> Result<DbLock, StoreError> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(DbLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(StoreError::Io(path, e));
            }
        }
    }

    /// Reads the database (empty if it does not exist yet).
    pub(super) fn read_db(&self) -> Result<Db, StoreError> {
        let path = self.db_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Db(path, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(StoreError::Io(path, e)),
        }
    }

    /// Publishes `db` atomically. Call only while holding [`Store::lock`].
    pub(super) fn write_db(&self, _lock: &DbLock, db: &mut Db) -> Result<(), StoreError> {
        db.version = DB_VERSION;
        let path = self.db_path();
        let bytes = serde_json::to_vec_pretty(&*db).map_err(|e| StoreError::Db(path.clone(), e))?;
        write_atomic(&path, |w| io::Write::write_all(w, &bytes)).map_err(|e| match e {
            CacheError::CreateDir(p, e) | CacheError::Write(p, e) | CacheError::Publish(p, e) => {
                StoreError::Io(p, e)
            }
            CacheError::NoCacheDir => StoreError::Io(path, io::Error::other("no directory")),
        })
    }

    /// Runs `f` on the database under the lock and publishes the result if `f` succeeds.
    pub(super) fn update<T>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lock = self.lock()?;
        let mut db = self.read_db()?;
        let out = f(&mut db)?;
        self.write_db(&lock, &mut db)?;
        Ok(out)
    }
}
