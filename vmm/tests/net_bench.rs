//! virtio-net device-model benchmark (ignored by default; numbers, not assertions): the
//! simulated guest driver transmits full-size UDP frames through the real transport,
//! device and event loop into a TAP (in a network namespace of the thread's own, where
//! the host stack delivers them to a UDP socket), and receives frames a second thread
//! sends it through the TAP. Reports GiB/s and the CPU time the device's thread used
//! (getrusage, TAP write/read included), per GiB, to judge Firecracker's budget of
//! 14.5 Gbps at no more than 80% of a core (about 2 GiB/s per core).
//!
//! Two more move TCP streams with checksum and segmentation offloads: 64000-byte segments
//! with partial checksums from the guest into a host socket (paced to what the reader has
//! taken, so nothing is dropped), and a host socket's stream into the guest, which the
//! simulated driver acknowledges (the host's TCP hands the TAP up to 64 KiB at once).
//! CPU per GiB delivered likewise.
//!
//! Run: `cargo test --release -p vmm --test net_bench -- --ignored --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

#[path = "support/net_guest.rs"]
mod net_guest;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use net_guest::{
    ACK, Guest, QSIZE, RX_AREA, TX_AREA, handshake, plugged, tcp_frame, tcp_segment, udp_frame,
};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::net::{HDR_LEN, MAX_BUFFER, features};

