//! `husk info`: what this host is and what husk can do on it, above all which of three kinds
//! of host it is for vm isolation: hardware virtualization (guests run natively), an
//! emulating KVM (guests run, slowly: their kernel code is emulated), or no usable KVM.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vmm::{Backend, HostKvm};

use crate::paths;

/// Everything `husk info` reports.
#[derive(Debug, Serialize)]
pub struct SystemInfo {
    /// husk's version.
    pub version: String,
    /// State directory.
    pub root: PathBuf,
    /// Cache directory, if one can be determined.
    pub cache_dir: Option<PathBuf>,
    /// KVM facts, or why KVM is unusable.
    pub kvm: KvmInfo,
    /// Default guest kernel and whether it exists.
    pub kernel: ArtifactInfo,
    /// The static agent and whether it exists.
    pub agent: ArtifactInfo,
    /// Host kernel release.
    pub host_kernel: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Host memory in MiB.
    pub memory_mib: u64,
    /// `v1`, `v2` or `hybrid`.
    pub cgroups: String,
}

/// How Linux guests run on this host: the three kinds of host husk tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Guests {
    /// Hardware virtualization: guests run natively.
    Hardware,
    /// An emulating KVM (such as PVM): guests run, with their kernel code emulated.
    Emulated,
    /// No usable KVM: vm isolation cannot run here.
    None,
}

impl Guests {
    /// One line for `husk info` and messages.
    pub fn describe(self) -> &'static str {
        match self {
            Guests::Hardware => "yes (hardware virtualization)",
            Guests::Emulated => {
                "yes, slowly (this KVM emulates guest kernel code instruction by instruction: \
                 a microVM boots in seconds instead of milliseconds)"
            }
            Guests::None => "no (KVM is unusable)",
        }
    }
}

/// KVM as husk sees it.
#[derive(Debug, Serialize)]
pub struct KvmInfo {
    /// The device probed.
    pub device: PathBuf,
    /// Whether husk can create VMs at all.
    pub usable: bool,
    /// Why not, when it cannot.
    pub error: Option<String>,
    /// `hardware` or `emulated`.
    pub backend: Option<String>,
    /// The KVM module behind the device.
    pub module: Option<String>,
    /// Whether husk's guests (kernel and user space) run here.
    pub can_run_linux_guests: bool,
    /// How they run: `hardware`, `emulated` or `none`.
    pub guests: Guests,
    /// `KVM_GET_API_VERSION`.
    pub api_version: Option<i32>,
    /// `KVM_CAP_MAX_VCPUS`.
    pub max_vcpus: Option<usize>,
    /// irqfd support.
    pub irqfd: bool,
    /// ioeventfd support.
    pub ioeventfd: bool,
}

/// A file husk needs.
#[derive(Debug, Serialize)]
pub struct ArtifactInfo {
    /// Where husk looks.
    pub path: Option<PathBuf>,
    /// Whether it is there.
    pub present: bool,
}

fn artifact(path: Option<PathBuf>) -> ArtifactInfo {
    let present = path.as_deref().is_some_and(Path::is_file);
    ArtifactInfo { path, present }
}

/// The KVM part of the report.
pub fn kvm_info(device: &Path) -> KvmInfo {
    match vmm::host::probe(device) {
        Ok(host) => kvm_info_from(&host),
        Err(e) => KvmInfo {
            device: device.to_path_buf(),
            usable: false,
            error: Some(e.to_string()),
            backend: None,
            module: None,
            can_run_linux_guests: false,
            guests: Guests::None,
            api_version: None,
            max_vcpus: None,
            irqfd: false,
            ioeventfd: false,
        },
    }
}

fn kvm_info_from(host: &HostKvm) -> KvmInfo {
    let (backend, module) = match &host.backend {
        Backend::Hardware { module } => ("hardware", module.clone()),
        Backend::Emulated { module } => ("emulated", module.clone()),
    };
    KvmInfo {
        device: host.device.clone(),
        usable: true,
        error: None,
        backend: Some(backend.into()),
        module: Some(module),
        can_run_linux_guests: true,
        guests: if host.guests_emulated() {
            Guests::Emulated
        } else {
            Guests::Hardware
        },
        api_version: Some(host.api_version),
        max_vcpus: Some(host.max_vcpus),
        irqfd: host.irqfd,
        ioeventfd: host.ioeventfd,
    }
}

/// The cgroup layout from the mounts under /sys/fs/cgroup.
pub fn cgroup_mode(mounts: &str) -> &'static str {
    let mut v1 = false;
    let mut v2_root = false;
    let mut v2_nested = false;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(_), Some(target), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        match fstype {
            "cgroup2" if target == "/sys/fs/cgroup" => v2_root = true,
            "cgroup2" => v2_nested = true,
            "cgroup" => v1 = true,
            _ => {}
        }
    }
    match (v1, v2_root || v2_nested) {
        (true, true) => "hybrid",
        (true, false) => "v1",
        (false, true) => "v2",
        (false, false) => "none",
    }
}

/// Gathers the whole report.
pub fn gather(root: &Path, kvm_device: &Path) -> SystemInfo {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let memory_mib = match vmm::host::host_mem_mib() {
        u64::MAX => 0,
        mib => mib,
    };
    SystemInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        root: root.to_path_buf(),
        cache_dir: paths::cache_dir(),
        kvm: kvm_info(kvm_device),
        kernel: artifact(paths::default_kernel()),
        agent: artifact(paths::agent_binary()),
        host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_mib,
        cgroups: cgroup_mode(&mounts).to_string(),
    }
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map_or_else(|| "(unknown)".into(), |p| p.display().to_string())
}

