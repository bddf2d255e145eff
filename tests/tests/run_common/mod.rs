//! Shared by the `run_*` end-to-end tests: a private state directory with the busybox default
//! image, `husk` invocations against it, the backends to run over (vm only where this host
//! can run Linux guests, skipped loudly otherwise) and checks that nothing leaked.

#![allow(dead_code)] // each test file uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use husk_e2e::{husk, output, stderr};
use rootfs::defaults::DefaultImage;
use rootfs::store::Store;

/// How long a test waits for something a container does before it counts as hung: a hang
/// guard, never a timing assertion. Generous, since a vm container's kernel code is
/// emulated on this project's machines and shares two cores with the tests beside it.
pub const GUARD: Duration = Duration::from_secs(180);

/// The busybox default image's name.
pub const BUSYBOX: &str = "husk/busybox";

/// A test's private husk state directory with the busybox image imported, and a network
/// namespace of its own that every `husk` it runs is in: containers join the default
/// bridge network unless told otherwise, and its bridge, links and rules must never be
/// made in the host's own namespace.
///
/// Every `husk` it runs leaves its phase marks (`HUSK_TIMINGS`) in a file beside the root.
/// A context made for one isolation ([`Ctx::isolated`]) checks them when it is dropped:
/// under vm every sandbox it started was a VMM that built a KVM VM, under process none
/// was, so a silent fallback from one backend to the other fails the test.
pub struct Ctx {
    dir: tempfile::TempDir,
    isolation: Option<String>,
    /// Every `husk` runs in this network namespace (see [`Ctx::in_netns`]).
    netns: Option<PathBuf>,
    /// The namespace made for this context (removed after its containers are).
    own_netns: Option<husk_e2e::NetNs>,
}

impl Ctx {
    /// A fresh root with `husk/busybox` in it.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("husk-run-test")
            .tempdir()
            .unwrap();
        let store = Store::open(dir.path()).unwrap();
        DefaultImage::Busybox.import(&store).unwrap();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = husk_e2e::NetNs::new(&format!("ctx{n}"));
        Self {
            dir,
            isolation: None,
            netns: Some(ns.path()),
            own_netns: Some(ns),
        }
    }

    /// Runs every `husk` in the host's own network namespace, for a test that must reach
    /// a server on the host's loopback (a registry); its containers must then say
    /// `--network none`.
    pub fn on_host_network(mut self) -> Self {
        self.netns = None;
        self.own_netns = None;
        self
    }

    /// A fresh root whose containers all run under `isolation` (`vm` or `process`).
    pub fn isolated(isolation: &str) -> Self {
        let mut ctx = Self::new();
        ctx.isolation = Some(isolation.to_owned());
        ctx
    }

    /// Runs every `husk` of this context inside `ns` (declare `ns` before the context,
    /// so that the context's checks run before the namespace goes).
    pub fn in_netns(mut self, ns: &husk_e2e::NetNs) -> Self {
        self.netns = Some(ns.path());
        self.own_netns = None;
        self
    }

    /// Imports `husk/debian:bookworm` (the default debian image) into the root.
    pub fn import_debian(&self) {
        let store = Store::open(self.root()).unwrap();
        rootfs::defaults::DefaultImage::Debian
            .import(&store)
            .unwrap();
    }

    /// `image` saved as an OCI layout and unpacked into a fresh directory (what a test
    /// pushes to its loopback registry).
    pub fn oci_layout(&self, image: &str) -> tempfile::TempDir {
        let tar = self.root().join("oci-layout.tar");
        self.ok(&[
            "save",
            "--format",
            "oci",
            "-o",
            tar.to_str().unwrap(),
            image,
        ]);
        let layout = tempfile::tempdir().unwrap();
        let untar = Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(layout.path())
            .status()
            .unwrap();
        assert!(untar.success());
        layout
    }

    /// The phase marks of every `husk` this context ran.
    fn marks_path(&self) -> PathBuf {
        self.root().with_extension("marks")
    }

    /// Asserts that the sandboxes this context started match its isolation (see above).
    fn assert_backend(&self) {
        let Some(iso) = self.isolation.as_deref() else {
            return;
        };
        let marks = runtime::timing::read(&self.marks_path());
        let count = |name: &str| marks.iter().filter(|(n, _)| n == name).count();
        let (sandboxes, vmms) = (count("sandbox.created"), count("vmm.start"));
        match iso {
            "vm" => {
                assert_eq!(
                    vmms, sandboxes,
                    "[vm] every sandbox must be a VMM process: {sandboxes} sandboxes, {vmms} VMMs"
                );
                if sandboxes > 0 {
                    assert!(count("vmm.built") > 0, "[vm] no VMM ever built its VM");
                }
            }
            _ => assert_eq!(vmms, 0, "[{iso}] {vmms} VMMs started"),
        }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `husk` with this root.
    pub fn cmd(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => husk_e2e::husk_in_netns(self.root(), ns),
            None => husk(self.root()),
        };
        c.env(runtime::timing::ENV, self.marks_path());
        c
    }

    /// Runs `husk args` and captures everything.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args).stdin(Stdio::null());
        output(c)
    }

    /// Runs `husk args`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "husk {args:?} failed ({:?}): {}",
            o.status,
            stderr(&o)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `husk args`, asserts the exit code and a one-line `husk: ` error; returns it.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.run(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "husk {args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "one line from husk {args:?}: {e}");
        assert!(e.starts_with("husk: "), "{e}");
        e.trim_end().to_owned()
    }

    /// Runs `husk args`, asserts the exit code and one line on stderr; returns it.
    pub fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let o = self.run(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "husk {args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "one line from husk {args:?}: {e}");
        e.trim_end().to_owned()
    }

    /// Container IDs in the state directory.
    pub fn container_dirs(&self) -> Vec<String> {
        match std::fs::read_dir(self.root().join("containers")) {
            Ok(rd) => rd
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Polls `f` (every 50 ms, up to `limit`) until it is true; false if it never was.
    pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        f()
    }

    /// Asserts that no container, process, mount or loop device of this root is left.
    pub fn assert_clean(&self) {
        let root = self.root().to_string_lossy().into_owned();
        let gone = Self::eventually(GUARD, || {
            self.container_dirs().is_empty() && processes_under(&root).is_empty()
        });
        assert!(
            gone,
            "left behind: containers {:?}, processes {:?}",
            self.container_dirs(),
            processes_under(&root)
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:#?}");
        let loops = loop_devices_under(&root);
        assert!(loops.is_empty(), "loop devices left behind: {loops:?}");
    }
}

impl Ctx {
    /// On a failed test: the last lines of every container's guest console, VMM and
    /// shim logs, before the state directory goes with the test.
    fn print_container_logs(&self) {
        for id in self.container_dirs() {
            let dir = self.root().join("containers").join(&id);
            for name in ["console.log", "vmm.log", "shim.log"] {
                let Ok(text) = std::fs::read_to_string(dir.join(name)) else {
                    continue;
                };
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(25)..];
                eprintln!("--- {id:.12} {name} (last {} lines)", tail.len());
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_container_logs();
        }
        // Best effort: whatever a failed test left running goes.
        let ids = self.run(&["ps", "-aq", "--no-trunc"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        if !std::thread::panicking() {
            self.assert_backend();
        }
        let _ = std::fs::remove_file(self.marks_path());
    }
}

/// Processes whose command line mentions `needle` (shims of this root, their children).
pub fn processes_under(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// Loop devices whose backing file is under `root`.
pub fn loop_devices_under(root: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            backing
                .starts_with(root)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), backing.trim()))
        })
        .collect()
}

