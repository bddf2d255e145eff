//! One repository on one registry, spoken to with the OCI distribution API: endpoint choice
//! (HTTPS, or plain HTTP where the transport allows it, as docker: HTTPS first), the `/v2/`
//! ping and its auth challenge, manifests (size-capped, content-type checked, digest
//! verified) and blob requests (optionally from an offset, for resuming).

use std::io::Read;
use std::sync::Mutex;

use ureq::http::Response;

use super::auth::{self, AuthError, Challenge};
use super::credentials::Credentials;
use super::transport::{Body, Method, Transport, TransportError};
use crate::digest::Digest;
use crate::store::manifest::ACCEPT;

/// Largest manifest or index accepted (containerd uses the same limit).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Errors talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The registry requires authentication and none (or a rejected one) was given.
    #[error("pull access denied for {0}, repository does not exist or may require 'husk login'")]
    Denied(String),
    /// The registry's `/v2/` endpoint answered strangely.
    #[error("{host} does not look like a registry: GET /v2/ answered HTTP {status}")]
    NotRegistry {
        /// The registry.
        host: String,
        /// The status.
        status: u16,
    },
    /// The manifest does not exist.
    #[error("manifest for {name} not found: {detail}")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The registry's own error code and message.
        detail: String,
    },
    /// Another unexpected status.
    #[error("GET {what}: registry answered HTTP {status}: {detail}")]
    Status {
        /// What was requested.
        what: String,
        /// The status.
        status: u16,
        /// The registry's error text.
        detail: String,
    },
    /// The manifest is larger than [`MAX_MANIFEST`].
    #[error("manifest {0} is larger than 4 MiB: refusing it")]
    TooLarge(String),
    /// The manifest came with a content type that is not a manifest type.
    #[error("manifest {name} has content type {content_type:?}, not an image manifest or index")]
    ContentType {
        /// What was asked for.
        name: String,
        /// What came.
        content_type: String,
    },
    /// The manifest does not hash to the requested (or announced) digest.
    #[error("manifest {name}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was asked for.
        name: String,
        /// The digest asked for or announced.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// Reading a response body failed.
    #[error("reading {0} from the registry")]
    Read(String, #[source] std::io::Error),
}

/// A fetched manifest or index.
#[derive(Debug)]
pub struct FetchedManifest {
    /// The bytes, exactly as served.
    pub bytes: Vec<u8>,
    /// The content type the registry sent.
    pub content_type: Option<String>,
    /// The digest of `bytes`.
    pub digest: Digest,
}

/// A client for one repository.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    base: String,
    host: String,
    repository: String,
    creds: Option<Credentials>,
    challenge: Option<Challenge>,
    auth_header: Mutex<Option<String>>,
    /// The token scope's actions: `pull`, or `pull,push`.
    actions: &'static str,
}

impl Client {
    /// Connects to `host` (e.g. `docker.io`, `127.0.0.1:5000`), pings `/v2/` and
    /// authenticates for pulling `repository` (or, with `repository` `None`, only checks
    /// the credentials, as `husk login` does).
    pub fn connect(
        transport: &Transport,
        host: &str,
        repository: Option<&str>,
        creds: Option<Credentials>,
    ) -> Result<Self, ClientError> {
        Self::connect_for(transport, host, repository, creds, "pull")
    }

    /// Like [`Client::connect`], authenticated for pushing to `repository` as well.
    pub fn connect_for_push(
        transport: &Transport,
        host: &str,
        repository: &str,
        creds: Option<Credentials>,
    ) -> Result<Self, ClientError> {
        Self::connect_for(transport, host, Some(repository), creds, "pull,push")
    }

