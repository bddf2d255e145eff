//! Image verbs that need both the image store and the containers: making an image's layer
//! disks (undoing a fresh image whose disks cannot be made), pruning disks nobody uses,
//! and pulls (a pull ends with the disks built, so a run right after it starts at once).

use std::collections::HashSet;
use std::path::Path;

use rootfs::reference::Reference;
use rootfs::registry::{self, Progress, PullOptions, PullReport};
use rootfs::store::{ImageRecord, RemoveEvent, Store};

use crate::lifecycle::{self, InUse};

/// Errors of the image verbs.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The layer disks could not be made (the image was removed again if nothing uses it;
    /// the layer's own words say which entry of which layer).
    #[error(transparent)]
    Disks(rootfs::layer::LayerError),
    /// Unused layer disks could not be removed.
    #[error("cannot remove unused layer disks")]
    Prune(#[source] std::io::Error),
    /// The reference is not one.
    #[error(transparent)]
    Reference(#[from] rootfs::reference::ReferenceError),
    /// The pull failed.
    #[error(transparent)]
    Pull(#[from] rootfs::registry::PullError),
    /// The store refused (no such image, a conflict, ...).
    #[error(transparent)]
    Store(#[from] rootfs::store::StoreError),
    /// Which containers use images could not be read (the verb is refused rather than
    /// risking an image a container needs).
    #[error("cannot read which containers use images")]
    Containers(#[source] Box<crate::lifecycle::LifecycleError>),
    /// `rmi -f` of an image a running container uses.
    #[error(
        "conflict: unable to remove image {0} (cannot be forced): a running container is using it"
    )]
    RunningUser(String),
    /// An archive could not be read or written.
    #[error(transparent)]
    Archive(rootfs::archive::ArchiveError),
    /// A tag with a digest.
    #[error("refusing to create a tag with a digest reference")]
    DigestTag,
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
    let in_use = store.diff_ids_in_use().map_err(ImageError::from)?;
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
    let store = Store::open(root).map_err(ImageError::from)?;
    build_disks(root, &store, &report.image)?;
    let name = reference.to_string();
    crate::events::record(
        root,
        &crate::events::Event::image("pull", &name, Some(&name)),
    );
    Ok(report)
}

/// Removes (untags, and deletes when no tag is left) image `query`, as `rmi` does: one
/// that containers use only with `force`, never one a running container uses. Records the
/// events and prunes the layer disks nothing uses any more.
pub fn remove(root: &Path, query: &str, force: bool) -> Result<Vec<RemoveEvent>, ImageError> {
    let store = Store::open(root)?;
    // Held throughout: no container is created on an image while it is being removed.
    let (_lock, in_use) =
        lifecycle::images_in_use(root).map_err(|e| ImageError::Containers(Box::new(e)))?;
    let running = store
        .resolve(query)
        .is_ok_and(|rec| in_use.running.contains(&rec.id));
    if running && force {
        return Err(ImageError::RunningUser(query.to_owned()));
    }
    let events = store.remove_image(query, force, &in_use.images)?;
    for e in &events {
        let event = match e {
            RemoveEvent::Untagged(n) => crate::events::Event::image("untag", n, Some(n)),
            RemoveEvent::Deleted(d) => crate::events::Event::image("delete", &d.to_string(), None),
        };
        crate::events::record(root, &event);
    }
    if events.iter().any(|e| matches!(e, RemoveEvent::Deleted(_))) {
        prune_disks(root, &store, &in_use)?;
    }
    Ok(events)
}

/// Removes dangling images (every image no container uses, with `all`) and the layer
/// disks no image needs any more: what was untagged and deleted, and the bytes freed.
pub fn prune(root: &Path, all: bool) -> Result<(Vec<RemoveEvent>, u64), ImageError> {
    let store = Store::open(root)?;
    let (_lock, in_use) =
        lifecycle::images_in_use(root).map_err(|e| ImageError::Containers(Box::new(e)))?;
    let (events, freed) = store.prune(all, &in_use.images)?;
    for e in &events {
        if let RemoveEvent::Deleted(d) = e {
            crate::events::record(
                root,
                &crate::events::Event::image("delete", &d.to_string(), None),
            );
        }
    }
    Ok((events, freed + prune_disks(root, &store, &in_use)?))
}

/// Tags image `source` as `target` (a name with a tag, never a digest).
pub fn tag(root: &Path, source: &str, target: &str) -> Result<ImageRecord, ImageError> {
    let dst = Reference::parse(target)?;
    if dst.digest().is_some() {
        return Err(ImageError::DigestTag);
    }
    let rec = Store::open(root)?.tag(source, &dst)?;
    let name = dst.to_string();
    crate::events::record(
        root,
        &crate::events::Event::image("tag", &rec.id.to_string(), Some(&name)),
    );
    Ok(rec)
}

pub(super) fn kind(e: &ImageError) -> super::ErrorKind {
    use super::ErrorKind as K;
    use rootfs::store::StoreError as S;
    match e {
        ImageError::Reference(_) | ImageError::DigestTag | ImageError::Archive(_) => K::BadRequest,
        ImageError::Store(S::NoSuchImage(_)) => K::NotFound,
        ImageError::Store(S::Conflict(_) | S::Ambiguous(_)) | ImageError::RunningUser(_) => {
            K::Conflict
        }
        _ => K::Internal,
    }
}

/// Writes images `queries` as one docker-archive tar to `out` (docker's `save`).
pub fn save(root: &Path, queries: &[String], out: impl std::io::Write) -> Result<(), ImageError> {
    let store = Store::open(root)?;
    for q in queries {
        store.resolve(q)?;
    }
    rootfs::archive::save(&store, queries, rootfs::archive::SaveFormat::Docker, out)
        .map_err(ImageError::Archive)?;
    for q in queries {
        crate::events::record(root, &crate::events::Event::image("save", q, None));
    }
    Ok(())
}

/// Loads the docker-archive or OCI-layout tar at `path` (docker's `load`), building each
/// image's disks; the images.
pub fn load(root: &Path, path: &Path) -> Result<Vec<ImageRecord>, ImageError> {
    let store = Store::open(root)?;
    let images = rootfs::archive::load(&store, path).map_err(ImageError::Archive)?;
    for rec in &images {
        build_disks(root, &store, rec)?;
        crate::events::record(
            root,
            &crate::events::Event::image("load", &rec.id.to_string(), None),
        );
    }
    Ok(images)
}
