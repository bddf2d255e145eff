//! Registry authentication: parsing `WWW-Authenticate` challenges, the Bearer token flow
//! (anonymous, or with credentials as basic auth on the token request) and Basic auth, and
//! the resulting `Authorization` header for one repository scope.

use std::io::Read;

use super::credentials::Credentials;
use super::transport::{self, Transport, TransportError};

/// Largest token response accepted.
const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// Errors authenticating.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token server could not be reached.
    #[error("cannot reach the token server")]
    Transport(#[from] TransportError),
    /// The token server refused the credentials.
    #[error("unauthorized: incorrect username or password")]
    BadCredentials,
    /// The token server answered with an unexpected status.
    #[error("token server {realm} answered HTTP {status}")]
    Status {
        /// The realm URL.
        realm: String,
        /// The status code.
        status: u16,
    },
    /// The token response is not JSON with a token.
    #[error("token server {0} sent no usable token")]
    BadToken(String),
    /// The registry asked for an authentication scheme husk does not speak.
    #[error("unsupported authentication challenge {0:?}")]
    Unsupported(String),
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...`
    Basic,
    /// `Bearer realm=...,service=...,scope=...`
    Bearer {
        /// The token server URL.
        realm: String,
        /// The service name to ask a token for.
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value.
    pub fn parse(header: &str) -> Result<Self, AuthError> {
        let unsupported = || AuthError::Unsupported(header.to_owned());
        let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
        let params = parse_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Ok(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let realm = get("realm").ok_or_else(unsupported)?;
            Ok(Challenge::Bearer {
                realm,
                service: get("service"),
            })
        } else {
            Err(unsupported())
        }
    }
}

/// `k=v, k="quoted, \"v\""` pairs.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// Obtains the `Authorization` header value answering `challenge` for `scope` (e.g.
/// `repository:library/busybox:pull`; `None` for a login check).
pub fn authorize(
    transport: &Transport,
    challenge: &Challenge,
    creds: Option<&Credentials>,
    scope: Option<&str>,
) -> Result<Option<String>, AuthError> {
    match challenge {
        Challenge::Basic => Ok(creds.map(Credentials::basic_header)),
        Challenge::Bearer { realm, service } => {
            let token = fetch_token(transport, realm, service.as_deref(), creds, scope)?;
            Ok(Some(format!("Bearer {token}")))
        }
    }
}

fn fetch_token(
    transport: &Transport,
    realm: &str,
    service: Option<&str>,
    creds: Option<&Credentials>,
    scope: Option<&str>,
) -> Result<String, AuthError> {
    let mut query = Vec::new();
    if let Some(s) = service {
        query.push(format!("service={}", encode(s)));
    }
    if let Some(s) = scope {
        query.push(format!("scope={}", encode(s)));
    }
    if let Some(c) = creds {
        query.push(format!("account={}", encode(&c.username)));
    }
    let sep = if realm.contains('?') { '&' } else { '?' };
    let url = if query.is_empty() {
        realm.to_owned()
    } else {
        format!("{realm}{sep}{}", query.join("&"))
    };
    transport::parse(&url)?;
    let basic = creds.map(Credentials::basic_header);
    let resp = transport.get(&url, &[], basic.as_deref())?;
    let status = resp.status().as_u16();
    if status == 401 || status == 403 {
        return Err(if creds.is_some() {
            AuthError::BadCredentials
        } else {
            AuthError::Status {
                realm: realm.to_owned(),
                status,
            }
        });
    }
    if status != 200 {
        return Err(AuthError::Status {
            realm: realm.to_owned(),
            status,
        });
    }
    let mut body = Vec::new();
    let bad = || AuthError::BadToken(realm.to_owned());
    resp.into_body()
        .into_reader()
        .take(MAX_TOKEN_RESPONSE)
        .read_to_end(&mut body)
        .map_err(|_| bad())?;
    let t: TokenResponse = serde_json::from_slice(&body).map_err(|_| bad())?;
    t.token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(bad)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="husk-test""#).unwrap(),
            Challenge::Basic
        );
        assert_eq!(
            Challenge::parse("bearer realm=http://127.0.0.1:1/t").unwrap(),
            Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None
            }
        );
        assert!(Challenge::parse("Bearer service=x").is_err());
        assert!(Challenge::parse("Negotiate abc").is_err());
    }

    #[test]
    fn quoted_values_with_commas_and_escapes() {
        let p = parse_params(r#"a="x, \"y\"", b=plain ,c="""#);
        assert_eq!(
            p,
            vec![
                ("a".into(), r#"x, "y""#.into()),
                ("b".into(), "plain".into()),
                ("c".into(), String::new()),
            ]
        );
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}
