//! Images in and out of files: `load` (docker-save tars and OCI image layouts, as a
//! directory or a tar, optionally gzip-compressed), `import` (a root filesystem tar becomes a
//! one-layer image, like `docker import`), `commit` (a container's changes on top of its
//! image), `derive` (a build step's image) and `save` (docker-archive or OCI layout tar).

mod changes;
mod commit;
mod derive;
mod import;
mod load;
mod save;
mod source;

use std::io;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::store::StoreError;

pub use changes::apply_change;
pub use commit::{CommitOptions, commit, ingest_layer};
pub use derive::{Step, derive};
pub use import::{ImportOptions, import};
pub use load::load;
pub use save::{SaveFormat, save};

/// Errors from loading, importing and saving images.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or writing a file failed.
    #[error("{0}")]
    Io(PathBuf, #[source] io::Error),
    /// The archive ends in the middle of an entry or is otherwise unreadable as a tar.
    #[error("{0}: truncated or corrupt archive")]
    Corrupt(PathBuf, #[source] io::Error),
    /// Neither `manifest.json` (docker save) nor `index.json` (OCI layout) is present.
    #[error("{0}: not a docker-save archive or OCI image layout (no manifest.json or index.json)")]
    UnknownFormat(PathBuf),
    /// A metadata file is malformed.
    #[error("{path}: malformed {file}")]
    Json {
        /// The archive.
        path: PathBuf,
        /// The file inside it.
        file: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A file a manifest names is not in the archive.
    #[error("{archive}: image {image}: {what} {file} is missing from the archive")]
    Missing {
        /// The archive.
        archive: PathBuf,
        /// The image being loaded.
        image: String,
        /// "layer", "config", "manifest".
        what: &'static str,
        /// The path or digest that is missing.
        file: String,
    },
    /// A layer, config or manifest failed verification or storing.
    #[error("{archive}: image {image}: {what} {digest}")]
    Blob {
        /// The archive.
        archive: PathBuf,
        /// The image being loaded.
        image: String,
        /// "layer", "config", "manifest".
        what: &'static str,
        /// The blob's path or digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: Box<StoreError>,
    },
    /// A layer's uncompressed digest differs from the diff_id the config states.
    #[error("{archive}: image {image}: layer {layer} has diff_id {actual}, config says {expected}")]
    DiffId {
        /// The archive.
        archive: PathBuf,
        /// The image being loaded.
        image: String,
        /// The layer blob.
        layer: String,
        /// The config's diff_id.
        expected: Digest,
        /// The layer's actual uncompressed digest.
        actual: Digest,
    },
    /// Anything else about the archive's contents.
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
    /// An `--change` instruction husk does not understand.
    #[error("invalid --change {0:?}: {1}")]
    Change(String, String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}
