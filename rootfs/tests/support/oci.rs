//! Builds OCI image layouts for tests: each layer a tar (made by GNU tar) of files given as
//! path + bytes, one manifest per platform, an image index when there are several.

use std::path::Path;
use std::process::Command;

use rootfs::digest::Digest;

/// Files of one layer: (path inside the image, content).
pub type LayerFiles = Vec<(String, Vec<u8>)>;

/// One platform's image.
pub struct ImageSpec {
    /// `amd64`, `arm64`, ...
    pub arch: &'static str,
    /// Layers, bottom first.
    pub layers: Vec<LayerFiles>,
}

/// What was written for one platform.
#[derive(Debug)]
pub struct Built {
    /// The platform's manifest digest.
    pub manifest: Digest,
    /// The uncompressed layer digests.
    pub diff_ids: Vec<Digest>,
}

/// Deterministic incompressible bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (Digest, usize) {
    let d = Digest::of(bytes);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(d.hex()), bytes).unwrap();
    (d, bytes.len())
}

fn layer_tar(files: &LayerFiles) -> Vec<u8> {
    let src = tempfile::tempdir().unwrap();
    for (p, data) in files {
        let path = src.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let out = Command::new("tar")
        // Fixed mtimes: the same files make the same layer (and diff_id) in every image,
        // even when two images are written on either side of a second boundary.
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
        ])
        .arg("-C")
        .arg(src.path())
        .args(["-cf", "-", "."])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn write_image(layout: &Path, spec: &ImageSpec) -> (Built, usize) {
    let tars: Vec<Vec<u8>> = spec.layers.iter().map(layer_tar).collect();
    write_image_tars(layout, spec.arch, &tars)
}

/// Writes one image of uncompressed layer tars `tars` (hostile ones included) to the OCI
/// layout `layout` as `tag`.
pub fn write_layout_of_tars(layout: &Path, tag: &str, tars: &[Vec<u8>]) -> Built {
    let (built, size) = write_image_tars(layout, "amd64", tars);
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{size},"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}]}}"#,
        built.manifest
    );
    std::fs::write(layout.join("index.json"), index).unwrap();
    built
}

fn write_image_tars(layout: &Path, arch: &str, tars: &[Vec<u8>]) -> (Built, usize) {
    let spec_arch = arch;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in tars {
        let (d, n) = put_blob(layout, tar);
        layers.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{n}}}"#
        ));
        diff_ids.push(format!("\"{d}\""));
    }
    let config = format!(
        r#"{{"architecture":"{}","os":"linux","config":{{"Cmd":["/bin/sh"]}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        spec_arch,
        diff_ids.join(",")
    );
    let (cd, cn) = put_blob(layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cn}}},"layers":[{}]}}"#,
        layers.join(",")
    );
    let (md, mn) = put_blob(layout, manifest.as_bytes());
    let diff_ids = diff_ids
        .iter()
        .map(|s| Digest::parse(s.trim_matches('"')).unwrap())
        .collect();
    (
        Built {
            manifest: md,
            diff_ids,
        },
        mn,
    )
}

/// Writes (or adds to) the OCI layout `layout`, naming the image (or index) `tag`.
pub fn write_layout(layout: &Path, tag: &str, images: &[ImageSpec]) -> Vec<Built> {
    std::fs::create_dir_all(layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut built = Vec::new();
    let mut entries = Vec::new();
    for spec in images {
        let (b, n) = write_image(layout, spec);
        entries.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{n},"platform":{{"architecture":"{}","os":"linux"}}}}"#,
            b.manifest, spec.arch
        ));
        built.push(b);
    }
    let top = if entries.len() == 1 {
        entries.pop().unwrap()
    } else {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            entries.join(",")
        );
        let (d, n) = put_blob(layout, index.as_bytes());
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{d}","size":{n}}}"#
        )
    };
    let top = top.replacen(
        '{',
        &format!(r#"{{"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}},"#),
        1,
    );
    let index_path = layout.join("index.json");
    let mut manifests: Vec<String> = match std::fs::read_to_string(&index_path) {
        Ok(s) => {
            let v: serde_json::Value = serde_json::from_str(&s).unwrap();
            v["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.to_string())
                .collect()
        }
        Err(_) => Vec::new(),
    };
    manifests.push(top);
    std::fs::write(
        index_path,
        format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            manifests.join(",")
        ),
    )
    .unwrap();
    built
}
