//! What this host's KVM is: can husk open it, which backend implements it, and how Linux
//! guests run on it: natively (hardware virtualization) or with their kernel code emulated
//! instruction by instruction (PVM and similar backends; husk's guest kernel carries the
//! patches that make its user space run there, see docs/guest-kernel.md).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kvm_ioctls::{Cap, Kvm};

/// Which implementation is behind `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Intel VT-x or AMD-V: guests run natively.
    Hardware {
        /// `kvm_intel` or `kvm_amd`.
        module: String,
    },
    /// A software backend that emulates guest kernel code instruction by instruction
    /// (such as PVM): VMs work and husk's guest kernel runs there, slowly (its kernel code
    /// is emulated; guest user space runs natively).
    Emulated {
        /// The kernel module, e.g. `kvm_pvm`.
        module: String,
    },
}

/// The facts `husk info` prints and the VMM relies on.
#[derive(Debug, Clone)]
pub struct HostKvm {
    /// The device that was opened.
    pub device: PathBuf,
    /// `KVM_GET_API_VERSION` (always 12 on Linux).
    pub api_version: i32,
    /// The backend.
    pub backend: Backend,
    /// `KVM_CAP_MAX_VCPUS`.
    pub max_vcpus: usize,
    /// Whether interrupts can be injected through eventfds.
    pub irqfd: bool,
    /// Whether MMIO/PIO notifications can be delivered through eventfds.
    pub ioeventfd: bool,
    /// Whether `KVM_RUN` can be told to return immediately (clean vCPU kicks).
    pub immediate_exit: bool,
    /// Host RAM in MiB.
    pub host_mem_mib: u64,
}

impl HostKvm {
    /// Whether guest kernel code is emulated here (guests run, but every guest kernel
    /// entry costs emulation: seconds to boot instead of milliseconds).
    pub fn guests_emulated(&self) -> bool {
        matches!(self.backend, Backend::Emulated { .. })
    }

    /// Whether CPUID must hide the instructions an emulating backend rejects.
    pub fn needs_emulation_workarounds(&self) -> bool {
        matches!(self.backend, Backend::Emulated { .. })
    }
}

/// Why KVM is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device does not exist.
    #[error(
        "{0} does not exist: this host has no KVM (load kvm_intel/kvm_amd or run on a host with virtualization)"
    )]
    NoKvm(PathBuf),
    /// The device exists but this user may not open it.
    #[error("permission denied opening {0}: run as root or add this user to the kvm group")]
    PermissionDenied(PathBuf),
    /// Any other failure opening it.
    #[error("cannot open {0}")]
    Open(PathBuf, #[source] io::Error),
    /// The API version is not the one every Linux since 2.6.22 reports.
    #[error("{0} reports KVM API version {1}, husk needs 12")]
    ApiVersion(PathBuf, i32),
    /// A capability husk cannot work without.
    #[error("{0} lacks the KVM capability {1}")]
    MissingCapability(PathBuf, &'static str),
}

/// Opens the KVM device at `device`, mapping the common failures to clear errors.
pub fn open(device: &Path) -> Result<Kvm, Error> {
    let c_path = std::ffi::CString::new(device.as_os_str().as_encoded_bytes())
        .map_err(|e| Error::Open(device.to_path_buf(), io::Error::other(e)))?;
    Kvm::new_with_path(c_path).map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::NoKvm(device.to_path_buf()),
        libc::EACCES | libc::EPERM => Error::PermissionDenied(device.to_path_buf()),
        _ => Error::Open(
            device.to_path_buf(),
            io::Error::from_raw_os_error(e.errno()),
        ),
    })
}

/// Probes `device` and the host.
pub fn probe(device: &Path) -> Result<HostKvm, Error> {
    describe(&open(device)?, device)
}

/// The facts about an already opened KVM `device`.
pub fn describe(kvm: &Kvm, device: &Path) -> Result<HostKvm, Error> {
    let api_version = kvm.get_api_version();
    if api_version != 12 {
        return Err(Error::ApiVersion(device.to_path_buf(), api_version));
    }
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        // Every interrupt (serial, virtio) is an irqfd: KVM has offered it with the
        // in-kernel irqchip since Linux 2.6.32, so there is no slower path to keep.
        // Queue notifications do fall back when ioeventfd is missing (docs/virtio.md).
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::MissingCapability(device.to_path_buf(), name));
        }
    }
    Ok(HostKvm {
        device: device.to_path_buf(),
        api_version,
        backend: detect_backend(Path::new("/sys/module"), &read_cpu_flags()),
        max_vcpus: kvm.get_max_vcpus(),
        irqfd: kvm.check_extension(Cap::Irqfd),
        ioeventfd: kvm.check_extension(Cap::Ioeventfd),
        immediate_exit: kvm.check_extension(Cap::ImmediateExit),
        host_mem_mib: host_mem_mib(),
    })
}

fn read_cpu_flags() -> Vec<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Decides the backend from the loaded KVM modules under `sys_module` and the CPU flags.
/// A hardware module only counts when the CPU really shows vmx/svm.
pub fn detect_backend(sys_module: &Path, cpu_flags: &[String]) -> Backend {
    let has = |m: &str| sys_module.join(m).exists();
    let flag = |f: &str| cpu_flags.iter().any(|x| x == f);
    if has("kvm_pvm") {
        return Backend::Emulated {
            module: "kvm_pvm".into(),
        };
    }
    if flag("vmx") && has("kvm_intel") {
        return Backend::Hardware {
            module: "kvm_intel".into(),
        };
    }
    if flag("svm") && has("kvm_amd") {
        return Backend::Hardware {
            module: "kvm_amd".into(),
        };
    }
    if flag("vmx") || flag("svm") {
        // KVM built into the kernel rather than a module.
        return Backend::Hardware {
            module: "kvm (built in)".into(),
        };
    }
    Backend::Emulated {
        module: "unknown (no vmx/svm CPU flag)".into(),
    }
}

/// Host RAM in MiB (`MemTotal`), `u64::MAX` if /proc/meminfo cannot be read.
pub fn host_mem_mib() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    parse_mem_total_mib(&meminfo).unwrap_or(u64::MAX)
}

fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for n in names {
            fs::create_dir(dir.path().join(n)).unwrap();
        }
        dir
    }

    fn flags(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pvm_is_emulated_even_beside_other_modules() {
        let d = modules(&["kvm", "kvm_pvm"]);
        assert!(matches!(
            detect_backend(d.path(), &flags(&["fpu"])),
            Backend::Emulated { .. }
        ));
    }

    #[test]
    fn vmx_with_kvm_intel_is_hardware() {
        let d = modules(&["kvm", "kvm_intel"]);
        assert_eq!(
            detect_backend(d.path(), &flags(&["fpu", "vmx"])),
            Backend::Hardware {
                module: "kvm_intel".into()
            }
        );
    }

    #[test]
    fn no_virtualization_flag_is_emulated() {
        let d = modules(&["kvm"]);
        assert!(matches!(
            detect_backend(d.path(), &flags(&["fpu"])),
            Backend::Emulated { .. }
        ));
    }

    #[test]
    fn mem_total_parses() {
        assert_eq!(
            parse_mem_total_mib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24000)
        );
        assert_eq!(parse_mem_total_mib("garbage"), None);
    }

    #[test]
    fn missing_device_is_a_clear_error() {
        let e = open(Path::new("/nonexistent/kvm")).unwrap_err();
        assert!(matches!(e, Error::NoKvm(_)));
        assert!(e.to_string().starts_with("/nonexistent/kvm does not exist"));
    }
}
