//! virtio-net driven by a simulated guest driver through the real virtio-mmio registers,
//! against a real TAP in a network namespace this test makes for its own thread
//! (`unshare(CLONE_NEWNET)`: the TAP, its address and every packet stay in it and vanish
//! with the thread). Frames go both ways between the guest's queues and a host UDP
//! socket; a 20000-byte TCP segment with a partial checksum (checksum and segmentation
//! offloads) reaches a host socket whole; hostile chains cost one frame and the device
//! goes on; an unplugged NIC drops
//! what the guest sends; a running NIC is plugged into a TAP and pulled out again through
//! its `Plug` (link status, configuration interrupt, frames). Needs root (CAP_NET_ADMIN) and /dev/net/tun.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "support/net_guest.rs"]
mod net_guest;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};

use net_guest::{
    ACK, GUEST_MAC, Guest, MEM_SIZE, PSH, RX_AREA, TX_AREA, handshake, plugged, tcp_frame,
    udp_frame,
};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::INT_CONFIG;
use vmm::devices::virtio::mmio::reg;
use vmm::devices::virtio::net::{HDR_LEN, MAX_BUFFER, Net, NetConfig, features};

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
fn offloaded_tcp_segments_reach_a_host_socket_whole() {
    let (net, tap_mac) = plugged();
    let mut g = Guest::new(net);
    g.bring_up_with((1 << features::CSUM) | (1 << features::HOST_TSO4));
    let listener = TcpListener::bind("10.9.0.1:5002").unwrap();
    let (seq, ack) = handshake(&mut g, tap_mac, (4000, 5002));
    // One 20000-byte segment with a partial checksum: the host segments it by 1448.
    let data: Vec<u8> = (0..20000u32).map(|i| (i % 251) as u8).collect();
    let frame = tcp_frame(
        tap_mac,
        (4000, 5002),
        (seq, ack),
        ACK | PSH,
        &data,
        Some(1448),
    );
    assert!(frame.len() > 20000);
    g.transmit(&frame);
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut got = vec![0u8; data.len()];
    conn.read_exact(&mut got).unwrap();
    assert!(got == data, "the host read other bytes");
    let stats = g.device.lock().unwrap().stats();
    assert_eq!((stats.tx_frames, stats.tx_dropped), (2, 0), "{stats:?}");
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
    g.add_chain(1, &[(TX_AREA, MAX_BUFFER as u32 + 1, false)]);
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

/// Runs the device's event loop until `change` (made on another thread of this
/// namespace, as the VMM's control thread does) has returned.
fn while_stepping<T: Send + 'static>(
    g: &mut Guest,
    change: impl FnOnce() -> T + Send + 'static,
) -> T {
    let t = std::thread::spawn(change);
    while !t.is_finished() {
        g.step(50);
    }
    t.join().unwrap()
}

#[test]
fn a_running_nic_is_plugged_and_unplugged_through_its_plug() {
    net_guest::own_netns();
    let net = Net::new(&NetConfig {
        tap: None,
        mac: [0x02, 0, 0, 0, 0, 1],
    })
    .unwrap();
    let plug = net.plug();
    let mut g = Guest::new(net);
    g.bring_up();
    assert_eq!(g.config()[6..8], [0, 0], "unplugged: link down");

    // Plugged while the driver runs: link up, the new MAC, a configuration interrupt,
    // and frames reach the TAP.
    let p = plug.clone();
    while_stepping(&mut g, move || p.plug("hn0", GUEST_MAC)).unwrap();
    let cfg = g.config();
    assert_eq!(cfg[..6], GUEST_MAC);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
    let isr = g.read_reg(reg::INTERRUPT_STATUS);
    assert_eq!(
        isr & INT_CONFIG,
        INT_CONFIG,
        "configuration change announced"
    );
    net_guest::ip("link set hn0 addrgenmode none");
    net_guest::ip("link set hn0 up");
    net_guest::ip("addr add 10.9.0.1/24 dev hn0");
    let host = host_socket();
    g.transmit(&udp_frame([0xff; 6], 4000, 5000, b"plugged in"));
    let mut buf = [0u8; 64];
    let (n, _) = host.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"plugged in");

    // Pulled out: link down, and what the guest sends is dropped.
    let p = plug.clone();
    while_stepping(&mut g, move || p.unplug(GUEST_MAC)).unwrap();
    assert_eq!(g.config()[6..8], [0, 0], "link down again");
    let dropped = g.device.lock().unwrap().stats().tx_dropped;
    g.transmit(&udp_frame([0xff; 6], 4000, 5000, b"into the void"));
    assert_eq!(g.device.lock().unwrap().stats().tx_dropped, dropped + 1);

    // A TAP name no interface can have is refused before the device is asked.
    let e = plug.plug("a-name-longer-than-15", GUEST_MAC).unwrap_err();
    assert!(e.to_string().contains("not a valid interface name"), "{e}");
}
