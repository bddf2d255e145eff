//! `save`: images to a docker-archive tar (`manifest.json`, `repositories`, blobs; what
//! `docker load` and `skopeo ... docker-archive:` read) or an OCI image-layout tar
//! (`oci-layout`, `index.json`, blobs; `oci-archive:`). Blobs shared by several images are
//! written once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};

use serde_json::json;

use super::ArchiveError;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::manifest::{self, Descriptor, Index, Manifest};
use crate::store::{ImageRecord, Store, StoreError};

/// Output format of [`save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SaveFormat {
    /// docker-archive (`docker save`).
    #[default]
    Docker,
    /// OCI image layout in a tar.
    Oci,
}

/// Writes the images `queries` name to `out` as one tar.
pub fn save(
    store: &Store,
    queries: &[String],
    format: SaveFormat,
    out: impl Write,
) -> Result<(), ArchiveError> {
    let images = select(store, queries)?;
    let mut w = Tar::new(out);
    let res = match format {
        SaveFormat::Docker => docker(store, &images, &mut w),
        SaveFormat::Oci => oci(store, &images, &mut w),
    };
    res?;
    w.finish()
}

/// The images and, for each, the tags to record (a tag query records that tag, an ID query
/// every tag of the image).
fn select(
    store: &Store,
    queries: &[String],
) -> Result<Vec<(ImageRecord, Vec<Reference>)>, ArchiveError> {
    let mut out: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
    for q in queries {
        let rec = store.resolve(q)?;
        let tags: Vec<Reference> = match Reference::parse(q) {
            Ok(r) if rec.references.contains(&r.to_string()) => vec![r],
            _ if q.contains('@') => Vec::new(),
            _ => rec.tags(),
        };
        match out.iter_mut().find(|(r, _)| r.id == rec.id) {
            Some((_, t)) => {
                for n in tags {
                    if !t.contains(&n) {
                        t.push(n);
                    }
                }
            }
            None => out.push((rec, tags)),
        }
    }
    Ok(out)
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn docker<W: Write>(
    store: &Store,
    images: &[(ImageRecord, Vec<Reference>)],
    w: &mut Tar<W>,
) -> Result<(), ArchiveError> {
    let mut entries = Vec::new();
    let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (rec, tags) in images {
        w.blob(store, &rec.id)?;
        for l in &rec.layers {
            w.blob(store, &l.digest)?;
        }
        let familiar: Vec<String> = tags.iter().map(Reference::familiar).collect();
        if let Some(top) = rec.layers.last() {
            for t in tags {
                repos.entry(t.familiar_name()).or_default().insert(
                    t.tag().unwrap_or("latest").to_owned(),
                    top.digest.hex().to_owned(),
                );
            }
        }
        entries.push(json!({
            "Config": blob_name(&rec.id),
            "RepoTags": if familiar.is_empty() { serde_json::Value::Null } else { json!(familiar) },
            "Layers": rec.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }));
    }
    w.bytes("manifest.json", &to_json(&entries)?)?;
    if !repos.is_empty() {
        w.bytes("repositories", &to_json(&repos)?)?;
    }
    Ok(())
}

/// The record's manifest with OCI media types (docker types translated).
fn oci_manifest(store: &Store, rec: &ImageRecord) -> Result<Manifest, ArchiveError> {
    let mut m = manifest::parse_manifest(&store.read_blob(&rec.manifest_digest)?)
        .map_err(|e| StoreError::Manifest(rec.manifest_digest.clone(), e))?;
    m.media_type = Some(manifest::OCI_MANIFEST.into());
    m.config.media_type = manifest::OCI_CONFIG.into();
    for l in &mut m.layers {
        l.media_type = match l.media_type.as_str() {
            manifest::DOCKER_LAYER_GZIP => manifest::OCI_LAYER_GZIP.into(),
            manifest::DOCKER_LAYER_TAR => manifest::OCI_LAYER_TAR.into(),
            other => other.to_owned(),
        };
    }
    Ok(m)
}

fn oci<W: Write>(
    store: &Store,
    images: &[(ImageRecord, Vec<Reference>)],
    w: &mut Tar<W>,
) -> Result<(), ArchiveError> {
    w.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut descs = Vec::new();
    for (rec, tags) in images {
        let m = oci_manifest(store, rec)?;
        w.blob(store, &m.config.digest)?;
        for l in &m.layers {
            w.blob(store, &l.digest)?;
        }
        let bytes = to_json(&m)?;
        let md = Digest::of(&bytes);
        w.bytes(&blob_name(&md), &bytes)?;
        let desc = |annotations| Descriptor {
            media_type: manifest::OCI_MANIFEST.into(),
            digest: md.clone(),
            size: bytes.len() as u64,
            platform: None,
            annotations,
        };
        if tags.is_empty() {
            descs.push(desc(BTreeMap::new()));
        }
        for t in tags {
            let mut a = BTreeMap::new();
            a.insert("io.containerd.image.name".to_owned(), t.to_string());
            a.insert(
                "org.opencontainers.image.ref.name".to_owned(),
                t.tag().unwrap_or("latest").to_owned(),
            );
            descs.push(desc(a));
        }
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(manifest::OCI_INDEX.into()),
        manifests: descs,
    };
    w.bytes("index.json", &to_json(&index)?)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(v).map_err(|source| ArchiveError::Json {
        path: "save".into(),
        file: "generated document".into(),
        source,
    })
}

/// A tar being written, remembering which files it has.
struct Tar<W: Write> {
    b: tar::Builder<W>,
    written: BTreeSet<String>,
}

impl<W: Write> Tar<W> {
    fn new(out: W) -> Self {
        Self {
            b: tar::Builder::new(out),
            written: BTreeSet::new(),
        }
    }

    fn io(e: io::Error) -> ArchiveError {
        ArchiveError::Io("save output".into(), e)
    }

    /// A file header; the `blobs/` directories are written before their first file.
    fn header(&mut self, name: &str, size: u64) -> Result<tar::Header, ArchiveError> {
        for dir in ["blobs/", "blobs/sha256/"] {
            if name.starts_with(dir) && self.written.insert(dir.to_owned()) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(0);
                h.set_mtime(0);
                h.set_cksum();
                self.b
                    .append_data(&mut h, dir, io::empty())
                    .map_err(Self::io)?;
            }
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size);
        h.set_mtime(0);
        h.set_cksum();
        Ok(h)
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ArchiveError> {
        if !self.written.insert(name.to_owned()) {
            return Ok(());
        }
        let mut h = self.header(name, data.len() as u64)?;
        self.b.append_data(&mut h, name, data).map_err(Self::io)
    }

    fn blob(&mut self, store: &Store, d: &Digest) -> Result<(), ArchiveError> {
        let name = blob_name(d);
        if self.written.contains(&name) {
            return Ok(());
        }
        let f = store.open_blob(d)?;
        let size = f.metadata().map_err(Self::io)?.len();
        let mut h = self.header(&name, size)?;
        self.written.insert(name.clone());
        self.b.append_data(&mut h, &name, f).map_err(Self::io)
    }

    fn finish(self) -> Result<(), ArchiveError> {
        let mut out = self.b.into_inner().map_err(Self::io)?;
        out.flush().map_err(Self::io)
    }
}
