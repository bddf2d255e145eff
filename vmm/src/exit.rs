//! How a microVM ends: the typed exit, and the one-shot latch that the first vCPU or
//! device to see the end sets (later signals are ignored, so a reset is not overwritten by
//! the triple fault that may follow it).

use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::lock;

/// Why a vCPU failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcpuError {
    /// `KVM_RUN` failed.
    #[error("KVM_RUN failed with errno {0}")]
    Run(i32),
    /// The hardware refused to enter the guest.
    #[error("the CPU refused to enter the guest (hardware entry failure reason {0:#x})")]
    FailEntry(u64),
    /// KVM hit an internal error (suberror 1 is an instruction its emulator rejected).
    #[error("KVM internal error {suberror} at guest RIP {rip:#x} (data: {data})")]
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
        /// The guest instruction pointer.
        rip: u64,
        /// The data words KVM reported, in hex.
        data: String,
    },
    /// An exit husk does not handle.
    #[error("unexpected vCPU exit: {0}")]
    Unexpected(String),
    /// The vCPU thread panicked.
    #[error("the vCPU thread panicked")]
    Panicked,
    /// A vCPU thread did not stop for a snapshot and was left behind.
    #[error("a vCPU thread did not stop for a snapshot")]
    Lost,
}

/// How the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest reset itself through the i8042 (a reboot, or `panic=-1` after a panic).
    Reset,
    /// A vCPU shut down (triple fault).
    Shutdown {
        /// Which vCPU.
        vcpu: u8,
    },
    /// A vCPU halted with no in-kernel irqchip to wake it.
    Halted {
        /// Which vCPU.
        vcpu: u8,
    },
    /// The VMM stopped the VM after saving a snapshot of it, as asked.
    Snapshotted,
    /// A vCPU failed.
    Error {
        /// Which vCPU.
        vcpu: u8,
        /// What happened.
        error: VcpuError,
    },
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::Reset => write!(f, "reset by the guest"),
            VmExit::Shutdown { vcpu } => write!(f, "shutdown (triple fault) on vCPU {vcpu}"),
            VmExit::Halted { vcpu } => write!(f, "vCPU {vcpu} halted"),
            VmExit::Snapshotted => write!(f, "stopped after a snapshot"),
            VmExit::Error { vcpu, error } => write!(f, "vCPU {vcpu} failed: {error}"),
        }
    }
}

/// The latch every party that can end the VM writes to.
#[derive(Debug)]
pub struct ExitLatch {
    outcome: Mutex<Option<VmExit>>,
    event: EventFd,
}

impl ExitLatch {
    /// A fresh latch.
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitLatch {
            outcome: Mutex::new(None),
            event: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Records `exit` unless an earlier one was recorded, and wakes the event loop.
    pub fn signal(&self, exit: VmExit) {
        let mut outcome = lock(&self.outcome);
        if outcome.is_none() {
            log::debug!("VM ending: {exit}");
            *outcome = Some(exit);
            if let Err(e) = self.event.write(1) {
                log::error!("cannot wake the VMM event loop: {e}");
            }
        }
    }

    /// The recorded exit, if any.
    pub fn outcome(&self) -> Option<VmExit> {
        lock(&self.outcome).clone()
    }

    /// Whether the VM is ending.
    pub fn is_set(&self) -> bool {
        lock(&self.outcome).is_some()
    }

    /// The eventfd written on the first signal.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_wins() {
        let latch = ExitLatch::new().unwrap();
        assert!(!latch.is_set());
        latch.signal(VmExit::Reset);
        latch.signal(VmExit::Shutdown { vcpu: 0 });
        assert_eq!(latch.outcome(), Some(VmExit::Reset));
        assert_eq!(latch.event().read().unwrap(), 1);
    }
}
