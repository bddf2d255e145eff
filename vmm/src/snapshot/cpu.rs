//! A vCPU's whole architectural state as KVM exposes it, saved from a stopped vCPU and
//! put back into a fresh one, in the order KVM needs (CPUID first; MSRs after the LAPIC
//! and special registers; pending events last).

use kvm_bindings::{
    CpuId, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

/// Errors saving or restoring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM refused one part of the state.
    #[error("vCPU {vcpu}: KVM refused to {what}")]
    Kvm {
        /// Which vCPU.
        vcpu: u8,
        /// Which step.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A KVM list (CPUID or MSRs) could not be built.
    #[error("vCPU {0}: cannot build the {1} list")]
    List(u8, &'static str, #[source] vmm_sys_util::fam::Error),
    /// KVM took only part of the saved MSRs.
    #[error("vCPU {vcpu}: KVM accepted {accepted} of {saved} saved MSRs")]
    Msrs {
        /// Which vCPU.
        vcpu: u8,
        /// How many KVM set.
        accepted: usize,
        /// How many the snapshot has.
        saved: usize,
    },
}

/// Everything KVM holds for one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index.
    pub id: u8,
    cpuid: Vec<kvm_cpuid_entry2>,
    mp_state: kvm_mp_state,
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debug_regs: kvm_debugregs,
    lapic: kvm_lapic_state,
    msrs: Vec<kvm_msr_entry>,
    events: kvm_vcpu_events,
}

fn step<T>(vcpu: u8, what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, Error> {
    r.map_err(|source| Error::Kvm { vcpu, what, source })
}

/// Lets KVM finish an exit the VMM already handled (an MMIO or port read whose data sits
/// in `kvm_run`), without running guest code, so the saved registers are complete.
pub fn complete_pending_io(id: u8, fd: &mut VcpuFd) -> Result<(), Error> {
    fd.set_kvm_immediate_exit(1);
    let r = fd.run().map(|_| ());
    fd.set_kvm_immediate_exit(0);
    match r {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        other => step(id, "complete the pending exit", other),
    }
}

/// Reads every MSR KVM can save, skipping those this KVM lists but cannot read.
fn save_msrs(kvm: &Kvm, id: u8, fd: &VcpuFd) -> Result<Vec<kvm_msr_entry>, Error> {
    let list = step(id, "list the MSRs", kvm.get_msr_index_list())?;
    let mut saved = Vec::new();
    let mut pending: Vec<u32> = list.as_slice().to_vec();
    while !pending.is_empty() {
        let entries: Vec<kvm_msr_entry> = pending
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|e| Error::List(id, "MSR", e))?;
        let read = step(id, "read the MSRs", fd.get_msrs(&mut msrs))?;
        saved.extend_from_slice(&msrs.as_slice()[..read]);
        // KVM stops at the first MSR it cannot read: leave that one out and go on.
        let skip = (read + 1).min(pending.len());
        if read < pending.len() {
            log::debug!("vCPU {id}: MSR {:#x} is not readable", pending[read]);
        }
        pending.drain(..skip);
    }
    Ok(saved)
}

impl VcpuState {
    /// Saves a stopped vCPU (its thread out of `KVM_RUN`, pending I/O completed).
    pub fn save(kvm: &Kvm, id: u8, fd: &VcpuFd) -> Result<VcpuState, Error> {
        let cpuid = step(
            id,
            "read the CPUID",
            fd.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES),
        )?;
        Ok(VcpuState {
            id,
            cpuid: cpuid.as_slice().to_vec(),
            mp_state: step(id, "read the MP state", fd.get_mp_state())?,
            regs: step(id, "read the registers", fd.get_regs())?,
            sregs: step(id, "read the special registers", fd.get_sregs())?,
            xsave: step(id, "read the FPU state", fd.get_xsave())?,
            xcrs: step(id, "read the XCRs", fd.get_xcrs())?,
            debug_regs: step(id, "read the debug registers", fd.get_debug_regs())?,
            lapic: step(id, "read the LAPIC", fd.get_lapic())?,
            msrs: save_msrs(kvm, id, fd)?,
            events: step(id, "read the pending events", fd.get_vcpu_events())?,
        })
    }

    /// Puts the saved state into a freshly created vCPU.
    pub fn restore(&self, fd: &VcpuFd) -> Result<(), Error> {
        let id = self.id;
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|e| Error::List(id, "CPUID", e))?;
        step(id, "set the CPUID", fd.set_cpuid2(&cpuid))?;
        step(id, "set the MP state", fd.set_mp_state(self.mp_state))?;
        step(id, "set the special registers", fd.set_sregs(&self.sregs))?;
        step(id, "set the registers", fd.set_regs(&self.regs))?;
        // SAFETY: the buffer is a complete `kvm_xsave` that KVM itself produced.
        step(id, "set the FPU state", unsafe {
            fd.set_xsave(&self.xsave)
        })?;
        step(id, "set the XCRs", fd.set_xcrs(&self.xcrs))?;
        step(
            id,
            "set the debug registers",
            fd.set_debug_regs(&self.debug_regs),
        )?;
        step(id, "set the LAPIC", fd.set_lapic(&self.lapic))?;
        let msrs = Msrs::from_entries(&self.msrs).map_err(|e| Error::List(id, "MSR", e))?;
        let accepted = step(id, "set the MSRs", fd.set_msrs(&msrs))?;
        if accepted != self.msrs.len() {
            return Err(Error::Msrs {
                vcpu: id,
                accepted,
                saved: self.msrs.len(),
            });
        }
        step(
            id,
            "set the pending events",
            fd.set_vcpu_events(&self.events),
        )
    }
}
