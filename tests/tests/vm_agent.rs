//! The agent inside a real microVM: `husk vm boot` boots the guest kernel with the agent's
//! initramfs, a busybox EROFS layer disk (`/dev/vda`), an ext4 scratch disk (`/dev/vdb`)
//! and `--vsock`, and saves a snapshot of it the moment the agent says it is ready
//! (docs/snapshots.md); a second `husk vm boot --restore` resumes that guest in a new VMM
//! process. There the host's `AgentClient` connects through the VMM's vsock socket to
//! guest port `CONTROL_PORT` (the agent's listening socket survived the restore and the
//! vsock transport reset), has the agent assemble the root filesystem from the disks
//! (`setup`), runs the same checks as runtime's `agent_over_vsock` (echo, exit codes, a
//! 16 MiB stdout stream sha256-exact, stdin through `cat`, signals killing `sleep`), then
//! shuts the sandbox down, which resets the VM and ends husk cleanly.
//!
//! Runs wherever /dev/kvm is usable, this project's emulating KVM (PVM) included; a host
//! without KVM skips it loudly (a failure under `HUSK_REQUIRE_KVM`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../runtime/tests/support/agent_checks.rs"]
mod agent_checks;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use agent_proto::CONTROL_PORT;
use husk_e2e::{guest_kernel, husk, husk_bin, linux_guests_available};
use runtime::agent_client::{AgentClient, Endpoint, SandboxSpec};

