//! A simulated virtio-net guest driver through the real virtio-mmio registers (two
//! queues), a TAP in a network namespace of the calling thread's own, and hand-built
//! UDP and TCP frames: shared by the virtio-net tests and its benchmark.

#![allow(dead_code)] // each test binary uses part of it

use std::process::Command;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::BusDevice;
use vmm::devices::virtio::mmio::{MmioTransport, reg, status};
use vmm::devices::virtio::net::{HDR_LEN, Net, NetConfig, features};
use vmm::devices::virtio::{Interrupt, VIRTIO_F_VERSION_1, device_id};
use vmm_sys_util::eventfd::EventFd;

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const QSIZE: u16 = 64;
pub const MEM_SIZE: usize = 16 << 20;
pub const RX_AREA: u64 = 0x10_0000;
pub const TX_AREA: u64 = 0x80_0000;
pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const GUEST_IP: [u8; 4] = [10, 9, 0, 2];
pub const HOST_IP: [u8; 4] = [10, 9, 0, 1];

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// One split virtqueue as the driver sees it: rings at `base`, descriptors used in order.
struct Ring {
    base: u64,
    avail_idx: u16,
    last_used: u16,
    next_desc: u16,
}

impl Ring {
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

pub struct Guest {
    pub mem: GuestMemoryMmap,
    transport: MmioTransport,
    events: EventManager<Subscriber>,
    rings: Vec<Ring>,
    pub device: Arc<Mutex<Net>>,
}

impl Guest {
    pub fn new(device: Net) -> Guest {
        let device = Arc::new(Mutex::new(device));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let notify = (0..2)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect();
        let interrupt = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let transport = MmioTransport::new(mem.clone(), device.clone(), interrupt, notify).unwrap();
        let mut events: EventManager<Subscriber> = EventManager::new().unwrap();
        events.add_subscriber(device.clone());
        let rings = (0..2u64)
            .map(|q| Ring {
                base: 0x1_0000 + q * 0x4000,
                avail_idx: 0,
                last_used: 0,
                next_desc: 0,
            })
            .collect();
        Guest {
            mem,
            transport,
            events,
            rings,
            device,
        }
    }

