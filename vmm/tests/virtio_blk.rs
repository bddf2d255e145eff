//! virtio-blk and the virtio-mmio transport driven by husk's simulated guest driver in
//! real guest memory, against real files: register identity, the status handshake,
//! read/write/flush/get-id round trips, read-only disks, interrupts (status register and
//! irqfd), hostile descriptor chains (the request fails, the device keeps serving), and
//! reset followed by re-activation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed setup step is a failed test

mod support;

use std::sync::{Arc, Mutex};

use support::virtq::{BUFFERS, Buf, Driver, F_NEXT, F_WRITE, MEM_SIZE, RawDesc};
use vm_memory::{Bytes, GuestAddress};
use vmm::devices::virtio::block::{Block, features, request_type, status as blk};
use vmm::devices::virtio::mmio::{MAGIC_VALUE, VENDOR_ID, reg, status};
use vmm::devices::virtio::{INT_CONFIG, INT_VRING, VIRTIO_F_VERSION_1, device_id};

const SECTORS: u64 = 64;
const HDR: u64 = BUFFERS;
const STATUS: u64 = BUFFERS + 0x100;
const DATA: u64 = BUFFERS + 0x1000;

struct Disk {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    original: Vec<u8>,
}

fn disk() -> Disk {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let original: Vec<u8> = (0..SECTORS * 512).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &original).unwrap();
    Disk {
        _dir: dir,
        path,
        original,
    }
}