/// `husk version`, in `docker version`'s shape: husk is client and engine in one binary (no
/// daemon), so one block names it, the other what runs containers here.
pub fn version(root: &Path, kvm_device: &Path) -> String {
    let info = gather(root, kvm_device);
    let isolation = match info.kvm.guests {
        Guests::Hardware => "vm (default), process",
        Guests::Emulated => "vm (default; guest kernel code emulated by this host's KVM), process",
        Guests::None => "process (no usable KVM here)",
    };
    let kernel = match (&info.kernel.path, info.kernel.present) {
        (Some(p), true) => p.display().to_string(),
        (Some(p), false) => format!("{} (missing)", p.display()),
        (None, _) => "none (no cache directory)".to_owned(),
    };
    format!(
        "Client: husk\n Version:           {v}\n OS/Arch:           linux/{arch}\n\n\
         Engine: husk (daemonless: one shim per container)\n Version:           {v}\n \
         Isolation:         {isolation}\n Guest kernel:      {kernel}\n \
         Host kernel:       {host}\n",
        v = info.version,
        arch = std::env::consts::ARCH.replace("x86_64", "amd64"),
        host = info.host_kernel,
    )
}

/// The report as `docker info`-style text.
pub fn render(info: &SystemInfo) -> String {
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!("husk version {}", info.version));
    line(format!(" Root Dir: {}", info.root.display()));
    line(format!(" Cache Dir: {}", show(&info.cache_dir)));
    line(" KVM:".into());
    line(format!("  Device: {}", info.kvm.device.display()));
    match &info.kvm.error {
        Some(e) => line(format!("  Usable: no ({e})")),
        None => {
            line("  Usable: yes".into());
            line(format!(
                "  Backend: {} ({})",
                info.kvm.backend.as_deref().unwrap_or("?"),
                info.kvm.module.as_deref().unwrap_or("?")
            ));
            line(format!(
                "  API Version: {}",
                info.kvm.api_version.unwrap_or(0)
            ));
            line(format!("  Max vCPUs: {}", info.kvm.max_vcpus.unwrap_or(0)));
            line(format!(
                "  irqfd: {}, ioeventfd: {}",
                info.kvm.irqfd, info.kvm.ioeventfd
            ));
        }
    }
    line(format!(
        "  Can Run Linux Guests: {}",
        info.kvm.guests.describe()
    ));
    let present = |a: &ArtifactInfo| if a.present { "" } else { " (missing)" };
    line(format!(
        " Guest Kernel: {}{}",
        show(&info.kernel.path),
        present(&info.kernel)
    ));
    line(format!(
        " Agent: {}{}",
        show(&info.agent.path),
        present(&info.agent)
    ));
    line(format!(" Host Kernel: {}", info.host_kernel));
    line(format!(" CPUs: {}", info.cpus));
    line(format!(
        " Total Memory: {}",
        crate::units::human(info.memory_mib << 20)
    ));
    line(format!(" Cgroups: {}", info.cgroups));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_modes() {
        let hybrid = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(cgroup_mode(hybrid), "hybrid");
        assert_eq!(cgroup_mode("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"), "v2");
        assert_eq!(
            cgroup_mode("cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n"),
            "v1"
        );
        assert_eq!(cgroup_mode("proc /proc proc rw 0 0\n"), "none");
    }

    #[test]
    fn missing_kvm_is_reported_not_fatal() {
        let info = gather(Path::new("/tmp/husk-root"), Path::new("/nonexistent/kvm"));
        assert!(!info.kvm.usable);
        assert!(!info.kvm.can_run_linux_guests);
        assert_eq!(info.kvm.guests, Guests::None);
        let text = render(&info);
        assert!(
            text.contains("Usable: no (/nonexistent/kvm does not exist"),
            "{text}"
        );
        assert!(text.contains("Can Run Linux Guests: no (KVM is unusable)"));
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["kvm"]["usable"], false);
        assert_eq!(json["kvm"]["guests"], "none");
    }

    fn host(backend: Backend) -> HostKvm {
        HostKvm {
            device: "/dev/kvm".into(),
            api_version: 12,
            backend,
            max_vcpus: 8,
            irqfd: true,
            ioeventfd: true,
            immediate_exit: true,
            host_mem_mib: 1024,
        }
    }

    #[test]
    fn three_kinds_of_host() {
        let hw = kvm_info_from(&host(Backend::Hardware {
            module: "kvm_intel".into(),
        }));
        assert!(hw.can_run_linux_guests);
        assert_eq!(hw.guests, Guests::Hardware);
        let pvm = kvm_info_from(&host(Backend::Emulated {
            module: "kvm_pvm".into(),
        }));
        assert!(pvm.can_run_linux_guests);
        assert_eq!(pvm.guests, Guests::Emulated);
        assert_eq!(serde_json::to_value(&pvm).unwrap()["guests"], "emulated");
        assert!(Guests::Emulated.describe().starts_with("yes, slowly"));
        assert!(Guests::Hardware.describe().starts_with("yes (hardware"));
    }
}