    pub fn read_reg(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write_reg(&mut self, offset: u64, v: u32) {
        self.transport.write(offset, &v.to_le_bytes());
    }

    pub fn config(&mut self) -> [u8; 8] {
        let mut c = [0u8; 8];
        for (i, b) in c.iter_mut().enumerate() {
            let mut one = [0u8; 1];
            self.transport.read(reg::CONFIG + i as u64, &mut one);
            *b = one[0];
        }
        c
    }

    /// The whole bring-up with VERSION_1 + MAC + STATUS.
    pub fn bring_up(&mut self) {
        self.bring_up_with(0);
    }

    /// The whole bring-up with VERSION_1 + MAC + STATUS and the `extra` feature bits.
    pub fn bring_up_with(&mut self, extra: u64) {
        assert_eq!(self.read_reg(reg::DEVICE_ID), device_id::NET);
        self.write_reg(reg::STATUS, status::ACKNOWLEDGE);
        self.write_reg(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let features =
            extra | (1u64 << VIRTIO_F_VERSION_1) | (1 << features::MAC) | (1 << features::STATUS);
        for sel in 0..2u32 {
            self.write_reg(reg::DRIVER_FEATURES_SEL, sel);
            self.write_reg(reg::DRIVER_FEATURES, (features >> (32 * sel)) as u32);
        }
        let st = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.write_reg(reg::STATUS, st);
        assert_ne!(self.read_reg(reg::STATUS) & status::FEATURES_OK, 0);
        for q in 0..2usize {
            self.write_reg(reg::QUEUE_SEL, q as u32);
            self.write_reg(reg::QUEUE_NUM, u32::from(QSIZE));
            let r = &self.rings[q];
            let addrs = [
                (reg::QUEUE_DESC_LOW, r.desc()),
                (reg::QUEUE_AVAIL_LOW, r.avail()),
                (reg::QUEUE_USED_LOW, r.used()),
            ];
            for (lo, addr) in addrs {
                self.write_reg(lo, addr as u32);
                self.write_reg(lo + 4, (addr >> 32) as u32);
            }
            self.write_reg(reg::QUEUE_READY, 1);
        }
        self.write_reg(reg::STATUS, st | status::DRIVER_OK);
        assert_ne!(self.read_reg(reg::STATUS) & status::DRIVER_OK, 0);
        self.step(0);
    }

    /// Publishes a chain of (addr, len, device-writable) on queue `q`.
    pub fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let r = &mut self.rings[q];
        if r.next_desc + bufs.len() as u16 > QSIZE {
            r.next_desc = 0;
        }
        let head = r.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = head + i as u16;
            let last = i + 1 == bufs.len();
            let at = r.desc() + u64::from(idx) * 16;
            let flags = if write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            let next = if last { 0 } else { idx + 1 };
            self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        r.next_desc += bufs.len() as u16;
        let slot = u64::from(r.avail_idx % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(r.avail() + 4 + slot * 2))
            .unwrap();
        r.avail_idx = r.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(r.avail_idx, GuestAddress(r.avail() + 2))
            .unwrap();
        self.write_reg(reg::QUEUE_NOTIFY, q as u32);
        head
    }

    pub fn step(&mut self, timeout_ms: i32) {
        self.events.run_with_timeout(timeout_ms).unwrap();
    }

    pub fn pop_used(&mut self, q: usize) -> Option<(u32, u32)> {
        let r = &mut self.rings[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(r.used() + 2)).unwrap();
        if idx == r.last_used {
            return None;
        }
        let at = r.used() + 4 + u64::from(r.last_used % QSIZE) * 8;
        r.last_used = r.last_used.wrapping_add(1);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        Some((id, len))
    }

    /// Runs the event loop until queue `q` returns a buffer (a hang guard, not a timer).
    pub fn wait_used(&mut self, q: usize) -> (u32, u32) {
        for _ in 0..100 {
            if let Some(u) = self.pop_used(q) {
                return u;
            }
            self.step(50);
        }
        panic!("queue {q} never returned a buffer");
    }

    /// Sends `frame` (header included) as one readable descriptor.
    pub fn transmit(&mut self, frame: &[u8]) {
        self.mem.write_slice(frame, GuestAddress(TX_AREA)).unwrap();
        self.add_chain(1, &[(TX_AREA, frame.len() as u32, false)]);
        self.wait_used(1);
    }

    /// Posts a receive buffer of `len` bytes at slot `n`; returns its address.
    pub fn post_rx(&mut self, n: u64, len: u32) -> u64 {
        let addr = RX_AREA + n * 0x1000;
        self.add_chain(0, &[(addr, len, true)]);
        addr
    }

    /// Posts a receive buffer of `len` bytes at `addr`.
    pub fn post_rx_at(&mut self, addr: u64, len: u32) {
        self.add_chain(0, &[(addr, len, true)]);
    }

    pub fn read(&self, addr: u64, len: u32) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

pub fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

/// Moves this test's thread into a network namespace of its own.
pub fn own_netns() {
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
}

/// A TAP `hn0` with 10.9.0.1/24 in this thread's own namespace, the guest's MAC as a
/// static neighbour; returns the device and the TAP's MAC.
pub fn plugged() -> (Net, [u8; 6]) {
    own_netns();
    let net = Net::new(&NetConfig {
        tap: Some("hn0".into()),
        mac: GUEST_MAC,
    })
    .unwrap();
    // No IPv6 link-local address: the kernel then sends no DAD or router solicitations
    // the checks below would have to skip.
    ip("link set hn0 addrgenmode none");
    ip("link set hn0 up");
    ip("addr add 10.9.0.1/24 dev hn0");
    ip("neigh add 10.9.0.2 lladdr 52:54:00:12:34:56 dev hn0");
    // /sys shows the host's namespace: ask `ip` for the TAP's address.
    let out = Command::new("ip")
        .args(["-o", "link", "show", "hn0"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let ether = text.split("link/ether ").nth(1).unwrap();
    let mut mac = [0u8; 6];
    for (b, hex) in mac.iter_mut().zip(ether[..17].split(':')) {
        *b = u8::from_str_radix(hex, 16).unwrap();
    }
    (net, mac)
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// virtio-net header (zeros) + Ethernet + IPv4 + UDP (no checksum) carrying `payload`.
pub fn udp_frame(dst_mac: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut iph = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    iph[2..4].copy_from_slice(&total.to_be_bytes());
    iph.extend_from_slice(&GUEST_IP);
    iph.extend_from_slice(&HOST_IP);
    let c = checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&iph);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// A TCP segment from the guest (10.9.0.2:`sport`) to the host (10.9.0.1:`dport`) with a
/// partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`: the host finishes it), segmented by
/// the host into `mss`-byte segments when `mss` is given (`GSO_TCPV4`). A SYN carries the
/// MSS and window-scale options.
pub fn tcp_frame(
    dst_mac: [u8; 6],
    (sport, dport): (u16, u16),
    (seq, ack): (u32, u32),
    flags: u8,
    payload: &[u8],
    mss: Option<u16>,
) -> Vec<u8> {
    let options: &[u8] = if flags & SYN != 0 {
        &[2, 4, 0x05, 0xb4, 1, 3, 3, 7]
    } else {
        &[]
    };
    let tcp_len = 20 + options.len() + payload.len();
    let mut f = vec![0u8; HDR_LEN];
    f[0] = 1; // NEEDS_CSUM
    f[1] = u8::from(mss.is_some()); // GSO_TCPV4
    f[2..4].copy_from_slice(&((14 + 20 + 20 + options.len()) as u16).to_le_bytes());
    f[4..6].copy_from_slice(&mss.unwrap_or(0).to_le_bytes());
    f[6..8].copy_from_slice(&34u16.to_le_bytes()); // checksum from the TCP header on
    f[8..10].copy_from_slice(&16u16.to_le_bytes()); // into TCP's checksum field
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut iph = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0];
    iph[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    iph.extend_from_slice(&GUEST_IP);
    iph.extend_from_slice(&HOST_IP);
    let c = checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&iph);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&GUEST_IP);
    pseudo.extend_from_slice(&HOST_IP);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp_len as u16).to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.push((((20 + options.len()) / 4) as u8) << 4);
    f.push(flags);
    f.extend_from_slice(&0xffffu16.to_be_bytes());
    // The pseudo-header's sum, not complemented: what a partial checksum starts from.
    f.extend_from_slice(&(!checksum(&pseudo)).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(options);
    f.extend_from_slice(payload);
    f
}

/// The (flags, sequence number) of a TCP frame from `port` in a received buffer.
pub fn tcp_from(frame: &[u8], port: u16) -> Option<(u8, u32)> {
    tcp_segment(frame, port).map(|(flags, seq, _)| (flags, seq))
}

/// The (flags, sequence number, payload length) of a TCP frame from `port`.
pub fn tcp_segment(frame: &[u8], port: u16) -> Option<(u8, u32, usize)> {
    let ip = frame.get(HDR_LEN + 14..)?;
    if frame.get(HDR_LEN + 12..HDR_LEN + 14)? != [0x08, 0x00] || *ip.get(9)? != 6 {
        return None;
    }
    let tcp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
    let payload = tcp.len().checked_sub(usize::from(*tcp.get(12)? >> 4) * 4)?;
    (u16::from_be_bytes([tcp[0], tcp[1]]) == port).then(|| {
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
        (tcp[13], seq, payload)
    })
}

/// Opens a TCP connection from the guest to the host's `dport` (a listener there):
/// SYN, the host's SYN-ACK (read one receive buffer at a time), then the caller's first
/// segment completes it. Returns the guest's next sequence number and the host's.
pub fn handshake(g: &mut Guest, tap_mac: [u8; 6], ports: (u16, u16)) -> (u32, u32) {
    g.transmit(&tcp_frame(tap_mac, ports, (1000, 0), SYN, &[], None));
    for _ in 0..20 {
        let rx = g.post_rx(0, 2048);
        let (_, len) = g.wait_used(0);
        if let Some((flags, seq)) = tcp_from(&g.read(rx, len), ports.1)
            && flags & (SYN | ACK) == SYN | ACK
        {
            return (1001, seq.wrapping_add(1));
        }
    }
    panic!("no SYN-ACK from the host");
}