fn driver(d: &Disk, read_only: bool) -> (Driver, Arc<Mutex<Block>>) {
    let block = Arc::new(Mutex::new(Block::open(&d.path, read_only).unwrap()));
    let mut drv = Driver::new(block.clone());
    let st = drv.init(1 << features::FLUSH, 128);
    assert_eq!(
        st,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    assert!(block.lock().unwrap().is_active());
    (drv, block)
}

fn header(drv: &Driver, kind: u32, sector: u64) {
    drv.mem.write_obj(kind, GuestAddress(HDR)).unwrap();
    drv.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
    drv.mem.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    drv.mem.write_obj(0xaau8, GuestAddress(STATUS)).unwrap();
}

/// A well-formed request: header, `data`, status byte. Returns (status, used len).
fn request(drv: &mut Driver, kind: u32, sector: u64, data: &[Buf]) -> (u8, u32) {
    header(drv, kind, sector);
    let mut chain = vec![Buf::r(HDR, 16)];
    chain.extend_from_slice(data);
    chain.push(Buf::w(STATUS, 1));
    let head = drv.add_chain(&chain);
    drv.kick();
    let (id, len) = drv.wait_used();
    assert_eq!(id, u32::from(head));
    (drv.mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
}

fn read_sectors(drv: &mut Driver, sector: u64, count: u32) -> Vec<u8> {
    let (st, len) = request(drv, request_type::IN, sector, &[Buf::w(DATA, count * 512)]);
    assert_eq!((st, len), (blk::OK, count * 512 + 1));
    let mut out = vec![0u8; count as usize * 512];
    drv.mem.read_slice(&mut out, GuestAddress(DATA)).unwrap();
    out
}

/// A good read still works and returns the file's bytes.
fn still_serves(drv: &mut Driver, d: &Disk) {
    assert_eq!(read_sectors(drv, 3, 2), d.original[3 * 512..5 * 512]);
}

#[test]
fn registers_identify_a_block_device_with_its_capacity() {
    let d = disk();
    let block = Arc::new(Mutex::new(Block::open(&d.path, false).unwrap()));
    let mut drv = Driver::new(block);
    assert_eq!(drv.read(reg::MAGIC), MAGIC_VALUE);
    assert_eq!(drv.read(reg::VERSION), 2);
    assert_eq!(drv.read(reg::DEVICE_ID), device_id::BLOCK);
    assert_eq!(drv.read(reg::VENDOR_ID), VENDOR_ID);
    let f = drv.device_features();
    assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(f & (1 << features::FLUSH), 0);
    assert_eq!(f & (1 << features::RO), 0);
    let lo = drv.read(reg::CONFIG);
    let hi = drv.read(reg::CONFIG + 4);
    assert_eq!((u64::from(hi) << 32) | u64::from(lo), SECTORS);
    let mut eight = [0u8; 8];
    vmm::devices::BusDevice::read(&mut drv.transport, reg::CONFIG, &mut eight);
    assert_eq!(u64::from_le_bytes(eight), SECTORS);
    // Past the end of the config space reads as zero; odd register accesses are
    // answered with zero, not a crash.
    assert_eq!(drv.read(reg::CONFIG + 0x200), 0);
    let mut one = [0xffu8; 1];
    vmm::devices::BusDevice::read(&mut drv.transport, reg::MAGIC, &mut one);
    assert_eq!(one, [0]);
    drv.write(reg::MAGIC, 5);
    assert_eq!(drv.read(reg::MAGIC), MAGIC_VALUE);
}

#[test]
fn read_write_flush_and_get_id_round_trip_with_interrupts() {
    let d = disk();
    let (mut drv, _block) = driver(&d, false);

    assert_eq!(read_sectors(&mut drv, 0, 8), d.original[..8 * 512]);
    assert_eq!(drv.read(reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
    assert!(drv.interrupt.irqfd().read().unwrap() >= 1);
    drv.write(reg::INTERRUPT_ACK, INT_VRING);
    assert_eq!(drv.read(reg::INTERRUPT_STATUS), 0);

    // A write split over two data descriptors.
    let payload: Vec<u8> = (0..1024u32).map(|i| (i % 13) as u8 + 100).collect();
    drv.mem.write_slice(&payload, GuestAddress(DATA)).unwrap();
    let (st, len) = request(
        &mut drv,
        request_type::OUT,
        10,
        &[Buf::r(DATA, 512), Buf::r(DATA + 512, 512)],
    );
    assert_eq!((st, len), (blk::OK, 1));
    let on_disk = std::fs::read(&d.path).unwrap();
    assert_eq!(on_disk[10 * 512..12 * 512], payload[..]);
    assert_eq!(on_disk[..10 * 512], d.original[..10 * 512]);
    assert_eq!(on_disk[12 * 512..], d.original[12 * 512..]);
    assert_eq!(read_sectors(&mut drv, 10, 2), payload);

    assert_eq!(request(&mut drv, request_type::FLUSH, 0, &[]), (blk::OK, 1));

    let (st, len) = request(&mut drv, request_type::GET_ID, 0, &[Buf::w(DATA, 20)]);
    assert_eq!((st, len), (blk::OK, 21));
    let mut id = [0u8; 20];
    drv.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&d.path).unwrap();
    let want = format!("{:x}-{:x}", meta.dev(), meta.ino());
    assert!(id.starts_with(want.as_bytes()), "{id:?} vs {want}");

    // The last sector is readable; discard is not supported.
    assert_eq!(
        read_sectors(&mut drv, SECTORS - 1, 1),
        d.original[(SECTORS as usize - 1) * 512..]
    );
    assert_eq!(
        request(&mut drv, 11, 0, &[Buf::r(DATA, 16)]),
        (blk::UNSUPP, 1)
    );
}

#[test]
fn a_read_only_disk_refuses_writes_and_keeps_the_file_intact() {
    let d = disk();
    let (mut drv, _block) = driver(&d, true);
    assert_ne!(drv.device_features() & (1 << features::RO), 0);
    drv.mem
        .write_slice(&[0x55u8; 512], GuestAddress(DATA))
        .unwrap();
    let (st, len) = request(&mut drv, request_type::OUT, 0, &[Buf::r(DATA, 512)]);
    assert_eq!((st, len), (blk::IOERR, 1));
    assert_eq!(request(&mut drv, request_type::FLUSH, 0, &[]), (blk::OK, 1));
    assert_eq!(std::fs::read(&d.path).unwrap(), d.original);
    still_serves(&mut drv, &d);
}

#[test]
fn a_file_that_is_not_whole_sectors_is_refused_at_attach() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.img");
    std::fs::write(&path, vec![0u8; 1000]).unwrap();
    let e = Block::open(&path, false).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "disk image {} is 1000 bytes, not a multiple of 512",
            path.display()
        )
    );
    let e = Block::open(&dir.path().join("missing"), true).unwrap_err();
    assert!(e.to_string().starts_with("cannot open disk image "), "{e}");
}

