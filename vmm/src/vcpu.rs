//! A vCPU: its boot state (CPUID, MSRs, registers, FPU, LAPIC) and the thread that runs it,
//! dispatching port and MMIO exits to the buses until the VM ends.

use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::arch::x86_64::{cpuid, interrupts, msr, regs};
use crate::devices::Bus;
use crate::exit::{ExitLatch, VcpuError, VmExit};
use crate::profile::SampleSink;

/// Errors setting a vCPU up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM refused the vCPU's state.
    #[error("cannot configure vCPU {vcpu}: {what}")]
    Configure {
        /// Which vCPU.
        vcpu: u8,
        /// Which step.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The MSR list could not be built.
    #[error("cannot configure vCPU MSRs")]
    Msrs(#[from] msr::Error),
    /// The vCPU thread could not be started.
    #[error("cannot start the thread of vCPU {0}")]
    Spawn(u8, #[source] std::io::Error),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
}

/// The signal that interrupts `KVM_RUN` so a vCPU thread notices the VM is ending.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process.
pub fn install_kick_handler() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_signal_handler(kick_signal(), on_kick));
    result.map_err(Error::SignalHandler)
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct BootState {
    /// Kernel entry.
    pub entry: u64,
    /// Page-table root.
    pub cr3: u64,
}

/// What a vCPU thread shares with the rest of the VM.
#[derive(Debug, Clone)]
pub struct VcpuContext {
    /// Port I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Where the VM's end is recorded.
    pub exit: Arc<ExitLatch>,
    /// Set by the VMM to stop every vCPU.
    pub stop: Arc<AtomicBool>,
    /// Where samples go when the VM is being profiled.
    pub profile: Option<Arc<SampleSink>>,
}

/// One vCPU.
#[derive(Debug)]
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
}

impl Vcpu {
    /// Wraps a created vCPU.
    pub fn new(id: u8, fd: VcpuFd) -> Self {
        Vcpu { id, fd }
    }

    fn step<T>(&self, what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, Error> {
        r.map_err(|source| Error::Configure {
            vcpu: self.id,
            what,
            source,
        })
    }

    /// Sets CPUID, MSRs, FPU and LAPIC; on the boot vCPU also the long-mode registers.
    /// Application processors wait in KVM for the kernel's INIT/SIPI.
    pub fn configure(
        &self,
        kvm: &Kvm,
        policy: &cpuid::CpuidPolicy,
        boot: Option<BootState>,
    ) -> Result<(), Error> {
        let mut table = self.step(
            "CPUID",
            kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES),
        )?;
        cpuid::shape(&mut table, policy);
        self.step("CPUID", self.fd.set_cpuid2(&table))?;
        let msrs = msr::boot_msrs()?;
        let written = self.step("MSRs", self.fd.set_msrs(&msrs))?;
        if written != msrs.as_slice().len() {
            log::warn!(
                "vCPU {}: KVM accepted {written} of {} boot MSRs",
                self.id,
                msrs.as_slice().len()
            );
        }
        self.step("FPU", self.fd.set_fpu(&regs::boot_fpu()))?;
        let mut lapic = self.step("LAPIC", self.fd.get_lapic())?;
        interrupts::set_lint(&mut lapic);
        self.step("LAPIC", self.fd.set_lapic(&lapic))?;
        if let Some(boot) = boot {
            self.step("registers", self.fd.set_regs(&regs::boot_regs(boot.entry)))?;
            let sregs = self.step("special registers", self.fd.get_sregs())?;
            let sregs = regs::long_mode_sregs(sregs, boot.cr3);
            self.step("special registers", self.fd.set_sregs(&sregs))?;
        }
        Ok(())
    }

    /// This vCPU's index.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The KVM vCPU (snapshots read and write its state while its thread is stopped).
    pub fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }

    /// Starts the vCPU on a thread named `husk-vcpu-N`; the thread hands the vCPU back
    /// when it stops.
    pub fn start(self, ctx: VcpuContext) -> Result<JoinHandle<Vcpu>, Error> {
        let id = self.id;
        std::thread::Builder::new()
            .name(format!("husk-vcpu-{id}"))
            .spawn(move || self.run(&ctx))
            .map_err(|e| Error::Spawn(id, e))
    }

    fn run(mut self, ctx: &VcpuContext) -> Vcpu {
        let id = self.id;
        if let Some(p) = &ctx.profile {
            p.attach(&mut self.fd);
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            while !ctx.stop.load(Ordering::Acquire) && !ctx.exit.is_set() {
                if let Some(exit) = self.run_once(ctx) {
                    ctx.exit.signal(exit);
                }
                if let Some(p) = &ctx.profile {
                    p.after_exit(id, &mut self.fd);
                }
            }
        }));
        if let Some(p) = &ctx.profile {
            p.detach();
        }
        if outcome.is_err() {
            ctx.exit.signal(VmExit::Error {
                vcpu: id,
                error: VcpuError::Panicked,
            });
        }
        self
    }

    /// Collects what KVM says about an internal error, for a useful message.
    fn internal_error(&mut self) -> VcpuError {
        let rip = self.fd.get_regs().map_or(0, |r| r.rip);
        // SAFETY: after KVM_EXIT_INTERNAL_ERROR the kernel filled the `internal` member of
        // the exit union; it is plain integers, so any bit pattern is valid.
        let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let data: Vec<String> = internal.data[..n]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        VcpuError::InternalError {
            suberror: internal.suberror,
            rip,
            data: data.join(" "),
        }
    }

    /// Runs the guest until its next exit and handles it; `Some` ends the VM.
    fn run_once(&mut self, ctx: &VcpuContext) -> Option<VmExit> {
        let id = self.id;
        let fail = |error| Some(VmExit::Error { vcpu: id, error });
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                ctx.pio.read(u64::from(port), data);
                None
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                ctx.pio.write(u64::from(port), data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                ctx.mmio.read(addr, data);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                ctx.mmio.write(addr, data);
                None
            }
            Ok(VcpuExit::Shutdown) => Some(VmExit::Shutdown { vcpu: id }),
            Ok(VcpuExit::Hlt) => Some(VmExit::Halted { vcpu: id }),
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => Some(VmExit::Reset),
                _ => Some(VmExit::Shutdown { vcpu: id }),
            },
            Ok(VcpuExit::FailEntry(reason, _)) => fail(VcpuError::FailEntry(reason)),
            Ok(VcpuExit::InternalError) => fail(self.internal_error()),
            Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => None,
            Ok(other) => fail(VcpuError::Unexpected(format!("{other:?}"))),
            // A kick: the loop condition decides whether to go on.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => fail(VcpuError::Run(e.errno())),
        }
    }
}
