//! Every clear-error case of `husk vm boot`: one line on stderr, docker's exit code 125,
//! and nothing left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

use husk_e2e::{husk, output, stderr};

fn boot_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let root = tempfile::tempdir().unwrap();
    let mut c = husk(root.path());
    c.args(["vm", "boot"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = output(c);
    assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line, got: {err}");
    assert!(err.starts_with("husk: "), "{err}");
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "state dir untouched"
    );
    err
}

#[test]
fn missing_kvm_device() {
    let e = boot_error(
        &["--kernel", "/etc/hostname", "--no-initrd"],
        &[("HUSK_KVM_DEVICE", "/nonexistent/kvm")],
    );
    assert!(
        e.contains("/nonexistent/kvm does not exist: this host has no KVM"),
        "{e}"
    );
}

#[test]
fn kvm_permission_denied() {
    if !std::path::Path::new("/dev/kvm").exists()
        || !std::path::Path::new("/usr/bin/setpriv").exists()
    {
        husk_e2e::skipped("SKIPPED kvm_permission_denied: needs /dev/kvm and setpriv");
        return;
    }
    // /dev/kvm is root-only here; drop to nobody.
    let root = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(husk_e2e::husk_bin())
        .args(["vm", "boot", "--kernel", "/etc/hostname", "--no-initrd"])
        .env("HUSK_ROOT", root.path());
    let o = output(c);
    let err = stderr(&o);
    let mode = std::fs::metadata("/dev/kvm")
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    if mode & 0o006 != 0 {
        husk_e2e::skipped("SKIPPED kvm_permission_denied: /dev/kvm is world-accessible here");
        return;
    }
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("permission denied opening /dev/kvm"), "{err}");
}

#[test]
fn kernel_missing() {
    let e = boot_error(&["--kernel", "/nonexistent/vmlinux", "--no-initrd"], &[]);
    assert_eq!(e.trim(), "husk: kernel /nonexistent/vmlinux does not exist");
}

#[test]
fn not_a_kernel() {
    if !husk_e2e::kvm_available("not_a_kernel") {
        return;
    }
    let e = boot_error(&["--kernel", "/etc/hostname", "--no-initrd"], &[]);
    assert!(e.contains("/etc/hostname is not a kernel"), "{e}");
}

#[test]
fn memory_too_small_and_too_large() {
    if !husk_e2e::kvm_available("memory_too_small_and_too_large") {
        return;
    }
    let e = boot_error(
        &[
            "--kernel",
            "/etc/hostname",
            "--no-initrd",
            "--memory",
            "16m",
        ],
        &[],
    );
    assert!(e.contains("16 MiB of memory is too small"), "{e}");
    let e = boot_error(
        &[
            "--kernel",
            "/etc/hostname",
            "--no-initrd",
            "--memory",
            "64t",
        ],
        &[],
    );
    assert!(e.contains("of memory is too large: this host has"), "{e}");
    let e = boot_error(
        &[
            "--kernel",
            "/etc/hostname",
            "--no-initrd",
            "--memory",
            "lots",
        ],
        &[],
    );
    assert!(e.contains("invalid size \"lots\""), "{e}");
}

#[test]
fn vcpu_count_out_of_range() {
    if !husk_e2e::kvm_available("vcpu_count_out_of_range") {
        return;
    }
    let e = boot_error(
        &["--kernel", "/etc/hostname", "--no-initrd", "--vcpus", "0"],
        &[],
    );
    assert!(
        e.contains("0 vCPUs requested: a microVM has 1 to 32"),
        "{e}"
    );
}