#[test]
fn bad_requests_fail_with_ioerr_and_the_device_keeps_serving() {
    let d = disk();
    let (mut drv, _block) = driver(&d, false);
    let cases: Vec<(&str, u32, u64, Vec<Buf>)> = vec![
        (
            "sector past the end",
            request_type::IN,
            SECTORS,
            vec![Buf::w(DATA, 512)],
        ),
        (
            "last sector plus one",
            request_type::IN,
            SECTORS - 1,
            vec![Buf::w(DATA, 1024)],
        ),
        (
            "sector overflow",
            request_type::IN,
            u64::MAX,
            vec![Buf::w(DATA, 512)],
        ),
        (
            "length not whole sectors",
            request_type::IN,
            0,
            vec![Buf::w(DATA, 100)],
        ),
        (
            "read into a device-readable buffer",
            request_type::IN,
            0,
            vec![Buf::r(DATA, 512)],
        ),
        (
            "write from a device-writable buffer",
            request_type::OUT,
            0,
            vec![Buf::w(DATA, 512)],
        ),
        (
            "buffer outside guest memory",
            request_type::IN,
            0,
            vec![Buf::w(MEM_SIZE as u64, 512)],
        ),
        (
            "buffer straddling the end of memory",
            request_type::OUT,
            0,
            vec![Buf::r(MEM_SIZE as u64 - 512, 1024)],
        ),
        (
            "huge length",
            request_type::IN,
            0,
            vec![Buf::w(DATA, u32::MAX - 511)],
        ),
        (
            "buffer address wraps",
            request_type::IN,
            0,
            vec![Buf::w(u64::MAX - 255, 512)],
        ),
        (
            "get-id into a readable buffer",
            request_type::GET_ID,
            0,
            vec![Buf::r(DATA, 20)],
        ),
    ];
    for (what, kind, sector, data) in cases {
        let (st, len) = request(&mut drv, kind, sector, &data);
        assert_eq!((st, len), (blk::IOERR, 1), "{what}");
        still_serves(&mut drv, &d);
    }
    // A header in a device-writable descriptor.
    header(&drv, request_type::IN, 0);
    drv.add_chain(&[Buf::w(HDR, 16), Buf::w(DATA, 512), Buf::w(STATUS, 1)]);
    drv.kick();
    assert_eq!(drv.wait_used().1, 1);
    assert_eq!(
        drv.mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        blk::IOERR
    );
    assert_eq!(std::fs::read(&d.path).unwrap(), d.original);
    still_serves(&mut drv, &d);
}

/// Chains with no trustworthy status byte are returned with length 0.
#[test]
fn hostile_chains_are_dropped_and_the_device_survives() {
    let d = disk();
    let (mut drv, _block) = driver(&d, false);
    let hdr = |next| RawDesc {
        addr: HDR,
        len: 16,
        flags: F_NEXT,
        next,
    };
    let raw_cases: Vec<(&str, Vec<(u16, RawDesc)>)> = vec![
        (
            "descriptor loop",
            vec![
                (0, hdr(1)),
                (
                    1,
                    RawDesc {
                        addr: DATA,
                        len: 512,
                        flags: F_NEXT | F_WRITE,
                        next: 0,
                    },
                ),
            ],
        ),
        ("next index beyond the table", vec![(0, hdr(500))]),
        (
            "missing status: the chain ends on a readable buffer",
            vec![
                (0, hdr(1)),
                (
                    1,
                    RawDesc {
                        addr: DATA,
                        len: 512,
                        flags: 0,
                        next: 0,
                    },
                ),
            ],
        ),
        (
            "status byte outside guest memory",
            vec![
                (0, hdr(1)),
                (
                    1,
                    RawDesc {
                        addr: MEM_SIZE as u64 + 4096,
                        len: 1,
                        flags: F_WRITE,
                        next: 0,
                    },
                ),
            ],
        ),
        (
            "lengths overflowing 4 GiB",
            vec![
                (0, hdr(1)),
                (
                    1,
                    RawDesc {
                        addr: DATA,
                        len: u32::MAX,
                        flags: F_NEXT | F_WRITE,
                        next: 2,
                    },
                ),
                (
                    2,
                    RawDesc {
                        addr: STATUS,
                        len: 1,
                        flags: F_WRITE,
                        next: 0,
                    },
                ),
            ],
        ),
        (
            "a zero-length status descriptor",
            vec![
                (0, hdr(1)),
                (
                    1,
                    RawDesc {
                        addr: STATUS,
                        len: 0,
                        flags: F_WRITE,
                        next: 0,
                    },
                ),
            ],
        ),
    ];
    for (what, descs) in raw_cases {
        header(&drv, request_type::OUT, 0);
        drv.mem
            .write_slice(&[0x11u8; 512], GuestAddress(DATA))
            .unwrap();
        for (i, desc) in descs {
            drv.put_desc(i, desc);
        }
        drv.publish(0);
        drv.kick();
        let (id, len) = drv.wait_used();
        assert_eq!((id, len), (0, 0), "{what}");
        assert_eq!(std::fs::read(&d.path).unwrap(), d.original, "{what}");
        still_serves(&mut drv, &d);
    }

    // A head index outside the queue: nothing can be returned for it, but the next
    // request is served.
    drv.publish(1000);
    drv.kick();
    drv.run_events();
    still_serves(&mut drv, &d);

    // A long chain: 126 data segments of half a sector each (63 sectors in all).
    let mut chain = vec![Buf::r(HDR, 16)];
    for i in 0..126u64 {
        chain.push(Buf::w(DATA + i * 256, 256));
    }
    chain.push(Buf::w(STATUS, 1));
    header(&drv, request_type::IN, 0);
    drv.add_chain(&chain);
    drv.kick();
    let (_, len) = drv.wait_used();
    assert_eq!(len, 126 * 256 + 1);
    let mut got = vec![0u8; 63 * 512];
    drv.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, d.original[..63 * 512]);
    // 128 descriptors of a 128-entry queue, all linked: beyond that the chain is cut.
    for i in 0..128u16 {
        drv.put_desc(
            i,
            RawDesc {
                addr: DATA,
                len: 512,
                flags: F_NEXT | F_WRITE,
                next: (i + 1) % 128,
            },
        );
    }
    drv.put_desc(0, hdr(1));
    drv.publish(0);
    drv.kick();
    assert_eq!(drv.wait_used(), (0, 0));
    still_serves(&mut drv, &d);
}

