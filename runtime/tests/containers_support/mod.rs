//! Shared helpers for the container tests: a temporary state directory with the busybox
//! default image imported, the real agent and shim binaries, and leak checks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use runtime::container::{ContainerState, HostConfig, Isolation, RunConfig, Store};
use runtime::lifecycle::{self, CreateRequest};

#[path = "../support/mod.rs"]
mod agent_support;

static ENV: Once = Once::new();

/// Points the runtime at the real agent and the `husk-shim` binary (once per process,
/// before any test starts a shim).
pub fn init_env() {
    ENV.call_once(|| {
        let agent = agent_support::agent_bin();
        // SAFETY: set once, before this test binary starts any container (every test calls
        // this first, and Once blocks the others until it is done).
        unsafe {
            std::env::set_var("HUSK_AGENT", agent);
            std::env::set_var("HUSK_SHIM", env!("CARGO_BIN_EXE_husk-shim"));
        }
    });
}

/// A state directory with husk/busybox imported; removes its containers on drop.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Self {
        init_env();
        let dir = tempfile::tempdir().unwrap();
        let store = rootfs::store::Store::open(dir.path()).unwrap();
        rootfs::defaults::DefaultImage::Busybox
            .import(&store)
            .expect("husk/busybox: run scripts/images.sh");
        Root { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> Store {
        Store::open(self.path()).unwrap()
    }

    /// Creates and starts a process-isolated busybox container running `argv`.
    pub fn run(&self, argv: &[&str], host: HostConfig) -> String {
        let req = CreateRequest {
            name: None,
            image: "husk/busybox".into(),
            config: RunConfig {
                cmd: argv.iter().map(|s| s.to_string()).collect(),
                ..RunConfig::default()
            },
            host: HostConfig {
                isolation: Isolation::Process,
                ..host
            },
            ..CreateRequest::default()
        };
        let config = lifecycle::create(self.path(), req).unwrap();
        // A workload that cannot start (not found, ...) still leaves its container.
        match lifecycle::start(self.path(), &config.id) {
            Ok(_)
            | Err(runtime::lifecycle::LifecycleError::Shim(
                runtime::shim::ShimError::NotStarted { .. },
            )) => {}
            Err(e) => panic!("start: {e}"),
        }
        config.id
    }

    pub fn state(&self, id: &str) -> ContainerState {
        self.store().state(id).unwrap()
    }

    pub fn logs(&self, id: &str) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        lifecycle::logs(self.path(), id, &Default::default(), &mut out, &mut err).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    /// Polls (bounded) until `f` holds.
    pub fn until(&self, what: &str, f: impl Fn() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Ok(rows) = lifecycle::list(self.path(), true) {
            for r in rows {
                let _ = lifecycle::remove(self.path(), &r.config.id, true);
            }
        }
    }
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.starts_with(&want))
        })
        .map(|e| e.path())
        .collect()
}
