//! What a microVM is made of, as plain data: kernel, initramfs, command line, vCPUs,
//! memory and console. Validated once, before any KVM object exists.

use std::path::PathBuf;

pub use crate::control::{AfterSnapshot, SnapshotPlan};
pub use crate::devices::virtio::fs::FsConfig;
pub use crate::devices::virtio::manager::MAX_DEVICES;
pub use crate::devices::virtio::net::NetConfig;
pub use crate::devices::virtio::vsock::VsockConfig;
pub use crate::profile::ProfileConfig;

/// Fewest MiB of guest memory husk boots (a kernel needs room above its load address).
pub const MIN_MEM_MIB: u64 = 64;
/// Most vCPUs one microVM may have.
pub const MAX_VCPUS: u8 = 32;

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Console {
    /// Nowhere (the kernel is told to be quiet); the last few KiB are still kept for
    /// diagnostics. The default: console output costs a VM exit per byte.
    #[default]
    Off,
    /// This process's standard output.
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
}

impl Console {
    /// Whether the kernel should print its log to the serial port.
    pub fn is_on(&self) -> bool {
        !matches!(self, Console::Off)
    }
}

/// A disk the guest sees as a virtio-blk device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image file; its size must be a multiple of 512 bytes.
    pub path: PathBuf,
    /// Open it read-only: the guest sees a read-only disk and writes fail.
    pub read_only: bool,
}

impl DiskConfig {
    /// What backs an empty slot.
    pub const EMPTY_SLOT: &'static str = "/dev/null";

    /// An empty disk slot: zero sectors, writable (backed by `/dev/null`). A VM restored
    /// from a snapshot of one can have a real disk there: the guest learns its capacity
    /// from a configuration-change interrupt (see `docs/snapshots.md`).
    pub fn empty_slot() -> DiskConfig {
        DiskConfig {
            path: PathBuf::from(Self::EMPTY_SLOT),
            read_only: false,
        }
    }
}

/// A microVM's configuration.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The KVM device (normally `/dev/kvm`).
    pub kvm_device: PathBuf,
    /// Uncompressed ELF `vmlinux` (PVH or not) or a bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs, loaded as-is.
    pub initrd: Option<PathBuf>,
    /// Extra kernel parameters, appended after husk's own (so they win).
    pub cmdline: String,
    /// Number of vCPUs, 1..=`MAX_VCPUS`.
    pub vcpus: u8,
    /// Guest memory in MiB, at least `MIN_MEM_MIB`.
    pub mem_mib: u64,
    /// Serial console destination.
    pub console: Console,
    /// Console lines to time: the run report says when the first line containing each
    /// arrived (e.g. `Run /init as init process`).
    pub milestones: Vec<String>,
    /// Disks in guest order: the first is `/dev/vda`, the next `/dev/vdb`, ...
    pub disks: Vec<DiskConfig>,
    /// The virtio-vsock device and its host unix socket, if any.
    pub vsock: Option<VsockConfig>,
    /// NICs in guest order (`eth0`, `eth1`, ...).
    pub nets: Vec<NetConfig>,
    /// Shared directories (virtio-fs, served by a vhost-user daemon). Any with a daemon
    /// puts guest RAM in a shareable memfd, which the daemon maps.
    pub fs: Vec<FsConfig>,
    /// Sample the vCPUs' instruction pointers while the VM runs (`None`: no profiler
    /// at all).
    pub profile: Option<ProfileConfig>,
    /// Take a snapshot when the guest prints a console line containing a pattern.
    pub snapshot_on_console: Option<(String, SnapshotPlan)>,
}

impl VmConfig {
    /// A config with husk's defaults: 1 vCPU, 128 MiB, console off.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kvm_device: PathBuf::from("/dev/kvm"),
            kernel: kernel.into(),
            initrd: None,
            cmdline: String::new(),
            vcpus: 1,
            mem_mib: 128,
            console: Console::Off,
            milestones: Vec::new(),
            disks: Vec::new(),
            vsock: None,
            nets: Vec::new(),
            fs: Vec::new(),
            profile: None,
            snapshot_on_console: None,
        }
    }

    /// Guest memory in bytes.
    pub fn mem_bytes(&self) -> u64 {
        self.mem_mib << 20
    }

    /// How many virtio devices the VM gets: disks, vsock, NICs, shared directories.
    pub fn device_count(&self) -> usize {
        self.disks.len() + usize::from(self.vsock.is_some()) + self.nets.len() + self.fs.len()
    }

    /// Whether guest RAM must be a shareable memfd (a vhost-user daemon maps it).
    pub fn shared_memory(&self) -> bool {
        self.fs.iter().any(|f| f.socket.is_some())
    }
}

/// The device budget: how many disks fit beside `others` other devices (NICs, vsock,
/// shared directories), every virtio device taking one of the VMM's [`MAX_DEVICES`]
/// interrupt lines.
pub const fn disk_budget(others: usize) -> usize {
    MAX_DEVICES.saturating_sub(others)
}

