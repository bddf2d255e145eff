//! `commit`: a container's changes, as a layer tar, become a new image on top of the image
//! the container was made from (docker's `commit`): the base's layers plus this one (stored
//! uncompressed, so its digest is its diff_id), the container's config with `-c` changes
//! applied, and one more history entry.

use std::io::Read;
use std::path::Path;

use super::{ArchiveError, apply_change, import};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::config::{ContainerConfig, History};
use crate::store::manifest;
use crate::store::{ImageRecord, Store, StoreError};

/// What `commit` writes besides the layer.
#[derive(Debug, Default, Clone)]
pub struct CommitOptions {
    /// The image config's `config`: the container's own (Cmd, Env, ...).
    pub config: ContainerConfig,
    /// Dockerfile instructions applied to it (`-c`).
    pub changes: Vec<String>,
    /// The history comment (`-m`).
    pub message: Option<String>,
    /// The image's author (`-a`).
    pub author: Option<String>,
    /// The history's `created_by` (the container's command).
    pub created_by: String,
}

/// Stores the layer tar `layer` (checked to be a whole archive, possibly empty); returns
/// its digest (= diff_id) and size. Nothing is kept if it is not a tar.
pub fn ingest_layer(store: &Store, layer: impl Read) -> Result<(Digest, u64), ArchiveError> {
    let what = Path::new("the container's changes");
    let (digest, size) = store.ingest_blob(None, layer).map_err(|e| match e {
        StoreError::Io(_, io) => ArchiveError::Corrupt(what.to_owned(), io),
        e => e.into(),
    })?;
    if let Err(e) = import::check_tar(store, what, &digest, true) {
        let _ = store.remove_unreferenced(std::slice::from_ref(&digest));
        return Err(e);
    }
    Ok((digest, size))
}

/// Makes the image `base` + the stored layer `(digest, size)`, tagged `reference`. The
/// layer is dropped again if this fails.
pub fn commit(
    store: &Store,
    base: &ImageRecord,
    layer: (Digest, u64),
    reference: Option<&Reference>,
    opts: &CommitOptions,
) -> Result<ImageRecord, ArchiveError> {
    let (digest, size) = layer;
    let res = build(store, base, (&digest, size), reference, opts);
    if res.is_err() {
        let _ = store.remove_unreferenced(std::slice::from_ref(&digest));
    }
    res
}

fn build(
    store: &Store,
    base: &ImageRecord,
    (digest, size): (&Digest, u64),
    reference: Option<&Reference>,
    opts: &CommitOptions,
) -> Result<ImageRecord, ArchiveError> {
    let what = Path::new("the container's changes");
    let mut cc = opts.config.clone();
    for c in &opts.changes {
        apply_change(&mut cc, c)?;
    }
    let base_manifest = manifest::parse_manifest(&store.read_blob(&base.manifest_digest)?)
        .map_err(|e| ArchiveError::Invalid(what.to_owned(), e.to_string()))?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut config = base.config.clone();
    config.created = Some(now.clone());
    config.author = opts.author.clone();
    config.config = Some(cc);
    config.rootfs.diff_ids.push(digest.clone());
    config.history.push(History {
        created: Some(now),
        created_by: Some(opts.created_by.clone()),
        comment: opts.message.clone(),
        empty_layer: false,
    });
    let mut layers = base_manifest.layers.clone();
    layers.push(import::desc(manifest::OCI_LAYER_TAR, digest.clone(), size));
    let md = import::store_manifest(store, &config, layers)?;
    let refs: Vec<Reference> = reference.into_iter().cloned().collect();
    Ok(store.add_image(&md, &refs, false)?)
}