    fn connect_for(
        transport: &Transport,
        host: &str,
        repository: Option<&str>,
        creds: Option<Credentials>,
        actions: &'static str,
    ) -> Result<Self, ClientError> {
        let api_host = api_host(host);
        let (base, ping) = ping(transport, api_host)?;
        let status = ping.status().as_u16();
        let challenge = match status {
            200 => None,
            401 => {
                let h = ping
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Some(Challenge::parse(h)?)
            }
            _ => {
                return Err(ClientError::NotRegistry {
                    host: host.to_owned(),
                    status,
                });
            }
        };
        let client = Self {
            transport: transport.clone(),
            base,
            host: host.to_owned(),
            repository: repository.unwrap_or_default().to_owned(),
            creds,
            challenge,
            auth_header: Mutex::new(None),
            actions,
        };
        client.refresh_auth()?;
        Ok(client)
    }

    /// Checks the credentials the client was made with against the registry (login):
    /// basic auth is tried on `/v2/`, a bearer token server must issue a token.
    pub fn verify_login(&self) -> Result<(), ClientError> {
        if !matches!(self.challenge, Some(Challenge::Basic)) {
            return Ok(());
        }
        let resp = self.get(&format!("{}/v2/", self.base), &[])?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 | 403 => Err(AuthError::BadCredentials.into()),
            status => Err(ClientError::NotRegistry {
                host: self.host.clone(),
                status,
            }),
        }
    }

    fn scope(&self) -> Option<String> {
        (!self.repository.is_empty())
            .then(|| format!("repository:{}:{}", self.repository, self.actions))
    }

    fn refresh_auth(&self) -> Result<(), ClientError> {
        let header = match &self.challenge {
            None => None,
            Some(c) => match auth::authorize(
                &self.transport,
                c,
                self.creds.as_ref(),
                self.scope().as_deref(),
            ) {
                // An anonymous token refused for this repository: docker's wording.
                Err(AuthError::Status {
                    status: 401 | 403, ..
                }) if self.creds.is_none() && !self.repository.is_empty() => {
                    return Err(ClientError::Denied(self.repository.clone()));
                }
                r => r?,
            },
        };
        *self.auth_header.lock().unwrap_or_else(|e| e.into_inner()) = header;
        Ok(())
    }

    fn header(&self) -> Option<String> {
        self.auth_header
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// GET with the current authorization; on 401 the token is renewed once and retried.
    fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<ureq::Body>, ClientError> {
        let resp = self.transport.get(url, headers, self.header().as_deref())?;
        if resp.status().as_u16() != 401
            || !matches!(self.challenge, Some(Challenge::Bearer { .. }))
        {
            return Ok(resp);
        }
        self.refresh_auth()?;
        Ok(self.transport.get(url, headers, self.header().as_deref())?)
    }

    /// `<base>/v2/<repository>`: where the repository's endpoints are.
    pub fn repository_url(&self) -> String {
        format!("{}/v2/{}", self.base, self.repository)
    }

    /// A writing request with the current authorization (sent only to the registry's own
    /// host); on 401 the token is renewed once and the request repeated (a file body from
    /// its start).
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<Response<ureq::Body>, ClientError> {
        let origin = super::transport::authority(&super::transport::parse(&self.base)?);
        let again = match &body {
            Body::Empty => Body::Empty,
            Body::Bytes(b) => Body::Bytes(b),
            Body::File(f) => Body::File(f),
        };
        let resp = self.transport.send(
            method,
            url,
            headers,
            (self.header().as_deref(), &origin),
            body,
        )?;
        if resp.status().as_u16() != 401
            || !matches!(self.challenge, Some(Challenge::Bearer { .. }))
        {
            return Ok(resp);
        }
        self.refresh_auth()?;
        if let Body::File(mut f) = again {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))
                .map_err(|e| ClientError::Read(url.to_owned(), e))?;
        }
        Ok(self.transport.send(
            method,
            url,
            headers,
            (self.header().as_deref(), &origin),
            again,
        )?)
    }

    /// Fetches the manifest or index `reference` (a tag or a digest) of the repository.
    /// `name` is how errors call it (`busybox:latest`).
    pub fn manifest(&self, reference: &str, name: &str) -> Result<FetchedManifest, ClientError> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let accept = ACCEPT.join(", ");
        let resp = self.get(&url, &[("Accept", &accept)])?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.status_error(resp, name));
        }
        let header = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_type = header("content-type")
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_owned());
        let announced = header("docker-content-digest");
        if header("content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > MAX_MANIFEST)
        {
            return Err(ClientError::TooLarge(name.to_owned()));
        }
        check_content_type(content_type.as_deref(), name)?;
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ClientError::Read(format!("manifest {name}"), e))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(ClientError::TooLarge(name.to_owned()));
        }
        let digest = Digest::of(&bytes);
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => announced.and_then(|a| Digest::parse(&a).ok()),
        };
        if let Some(expected) = expected.filter(|e| *e != digest) {
            return Err(ClientError::DigestMismatch {
                name: name.to_owned(),
                expected,
                actual: digest,
            });
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// Requests blob `digest`, from byte `offset` on when non-zero (`Range`). The caller
    /// checks the status: 200 (whole blob), 206 (from the offset), 416 (bad offset).
    pub fn blob(&self, digest: &Digest, offset: u64) -> Result<Response<ureq::Body>, ClientError> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        let range = format!("bytes={offset}-");
        let headers: &[(&str, &str)] = if offset > 0 {
            &[("Range", &range)]
        } else {
            &[]
        };
        self.get(&url, headers)
    }

    /// The error for an unexpected manifest or blob response.
    pub fn status_error(&self, resp: Response<ureq::Body>, name: &str) -> ClientError {
        let status = resp.status().as_u16();
        let detail = error_detail(resp);
        match status {
            404 => ClientError::NotFound {
                name: name.to_owned(),
                detail,
            },
            401 | 403 => ClientError::Denied(name.to_owned()),
            _ => ClientError::Status {
                what: name.to_owned(),
                status,
                detail,
            },
        }
    }
}