/// A hang guard, not a timing assertion (under an emulating KVM a boot takes seconds).
const HANG_GUARD: Duration = Duration::from_secs(20 * 60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &["sh", "echo", "cat", "sleep", "true"];
const BIG_SEED: u64 = 0x5eed;

/// `husk vm boot`, killed on drop if it is still running.
struct Vm {
    child: Child,
    dir: PathBuf,
}

impl Vm {
    fn console(&self) -> String {
        let log = std::fs::read(self.dir.join("console.log")).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(0);
        log[start..].to_owned()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("husk-stderr.log")).unwrap_or_default()
    }

    fn explain(&self) -> String {
        format!(
            "husk said:\n{}\nconsole tail:\n{}",
            self.stderr(),
            self.console()
        )
    }

    /// Waits for husk to end (bounded by the hang guard).
    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "the VM did not end:\n{}",
                self.explain()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The static agent husk will put in the initramfs (its own lookup: `HUSK_AGENT`, else
/// `husk-agent` above or beside the `husk` binary).
fn static_agent_present() -> bool {
    if std::env::var_os("HUSK_AGENT").is_some() {
        return true;
    }
    let bin = husk_bin();
    let dir = bin.parent().unwrap();
    [dir.join("../husk-agent"), dir.join("husk-agent")]
        .iter()
        .any(|p| p.is_file())
}

/// Whether everything this test needs is here; loud about what is not.
fn prerequisites(test: &str) -> Option<PathBuf> {
    if !linux_guests_available(test) {
        return None;
    }
    let kernel = guest_kernel(test)?;
    for (ok, what) in [
        (
            static_agent_present(),
            "the static agent (scripts/build-agent.sh)",
        ),
        (
            Path::new(BUSYBOX).is_file(),
            "/bin/busybox (busybox-static)",
        ),
    ] {
        if !ok {
            assert!(
                std::env::var_os("HUSK_REQUIRE_KVM").is_none(),
                "HUSK_REQUIRE_KVM is set but {what} is missing"
            );
            husk_e2e::skipped(&format!(
                "SKIPPED {test}: {what} is missing (scripts/prepare.sh installs it)"
            ));
            return None;
        }
    }
    Some(kernel)
}

/// A layer tar: busybox with a few applets, users, and the 16 MiB file at `/big`.
fn layer_tar(path: &Path) {
    let mut tar = tar::Builder::new(File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8], mode: u32, kind: tar::EntryType| {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(kind);
        header.set_mode(mode);
        if kind == tar::EntryType::Symlink {
            header.set_size(0);
            let target = std::str::from_utf8(data).unwrap();
            tar.append_link(&mut header, name, target).unwrap();
        } else {
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, name, data).unwrap();
        }
    };
    let (dir, file, link) = (
        tar::EntryType::Directory,
        tar::EntryType::Regular,
        tar::EntryType::Symlink,
    );
    add("bin/", b"", 0o755, dir);
    add("etc/", b"", 0o755, dir);
    add("bin/busybox", &std::fs::read(BUSYBOX).unwrap(), 0o755, file);
    for applet in APPLETS {
        add(&format!("bin/{applet}"), b"busybox", 0o777, link);
    }
    add(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
        file,
    );
    add("etc/group", b"root:x:0:\n", 0o644, file);
    let big = agent_checks::big_pattern(agent_checks::BIG_LEN, BIG_SEED);
    add("big", &big, 0o644, file);
    tar.finish().unwrap();
}

/// Boots the VM with the layer and scratch disks and the vsock socket, plus `extra`
/// arguments.
fn boot(
    kernel: &Path,
    dir: &Path,
    (layer, scratch): (&Path, &Path),
    vsock: &Path,
    extra: &[&str],
) -> Vm {
    let mut cmd: Command = husk(dir);
    cmd.env("HUSK_LOG", "info")
        .args(["vm", "boot", "--memory", "512m", "--kernel"])
        .arg(kernel)
        .arg("--disk")
        .arg(format!("{}:ro", layer.display()))
        .arg("--disk")
        .arg(scratch)
        .arg("--vsock")
        .arg(vsock)
        .arg("--console-file")
        .arg(dir.join("console.log"))
        .args(extra)
        .stderr(File::create(dir.join("husk-stderr.log")).unwrap());
    Vm {
        child: cmd.spawn().unwrap(),
        dir: dir.to_owned(),
    }
}

/// Connects once the agent listens on its vsock port (until then the VMM refuses).
fn connect(vm: &mut Vm, vsock: &Path) -> AgentClient {
    let endpoint = Endpoint::Vsock {
        uds: vsock.to_owned(),
        port: CONTROL_PORT,
    };
    let start = Instant::now();
    loop {
        match AgentClient::connect(&endpoint, REQUEST_TIMEOUT) {
            Ok(client) => return client,
            Err(e) => {
                if let Some(status) = vm.child.try_wait().unwrap() {
                    panic!(
                        "husk vm boot ended ({status}) before the agent answered ({e:?}):\n{}",
                        vm.explain()
                    );
                }
                assert!(
                    start.elapsed() < HANG_GUARD,
                    "the agent never answered on vsock port {CONTROL_PORT} ({e:?}):\n{}",
                    vm.explain()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn agent_runs_commands_in_a_real_microvm_over_vsock() {
    let test = "vm_agent";
    let Some(kernel) = prerequisites(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("layer.tar");
    layer_tar(&tar);
    let layer = rootfs::layer::build_layer_disk(&dir.path().join("store"), &tar, None, &[])
        .unwrap()
        .path;
    let scratch = dir.path().join("scratch.img");
    rootfs::layer::create_scratch_disk(&scratch, 64 << 20).unwrap();
    let disks = (layer.as_path(), scratch.as_path());
    let snapshot = dir.path().join("ready");
    let snapshot = snapshot.to_str().unwrap();

    let booted = dir.path().join("boot.sock");
    let mut vm = boot(
        &kernel,
        dir.path(),
        disks,
        &booted,
        &["--snapshot", snapshot, "--snapshot-on", "husk-agent: ready"],
    );
    let status = vm.wait();
    let said = vm.stderr();
    assert!(
        status.success(),
        "the snapshot boot failed:\n{}",
        vm.explain()
    );
    assert!(
        said.contains("VM ended: stopped after a snapshot"),
        "{said}"
    );
    drop(vm);

    let vsock = dir.path().join("vsock.sock");
    let mut vm = boot(&kernel, dir.path(), disks, &vsock, &["--restore", snapshot]);
    let client = connect(&mut vm, &vsock);
    client
        .setup(&SandboxSpec {
            layers: vec!["/dev/vda".into()],
            layer_fstype: "erofs".into(),
            scratch: "/dev/vdb".into(),
            hostname: "vm-agent".into(),
            hosts: "127.0.0.1\tlocalhost\n".into(),
            resolv_conf: String::new(),
            hostname_file: true,
            ..SandboxSpec::default()
        })
        .unwrap_or_else(|e| panic!("setup failed: {e:?}\n{}", vm.explain()));
    agent_checks::all(&client, "/big", BIG_SEED);
    let raw = Endpoint::Vsock {
        uds: vsock.clone(),
        port: CONTROL_PORT,
    };
    agent_checks::malformed_frames(raw.connect(REQUEST_TIMEOUT).unwrap());
    agent_checks::refusals(raw.connect(REQUEST_TIMEOUT).unwrap());
    client.shutdown().unwrap();

    let status = vm.wait();
    let said = vm.stderr();
    assert!(
        status.success(),
        "husk vm boot failed ({status}):\n{}",
        vm.explain()
    );
    assert!(said.contains("VM ended: reset by the guest"), "{said}");
    // Resumed, not booted: the kernel never started again.
    assert!(said.contains("vmm::vm::snapshot: restored "), "{said}");
    assert!(!vm.console().contains("Linux version"), "{}", vm.explain());
    for device in ["virtio-block at 0xc0000000", "virtio-vsock at 0xc0002000"] {
        assert!(
            said.contains(&format!("{device}: driver activated")),
            "{device} was not activated:\n{said}"
        );
    }
}
