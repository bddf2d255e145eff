//! The guest-physical memory map husk gives every x86_64 microVM.
//!
//! Low memory holds the boot structures at fixed addresses (the Linux boot protocol and
//! the MP specification expect them below 1 MiB), the kernel loads at its ELF physical
//! addresses (16 MiB for a default vmlinux), and the 32-bit MMIO hole below 4 GiB is kept
//! free of RAM for devices. Nothing here depends on the kernel.

/// Global descriptor table.
pub const GDT_START: u64 = 0x500;
/// Interrupt descriptor table (empty; the kernel installs its own).
pub const IDT_START: u64 = 0x520;
/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-mapping page tables: PML4, then one PDPT, then one PD of 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (512 entries of 2 MiB: the first 1 GiB).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line the x86 kernel accepts (`COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// First byte above the legacy hole (video RAM, option ROMs, BIOS).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: guest RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Where KVM keeps the TSS pages for real-mode emulation (inside the MMIO hole, unused).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Highest address an initramfs may end at for kernels that do not say otherwise.
pub const INITRD_ADDR_MAX: u64 = 0x7fff_ffff;
/// I/O APIC base.
pub const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base.
pub const APIC_ADDR: u32 = 0xfee0_0000;
/// Version reported for the I/O APIC and local APICs in the MP table.
pub const APIC_VERSION: u8 = 0x14;
/// Number of I/O APIC pins (legacy IRQs 0..24).
pub const IOAPIC_PINS: u8 = 24;

/// The guest RAM regions for `mem_size` bytes of memory: one region below the MMIO hole
/// and, for guests larger than that, a second one from 4 GiB up.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, mem_size - MMIO_HOLE_START),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region() {
        assert_eq!(ram_regions(128 << 20), vec![(0, 128 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_hole() {
        let regions = ram_regions(4 << 30);
        assert_eq!(
            regions,
            vec![(0, MMIO_HOLE_START), (1 << 32, (4 << 30) - MMIO_HOLE_START)]
        );
        let total: u64 = regions.iter().map(|r| r.1).sum();
        assert_eq!(total, 4 << 30);
    }

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (GDT_START, 4 * 8),
            (IDT_START, 8),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
        ];
        areas.sort();
        for pair in areas.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:x?} overlap");
        }
        const {
            assert!(
                BOOT_STACK_POINTER < PML4_START && BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000
            );
            assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
        }
    }
}
