//! Registries that misbehave: oversized manifests, wrong content types, lying digests, and
//! redirects to other hosts (followed only under the transport policy, never carrying the
//! registry's credentials). Served by a tiny HTTP server on loopback addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use rootfs::digest::Digest;
use rootfs::reference::Reference;
use rootfs::registry::{self, Credentials, PullOptions, progress::Silent};
use rootfs::store::Store;
use support::http::{Reply, Request, Server};
use support::oci::{self, ImageSpec};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Manifest, config and layer of a small image built as an OCI layout.
struct Image {
    manifest: Vec<u8>,
    blobs: Vec<(Digest, Vec<u8>)>,
}

fn image() -> Image {
    let dir = tempfile::tempdir().unwrap();
    let built = oci::write_layout(
        dir.path(),
        "t",
        &[ImageSpec {
            arch: "amd64",
            layers: vec![vec![("f".into(), oci::random_bytes(1, 5000))]],
        }],
    );
    let blob = |d: &Digest| std::fs::read(dir.path().join("blobs/sha256").join(d.hex())).unwrap();
    let manifest = blob(&built[0].manifest);
    let v: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = Vec::new();
    let mut digests = vec![v["config"]["digest"].as_str().unwrap().to_owned()];
    for l in v["layers"].as_array().unwrap() {
        digests.push(l["digest"].as_str().unwrap().to_owned());
    }
    for d in digests {
        let d = Digest::parse(&d).unwrap();
        blobs.push((d.clone(), blob(&d)));
    }
    Image { manifest, blobs }
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

fn pull(root: &Path, r: &str) -> Result<registry::PullReport, registry::PullError> {
    registry::pull(
        root,
        &Reference::parse(r).unwrap(),
        &PullOptions::default(),
        &Silent,
    )
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

/// A registry serving `manifest` for every tag with `manifest_headers`, blobs via `blob`.
fn registry(
    manifest: Vec<u8>,
    manifest_headers: Vec<(String, String)>,
    blob: impl Fn(&Request, &str) -> Reply + Send + Sync + 'static,
) -> Server {
    Server::start("127.0.0.1", move |req, me| {
        if req.path == "/v2/" {
            (200, vec![], b"{}".to_vec())
        } else if req.path.contains("/manifests/") {
            (200, manifest_headers.clone(), manifest.clone())
        } else if req.path.contains("/blobs/") {
            blob(req, me)
        } else {
            (404, vec![], vec![])
        }
    })
}

#[test]
fn oversized_manifest_is_refused() {
    let big = vec![b' '; 5 << 20];
    let reg = registry(
        big.clone(),
        vec![h("Content-Type", OCI_MANIFEST)],
        |_, _| (404, vec![], vec![]),
    );
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap_err());
    assert!(e.contains("larger than 4 MiB"), "{e}");
    // Also when the length is not announced up front (chunked body).
    let reg = Server::start("127.0.0.1", move |req, _| {
        if req.path == "/v2/" {
            return (200, vec![], vec![]);
        }
        let mut body = format!("{:x}\r\n", big.len()).into_bytes();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let hs = vec![
            h("Content-Type", OCI_MANIFEST),
            h("Transfer-Encoding", "chunked"),
        ];
        (200, hs, body)
    });
    let e = chain(&pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap_err());
    assert!(e.contains("larger than 4 MiB"), "{e}");
}

#[test]
fn wrong_content_type_is_refused() {
    let img = image();
    let reg = registry(
        img.manifest,
        vec![h("Content-Type", "text/html")],
        |_, _| (404, vec![], vec![]),
    );
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap_err());
    assert!(e.contains("content type \"text/html\""), "{e}");
}

#[test]
fn lying_manifest_digest_header_is_refused() {
    let img = image();
    let lie = Digest::of(b"something else").to_string();
    let reg = registry(
        img.manifest,
        vec![
            h("Content-Type", OCI_MANIFEST),
            h("Docker-Content-Digest", &lie),
        ],
        |_, _| (404, vec![], vec![]),
    );
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap_err());
    assert!(e.contains("digest mismatch"), "{e}");
}

#[test]
fn blob_longer_than_declared_is_refused() {
    let img = image();
    let blobs = img.blobs.clone();
    let reg = registry(
        img.manifest,
        vec![h("Content-Type", OCI_MANIFEST)],
        move |req, _| {
            let (_, b) = blobs
                .iter()
                .find(|(d, _)| req.path.ends_with(&d.to_string()))
                .unwrap();
            let mut b = b.clone();
            b.extend_from_slice(&[0; 100]);
            (200, vec![], b)
        },
    );
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap_err());
    assert!(e.contains("more than the"), "{e}");
    assert!(
        Store::open(root.path())
            .unwrap()
            .blobs()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn redirect_to_another_host_gets_no_credentials() {
    let img = image();
    let blobs = img.blobs.clone();
    // The "storage host": another loopback address.
    let cdn = Server::start("127.0.0.2", move |req, _| {
        match blobs.iter().find(|(d, _)| req.path.ends_with(d.hex())) {
            Some((_, b)) => (200, vec![], b.clone()),
            None => (404, vec![], vec![]),
        }
    });
    let cdn_addr = cdn.addr.clone();
    let manifest = img.manifest.clone();
    let reg = Server::start("127.0.0.1", move |req, _| {
        if req.header("authorization") != Some("Basic dTpw") {
            return (
                401,
                vec![h("WWW-Authenticate", "Basic realm=\"t\"")],
                vec![],
            );
        }
        if req.path == "/v2/" {
            (200, vec![], vec![])
        } else if req.path.contains("/manifests/") {
            (200, vec![h("Content-Type", OCI_MANIFEST)], manifest.clone())
        } else {
            let hex = req.path.rsplit(':').next().unwrap();
            (
                307,
                vec![h("Location", &format!("http://{cdn_addr}/data/{hex}"))],
                vec![],
            )
        }
    });
    let root = tempfile::tempdir().unwrap();
    let creds = Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    registry::credentials::store(root.path(), &reg.addr, &creds).unwrap();
    let r = pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap();
    assert_eq!(r.layers.len(), 1);
    let seen = cdn.requests.lock().unwrap();
    assert_eq!(
        seen.len(),
        2,
        "config and layer fetched from the storage host"
    );
    assert!(
        seen.iter().all(|r| r.header("authorization").is_none()),
        "{seen:?}"
    );
}

#[test]
fn redirect_to_plain_http_elsewhere_is_refused() {
    let img = image();
    let reg = registry(
        img.manifest,
        vec![h("Content-Type", OCI_MANIFEST)],
        |_, _| {
            // Never connected to: refused by policy before any connection.
            (
                302,
                vec![h("Location", "http://blobs.example.invalid/data")],
                vec![],
            )
        },
    );
    let root = tempfile::tempdir().unwrap();
    let e = chain(&pull(root.path(), &format!("{}/x:1", reg.addr)).unwrap_err());
    assert!(
        e.contains("refusing plain HTTP to blobs.example.invalid"),
        "{e}"
    );
    assert!(e.contains("config sha256:"), "{e}");
}
