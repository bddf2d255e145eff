//! VM snapshots: everything needed to resume a running microVM later, in another VMM
//! process. A snapshot is a directory of two files:
//!
//! - `state`: one header line (JSON: format, VMM version, sha256 and length of the rest),
//!   then the state as JSON: what the VM must look like to take it back (vCPUs, memory
//!   layout, device types in slot order, a caller-chosen label), every vCPU's registers,
//!   FPU, LAPIC, MSRs and pending events, the PICs, IOAPIC, PIT and KVM clock, the serial
//!   port, and every virtio-mmio transport with its queues;
//! - `memory`: guest RAM (see [`memory`]).
//!
//! A snapshot is written into a temporary sibling directory and renamed into place only
//! when both files are complete and synced, so an interrupted save leaves nothing a later
//! restore would use. A restore checks the header, the checksum, the format and VMM
//! version, the label and the VM's shape before touching KVM, so a snapshot from another
//! kernel, agent, VMM or device layout is refused whole, never half-loaded.

pub mod cpu;
pub mod machine;
pub mod memory;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::devices::serial::SerialState;
use crate::devices::virtio::mmio::TransportState;

/// The snapshot format this VMM writes and reads.
pub const FORMAT: u32 = 1;
/// The VMM version recorded in (and required of) every snapshot.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The state file's name inside a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The memory file's name inside a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
const MAGIC: &str = "husk-vm-snapshot";

