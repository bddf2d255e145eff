//! A real registry on loopback for pull tests: Debian's `docker-registry` on a free
//! 127.0.0.1 port with its own config and storage directory (optionally with htpasswd
//! basic auth), images pushed into it with `skopeo copy` from OCI layouts the tests build.
//! The registry is killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How skopeo writes the image into the registry.
#[derive(Clone, Copy, Debug)]
pub enum Push {
    /// OCI manifest, gzip layers.
    OciGzip,
    /// OCI manifest, zstd layers.
    OciZstd,
    /// Docker schema 2 manifest (or manifest list), gzip layers.
    DockerGzip,
}

/// A running registry.
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
}

/// How the registry authenticates.
enum Auth {
    None,
    /// htpasswd basic auth for (user, password).
    Basic(String, String),
    /// Bearer tokens from `realm`, signed by the key of `cert`; skopeo pushes with
    /// `creds` (which the token server knows).
    Token {
        realm: String,
        cert: PathBuf,
        creds: (String, String),
    },
}

impl Registry {
    /// An open registry (no authentication).
    pub fn start() -> Self {
        Self::spawn(Auth::None)
    }

    /// A registry demanding basic auth for `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::spawn(Auth::Basic(user.to_owned(), password.to_owned()))
    }

    /// A registry demanding Bearer tokens from `realm` (`support::token`), trusting the
    /// token signer's certificate `cert`; pushes log in to the token server as
    /// `user`/`password`.
    pub fn start_with_token_auth(realm: &str, cert: &Path, user: &str, password: &str) -> Self {
        Self::spawn(Auth::Token {
            realm: realm.to_owned(),
            cert: cert.to_owned(),
            creds: (user.to_owned(), password.to_owned()),
        })
    }

    fn spawn(how: Auth) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut auth = None;
        if let Auth::Token { realm, cert, creds } = &how {
            auth = Some(creds.clone());
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                super::token::SERVICE,
                super::token::ISSUER,
                cert.display()
            ));
        }
        if let Auth::Basic(u, p) = &how {
            auth = Some((u.clone(), p.clone()));
            let htpasswd = dir.path().join("htpasswd");
            let st = Command::new("htpasswd")
                .args(["-Bbc"])
                .arg(&htpasswd)
                .args([u, p])
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd (apache2-utils) must be installed: scripts/prepare.sh");
            assert!(st.success());
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: husk-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed: scripts/prepare.sh");
        let reg = Self {
            child,
            port,
            dir,
            auth,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry did not come up: {}", self.log());
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes image `tag` of the OCI layout `layout` as `name` (`repo:tag`), every platform.
    pub fn push(&self, layout: &Path, tag: &str, name: &str, how: Push) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        // Private blob-info cache: no compressed variant known from another test is reused.
        c.env("HOME", self.dir.path());
        c.env("XDG_DATA_HOME", self.dir.path().join("xdg"));
        match how {
            Push::OciGzip => c.args(["--dest-compress", "--dest-compress-format", "gzip"]),
            Push::OciZstd => c.args(["--dest-compress", "--dest-compress-format", "zstd"]),
            Push::DockerGzip => c.args([
                "--format",
                "v2s2",
                "--dest-compress",
                "--dest-compress-format",
                "gzip",
            ]),
        };
        if let Some((u, p)) = &self.auth {
            c.arg(format!("--dest-creds={u}:{p}"));
        }
        c.arg(format!("oci:{}:{tag}", layout.display()));
        c.arg(format!("docker://{}/{name}", self.host()));
        let out = c
            .output()
            .expect("skopeo must be installed: scripts/prepare.sh");
        assert!(
            out.status.success(),
            "skopeo push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the registry keeps blob `hex` (to corrupt or delete it).
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Every blob file in the registry storage.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let base = self.dir.path().join("data/docker/registry/v2/blobs/sha256");
        let mut out = Vec::new();
        for a in std::fs::read_dir(base).unwrap().flatten() {
            for b in std::fs::read_dir(a.path()).unwrap().flatten() {
                out.push(b.path().join("data"));
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
