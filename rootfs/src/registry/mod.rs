//! Registry client: pulling images from registries speaking the OCI distribution API into
//! the content store, pushing them back out, and `husk login`.
//!
//! Transport policy: HTTPS (rustls, Mozilla's roots) everywhere; plain HTTP only to loopback
//! registries (`localhost`, 127.0.0.0/8, `::1`) and to registries listed as insecure
//! (`--insecure-registry` or `insecure-registries` in `<root>/daemon.json`), trying HTTPS
//! first as docker does. Redirects are followed under the same policy, never from a remote
//! host to a loopback one, and credentials are never sent to another host.

mod auth;
mod client;
pub mod credentials;
mod download;
pub mod progress;
mod pull;
mod push;
mod transport;

use std::path::Path;

pub use auth::AuthError;
pub use client::ClientError;
pub use credentials::{Credentials, CredentialsError};
pub use download::{DownloadError, Outcome};
pub use progress::Progress;
pub use pull::{DEFAULT_PARALLEL, PullError, PullOptions, PullReport, pull};
pub use push::{PushError, PushOptions, PushReport, push};
pub use transport::TransportError;

/// Errors from `login`.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The registry argument is not a host.
    #[error("invalid registry address {0:?}")]
    BadRegistry(String),
    /// Plain-HTTP policy or daemon.json problems.
    #[error("registry settings")]
    Transport(#[from] TransportError),
    /// The registry rejected the credentials or could not be reached.
    #[error("login to {0} failed")]
    Registry(String, #[source] ClientError),
    /// The credentials could not be saved.
    #[error("saving credentials")]
    Save(#[from] CredentialsError),
}

/// Normalises a `husk login` argument (`host[:port]`, optionally as a URL; none means
/// Docker Hub) to the registry name references use.
pub fn registry_host(arg: Option<&str>) -> Result<String, LoginError> {
    let Some(arg) = arg else {
        return Ok(crate::reference::DEFAULT_REGISTRY.to_owned());
    };
    let s = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg);
    let host = s.split('/').next().unwrap_or_default().to_ascii_lowercase();
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        return Err(LoginError::BadRegistry(arg.to_owned()));
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => crate::reference::DEFAULT_REGISTRY.into(),
        _ => host,
    })
}

/// Checks `creds` against `registry` (as docker does) and saves them in `<root>/auth.json`.
pub fn login(
    root: &Path,
    registry: &str,
    creds: &Credentials,
    insecure_registries: &[String],
) -> Result<(), LoginError> {
    let transport = transport::Transport::new(root, insecure_registries)?;
    let failed = |e| LoginError::Registry(registry.to_owned(), e);
    let client =
        client::Client::connect(&transport, registry, None, Some(creds.clone())).map_err(failed)?;
    client.verify_login().map_err(failed)?;
    credentials::store(root, registry, creds)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_hosts() {
        assert_eq!(registry_host(None).unwrap(), "docker.io");
        assert_eq!(
            registry_host(Some("http://127.0.0.1:5000/v2/")).unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host(Some("index.docker.io")).unwrap(), "docker.io");
        assert!(registry_host(Some("a b")).is_err());
        assert!(registry_host(Some("")).is_err());
    }
}
