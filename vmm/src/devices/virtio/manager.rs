//! The virtio-mmio device manager: hands every virtio device a 4 KiB register window in
//! the 32-bit MMIO hole and its own IOAPIC pin, wires QueueNotify writes to ioeventfds
//! (datamatch = queue index; without `KVM_CAP_IOEVENTFD` the transport writes the same
//! eventfds on the MMIO exit) and the device interrupt to an irqfd, puts the transport
//! on the MMIO bus, and collects the `virtio_mmio.device=` command-line entries and the
//! event-loop subscribers of the devices it placed.

use std::sync::{Arc, Mutex};

use event_manager::MutEventSubscriber;
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::mmio::{self, MMIO_LEN, MmioTransport};
use super::{Interrupt, VirtioDevice};
use crate::arch::x86_64::layout::{IOAPIC_PINS, MMIO_HOLE_START};
use crate::devices::{Bus, bus};

/// First device window: the start of the MMIO hole.
pub const SLOT_BASE: u64 = MMIO_HOLE_START;
/// Size of one device window.
pub const SLOT_SIZE: u64 = MMIO_LEN;
/// First IOAPIC pin for virtio devices (0-4 are the PIT, keyboard, cascade and COM1/2).
pub const FIRST_IRQ: u32 = 5;
/// Last IOAPIC pin.
pub const LAST_IRQ: u32 = IOAPIC_PINS as u32 - 1;
/// Most virtio-mmio devices one microVM can have: one interrupt line each.
pub const MAX_DEVICES: usize = (LAST_IRQ - FIRST_IRQ + 1) as usize;

/// A device's event-loop side.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Errors placing a device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every interrupt line is taken.
    #[error("too many virtio devices: a microVM has {MAX_DEVICES} interrupt lines for them")]
    IrqsExhausted,
    /// An eventfd could not be created.
    #[error("cannot create an eventfd for virtio {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    /// KVM refused the irqfd.
    #[error("KVM refused to route IRQ {1} of virtio {0}")]
    Irqfd(&'static str, u32, #[source] kvm_ioctls::Error),
    /// KVM refused the ioeventfd.
    #[error("KVM refused the queue notification eventfd of virtio {0}")]
    Ioeventfd(&'static str, #[source] kvm_ioctls::Error),
    /// The transport refused the device.
    #[error(transparent)]
    Transport(#[from] mmio::Error),
    /// The window overlaps another device.
    #[error("cannot put virtio {0} on the MMIO bus")]
    Bus(&'static str, #[source] bus::Error),
}

/// Where a device went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Guest-physical base of its register window.
    pub base: u64,
    /// Its IOAPIC pin (GSI).
    pub irq: u32,
}

impl Placement {
    /// The kernel parameter announcing the device.
    pub fn cmdline(&self) -> String {
        format!("virtio_mmio.device=4K@{:#x}:{}", self.base, self.irq)
    }
}

/// Places virtio-mmio devices.
pub struct MmioManager {
    placed: usize,
    ioeventfd: bool,
    cmdline: Vec<String>,
    subscribers: Vec<Subscriber>,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
}

impl std::fmt::Debug for MmioManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioManager")
            .field("placed", &self.placed)
            .field("ioeventfd", &self.ioeventfd)
            .field("cmdline", &self.cmdline)
            .finish()
    }
}

impl MmioManager {
    /// A manager; `ioeventfd` says whether KVM has `KVM_CAP_IOEVENTFD`.
    pub fn new(ioeventfd: bool) -> Self {
        MmioManager {
            placed: 0,
            ioeventfd,
            cmdline: Vec::new(),
            subscribers: Vec::new(),
            transports: Vec::new(),
        }
    }

    /// Takes the next window and interrupt line.
    pub fn allocate(&mut self) -> Result<Placement, Error> {
        if self.placed >= MAX_DEVICES {
            return Err(Error::IrqsExhausted);
        }
        let n = self.placed;
        self.placed += 1;
        Ok(Placement {
            base: SLOT_BASE + n as u64 * SLOT_SIZE,
            irq: FIRST_IRQ + n as u32,
        })
    }

    /// Places `device`: window, interrupt, notifications, bus, command line, event loop.
    pub fn attach<D>(
        &mut self,
        vm: &VmFd,
        mmio_bus: &mut Bus,
        memory: &GuestMemoryMmap,
        device: Arc<Mutex<D>>,
    ) -> Result<Placement, Error>
    where
        D: VirtioDevice + MutEventSubscriber + 'static,
    {
        let (name, queues) = {
            let d = bus::lock(&device);
            (d.name(), d.queue_max_sizes().len())
        };
        let at = self.allocate()?;
        let new_fd = || EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::EventFd(name, e));
        let irqfd = new_fd()?;
        vm.register_irqfd(&irqfd, at.irq)
            .map_err(|e| Error::Irqfd(name, at.irq, e))?;
        let mut notify = Vec::with_capacity(queues);
        for index in 0..queues {
            let fd = new_fd()?;
            if self.ioeventfd {
                let addr = IoEventAddress::Mmio(at.base + mmio::reg::QUEUE_NOTIFY);
                vm.register_ioevent(&fd, &addr, index as u32)
                    .map_err(|e| Error::Ioeventfd(name, e))?;
            }
            notify.push(fd);
        }
        let transport = MmioTransport::new(
            memory.clone(),
            device.clone(),
            Arc::new(Interrupt::new(irqfd)),
            notify,
        )?
        .with_base(at.base);
        let transport = Arc::new(Mutex::new(transport));
        mmio_bus
            .insert(transport.clone(), at.base, SLOT_SIZE)
            .map_err(|e| Error::Bus(name, e))?;
        self.transports.push(transport);
        self.cmdline.push(at.cmdline());
        self.subscribers.push(device);
        log::debug!(
            "virtio {name} at {:#x} IRQ {} (ioeventfd: {})",
            at.base,
            at.irq,
            self.ioeventfd
        );
        Ok(at)
    }

    /// The `virtio_mmio.device=` parameters, in attach order.
    pub fn cmdline(&self) -> &[String] {
        &self.cmdline
    }

    /// The transports in attach order (snapshots save and restore them).
    pub fn transports(&self) -> &[Arc<Mutex<MmioTransport>>] {
        &self.transports
    }

    /// The devices' event-loop sides and the transports, for the VMM.
    pub fn into_parts(self) -> (Vec<Subscriber>, Vec<Arc<Mutex<MmioTransport>>>) {
        (self.subscribers, self.transports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_irqs_are_handed_out_in_order_until_the_pins_run_out() {
        let mut m = MmioManager::new(true);
        let first = m.allocate().unwrap();
        assert_eq!(
            first,
            Placement {
                base: 0xc000_0000,
                irq: 5
            }
        );
        assert_eq!(first.cmdline(), "virtio_mmio.device=4K@0xc0000000:5");
        let second = m.allocate().unwrap();
        assert_eq!(second.base, 0xc000_1000);
        assert_eq!(second.irq, 6);
        for _ in 2..MAX_DEVICES {
            let p = m.allocate().unwrap();
            assert!(p.irq <= LAST_IRQ);
        }
        let e = m.allocate().unwrap_err();
        assert!(matches!(e, Error::IrqsExhausted));
        assert_eq!(
            e.to_string(),
            "too many virtio devices: a microVM has 19 interrupt lines for them"
        );
    }
}
