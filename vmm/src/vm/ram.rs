//! Guest RAM: anonymous private memory by default; a sealed-size memfd mapped
//! `MAP_SHARED` when a vhost-user daemon (virtiofsd) must map the same pages, each region
//! at its offset in the memfd so the daemon can find it from the region's file offset.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::arch::x86_64::layout;

/// Errors creating guest RAM.
#[derive(Debug, thiserror::Error)]
pub enum RamError {
    /// Anonymous memory could not be mapped.
    #[error("cannot allocate {0} MiB of guest memory")]
    Anonymous(u64, #[source] vm_memory::mmap::FromRangesError),
    /// The memfd could not be made or sized.
    #[error("cannot make {0} MiB of shareable guest memory (memfd)")]
    Memfd(u64, #[source] std::io::Error),
    /// A region of the memfd could not be mapped.
    #[error("cannot map shareable guest memory")]
    Map(#[source] vm_memory::mmap::MmapRegionError),
    /// The regions do not form a guest memory (a layout bug).
    #[error("the guest memory regions are invalid")]
    Regions,
}

/// `bytes` of guest RAM laid out as the architecture wants; `shared` puts it in a memfd.
pub fn create(bytes: u64, shared: bool) -> Result<GuestMemoryMmap, RamError> {
    create_regions(&layout::ram_regions(bytes), shared)
}

/// Guest RAM of the `(start, len)` regions; `shared` puts it in one memfd.
pub fn create_regions(ranges: &[(u64, u64)], shared: bool) -> Result<GuestMemoryMmap, RamError> {
    let bytes: u64 = ranges.iter().map(|r| r.1).sum();
    let ranges = ranges.to_vec();
    if !shared {
        let ranges: Vec<(GuestAddress, usize)> = ranges
            .into_iter()
            .map(|(start, len)| (GuestAddress(start), len as usize))
            .collect();
        // Anonymous, MAP_NORESERVE: host pages are only used once the guest touches them.
        return GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|e| RamError::Anonymous(bytes >> 20, e));
    }
    let file = memfd(bytes).map_err(|e| RamError::Memfd(bytes >> 20, e))?;
    let mut regions = Vec::with_capacity(ranges.len());
    let mut offset = 0u64;
    for (start, len) in ranges {
        let handle = file
            .try_clone()
            .map_err(|e| RamError::Memfd(bytes >> 20, e))?;
        let region = MmapRegionBuilder::<()>::new(len as usize)
            .with_file_offset(FileOffset::new(handle, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
            .build()
            .map_err(RamError::Map)?;
        regions.push(GuestRegionMmap::new(region, GuestAddress(start)).ok_or(RamError::Regions)?);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|_| RamError::Regions)
}

/// A memfd of `bytes` whose size can no longer change (a shrink would fault the VMM).
fn memfd(bytes: u64) -> std::io::Result<File> {
    const NAME: &CStr = c"husk-guest-ram";
    // SAFETY: NAME is a NUL-terminated string that outlives the call.
    let fd =
        unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(bytes)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own; F_ADD_SEALS takes an integer.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn shared_ram_is_one_memfd_with_regions_at_their_offsets() {
        let m = create(64 << 20, true).unwrap();
        let mut expected = 0;
        for r in m.iter() {
            let fo = r.file_offset().expect("a file-backed region");
            assert_eq!(fo.start(), expected);
            expected += r.len();
        }
        assert_eq!(expected, 64 << 20);
        m.write_obj(0xdead_beefu32, GuestAddress(0x1000)).unwrap();
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
    }

    #[test]
    fn private_ram_has_no_file() {
        let m = create(64 << 20, false).unwrap();
        assert!(m.iter().all(|r| r.file_offset().is_none()));
    }
}
