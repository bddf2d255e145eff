//! Harness for husk's end-to-end tests (the tests themselves are in `tests/tests/`): find
//! the `husk` binary, run it, and decide whether KVM tests run here.
//!
//! `HUSK_REQUIRE_KVM=1` (set by CI) turns a missing /dev/kvm or guest kernel into a test
//! failure; without it those tests skip with a loud message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `husk` binary under test: `HUSK_BIN`, else the workspace's `target/debug/husk`.
pub fn husk_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HUSK_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/husk");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A `husk` command with a private state directory and quiet logs.
pub fn husk(root: &Path) -> Command {
    let mut c = Command::new(husk_bin());
    husk_env(&mut c, root);
    c
}

/// A `husk` command like [`husk`], run inside the network namespace at `netns`.
pub fn husk_in_netns(root: &Path, netns: &Path) -> Command {
    let mut c = in_netns(netns, husk_bin());
    husk_env(&mut c, root);
    c
}

fn husk_env(c: &mut Command, root: &Path) {
    c.env("HUSK_ROOT", root)
        .env_remove("HUSK_LOG")
        .env_remove("HUSK_KVM_DEVICE");
}

/// `program` run inside the network namespace at `netns` (`nsenter --net`: unlike
/// `ip netns exec` it keeps the host's /sys, where the cgroup hierarchy is mounted).
pub fn in_netns(netns: &Path, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program);
    c
}

/// Runs and captures.
pub fn output(mut c: Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

/// Says that (part of) a test was skipped, on the real stderr: the test harness captures
/// `eprintln!` of passing tests, and a skip must be seen in every run's output.
pub fn skipped(msg: &str) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: descriptor 2 is this process's stderr for its whole life; ManuallyDrop keeps
    // the File from closing it.
    let mut err = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(2) });
    let _ = writeln!(err, "{msg}");
}

/// Whether KVM-needing tests can run; panics when CI demands KVM and it is missing.
pub fn kvm_available(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        std::env::var_os("HUSK_REQUIRE_KVM").is_none(),
        "HUSK_REQUIRE_KVM is set but /dev/kvm does not exist"
    );
    skipped(&format!(
        "SKIPPED {test}: /dev/kvm does not exist on this host"
    ));
    false
}

/// Whether tests that run Linux guests (kernel and user space) in a microVM run here:
/// wherever /dev/kvm exists and is usable, hardware or an emulating KVM such as PVM (where
/// they are slow but real). A /dev/kvm that exists but cannot be used fails the test.
pub fn linux_guests_available(test: &str) -> bool {
    if !kvm_available(test) {
        return false;
    }
    if let Err(e) = vmm::host::probe(Path::new("/dev/kvm")) {
        panic!("/dev/kvm exists but cannot be used: {e}");
    }
    true
}

/// The text a guest built by `guest-kernel/build.sh` shows in `/proc/version`: the build
/// user and host are both `husk`, which no distribution kernel has. A vm test that reads
/// this from inside its container proves it ran in a husk microVM, not on the host.
pub const GUEST_KERNEL_MARK: &str = "(husk@husk)";

/// The guest kernel for boot tests, found as husk finds its default kernel; `None` (with a
/// loud message, or a failure under `HUSK_REQUIRE_KVM`) when there is none.
pub fn guest_kernel(test: &str) -> Option<PathBuf> {
    // The same lookup husk itself uses: HUSK_KERNEL, else the cached build.
    let path = runtime::paths::default_kernel();
    match path.filter(|p| p.is_file()) {
        Some(p) => Some(p),
        None => {
            assert!(
                std::env::var_os("HUSK_REQUIRE_KVM").is_none(),
                "HUSK_REQUIRE_KVM is set but no guest kernel is built (guest-kernel/build.sh)"
            );
            skipped(&format!(
                "SKIPPED {test}: no guest kernel built (run guest-kernel/build.sh)"
            ));
            None
        }
    }
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A network namespace a test makes for itself (`ip netns add`), with loopback up, and
/// removes when dropped: husk's networking in a test runs entirely inside one, so its
/// bridges, TAPs, veths and packets never touch the host's own network.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A fresh namespace `husk-t<pid>-<tag>` (one left by a killed run is replaced).
    pub fn new(tag: &str) -> NetNs {
        let name = format!("husk-t{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = NetNs { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let o = output({
            let mut c = Command::new("ip");
            c.args(args);
            c
        });
        assert!(o.status.success(), "ip {args:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The namespace's name, for `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's file, for `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        in_netns(&self.path(), program)
    }

    /// Runs `f` on a thread that has joined the namespace (`setns`), for sockets a test
    /// opens itself: the test's other threads stay where they are.
    #[allow(clippy::expect_used)] // test harness: a failed step is a failed test
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(self.path()).expect("open the namespace");
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns only changes the calling thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread in the namespace panicked")
    }

    /// `ip -o link` inside the namespace.
    pub fn links(&self) -> String {
        self.ip(&["-n", &self.name, "-o", "link"])
    }

    /// Asserts nothing of husk's networking is left in the namespace: no bridge, no
    /// container link of any interface slot (host ends `hk`/`h<slot>`, veth ends
    /// `pk`/`p<slot>` before they move), no `husk` nftables table. `what` names the case.
    pub fn assert_no_husk_networking(&self, what: &str) {
        let links = self.links();
        for prefix in [" hk", " h1", " h2", " hb-", " husk0", " pk", " p1", " p2"] {
            assert!(!links.contains(prefix), "[{what}] links left: {links}");
        }
        let mut nft = self.command("nft");
        nft.args(["list", "table", "ip", "husk"]);
        assert!(
            !output(nft).status.success(),
            "[{what}] husk's table is left"
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
