//! Layer disks: every image layer becomes a read-only EROFS block image in overlayfs form,
//! cached by diff_id under `<root>/layers/` and shared by every image that has the layer;
//! plus the container's writable scratch disk. See docs/layer-disks.md.
//!
//! The pipeline per layer: stream the blob (gzip / zstd / plain tar by magic), hashing the
//! uncompressed bytes into the diff_id and enforcing the expansion limits; materialise each
//! entry into a private staging tree under `<root>/layers/tmp/` with every path resolved
//! beneath the tree; resolve hardlinks into lower layers; `mkfs.erofs`; sync; rename into
//! place. The staging tree is removed on every path out.

mod disk;
mod entry;
mod extract;
mod fsops;
mod lower;
mod path;
mod scratch;
mod stream;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

pub use disk::{DiskError, create_scratch_disk};
pub use entry::EntryError;
pub use extract::ExtractError;
pub use lower::LowerLayer;
pub use path::PathError;
pub use scratch::{copy_scratch, create_scratch_from_template, data_digest, never_mounted};
pub use stream::{Compression, LayerLimits, StreamError};

use crate::digest::Digest;
use crate::store::{ImageRecord, Store};

/// Errors from building layer disks. Each names the layer (and, from
/// [`ensure_layer_disks`], the image).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The blob could not be opened or decoded.
    #[error("layer {0}")]
    Stream(String, #[source] StreamError),
    /// The tar could not be materialised (hostile, truncated or too large).
    #[error("layer {0}")]
    Extract(String, #[source] ExtractError),
    /// The uncompressed tar does not hash to the diff_id the image config lists.
    #[error("layer {layer}: diff_id mismatch: the image says {expected}, the tar is {actual}")]
    DiffId {
        /// The layer blob.
        layer: String,
        /// diff_id from the image config.
        expected: Digest,
        /// sha256 of the uncompressed tar.
        actual: Digest,
    },
    /// The block image could not be made or published.
    #[error("layer {0}")]
    Disk(String, #[source] DiskError),
    /// A layer of an image failed.
    #[error("image {0}")]
    Image(String, #[source] Box<LayerError>),
}

/// A layer's read-only block image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDisk {
    /// The EROFS image.
    pub path: PathBuf,
    /// sha256 of the uncompressed layer tar.
    pub diff_id: Digest,
    /// Size of the image in bytes.
    pub size: u64,
}

/// Where layer disks live: `<root>/layers`.
pub fn layers_dir(root: &Path) -> PathBuf {
    root.join("layers")
}

/// The disk of a self-contained layer: `<root>/layers/<diff_id hex>.erofs`.
pub fn disk_path(root: &Path, diff_id: &Digest) -> PathBuf {
    layers_dir(root).join(format!("{}.erofs", diff_id.hex()))
}

/// The disk of a layer that hardlinks files of its lower layers, so its contents depend on
/// them: keyed by the OCI ChainID of the lowers plus this layer.
fn chain_disk_path(root: &Path, lowers: &[LowerLayer], diff_id: &Digest) -> PathBuf {
    let mut chain = String::new();
    for d in lowers.iter().map(|l| &l.diff_id).chain([diff_id]) {
        chain = if chain.is_empty() {
            d.to_string()
        } else {
            format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{chain} {d}")))
            )
        };
    }
    let hex = chain.trim_start_matches("sha256:");
    layers_dir(root).join(format!("{hex}.chain.erofs"))
}

/// Builds (or finds in the cache) the disk of the layer tar at `blob`, with the default
/// limits. `expected_diff_id` (from the image config) is verified, and lets a cached disk be
/// used without reading the blob. `lower` are the layers below, bottom first: only needed
/// when the layer hardlinks their files.
pub fn build_layer_disk(
    root: &Path,
    blob: &Path,
    expected_diff_id: Option<&Digest>,
    lower: &[LowerLayer],
) -> Result<LayerDisk, LayerError> {
    build_layer_disk_with(root, blob, expected_diff_id, lower, LayerLimits::default())
}

/// [`build_layer_disk`] with explicit expansion limits.
pub fn build_layer_disk_with(
    root: &Path,
    blob: &Path,
    expected_diff_id: Option<&Digest>,
    lower: &[LowerLayer],
    limits: LayerLimits,
) -> Result<LayerDisk, LayerError> {
    let layer = layer_label(blob);
    let disk_err = |e| LayerError::Disk(layer.clone(), e);
    let dir = layers_dir(root);
    let tmp = dir.join("tmp");
    fs::create_dir_all(&tmp).map_err(|e| disk_err(DiskError::Io(tmp.clone(), e)))?;
    if let Some(disk) = expected_diff_id.and_then(|d| cached(root, d, lower)) {
        return Ok(disk);
    }
    sweep_stale(&tmp);
    let extract_err = |e| LayerError::Extract(layer.clone(), e);
    let mut stage = extract::Stage::new(&tmp, limits).map_err(extract_err)?;
    let stream = stream::LayerStream::open(blob, limits)
        .map_err(|e| LayerError::Stream(layer.clone(), e))?;
    let (diff_id, _) = stage.extract(stream).map_err(extract_err)?;
    if let Some(expected) = expected_diff_id.filter(|e| **e != diff_id) {
        return Err(LayerError::DiffId {
            layer,
            expected: expected.clone(),
            actual: diff_id,
        });
    }
    let pending = stage.take_pending();
    let dest = if pending.is_empty() {
        disk_path(root, &diff_id)
    } else {
        lower::resolve_pending(&mut stage, lower, pending).map_err(extract_err)?;
        chain_disk_path(root, lower, &diff_id)
    };
    if !dest.exists() {
        stage.finish_times().map_err(extract_err)?;
        let img = tempfile::Builder::new()
            .prefix(&format!("{}-disk-", std::process::id()))
            .tempfile_in(&tmp)
            .map_err(|e| disk_err(DiskError::Io(tmp.clone(), e)))?
            .into_temp_path();
        disk::make_erofs(&stage.tree(), &img).map_err(disk_err)?;
        disk::publish(&img, &dest).map_err(disk_err)?;
    }
    drop(stage);
    let size = fs::metadata(&dest)
        .map_err(|e| disk_err(DiskError::Io(dest.clone(), e)))?
        .len();
    Ok(LayerDisk {
        path: dest,
        diff_id,
        size,
    })
}

/// The cached disk for `diff_id`, if one exists.
fn cached(root: &Path, diff_id: &Digest, lower: &[LowerLayer]) -> Option<LayerDisk> {
    let candidates = [
        disk_path(root, diff_id),
        chain_disk_path(root, lower, diff_id),
    ];
    candidates.into_iter().find_map(|path| {
        let size = fs::metadata(&path).ok()?.len();
        Some(LayerDisk {
            path,
            diff_id: diff_id.clone(),
            size,
        })
    })
}

/// Builds (or finds) the disks of every layer of `image`, bottom first.
pub fn ensure_layer_disks(
    root: &Path,
    store: &Store,
    image: &ImageRecord,
) -> Result<Vec<LayerDisk>, LayerError> {
    let name = image
        .references
        .first()
        .cloned()
        .unwrap_or_else(|| image.id.short().to_owned());
    let mut lowers: Vec<LowerLayer> = Vec::new();
    let mut disks = Vec::new();
    for l in &image.layers {
        let blob = store.blob_path(&l.digest);
        let disk = build_layer_disk(root, &blob, Some(&l.diff_id), &lowers)
            .map_err(|e| LayerError::Image(name.clone(), Box::new(e)))?;
        disks.push(disk);
        lowers.push(LowerLayer {
            blob,
            diff_id: l.diff_id.clone(),
        });
    }
    Ok(disks)
}

/// The bytes of `image`'s layer disks: its uncompressed content as husk stores it, the
/// same however the image came in (pull, load or import), unlike the blob sizes. `None`
/// while a disk is missing.
pub fn image_disk_size(root: &Path, store: &Store, image: &ImageRecord) -> Option<u64> {
    let mut lowers: Vec<LowerLayer> = Vec::new();
    let mut total = 0;
    for l in &image.layers {
        total += cached(root, &l.diff_id, &lowers)?.size;
        lowers.push(LowerLayer {
            blob: store.blob_path(&l.digest),
            diff_id: l.diff_id.clone(),
        });
    }
    Some(total)
}

/// Removes the disks of layers no image uses any more (`in_use`: every diff_id of every
/// image, e.g. `Store::diff_ids_in_use`), except the files in `keep` (disks containers
/// still mount, even after their image was force-removed). Disks keyed by chain ID are
/// removed only when no image is left. Returns the bytes freed.
pub fn prune_layer_disks(
    root: &Path,
    in_use: &std::collections::BTreeSet<Digest>,
    keep: &std::collections::HashSet<std::path::PathBuf>,
) -> io::Result<u64> {
    let mut freed = 0;
    let entries = match fs::read_dir(layers_dir(root)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let unused = match name.strip_suffix(".erofs") {
            Some(stem) if stem.ends_with(".chain") => in_use.is_empty(),
            Some(hex) => Digest::from_hex(hex).is_ok_and(|d| !in_use.contains(&d)),
            None => false,
        };
        if unused && !keep.contains(&entry.path()) {
            freed += entry.metadata()?.len();
            fs::remove_file(entry.path())?;
        }
    }
    Ok(freed)
}

/// How errors name a layer: `sha256:<hex>` for a store blob, else the path.
fn layer_label(blob: &Path) -> String {
    let name = blob.file_name().map(|n| n.to_string_lossy().into_owned());
    let algo = blob
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    match (algo, name) {
        (Some(a), Some(n)) if a == "sha256" && Digest::from_hex(&n).is_ok() => {
            format!("sha256:{n}")
        }
        _ => blob.display().to_string(),
    }
}

/// Removes staging trees and temporary images left by husk processes that no longer run
/// (a crash mid-build). Names start with the builder's pid.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
        let Some(pid) = pid else { continue };
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let p = entry.path();
            let _ = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
        }
    }
}
