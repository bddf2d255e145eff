//! Image verbs that need both the image store and the containers: making an image's layer
//! disks (undoing a fresh image whose disks cannot be made), pruning disks nobody uses,
//! and pulls (a pull ends with the disks built, so a run right after it starts at once).

use std::collections::HashSet;
use std::path::Path;

use rootfs::reference::Reference;
use rootfs::registry::{self, Progress, PullOptions, PullReport};
use rootfs::store::{ImageRecord, Store};

use crate::lifecycle::{self, InUse};

/// Errors of the image verbs.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The layer disks could not be made (the image was removed again if nothing uses it).
    #[error("cannot prepare the image's layer disks")]
    Disks(#[source] rootfs::layer::LayerError),
    /// Unused layer disks could not be removed.
    #[error("cannot remove unused layer disks")]
    Prune(#[source] std::io::Error),
    /// The image store could not be read.
    #[error("cannot read the image store")]
    Store(#[source] rootfs::store::StoreError),
    /// The reference is not one.
    #[error(transparent)]
    Reference(#[from] rootfs::reference::ReferenceError),
    /// The pull failed.
    #[error(transparent)]
    Pull(#[from] rootfs::registry::PullError),
}

/// Makes `rec`'s layer disks; on failure removes `rec` again unless a container uses it.
pub fn build_disks(root: &Path, store: &Store, rec: &ImageRecord) -> Result<(), ImageError> {
    if let Err(e) = rootfs::layer::ensure_layer_disks(root, store, rec) {
        if let Ok((_lock, in_use)) = lifecycle::images_in_use(root)
            && !in_use.images.contains(&rec.id)
        {
            let _ = store.remove_image(&rec.id.to_string(), true, &HashSet::new());
            let _ = prune_disks(root, store, &in_use);
        }
        return Err(ImageError::Disks(e));
    }
    Ok(())
}

/// Removes the layer disks no image and no container uses any more; the bytes freed.
pub fn prune_disks(root: &Path, store: &Store, containers: &InUse) -> Result<u64, ImageError> {
    let in_use = store.diff_ids_in_use().map_err(ImageError::Store)?;
    rootfs::layer::prune_layer_disks(root, &in_use, &containers.disks).map_err(ImageError::Prune)
}

/// Pulls `reference` (plain HTTP only to loopback and `insecure` registries), builds its
/// disks and records the `pull` event.
pub fn pull(
    root: &Path,
    reference: &Reference,
    insecure: Vec<String>,
    progress: &dyn Progress,
) -> Result<PullReport, ImageError> {
    let opts = PullOptions {
        insecure_registries: insecure,
        parallel: 3,
    };
    let report = registry::pull(root, reference, &opts, progress)?;
    let store = Store::open(root).map_err(ImageError::Store)?;
    build_disks(root, &store, &report.image)?;
    let name = reference.to_string();
    crate::events::record(
        root,
        &crate::events::Event::image("pull", &name, Some(&name)),
    );
    Ok(report)
}
