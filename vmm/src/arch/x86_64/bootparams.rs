//! The zero page (`struct boot_params`) of the Linux x86 boot protocol, with the e820
//! memory map husk builds for the guest.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};

use super::layout::{EBDA_START, HIMEM_START, MMIO_HOLE_END, MMIO_HOLE_START};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;

/// Errors while building the zero page.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// More e820 entries than the zero page holds.
    #[error("the e820 map needs more than {0} entries")]
    TooManyE820Entries(usize),
    /// The guest has too little memory for the boot layout.
    #[error("guest memory of {0} bytes is too small to reach high memory")]
    MemoryTooSmall(u64),
}

/// One e820 entry: `[addr, addr + size)` of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The e820 map for a guest with `mem_size` bytes of RAM laid out as in `layout`.
pub fn e820_map(mem_size: u64) -> Result<Vec<E820Entry>, Error> {
    if mem_size <= HIMEM_START {
        return Err(Error::MemoryTooSmall(mem_size));
    }
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    };
    let mut map = vec![
        ram(0, EBDA_START),
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    if mem_size <= MMIO_HOLE_START {
        map.push(ram(HIMEM_START, mem_size));
    } else {
        map.push(ram(HIMEM_START, MMIO_HOLE_START));
        map.push(ram(
            MMIO_HOLE_END,
            MMIO_HOLE_END + (mem_size - MMIO_HOLE_START),
        ));
    }
    Ok(map)
}

/// Where the command line and the initramfs sit in guest memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootInputs {
    /// Guest address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Its length including the NUL.
    pub cmdline_size: u32,
    /// Guest address and size of the initramfs, if any.
    pub initrd: Option<(u64, u32)>,
}

/// Builds the zero page. `header` is the bzImage's own setup header, `None` for an ELF.
pub fn build(
    header: Option<setup_header>,
    inputs: &BootInputs,
    e820: &[E820Entry],
) -> Result<boot_params, Error> {
    let mut params = boot_params::default();
    if let Some(hdr) = header {
        params.hdr = hdr;
    }
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = inputs.cmdline_addr as u32;
    params.hdr.cmdline_size = inputs.cmdline_size;
    if let Some((addr, size)) = inputs.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size;
    }
    if e820.len() > params.e820_table.len() {
        return Err(Error::TooManyE820Entries(params.e820_table.len()));
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_for_small_guest() {
        let map = e820_map(256 << 20).unwrap();
        assert_eq!(
            map,
            vec![
                E820Entry {
                    addr: 0,
                    size: 0x9fc00,
                    kind: E820_RAM
                },
                E820Entry {
                    addr: 0x9fc00,
                    size: 0x100000 - 0x9fc00,
                    kind: E820_RESERVED
                },
                E820Entry {
                    addr: 0x100000,
                    size: (256 << 20) - 0x100000,
                    kind: E820_RAM
                },
            ]
        );
    }

    #[test]
    fn e820_for_large_guest_splits_around_the_hole() {
        let map = e820_map(6 << 30).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_HOLE_START);
        assert_eq!(map[3].addr, 1 << 32);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, (6 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn e820_refuses_tiny_memory() {
        assert_eq!(e820_map(0x8000), Err(Error::MemoryTooSmall(0x8000)));
    }

    #[test]
    fn zero_page_carries_magic_cmdline_initrd_and_map() {
        let map = e820_map(128 << 20).unwrap();
        let inputs = BootInputs {
            cmdline_addr: 0x20000,
            cmdline_size: 42,
            initrd: Some((0x700_0000, 4096)),
        };
        let p = build(None, &inputs, &map).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
        assert_eq!({ p.hdr.kernel_alignment }, 0x100_0000);
        assert_eq!({ p.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x700_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 4096);
        assert_eq!(p.e820_entries, 3);
        let last = p.e820_table[2];
        assert_eq!(
            ({ last.addr }, { last.size }, { last.r#type }),
            (0x100000, (128 << 20) - 0x100000, 1)
        );
    }

    #[test]
    fn bzimage_header_is_kept() {
        let hdr = setup_header {
            version: 0x20f,
            kernel_alignment: 0x20_0000,
            ..Default::default()
        };
        let p = build(Some(hdr), &BootInputs::default(), &[]).unwrap();
        assert_eq!({ p.hdr.version }, 0x20f);
        assert_eq!({ p.hdr.kernel_alignment }, 0x20_0000);
    }
}
