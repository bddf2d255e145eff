//! Image manifests, OCI image indexes and Docker manifest lists: media types, parsing, and
//! choosing the linux/amd64 entry of an index. Shared by pull, load and save.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer (what `docker save` writes).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// The `Accept` list a registry client sends for manifests.
pub const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Errors from parsing manifests and indexes.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON of the expected shape.
    #[error("malformed manifest or index")]
    Json(#[source] serde_json::Error),
    /// A schema version other than 2.
    #[error("unsupported manifest schema version {0} (only 2)")]
    SchemaVersion(u32),
    /// A media type husk does not handle.
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    /// An index without a linux/amd64 entry.
    #[error("no linux/amd64 image in the index (it has: {0})")]
    NoPlatform(String),
}

/// The platform an index entry is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`).
    pub architecture: String,
    /// Operating system (`linux`).
    pub os: String,
    /// CPU variant, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A content descriptor: what a manifest or index points at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the target.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the target.
    pub digest: Digest,
    /// Size in bytes of the target.
    pub size: u64,
    /// The platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations (OCI layouts name images with `org.opencontainers.image.ref.name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker schema 2; same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, if the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An OCI image index or Docker manifest list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, if the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests.
    pub manifests: Vec<Descriptor>,
}

/// A parsed manifest-or-index document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A single-platform image manifest.
    Manifest(Manifest),
    /// A multi-platform index.
    Index(Index),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
}

/// Parses a manifest or index. `content_type` is the registry's header, if any; the
/// document's own `mediaType` wins, and without either the shape decides.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
    match probe.schema_version {
        Some(2) => {}
        Some(v) => return Err(ManifestError::SchemaVersion(v)),
        None => return Err(ManifestError::SchemaVersion(0)),
    }
    let mt = probe
        .media_type
        .or_else(|| content_type.map(str::to_owned))
        .filter(|m| !m.is_empty() && m != "application/json");
    let is_index = match mt.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        Some(other) => return Err(ManifestError::MediaType(other.to_owned())),
        None => probe.manifests.is_some(),
    };
    if is_index {
        serde_json::from_slice(bytes)
            .map(Parsed::Index)
            .map_err(ManifestError::Json)
    } else {
        serde_json::from_slice(bytes)
            .map(Parsed::Manifest)
            .map_err(ManifestError::Json)
    }
}

/// Parses a document that must be a single image manifest.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    match parse(bytes, None)? {
        Parsed::Manifest(m) => Ok(m),
        Parsed::Index(_) => Err(ManifestError::MediaType(OCI_INDEX.to_owned())),
    }
}

/// The linux/amd64 entry of an index (attestation manifests, which have platform
/// unknown/unknown, are never chosen).
pub fn select_platform(index: &Index) -> Result<&Descriptor, ManifestError> {
    let is_amd64 = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
    };
    index.manifests.iter().find(is_amd64).ok_or_else(|| {
        let have: Vec<String> = index
            .manifests
            .iter()
            .map(|d| match &d.platform {
                Some(p) => format!("{}/{}", p.os, p.architecture),
                None => "unspecified".to_owned(),
            })
            .collect();
        ManifestError::NoPlatform(have.join(", "))
    })
}

/// Whether a layer media type is one husk can unpack.
pub fn is_layer_media_type(mt: &str) -> bool {
    matches!(
        mt,
        OCI_LAYER_TAR | OCI_LAYER_GZIP | OCI_LAYER_ZSTD | DOCKER_LAYER_GZIP | DOCKER_LAYER_TAR
    ) || mt == "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        || mt == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    fn index_json(platforms: &[(&str, &str)]) -> String {
        let m: Vec<String> = platforms
            .iter()
            .map(|(os, arch)| {
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"{os}","architecture":"{arch}"}}}}"#,
                    d(arch)
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{}]}}"#,
            m.join(",")
        )
    }

    #[test]
    fn selects_linux_amd64() {
        let j = index_json(&[
            ("unknown", "unknown"),
            ("linux", "arm64"),
            ("linux", "amd64"),
        ]);
        let Parsed::Index(i) = parse(j.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(select_platform(&i).unwrap().digest, d("amd64"));
        let j = index_json(&[("linux", "arm64")]);
        let Parsed::Index(i) = parse(j.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        let e = select_platform(&i).unwrap_err().to_string();
        assert!(e.contains("linux/arm64"), "{e}");
    }

    #[test]
    fn parses_manifest_by_shape_or_header() {
        let j = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":3}},"layers":[]}}"#,
            d("c")
        );
        let Parsed::Manifest(m) = parse(j.as_bytes(), Some(DOCKER_MANIFEST)).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.config.digest, d("c"));
        assert!(parse_manifest(j.as_bytes()).is_ok());
        assert!(matches!(
            parse(
                j.as_bytes(),
                Some("application/vnd.docker.distribution.manifest.v1+json")
            ),
            Err(ManifestError::MediaType(_))
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::SchemaVersion(1))
        ));
        assert!(parse(b"not json", None).is_err());
    }
}
