//! A simulated virtio-vsock guest driver: brings the device up through its real
//! virtio-mmio registers (three queues), keeps receive buffers posted, transmits packets
//! as two-descriptor chains (header, payload), and runs the VMM's real event loop
//! (event-manager, the device as subscriber) on the calling thread between steps.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::BusDevice;
use vmm::devices::virtio::mmio::{MmioTransport, reg, status};
use vmm::devices::virtio::vsock::packet::Header;
use vmm::devices::virtio::vsock::{HDR_SIZE, HOST_CID, TYPE_STREAM, VsockDevice};
use vmm::devices::virtio::{Interrupt, VIRTIO_F_VERSION_1};
use vmm_sys_util::eventfd::EventFd;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

pub const MEM_SIZE: usize = 64 << 20;
pub const QSIZE: u16 = 256;
/// Rings of queue q at RINGS + q * 0x4000: descriptors, avail (+0x1000), used (+0x2000).
const RINGS: u64 = 0x10000;
const RX_AREA: u64 = 0x10_0000;
const TX_AREA: u64 = 0x100_0000;
/// Each transmit slot holds a header and up to 64 KiB + a page of payload.
pub const TX_SLOT: u64 = 0x11000;
pub const TX_SLOTS: usize = 64;
pub const GUEST_CID: u64 = 3;

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// One split virtqueue as the driver sees it.
struct Ring {
    base: u64,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
}

impl Ring {
    fn new(q: u64) -> Ring {
        Ring {
            base: RINGS + q * 0x4000,
            avail_idx: 0,
            last_used: 0,
            free: (0..QSIZE).rev().collect(),
            chains: HashMap::new(),
        }
    }
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail(&self) -> u64 {
        self.base + 0x1000
    }
    fn used(&self) -> u64 {
        self.base + 0x2000
    }
}

/// A descriptor: address, length, flags (F_WRITE for device-writable).
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

pub struct Guest {
    pub mem: GuestMemoryMmap,
    pub transport: MmioTransport,
    pub device: Arc<Mutex<VsockDevice>>,
    events: EventManager<Subscriber>,
    rings: Vec<Ring>,
    rx_buf_size: u32,
    rx_addr: HashMap<u16, u64>,
    rx_raw: Vec<u16>,
    tx_free: Vec<u64>,
    tx_addr: HashMap<u16, u64>,
    /// Packets received and not yet taken.
    pub inbox: VecDeque<(Header, Vec<u8>)>,
    /// Used length 0 answers on the rx queue (buffers the device rejected).
    pub rx_rejected: usize,
    /// The guest's CID (the device's): every packet from the device must be addressed to it.
    pub cid: u64,
}

pub fn hdr(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 << 10,
        fwd_cnt: 0,
    }
}

impl Guest {
    /// Fresh guest memory, the device behind a transport, the driver brought up with
    /// `rx_bufs` receive buffers of `rx_buf_size` bytes posted.
    pub fn new(device: VsockDevice, rx_buf_size: u32, rx_bufs: usize) -> Guest {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let cid = device.guest_cid();
        let device = Arc::new(Mutex::new(device));
        let notify = (0..3)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let transport = MmioTransport::new(mem.clone(), device.clone(), interrupt, notify).unwrap();
        let mut events: EventManager<Subscriber> = EventManager::new().unwrap();
        events.add_subscriber(device.clone());
        let mut g = Guest {
            mem,
            transport,
            device,
            events,
            rings: Vec::new(),
            rx_buf_size,
            rx_addr: HashMap::new(),
            rx_raw: Vec::new(),
            tx_free: Vec::new(),
            tx_addr: HashMap::new(),
            inbox: VecDeque::new(),
            rx_rejected: 0,
            cid,
        };
        g.bring_up(rx_bufs);
        g
    }

