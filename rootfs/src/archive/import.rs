//! `import`: a root filesystem tar (plain or gzip) becomes a one-layer image, as
//! `docker import` does: the layer is stored uncompressed (so its digest is its diff_id),
//! with a config for linux/amd64 and one history entry.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{ArchiveError, apply_change};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::config::{ContainerConfig, History, ImageConfig, RootFs};
use crate::store::manifest::{self, Descriptor, Manifest};
use crate::store::{ImageRecord, Store, StoreError};

/// Options of `husk import`.
#[derive(Debug, Default, Clone)]
pub struct ImportOptions {
    /// The history comment (`-m`).
    pub message: Option<String>,
    /// Dockerfile instructions applied to the config (`-c`).
    pub changes: Vec<String>,
}

/// Imports the tarball at `path` as a new image, tagged `reference` if given.
pub fn import(
    store: &Store,
    path: &Path,
    reference: Option<&Reference>,
    opts: &ImportOptions,
) -> Result<ImageRecord, ArchiveError> {
    let mut cc = ContainerConfig::default();
    for c in &opts.changes {
        apply_change(&mut cc, c)?;
    }
    let io_err = |e| ArchiveError::Io(path.to_owned(), e);
    let mut r = BufReader::new(File::open(path).map_err(io_err)?);
    let magic = r.fill_buf().map_err(io_err)?;
    if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ArchiveError::Invalid(
            path.to_owned(),
            "zstd-compressed tarballs are not supported by import: use a plain or gzip tar".into(),
        ));
    }
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let (layer, size) = store.ingest_blob(None, reader).map_err(|e| match e {
        StoreError::Io(_, io) => ArchiveError::Corrupt(path.to_owned(), io),
        e => e.into(),
    })?;
    let res = check_tar(store, path, &layer, false)
        .and_then(|()| build(store, &layer, size, cc, reference, opts));
    if res.is_err() {
        let _ = store.remove_unreferenced(std::slice::from_ref(&layer));
    }
    res
}

/// Reads the stored tar through to make sure it is a complete archive (with entries,
/// unless `may_be_empty`).
pub(super) fn check_tar(
    store: &Store,
    path: &Path,
    layer: &Digest,
    may_be_empty: bool,
) -> Result<(), ArchiveError> {
    let corrupt = |e| ArchiveError::Corrupt(path.to_owned(), e);
    let mut ar = tar::Archive::new(BufReader::new(store.open_blob(layer)?));
    let mut n = 0usize;
    for entry in ar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(corrupt)?;
        n += 1;
    }
    if n == 0 && !may_be_empty {
        return Err(ArchiveError::Invalid(
            path.to_owned(),
            "not a tar archive (no entries)".into(),
        ));
    }
    Ok(())
}

fn build(
    store: &Store,
    layer: &Digest,
    size: u64,
    cc: ContainerConfig,
    reference: Option<&Reference>,
    opts: &ImportOptions,
) -> Result<ImageRecord, ArchiveError> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        created: Some(now.clone()),
        author: None,
        config: Some(cc),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.clone()],
        },
        history: vec![History {
            created: Some(now),
            created_by: Some("husk import".into()),
            comment: Some(
                opts.message
                    .clone()
                    .unwrap_or_else(|| "Imported from tarball".into()),
            ),
            empty_layer: false,
        }],
    };
    let layers = vec![desc(manifest::OCI_LAYER_TAR, layer.clone(), size)];
    let md = store_manifest(store, &config, layers)?;
    let refs: Vec<Reference> = reference.into_iter().cloned().collect();
    Ok(store.add_image(&md, &refs, false)?)
}

/// Stores `config` and an OCI manifest of it with `layers`; returns the manifest's digest
/// (for `Store::add_image` and its kin).
pub(super) fn store_manifest(
    store: &Store,
    config: &ImageConfig,
    layers: Vec<Descriptor>,
) -> Result<Digest, ArchiveError> {
    let cfg_bytes = to_json(config, "image config")?;
    let cfg = store.put_bytes(None, &cfg_bytes)?;
    let m = Manifest {
        schema_version: 2,
        media_type: Some(manifest::OCI_MANIFEST.into()),
        config: desc(manifest::OCI_CONFIG, cfg, cfg_bytes.len() as u64),
        layers,
    };
    Ok(store.put_bytes(None, &to_json(&m, "image manifest")?)?)
}

pub(super) fn desc(mt: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: mt.to_owned(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    }
}

pub(super) fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(v).map_err(|source| ArchiveError::Json {
        path: what.into(),
        file: "generated document".into(),
        source,
    })
}
