//! Identity page tables for entering the kernel in long mode: one PML4 entry, one PDPT
//! entry and a page directory of 512 2-MiB pages, mapping the first 1 GiB 1:1. The kernel
//! replaces them with its own as soon as it runs.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{PDE_START, PDPTE_START, PML4_START};

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Errors while writing the page tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Guest memory does not cover the page-table pages.
    #[error("cannot write the boot page tables to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// The 512 page-directory entries mapping `[0, 1 GiB)` with 2 MiB pages.
pub fn pde_entries() -> impl Iterator<Item = u64> {
    (0..512u64).map(|i| (i << 21) | PAGE_SIZE_2M | PRESENT_WRITABLE)
}

/// Writes the tables and returns the value for CR3.
pub fn write<M: GuestMemoryBackend>(mem: &M) -> Result<u64, Error> {
    mem.write_obj(PDPTE_START | PRESENT_WRITABLE, GuestAddress(PML4_START))
        .map_err(Error::Write)?;
    mem.write_obj(PDE_START | PRESENT_WRITABLE, GuestAddress(PDPTE_START))
        .map_err(Error::Write)?;
    for (i, pde) in pde_entries().enumerate() {
        mem.write_obj(pde, GuestAddress(PDE_START + (i as u64) * 8))
            .map_err(Error::Write)?;
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// Walks the tables the way the MMU does for a 2 MiB mapping.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(cr3 + ((va >> 39) & 0x1ff) * 8))
            .ok()?;
        if pml4e & 1 == 0 {
            return None;
        }
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8))
            .ok()?;
        if pdpte & 1 == 0 {
            return None;
        }
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8))
            .ok()?;
        if pde & 1 == 0 || pde & PAGE_SIZE_2M == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff) | (va & 0x1f_ffff))
    }

    #[test]
    fn first_gigabyte_is_identity_mapped() {
        let m = mem();
        let cr3 = write(&m).unwrap();
        assert_eq!(cr3, PML4_START);
        for va in [0u64, 0x1000, 0x100_0000, 0x1234_5678, (1 << 30) - 1] {
            assert_eq!(translate(&m, cr3, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&m, cr3, 1 << 30), None);
    }

    #[test]
    fn too_small_memory_is_an_error() {
        let m: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x9000)]).unwrap();
        assert!(write(&m).is_err());
    }
}
