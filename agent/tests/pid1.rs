//! Runs the real husk-agent binary as PID 1 of fresh namespaces on the host
//! (`unshare --pid --fork --mount --uts --propagation private`) and checks what it did: the
//! ready line, the early mounts, the hostname from `husk.hostname=` (given through
//! `HUSK_AGENT_CMDLINE`, since /proc/cmdline is the host's), the `husk.exec=` workload with
//! orphan reaping, and that every exit path (done, error, panic) goes through reboot(2), which
//! in a PID namespace kills its init with SIGHUP.
//!
//! With `husk.transport=unix:PATH` it serves the host protocol as PID 1, driven here by raw
//! agent-proto frames, and a shutdown request ends in the same reset.
//!
//! Needs root (mounts, PID namespace) and util-linux `unshare`. Uses the binary Cargo built
//! for this test, or `HUSK_AGENT_BIN` (e.g. `target/husk-agent` from scripts/build-agent.sh,
//! to check the static release build, whose panics abort).

// Test helpers outside `#[test]` fns are not covered by clippy.toml's allow-*-in-tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{Frame, FrameReader, FrameWriter, ProcessSpec, Reply, Request, StreamId};

const TIMEOUT: Duration = Duration::from_secs(60);
const UNSHARE: &[&str] = &[
    "--pid",
    "--fork",
    "--mount",
    "--uts",
    "--propagation",
    "private",
    "--kill-child",
];

/// What one run of the agent produced.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_reset(&self) {
        assert_eq!(
            self.status.signal(),
            Some(libc::SIGHUP),
            "agent did not end through reboot(2): {:?}\n{self}",
            self.status
        );
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--- stdout\n{}--- stderr\n{}---",
            self.stdout, self.stderr
        )
    }
}

fn agent() -> PathBuf {
    std::env::var_os("HUSK_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_husk-agent")))
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests need root (unshare --pid --mount, mount(2), reboot(2))"
    );
}

/// Runs `args` under unshare with `HUSK_AGENT_CMDLINE=cmdline`, with a timeout.
fn unshare(cmdline: &str, args: &[&std::ffi::OsStr]) -> Run {
    finish(spawn_unshare(cmdline, args))
}