/// A configuration husk refuses, before touching KVM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// No vCPUs or too many.
    #[error("{0} vCPUs requested: a microVM has 1 to {max}", max = MAX_VCPUS)]
    VcpuCount(u8),
    /// More vCPUs than this host's KVM allows.
    #[error("{requested} vCPUs requested: this host's KVM allows at most {max}")]
    VcpusAboveKvmLimit {
        /// Requested count.
        requested: u8,
        /// KVM_CAP_MAX_VCPUS.
        max: usize,
    },
    /// Less memory than a kernel needs.
    #[error("{0} MiB of memory is too small: a microVM needs at least {min} MiB", min = MIN_MEM_MIB)]
    MemoryTooSmall(u64),
    /// More virtio devices than interrupt lines.
    #[error("{disks} disks, {nets} NICs, {vsock} vsock device and {fs} shared directories: a microVM has {max} interrupt lines for them", max = MAX_DEVICES)]
    TooManyDevices {
        /// Disks asked for.
        disks: usize,
        /// NICs asked for.
        nets: usize,
        /// 1 with a vsock device.
        vsock: usize,
        /// Shared directories asked for.
        fs: usize,
    },
    /// More memory than the host has.
    #[error("{requested} MiB of memory is too large: this host has {host} MiB")]
    MemoryTooLarge {
        /// Requested MiB.
        requested: u64,
        /// Host RAM in MiB.
        host: u64,
    },
}

impl VmConfig {
    /// Checks the numbers against husk's limits and the host's (`host_mem_mib`,
    /// `kvm_max_vcpus`).
    pub fn validate(&self, host_mem_mib: u64, kvm_max_vcpus: usize) -> Result<(), Error> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(Error::VcpuCount(self.vcpus));
        }
        if usize::from(self.vcpus) > kvm_max_vcpus {
            return Err(Error::VcpusAboveKvmLimit {
                requested: self.vcpus,
                max: kvm_max_vcpus,
            });
        }
        if self.device_count() > MAX_DEVICES {
            return Err(Error::TooManyDevices {
                disks: self.disks.len(),
                nets: self.nets.len(),
                vsock: usize::from(self.vsock.is_some()),
                fs: self.fs.len(),
            });
        }
        if self.mem_mib < MIN_MEM_MIB {
            return Err(Error::MemoryTooSmall(self.mem_mib));
        }
        if self.mem_mib > host_mem_mib {
            return Err(Error::MemoryTooLarge {
                requested: self.mem_mib,
                host: host_mem_mib,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(vcpus: u8, mem_mib: u64) -> VmConfig {
        VmConfig {
            vcpus,
            mem_mib,
            ..VmConfig::new("/k")
        }
    }

    #[test]
    fn the_device_budget_is_the_interrupt_lines() {
        assert_eq!(MAX_DEVICES, 19);
        assert_eq!(disk_budget(2), 17);
        assert_eq!(disk_budget(0), 19);
        let mut c = cfg(1, 128);
        c.vsock = Some(VsockConfig::new("/v"));
        c.nets = vec![NetConfig {
            tap: None,
            mac: [2, 0, 0, 0, 0, 1],
        }];
        c.disks = vec![DiskConfig::empty_slot(); disk_budget(2)];
        assert_eq!(c.validate(1024, 8), Ok(()));
        c.disks.push(DiskConfig::empty_slot());
        let e = c.validate(1024, 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "18 disks, 1 NICs, 1 vsock device and 0 shared directories: a microVM has 19 interrupt lines for them"
        );
    }

    #[test]
    fn limits() {
        assert_eq!(cfg(1, 64).validate(1024, 8), Ok(()));
        assert_eq!(cfg(8, 4096).validate(8192, 8), Ok(()));
        assert_eq!(cfg(0, 64).validate(1024, 8), Err(Error::VcpuCount(0)));
        assert_eq!(cfg(33, 64).validate(1024, 64), Err(Error::VcpuCount(33)));
        assert_eq!(
            cfg(9, 64).validate(1024, 8),
            Err(Error::VcpusAboveKvmLimit {
                requested: 9,
                max: 8
            })
        );
        assert_eq!(cfg(1, 63).validate(1024, 8), Err(Error::MemoryTooSmall(63)));
        assert_eq!(
            cfg(1, 2048).validate(1024, 8),
            Err(Error::MemoryTooLarge {
                requested: 2048,
                host: 1024
            })
        );
    }

    #[test]
    fn messages_are_one_clear_line() {
        let e = cfg(1, 16).validate(1024, 8).unwrap_err().to_string();
        assert_eq!(
            e,
            "16 MiB of memory is too small: a microVM needs at least 64 MiB"
        );
        assert!(!e.contains('\n'));
    }
}
