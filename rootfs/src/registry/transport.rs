//! How husk reaches a registry: which hosts may be spoken to over plain HTTP (loopback, as
//! docker allows, and hosts configured as insecure), the shared HTTP agent, and redirect
//! following under that same policy (credentials never follow a redirect to another host).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ureq::Agent;
use ureq::http::{Response, Uri};

/// Redirects followed per request (registries redirect blobs to storage or CDN hosts).
const MAX_REDIRECTS: usize = 5;
/// `<root>/daemon.json`, docker's daemon configuration format (only `insecure-registries`).
const DAEMON_CONFIG: &str = "daemon.json";

/// Errors reaching a registry.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The connection or the HTTP exchange failed.
    #[error("{method} {url}")]
    Http {
        /// GET, HEAD, POST, PUT.
        method: &'static str,
        /// What was requested.
        url: String,
        /// Why it failed.
        #[source]
        source: Box<ureq::Error>,
    },
    /// A URL (from a redirect or an auth challenge) could not be parsed.
    #[error("invalid URL {0:?} from the registry")]
    BadUrl(String),
    /// A URL would use plain HTTP to a host that is neither loopback nor insecure-listed.
    #[error(
        "refusing plain HTTP to {0}: only loopback registries and those listed with --insecure-registry or in daemon.json may use HTTP"
    )]
    PlainHttp(String),
    /// A redirect from a remote registry pointed at a loopback address.
    #[error("refusing redirect from {from} to loopback host {to}")]
    RedirectToLoopback {
        /// The host that redirected.
        from: String,
        /// Where it pointed.
        to: String,
    },
    /// Too many redirects.
    #[error("more than {MAX_REDIRECTS} redirects for {0}")]
    TooManyRedirects(String),
    /// A redirect response without a usable Location header.
    #[error("redirect without a Location header from {0}")]
    NoLocation(String),
    /// daemon.json exists but cannot be read or parsed.
    #[error("cannot read {path}")]
    DaemonConfig {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The HTTP agent plus the plain-HTTP policy; cheap to clone and share between threads.
#[derive(Clone, Debug)]
pub struct Transport {
    agent: Agent,
    insecure: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
struct DaemonConfig {
    #[serde(rename = "insecure-registries", default)]
    insecure_registries: Vec<String>,
}

impl Transport {
    /// A transport allowing plain HTTP to loopback, to `insecure` and to the
    /// `insecure-registries` of `<root>/daemon.json`.
    pub fn new(root: &Path, insecure: &[String]) -> Result<Self, TransportError> {
        let mut all: Vec<String> = insecure.to_vec();
        all.extend(read_daemon_config(root)?.insecure_registries);
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .user_agent(concat!("husk/", env!("CARGO_PKG_VERSION")))
            .accept_encoding("identity")
            .build()
            .into();
        Ok(Self {
            agent,
            insecure: all,
        })
    }

    /// Whether `host` (with optional port) may be spoken to over plain HTTP.
    pub fn allows_plain_http(&self, host: &str) -> bool {
        is_loopback(host)
            || self
                .insecure
                .iter()
                .any(|i| i == host || i == strip_port(host))
    }

    /// GET `url` with `headers`, following redirects under the policy; `authorization` is
    /// sent only to the original host.
    pub fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        authorization: Option<&str>,
    ) -> Result<Response<ureq::Body>, TransportError> {
        let first = parse(url)?;
        let origin = authority(&first);
        self.check_scheme(&first)?;
        let mut current = first;
        for _ in 0..=MAX_REDIRECTS {
            let url_s = current.to_string();
            let mut req = self.agent.get(&url_s);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = authorization.filter(|_| authority(&current) == origin) {
                req = req.header("Authorization", a);
            }
            let resp = req.call().map_err(|e| TransportError::Http {
                method: "GET",
                url: url_s.clone(),
                source: Box::new(e),
            })?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let loc = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| TransportError::NoLocation(url_s.clone()))?;
            let next = resolve(&current, loc)?;
            self.check_redirect(&current, &next)?;
            current = next;
        }
        Err(TransportError::TooManyRedirects(url.to_owned()))
    }

    /// A request that writes (`HEAD`, `POST`, `PUT`; no redirects are followed):
    /// `authorization` goes along only when `url` is on host `origin`.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        authorization: (Option<&str>, &str),
        body: Body<'_>,
    ) -> Result<Response<ureq::Body>, TransportError> {
        let uri = parse(url)?;
        self.check_scheme(&uri)?;
        let (auth, origin) = authorization;
        let auth = auth.filter(|_| authority(&uri) == origin);
        let failed = |e| TransportError::Http {
            method: method.as_str(),
            url: url.to_owned(),
            source: Box::new(e),
        };
        macro_rules! with_headers {
            ($req:expr) => {{
                let mut req = $req;
                for (k, v) in headers {
                    req = req.header(*k, *v);
                }
                if let Some(a) = auth {
                    req = req.header("Authorization", a);
                }
                req
            }};
        }
        let resp = match method {
            Method::Head => with_headers!(self.agent.head(url)).call(),
            Method::Post | Method::Put => {
                let req = match method {
                    Method::Post => with_headers!(self.agent.post(url)),
                    _ => with_headers!(self.agent.put(url)),
                };
                match body {
                    Body::Empty => req.send_empty(),
                    Body::Bytes(b) => req.send(b),
                    Body::File(f) => req.send(f),
                }
            }
        };
        resp.map_err(failed)
    }

    fn check_scheme(&self, uri: &Uri) -> Result<(), TransportError> {
        match uri.scheme_str() {
            Some("https") => Ok(()),
            Some("http") if self.allows_plain_http(&authority(uri)) => Ok(()),
            Some("http") => Err(TransportError::PlainHttp(authority(uri))),
            _ => Err(TransportError::BadUrl(uri.to_string())),
        }
    }

    fn check_redirect(&self, from: &Uri, to: &Uri) -> Result<(), TransportError> {
        self.check_scheme(to)?;
        let (f, t) = (authority(from), authority(to));
        if !is_loopback(&f) && is_loopback(&t) {
            return Err(TransportError::RedirectToLoopback { from: f, to: t });
        }
        Ok(())
    }
}

