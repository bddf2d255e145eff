//! One virtio-blk request: the descriptor chain is walked and validated (header first,
//! read-only; data in the direction the type needs; status byte last, write-only; every
//! buffer inside guest memory; lengths whole sectors and inside the disk), then executed
//! against the disk. Whatever the guest put in the chain, the result is a status byte
//! and a used length, never a panic.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{ByteValued, Bytes, GuestMemoryBackend, GuestMemoryMmap, Le32, Le64};

use super::disk::{Direction, Disk, Segment};
use super::{ID_LEN, SECTOR_SIZE, request_type, status};

/// `struct virtio_blk_outhdr`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct Header {
    kind: Le32,
    _reserved: Le32,
    sector: Le64,
}

// SAFETY: plain integers with no padding; any bit pattern is a valid value.
unsafe impl ByteValued for Header {}

const HEADER_LEN: u32 = std::mem::size_of::<Header>() as u32;

/// Why a request failed (logged at debug level: a guest can produce these at will).
#[derive(Debug, thiserror::Error)]
enum Fault {
    #[error("the header descriptor is write-only, short or outside guest memory")]
    Header,
    #[error("a data descriptor has the wrong direction")]
    Direction,
    #[error("a data buffer is outside guest memory")]
    Buffer,
    #[error("the data length {0} is not a whole number of sectors")]
    Unaligned(u64),
    #[error("sectors {0}+{1} lie beyond the disk's end")]
    OutOfRange(u64, u64),
    #[error("a write to a read-only disk")]
    ReadOnly,
    #[error("the disk I/O failed")]
    Io(#[source] std::io::Error),
}

/// Handles one chain; returns the length to put in the used ring (bytes written to
/// the guest, including the status byte; 0 when no status byte could be written).
pub(crate) fn handle<M>(disk: &Disk, mem: &GuestMemoryMmap, chain: DescriptorChain<M>) -> u32
where
    M: Deref<Target = GuestMemoryMmap>,
{
    let descs: Vec<Descriptor> = chain.collect();
    // A chain that still points on was cut short: a loop, a next index out of the
    // table, an unreadable descriptor or an over-long chain. No trustworthy status byte.
    let Some(last) = descs.last().filter(|d| !d.has_next()) else {
        log::debug!("virtio-blk: malformed descriptor chain dropped");
        return 0;
    };
    let status_addr = last.addr();
    if !last.is_write_only() || last.len() == 0 || mem.get_slice(status_addr, 1).is_err() {
        log::debug!("virtio-blk: request without a usable status byte dropped");
        return 0;
    }
    let data = &descs[1.min(descs.len() - 1)..descs.len() - 1];
    let (code, written) = match execute(disk, mem, &descs[0], data) {
        Ok(r) => r,
        Err(e) => {
            log::debug!("virtio-blk: request failed: {e}");
            (status::IOERR, 0)
        }
    };
    match mem.write_obj(code, status_addr) {
        Ok(()) => written.saturating_add(1),
        Err(_) => 0,
    }
}

/// Runs the request; returns the status and the data bytes written to the guest.
fn execute(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    head: &Descriptor,
    data: &[Descriptor],
) -> Result<(u8, u32), Fault> {
    if head.is_write_only() || head.len() < HEADER_LEN {
        return Err(Fault::Header);
    }
    let header: Header = mem.read_obj(head.addr()).map_err(|_| Fault::Header)?;
    let sector = header.sector.to_native();
    match header.kind.to_native() {
        request_type::IN => {
            let len = rw(disk, mem, Direction::Read, sector, data)?;
            Ok((status::OK, len))
        }
        request_type::OUT => {
            rw(disk, mem, Direction::Write, sector, data)?;
            Ok((status::OK, 0))
        }
        request_type::FLUSH => {
            disk.flush().map_err(Fault::Io)?;
            Ok((status::OK, 0))
        }
        request_type::GET_ID => Ok((status::OK, get_id(disk, mem, data)?)),
        other => {
            log::debug!("virtio-blk: unsupported request type {other}");
            Ok((status::UNSUPP, 0))
        }
    }
}

/// Checks the data descriptors of a read or write and turns them into host segments.
fn segments(
    mem: &GuestMemoryMmap,
    dir: Direction,
    data: &[Descriptor],
) -> Result<(Vec<Segment>, u64), Fault> {
    let mut segs = Vec::with_capacity(data.len());
    let mut total: u64 = 0;
    for d in data {
        if d.is_write_only() != (dir == Direction::Read) {
            return Err(Fault::Direction);
        }
        if d.len() == 0 {
            continue;
        }
        let slice = mem
            .get_slice(d.addr(), d.len() as usize)
            .map_err(|_| Fault::Buffer)?;
        segs.push(Segment {
            ptr: slice.ptr_guard_mut().as_ptr(),
            len: slice.len(),
        });
        total += u64::from(d.len());
    }
    Ok((segs, total))
}

fn rw(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    dir: Direction,
    sector: u64,
    data: &[Descriptor],
) -> Result<u32, Fault> {
    if dir == Direction::Write && disk.read_only() {
        return Err(Fault::ReadOnly);
    }
    let (segs, total) = segments(mem, dir, data)?;
    if !total.is_multiple_of(SECTOR_SIZE) {
        return Err(Fault::Unaligned(total));
    }
    let count = total / SECTOR_SIZE;
    let end = sector.checked_add(count);
    if end.is_none_or(|end| end > disk.sectors()) {
        return Err(Fault::OutOfRange(sector, count));
    }
    // Cannot overflow: sector + count <= sectors, and sectors * 512 is the file size.
    disk.transfer(dir, sector * SECTOR_SIZE, &segs)
        .map_err(Fault::Io)?;
    // A chain carries less than 4 GiB (virtio-queue stops longer ones).
    Ok(u32::try_from(total).unwrap_or(u32::MAX))
}

fn get_id(disk: &Disk, mem: &GuestMemoryMmap, data: &[Descriptor]) -> Result<u32, Fault> {
    let mut id: &[u8] = disk.id();
    let mut written = 0u32;
    for d in data {
        if !d.is_write_only() {
            return Err(Fault::Direction);
        }
        let n = (d.len() as usize).min(id.len());
        mem.write_slice(&id[..n], d.addr())
            .map_err(|_| Fault::Buffer)?;
        id = &id[n..];
        written += n as u32;
    }
    debug_assert!(written as usize <= ID_LEN);
    Ok(written)
}