/// UDP payload of a full 1500-byte IP packet.
const PAYLOAD: usize = 1472;
const BATCH: u16 = 32;
const GIB: f64 = (1u64 << 30) as f64;

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn report(what: &str, frames: u64, wall: Duration, cpu: Duration) {
    let bytes = frames as f64 * PAYLOAD as f64;
    let gib_s = bytes / GIB / wall.as_secs_f64();
    let cpu_per_gib = cpu.as_secs_f64() / (bytes / GIB);
    println!(
        "virtio-net {what}: {frames} frames of {PAYLOAD} B in {:.2} s: {gib_s:.3} GiB/s, \
         {:.0} kframes/s, CPU {:.2} s per GiB ({:.2} GiB/s per core)",
        wall.as_secs_f64(),
        frames as f64 / wall.as_secs_f64() / 1000.0,
        cpu_per_gib,
        1.0 / cpu_per_gib
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn transmit_and_receive_throughput() {
    let (net, tap_mac) = plugged();
    let mut g = Guest::new(net);
    g.bring_up();
    let sink = UdpSocket::bind("10.9.0.1:5000").unwrap();
    sink.set_nonblocking(true).unwrap();

    // Transmit: BATCH frames per notification, the host socket drained as we go.
    let frame = udp_frame(tap_mac, 4000, 5000, &[0x5a; PAYLOAD]);
    for slot in 0..u64::from(BATCH) {
        g.mem
            .write_slice(&frame, GuestAddress(TX_AREA + slot * 0x800))
            .unwrap();
    }
    let total: u64 = 200_000;
    let mut buf = [0u8; 2048];
    let (t0, c0) = (Instant::now(), cpu_time());
    let mut sent = 0;
    while sent < total {
        for slot in 0..u64::from(BATCH) {
            g.add_chain(1, &[(TX_AREA + slot * 0x800, frame.len() as u32, false)]);
        }
        for _ in 0..BATCH {
            g.wait_used(1);
        }
        sent += u64::from(BATCH);
        while sink.recv(&mut buf).is_ok() {}
    }
    report("tx", sent, t0.elapsed(), cpu_time() - c0);

    // Receive: a second thread (same namespace) sends; the device fills posted buffers.
    let sender = std::thread::spawn(move || {
        let s = UdpSocket::bind("10.9.0.1:5001").unwrap();
        let payload = [0xa5u8; PAYLOAD];
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let _ = s.send_to(&payload, "10.9.0.2:4000");
        }
    });
    for slot in 0..u64::from(QSIZE) {
        g.post_rx(slot, MAX_BUFFER as u32);
    }
    let (t0, c0) = (Instant::now(), cpu_time());
    let mut got = 0u64;
    while t0.elapsed() < Duration::from_secs(5) {
        g.step(10);
        while let Some((id, _)) = g.pop_used(0) {
            got += 1;
            g.post_rx(u64::from(id) % u64::from(QSIZE), MAX_BUFFER as u32);
        }
    }
    report("rx", got, t0.elapsed(), cpu_time() - c0);
    sender.join().unwrap();
    let _ = RX_AREA;
}

/// One line for a TCP stream benchmark: `bytes` moved in `wall`, the thread's `cpu`.
fn report_stream(what: &str, how: &str, bytes: f64, wall: Duration, cpu: Duration) {
    println!(
        "virtio-net {what}: {:.0} MiB {how} in {:.2} s: {:.3} GiB/s, CPU {:.2} s per GiB \
         ({:.2} GiB/s per core)",
        bytes / (1 << 20) as f64,
        wall.as_secs_f64(),
        bytes / GIB / wall.as_secs_f64(),
        cpu.as_secs_f64() / (bytes / GIB),
        (bytes / GIB) / cpu.as_secs_f64()
    );
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn offloaded_tcp_transmit_throughput() {
    const SEG: usize = 64000;
    const SLOTS: u64 = 8;
    const IN_FLIGHT: u64 = 2 * SEG as u64;
    let (net, tap_mac) = plugged();
    let mut g = Guest::new(net);
    g.bring_up_with((1 << features::CSUM) | (1 << features::HOST_TSO4));
    let listener = TcpListener::bind("10.9.0.1:5003").unwrap();
    // Room for a few 64 KB segments (the default buffer, and so the window, is smaller).
    let size: libc::c_int = 4 << 20;
    // SAFETY: SO_RCVBUF reads one int from the pointer, valid for the call; the fd is the
    // listener's (accepted connections inherit the size).
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    let (mut seq, ack) = handshake(&mut g, tap_mac, (4001, 5003));
    let frame = tcp_frame(
        tap_mac,
        (4001, 5003),
        (seq, ack),
        ACK,
        &[0x5a; SEG],
        Some(1448),
    );
    for slot in 0..SLOTS {
        g.mem
            .write_slice(&frame, GuestAddress(TX_AREA + slot * 0x10000))
            .unwrap();
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let counter = delivered.clone();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    // The sequence number sits 4 bytes into the TCP header.
    let seq_at = (HDR_LEN + 14 + 20 + 4) as u64;
    let total: u64 = 1 << 30;
    let (t0, c0) = (Instant::now(), cpu_time());
    let (mut sent, mut slot, mut idle) = (0u64, 0u64, Instant::now());
    while sent < total {
        if sent - delivered.load(Ordering::Relaxed) >= IN_FLIGHT {
            if idle.elapsed() > Duration::from_secs(2) {
                println!("virtio-net tso-tx: the host stopped taking data");
                break;
            }
            std::thread::sleep(Duration::from_micros(20));
            continue;
        }
        let at = TX_AREA + slot * 0x10000;
        g.mem
            .write_slice(&seq.to_be_bytes(), GuestAddress(at + seq_at))
            .unwrap();
        g.add_chain(1, &[(at, frame.len() as u32, false)]);
        g.wait_used(1);
        seq = seq.wrapping_add(SEG as u32);
        sent += SEG as u64;
        slot = (slot + 1) % SLOTS;
        idle = Instant::now();
    }
    while delivered.load(Ordering::Relaxed) < sent && idle.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    let bytes = delivered.load(Ordering::Relaxed) as f64;
    report_stream("tso-tx", "delivered", bytes, wall, cpu);
    drop(g);
    let _ = reader;
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn offloaded_tcp_receive_throughput() {
    const SLOTS: u64 = 32;
    let (net, tap_mac) = plugged();
    let mut g = Guest::new(net);
    let offloads = [
        features::CSUM,
        features::HOST_TSO4,
        features::GUEST_CSUM,
        features::GUEST_TSO4,
    ];
    g.bring_up_with(offloads.iter().fold(0, |f, b| f | (1 << b)));
    let listener = TcpListener::bind("10.9.0.1:5004").unwrap();
    let (seq, mut ack) = handshake(&mut g, tap_mac, (4002, 5004));
    let ack_frame = |ack| tcp_frame(tap_mac, (4002, 5004), (seq, ack), ACK, &[], None);
    g.transmit(&ack_frame(ack));
    let writer = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let buf = vec![0xa5u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_secs(7);
        while Instant::now() < deadline {
            if std::io::Write::write_all(&mut conn, &buf).is_err() {
                break;
            }
        }
    });
    let addr = |slot: u64| RX_AREA + slot * 0x10000;
    // The device fills buffers in the order they were posted.
    let mut posted = std::collections::VecDeque::new();
    for slot in 0..SLOTS {
        g.post_rx_at(addr(slot), MAX_BUFFER as u32);
        posted.push_back(addr(slot));
    }
    let (t0, c0) = (Instant::now(), cpu_time());
    let (mut bytes, mut frames) = (0u64, 0u64);
    while t0.elapsed() < Duration::from_secs(5) {
        g.step(10);
        let mut acked = false;
        while let Some((_, len)) = g.pop_used(0) {
            let at = posted.pop_front().unwrap();
            frames += 1;
            if let Some((_, s, n)) = tcp_segment(&g.read(at, len), 5004)
                && s == ack
                && n > 0
            {
                ack = ack.wrapping_add(n as u32);
                bytes += n as u64;
                acked = true;
            }
            g.post_rx_at(at, MAX_BUFFER as u32);
            posted.push_back(at);
        }
        if acked {
            g.transmit(&ack_frame(ack));
        }
    }
    let (wall, cpu) = (t0.elapsed(), cpu_time() - c0);
    report_stream(
        "tso-rx",
        &format!("in {frames} frames"),
        bytes as f64,
        wall,
        cpu,
    );
    drop(g);
    let _ = writer;
}
