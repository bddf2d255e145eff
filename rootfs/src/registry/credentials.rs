//! Registry credentials: `<root>/auth.json` written by `husk login` (mode 0600, docker's
//! config.json format `{"auths":{"host":{"auth":"base64(user:pass)"}}}`), and the docker
//! client's `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` read as a fallback.
//! Credential helpers and identity tokens are not supported.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// husk's own credentials file under the state directory.
pub const AUTH_FILE: &str = "auth.json";
/// The key docker uses for Docker Hub.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Errors reading or writing credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A credentials file could not be read or written.
    #[error("{action} {path}")]
    Io {
        /// read / write.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A credentials file is not valid JSON of the expected shape.
    #[error("cannot parse {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// An `auth` field is not base64 of `user:password`.
    #[error("invalid \"auth\" entry for {host} in {path}")]
    BadEntry {
        /// The registry.
        host: String,
        /// The file.
        path: PathBuf,
    },
}

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic ...` header value.
    pub fn basic_header(&self) -> String {
        format!("Basic {}", self.encoded())
    }

    fn encoded(&self) -> String {
        STANDARD.encode(format!("{}:{}", self.username, self.password))
    }
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Everything else in a docker config.json is kept as is.
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(serde::Deserialize, serde::Serialize, Default)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

/// The credentials for `registry` (as in a reference: `docker.io`, `host:port`): husk's
/// auth.json first, then the docker client's config.
pub fn lookup(root: &Path, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
    let mut files = vec![root.join(AUTH_FILE)];
    files.extend(docker_config_path());
    for path in files {
        if let Some(c) = lookup_in(&path, registry)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Saves credentials for `registry` into `<root>/auth.json` (0600, atomic replace).
pub fn store(root: &Path, registry: &str, creds: &Credentials) -> Result<(), CredentialsError> {
    let path = root.join(AUTH_FILE);
    let mut cfg = read(&path)?.unwrap_or_default();
    cfg.auths
        .retain(|k, _| normalise_key(k) != normalise_key(registry));
    cfg.auths.insert(
        config_key(registry),
        AuthEntry {
            auth: Some(creds.encoded()),
            other: BTreeMap::new(),
        },
    );
    write(&path, &cfg)
}

/// Removes the credentials for `registry` from `<root>/auth.json`; whether there were any.
pub fn remove(root: &Path, registry: &str) -> Result<bool, CredentialsError> {
    let path = root.join(AUTH_FILE);
    let Some(mut cfg) = read(&path)? else {
        return Ok(false);
    };
    let before = cfg.auths.len();
    cfg.auths
        .retain(|k, _| normalise_key(k) != normalise_key(registry));
    if cfg.auths.len() == before {
        return Ok(false);
    }
    write(&path, &cfg)?;
    Ok(true)
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

fn lookup_in(path: &Path, registry: &str) -> Result<Option<Credentials>, CredentialsError> {
    let Some(cfg) = read(path)? else {
        return Ok(None);
    };
    let want = normalise_key(registry);
    for (key, entry) in &cfg.auths {
        if normalise_key(key) != want {
            continue;
        }
        let Some(auth) = &entry.auth else { continue };
        let bad = || CredentialsError::BadEntry {
            host: key.clone(),
            path: path.to_owned(),
        };
        let raw = STANDARD.decode(auth.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (u, p) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    Ok(None)
}

fn read(path: &Path) -> Result<Option<ConfigFile>, CredentialsError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CredentialsError::Io {
                action: "cannot read",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CredentialsError::Parse {
            path: path.to_owned(),
            source,
        })
}

fn write(path: &Path, cfg: &ConfigFile) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!(".{AUTH_FILE}.{}.tmp", std::process::id()));
    let body = serde_json::to_vec_pretty(cfg).map_err(|e| io(std::io::Error::other(e)))?;
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The key docker writes for `registry`.
fn config_key(registry: &str) -> String {
    if normalise_key(registry) == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// `https://index.docker.io/v1/` -> `docker.io`, `http://host:5000/v2/` -> `host:5000`.
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[test]
    fn store_then_lookup_with_0600() {
        let root = tempfile::tempdir().unwrap();
        store(root.path(), "127.0.0.1:5000", &creds("alice", "pa:ss")).unwrap();
        store(root.path(), "docker.io", &creds("bob", "x")).unwrap();
        store(root.path(), "127.0.0.1:5000", &creds("alice", "new")).unwrap();
        let path = root.path().join(AUTH_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let got = lookup_in(&path, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(got, creds("alice", "new"));
        let hub = lookup_in(&path, "docker.io").unwrap().unwrap();
        assert_eq!(hub, creds("bob", "x"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(DOCKER_HUB_KEY), "{text}");
        assert!(lookup_in(&path, "other:1").unwrap().is_none());
    }

    #[test]
    fn reads_docker_style_keys_and_keeps_other_fields() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(AUTH_FILE);
        let auth = STANDARD.encode("u:p");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"http://reg.lan:5000/v2/":{{"auth":"{auth}","email":"e"}}}},"credsStore":"x"}}"#
            ),
        )
        .unwrap();
        assert_eq!(
            lookup_in(&path, "reg.lan:5000").unwrap(),
            Some(creds("u", "p"))
        );
        store(root.path(), "other:1", &creds("a", "b")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("credsStore") && text.contains("email"),
            "{text}"
        );
    }

    #[test]
    fn bad_files_are_errors() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(AUTH_FILE);
        std::fs::write(&path, r#"{"auths":{"h":{"auth":"!!"}}}"#).unwrap();
        assert!(matches!(
            lookup_in(&path, "h"),
            Err(CredentialsError::BadEntry { .. })
        ));
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            lookup_in(&path, "h"),
            Err(CredentialsError::Parse { .. })
        ));
    }

    #[test]
    fn debug_hides_the_password() {
        assert!(!format!("{:?}", creds("u", "secret")).contains("secret"));
        assert_eq!(creds("u", "p").basic_header(), "Basic dTpw");
    }
}
