//! A Bearer-token server for the real registry's token auth (the Docker Hub scheme): an
//! RSA key and self-signed certificate made with `openssl`, the registry trusting that
//! certificate (`auth.token.rootcertbundle`), and a token endpoint on loopback
//! (`support::http`) that signs RS256 JWTs, with the certificate in `x5c`, granting the
//! scopes asked for. Repositories under `private/` need basic credentials at the token
//! endpoint; without them (or with wrong ones) it answers 401, as Docker Hub does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::http::{Reply, Request, Server};

/// The registry's `service` and the tokens' audience.
pub const SERVICE: &str = "husk-test-registry";
/// The tokens' issuer.
pub const ISSUER: &str = "husk-test-issuer";

/// Signs tokens with a fresh key.
pub struct Issuer {
    dir: tempfile::TempDir,
    cert_der_b64: String,
}

impl Issuer {
    /// A fresh RSA key and self-signed certificate.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-subj",
                "/CN=husk-test-token",
            ],
        );
        openssl(
            dir.path(),
            &[
                "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
            ],
        );
        let der = std::fs::read(dir.path().join("cert.der")).unwrap();
        Self {
            cert_der_b64: STANDARD.encode(der),
            dir,
        }
    }

    /// The certificate the registry trusts.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// An RS256 JWT granting `access` (`(repository, actions)`) for `subject`.
    pub fn token(&self, subject: &str, access: &[(String, Vec<String>)]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.cert_der_b64]});
        let access: Vec<_> = access
            .iter()
            .map(|(name, actions)| {
                serde_json::json!({"type": "repository", "name": name, "actions": actions})
            })
            .collect();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": subject, "aud": SERVICE,
            "exp": now + 600, "nbf": now - 10, "iat": now,
            "jti": format!("{now}-{}", std::process::id()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let tmp = tempfile::tempdir_in(self.dir.path()).unwrap();
        std::fs::write(tmp.path().join("input"), &input).unwrap();
        let key = self.dir.path().join("key.pem");
        openssl(
            tmp.path(),
            &[
                "dgst",
                "-sha256",
                "-sign",
                key.to_str().unwrap(),
                "-out",
                "sig",
                "input",
            ],
        );
        let sig = std::fs::read(tmp.path().join("sig")).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed: scripts/prepare.sh");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `%XX` decoding of a query value (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The query parameters of a request path.
pub fn query(path: &str) -> Vec<(String, String)> {
    let Some((_, q)) = path.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// The token endpoint: grants every scope asked for, except that `private/` repositories
/// need `user:password` as basic credentials.
pub fn serve(issuer: Arc<Issuer>, user: &str, password: &str) -> Server {
    let basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
    Server::start("127.0.0.1", move |req: &Request, _me: &str| -> Reply {
        if !req.path.starts_with("/token") {
            return (404, Vec::new(), Vec::new());
        }
        let params = query(&req.path);
        let authed = req.header("authorization") == Some(basic.as_str());
        let mut access = Vec::new();
        for (k, v) in &params {
            if k != "scope" {
                continue;
            }
            // repository:NAME:ACTIONS
            let mut parts = v.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if name.starts_with("private/") && !authed {
                return (401, Vec::new(), b"{\"details\":\"login needed\"}".to_vec());
            }
            access.push((
                name.to_owned(),
                actions.split(',').map(str::to_owned).collect(),
            ));
        }
        if req.header("authorization").is_some() && !authed {
            return (
                401,
                Vec::new(),
                b"{\"details\":\"bad credentials\"}".to_vec(),
            );
        }
        let subject = if authed { "alice" } else { "" };
        let token = issuer.token(subject, &access);
        let body = serde_json::json!({"token": token, "expires_in": 600}).to_string();
        (
            200,
            vec![("Content-Type".into(), "application/json".into())],
            body.into_bytes(),
        )
    })
}
