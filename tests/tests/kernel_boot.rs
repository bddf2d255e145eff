//! The proof that husk's boot protocol is right: the real guest kernel, booted by husk's
//! VMM through `husk vm boot` with the agent's initramfs, prints our exact command line
//! and e820 map and reaches `Run /init as init process`; then the VM ends through the
//! guest's reset and husk exits cleanly.
//!
//! On this project's machines (an instruction-emulating KVM) that takes seconds, not
//! milliseconds. The agent (PID 1) then reports ready before resetting: on an emulating KVM too, thanks to
//! the guest kernel patch that turns a user-space SYSCALL delivered as a page fault back into
//! a system call (guest-kernel/patches/0003).
//!
//! A second boot has no initramfs and `root=/dev/vda` on an ext4 image served by husk's
//! virtio-blk: the kernel's own virtio_blk driver probes the disk and ext4 mounts it as
//! the root filesystem before the kernel looks for init. The same VM has a virtio-vsock
//! device (`--vsock`), and husk's log shows that the guest's drivers activated both
//! devices (DRIVER_OK through our virtio-mmio transport).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use husk_e2e::{guest_kernel, husk, kvm_available};
use vmm::arch::x86_64::bootparams::{E820_RAM, e820_map};
use vmm::cmdline::{CmdlineSpec, build};

/// A hang guard, not a timing assertion: a boot that never ends fails instead of blocking CI.
const HANG_GUARD: Duration = Duration::from_secs(20 * 60);
const MEM_MIB: u64 = 128;

#[test]
fn real_kernel_boots_to_init_and_resets_cleanly() {
    if !kvm_available("real_kernel_boots_to_init_and_resets_cleanly") {
        return;
    }
    let Some(kernel) = guest_kernel("real_kernel_boots_to_init_and_resets_cleanly") else {
        return;
    };
    let host = vmm::host::probe(std::path::Path::new("/dev/kvm")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let mut cmd = husk(dir.path());
    cmd.args(["vm", "boot", "--memory", &format!("{MEM_MIB}m"), "--kernel"])
        .arg(&kernel)
        .arg("--console-file")
        .arg(&console);
    let (status, summary, log) = run_with_guard(cmd, &console);

    assert!(log.contains("Linux version 6.12"), "no banner:\n{log}");
    let cmdline = build(&CmdlineSpec {
        console: true,
        emulated_host: host.needs_emulation_workarounds(),
        devices: &[],
        extra: "",
    })
    .unwrap();
    assert!(
        log.contains(&format!("Command line: {cmdline}\n"))
            || log.contains(&format!("Command line: {cmdline}\r\n")),
        "command line differs:\n{log}"
    );
    for e in e820_map(MEM_MIB << 20).unwrap() {
        let kind = if e.kind == E820_RAM {
            "usable"
        } else {
            "reserved"
        };
        let line = format!(
            "BIOS-e820: [mem {:#018x}-{:#018x}] {kind}",
            e.addr,
            e.addr + e.size - 1
        );
        assert!(log.contains(&line), "missing e820 line {line:?}:\n{log}");
    }
    assert!(
        log.contains("Run /init as init process"),
        "init never ran:\n{log}"
    );
    assert!(log.contains("husk-agent: ready"), "agent not ready:\n{log}");
    assert!(
        status.success(),
        "husk vm boot failed ({status}):\n{summary}"
    );
    assert!(
        summary.contains("VM ended: reset by the guest"),
        "{summary}"
    );
    assert!(
        summary.contains("furthest milestone: agent ready"),
        "{summary}"
    );
}

/// Runs `husk vm boot` to its end (or the hang guard); returns its status, its stderr
/// (logs and summary; kept in a file next to the console, so no pipe can fill up) and the
/// guest console.
fn run_with_guard(mut cmd: Command, console: &Path) -> (ExitStatus, String, String) {
    let stderr_path = console.with_file_name("husk-stderr.log");
    cmd.stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let log = std::fs::read_to_string(console).unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("the guest did not end within {HANG_GUARD:?}; console tail:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let summary = std::fs::read_to_string(&stderr_path).unwrap();
    let log = String::from_utf8_lossy(&std::fs::read(console).unwrap()).into_owned();
    eprintln!("husk vm boot said:\n{summary}");
    (status, summary, log)
}

/// A static x86_64 Linux program of 144 bytes whose only act is
/// `reboot(LINUX_REBOOT_CMD_RESTART)`: the root image's `/sbin/init`. Where guests run, it
/// resets the VM at once; under an emulating KVM its first syscall kills it and the kernel
/// panics. Either way the kernel has said `Run /sbin/init as init process` first.
fn reboot_init() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const CODE: &[u8] = &[
        0xb8, 0xa9, 0x00, 0x00, 0x00, // mov eax, 169 (reboot)
        0xbf, 0xad, 0xde, 0xe1, 0xfe, // mov edi, LINUX_REBOOT_MAGIC1
        0xbe, 0x69, 0x19, 0x12, 0x28, // mov esi, LINUX_REBOOT_MAGIC2
        0xba, 0x67, 0x45, 0x23, 0x01, // mov edx, LINUX_REBOOT_CMD_RESTART
        0x0f, 0x05, // syscall
        0xeb, 0xfe, // jmp .
    ];
    let len = (64 + 56 + CODE.len()) as u64;
    let mut v = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
    v.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    v.extend_from_slice(&0x3eu16.to_le_bytes()); // x86_64
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&(BASE + 64 + 56).to_le_bytes()); // entry: the code
    v.extend_from_slice(&64u64.to_le_bytes()); // program headers
    v.extend_from_slice(&0u64.to_le_bytes()); // no sections
    v.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        v.extend_from_slice(&half.to_le_bytes());
    }
    v.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD of the whole file
    v.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, BASE, BASE, len, len, 0x1000] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v.extend_from_slice(CODE);
    v
}

