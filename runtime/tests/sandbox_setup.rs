//! `Setup` end to end in process isolation: a two-layer image (busybox from Debian's
//! busybox-static, the top layer deleting, replacing and hiding files of the bottom one) made
//! into real EROFS layer disks by `rootfs::layer`, a real ext4 scratch disk, both attached as
//! loop devices, and the real husk-agent as PID 1 of new pid/mount/uts/ipc/net namespaces
//! driven by `runtime::agent_client`. Checks the tree, the identity files, user names, the
//! working directory, that writes land in the scratch disk's `upper/`, that nothing of the
//! host is visible inside, and that no mount escapes the agent's namespace, neither while it
//! runs (watched from a namespace with shared propagation, where a leak would show) nor after.
//!
//! Needs root, util-linux (`unshare`, `nsenter`, `losetup`), erofs-utils, e2fsprogs
//! (`debugfs`) and `/bin/busybox` (busybox-static), all installed by scripts/prepare.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_proto::ErrorKind;
use runtime::agent_client::{
    AgentClient, ClientError, Endpoint, ProcessSpec, SandboxSpec, Sink, sink_fn,
};
use support::TIMEOUT;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "id", "pwd", "echo", "hostname", "tty", "test", "sort", "awk", "head", "wc",
    "stat",
];

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(file: &Path, read_only: bool) -> Loop {
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if read_only {
            cmd.arg("-r");
        }
        let out = cmd.arg(file).output().expect("cannot run losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A work directory the agent can still see after its early mounts (not under /tmp or /run).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let dir = Path::new("/var/tmp").join(format!("husk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        WorkDir(dir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Tar entries: (path, contents or symlink target, mode); a path ending in `/` is a
/// directory, mode 0 a symlink.
fn layer_tar(path: &Path, entries: &[(&str, Vec<u8>, u32)]) {
    let mut tar = tar::Builder::new(File::create(path).unwrap());
    for (name, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        if *mode == 0 {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            let target = std::str::from_utf8(data).unwrap();
            tar.append_link(&mut header, name, target).unwrap();
        } else if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            header.set_mode(*mode);
            tar.append_data(&mut header, name, &[][..]).unwrap();
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            tar.append_data(&mut header, name, &data[..]).unwrap();
        }
    }
    tar.finish().unwrap();
}

fn file(name: &str, text: &str) -> (&'static str, Vec<u8>, u32) {
    (leak(name), text.as_bytes().to_vec(), 0o644)
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// The bottom layer: busybox, users and groups, and files the top layer changes.
fn bottom_layer(path: &Path) {
    let mut entries = vec![
        ("bin/", vec![], 0o755),
        ("etc/", vec![], 0o755),
        ("bin/busybox", std::fs::read(BUSYBOX).unwrap(), 0o755),
        file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
        ),
        file(
            "etc/group",
            "root:x:0:\nusers:x:100:nobody\nnogroup:x:65534:\n",
        ),
        file("etc/hostname", "from-the-image\n"),
        file("old.txt", "old\n"),
        file("keep.txt", "bottom\n"),
        ("opaque/", vec![], 0o755),
        file("opaque/a.txt", "a\n"),
    ];
    for applet in APPLETS {
        entries.push((leak(&format!("bin/{applet}")), b"busybox".to_vec(), 0));
    }
    layer_tar(path, &entries);
}

/// The top layer: deletes old.txt, replaces keep.txt, makes opaque/ opaque, adds new.txt.
fn top_layer(path: &Path) {
    layer_tar(
        path,
        &[
            file(".wh.old.txt", ""),
            file("keep.txt", "top\n"),
            ("opaque/", vec![], 0o755),
            file("opaque/.wh..wh..opq", ""),
            file("opaque/b.txt", "b\n"),
            file("new.txt", "new\n"),
        ],
    );
}

/// The image's layer disks (bottom first) and a scratch disk, attached as loop devices.
struct Disks {
    layers: Vec<Loop>,
    scratch: Loop,
    scratch_img: PathBuf,
}

fn disks(work: &Path) -> Disks {
    let store = work.join("store");
    let (bottom, top) = (work.join("bottom.tar"), work.join("top.tar"));
    bottom_layer(&bottom);
    top_layer(&top);
    let mut layers = Vec::new();
    for tar in [&bottom, &top] {
        let disk = rootfs::layer::build_layer_disk(&store, tar, None, &[]).unwrap();
        layers.push(Loop::attach(&disk.path, true));
    }
    let scratch_img = work.join("scratch.img");
    rootfs::layer::create_scratch_disk(&scratch_img, 64 << 20).unwrap();
    let scratch = Loop::attach(&scratch_img, false);
    Disks {
        layers,
        scratch,
        scratch_img,
    }
}

fn sandbox_spec(disks: &Disks) -> SandboxSpec {
    SandboxSpec {
        layers: disks.layers.iter().map(|l| l.0.clone()).collect(),
        layer_fstype: "erofs".into(),
        scratch: disks.scratch.0.clone(),
        hostname: "c1".into(),
        hosts: "127.0.0.1\tlocalhost\n::1\tlocalhost\n".into(),
        resolv_conf: "nameserver 192.0.2.53\n".into(),
        hostname_file: true,
        ..SandboxSpec::default()
    }
}

/// A mount namespace with shared propagation to watch the agent from: a mount that escaped
/// the agent's namespace would appear in it.
fn observer() -> Killed {
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "shared", "sleep", "600"])
        .spawn()
        .expect("cannot run unshare");
    let observer = Killed(child);
    let mountinfo = format!("/proc/{}/mountinfo", observer.0.id());
    let deadline = Instant::now() + TIMEOUT;
    // Ready once unshare has exec'd sleep with the shared tree in place: the root mount
    // itself shared (other mounts, /run/netns for one, may be shared on the host already).
    let root_shared = |m: &str| {
        m.lines()
            .any(|l| l.split(' ').nth(4) == Some("/") && l.contains(" shared:"))
    };
    while !std::fs::read_to_string(&mountinfo).is_ok_and(|m| root_shared(&m)) {
        assert!(
            Instant::now() < deadline,
            "observer namespace never came up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    observer
}

fn mountinfo(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap()
}

/// Mount lines without their ids (which differ between reads only if something changed),
/// leaving out network namespaces under /run/netns: tests running beside this one make
/// and remove those, and they propagate into the observer.
fn mount_points(info: &str) -> Vec<String> {
    let mut v: Vec<String> = info
        .lines()
        .filter(|l| {
            !l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with("/run/netns/"))
        })
        .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// Starts the agent as PID 1 of new namespaces inside the observer's mount namespace,
/// leaving propagation as it finds it (shared), and connects to it.
fn start_agent(work: &Path, observer: &Killed) -> (Killed, AgentClient) {
    let socket = work.join("agent.sock");
    let log = File::create(work.join("agent.log")).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", observer.0.id()))
        .args([
            "unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net",
        ])
        .args(["--propagation", "unchanged", "--kill-child"])
        .arg(support::agent_bin())
        .env(
            "HUSK_AGENT_CMDLINE",
            format!(
                "husk.transport=unix:{} husk.hostname=boot",
                socket.display()
            ),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("cannot run nsenter/unshare");
    let mut agent = Killed(child);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(client) = AgentClient::connect(&Endpoint::Unix(socket.clone()), TIMEOUT) {
            return (agent, client);
        }
        if let Some(status) = agent.0.try_wait().unwrap() {
            panic!("agent ended ({status:?}):\n{}", agent_log(work));
        }
        assert!(Instant::now() < deadline, "agent never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent_log(work: &Path) -> String {
    std::fs::read_to_string(work.join("agent.log")).unwrap_or_default()
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn sink(&self) -> Sink {
        let buf = Arc::clone(&self.0);
        sink_fn(move |bytes| buf.lock().unwrap().extend_from_slice(bytes))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs `spec`; returns (code, stdout, stderr).
fn run(client: &AgentClient, spec: &ProcessSpec) -> (i32, String, String) {
    let (out, err) = (Capture::default(), Capture::default());
    let exit = client.run(spec, None, out.sink(), err.sink()).unwrap();
    (exit.code, out.text(), err.text())
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        argv: ["sh", "-c", script].map(String::from).to_vec(),
        ..ProcessSpec::default()
    }
}

/// Runs a shell script that must succeed; returns its stdout.
fn ok(client: &AgentClient, script: &str) -> String {
    let (code, out, err) = run(client, &sh(script));
    assert_eq!(code, 0, "{script}: stdout {out:?} stderr {err:?}");
    out
}

fn as_user(script: &str, user: &str) -> ProcessSpec {
    ProcessSpec {
        user_name: Some(user.into()),
        ..sh(script)
    }
}

#[test]
fn setup_assembles_the_image_and_moves_the_agent_into_it() {
    assert_eq!(euid(), 0, "needs root (loop devices, mounts)");
    let work = WorkDir::new("setup");
    let disks = disks(&work.0);
    let observer = observer();
    let before = mount_points(&mountinfo(observer.0.id()));
    let (mut agent, client) = start_agent(&work.0, &observer);

    // A missing device is refused before anything is mounted, and setup can then proceed.
    let mut bad = sandbox_spec(&disks);
    bad.layers.push("/dev/husk-no-such-disk".into());
    match client.setup(&bad) {
        Err(ClientError::Agent { kind, message }) => {
            assert_eq!(kind, ErrorKind::Setup);
            assert_eq!(message, "layer 2 /dev/husk-no-such-disk: no such device");
        }
        other => panic!("{other:?}"),
    }
    let started = Instant::now();
    client.setup(&sandbox_spec(&disks)).unwrap_or_else(|e| {
        panic!("setup failed: {e}\n{}", agent_log(&work.0));
    });
    eprintln!("setup took {:?}", started.elapsed());
    match client.setup(&sandbox_spec(&disks)) {
        Err(ClientError::Agent { kind, message }) => {
            assert_eq!(kind, ErrorKind::Setup);
            assert!(message.contains("already set up"), "{message}");
        }
        other => panic!("second setup: {other:?}"),
    }

    check_tree(&client);
    check_identity_files(&client);
    check_users(&client);
    check_cwd_exit_codes_and_tty(&client);
    check_host_is_invisible(&client, &work.0, &disks);
    // Nothing the agent mounted reached the (shared) namespace it was started from.
    assert_eq!(mount_points(&mountinfo(observer.0.id())), before);
    assert!(!mountinfo(std::process::id()).contains("/run/husk"));

    ok(&client, "echo persisted > /written.txt");
    client.shutdown().unwrap();
    let status = agent.0.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGHUP),
        "{}",
        agent_log(&work.0)
    );
    assert_eq!(mount_points(&mountinfo(observer.0.id())), before);
    assert!(!mountinfo(std::process::id()).contains("/run/husk"));
    // The write went to the scratch disk's upper layer.
    let out = Command::new("debugfs")
        .args(["-R", "cat /upper/written.txt"])
        .arg(&disks.scratch_img)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "persisted\n");
    let log = agent_log(&work.0);
    assert!(log.contains("rootfs: 2 layer(s)"), "{log}");
    assert!(
        !work.0.join("agent.sock").exists(),
        "socket left behind\n{log}"
    );
}

/// The image as overlay shows it: deletions, replacements and opaque directories applied.
fn check_tree(client: &AgentClient) {
    let root = ok(client, "ls -a / | sort");
    let expected = [
        ".", "..", "bin", "dev", "etc", "keep.txt", "new.txt", "opaque", "proc", "sys", "tmp",
    ];
    assert_eq!(root.lines().collect::<Vec<_>>(), expected, "{root}");
    assert_eq!(ok(client, "cat /keep.txt /new.txt"), "top\nnew\n");
    assert_eq!(ok(client, "ls -a /opaque"), ".\n..\nb.txt\n");
    assert_eq!(ok(client, "stat -c %A /tmp"), "drwxrwxrwt\n");
    let dev = ok(client, "ls -a /dev | sort");
    let expected = [
        ".", "..", "core", "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
        "stderr", "stdin", "stdout", "tty", "urandom", "zero",
    ];
    assert_eq!(dev.lines().collect::<Vec<_>>(), expected, "{dev}");
    assert_eq!(ok(client, "head -c 3 /dev/zero | wc -c"), "3\n");
}

fn check_identity_files(client: &AgentClient) {
    assert_eq!(ok(client, "cat /etc/hostname; hostname"), "c1\nc1\n");
    assert_eq!(
        ok(client, "cat /etc/hosts /etc/resolv.conf"),
        "127.0.0.1\tlocalhost\n::1\tlocalhost\nnameserver 192.0.2.53\n"
    );
}

fn check_users(client: &AgentClient) {
    let id = "id -u; id -g; id -G; echo $HOME";
    let (code, out, _) = run(client, &as_user(id, "nobody"));
    assert_eq!(
        (code, out.as_str()),
        (0, "65534\n65534\n65534 100\n/nonexistent\n")
    );
    let (code, out, _) = run(client, &as_user(id, "1000:1000"));
    assert_eq!((code, out.as_str()), (0, "1000\n1000\n1000\n/\n"));
    let (code, out, _) = run(client, &as_user(id, "root"));
    assert_eq!((code, out.as_str()), (0, "0\n0\n0\n/root\n"));
    let mut keep_home = as_user("echo $HOME", "nobody");
    keep_home.env = vec!["HOME=/mine".into()];
    assert_eq!(run(client, &keep_home).1, "/mine\n");
    let (out, err) = (Capture::default(), Capture::default());
    match client.start(&as_user("true", "nosuch"), out.sink(), err.sink()) {
        Err(ClientError::Agent { kind, message }) => {
            assert_eq!(kind, ErrorKind::BadRequest);
            assert_eq!(
                message,
                "unable to find user nosuch: no matching entries in passwd file"
            );
        }
        other => panic!("{other:?}"),
    }
}

fn check_cwd_exit_codes_and_tty(client: &AgentClient) {
    let mut pwd = sh("pwd");
    pwd.cwd = Some("/newdir/sub".into());
    assert_eq!(
        run(client, &pwd),
        (0, "/newdir/sub\n".into(), String::new())
    );
    let missing = ProcessSpec {
        argv: vec!["no-such-program".into()],
        ..ProcessSpec::default()
    };
    assert_eq!(run(client, &missing).0, 127);
    let not_executable = ProcessSpec {
        argv: vec!["/etc/passwd".into()],
        ..ProcessSpec::default()
    };
    assert_eq!(run(client, &not_executable).0, 126);
    let tty = ProcessSpec {
        tty: true,
        ..sh("tty")
    };
    let (code, out, _) = run(client, &tty);
    assert_eq!((code, out.trim()), (0, "/dev/pts/0"), "{out:?}");
}

/// Only the container's own mounts exist inside, and no host path or device is reachable.
fn check_host_is_invisible(client: &AgentClient, work: &Path, disks: &Disks) {
    let mounts = ok(client, "awk '{print $5}' /proc/1/mountinfo | sort");
    // The device nodes are bind mounts of the agent's own (the rest of the root is nodev).
    let expected = [
        "/",
        "/dev",
        "/dev/full",
        "/dev/mqueue",
        "/dev/null",
        "/dev/pts",
        "/dev/random",
        "/dev/shm",
        "/dev/tty",
        "/dev/urandom",
        "/dev/zero",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/proc",
        "/sys",
    ];
    assert_eq!(mounts.lines().collect::<Vec<_>>(), expected, "{mounts}");
    let root_fs = ok(client, "awk '$5 == \"/\" {print $9}' /proc/1/mountinfo");
    assert_eq!(root_fs, "overlay\n");
    for path in [
        work.display().to_string(),
        disks.scratch.0.clone(),
        "/run/husk".into(),
    ] {
        let (code, _, _) = run(client, &sh(&format!("test -e '{path}'")));
        assert_eq!(code, 1, "{path} is visible inside the container");
    }
    let (code, _, _) = run(client, &sh("echo x > /sys/kernel/husk-test"));
    assert_ne!(code, 0, "/sys is writable");
    // Root in the container is docker's root: its default capabilities only.
    let caps = ok(client, "awk '$1 ~ /^Cap(Bnd|Eff|Inh):/' /proc/self/status");
    assert_eq!(
        caps,
        "CapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n"
    );
    let (code, _, err) = run(client, &sh("mount -t tmpfs none /tmp"));
    assert_ne!(code, 0, "root could mount: {err}");
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

#[test]
fn setup_is_refused_outside_pid1() {
    let agent = support::Agent::start();
    let client = agent.client();
    let spec = SandboxSpec {
        layer_fstype: "erofs".into(),
        scratch: "/dev/null".into(),
        hostname: "x".into(),
        ..SandboxSpec::default()
    };
    match client.setup(&spec) {
        Err(ClientError::Agent { kind, message }) => {
            assert_eq!(kind, ErrorKind::Setup);
            assert!(message.contains("PID 1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