/// The backends to test: process always, and vm wherever /dev/kvm is usable (also on an
/// emulating KVM such as this project's PVM machines, where a microVM takes seconds); a
/// missing /dev/kvm skips the vm half loudly (a failure under `HUSK_REQUIRE_KVM`).
pub fn backends(test: &str) -> Vec<&'static str> {
    let mut v = vec!["process"];
    if husk_e2e::linux_guests_available(test) {
        v.push("vm");
    }
    v
}

/// Asserts that `proc_version` (a container's `/proc/version`) is husk's guest kernel under
/// vm isolation and the host's kernel under process isolation, so a silent fallback from
/// one to the other fails the test.
pub fn assert_kernel(iso: &str, proc_version: &str) {
    let host = std::fs::read_to_string("/proc/version").unwrap();
    match iso {
        "vm" => {
            assert!(
                proc_version.contains(husk_e2e::GUEST_KERNEL_MARK),
                "vm isolation did not run husk's guest kernel: {proc_version:?}"
            );
            assert_ne!(proc_version.trim(), host.trim(), "vm ran the host kernel");
        }
        _ => assert_eq!(
            proc_version.trim(),
            host.trim(),
            "process ran another kernel"
        ),
    }
}

/// stdout as trimmed text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_owned()
}

/// A path in the test's temp root for scratch files.
pub fn scratch(ctx: &Ctx, name: &str) -> PathBuf {
    ctx.root().join(name)
}

/// A tmux server of a test's own (a real pty with a window size), killed on drop.
pub struct Tmux {
    /// Its `-L` socket name.
    pub socket: String,
}

impl Tmux {
    /// `tmux -L socket`.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Runs `tmux args`, asserts success, returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let o = self.cmd().args(args).output().unwrap();
        assert!(
            o.status.success(),
            "tmux {args:?}: {}",
            husk_e2e::stderr(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Opens window `t`, 91 columns by 27 rows, running `command` (a shell line).
    pub fn start(&self, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "91",
            "-y",
            "27",
            command,
        ]);
    }

    /// Types into the shell that runs in window `t` and asserts it has a pty of the
    /// window's starting size (not the agent's 24x80 default) that echoes what it runs.
    pub fn assert_shell_on_a_pty_of_the_window_size(&self) {
        self.run(&["send-keys", "-t", "t", "echo h''i; tty; stty size", "Enter"]);
        let screen = self.wait_for("27 91");
        assert!(screen.lines().any(|l| l.trim_end() == "hi"), "{screen}");
        assert!(screen.contains("/dev/pts/"), "{screen}");
    }

    /// What window `t` shows.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Waits (a hang guard) until window `t` shows `what`; the screen.
    pub fn wait_for(&self, what: &str) -> String {
        let mut screen = String::new();
        // A hang guard: a vm container boots a kernel first.
        let seen = Ctx::eventually(Duration::from_secs(120), || {
            screen = self.screen();
            screen.contains(what)
        });
        assert!(
            seen,
            "{what:?} never appeared on the tmux screen:\n{screen}"
        );
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}
