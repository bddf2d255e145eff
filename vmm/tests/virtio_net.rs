//! virtio-net driven by a simulated guest driver through the real virtio-mmio registers,
//! against a real TAP in a network namespace this test makes for its own thread
//! (`unshare(CLONE_NEWNET)`: the TAP, its address and every packet stay in it and vanish
//! with the thread). Frames go both ways between the guest's queues and a host UDP
//! socket; hostile chains cost one frame and the device goes on; an unplugged NIC drops
//! what the guest sends. Needs root (CAP_NET_ADMIN) and /dev/net/tun.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

use std::net::UdpSocket;
use std::process::Command;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::BusDevice;
use vmm::devices::virtio::mmio::{MmioTransport, reg, status};
use vmm::devices::virtio::net::{HDR_LEN, MAX_BUFFER, Net, NetConfig, features};
use vmm::devices::virtio::{Interrupt, VIRTIO_F_VERSION_1, device_id};
use vmm_sys_util::eventfd::EventFd;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const QSIZE: u16 = 64;
const MEM_SIZE: usize = 16 << 20;
const RX_AREA: u64 = 0x10_0000;
const TX_AREA: u64 = 0x80_0000;
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const GUEST_IP: [u8; 4] = [10, 9, 0, 2];
const HOST_IP: [u8; 4] = [10, 9, 0, 1];

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

struct Guest {
    mem: GuestMemoryMmap,
    transport: MmioTransport,
    events: EventManager<Subscriber>,
    rings: Vec<Ring>,
    device: Arc<Mutex<Net>>,
}

