//! husk's simulated guest driver: a small split-virtqueue driver that lays out the
//! descriptor table and the available/used rings in real guest memory, talks to a
//! device only through its virtio-mmio registers (status handshake, features, queue
//! setup, QueueNotify, InterruptStatus/ACK), and runs the VMM's real event loop
//! (event-manager with the device as a subscriber) until the device answers.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::BusDevice;
use vmm::devices::virtio::mmio::{MmioTransport, reg, status};
use vmm::devices::virtio::{Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;

/// Descriptor flags.
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

/// Guest memory size and where the queue structures live.
pub const MEM_SIZE: usize = 64 << 20;
pub const DESC_TABLE: u64 = 0x1000;
pub const AVAIL_RING: u64 = 0x3000;
pub const USED_RING: u64 = 0x4000;
/// First address free for request buffers.
pub const BUFFERS: u64 = 0x10_0000;

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// One buffer of a chain: guest address, length, device-writable or not.
#[derive(Debug, Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

impl Buf {
    pub fn r(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            write: false,
        }
    }
    pub fn w(addr: u64, len: u32) -> Buf {
        Buf {
            addr,
            len,
            write: true,
        }
    }
}

/// A raw descriptor, written as-is (hostile chains).
#[derive(Debug, Clone, Copy)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

pub struct Driver {
    pub mem: GuestMemoryMmap,
    pub transport: MmioTransport,
    pub interrupt: Arc<Interrupt>,
    events: EventManager<Subscriber>,
    pub queue_size: u16,
    avail_idx: u16,
    last_used: u16,
    next_desc: u16,
}

impl Driver {
    /// A driver for `device` in fresh guest memory; nothing negotiated yet.
    pub fn new<D: VirtioDevice + MutEventSubscriber + 'static>(device: Arc<Mutex<D>>) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let queues = device.lock().unwrap().queue_max_sizes().len();
        let notify = (0..queues)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let transport =
            MmioTransport::new(mem.clone(), device.clone(), interrupt.clone(), notify).unwrap();
        let mut events: EventManager<Subscriber> = EventManager::new().unwrap();
        events.add_subscriber(device);
        Driver {
            mem,
            transport,
            interrupt,
            events,
            queue_size: 0,
            avail_idx: 0,
            last_used: 0,
            next_desc: 0,
        }
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write(&mut self, offset: u64, v: u32) {
        self.transport.write(offset, &v.to_le_bytes());
    }

    pub fn device_features(&mut self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read(reg::DEVICE_FEATURES);
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.read(reg::DEVICE_FEATURES);
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
    pub fn negotiate(&mut self, features: u64) -> u32 {
        self.write(reg::STATUS, status::ACKNOWLEDGE);
        self.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.write(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.read(reg::STATUS)
    }

    /// Sets up queue 0 with `size` entries at the fixed addresses.
    pub fn setup_queue(&mut self, size: u16) {
        self.write(reg::QUEUE_SEL, 0);
        assert!(u32::from(size) <= self.read(reg::QUEUE_NUM_MAX));
        self.write(reg::QUEUE_NUM, u32::from(size));
        for (lo, addr) in [
            (reg::QUEUE_DESC_LOW, DESC_TABLE),
            (reg::QUEUE_AVAIL_LOW, AVAIL_RING),
            (reg::QUEUE_USED_LOW, USED_RING),
        ] {
            self.write(lo, addr as u32);
            self.write(lo + 4, (addr >> 32) as u32);
        }
        self.write(reg::QUEUE_READY, 1);
        self.queue_size = size;
        self.avail_idx = 0;
        self.last_used = 0;
        self.next_desc = 0;
        // Fresh rings: the driver zeroes them.
        self.mem
            .write_slice(&[0u8; 0x2000], GuestAddress(AVAIL_RING))
            .unwrap();
    }

    /// The whole bring-up with VERSION_1 plus `extra` features; returns the status.
    pub fn init(&mut self, extra: u64, size: u16) -> u32 {
        let st = self.negotiate((1 << VIRTIO_F_VERSION_1) | extra);
        assert_ne!(st & status::FEATURES_OK, 0, "FEATURES_OK refused");
        self.setup_queue(size);
        self.write(reg::STATUS, st | status::DRIVER_OK);
        self.run_events();
        self.read(reg::STATUS)
    }

    /// Writes descriptor `index`.
    pub fn put_desc(&mut self, index: u16, d: RawDesc) {
        let a = DESC_TABLE + u64::from(index) * 16;
        self.mem.write_obj(d.addr, GuestAddress(a)).unwrap();
        self.mem.write_obj(d.len, GuestAddress(a + 8)).unwrap();
        self.mem.write_obj(d.flags, GuestAddress(a + 12)).unwrap();
        self.mem.write_obj(d.next, GuestAddress(a + 14)).unwrap();
    }

    /// Makes `head` available (does not notify).
    pub fn publish(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.queue_size);
        self.mem
            .write_obj(head, GuestAddress(AVAIL_RING + 4 + slot * 2))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL_RING + 2))
            .unwrap();
    }

    /// Writes `bufs` as a linked chain into free descriptors and publishes it.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        assert!(bufs.len() <= usize::from(self.queue_size));
        let n = bufs.len() as u16;
        if self.next_desc + n > self.queue_size {
            self.next_desc = 0;
        }
        let head = self.next_desc;
        for (i, b) in bufs.iter().enumerate() {
            let idx = head + i as u16;
            let last = i + 1 == bufs.len();
            self.put_desc(
                idx,
                RawDesc {
                    addr: b.addr,
                    len: b.len,
                    flags: if b.write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT },
                    next: if last { 0 } else { idx + 1 },
                },
            );
        }
        self.next_desc += n;
        self.publish(head);
        head
    }

    /// QueueNotify for queue 0 (the transport writes the notify eventfd).
    pub fn kick(&mut self) {
        self.write(reg::QUEUE_NOTIFY, 0);
    }

    /// One pass of the event loop over whatever is ready.
    pub fn run_events(&mut self) {
        self.events.run_with_timeout(0).unwrap();
    }

    /// The next used element, if the device produced one.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let idx: u16 = self.mem.read_obj(GuestAddress(USED_RING + 2)).unwrap();
        if idx == self.last_used {
            return None;
        }
        let slot = u64::from(self.last_used % self.queue_size);
        let at = USED_RING + 4 + slot * 8;
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Runs the event loop until a used element appears (a hang guard, not a timer).
    pub fn wait_used(&mut self) -> (u32, u32) {
        for _ in 0..1000 {
            if let Some(u) = self.pop_used() {
                return u;
            }
            self.events.run_with_timeout(100).unwrap();
        }
        panic!("the device never returned the chain");
    }

    /// Used elements published so far, as the device's used index says.
    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED_RING + 2)).unwrap()
    }
}