/// An ext4 image of a few MiB made by `mkfs.ext4 -d`: one file and `/sbin/init`.
fn ext4_image(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tree = dir.join("rootfs");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::fs::write(tree.join("etc/hello"), "served by husk virtio-blk\n").unwrap();
    let init = tree.join("sbin/init");
    std::fs::write(&init, reboot_init()).unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = dir.join("root.ext4");
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "huskroot", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("8M")
        .output()
        .expect("mkfs.ext4 (e2fsprogs, installed by scripts/prepare.sh)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    image
}

#[test]
fn real_kernel_mounts_its_root_from_virtio_blk() {
    let test = "real_kernel_mounts_its_root_from_virtio_blk";
    if !kvm_available(test) {
        return;
    }
    let Some(kernel) = guest_kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = ext4_image(dir.path());
    let before = std::fs::read(&image).unwrap();
    let console = dir.path().join("console.log");
    let vsock = dir.path().join("vsock.sock");
    let mut cmd = husk(dir.path());
    // Info level: husk logs each virtio device its guest driver activates.
    cmd.env("HUSK_LOG", "info")
        .args([
            "vm",
            "boot",
            "--memory",
            &format!("{MEM_MIB}m"),
            "--no-initrd",
        ])
        .arg("--kernel")
        .arg(&kernel)
        .arg("--disk")
        .arg(format!("{}:ro", image.display()))
        .arg("--vsock")
        .arg(&vsock)
        .args(["--cmdline", "root=/dev/vda rootfstype=ext4 ro"])
        .arg("--console-file")
        .arg(&console);
    let (status, summary, log) = run_with_guard(cmd, &console);

    let line = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} on the console:\n{log}"))
    };
    assert!(log.contains("virtio_mmio.device=4K@0xc0000000:5"), "{log}");
    assert!(log.contains("virtio_mmio.device=4K@0xc0001000:6"), "{log}");
    // 8 MiB = 16384 sectors of 512 bytes; read-only as asked.
    let probe = line("virtio_blk virtio0: [vda] 16384 512-byte logical blocks");
    let mounted = line("EXT4-fs (vda): mounted filesystem");
    let vfs = line("VFS: Mounted root (ext4 filesystem) readonly");
    // Only then does the kernel run the image's /sbin/init from our disk.
    let init = line("Run /sbin/init as init process");
    assert!(probe < mounted && mounted < vfs && vfs < init, "{log}");
    // Both drivers completed the virtio handshake with our transport (DRIVER_OK), the
    // block device first (disks are placed first), and the kernel has AF_VSOCK.
    for device in ["virtio-block at 0xc0000000", "virtio-vsock at 0xc0001000"] {
        assert!(
            summary.contains(&format!("{device}: driver activated (features 0x")),
            "the guest driver never activated {device}:\n{summary}"
        );
    }
    line("NET: Registered PF_VSOCK protocol family");
    assert!(
        status.success(),
        "husk vm boot failed ({status}):\n{summary}"
    );
    assert!(
        summary.contains("VM ended: reset by the guest"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "a read-only disk changed"
    );
}

/// The real kernel and agent through a snapshot (docs/snapshots.md): booted with a disk
/// (activated by its driver), saved when the kernel starts init, and restored into two
/// new VMM processes, each of which goes on from there: the agent starts, reports ready
/// and (with no vsock device to serve) resets the VM. A snapshot for another guest shape
/// is refused with a one-line error. (tests/vm_agent.rs restores a guest whose agent
/// then serves the host over vsock.)
#[test]
fn real_kernel_snapshot_restores_into_new_vms() {
    let test = "real_kernel_snapshot_restores_into_new_vms";
    if !kvm_available(test) {
        return;
    }
    let Some(kernel) = guest_kernel(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let snap = dir.path().join("snap");
    let boot = |extra: &[&str], name: &str| {
        let console = dir.path().join(format!("{name}.log"));
        let mut cmd = husk(dir.path());
        cmd.env("HUSK_LOG", "info")
            .args(["vm", "boot", "--memory", "128m", "--kernel"])
            .arg(&kernel)
            .arg("--disk")
            .arg(&image)
            .arg("--console-file")
            .arg(&console)
            .args(extra);
        run_with_guard(cmd, &console)
    };
    let snap_arg = snap.to_str().unwrap();
    let (status, summary, log) = boot(
        &["--snapshot", snap_arg, "--snapshot-on", "Run /init as init"],
        "boot",
    );
    assert!(status.success(), "{summary}");
    assert!(
        summary.contains("VM ended: stopped after a snapshot"),
        "{summary}"
    );
    assert!(log.contains("Run /init as init process"), "{log}");
    assert!(summary.contains("virtio-block at"), "{summary}");
    assert!(snap.join("state").is_file(), "{summary}");
    for run in ["restore-1", "restore-2"] {
        let (status, summary, log) = boot(&["--restore", snap_arg], run);
        assert!(status.success(), "[{run}] {summary}\n{log}");
        assert!(
            summary.contains("furthest milestone: agent ready"),
            "[{run}] {summary}"
        );
        assert!(
            !log.contains("Linux version"),
            "[{run}] booted instead:\n{log}"
        );
        assert!(
            summary.contains("VM ended: reset by the guest"),
            "[{run}] {summary}"
        );
    }
    let mut cmd = husk(dir.path());
    let o = cmd
        .args(["vm", "boot", "--memory", "256m", "--kernel"])
        .arg(&kernel)
        .args(["--restore", snap_arg])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("does not match this VM"), "{err}");
}