/// Errors writing or reading a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the snapshot could not be written.
    #[error("cannot write the snapshot {0}")]
    Write(PathBuf, #[source] std::io::Error),
    /// The state file could not be read.
    #[error("cannot read the snapshot {0}")]
    Read(PathBuf, #[source] std::io::Error),
    /// The state file is not a husk snapshot, or is damaged.
    #[error("{0} is not a valid husk VM snapshot: {1}")]
    Invalid(PathBuf, &'static str),
    /// It was written by another format or VMM version.
    #[error(
        "the snapshot {path} was made by husk VMM {vmm} (format {format}); this is {VMM_VERSION} (format {FORMAT})"
    )]
    Version {
        /// The snapshot.
        path: PathBuf,
        /// Its VMM version.
        vmm: String,
        /// Its format.
        format: u32,
    },
    /// It does not fit the VM it is restored into.
    #[error("the snapshot {0} does not match this VM: {1}")]
    Mismatch(PathBuf, Mismatch),
    /// The state could not be encoded or decoded.
    #[error("the snapshot's state cannot be encoded or decoded")]
    Json(#[source] serde_json::Error),
    /// Guest memory could not be saved or mapped.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// A vCPU's state could not be saved or restored.
    #[error(transparent)]
    Cpu(#[from] cpu::Error),
    /// The VM-wide state could not be saved or restored.
    #[error(transparent)]
    Machine(#[from] machine::Error),
    /// A profiled VM cannot be snapshotted (the profiler follows the vCPU threads).
    #[error("a VM being profiled cannot be snapshotted")]
    Profiling,
    /// A vCPU thread was lost while stopping for the snapshot.
    #[error("vCPU {0} did not stop for the snapshot")]
    VcpuNotStopped(usize),
}

/// What a VM must look like to take a snapshot back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest RAM regions `(start, length)`.
    pub memory: Vec<(u64, u64)>,
    /// virtio device types in slot order.
    pub devices: Vec<u32>,
    /// Whatever else the caller needs to match (e.g. digests of the kernel and
    /// initramfs); compared verbatim.
    pub label: String,
}

/// The whole saved state except guest RAM.
#[derive(Debug, Serialize, Deserialize)]
pub struct VmState {
    /// What the VM looks like.
    pub shape: Shape,
    /// The kernel command line the guest booted with.
    pub cmdline: String,
    /// Each vCPU.
    pub vcpus: Vec<cpu::VcpuState>,
    /// PICs, IOAPIC, PIT and clock.
    pub machine: machine::MachineState,
    /// COM1.
    pub serial: SerialState,
    /// The virtio-mmio transports, in slot order.
    pub virtio: Vec<TransportState>,
    /// Length of the memory file.
    pub memory_len: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    magic: String,
    format: u32,
    vmm: String,
    sha256: String,
    len: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A snapshot being written: a temporary directory next to its final place.
#[derive(Debug)]
pub struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
}

impl Pending {
    /// Starts a snapshot that will appear at `dest` (which must not exist yet; an
    /// earlier interrupted attempt's temporary directory is replaced).
    pub fn begin(dest: &Path) -> Result<Pending, Error> {
        let name = dest
            .file_name()
            .ok_or(Error::Invalid(dest.to_path_buf(), "no directory name"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        let fail = |e| Error::Write(tmp.clone(), e);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(fail)?;
        }
        fs::create_dir_all(&tmp).map_err(fail)?;
        Ok(Pending {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// Where guest memory goes.
    pub fn memory_path(&self) -> PathBuf {
        self.tmp.join(MEMORY_FILE)
    }

    /// Writes the state and publishes the snapshot.
    pub fn finish(self, state: &VmState) -> Result<PathBuf, Error> {
        let body = serde_json::to_vec(state).map_err(Error::Json)?;
        let header = Header {
            magic: MAGIC.into(),
            format: FORMAT,
            vmm: VMM_VERSION.into(),
            sha256: hex(&Sha256::digest(&body)),
            len: body.len() as u64,
        };
        let path = self.tmp.join(STATE_FILE);
        let fail = |e| Error::Write(path.clone(), e);
        let mut f = fs::File::create(&path).map_err(fail)?;
        serde_json::to_writer(&mut f, &header).map_err(Error::Json)?;
        f.write_all(b"\n").map_err(fail)?;
        f.write_all(&body).map_err(fail)?;
        f.sync_all().map_err(fail)?;
        let fail = |e| Error::Write(self.dest.clone(), e);
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest).map_err(fail)?;
        }
        fs::rename(&self.tmp, &self.dest).map_err(fail)?;
        if let Some(parent) = self.dest.parent()
            && let Ok(d) = fs::File::open(parent)
        {
            let _ = d.sync_all();
        }
        Ok(self.dest.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Unpublished (an error on the way): leave nothing behind.
        if self.tmp.exists() {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Reads and checks a snapshot's state: header, checksum, format and VMM version.
pub fn load(dir: &Path) -> Result<VmState, Error> {
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(|e| Error::Read(path.clone(), e))?;
    let invalid = |why| Error::Invalid(path.clone(), why);
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(invalid("no header"))?;
    let header: Header = serde_json::from_slice(&bytes[..nl]).map_err(|_| invalid("bad header"))?;
    if header.magic != MAGIC {
        return Err(invalid("wrong magic"));
    }
    if header.format != FORMAT || header.vmm != VMM_VERSION {
        return Err(Error::Version {
            path,
            vmm: header.vmm,
            format: header.format,
        });
    }
    let body = &bytes[nl + 1..];
    if body.len() as u64 != header.len {
        return Err(invalid("truncated state"));
    }
    if hex(&Sha256::digest(body)) != header.sha256 {
        return Err(invalid("checksum mismatch"));
    }
    serde_json::from_slice(body).map_err(|_| invalid("undecodable state"))
}

/// How a snapshot differs from the VM it would be restored into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Another guest (kernel, initramfs, agent...).
    #[error("it was made for {saved:?}, this VM is {here:?}")]
    Label {
        /// In the snapshot.
        saved: String,
        /// Here.
        here: String,
    },
    /// Another vCPU count.
    #[error("{saved} vCPUs, this VM has {here}")]
    Vcpus {
        /// In the snapshot.
        saved: u8,
        /// Here.
        here: u8,
    },
    /// Another memory size or layout.
    #[error("{saved} MiB of memory, this VM has {here}")]
    Memory {
        /// MiB in the snapshot.
        saved: u64,
        /// MiB here.
        here: u64,
    },
    /// Other devices.
    #[error("virtio devices {saved:?}, this VM has {here:?}")]
    Devices {
        /// Device types in the snapshot.
        saved: Vec<u32>,
        /// Device types here.
        here: Vec<u32>,
    },
    /// The state disagrees with its own shape.
    #[error("its state does not match its own shape")]
    Inconsistent,
}

impl VmState {
    /// Refuses a snapshot whose VM shape differs from `expected`.
    pub fn check_shape(&self, dir: &Path, expected: &Shape) -> Result<(), Error> {
        let s = &self.shape;
        let why = if s.label != expected.label {
            Mismatch::Label {
                saved: s.label.clone(),
                here: expected.label.clone(),
            }
        } else if s.vcpus != expected.vcpus {
            Mismatch::Vcpus {
                saved: s.vcpus,
                here: expected.vcpus,
            }
        } else if s.memory != expected.memory {
            Mismatch::Memory {
                saved: mib(&s.memory),
                here: mib(&expected.memory),
            }
        } else if s.devices != expected.devices {
            Mismatch::Devices {
                saved: s.devices.clone(),
                here: expected.devices.clone(),
            }
        } else if self.vcpus.len() != usize::from(s.vcpus) || self.virtio.len() != s.devices.len() {
            Mismatch::Inconsistent
        } else {
            return Ok(());
        };
        Err(Error::Mismatch(dir.to_path_buf(), why))
    }
}

fn mib(regions: &[(u64, u64)]) -> u64 {
    regions.iter().map(|r| r.1).sum::<u64>() >> 20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_snapshot_never_appears() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("snap");
        let pending = Pending::begin(&dest).unwrap();
        std::fs::write(pending.memory_path(), b"half").unwrap();
        // The process dies here (no destructor runs after SIGKILL).
        std::mem::forget(pending);
        assert!(!dest.exists());
        let e = load(&dest).unwrap_err();
        assert!(matches!(e, Error::Read(..)), "{e}");
        // The next attempt starts from a clean temporary directory and cleans up after
        // itself when it fails.
        let pending = Pending::begin(&dest).unwrap();
        assert!(!pending.memory_path().exists());
        let tmp = pending.memory_path().parent().unwrap().to_path_buf();
        drop(pending);
        assert!(!tmp.exists() && !dest.exists());
    }
}
