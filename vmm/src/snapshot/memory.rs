//! Guest RAM in a snapshot: written as one file, the regions back to back, pages that are
//! all zero left as holes (a booted guest touches a fraction of its RAM); restored by
//! mapping that file copy-on-write (`MAP_PRIVATE`), so every VM restored from one snapshot
//! shares the pages it has not written through the host's page cache, and a restore
//! costs a few `mmap` calls whatever the guest's size. A VM whose memory a vhost-user
//! daemon maps too gets a copy of the file's data in its shared memory instead.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

/// Errors saving or mapping guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The memory file could not be written.
    #[error("cannot write guest memory to {0}")]
    Write(std::path::PathBuf, #[source] std::io::Error),
    /// Guest memory could not be read.
    #[error("cannot read guest memory at {0:#x}")]
    Read(u64, #[source] vm_memory::GuestMemoryError),
    /// Guest memory could not be written.
    #[error("cannot write guest memory at {0:#x}")]
    Fill(u64, #[source] vm_memory::GuestMemoryError),
    /// The memory file could not be opened.
    #[error("cannot open the snapshot's memory file {0}")]
    Open(std::path::PathBuf, #[source] std::io::Error),
    /// The memory file is not as long as the snapshot says.
    #[error("the snapshot's memory file is {found} bytes, not {expected}: truncated or replaced")]
    Length {
        /// What the state file records.
        expected: u64,
        /// What is on disk.
        found: u64,
    },
    /// The file could not be mapped.
    #[error("cannot map the snapshot's memory file")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
    /// The mapped regions do not form a guest memory.
    #[error("the snapshot's memory regions are invalid")]
    Regions,
}

const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

/// Writes every region of `memory` to `path`, back to back; returns the file's length.
pub fn save(memory: &GuestMemoryMmap, path: &Path) -> Result<u64, Error> {
    let fail = |e| Error::Write(path.to_path_buf(), e);
    let file = File::create(path).map_err(fail)?;
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for region in memory.iter() {
        let len = region.len();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let addr = region.start_addr().0 + done;
            vm_memory::Bytes::read_slice(memory, &mut buf[..n], GuestAddress(addr))
                .map_err(|e| Error::Read(addr, e))?;
            for (i, page) in buf[..n].chunks(PAGE).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    let at = offset + done + (i * PAGE) as u64;
                    file.write_all_at(page, at).map_err(fail)?;
                }
            }
            done += n as u64;
        }
        offset += len;
    }
    file.set_len(offset).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    Ok(offset)
}

/// Maps `path` copy-on-write as guest memory with the given `(start, len)` regions.
pub fn map(path: &Path, regions: &[(u64, u64)], expected: u64) -> Result<GuestMemoryMmap, Error> {
    let file = File::open(path).map_err(|e| Error::Open(path.to_path_buf(), e))?;
    check_len(&file, path, regions, expected)?;
    let mut mapped = Vec::with_capacity(regions.len());
    let mut offset = 0u64;
    for &(start, len) in regions {
        let region = MmapRegionBuilder::<()>::new(len as usize)
            .with_file_offset(FileOffset::new(
                file.try_clone()
                    .map_err(|e| Error::Open(path.to_path_buf(), e))?,
                offset,
            ))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(Error::Map)?;
        mapped.push(GuestRegionMmap::new(region, GuestAddress(start)).ok_or(Error::Regions)?);
        offset += len;
    }
    GuestMemoryMmap::from_regions(mapped).map_err(|_| Error::Regions)
}

/// Copies the memory file at `path` (`expected` bytes, the regions of `memory` back to
/// back) into `memory`, reading only the file's data (its holes are zero pages, which
/// fresh memory already has).
pub fn copy_into(memory: &GuestMemoryMmap, path: &Path, expected: u64) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::Open(path.to_path_buf(), e))?;
    let regions: Vec<(u64, u64)> = memory.iter().map(|r| (r.start_addr().0, r.len())).collect();
    check_len(&file, path, &regions, expected)?;
    let read = |e| Error::Open(path.to_path_buf(), e);
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    for (start, len) in regions {
        let mut at = offset;
        while let Some((data, end)) = next_data(&file, at, offset + len).map_err(read)? {
            let mut pos = data;
            while pos < end {
                let n = (end - pos).min(CHUNK as u64) as usize;
                file.read_exact_at(&mut buf[..n], pos).map_err(read)?;
                vm_memory::Bytes::write_slice(
                    memory,
                    &buf[..n],
                    GuestAddress(start + pos - offset),
                )
                .map_err(|e| Error::Fill(start + pos - offset, e))?;
                pos += n as u64;
            }
            at = end;
        }
        offset += len;
    }
    Ok(())
}

