//! `load`: docker-save archives (`manifest.json` + config + layer tars, old or new layout)
//! and OCI image layouts (`index.json`, `oci-layout`, `blobs/`), as a directory or a tar.
//! Every blob is verified against its digest, every layer against the config's diff_id;
//! whatever a failed load stored and no image uses is removed again.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use super::ArchiveError;
use super::source::Source;
use crate::digest::{Digest, DigestReader};
use crate::reference::Reference;
use crate::store::config::ImageConfig;
use crate::store::manifest::{self, Descriptor, Index, Manifest, Parsed};
use crate::store::{ImageRecord, Store, StoreError};

/// Loads every image in the archive or layout at `path` into `store`.
pub fn load(store: &Store, path: &Path) -> Result<Vec<ImageRecord>, ArchiveError> {
    let mut src = Source::open(store, path)?;
    let res = if let Some(bytes) = src.bytes(store, "manifest.json")? {
        load_docker(store, &mut src, &bytes)
    } else if let Some(bytes) = src.bytes(store, "index.json")? {
        load_oci(store, &mut src, &bytes)
    } else {
        Err(ArchiveError::UnknownFormat(path.to_owned()))
    };
    src.cleanup(store);
    res
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// One image being loaded, for error messages and blob handling.
struct Loading<'a> {
    store: &'a Store,
    image: String,
}

impl Loading<'_> {
    fn blob(
        &self,
        src: &mut Source,
        what: &'static str,
        file: &str,
        expected: Option<&Digest>,
    ) -> Result<Digest, ArchiveError> {
        let archive = src.path().to_owned();
        let blob_err = |source| ArchiveError::Blob {
            archive: archive.clone(),
            image: self.image.clone(),
            what,
            digest: file.to_owned(),
            source: Box::new(source),
        };
        match src.ingest(self.store, file, expected) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(ArchiveError::Missing {
                archive: archive.clone(),
                image: self.image.clone(),
                what,
                file: file.to_owned(),
            }),
            Err(e) => Err(blob_err(e)),
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(
        &self,
        src: &Source,
        file: &str,
        bytes: &[u8],
    ) -> Result<T, ArchiveError> {
        serde_json::from_slice(bytes).map_err(|source| ArchiveError::Json {
            path: src.path().to_owned(),
            file: format!("{file} of image {}", self.image),
            source,
        })
    }

    /// Checks that the stored layer `d` unpacks to `diff_id`; returns its media type.
    fn check_layer(
        &self,
        src: &Source,
        d: &Digest,
        diff_id: &Digest,
        docker: bool,
    ) -> Result<&'static str, ArchiveError> {
        let blob_err = |source| ArchiveError::Blob {
            archive: src.path().to_owned(),
            image: self.image.clone(),
            what: "layer",
            digest: d.to_string(),
            source: Box::new(source),
        };
        let mut r = BufReader::new(self.store.open_blob(d).map_err(blob_err)?);
        let io_fail = |e: io::Error| {
            ArchiveError::Invalid(
                src.path().to_owned(),
                format!("image {}: layer {d}: {e}", self.image),
            )
        };
        let magic = r.fill_buf().map_err(io_fail)?;
        let (actual, mt) = if magic.starts_with(&[0x1f, 0x8b]) {
            let mut h = DigestReader::new(flate2::read::GzDecoder::new(r));
            io::copy(&mut h, &mut io::sink()).map_err(io_fail)?;
            let mt = if docker {
                manifest::DOCKER_LAYER_GZIP
            } else {
                manifest::OCI_LAYER_GZIP
            };
            (h.finish().1, mt)
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            // zstd: the diff_id is verified when the layer is unpacked into its disk.
            return Ok(manifest::OCI_LAYER_ZSTD);
        } else {
            let mt = if docker {
                manifest::DOCKER_LAYER_TAR
            } else {
                manifest::OCI_LAYER_TAR
            };
            (d.clone(), mt)
        };
        if actual != *diff_id {
            return Err(ArchiveError::DiffId {
                archive: src.path().to_owned(),
                image: self.image.clone(),
                layer: d.to_string(),
                expected: diff_id.clone(),
                actual,
            });
        }
        Ok(mt)
    }
}

/// `blobs/sha256/<hex>` or `<hex>.json` / `<hex>/layer.tar` names announce their digest.
fn digest_in_path(p: &str) -> Option<Digest> {
    let name = p.strip_prefix("blobs/sha256/").unwrap_or(p);
    let name = name.strip_suffix(".json").unwrap_or(name);
    Digest::from_hex(name).ok()
}