impl Guest {
    fn new(device: Net) -> Guest {
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

    fn read_reg(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.transport.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        self.transport.write(offset, &v.to_le_bytes());
    }

    fn config(&mut self) -> [u8; 8] {
        let mut c = [0u8; 8];
        for (i, b) in c.iter_mut().enumerate() {
            let mut one = [0u8; 1];
            self.transport.read(reg::CONFIG + i as u64, &mut one);
            *b = one[0];
        }
        c
    }

    /// The whole bring-up with VERSION_1 + MAC + STATUS.
    fn bring_up(&mut self) {
        assert_eq!(self.read_reg(reg::DEVICE_ID), device_id::NET);
        self.write_reg(reg::STATUS, status::ACKNOWLEDGE);
        self.write_reg(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let features =
            (1u64 << VIRTIO_F_VERSION_1) | (1 << features::MAC) | (1 << features::STATUS);
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
    fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
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

    fn step(&mut self, timeout_ms: i32) {
        self.events.run_with_timeout(timeout_ms).unwrap();
    }

    fn pop_used(&mut self, q: usize) -> Option<(u32, u32)> {
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
    fn wait_used(&mut self, q: usize) -> (u32, u32) {
        for _ in 0..100 {
            if let Some(u) = self.pop_used(q) {
                return u;
            }
            self.step(50);
        }
        panic!("queue {q} never returned a buffer");
    }

    /// Sends `frame` (header included) as one readable descriptor.
    fn transmit(&mut self, frame: &[u8]) {
        self.mem.write_slice(frame, GuestAddress(TX_AREA)).unwrap();
        self.add_chain(1, &[(TX_AREA, frame.len() as u32, false)]);
        self.wait_used(1);
    }

    /// Posts a receive buffer of `len` bytes at slot `n`; returns its address.
    fn post_rx(&mut self, n: u64, len: u32) -> u64 {
        let addr = RX_AREA + n * 0x1000;
        self.add_chain(0, &[(addr, len, true)]);
        addr
    }

    fn read(&self, addr: u64, len: u32) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .unwrap();
    assert!(st.success(), "ip {args} failed");
}

/// Moves this test's thread into a network namespace of its own.
fn own_netns() {
    // SAFETY: unshare(CLONE_NEWNET) only changes the calling thread's namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
}

/// A TAP `hn0` with 10.9.0.1/24 in this thread's own namespace, the guest's MAC as a
/// static neighbour; returns the device and the TAP's MAC.
fn plugged() -> (Net, [u8; 6]) {
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

fn checksum(data: &[u8]) -> u16 {
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
fn udp_frame(dst_mac: [u8; 6], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
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

fn host_socket() -> UdpSocket {
    let s = UdpSocket::bind("10.9.0.1:5000").unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s
}

#[test]
fn frames_cross_between_the_guest_queues_and_a_tap_both_ways() {
    let (net, tap_mac) = plugged();
    let mut g = Guest::new(net);
    let cfg = g.config();
    assert_eq!(cfg[..6], GUEST_MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    g.bring_up();
    let host = host_socket();

    // Guest -> host.
    g.transmit(&udp_frame(tap_mac, 4000, 5000, b"hello from the guest"));
    let mut buf = [0u8; 64];
    let (n, from) = host.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello from the guest");
    assert_eq!(from.to_string(), "10.9.0.2:4000");

    // Host -> guest: one frame per buffer, num_buffers = 1, header otherwise zero.
    let rx = g.post_rx(0, MAX_BUFFER as u32);
    host.send_to(b"hello from the host", "10.9.0.2:4000")
        .unwrap();
    let (_, len) = g.wait_used(0);
    let got = g.read(rx, len);
    assert_eq!(got[..10], [0u8; 10]);
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1);
    let eth = &got[HDR_LEN..];
    assert_eq!(eth[..6], GUEST_MAC);
    assert_eq!(eth[6..12], tap_mac);
    assert_eq!(&eth[14 + 20 + 8..], b"hello from the host");

    // Many frames, more than the buffers posted at once: none lost, in order.
    for i in 0..40u8 {
        host.send_to(&[i; 100], "10.9.0.2:4000").unwrap();
    }
    let mut next = 0u8;
    for slot in 0..60u64 {
        if next == 40 {
            break;
        }
        let rx = g.post_rx(slot % 32, MAX_BUFFER as u32);
        let (_, len) = g.wait_used(0);
        let got = g.read(rx, len);
        if got[HDR_LEN + 12..HDR_LEN + 14] != [0x08, 0x00] {
            continue; // not IPv4: the host kernel's own chatter
        }
        assert_eq!(got[HDR_LEN + 14 + 20 + 8..], [next; 100]);
        next += 1;
    }
    assert_eq!(next, 40);
    let stats = g.device.lock().unwrap().stats();
    assert_eq!(stats.tx_frames, 1, "{stats:?}");
    assert!(stats.rx_frames >= 41, "{stats:?}");
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0), "{stats:?}");
}

#[test]
fn hostile_chains_cost_one_frame_and_the_device_goes_on() {
    let (net, tap_mac) = plugged();
    let mut g = Guest::new(net);
    g.bring_up();
    let host = host_socket();

    // TX: a device-writable descriptor, a chain shorter than the header, a chain longer
    // than any frame, a descriptor outside guest memory.
    let frame = udp_frame(tap_mac, 4000, 5000, b"x");
    g.mem.write_slice(&frame, GuestAddress(TX_AREA)).unwrap();
    g.add_chain(1, &[(TX_AREA, frame.len() as u32, true)]);
    g.wait_used(1);
    g.add_chain(1, &[(TX_AREA, 4, false)]);
    g.wait_used(1);
    g.add_chain(1, &[(TX_AREA, 0x10000, false)]);
    g.wait_used(1);
    g.add_chain(1, &[(MEM_SIZE as u64 - 8, 64, false)]);
    g.wait_used(1);
    assert_eq!(g.device.lock().unwrap().stats().tx_dropped, 4);

    // RX: a buffer too small for the frame comes back empty; a read-only one too.
    g.post_rx(0, 16);
    host.send_to(&[7u8; 500], "10.9.0.2:4000").unwrap();
    assert_eq!(g.wait_used(0).1, 0);
    g.add_chain(0, &[(RX_AREA, MAX_BUFFER as u32, false)]);
    host.send_to(&[8u8; 500], "10.9.0.2:4000").unwrap();
    assert_eq!(g.wait_used(0).1, 0);
    assert_eq!(g.device.lock().unwrap().stats().rx_dropped, 2);

    // The device still serves both ways.
    g.transmit(&udp_frame(tap_mac, 4000, 5000, b"still here"));
    let mut buf = [0u8; 64];
    let (n, _) = host.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
    let rx = g.post_rx(1, MAX_BUFFER as u32);
    host.send_to(b"back", "10.9.0.2:4000").unwrap();
    let (_, len) = g.wait_used(0);
    assert_eq!(&g.read(rx, len)[HDR_LEN + 14 + 20 + 8..], b"back");
}

#[test]
fn an_unplugged_nic_has_its_link_down_and_drops_what_the_guest_sends() {
    let net = Net::new(&NetConfig {
        tap: None,
        mac: GUEST_MAC,
    })
    .unwrap();
    let mut g = Guest::new(net);
    let cfg = g.config();
    assert_eq!(cfg[..6], GUEST_MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 0, "link down");
    g.bring_up();
    g.transmit(&udp_frame([0xff; 6], 1, 2, b"into the void"));
    assert_eq!(g.device.lock().unwrap().stats().tx_dropped, 1);
}

#[test]
fn bad_tap_names_are_refused_with_one_line() {
    for bad in ["", "a-name-longer-than-15", "nul\0in"] {
        let e = Net::new(&NetConfig {
            tap: Some(bad.into()),
            mac: GUEST_MAC,
        })
        .unwrap_err();
        assert!(e.to_string().contains("not a valid interface name"), "{e}");
    }
}