/// The methods [`Transport::send`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// What [`Transport::send`] sends.
#[derive(Debug)]
pub enum Body<'a> {
    /// Nothing.
    Empty,
    /// These bytes.
    Bytes(&'a [u8]),
    /// A whole file (its length as Content-Length).
    File(&'a std::fs::File),
}

fn read_daemon_config(root: &Path) -> Result<DaemonConfig, TransportError> {
    let path = root.join(DAEMON_CONFIG);
    let err = |source: Box<dyn std::error::Error + Send + Sync>| TransportError::DaemonConfig {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(Box::new(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DaemonConfig::default()),
        Err(e) => Err(err(Box::new(e))),
    }
}

/// Parses an absolute URL.
pub fn parse(url: &str) -> Result<Uri, TransportError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| TransportError::BadUrl(url.to_owned()))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err(TransportError::BadUrl(url.to_owned()));
    }
    Ok(uri)
}

/// `host[:port]` of an absolute URI.
pub fn authority(uri: &Uri) -> String {
    uri.authority().map(|a| a.to_string()).unwrap_or_default()
}

/// Resolves a Location header against the URL that sent it (absolute or absolute-path).
fn resolve(base: &Uri, location: &str) -> Result<Uri, TransportError> {
    if location.starts_with('/') && !location.starts_with("//") {
        let scheme = base.scheme_str().unwrap_or("https");
        return parse(&format!("{scheme}://{}{location}", authority(base)));
    }
    parse(location)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether `host[:port]` is `localhost`, in 127.0.0.0/8 or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let h = strip_port(host);
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(insecure: &[&str]) -> Transport {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = insecure.iter().map(|s| s.to_string()).collect();
        Transport::new(dir.path(), &list).unwrap()
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "128.0.0.1",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn plain_http_policy() {
        let t = transport(&["reg.lan:5000", "other.lan"]);
        assert!(t.allows_plain_http("127.0.0.1:5000"));
        assert!(t.allows_plain_http("reg.lan:5000"));
        assert!(t.allows_plain_http("other.lan:8080"));
        assert!(!t.allows_plain_http("reg.lan:5001"));
        assert!(!t.allows_plain_http("example.com"));
        // Refused before any connection is attempted.
        let e = t.get("http://example.com/v2/", &[], None).unwrap_err();
        assert!(matches!(e, TransportError::PlainHttp(_)), "{e}");
    }

    #[test]
    fn daemon_json_lists_insecure_registries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("daemon.json"),
            r#"{"insecure-registries":["reg.lan:5000"],"other":1}"#,
        )
        .unwrap();
        let t = Transport::new(dir.path(), &[]).unwrap();
        assert!(t.allows_plain_http("reg.lan:5000"));
        std::fs::write(dir.path().join("daemon.json"), "{").unwrap();
        assert!(Transport::new(dir.path(), &[]).is_err());
    }

    #[test]
    fn redirect_rules() {
        let t = transport(&[]);
        let reg = parse("https://registry.example/v2/x/blobs/sha256:00").unwrap();
        let rel = resolve(&reg, "/other/path?x=1").unwrap();
        assert_eq!(rel.to_string(), "https://registry.example/other/path?x=1");
        let cdn = resolve(&reg, "https://cdn.example/blob").unwrap();
        assert!(t.check_redirect(&reg, &cdn).is_ok());
        let down = resolve(&reg, "http://cdn.example/blob").unwrap();
        assert!(matches!(
            t.check_redirect(&reg, &down),
            Err(TransportError::PlainHttp(_))
        ));
        let local = resolve(&reg, "http://127.0.0.1:8080/").unwrap();
        assert!(matches!(
            t.check_redirect(&reg, &local),
            Err(TransportError::RedirectToLoopback { .. })
        ));
        let lo = parse("http://127.0.0.1:5000/v2/").unwrap();
        let lo2 = resolve(&lo, "http://127.0.0.2:6000/data").unwrap();
        assert!(t.check_redirect(&lo, &lo2).is_ok());
        assert!(resolve(&reg, "not a url").is_err());
    }
}
