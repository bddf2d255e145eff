//! Pushing an image from the content store to a registry (docker's `push`): for the config
//! and each layer, a `HEAD` tells whether the repository has the blob; a missing one is
//! uploaded whole (`POST` an upload, then `PUT` its bytes with their digest, the registry
//! checking it); then the manifest, exactly as stored, is `PUT` under the tag. Credentials
//! are `husk login`'s, as for pulls; the token asks for `pull,push`.

use std::path::Path;

use super::client::{Client, ClientError};
use super::credentials::{self, CredentialsError};
use super::transport::{Body, Method, Transport, TransportError};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::store::manifest::{self, ManifestError};
use crate::store::{Store, StoreError};

/// Errors pushing an image.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Plain-HTTP policy or daemon.json problems.
    #[error("registry settings")]
    Transport(#[from] TransportError),
    /// The credentials files could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such image here (docker's message).
    #[error("An image does not exist locally with the tag: {0}")]
    NoSuchImage(String),
    /// A reference with a digest cannot be pushed to.
    #[error("cannot push a digest reference: {0}")]
    Digest(String),
    /// The stored manifest is unusable.
    #[error("the stored manifest of {0} is unusable")]
    Manifest(String, #[source] ManifestError),
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] ClientError),
    /// The registry did not accept the upload or the manifest.
    #[error("{what}: registry answered HTTP {status}: {detail}")]
    Refused {
        /// What was being sent.
        what: String,
        /// The status.
        status: u16,
        /// The registry's words.
        detail: String,
    },
    /// Pushing without the right to (docker's wording).
    #[error("denied: requested access to the resource is denied")]
    Denied,
}

/// How to push.
#[derive(Clone, Debug, Default)]
pub struct PushOptions {
    /// Registries that may be spoken to over plain HTTP (as for pulls).
    pub insecure_registries: Vec<String>,
}

/// What a push did.
#[derive(Debug)]
pub struct PushReport {
    /// Each layer (bottom first) and whether the registry had it already.
    pub layers: Vec<(Digest, bool)>,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest's size.
    pub size: usize,
    /// The tag pushed.
    pub tag: String,
}

/// Pushes image `reference` of the store of `root` to its registry; `progress` hears of
/// each layer as it is done (`<short digest>: Pushed` / `Layer already exists`).
pub fn push(
    root: &Path,
    reference: &Reference,
    opts: &PushOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<PushReport, PushError> {
    if reference.digest().is_some() {
        return Err(PushError::Digest(reference.familiar()));
    }
    let store = Store::open(root)?;
    let record = store
        .resolve(&reference.to_string())
        .map_err(|_| PushError::NoSuchImage(reference.familiar_name()))?;
    let bytes = store.read_blob(&record.manifest_digest)?;
    let m = manifest::parse_manifest(&bytes)
        .map_err(|e| PushError::Manifest(reference.familiar(), e))?;
    let transport = Transport::new(root, &opts.insecure_registries)?;
    let creds = credentials::lookup(root, reference.registry())?;
    let client = Client::connect_for_push(
        &transport,
        reference.registry(),
        reference.repository(),
        creds,
    )
    .map_err(|e| match e {
        ClientError::Denied(_) => PushError::Denied,
        e => e.into(),
    })?;
    let mut layers = Vec::new();
    for d in &m.layers {
        let existed = upload(&client, &store, &d.digest)?;
        progress(&format!(
            "{}: {}",
            short(&d.digest),
            if existed {
                "Layer already exists"
            } else {
                "Pushed"
            }
        ));
        layers.push((d.digest.clone(), existed));
    }
    upload(&client, &store, &m.config.digest)?;
    let tag = reference.tag().unwrap_or("latest").to_owned();
    let url = format!("{}/manifests/{tag}", client.repository_url());
    let content_type = m
        .media_type
        .clone()
        .unwrap_or_else(|| record.manifest_media_type.clone());
    let resp = client.send(
        Method::Put,
        &url,
        &[("Content-Type", &content_type)],
        Body::Bytes(&bytes),
    )?;
    expect(resp, 201, &format!("manifest {}", reference.familiar()))?;
    Ok(PushReport {
        layers,
        digest: Digest::of(&bytes),
        size: bytes.len(),
        tag,
    })
}

/// Uploads blob `digest` unless the repository has it; true if it had.
fn upload(client: &Client, store: &Store, digest: &Digest) -> Result<bool, PushError> {
    let base = client.repository_url();
    let head = client.send(
        Method::Head,
        &format!("{base}/blobs/{digest}"),
        &[],
        Body::Empty,
    )?;
    match head.status().as_u16() {
        200 => return Ok(true),
        401 | 403 => return Err(PushError::Denied),
        _ => {}
    }
    let started = client.send(
        Method::Post,
        &format!("{base}/blobs/uploads/"),
        &[],
        Body::Empty,
    )?;
    let location = started
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let what = format!("blob {digest}");
    let started = expect(started, 202, &what)?;
    drop(started);
    let location = location.ok_or_else(|| PushError::Refused {
        what: what.clone(),
        status: 202,
        detail: "no upload location".into(),
    })?;
    let location = absolute(&base, &location);
    let sep = if location.contains('?') { '&' } else { '?' };
    let file = store.open_blob(digest)?;
    let resp = client.send(
        Method::Put,
        &format!("{location}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Body::File(&file),
    )?;
    expect(resp, 201, &what)?;
    Ok(false)
}

/// The response if it has `status`, else the registry's refusal.
fn expect(
    resp: ureq::http::Response<ureq::Body>,
    status: u16,
    what: &str,
) -> Result<ureq::http::Response<ureq::Body>, PushError> {
    match resp.status().as_u16() {
        s if s == status => Ok(resp),
        401 | 403 => Err(PushError::Denied),
        s => Err(PushError::Refused {
            what: what.to_owned(),
            status: s,
            detail: super::client::error_detail(resp),
        }),
    }
}

/// A Location header made absolute against the repository URL's origin.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    format!("{}{location}", &base[..origin_end])
}

/// The first 12 hex digits, as docker shows layers.
fn short(d: &Digest) -> String {
    d.to_string()
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations() {
        assert_eq!(
            absolute(
                "http://127.0.0.1:5000/v2/x",
                "/v2/x/blobs/uploads/u?_state=s"
            ),
            "http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=s"
        );
        assert_eq!(absolute("http://a/v2/x", "https://b/up"), "https://b/up");
    }
}