fn load_docker(
    store: &Store,
    src: &mut Source,
    bytes: &[u8],
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let top = Loading {
        store,
        image: "(manifest.json)".into(),
    };
    let entries: Vec<DockerEntry> = top.json(src, "manifest.json", bytes)?;
    let mut out = Vec::new();
    for e in entries {
        let tags = e.repo_tags.unwrap_or_default();
        let l = Loading {
            store,
            image: tags.first().cloned().unwrap_or_else(|| e.config.clone()),
        };
        let cfg_digest = l.blob(src, "config", &e.config, digest_in_path(&e.config).as_ref())?;
        let cfg_bytes = store.read_blob(&cfg_digest)?;
        let config: ImageConfig = l.json(src, &e.config, &cfg_bytes)?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(ArchiveError::Invalid(
                src.path().to_owned(),
                format!(
                    "image {}: {} layers but {} diff_ids",
                    l.image,
                    e.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (path, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let d = l.blob(src, "layer", path, digest_in_path(path).as_ref())?;
            let mt = l.check_layer(src, &d, diff_id, true)?;
            layers.push(descriptor(store, mt, d)?);
        }
        let m = Manifest {
            schema_version: 2,
            media_type: Some(manifest::DOCKER_MANIFEST.into()),
            config: descriptor(store, manifest::DOCKER_CONFIG, cfg_digest)?,
            layers,
        };
        let refs = parse_refs(src, &tags)?;
        out.push(add(store, &l, src, &m, &refs)?);
    }
    Ok(out)
}

fn descriptor(store: &Store, mt: &str, digest: Digest) -> Result<Descriptor, StoreError> {
    let p = store.blob_path(&digest);
    let size = std::fs::metadata(&p)
        .map_err(|e| StoreError::Io(p, e))?
        .len();
    Ok(Descriptor {
        media_type: mt.to_owned(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    })
}

fn parse_refs(src: &Source, names: &[String]) -> Result<Vec<Reference>, ArchiveError> {
    names
        .iter()
        .map(|t| {
            Reference::parse(t).map_err(|e| {
                ArchiveError::Invalid(src.path().to_owned(), format!("bad image name {t:?}: {e}"))
            })
        })
        .collect()
}

fn add(
    store: &Store,
    l: &Loading<'_>,
    src: &Source,
    m: &Manifest,
    refs: &[Reference],
) -> Result<ImageRecord, ArchiveError> {
    let bytes = serde_json::to_vec(m).map_err(|source| ArchiveError::Json {
        path: src.path().to_owned(),
        file: "generated manifest".into(),
        source,
    })?;
    let md = store.put_bytes(None, &bytes)?;
    store
        .add_image(&md, refs, false)
        .map_err(|source| ArchiveError::Blob {
            archive: src.path().to_owned(),
            image: l.image.clone(),
            what: "manifest",
            digest: md.to_string(),
            source: Box::new(source),
        })
}

fn blob_file(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn load_oci(
    store: &Store,
    src: &mut Source,
    bytes: &[u8],
) -> Result<Vec<ImageRecord>, ArchiveError> {
    let top = Loading {
        store,
        image: "(index.json)".into(),
    };
    let index: Index = top.json(src, "index.json", bytes)?;
    let mut out = Vec::new();
    for desc in &index.manifests {
        let names = oci_names(desc);
        let l = Loading {
            store,
            image: names
                .first()
                .cloned()
                .unwrap_or_else(|| desc.digest.to_string()),
        };
        let (md, m) = oci_manifest(&l, src, &desc.digest, 0)?;
        let cfg = l.blob(
            src,
            "config",
            &blob_file(&m.config.digest),
            Some(&m.config.digest),
        )?;
        let config: ImageConfig = l.json(src, "config", &store.read_blob(&cfg)?)?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(ArchiveError::Invalid(
                src.path().to_owned(),
                format!(
                    "image {}: {} layers but {} diff_ids",
                    l.image,
                    m.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        for (layer, diff_id) in m.layers.iter().zip(&config.rootfs.diff_ids) {
            l.blob(src, "layer", &blob_file(&layer.digest), Some(&layer.digest))?;
            l.check_layer(src, &layer.digest, diff_id, false)?;
        }
        let refs = parse_refs(src, &names)?;
        let rec = store
            .add_image(&md, &refs, false)
            .map_err(|source| ArchiveError::Blob {
                archive: src.path().to_owned(),
                image: l.image.clone(),
                what: "manifest",
                digest: md.to_string(),
                source: Box::new(source),
            })?;
        out.push(rec);
    }
    Ok(out)
}

/// The image name an OCI layout gives a manifest: containerd's full name, else a
/// `ref.name` that is a full reference (a bare tag names nothing).
fn oci_names(desc: &Descriptor) -> Vec<String> {
    let a = &desc.annotations;
    let full = a.get("io.containerd.image.name").cloned().or_else(|| {
        a.get("org.opencontainers.image.ref.name")
            .filter(|n| n.contains('/') || n.contains(':'))
            .cloned()
    });
    full.into_iter().collect()
}

/// Stores the manifest `d` (descending into a nested index for linux/amd64).
fn oci_manifest(
    l: &Loading<'_>,
    src: &mut Source,
    d: &Digest,
    depth: u32,
) -> Result<(Digest, Manifest), ArchiveError> {
    let md = l.blob(src, "manifest", &blob_file(d), Some(d))?;
    let bytes = l.store.read_blob(&md)?;
    let bad = |e: manifest::ManifestError| {
        ArchiveError::Invalid(
            src.path().to_owned(),
            format!("image {}: manifest {d}: {e}", l.image),
        )
    };
    match manifest::parse(&bytes, None).map_err(bad)? {
        Parsed::Manifest(m) => Ok((md, m)),
        Parsed::Index(i) if depth == 0 => {
            let next = manifest::select_platform(&i).map_err(bad)?.digest.clone();
            oci_manifest(l, src, &next, 1)
        }
        Parsed::Index(_) => Err(ArchiveError::Invalid(
            src.path().to_owned(),
            format!("image {}: index nested too deep", l.image),
        )),
    }
}
