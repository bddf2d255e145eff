//! Test images built by hand: tars, configs, manifests, and a docker-save or OCI layout of
//! them written into a directory or a tar.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;

use rootfs::digest::Digest;
use rootfs::store::manifest::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_MANIFEST};
use rootfs::store::{ImageRecord, Store};
use serde_json::json;

/// A tar with the given (path, contents) regular files.
pub fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, p, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn config(diff_ids: &[Digest], cmd: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": [cmd]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>()},
    }))
    .unwrap()
}

/// An image in memory: config + layers (each stored as given, possibly gzip).
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub gzip: bool,
}

impl TestImage {
    /// Layers from plain tars; `gzip` compresses the stored blobs.
    pub fn new(tars: &[Vec<u8>], cmd: &str, gzip_layers: bool) -> Self {
        let diff_ids: Vec<Digest> = tars.iter().map(|t| Digest::of(t)).collect();
        Self {
            config: config(&diff_ids, cmd),
            layers: tars
                .iter()
                .map(|t| if gzip_layers { gzip(t) } else { t.clone() })
                .collect(),
            gzip: gzip_layers,
        }
    }

    pub fn id(&self) -> Digest {
        Digest::of(&self.config)
    }

    pub fn manifest(&self) -> Vec<u8> {
        let mt = if self.gzip {
            OCI_LAYER_GZIP
        } else {
            OCI_LAYER_TAR
        };
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": self.id().to_string(), "size": self.config.len()},
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": mt, "digest": Digest::of(l).to_string(), "size": l.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    /// Puts every blob into `store` and records the image under `names`.
    pub fn add_to(&self, store: &Store, names: &[&str]) -> ImageRecord {
        for l in &self.layers {
            store.put_bytes(None, l).unwrap();
        }
        store.put_bytes(None, &self.config).unwrap();
        let md = store.put_bytes(None, &self.manifest()).unwrap();
        let refs: Vec<_> = names
            .iter()
            .map(|n| rootfs::reference::Reference::parse(n).unwrap())
            .collect();
        store.add_image(&md, &refs, false).unwrap()
    }

    /// The files of a docker-save archive (new layout: blobs/sha256/...).
    pub fn docker_files(&self, tag: &str) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![(blob(&self.id()), self.config.clone())];
        for l in &self.layers {
            files.push((blob(&Digest::of(l)), l.clone()));
        }
        let manifest = json!([{
            "Config": blob(&self.id()),
            "RepoTags": [tag],
            "Layers": self.layers.iter().map(|l| blob(&Digest::of(l))).collect::<Vec<_>>(),
        }]);
        files.push((
            "manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        ));
        files
    }

    /// The files of an OCI image layout naming the image `name`.
    pub fn oci_files(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let m = self.manifest();
        let mut files = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            (blob(&self.id()), self.config.clone()),
            (blob(&Digest::of(&m)), m.clone()),
        ];
        for l in &self.layers {
            files.push((blob(&Digest::of(l)), l.clone()));
        }
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST, "digest": Digest::of(&m).to_string(), "size": m.len(),
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "x"},
            }],
        });
        files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
        files
    }
}

pub fn blob(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Writes `files` as a tar at `path`.
pub fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

/// Writes `files` under the directory `dir`.
pub fn write_dir(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (p, data) in files {
        let full = dir.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, data).unwrap();
    }
}

/// The store is back to empty: no images, no blobs, no temporary files.
pub fn assert_empty(store: &Store) {
    assert!(store.list().unwrap().is_empty(), "no images");
    assert!(store.blobs().unwrap().is_empty(), "no blobs left");
    let tmp = std::fs::read_dir(store.dir().join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no temporary files");
}