    pub fn read_reg(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write_reg(&mut self, offset: u64, v: u32) {
        self.transport.write(offset, &v.to_le_bytes());
    }

    /// Status handshake, VERSION_1, three queues, DRIVER_OK, receive buffers.
    pub fn bring_up(&mut self, rx_bufs: usize) {
        self.write_reg(reg::STATUS, status::ACKNOWLEDGE);
        self.write_reg(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write_reg(reg::DRIVER_FEATURES_SEL, 1);
        self.write_reg(reg::DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32));
        self.write_reg(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.rings = (0..3).map(Ring::new).collect();
        let zero = vec![0u8; 0xc000];
        self.mem.write_slice(&zero, GuestAddress(RINGS)).unwrap();
        for q in 0..3u32 {
            self.write_reg(reg::QUEUE_SEL, q);
            self.write_reg(reg::QUEUE_NUM, u32::from(QSIZE));
            let r = &self.rings[q as usize];
            let (d, a, u) = (r.desc(), r.avail(), r.used());
            for (lo, addr) in [
                (reg::QUEUE_DESC_LOW, d),
                (reg::QUEUE_AVAIL_LOW, a),
                (reg::QUEUE_USED_LOW, u),
            ] {
                self.write_reg(lo, addr as u32);
                self.write_reg(lo + 4, 0);
            }
            self.write_reg(reg::QUEUE_READY, 1);
        }
        let st = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        self.write_reg(reg::STATUS, st);
        assert_eq!(
            self.read_reg(reg::STATUS),
            st,
            "the device did not activate"
        );
        self.rx_addr.clear();
        self.tx_addr.clear();
        self.tx_free = (0..TX_SLOTS as u64)
            .map(|i| TX_AREA + i * TX_SLOT)
            .collect();
        for i in 0..rx_bufs as u64 {
            let addr = RX_AREA + i * u64::from(self.rx_buf_size);
            self.post_rx(addr);
        }
        self.kick(0);
        self.step(0);
    }

    /// The driver writes 0 to Status (device reset), then brings the device up again.
    pub fn reset_and_bring_up(&mut self, rx_bufs: usize) {
        self.write_reg(reg::STATUS, 0);
        self.step(0);
        self.inbox.clear();
        self.bring_up(rx_bufs);
    }

    /// Writes `descs` as a chain into queue `q` and publishes it (no notify).
    pub fn add_chain(&mut self, q: usize, descs: &[Desc]) -> u16 {
        let ring = &mut self.rings[q];
        let ids: Vec<u16> = (0..descs.len()).map(|_| ring.free.pop().unwrap()).collect();
        for (i, d) in descs.iter().enumerate() {
            let at = ring.desc() + u64::from(ids[i]) * 16;
            let last = i + 1 == descs.len();
            let flags = if d.write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            let next = if last { 0 } else { ids[i + 1] };
            self.mem.write_obj(d.addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(d.len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        let head = ids[0];
        ring.chains.insert(head, ids);
        let slot = u64::from(ring.avail_idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(ring.avail() + 4 + slot * 2))
            .unwrap();
        ring.avail_idx = ring.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(ring.avail_idx, GuestAddress(ring.avail() + 2))
            .unwrap();
        head
    }

    /// QueueNotify for queue `q`, through the transport.
    pub fn kick(&mut self, q: u32) {
        self.write_reg(reg::QUEUE_NOTIFY, q);
    }

    fn pop_used(&mut self, q: usize) -> Option<(u16, u32)> {
        let ring = &mut self.rings[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(ring.used() + 2)).unwrap();
        if idx == ring.last_used {
            return None;
        }
        let at = ring.used() + 4 + u64::from(ring.last_used % QSIZE) * 8;
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        ring.last_used = ring.last_used.wrapping_add(1);
        let head = id as u16;
        let ids = ring
            .chains
            .remove(&head)
            .expect("the device used an unknown head");
        ring.free.extend(ids);
        Some((head, len))
    }

    fn post_rx(&mut self, addr: u64) {
        let head = self.add_chain(
            0,
            &[Desc {
                addr,
                len: self.rx_buf_size,
                write: true,
            }],
        );
        self.rx_addr.insert(head, addr);
    }

    /// Transmits `h` (with `len` set from `payload`); false if no transmit slot is free.
    pub fn send(&mut self, mut h: Header, payload: &[u8]) -> bool {
        h.len = payload.len() as u32;
        let Some(addr) = self.tx_free.pop() else {
            return false;
        };
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(payload, GuestAddress(addr + HDR_SIZE as u64))
            .unwrap();
        let mut descs = vec![Desc {
            addr,
            len: HDR_SIZE as u32,
            write: false,
        }];
        if !payload.is_empty() {
            descs.push(Desc {
                addr: addr + HDR_SIZE as u64,
                len: payload.len() as u32,
                write: false,
            });
        }
        let head = self.add_chain(1, &descs);
        self.tx_addr.insert(head, addr);
        self.kick(1);
        true
    }

    /// Posts a raw receive chain (hostile input) ahead of nothing; not reposted.
    pub fn add_rx_raw(&mut self, descs: &[Desc]) {
        let head = self.add_chain(0, descs);
        self.rx_raw.push(head);
        self.kick(0);
    }

    pub fn mem_write(&self, addr: u64, data: &[u8]) {
        self.mem.write_slice(data, GuestAddress(addr)).unwrap();
    }

    /// Transmits a raw chain (hostile input); its buffers are the caller's.
    pub fn send_raw(&mut self, descs: &[Desc]) {
        self.add_chain(1, descs);
        self.kick(1);
    }

    /// One event-loop pass (waiting up to `timeout_ms`), then harvests both used rings.
    pub fn step(&mut self, timeout_ms: i32) {
        self.events.run_with_timeout(timeout_ms).unwrap();
        while let Some((head, _)) = self.pop_used(1) {
            if let Some(addr) = self.tx_addr.remove(&head) {
                self.tx_free.push(addr);
            }
        }
        let mut reposted = false;
        while let Some((head, len)) = self.pop_used(0) {
            if let Some(i) = self.rx_raw.iter().position(|&h| h == head) {
                self.rx_raw.swap_remove(i);
                self.rx_rejected += usize::from((len as usize) < HDR_SIZE);
                continue;
            }
            let Some(addr) = self.rx_addr.remove(&head) else {
                continue;
            };
            if len as usize >= HDR_SIZE {
                let mut raw = [0u8; HDR_SIZE];
                self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
                let h = Header::from_bytes(&raw);
                assert_eq!(len as usize, HDR_SIZE + h.len as usize, "used length");
                let mut payload = vec![0u8; h.len as usize];
                self.mem
                    .read_slice(&mut payload, GuestAddress(addr + HDR_SIZE as u64))
                    .unwrap();
                assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, self.cid), "{h:?}");
                self.inbox.push_back((h, payload));
            } else {
                self.rx_rejected += 1;
            }
            self.post_rx(addr);
            reposted = true;
        }
        if reposted {
            self.kick(0);
        }
    }

    /// Steps until a packet arrives (a hang guard of ~20 s, not a timing check).
    pub fn recv(&mut self) -> (Header, Vec<u8>) {
        for _ in 0..2000 {
            if let Some(p) = self.inbox.pop_front() {
                return p;
            }
            self.step(10);
        }
        panic!("no packet from the device");
    }

    /// Steps until `cond` holds (hang guard as for `recv`).
    pub fn step_until(&mut self, what: &str, mut cond: impl FnMut(&mut Guest) -> bool) {
        for _ in 0..2000 {
            if cond(self) {
                return;
            }
            self.step(10);
        }
        panic!("timed out waiting for {what}");
    }

    pub fn connections(&self) -> usize {
        self.device.lock().unwrap().connection_count()
    }
}