/// Starts `args` under unshare with `HUSK_AGENT_CMDLINE=cmdline`; its output is collected by
/// [`finish`].
fn spawn_unshare(cmdline: &str, args: &[&std::ffi::OsStr]) -> Child {
    require_root();
    Command::new("unshare")
        .args(UNSHARE)
        .args(args)
        .env("HUSK_AGENT_CMDLINE", cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run unshare (util-linux)")
}

/// Waits (with a timeout) for a child from [`spawn_unshare`] and collects its output.
fn finish(mut child: Child) -> Run {
    let out = reader(&mut child, true);
    let err = reader(&mut child, false);
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("agent still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn reader(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    })
}

fn run_agent(cmdline: &str) -> Run {
    let agent = agent();
    unshare(cmdline, &[agent.as_os_str()])
}

/// A scratch directory the agent can still see after its mounts: not under /tmp, /run or
/// /dev, which it covers with fresh file systems (a checkout, and so the target dir, may
/// well live under /tmp).
fn scratch_dir() -> PathBuf {
    let dir = Path::new("/var/tmp").join(format!("husk-agent-pid1-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes an executable shell script where the agent can see it.
fn script(name: &str, body: &str) -> PathBuf {
    let dir = scratch_dir();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Reports from inside the sandbox, leaves an orphan for PID 1 to reap, waits until PID 1 has
/// reaped it, and exits 7.
const PROBE: &str = r#"
# First, before the shell forks anything: the signal mask the agent handed over (builtins only).
while read -r key value; do [ "$key" = SigBlk: ] && echo "probe SigBlk:$value"; done < /proc/self/status
echo "probe hostname=$(cat /proc/sys/kernel/hostname)"
echo "probe pid1=$(cat /proc/1/comm)"
for m in /proc /dev/pts /dev/shm /run /tmp /sys/fs/cgroup; do
  awk -v m="$m" '$5 == m { for (i = 7; i < NF; i++) if ($i == "-") { print "probe mount " m " " $(i + 1); break } }' \
    /proc/self/mountinfo | tail -n 1
done
# The orphan: a subshell whose parent exits at once, blocked until the fifo is written.
mkfifo /tmp/orphan-go
orphan=$(sh -c '(read x < /tmp/orphan-go) >/dev/null 2>&1 & echo $!')
echo "probe orphan=$orphan"
echo go > /tmp/orphan-go
# It exits now; a zombie keeps its /proc entry until its parent, PID 1, reaps it.
while [ -e "/proc/$orphan" ]; do sleep 0.05; done
exit 7
"#;

#[test]
fn boots_as_pid1_mounts_sets_hostname_runs_workload_and_resets() {
    let probe = script("probe-hostname.sh", PROBE);
    let run = run_agent(&format!(
        "console=ttyS0 reboot=k husk.hostname=sandbox-1 husk.exec={} husk.later=x",
        probe.display()
    ));
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        run.stdout
            .lines()
            .any(|l| l == format!("husk-agent: ready {version}")),
        "{run}"
    );
    for mount in [
        "mount proc on /proc: mounted",
        "mount tmpfs on /run: mounted",
        "mount tmpfs on /tmp: mounted",
        "mount tmpfs on /dev/shm: mounted",
        "mount devpts on /dev/pts: mounted",
    ] {
        assert!(run.stderr.contains(mount), "missing {mount:?}\n{run}");
    }
    // sysfs and devtmpfs are one instance per host (per network namespace for sysfs), so on a
    // host they are "already mounted"; either outcome is fine.
    for target in ["/sys", "/dev", "/sys/fs/cgroup"] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&format!(" on {target}: ")));
        let ok = line.is_some_and(|l| l.ends_with(": mounted") || l.ends_with("already mounted"));
        assert!(ok, "{target} not mounted\n{run}");
    }
    for fact in [
        "probe hostname=sandbox-1",
        "probe pid1=husk-agent",
        "probe SigBlk:0000000000000000",
        "probe mount /proc proc",
        "probe mount /dev/pts devpts",
        "probe mount /dev/shm tmpfs",
        "probe mount /run tmpfs",
        "probe mount /tmp tmpfs",
        "probe mount /sys/fs/cgroup cgroup2",
    ] {
        assert!(run.stdout.contains(fact), "missing {fact:?}\n{run}");
    }
    assert!(
        run.stderr.contains("command line from HUSK_AGENT_CMDLINE"),
        "{run}"
    );
    assert!(
        run.stderr.contains("ignoring unknown parameter husk.later"),
        "{run}"
    );
    let orphan = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("probe orphan="))
        .unwrap_or_else(|| panic!("the probe named no orphan\n{run}"));
    assert!(
        run.stderr
            .contains(&format!("reaped orphan pid {orphan} (")),
        "orphan {orphan} not reaped by the agent\n{run}"
    );
    assert!(run.stdout.contains("husk-agent: exit code=7 ("), "{run}");
    assert!(run.stderr.contains("resetting (Done)"), "{run}");
    run.assert_reset();
}

#[test]
fn hostname_defaults_to_husk() {
    let probe = script(
        "probe-default.sh",
        "cat /proc/sys/kernel/hostname | sed 's/^/probe hostname=/'\n",
    );
    let run = run_agent(&format!("console=ttyS0 husk.exec={}", probe.display()));
    assert!(run.stdout.contains("probe hostname=husk\n"), "{run}");
    assert!(run.stdout.contains("husk-agent: exit code=0 ("), "{run}");
    run.assert_reset();
}

#[test]
fn without_workload_or_transport_it_reports_ready_and_resets() {
    // `none`: by default the agent would serve vsock wherever this machine has a guest CID.
    let run = run_agent("console=ttyS0 husk.transport=none");
    assert!(run.stdout.starts_with("husk-agent: ready "), "{run}");
    assert!(!run.stdout.contains("exit code="), "{run}");
    run.assert_reset();
}

#[test]
fn panic_ends_in_reset() {
    let run = run_agent("husk.panic_test=1 husk.transport=none");
    assert!(run.stdout.contains("husk-agent: ready "), "{run}");
    assert!(run.stderr.contains("panic: "), "{run}");
    assert!(
        run.stderr.contains("husk.panic_test requested a panic"),
        "{run}"
    );
    assert!(run.stderr.contains("resetting (Panic)"), "{run}");
    run.assert_reset();
}

#[test]
fn error_ends_in_reset() {
    let run = run_agent("husk.hostname=not_valid!");
    assert!(
        run.stderr
            .contains("error: bad kernel command line: husk.hostname="),
        "{run}"
    );
    assert!(run.stderr.contains("resetting (Error)"), "{run}");
    assert!(!run.stdout.contains("ready"), "{run}");
    run.assert_reset();
}

#[test]
fn missing_workload_reports_127_and_resets() {
    let run = run_agent("husk.exec=/nonexistent/husk-workload");
    assert!(
        run.stdout
            .contains("husk-agent: exit code=127 (/nonexistent/husk-workload: "),
        "{run}"
    );
    run.assert_reset();
}

#[test]
fn not_pid1_refuses_and_never_reboots() {
    // PID 1 here is a shell; the agent is an ordinary process in the namespace. Were it to
    // call reboot(2), the namespace's init (the shell) would die of SIGHUP.
    let agent = agent();
    let run = unshare(
        "husk.hostname=should-not-be-set",
        &[
            "sh".as_ref(),
            "-c".as_ref(),
            r#""$0" --version; "$0"; echo "rc=$?""#.as_ref(),
            agent.as_os_str(),
        ],
    );
    assert!(
        run.status.success(),
        "shell (PID 1) did not exit cleanly: {:?}\n{run}",
        run.status
    );
    assert!(
        run.stdout
            .contains(&format!("husk-agent {}\n", env!("CARGO_PKG_VERSION"))),
        "{run}"
    );
    assert!(run.stdout.contains("rc=1\n"), "{run}");
    assert!(run.stderr.contains("must run as PID 1"), "{run}");
    assert!(
        !run.stderr.contains("mount "),
        "mounted although not PID 1\n{run}"
    );
}

/// Sends one request as a raw agent-proto frame.
fn request(out: &mut UnixStream, id: u64, req: &Request) {
    let json = agent_proto::encode(Some(id), req).unwrap();
    FrameWriter::new(out).write_control(&json).unwrap();
}

/// Reads control messages (collecting stdout bytes) until the reply to `id`.
fn reply_to(frames: &mut FrameReader<UnixStream>, id: u64, stdout: &mut Vec<u8>) -> Reply {
    loop {
        match frames.read_frame().unwrap().expect("agent hung up") {
            Frame::Data(d) if d.stream == StreamId::Stdout => stdout.extend(d.bytes),
            Frame::Data(_) => {}
            Frame::Control(json) => match agent_proto::decode::<Reply>(&json).unwrap() {
                (Some(got), reply) if got == id => return reply,
                _ => {}
            },
        }
    }
}

fn expect_ready(frames: &mut FrameReader<UnixStream>) {
    match frames.read_frame().unwrap() {
        Some(Frame::Control(json)) => assert!(matches!(
            agent_proto::decode::<Reply>(&json).unwrap(),
            (
                None,
                Reply::Ready {
                    version: agent_proto::PROTOCOL_VERSION,
                    ..
                }
            )
        )),
        other => panic!("expected ready, got {other:?}"),
    }
}

fn connect(path: &Path, child: &mut Child) -> UnixStream {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(stream) = UnixStream::connect(path) {
            return stream;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "agent ended ({status:?}) before listening on {}",
                path.display()
            );
        }
        assert!(Instant::now() < deadline, "agent never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_the_protocol_as_pid1_and_resets_on_shutdown() {
    let dir = scratch_dir();
    let socket = dir.join("pid1.sock");
    let _ = std::fs::remove_file(&socket);
    let agent = agent();
    let cmdline = format!(
        "husk.hostname=served husk.transport=unix:{}",
        socket.display()
    );
    let mut child = spawn_unshare(&cmdline, &[agent.as_os_str()]);
    let stream = connect(&socket, &mut child);
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut frames = FrameReader::new(stream);
    let mut stdout = Vec::new();
    expect_ready(&mut frames);
    let spec = ProcessSpec {
        argv: [
            "sh",
            "-c",
            "cat /proc/sys/kernel/hostname /proc/1/comm; exit 5",
        ]
        .map(String::from)
        .to_vec(),
        ..ProcessSpec::default()
    };
    request(&mut out, 1, &Request::Start { process: 1, spec });
    let started = reply_to(&mut frames, 1, &mut stdout);
    assert!(
        matches!(started, Reply::Started { process: 1, .. }),
        "{started:?}"
    );
    request(&mut out, 2, &Request::Wait { process: 1 });
    match reply_to(&mut frames, 2, &mut stdout) {
        Reply::Exited { code: 5, .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(String::from_utf8_lossy(&stdout), "served\nhusk-agent\n");
    request(&mut out, 3, &Request::Shutdown);
    assert_eq!(reply_to(&mut frames, 3, &mut stdout), Reply::Ok);

    let run = finish(child);
    assert!(run.stdout.contains("husk-agent: ready "), "{run}");
    assert!(
        run.stderr.contains("serving the host protocol on unix:"),
        "{run}"
    );
    assert!(run.stderr.contains("shutdown requested"), "{run}");
    assert!(run.stderr.contains("resetting (Done)"), "{run}");
    run.assert_reset();
    assert!(!socket.exists(), "socket left behind");
}
