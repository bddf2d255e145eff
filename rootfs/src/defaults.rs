//! husk's default images, built offline by `scripts/images.sh` into the cache
//! (`<cache>/images/busybox.tar`, `<cache>/images/debian-bookworm.tar`) and imported into a
//! store here as `husk/busybox:latest` and `husk/debian:bookworm`.

use std::path::PathBuf;

use crate::archive::{self, ArchiveError, ImportOptions};
use crate::cache::{CacheError, cache_dir};
use crate::digest::{Digest, DigestReader};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// Errors from importing a default image.
#[derive(Debug, thiserror::Error)]
pub enum DefaultsError {
    /// No cache directory.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The tarball has not been built.
    #[error("{0} is missing: run scripts/images.sh (scripts/prepare.sh does)")]
    NotBuilt(PathBuf),
    /// Importing failed.
    #[error("importing the default image {0}")]
    Import(&'static str, #[source] Box<ArchiveError>),
}

/// A default image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultImage {
    /// `husk/busybox:latest` (Debian's busybox-static).
    Busybox,
    /// `husk/debian:bookworm` (debootstrap minbase).
    Debian,
}

impl DefaultImage {
    /// The image's name.
    pub fn reference(self) -> &'static str {
        match self {
            Self::Busybox => "husk/busybox:latest",
            Self::Debian => "husk/debian:bookworm",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Self::Busybox => "busybox.tar",
            Self::Debian => "debian-bookworm.tar",
        }
    }

    fn cmd(self) -> &'static str {
        match self {
            Self::Busybox => r#"CMD ["sh"]"#,
            Self::Debian => r#"CMD ["bash"]"#,
        }
    }

    /// The root filesystem tarball in the cache (it may not exist yet).
    pub fn tarball(self) -> Result<PathBuf, DefaultsError> {
        Ok(cache_dir()?.join("images").join(self.file()))
    }

    /// Imports the image into `store` (a no-op apart from the tag if the same layer is
    /// already there under this name).
    pub fn import(self, store: &Store) -> Result<ImageRecord, DefaultsError> {
        let name = self.reference();
        let path = self.tarball()?;
        if !path.is_file() {
            return Err(DefaultsError::NotBuilt(path));
        }
        let import_err = |e| DefaultsError::Import(name, Box::new(e));
        let reference =
            Reference::parse(name).map_err(|e| import_err(ArchiveError::Store(e.into())))?;
        if let Ok(existing) = store.resolve(name) {
            let same = existing.layers.len() == 1
                && file_digest(&path).is_some_and(|d| d == existing.layers[0].diff_id);
            if same {
                return Ok(existing);
            }
        }
        let opts = ImportOptions {
            message: Some(format!("husk default image from {}", self.file())),
            changes: vec![self.cmd().to_owned()],
        };
        archive::import(store, &path, Some(&reference), &opts).map_err(import_err)
    }
}

fn file_digest(path: &std::path::Path) -> Option<Digest> {
    let mut r = DigestReader::new(std::fs::File::open(path).ok()?);
    std::io::copy(&mut r, &mut std::io::sink()).ok()?;
    Some(r.finish().1)
}
