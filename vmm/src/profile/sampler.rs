//! Taking the samples: a ticker thread that, every interval, marks each vCPU's sample as
//! wanted and sends its thread a signal; the signal's handler sets the vCPU's
//! `immediate_exit` (through a thread-local pointer to its `kvm_run`, as Firecracker and
//! Cloud Hypervisor do to pause), so `KVM_RUN` returns `EINTR` at once even when the signal
//! lands while the thread is outside the ioctl. The vCPU thread then reads its own
//! registers (RIP, CPL from CS) and MP state, records the sample, and runs on.
//!
//! None of this exists unless profiling is on: no handler, no thread, no signals.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_MP_STATE_HALTED, KVM_MP_STATE_RUNNABLE, kvm_run};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::devices::bus::lock;

/// Errors starting or running the sampler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sample signal's handler could not be installed.
    #[error("cannot install the profiler's sample signal handler")]
    SignalHandler(#[source] vmm_sys_util::errno::Error),
    /// The ticker thread could not be started.
    #[error("cannot start the profiler's ticker thread")]
    Spawn(#[source] std::io::Error),
}

/// What a vCPU was doing when it was sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuState {
    /// Running code at CPL 0 (the guest kernel, or a tiny guest).
    Kernel,
    /// Running code at CPL 3 (guest user space).
    User,
    /// Halted (`hlt`), waiting for an interrupt.
    Halted,
    /// An application processor that has not been started (no INIT/SIPI yet).
    NotStarted,
}

/// One sample of one vCPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When, from the vCPUs' start.
    pub at: Duration,
    /// Which vCPU.
    pub vcpu: u8,
    /// The guest instruction pointer.
    pub rip: u64,
    /// What the vCPU was doing.
    pub state: CpuState,
}

/// The signal that asks a vCPU thread for a sample (the VMM's stop kick is `SIGRTMIN`).
pub fn sample_signal() -> i32 {
    SIGRTMIN() + 1
}

thread_local! {
    /// The `kvm_run` of the vCPU this thread runs, while it is being profiled.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_sample_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // `try_with`: the signal may land on a thread whose thread-locals are being torn down.
    let _ = KVM_RUN.try_with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is set by `VcpuSlot::attach` to the `kvm_run` mapping of
            // the VcpuFd this very thread owns, and cleared by `detach` before that VcpuFd
            // can be dropped; writing one byte of it is what KVM documents for this.
            unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        }
    });
}

/// Installs the sample signal's handler once per process.
pub fn install_handler() -> Result<(), Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = register_signal_handler(sample_signal(), on_sample_signal));
    result.map_err(Error::SignalHandler)
}

/// One vCPU's side: whether a sample is wanted, and the samples taken.
#[derive(Debug, Default)]
struct Slot {
    wanted: AtomicBool,
    samples: Mutex<Vec<Sample>>,
    errors: AtomicU64,
}

/// Where every vCPU thread records its samples.
#[derive(Debug)]
pub struct SampleSink {
    start: Instant,
    slots: Vec<Slot>,
}

impl SampleSink {
    /// A sink for `vcpus` vCPUs whose times count from `start`.
    pub fn new(vcpus: usize, start: Instant) -> Self {
        SampleSink {
            start,
            slots: (0..vcpus).map(|_| Slot::default()).collect(),
        }
    }

    /// Called on the vCPU's thread before it first enters the guest: lets the signal
    /// handler reach this vCPU's `kvm_run`.
    pub fn attach(&self, fd: &mut VcpuFd) {
        let run: *mut kvm_run = fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run));
    }

    /// Called on the vCPU's thread once it stops entering the guest, before its VcpuFd
    /// is dropped.
    pub fn detach(&self) {
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    }

    /// Called on vCPU `id`'s thread after every return from `KVM_RUN`: re-arms
    /// `KVM_RUN` and takes the sample if one is wanted.
    pub fn after_exit(&self, id: u8, fd: &mut VcpuFd) {
        fd.set_kvm_immediate_exit(0);
        let Some(slot) = self.slots.get(usize::from(id)) else {
            return;
        };
        if !slot.wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        match read_sample(fd) {
            Ok((rip, state)) => lock(&slot.samples).push(Sample {
                at: self.start.elapsed(),
                vcpu: id,
                rip,
                state,
            }),
            Err(e) => {
                if slot.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::warn!("profiler: cannot read vCPU {id}'s registers: {e}");
                }
            }
        }
    }

    /// Marks a sample as wanted from every vCPU.
    fn want_all(&self) {
        for slot in &self.slots {
            slot.wanted.store(true, Ordering::Release);
        }
    }

    /// How many vCPUs it collects for.
    pub fn vcpus(&self) -> usize {
        self.slots.len()
    }

    /// How many samples could not be read (their registers' ioctls failed).
    pub fn read_errors(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.errors.load(Ordering::Relaxed))
            .sum()
    }

    /// Every sample taken so far, all vCPUs, in time order.
    pub fn samples(&self) -> Vec<Sample> {
        let mut all: Vec<Sample> = self
            .slots
            .iter()
            .flat_map(|s| lock(&s.samples).clone())
            .collect();
        all.sort_by_key(|s| (s.at, s.vcpu));
        all
    }
}

