//! Booting a guest kernel in a husk microVM (`husk vm boot`): picks the default kernel
//! and the agent's initramfs, watches the console for the boot milestones, and says how
//! far the guest got and how long each step took.

use std::path::PathBuf;
use std::time::Duration;

use vmm::{Console, RunReport, VmConfig, VmExit};

use crate::paths;

/// The console lines that mark how far a boot got, in boot order, with a name for people.
pub const MILESTONES: &[(&str, &str)] = &[
    ("Linux version ", "kernel banner"),
    ("Command line: ", "command line parsed"),
    ("Run /init as init process", "init started"),
    ("husk-agent: ready", "agent ready"),
];

/// Marks a guest that died.
pub const PANIC: &str = "Kernel panic";

/// Errors preparing a boot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No kernel given and none built.
    #[error("no guest kernel: pass --kernel PATH or build one with guest-kernel/build.sh")]
    NoKernel,
    /// The given kernel does not exist.
    #[error("kernel {0} does not exist")]
    KernelMissing(PathBuf),
    /// The agent's initramfs could not be built.
    #[error("cannot build the agent initramfs")]
    Initramfs(#[source] rootfs::initramfs::InitramfsError),
    /// The VMM failed.
    #[error(transparent)]
    Vmm(#[from] vmm::Error),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootRequest {
    /// The kernel; the default one when `None`.
    pub kernel: Option<PathBuf>,
    /// The initramfs; `None` means the agent's, `Some(None)` means none.
    pub initrd: Option<Option<PathBuf>>,
    /// Extra kernel parameters.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Console destination.
    pub console: Console,
    /// KVM device.
    pub kvm_device: PathBuf,
    /// Disks, in guest order (`/dev/vda` first).
    pub disks: Vec<vmm::DiskConfig>,
    /// The vsock device's host socket, if the guest gets one.
    pub vsock: Option<vmm::VsockConfig>,
    /// NICs (`eth0`, ...).
    pub nets: Vec<vmm::NetConfig>,
    /// Shared directories (virtio-fs).
    pub fs: Vec<vmm::FsConfig>,
    /// Save a snapshot when the guest prints a console line containing the pattern.
    pub snapshot: Option<(String, vmm::config::SnapshotPlan)>,
    /// Start from this snapshot instead of booting.
    pub restore: Option<PathBuf>,
    /// Sample the guest's vCPUs (docs/profiling.md).
    pub profile: Option<vmm::ProfileConfig>,
}

/// The agent's initramfs, built (and cached) from the static agent binary, if there is one.
pub fn agent_initramfs() -> Result<Option<PathBuf>, Error> {
    let (Some(agent), Some(cache)) = (paths::agent_binary(), paths::cache_dir()) else {
        return Ok(None);
    };
    rootfs::initramfs::build_cached(&agent, &cache)
        .map(Some)
        .map_err(Error::Initramfs)
}

/// Turns a request into a VMM config.
pub fn vm_config(req: &BootRequest) -> Result<VmConfig, Error> {
    let kernel = req
        .kernel
        .clone()
        .or_else(paths::default_kernel)
        .ok_or(Error::NoKernel)?;
    if !kernel.exists() {
        return Err(match req.kernel {
            None => Error::NoKernel,
            Some(_) => Error::KernelMissing(kernel),
        });
    }
    let initrd = match &req.initrd {
        Some(explicit) => explicit.clone(),
        None => agent_initramfs()?,
    };
    let mut milestones: Vec<String> = MILESTONES.iter().map(|(p, _)| p.to_string()).collect();
    milestones.push(PANIC.to_string());
    Ok(VmConfig {
        kvm_device: req.kvm_device.clone(),
        kernel,
        initrd,
        cmdline: req.cmdline.clone(),
        vcpus: req.vcpus,
        mem_mib: req.mem_mib,
        console: req.console.clone(),
        milestones,
        disks: req.disks.clone(),
        vsock: req.vsock.clone(),
        nets: req.nets.clone(),
        fs: req.fs.clone(),
        profile: req.profile.clone(),
        snapshot_on_console: req.snapshot.clone(),
    })
}

/// What a `husk vm` snapshot is tied to: the kernel and initramfs files (path, size and
/// modification time; a rebuilt kernel or agent is another guest).
pub fn snapshot_label(config: &VmConfig) -> String {
    let initrd = config
        .initrd
        .as_deref()
        .map(file_identity)
        .unwrap_or_default();
    format!(
        "husk vm boot; kernel {}; initrd {initrd}; cmdline {}",
        file_identity(&config.kernel),
        config.cmdline
    )
}

/// A file as snapshot labels name it: path, size and modification time.
pub fn file_identity(p: &std::path::Path) -> String {
    let meta = std::fs::metadata(p).ok();
    let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
    let mtime = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{} {len} {mtime}", p.display())
}

/// Builds (without running) the VM `req` describes.
pub fn build(req: &BootRequest) -> Result<vmm::MicroVm, Error> {
    Ok(vmm::MicroVm::build(&vm_config(req)?)?)
}

/// Boots (or restores) and runs the guest to its end, sampling its vCPUs when
/// `req.profile` is set (the report's `profile` then holds the result).
pub fn boot(req: &BootRequest) -> Result<RunReport, Error> {
    let mut config = vm_config(req)?;
    let label = snapshot_label(&config);
    if let Some((_, plan)) = &mut config.snapshot_on_console {
        plan.label = label.clone();
    }
    let vm = match &req.restore {
        Some(dir) => vmm::MicroVm::restore(&config, dir, &label)?,
        None => vmm::MicroVm::build(&config)?,
    };
    // `husk bench run`: VMM setup done; the vCPUs enter the guest right after.
    crate::timing::mark("vmm.built");
    Ok(vm.run()?)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// "How far it got and how long it took", one line per fact.
pub fn summary(report: &RunReport) -> String {
    let mut lines = vec![format!("VMM setup: {}", secs(report.setup_time))];
    let seen = |pattern: &str| {
        report
            .milestones
            .iter()
            .find(|(p, _)| p == pattern)
            .and_then(|(_, at)| *at)
    };
    let mut furthest = None;
    for (pattern, name) in MILESTONES {
        if let Some(at) = seen(pattern) {
            lines.push(format!("{name}: {} after the vCPUs started", secs(at)));
            furthest = Some(*name);
        }
    }
    if let Some(at) = seen(PANIC) {
        lines.push(format!("kernel panic: {}", secs(at)));
    }
    lines.push(format!(
        "furthest milestone: {}",
        furthest.unwrap_or("none (no milestone on the console; is it on?)")
    ));
    lines.push(format!(
        "VM ended: {} after {}",
        report.exit,
        secs(report.run_time)
    ));
    lines.join("\n")
}

/// Whether the VM ended the way a guest ends on purpose (or stopped after the snapshot
/// it was asked for).
pub fn clean_exit(report: &RunReport) -> bool {
    matches!(report.exit, VmExit::Reset | VmExit::Snapshotted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(milestones: Vec<(String, Option<Duration>)>, exit: VmExit) -> RunReport {
        RunReport {
            exit,
            unhandled_pio: 0,
            unhandled_mmio: 0,
            console_tail: Vec::new(),
            setup_time: Duration::from_millis(3),
            run_time: Duration::from_secs(90),
            cmdline: String::new(),
            milestones,
            profile: None,
        }
    }

    #[test]
    fn summary_names_the_furthest_milestone() {
        let r = report(
            vec![
                ("Linux version ".into(), Some(Duration::from_millis(400))),
                ("Command line: ".into(), Some(Duration::from_millis(410))),
                (
                    "Run /init as init process".into(),
                    Some(Duration::from_secs(80)),
                ),
                ("husk-agent: ready".into(), None),
                (PANIC.into(), Some(Duration::from_secs(81))),
            ],
            VmExit::Reset,
        );
        let s = summary(&r);
        assert!(s.contains("init started: 80.000 s"), "{s}");
        assert!(s.contains("furthest milestone: init started"), "{s}");
        assert!(s.contains("kernel panic: 81.000 s"), "{s}");
        assert!(
            s.ends_with("VM ended: reset by the guest after 90.000 s"),
            "{s}"
        );
        assert!(clean_exit(&r));
    }

    #[test]
    fn explicit_kernel_and_no_initrd() {
        let req = BootRequest {
            kernel: Some("/".into()),
            initrd: Some(None),
            cmdline: "x=1".into(),
            vcpus: 2,
            mem_mib: 256,
            console: Console::Stdout,
            kvm_device: "/dev/kvm".into(),
            disks: vec![vmm::DiskConfig {
                path: "/d".into(),
                read_only: true,
            }],
            vsock: Some(vmm::VsockConfig::new("/v.sock")),
            nets: Vec::new(),
            fs: Vec::new(),
            snapshot: None,
            restore: None,
            profile: None,
        };
        let c = vm_config(&req).unwrap();
        assert_eq!(
            (c.kernel, c.initrd, c.vcpus, c.mem_mib),
            ("/".into(), None, 2, 256)
        );
        assert_eq!(c.disks, req.disks);
        assert_eq!(c.vsock, req.vsock);
        assert!(
            c.milestones
                .iter()
                .any(|m| m == "Run /init as init process")
        );
    }
}
