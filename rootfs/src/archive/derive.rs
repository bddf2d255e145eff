//! `derive`: one build step's image, on top of the image before it (or of nothing, for
//! `FROM scratch`): the same layers plus the step's own (if it made one), its config, and
//! one more history entry. Stored with its parent and the step's cache key, so that the
//! next build of the same step finds it (`Store::built`).

use super::{ArchiveError, import};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::config::{ContainerConfig, History, ImageConfig};
use crate::store::manifest;
use crate::store::{ImageRecord, Store};

/// What a build step makes.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The container defaults after the step.
    pub config: ContainerConfig,
    /// The layer it added (stored; its digest is its diff_id), if any.
    pub layer: Option<(Digest, u64)>,
    /// The history's `created_by` (the instruction).
    pub created_by: String,
    /// The config's and the history's time (RFC 3339).
    pub created: String,
    /// The cache key.
    pub key: String,
}

/// Stores the image `step` makes on `base` (`None`: scratch), tagged with `refs`.
pub fn derive(
    store: &Store,
    base: Option<&ImageRecord>,
    step: &Step,
    refs: &[Reference],
) -> Result<ImageRecord, ArchiveError> {
    let mut config = match base {
        Some(b) => b.config.clone(),
        None => ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..ImageConfig::default()
        },
    };
    config.created = Some(step.created.clone());
    config.config = Some(step.config.clone());
    config.history.push(History {
        created: Some(step.created.clone()),
        created_by: Some(step.created_by.clone()),
        comment: None,
        empty_layer: step.layer.is_none(),
    });
    let mut layers = match base {
        Some(b) => {
            manifest::parse_manifest(&store.read_blob(&b.manifest_digest)?)
                .map_err(|e| ArchiveError::Invalid("the base image".into(), e.to_string()))?
                .layers
        }
        None => Vec::new(),
    };
    if let Some((digest, size)) = &step.layer {
        config.rootfs.diff_ids.push(digest.clone());
        layers.push(import::desc(manifest::OCI_LAYER_TAR, digest.clone(), *size));
    }
    let md = import::store_manifest(store, &config, layers)?;
    let parent = base.map(|b| b.id.clone());
    Ok(store.add_built(&md, refs, parent, step.key.clone())?)
}