#[test]
fn the_status_handshake_is_enforced() {
    let d = disk();
    let block = Arc::new(Mutex::new(Block::open(&d.path, false).unwrap()));
    let mut drv = Driver::new(block.clone());

    // DRIVER_OK straight away, and DRIVER before ACKNOWLEDGE, are ignored.
    drv.write(reg::STATUS, status::DRIVER_OK);
    assert_eq!(drv.read(reg::STATUS), 0);
    drv.write(reg::STATUS, status::DRIVER);
    assert_eq!(drv.read(reg::STATUS), 0);

    // Features the device does not offer, or a legacy driver without VERSION_1: the
    // driver reads FEATURES_OK back unset.
    let st = drv.negotiate((1 << VIRTIO_F_VERSION_1) | (1 << 40));
    assert_eq!(st & status::FEATURES_OK, 0);
    drv.write(reg::STATUS, 0);
    let st = drv.negotiate(1 << features::FLUSH);
    assert_eq!(st & status::FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK is refused.
    drv.write(reg::STATUS, st | status::DRIVER_OK);
    assert_eq!(drv.read(reg::STATUS) & status::DRIVER_OK, 0);
    assert!(!block.lock().unwrap().is_active());
    drv.write(reg::STATUS, 0);

    // A queue that is not in guest memory: DRIVER_OK is refused with DEVICE_NEEDS_RESET
    // and a configuration interrupt.
    let st = drv.negotiate(1 << VIRTIO_F_VERSION_1);
    drv.setup_queue(128);
    drv.write(reg::QUEUE_USED_LOW, 0);
    drv.write(reg::QUEUE_USED_HIGH, 1 << 20);
    drv.write(reg::STATUS, st | status::DRIVER_OK);
    let st = drv.read(reg::STATUS);
    assert_eq!(st & status::DRIVER_OK, 0);
    assert_ne!(st & status::DEVICE_NEEDS_RESET, 0);
    assert_ne!(drv.read(reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
    assert!(!block.lock().unwrap().is_active());

    // Reset clears everything; a proper bring-up then works.
    drv.write(reg::STATUS, 0);
    assert_eq!(drv.read(reg::STATUS), 0);
    assert_eq!(drv.read(reg::INTERRUPT_STATUS), 0);
    let st = drv.init(0, 128);
    assert_ne!(st & status::DRIVER_OK, 0);
    // Queue registers are frozen once the device is live.
    drv.write(reg::QUEUE_NUM, 2);
    drv.write(reg::QUEUE_READY, 0);
    assert_eq!(drv.read(reg::QUEUE_READY), 1);
    still_serves(&mut drv, &d);
}

#[test]
fn reset_then_reactivate_serves_again() {
    let d = disk();
    let (mut drv, block) = driver(&d, false);
    still_serves(&mut drv, &d);
    drv.write(reg::STATUS, 0);
    assert_eq!(drv.read(reg::STATUS), 0);
    assert!(!block.lock().unwrap().is_active());
    // A request and a notify while the device is reset go nowhere, harmlessly.
    header(&drv, request_type::IN, 0);
    drv.add_chain(&[Buf::r(HDR, 16), Buf::w(DATA, 512), Buf::w(STATUS, 1)]);
    drv.kick();
    drv.run_events();
    drv.run_events();
    for round in 0..3 {
        let st = drv.init(1 << features::FLUSH, 64);
        assert_ne!(st & status::DRIVER_OK, 0, "round {round}");
        still_serves(&mut drv, &d);
        drv.write(reg::STATUS, 0);
        drv.run_events();
    }
}
