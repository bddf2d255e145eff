//! The microVM builder and run loop. `MicroVm::build` reads like the boot sequence:
//! KVM checks, guest memory, VM and irqchip, vCPUs, devices, kernel and initramfs,
//! boot structures and registers. `MicroVm::run` starts the vCPU threads and runs the
//! event loop until the guest resets, shuts down or fails, stopping the vCPUs for a
//! snapshot when one is requested ([`snapshot`] saves and restores).

pub(crate) mod ram;
mod snapshot;

use std::fs::File;
use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::arch::x86_64::{bootparams, cpuid::CpuidPolicy, layout, mptable, paging, regs};
use crate::config::{Console, VmConfig};
use crate::control::{AfterSnapshot, Control, SnapshotRequest};
use crate::devices::serial::{COM1_BASE, COM1_IRQ, COM1_LEN, ConsoleSink, ConsoleTail, Milestones};
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::{block, fs, manager, net, vsock};
use crate::devices::{Bus, bus, i8042, serial};
use crate::exit::{ExitLatch, VmExit};
use crate::profile::{Profile, Profiler, Ticker};
use crate::vcpu::{BootState, Vcpu, VcpuContext};
use crate::{cmdline, config, host, loader, profile, vcpu};

/// Errors building or running a microVM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM is missing or unusable.
    #[error(transparent)]
    Host(#[from] host::Error),
    /// The configuration is out of bounds.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// Guest memory could not be mapped.
    #[error(transparent)]
    Memory(#[from] ram::RamError),
    /// A KVM VM-level call failed.
    #[error("KVM refused to {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    /// A vCPU could not be set up or started.
    #[error(transparent)]
    Vcpu(#[from] vcpu::Error),
    /// A device could not be placed on its bus.
    #[error("cannot attach the {0}")]
    Device(&'static str, #[source] bus::Error),
    /// The console destination could not be opened.
    #[error("cannot open the console file {0}")]
    ConsoleFile(std::path::PathBuf, #[source] std::io::Error),
    /// The kernel, initramfs or command line could not be loaded.
    #[error(transparent)]
    Load(#[from] loader::Error),
    /// The command line is invalid.
    #[error(transparent)]
    Cmdline(#[from] cmdline::Error),
    /// The zero page could not be built.
    #[error(transparent)]
    BootParams(#[from] bootparams::Error),
    /// The zero page could not be written.
    #[error("cannot write the zero page to guest memory")]
    ZeroPage(#[source] vm_memory::GuestMemoryError),
    /// The MP table could not be written.
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    /// The page tables could not be written.
    #[error(transparent)]
    Paging(#[from] paging::Error),
    /// The GDT/IDT could not be written.
    #[error(transparent)]
    Regs(#[from] regs::Error),
    /// The event loop failed.
    #[error("the VMM event loop failed: {0}")]
    EventLoop(String),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// A disk could not be attached.
    #[error(transparent)]
    Disk(#[from] block::Error),
    /// The vsock device could not be created.
    #[error(transparent)]
    Vsock(#[from] vsock::Error),
    /// A NIC could not be created.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// A shared directory could not be attached.
    #[error(transparent)]
    Fs(#[from] fs::Error),
    /// A virtio device could not be placed.
    #[error(transparent)]
    Virtio(#[from] manager::Error),
    /// The profiler could not be prepared or started.
    #[error(transparent)]
    Profile(#[from] profile::Error),
    /// A snapshot could not be read or did not fit.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::Error),
    /// A restored virtio device did not take its saved state.
    #[error(transparent)]
    VirtioRestore(#[from] crate::devices::virtio::mmio::RestoreError),
    /// The restored serial port did not take its saved state.
    #[error(transparent)]
    SerialRestore(#[from] serial::RestoreError),
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// How the VM ended.
    pub exit: VmExit,
    /// Port accesses no device claimed.
    pub unhandled_pio: u64,
    /// MMIO accesses no device claimed.
    pub unhandled_mmio: u64,
    /// The last bytes the guest printed on its console.
    pub console_tail: Vec<u8>,
    /// Time from `build` start to the first vCPU starting.
    pub setup_time: Duration,
    /// Time from the vCPUs starting to the VM's end.
    pub run_time: Duration,
    /// The kernel command line the guest got.
    pub cmdline: String,
    /// Each watched console milestone and when it appeared, from the vCPUs' start.
    pub milestones: Vec<(String, Option<Duration>)>,
    /// The guest profile, when the VM was profiled.
    pub profile: Option<Profile>,
}

/// A built microVM, ready to run.
pub struct MicroVm {
    kvm: Kvm,
    vm: VmFd,
    memory: GuestMemoryMmap,
    vcpus: Vec<Vcpu>,
    vcpu_count: usize,
    serial: Arc<Mutex<serial::SerialDevice>>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    nics: Vec<Arc<net::Plug>>,
    control: Arc<Control>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitLatch>,
    tail: Arc<Mutex<ConsoleTail>>,
    milestones: Arc<Mutex<Milestones>>,
    subscribers: Vec<manager::Subscriber>,
    cmdline: String,
    profiler: Option<Profiler>,
    started: Instant,
}

impl std::fmt::Debug for MicroVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroVm")
            .field("vcpus", &self.vcpus.len())
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

impl MicroVm {
    /// Builds the VM described by `config`, up to (not including) running it.
    pub fn build(config: &VmConfig) -> Result<MicroVm, Error> {
        let started = Instant::now();
        let (kvm, host) = check_kvm(config)?;
        // Before guest memory: a missing symbol map fails fast.
        let (parts, sink) = Parts::new(config)?;
        let memory = ram::create(config.mem_bytes(), config.shared_memory())?;
        let vm = create_vm(&kvm, &memory)?;
        setup_irqchip(&vm)?;
        let vcpus = create_vcpus(&vm, config.vcpus)?;
        let serial = attach_serial(&vm, sink, None)?;
        let pio = attach_legacy_devices(serial.clone(), &parts.exit)?;
        let mut mmio = Bus::new("mmio");
        let (virtio, nics) = attach_virtio_devices(&vm, &memory, &mut mmio, config)?;
        let kernel = loader::load_kernel(&memory, &config.kernel)?;
        let initrd = match &config.initrd {
            Some(path) => Some(loader::load_initrd(
                &memory,
                config.mem_bytes(),
                kernel.end,
                path,
            )?),
            None => None,
        };
        let cmdline = cmdline::build(&cmdline::CmdlineSpec {
            console: config.console.is_on(),
            emulated_host: host.needs_emulation_workarounds(),
            devices: virtio.cmdline(),
            extra: &config.cmdline,
        })?;
        let (cmdline_addr, cmdline_size) = loader::load_cmdline(&memory, &cmdline)?;
        let inputs = bootparams::BootInputs {
            cmdline_addr,
            cmdline_size,
            initrd,
        };
        let cr3 = write_boot_structures(&memory, config, kernel.header, &inputs)?;
        configure_vcpus(
            &kvm,
            &vcpus,
            &host,
            BootState {
                entry: kernel.entry,
                cr3,
            },
        )?;
        Ok(MicroVm::assemble(
            (kvm, vm, memory, vcpus),
            parts,
            Devices {
                serial,
                pio,
                mmio,
                virtio,
                nics,
            },
            cmdline,
            started,
        ))
    }

    /// The VM from its KVM objects, the parts every VM gets and its devices: the end of
    /// both `build` and `restore`.
    fn assemble(
        (kvm, vm, memory, vcpus): (Kvm, VmFd, GuestMemoryMmap, Vec<Vcpu>),
        parts: Parts,
        devices: Devices,
        cmdline: String,
        started: Instant,
    ) -> MicroVm {
        let (subscribers, transports) = devices.virtio.into_parts();
        MicroVm {
            kvm,
            vm,
            memory,
            vcpu_count: vcpus.len(),
            vcpus,
            serial: devices.serial,
            transports,
            nics: devices.nics,
            control: parts.control,
            pio: Arc::new(devices.pio),
            mmio: Arc::new(devices.mmio),
            exit: parts.exit,
            tail: parts.tail,
            milestones: parts.milestones,
            subscribers,
            cmdline,
            profiler: parts.profiler,
            started,
        }
    }

    /// The kernel command line the guest will get.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// The channel through which other threads ask this VM for a snapshot.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The handles that plug TAPs into its NICs while it runs, in NIC order.
    pub fn nic_plugs(&self) -> Vec<Arc<net::Plug>> {
        self.nics.clone()
    }

    /// Runs the VM to its end.
    pub fn run(mut self) -> Result<RunReport, Error> {
        vcpu::install_kick_handler()?;
        let setup_time = self.started.elapsed();
        let run_start = Instant::now();
        let sink = (self.profiler.as_ref()).map(|p| p.sink(self.vcpus.len(), run_start));
        let mut events = event_manager(&self.exit, &self.control, &self.subscribers)?;
        let exit = loop {
            let stop = Arc::new(AtomicBool::new(false));
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                exit: self.exit.clone(),
                stop: stop.clone(),
                profile: sink.clone(),
            };
            let threads = start_vcpus(std::mem::take(&mut self.vcpus), &ctx)?;
            let ticker = match start_ticker(self.profiler.as_ref(), sink.as_ref(), &threads) {
                Ok(t) => t,
                Err(e) => {
                    stop_vcpus(&stop, threads);
                    return Err(e.into());
                }
            };
            let result = event_loop(&self.exit, &self.control, &mut events);
            // The ticker signals the vCPU threads by id: stop it before they are joined.
            if let Some(t) = ticker {
                t.stop();
            }
            let stopped = stop_vcpus(&stop, threads);
            match result? {
                LoopEnd::Exit(exit) => break exit,
                LoopEnd::Snapshot(request) => {
                    self.vcpus = stopped;
                    if let Some(exit) = self.serve_snapshot(request) {
                        break exit;
                    }
                }
            }
        };
        let run_time = run_start.elapsed();
        let milestones: Vec<_> = bus::lock(&self.milestones)
            .results()
            .into_iter()
            .map(|(p, at)| (p, at.map(|t| t.saturating_duration_since(run_start))))
            .collect();
        let profile = (self.profiler.as_ref().zip(sink.as_deref()))
            .map(|(p, s)| p.finish(s, &milestones, run_time));
        Ok(RunReport {
            milestones,
            profile,
            exit,
            unhandled_pio: self.pio.unhandled_count(),
            unhandled_mmio: self.mmio.unhandled_count(),
            console_tail: bus::lock(&self.tail).contents(),
            setup_time,
            run_time,
            cmdline: self.cmdline,
        })
    }

    /// Saves a snapshot with the vCPUs stopped and answers the request; `Some` ends
    /// the VM (asked to stop after saving, or a vCPU was lost on the way).
    fn serve_snapshot(&mut self, request: SnapshotRequest) -> Option<VmExit> {
        let then = request.plan.then;
        let result = if self.profiler.is_some() {
            Err(crate::snapshot::Error::Profiling)
        } else {
            self.save(&request.plan)
        };
        if let Err(e) = &result {
            log::error!("{e}");
        }
        request.answer(result);
        if self.vcpus.len() != self.vcpu_count {
            return Some(VmExit::Error {
                vcpu: 0,
                error: crate::exit::VcpuError::Lost,
            });
        }
        (then == AfterSnapshot::Stop).then_some(VmExit::Snapshotted)
    }
}

/// A VM's devices: COM1 (also on the port bus), the port and MMIO buses, and the virtio
/// devices placed on the latter.
struct Devices {
    serial: Arc<Mutex<serial::SerialDevice>>,
    pio: Bus,
    mmio: Bus,
    virtio: manager::MmioManager,
    nics: Vec<Arc<net::Plug>>,
}

/// What a fresh VM is given besides KVM objects: the exit latch, the console's tail and
/// milestone watch, the control channel (which a console line may trigger) and the
/// profiler when the config asks for one.
struct Parts {
    exit: Arc<ExitLatch>,
    tail: Arc<Mutex<ConsoleTail>>,
    milestones: Arc<Mutex<Milestones>>,
    control: Arc<Control>,
    profiler: Option<Profiler>,
}

impl Parts {
    /// The parts, and the console sink that goes to COM1.
    fn new(config: &VmConfig) -> Result<(Parts, ConsoleSink), Error> {
        let profiler = config
            .profile
            .as_ref()
            .map(|p| Profiler::prepare(p, &config.kernel))
            .transpose()?;
        let exit = Arc::new(ExitLatch::new().map_err(Error::EventFd)?);
        let control = Control::new().map_err(Error::EventFd)?;
        let tail = Arc::new(Mutex::new(ConsoleTail::default()));
        let mut watch = Milestones::new(config.milestones.clone());
        if let Some((pattern, plan)) = &config.snapshot_on_console {
            let (c, plan) = (control.clone(), plan.clone());
            watch = watch.with_trigger((
                pattern.clone(),
                Box::new(move || {
                    // The answer is logged by the run loop; nobody waits here.
                    drop(c.request_snapshot(plan));
                }),
            ));
        }
        let milestones = Arc::new(Mutex::new(watch));
        let sink = ConsoleSink::new(console_output(&config.console)?, tail.clone())
            .with_milestones(milestones.clone());
        let parts = Parts {
            exit,
            tail,
            milestones,
            control,
            profiler,
        };
        Ok((parts, sink))
    }
}

/// Starts a thread per vCPU; on a failure stops those already started.
fn start_vcpus(vcpus: Vec<Vcpu>, ctx: &VcpuContext) -> Result<Vec<JoinHandle<Vcpu>>, Error> {
    let mut threads = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        match vcpu.start(ctx.clone()) {
            Ok(t) => threads.push(t),
            Err(e) => {
                stop_vcpus(&ctx.stop, threads);
                return Err(e.into());
            }
        }
    }
    Ok(threads)
}

/// Starts sampling the vCPU threads when the VM is profiled.
fn start_ticker(
    profiler: Option<&Profiler>,
    sink: Option<&Arc<profile::SampleSink>>,
    threads: &[JoinHandle<Vcpu>],
) -> Result<Option<Ticker>, profile::Error> {
    let (Some(profiler), Some(sink)) = (profiler, sink) else {
        return Ok(None);
    };
    let ids = threads.iter().map(|t| t.as_pthread_t()).collect();
    profiler.start(sink, ids).map(Some)
}

/// Builds and runs in one call.
pub fn boot(config: &VmConfig) -> Result<RunReport, Error> {
    MicroVm::build(config)?.run()
}

fn check_kvm(config: &VmConfig) -> Result<(Kvm, host::HostKvm), Error> {
    let kvm = host::open(&config.kvm_device)?;
    let host = host::describe(&kvm, &config.kvm_device)?;
    config.validate(host.host_mem_mib, host.max_vcpus)?;
    Ok((kvm, host))
}

fn create_vm(kvm: &Kvm, memory: &GuestMemoryMmap) -> Result<VmFd, Error> {
    let vm = kvm.create_vm().map_err(|e| Error::Kvm("create a VM", e))?;
    for (slot, region) in memory.iter().enumerate() {
        let mem_region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping of exactly `memory_size` bytes owned by
        // `memory`, which the MicroVm keeps alive for as long as the VM fd exists.
        unsafe { vm.set_user_memory_region(mem_region) }
            .map_err(|e| Error::Kvm("map guest memory", e))?;
    }
    vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
        .map_err(|e| Error::Kvm("set the TSS address", e))?;
    Ok(vm)
}

fn setup_irqchip(vm: &VmFd) -> Result<(), Error> {
    vm.create_irq_chip()
        .map_err(|e| Error::Kvm("create the in-kernel irqchip", e))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(|e| Error::Kvm("create the in-kernel PIT", e))
}

fn create_vcpus(vm: &VmFd, count: u8) -> Result<Vec<Vcpu>, Error> {
    (0..count)
        .map(|id| {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(|e| Error::Kvm("create a vCPU", e))?;
            Ok(Vcpu::new(id, fd))
        })
        .collect()
}

fn console_output(console: &Console) -> Result<Option<Box<dyn Write + Send>>, Error> {
    Ok(match console {
        Console::Off => None,
        Console::Stdout => Some(Box::new(std::io::stdout())),
        Console::File(path) => {
            let f = File::create(path).map_err(|e| Error::ConsoleFile(path.clone(), e))?;
            Some(Box::new(std::io::BufWriter::new(f)))
        }
    })
}

/// COM1, new or in a snapshot's state.
fn attach_serial(
    vm: &VmFd,
    sink: ConsoleSink,
    saved: Option<&serial::SerialState>,
) -> Result<Arc<Mutex<serial::SerialDevice>>, Error> {
    let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?;
    vm.register_irqfd(&irq, COM1_IRQ)
        .map_err(|e| Error::Kvm("route the serial IRQ", e))?;
    let device = match saved {
        Some(state) => serial::SerialDevice::from_saved(irq, sink, state)?,
        None => serial::SerialDevice::new(irq, sink),
    };
    Ok(Arc::new(Mutex::new(device)))
}

/// The port bus: COM1 and the i8042 reset line.
fn attach_legacy_devices(
    com1: Arc<Mutex<serial::SerialDevice>>,
    exit: &Arc<ExitLatch>,
) -> Result<Bus, Error> {
    let mut pio = Bus::new("pio");
    pio.insert(com1, COM1_BASE, COM1_LEN)
        .map_err(|e| Error::Device("serial console", e))?;
    let i8042 = Arc::new(Mutex::new(i8042::ResetController::new(exit.clone())));
    pio.insert(i8042, i8042::I8042_BASE, i8042::I8042_LEN)
        .map_err(|e| Error::Device("i8042 reset controller", e))?;
    Ok(pio)
}

/// The virtio-mmio devices, in a fixed order: disks (vda, vdb, ...), vsock, NICs
/// (eth0, eth1, ...), shared directories; with the NICs' plugs.
fn attach_virtio_devices(
    vm: &VmFd,
    memory: &GuestMemoryMmap,
    mmio: &mut Bus,
    config: &VmConfig,
) -> Result<(manager::MmioManager, Vec<Arc<net::Plug>>), Error> {
    let mut virtio = manager::MmioManager::new(vm.check_extension(Cap::Ioeventfd));
    for disk in &config.disks {
        let device = block::Block::open(&disk.path, disk.read_only)?;
        virtio.attach(vm, mmio, memory, Arc::new(Mutex::new(device)))?;
    }
    if let Some(v) = &config.vsock {
        let device = vsock::VsockDevice::new(v)?;
        virtio.attach(vm, mmio, memory, Arc::new(Mutex::new(device)))?;
    }
    let mut nics = Vec::with_capacity(config.nets.len());
    for nic in &config.nets {
        let device = net::Net::new(nic)?;
        nics.push(device.plug());
        virtio.attach(vm, mmio, memory, Arc::new(Mutex::new(device)))?;
    }
    for share in &config.fs {
        let device = fs::Fs::new(share)?;
        virtio.attach(vm, mmio, memory, Arc::new(Mutex::new(device)))?;
    }
    Ok((virtio, nics))
}

fn write_boot_structures(
    memory: &GuestMemoryMmap,
    config: &VmConfig,
    header: Option<linux_loader::loader::bootparam::setup_header>,
    inputs: &bootparams::BootInputs,
) -> Result<u64, Error> {
    let e820 = bootparams::e820_map(config.mem_bytes())?;
    let params = bootparams::build(header, inputs, &e820)?;
    vm_memory::Bytes::write_obj(memory, params, GuestAddress(layout::ZERO_PAGE_START))
        .map_err(Error::ZeroPage)?;
    mptable::write(memory, config.vcpus)?;
    regs::write_descriptor_tables(memory)?;
    Ok(paging::write(memory)?)
}

fn configure_vcpus(
    kvm: &Kvm,
    vcpus: &[Vcpu],
    host: &host::HostKvm,
    boot: BootState,
) -> Result<(), Error> {
    for (id, vcpu) in vcpus.iter().enumerate() {
        let policy = CpuidPolicy {
            vcpu_id: id as u8,
            vcpu_count: vcpus.len() as u8,
            emulation_safe: host.needs_emulation_workarounds(),
        };
        vcpu.configure(kvm, &policy, (id == 0).then_some(boot))?;
    }
    Ok(())
}

/// Wakes the event loop when the exit latch fires or a control request arrives.
struct Waker {
    exit: Arc<ExitLatch>,
    control: Arc<Control>,
}

impl MutEventSubscriber for Waker {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.exit.event().read();
        let _ = self.control.event().read();
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.exit.event(), self.control.event()] {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("cannot watch a VMM event: {e:?}");
            }
        }
    }
}

type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// The VMM's one event manager: the waker and the device backends (block, net, vsock),
/// which register their fds through their subscribers. It lives as long as the VM, so
/// devices keep their registrations across a snapshot.
fn event_manager(
    exit: &Arc<ExitLatch>,
    control: &Arc<Control>,
    subscribers: &[manager::Subscriber],
) -> Result<Manager, Error> {
    let mut manager: Manager =
        EventManager::new().map_err(|e| Error::EventLoop(format!("{e:?}")))?;
    manager.add_subscriber(Arc::new(Mutex::new(Waker {
        exit: exit.clone(),
        control: control.clone(),
    })));
    for s in subscribers {
        manager.add_subscriber(s.clone());
    }
    Ok(manager)
}

/// Why the event loop returned.
enum LoopEnd {
    /// The VM ended.
    Exit(VmExit),
    /// A snapshot was requested: the vCPUs must stop first.
    Snapshot(SnapshotRequest),
}

/// Runs the device backends until the VM ends or a snapshot is requested.
fn event_loop(
    exit: &Arc<ExitLatch>,
    control: &Control,
    manager: &mut Manager,
) -> Result<LoopEnd, Error> {
    loop {
        if let Some(outcome) = exit.outcome() {
            return Ok(LoopEnd::Exit(outcome));
        }
        if let Some(request) = control.take() {
            return Ok(LoopEnd::Snapshot(request));
        }
        manager
            .run()
            .map_err(|e| Error::EventLoop(format!("{e:?}")))?;
    }
}

/// Stops every vCPU thread: sets the flag, then kicks each one out of `KVM_RUN` with a
/// signal until it has finished (a kick can land just before `KVM_RUN`, so repeat).
/// Returns the vCPUs whose threads stopped.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<Vcpu>>) -> Vec<Vcpu> {
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stopped = Vec::with_capacity(threads.len());
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            if let Err(e) = t.kill(vcpu::kick_signal()) {
                log::debug!("cannot kick a vCPU thread: {e}");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if !t.is_finished() {
            log::error!("a vCPU thread did not stop; leaving it behind");
        } else if let Ok(vcpu) = t.join() {
            stopped.push(vcpu);
        }
    }
    stopped
}