#[test]
fn initrd_missing() {
    if !husk_e2e::kvm_available("initrd_missing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, vmm::tiny_elf::build(vmm::tiny_elf::RESET_AT_ONCE)).unwrap();
    let e = boot_error(
        &[
            "--kernel",
            kernel.to_str().unwrap(),
            "--initrd",
            "/nonexistent/initrd",
        ],
        &[],
    );
    assert_eq!(
        e.trim(),
        "husk: initramfs /nonexistent/initrd does not exist"
    );
}

#[test]
fn disk_missing_or_not_whole_sectors() {
    if !husk_e2e::kvm_available("disk_missing_or_not_whole_sectors") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, vmm::tiny_elf::build(vmm::tiny_elf::RESET_AT_ONCE)).unwrap();
    let odd = dir.path().join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let k = kernel.to_str().unwrap();
    let e = boot_error(
        &[
            "--no-initrd",
            "--kernel",
            k,
            "--disk",
            odd.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        e.trim(),
        format!(
            "husk: disk image {} is 1000 bytes, not a multiple of 512",
            odd.display()
        )
    );
    let e = boot_error(
        &[
            "--no-initrd",
            "--kernel",
            k,
            "--disk",
            "/nonexistent/disk.img:ro",
        ],
        &[],
    );
    assert!(
        e.starts_with("husk: cannot open disk image /nonexistent/disk.img: "),
        "{e}"
    );
}

#[test]
fn tiny_guest_boots_with_disks_through_the_cli() {
    if !husk_e2e::kvm_available("tiny_guest_boots_with_disks_through_the_cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, vmm::tiny_elf::build(vmm::tiny_elf::RESET_AT_ONCE)).unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let mut c = husk(dir.path());
    c.args(["vm", "boot", "--no-initrd", "--kernel"])
        .arg(&kernel)
        .arg("--disk")
        .arg(&disk)
        .arg("--disk")
        .arg(format!("{}:ro", disk.display()));
    let o = output(c);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("VM ended: reset by the guest"), "{err}");
}

#[test]
fn tiny_guest_boots_through_the_cli() {
    if !husk_e2e::kvm_available("tiny_guest_boots_through_the_cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("tiny.elf");
    std::fs::write(&kernel, vmm::tiny_elf::build(vmm::tiny_elf::RESET_AT_ONCE)).unwrap();
    let mut c = husk(dir.path());
    c.args(["vm", "boot", "--no-initrd", "--vcpus", "2", "--kernel"])
        .arg(&kernel);
    let o = output(c);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("VM ended: reset by the guest"), "{err}");
}

#[test]
fn info_reports_kvm_and_whether_guests_run() {
    let root = tempfile::tempdir().unwrap();
    let mut c = husk(root.path());
    c.args(["info", "--format", "json"]);
    let o = output(c);
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // The three kinds of host: this one's answer must match what vmm's probe says.
    let (usable, guests) = match vmm::host::probe(std::path::Path::new("/dev/kvm")) {
        Ok(h) if h.guests_emulated() => (true, "emulated"),
        Ok(_) => (true, "hardware"),
        Err(_) => (false, "none"),
    };
    assert_eq!(json["kvm"]["usable"], usable, "{json}");
    assert_eq!(json["kvm"]["can_run_linux_guests"], usable, "{json}");
    assert_eq!(json["kvm"]["guests"], guests, "{json}");
    let mut c = husk(root.path());
    c.args(["info", "--format", "{{.kvm.guests}}"]);
    let o = output(c);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        guests,
        "{}",
        stderr(&o)
    );
    let mut c = husk(root.path());
    c.args(["info"]);
    let text = String::from_utf8(output(c).stdout).unwrap();
    let want = match guests {
        "emulated" => "Can Run Linux Guests: yes, slowly (this KVM emulates guest kernel code",
        "hardware" => "Can Run Linux Guests: yes (hardware virtualization)",
        _ => "Can Run Linux Guests: no (KVM is unusable)",
    };
    assert!(text.contains(want), "{text}");
    let mut c = husk(root.path());
    c.args(["info"]).env("HUSK_KVM_DEVICE", "/nonexistent/kvm");
    let o = output(c);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("Usable: no (/nonexistent/kvm does not exist"),
        "{text}"
    );
    assert!(
        text.contains("Can Run Linux Guests: no (KVM is unusable)"),
        "{text}"
    );
}
