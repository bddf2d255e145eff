//! Runs the real husk-agent binary as an ordinary host process serving a unix socket in a
//! temporary directory (host-process mode), for the agent protocol tests and benchmarks.
//!
//! The binary: `HUSK_AGENT_BIN` if set, else `husk-agent` in this test binary's profile
//! directory (`target/debug/husk-agent`, built by `cargo build -p agent`, or by
//! `cargo test -p agent -p runtime`). A missing or stale (older than the agent's sources)
//! binary fails with instructions rather than testing old code.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use runtime::agent_client::{AgentClient, Endpoint};

/// How long the agent gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Request timeout for test clients.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The agent binary to test (see the module docs).
pub fn agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HUSK_AGENT_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HUSK_AGENT_BIN={} does not exist",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().unwrap();
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join("husk-agent");
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p agent` (or run `cargo test -p agent -p \
         runtime`), or set HUSK_AGENT_BIN to a husk-agent binary",
        bin.display()
    );
    let built = bin.metadata().unwrap().modified().unwrap();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for dir in ["agent/src", "agent/proto/src"] {
        if let Some(newer) = newer_source(&workspace.join(dir), built) {
            panic!(
                "{} is older than {}: rebuild it with `cargo build -p agent` (or set \
                 HUSK_AGENT_BIN)",
                bin.display(),
                newer.display()
            );
        }
    }
    bin
}

fn newer_source(dir: &Path, than: SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let meta = entry.metadata().ok()?;
        if meta.is_dir() {
            if let Some(found) = newer_source(&path, than) {
                return Some(found);
            }
        } else if meta.modified().ok()? > than {
            return Some(path);
        }
    }
    None
}

/// A husk-agent serving `unix:<tempdir>/agent.sock`; killed when dropped.
pub struct Agent {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Agent {
    /// Starts the agent and waits until it accepts connections.
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let log = File::create(dir.path().join("agent.log")).unwrap();
        let mut cmd = Command::new(agent_bin());
        // SAFETY: prctl is async-signal-safe and takes no pointers. The agent dies with this
        // test thread even if the test process is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start husk-agent");
        let mut agent = Agent { child, dir, socket };
        let deadline = Instant::now() + START_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!(
                    "husk-agent exited ({status}) before listening:\n{}",
                    agent.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "husk-agent never listened:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    /// The socket it serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A scratch directory next to the socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connected, version-checked client.
    pub fn client(&self) -> AgentClient {
        AgentClient::connect(&Endpoint::Unix(self.socket.clone()), TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect: {e:?}\n{}", self.log()))
    }

    /// What the agent wrote on stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Waits (bounded) for the agent to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random bytes (xorshift), so large streams can be checked exactly.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub use runtime::procfs::alive;

/// Waits (bounded) until `pid` is gone.
pub fn wait_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still alive after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
