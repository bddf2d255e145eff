//! husk's virtual machine monitor: everything that touches KVM. It knows nothing of images
//! or containers: it sees a kernel, an initramfs, a command line, vCPUs, memory and a
//! console, builds an x86_64 microVM from them on the rust-vmm crates, runs it and
//! reports how it ended.

pub mod arch;
pub mod cmdline;
pub mod config;
pub mod control;
pub mod devices;
pub mod exit;
pub mod host;
pub mod loader;
pub mod profile;
pub mod snapshot;
pub mod tiny_elf;
pub mod vcpu;
pub mod vm;

pub use config::{Console, DiskConfig, FsConfig, NetConfig, ProfileConfig, VmConfig, VsockConfig};
pub use exit::{VcpuError, VmExit};
pub use host::{Backend, HostKvm};
pub use vm::{Error, MicroVm, RunReport, boot};