/// Docker Hub's API lives on another host than its name.
fn api_host(host: &str) -> &str {
    if host == "docker.io" {
        "registry-1.docker.io"
    } else {
        host
    }
}

/// Pings `/v2/` over HTTPS, falling back to plain HTTP where allowed (as docker does for
/// insecure registries). Returns the base URL that answered and its response.
fn ping(transport: &Transport, host: &str) -> Result<(String, Response<ureq::Body>), ClientError> {
    let https = format!("https://{host}");
    match transport.get(&format!("{https}/v2/"), &[], None) {
        Ok(r) => Ok((https, r)),
        Err(e) if transport.allows_plain_http(host) => {
            log::debug!("{host}: HTTPS failed ({e}), trying plain HTTP");
            let http = format!("http://{host}");
            let r = transport.get(&format!("{http}/v2/"), &[], None)?;
            Ok((http, r))
        }
        Err(e) => Err(e.into()),
    }
}

fn check_content_type(ct: Option<&str>, name: &str) -> Result<(), ClientError> {
    match ct {
        None | Some("application/json") => Ok(()),
        Some(c) if ACCEPT.contains(&c) => Ok(()),
        Some(c) => Err(ClientError::ContentType {
            name: name.to_owned(),
            content_type: c.to_owned(),
        }),
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    code: String,
    #[serde(default)]
    message: String,
}

/// `manifest unknown: manifest unknown`, as docker renders registry errors.
pub(super) fn error_detail(resp: Response<ureq::Body>) -> String {
    let mut body = Vec::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(64 << 10)
        .read_to_end(&mut body);
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(b) if !b.errors.is_empty() => b
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code.to_lowercase().replace('_', " "), e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "no error details".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(check_content_type(Some(ACCEPT[0]), "x").is_ok());
        assert!(check_content_type(None, "x").is_ok());
        let e = check_content_type(Some("text/html"), "x:1").unwrap_err();
        assert!(e.to_string().contains("text/html"), "{e}");
    }

    #[test]
    fn hub_api_host() {
        assert_eq!(api_host("docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
