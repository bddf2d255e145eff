//! virtio devices: the one `VirtioDevice` trait every device implements, the interrupt
//! a device raises, and the virtio-mmio transport that does feature negotiation, status,
//! reset and queue setup once for all of them. Each device lives in its own folder with
//! the same shape: `<dev>/mod.rs` (constants, config space, errors) and `<dev>/device.rs`
//! (the `VirtioDevice` implementation); backends get their own files next to them.

pub mod block;
pub mod fs;
pub mod lifecycle;
pub mod manager;
pub mod mmio;
pub mod net;
pub mod vsock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// virtio device IDs (virtio 1.x, 5 "Device Types").
pub mod device_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Socket device.
    pub const VSOCK: u32 = 19;
    /// File system device (virtio-fs).
    pub const FS: u32 = 26;
}

/// Feature bit every modern (virtio 1.x) device offers.
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Interrupt status bit: a used ring was updated.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration space changed.
pub const INT_CONFIG: u32 = 2;

/// A device's `read_config` over its configuration space `config`: the bytes at
/// `offset`, zeros past its end.
pub fn read_config_space(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

/// How a device interrupts the guest: the transport's InterruptStatus register plus
/// the VM's interrupt line (an irqfd registered with KVM).
///
/// A vhost-user backend raises the line itself (it writes the irqfd) and cannot set the
/// status register, so for such a device the register always reports a used-ring
/// update ([`Interrupt::raised_by_backend`], Firecracker's way): the guest then looks at
/// every queue, which costs nothing for queues with no new used entries.
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    by_backend: AtomicBool,
}

impl Interrupt {
    /// An interrupt raised through `irqfd` (already routed to the device's GSI).
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irqfd,
            by_backend: AtomicBool::new(false),
        }
    }

    /// From now on a backend outside the VMM raises this interrupt (see the type's doc).
    pub fn raised_by_backend(&self) {
        self.by_backend.store(true, Ordering::SeqCst);
    }

    /// Tells the guest a used ring changed.
    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.signal(INT_VRING)
    }

    /// Tells the guest the configuration space changed.
    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.signal(INT_CONFIG)
    }

    fn signal(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        let bits = self.status.load(Ordering::SeqCst);
        match self.by_backend.load(Ordering::SeqCst) {
            true => bits | INT_VRING,
            false => bits,
        }
    }

    /// Sets the InterruptStatus register as a snapshot recorded it.
    pub fn restore_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }

    /// The InterruptACK register: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The eventfd the interrupt is raised through (tests watch it).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// One queue the driver set up, handed to the device at activation.
#[derive(Debug)]
pub struct ActiveQueue {
    /// The split virtqueue, addresses and size as the driver configured them.
    pub queue: virtio_queue::Queue,
    /// Signalled when the driver notifies this queue (an ioeventfd registered with KVM,
    /// or written by the transport on a QueueNotify exit where ioeventfd is missing).
    pub notify: EventFd,
}

/// Everything a device gets when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct Activation {
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Queues in index order, one per entry of `queue_max_sizes`.
    pub queues: Vec<ActiveQueue>,
    /// Features the driver accepted.
    pub acked_features: u64,
}

/// Why a device refused to activate (the transport then sets DEVICE_NEEDS_RESET).
#[derive(Debug, thiserror::Error)]
#[error("virtio {device} cannot activate: {reason}")]
pub struct ActivateError {
    /// The device's name.
    pub device: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// A virtio device model, independent of its transport.
pub trait VirtioDevice: Send {
    /// A short name for logs and errors ("block", "vsock").
    fn name(&self) -> &'static str;
    /// The virtio device ID (`device_id::*`).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (must include `VIRTIO_F_VERSION_1`).
    fn avail_features(&self) -> u64;
    /// Reads the device configuration space at `offset`; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space; writes to read-only fields are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the driver's queues (called once per DRIVER_OK).
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops the device and returns it to its pre-activation state (driver wrote 0 to
    /// Status). Returns the queue eventfds it got at activation (none if it was not
    /// active): the transport keeps them, still registered with KVM, for the next
    /// activation, so their fd numbers stay valid for the event loop to unwatch them.
    /// Called on a vCPU thread: wake the event loop rather than touching epoll here.
    fn reset(&mut self) -> Vec<EventFd>;
    /// The state of the queues the device holds while active (none when inactive), for a
    /// snapshot taken while the vCPUs are stopped.
    fn queue_states(&self) -> Vec<virtio_queue::QueueState>;
    /// Whether the device links the VM to the outside world right now (open
    /// connections). A snapshot records it; a restore calls [`VirtioDevice::restored`]
    /// only for a device that had such links.
    fn has_connections(&self) -> bool {
        false
    }
    /// Called once after a snapshot's transport state re-activated the device, when the
    /// saved device had connections: they are gone; tell the driver.
    fn restored(&mut self) {}
}