/// The next extent of data in `file` at or after `from`, before `limit`: `(start, end)`.
fn next_data(file: &File, from: u64, limit: u64) -> std::io::Result<Option<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    if from >= limit {
        return Ok(None);
    }
    let seek = |whence, at: u64| {
        // SAFETY: lseek on a descriptor we own; it takes no pointers.
        let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
        match r {
            r if r >= 0 => Ok(Some(r as u64)),
            _ => match std::io::Error::last_os_error() {
                // No data at or after `at`.
                e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
                e => Err(e),
            },
        }
    };
    let Some(data) = seek(libc::SEEK_DATA, from)?.filter(|d| *d < limit) else {
        return Ok(None);
    };
    let hole = seek(libc::SEEK_HOLE, data)?.unwrap_or(limit);
    Ok(Some((data, hole.min(limit))))
}

/// Checks that the memory file at `path` holds `expected` bytes, all of `regions`.
pub fn check(path: &Path, regions: &[(u64, u64)], expected: u64) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| Error::Open(path.to_path_buf(), e))?;
    check_len(&file, path, regions, expected)
}

fn check_len(file: &File, path: &Path, regions: &[(u64, u64)], expected: u64) -> Result<(), Error> {
    let found = file
        .metadata()
        .map_err(|e| Error::Open(path.to_path_buf(), e))?
        .len();
    let total: u64 = regions.iter().map(|r| r.1).sum();
    if found != expected || total != expected {
        return Err(Error::Length { expected, found });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    #[test]
    fn a_copy_into_shared_memory_has_the_saved_pages_and_zeros_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let ranges = [(GuestAddress(0), 1 << 20), (GuestAddress(4 << 20), 2 << 20)];
        let m = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        m.write_obj(0x1122_3344u32, GuestAddress(0x2000)).unwrap();
        m.write_obj(0x5566_7788u32, GuestAddress((5 << 20) + 8))
            .unwrap();
        let path = dir.path().join("mem");
        let len = save(&m, &path).unwrap();
        let shared =
            crate::vm::ram::create_regions(&[(0, 1 << 20), (4 << 20, 2 << 20)], true).unwrap();
        copy_into(&shared, &path, len).unwrap();
        assert_eq!(
            shared.read_obj::<u32>(GuestAddress(0x2000)).unwrap(),
            0x1122_3344
        );
        assert_eq!(
            shared.read_obj::<u32>(GuestAddress((5 << 20) + 8)).unwrap(),
            0x5566_7788
        );
        assert_eq!(shared.read_obj::<u32>(GuestAddress(0x3000)).unwrap(), 0);
        let e = copy_into(&shared, &path, len + 4096).unwrap_err();
        assert!(matches!(e, Error::Length { .. }), "{e}");
    }

    #[test]
    fn memory_round_trips_through_a_sparse_file_copy_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        let regions = [(0u64, 0x10_0000u64), (0x20_0000, 0x4_0000)];
        let ranges: Vec<_> = regions
            .iter()
            .map(|&(s, l)| (GuestAddress(s), l as usize))
            .collect();
        let m = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        m.write_slice(b"first", GuestAddress(0x1234)).unwrap();
        m.write_slice(b"second", GuestAddress(0x20_0010)).unwrap();
        let len = save(&m, &path).unwrap();
        assert_eq!(len, 0x14_0000);
        // Two pages hold data; the rest are holes.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&path).unwrap());
        assert!(blocks <= 2 * 8 + 8, "{blocks} blocks");

        let r = map(&path, &regions, len).unwrap();
        let mut buf = [0u8; 6];
        r.read_slice(&mut buf, GuestAddress(0x20_0010)).unwrap();
        assert_eq!(&buf, b"second");
        r.write_slice(b"FIRST", GuestAddress(0x1234)).unwrap();
        // Writes stay private to the restored VM.
        let again = map(&path, &regions, len).unwrap();
        let mut buf = [0u8; 5];
        again.read_slice(&mut buf, GuestAddress(0x1234)).unwrap();
        assert_eq!(&buf, b"first");

        let e = map(&path, &regions, len + 4096).unwrap_err();
        assert!(matches!(e, Error::Length { .. }), "{e}");
    }
}
