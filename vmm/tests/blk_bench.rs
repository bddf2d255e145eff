//! virtio-blk device-model benchmark (ignored by default; numbers, not assertions):
//! the simulated guest driver keeps a batch of requests in flight against a disk image in
//! the host page cache, through the real transport and event loop, and reports MiB/s for
//! sequential reads and writes of 64 KiB to 1 MiB, requests/s for 4 KiB reads, and the
//! CPU time the thread used (getrusage), to judge Firecracker's budget of 1 GiB/s at
//! no more than 70% of a core.
//!
//! Run: `cargo test --release -p vmm --test blk_bench -- --ignored --nocapture`

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::virtq::{BUFFERS, Buf, Driver};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::block::{Block, features, request_type, status};

const DISK_BYTES: u64 = 256 << 20;
const DEPTH: u64 = 16;
const HEADERS: u64 = 0x8000;

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs `total` bytes of `kind` requests of `size` bytes, `DEPTH` per notification.
/// Returns (wall, cpu, requests).
fn run(drv: &mut Driver, kind: u32, size: u64, total: u64) -> (Duration, Duration, u64) {
    let requests = total / size;
    let sectors_per = size / 512;
    let disk_reqs = DISK_BYTES / size;
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut issued = 0u64;
    while issued < requests {
        let batch = DEPTH.min(requests - issued);
        for i in 0..batch {
            let hdr = HEADERS + i * 32;
            let sector = ((issued + i) % disk_reqs) * sectors_per;
            drv.mem.write_obj(kind, GuestAddress(hdr)).unwrap();
            drv.mem.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
            let data = Buf {
                addr: BUFFERS + i * size,
                len: size as u32,
                write: kind == request_type::IN,
            };
            drv.add_chain(&[Buf::r(hdr, 16), data, Buf::w(hdr + 16, 1)]);
        }
        drv.kick();
        for i in 0..batch {
            drv.wait_used();
            let st: u8 = drv
                .mem
                .read_obj(GuestAddress(HEADERS + i * 32 + 16))
                .unwrap();
            assert_eq!(st, status::OK);
        }
        drv.write(vmm::devices::virtio::mmio::reg::INTERRUPT_ACK, 1);
        issued += batch;
    }
    (t0.elapsed(), cpu_time() - cpu0, requests)
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn blk_device_model_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.img");
    let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for _ in 0..DISK_BYTES >> 20 {
            f.write_all(&chunk).unwrap();
        }
    }
    // Pull the whole file into the page cache.
    let _ = std::fs::read(&path).unwrap();
    let block = Arc::new(Mutex::new(Block::open(&path, false).unwrap()));
    let mut drv = Driver::new(block);
    drv.init(1 << features::FLUSH, 256);

    println!("virtio-blk device model, queue depth {DEPTH}, disk image in the page cache");
    println!(
        "{:<6} {:>9} {:>12} {:>12} {:>10}",
        "op", "size", "MiB/s", "req/s", "CPU %"
    );
    let cases = [
        (request_type::IN, 64u64 << 10, 1u64 << 30),
        (request_type::IN, 256 << 10, 1 << 30),
        (request_type::IN, 1 << 20, 1 << 30),
        (request_type::OUT, 64 << 10, 1 << 30),
        (request_type::OUT, 256 << 10, 1 << 30),
        (request_type::OUT, 1 << 20, 1 << 30),
        (request_type::IN, 4 << 10, 512 << 20),
        (request_type::OUT, 4 << 10, 512 << 20),
    ];
    for (kind, size, total) in cases {
        let (wall, cpu, reqs) = run(&mut drv, kind, size, total);
        let secs = wall.as_secs_f64();
        let mib = (reqs * size) as f64 / (1 << 20) as f64;
        println!(
            "{:<6} {:>6} KiB {:>12.0} {:>12.0} {:>9.0}%",
            if kind == request_type::IN {
                "read"
            } else {
                "write"
            },
            size >> 10,
            mib / secs,
            reqs as f64 / secs,
            100.0 * cpu.as_secs_f64() / secs
        );
    }
    // CPU % is this thread's (driver + transport + event loop + device) user+system time
    // over wall time; at 1 GiB/s, "<= 70% of a core" means CPU % <= 70 at >= 1024 MiB/s.
}