/// Reads RIP, CPL and MP state of the vCPU (on its own thread).
fn read_sample(fd: &VcpuFd) -> Result<(u64, CpuState), kvm_ioctls::Error> {
    let rip = fd.get_regs()?.rip;
    let mp = fd.get_mp_state()?.mp_state;
    let state = match mp {
        KVM_MP_STATE_HALTED => CpuState::Halted,
        KVM_MP_STATE_RUNNABLE => match fd.get_sregs()?.cs.dpl {
            3 => CpuState::User,
            _ => CpuState::Kernel,
        },
        // UNINITIALIZED, INIT_RECEIVED: an AP waiting for its SIPI.
        _ => CpuState::NotStarted,
    };
    Ok((rip, state))
}

/// The ticker thread: asks every vCPU for a sample each interval.
#[derive(Debug)]
pub struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts ticking every `interval` at the threads `vcpu_threads` (the vCPU threads,
    /// which must stay joinable, i.e. not joined, until `stop` returns).
    pub fn start(
        sink: Arc<SampleSink>,
        vcpu_threads: Vec<libc::pthread_t>,
        interval: Duration,
    ) -> Result<Ticker, Error> {
        install_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("husk-profiler".into())
            .spawn(move || tick(&sink, &vcpu_threads, interval, &flag))
            .map_err(Error::Spawn)?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops ticking and waits for the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.halt();
    }
}

fn tick(sink: &SampleSink, threads: &[libc::pthread_t], interval: Duration, stop: &AtomicBool) {
    let interval = interval.max(Duration::from_micros(1));
    let mut next = Instant::now() + interval;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        // A tick that came late (a busy host) is dropped, not caught up in a burst.
        next = (next + interval).max(Instant::now());
        sink.want_all();
        for &t in threads {
            // SAFETY: `t` is the pthread_t of a vCPU thread that the VMM joins only after
            // this ticker has stopped, so it names that (possibly finished, never reused)
            // thread; the sample signal has a handler installed by `Ticker::start`.
            let rc = unsafe { libc::pthread_kill(t, sample_signal()) };
            if rc != 0 && rc != libc::ESRCH {
                log::debug!("profiler: cannot signal a vCPU thread: errno {rc}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_come_back_in_time_order() {
        let sink = SampleSink::new(2, Instant::now());
        let s = |at_ms, vcpu| Sample {
            at: Duration::from_millis(at_ms),
            vcpu,
            rip: 1,
            state: CpuState::Kernel,
        };
        lock(&sink.slots[1].samples).extend([s(1, 1), s(3, 1)]);
        lock(&sink.slots[0].samples).extend([s(2, 0), s(3, 0)]);
        let at: Vec<(u64, u8)> = sink
            .samples()
            .iter()
            .map(|s| (s.at.as_millis() as u64, s.vcpu))
            .collect();
        assert_eq!(at, [(1, 1), (2, 0), (3, 0), (3, 1)]);
    }

    #[test]
    fn want_all_marks_every_vcpu() {
        let sink = SampleSink::new(3, Instant::now());
        sink.want_all();
        assert!(sink.slots.iter().all(|s| s.wanted.load(Ordering::Acquire)));
    }

    #[test]
    fn the_sample_signal_is_not_the_stop_kick() {
        assert_ne!(sample_signal(), crate::vcpu::kick_signal());
    }
}
