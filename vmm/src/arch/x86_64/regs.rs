//! Boot register state: general registers, segment and control registers for 64-bit
//! long mode, and the FPU. The boot vCPU starts at the kernel entry with `%rsi` pointing
//! at the zero page, as the Linux 64-bit boot protocol asks.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::gdt::{self, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use super::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, ZERO_PAGE_START};

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Errors while preparing the boot state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GDT or IDT could not be written.
    #[error("cannot write the boot descriptor tables to guest memory")]
    WriteTables(#[source] vm_memory::GuestMemoryError),
}

/// General registers for entering the kernel at `entry`.
pub fn boot_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rflags: 0x2, // bit 1 is reserved and always set
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    }
}

/// Writes the GDT and an empty IDT to guest memory.
pub fn write_descriptor_tables<M: GuestMemoryBackend>(mem: &M) -> Result<(), Error> {
    for (i, desc) in gdt::boot_gdt().iter().enumerate() {
        mem.write_obj(*desc, GuestAddress(GDT_START + 8 * i as u64))
            .map_err(Error::WriteTables)?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_START))
        .map_err(Error::WriteTables)
}

/// Turns the vCPU's current special registers into long-mode boot state with paging on
/// (`cr3` from the identity tables).
pub fn long_mode_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let table = gdt::boot_gdt();
    let code = gdt::segment(table[CODE_INDEX as usize], CODE_INDEX);
    let data = gdt::segment(table[DATA_INDEX as usize], DATA_INDEX);
    let tss = gdt::segment(table[TSS_INDEX as usize], TSS_INDEX);

    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.cr3 = cr3;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// FPU state after reset: x87 control word and SSE control/status as hardware sets them.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::PML4_START;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn registers_point_at_entry_stack_and_zero_page() {
        let r = boot_regs(0x100_0000);
        assert_eq!(
            (r.rip, r.rsp, r.rsi, r.rflags),
            (0x100_0000, 0x8ff0, 0x7000, 2)
        );
    }

    #[test]
    fn sregs_enter_long_mode_with_paging() {
        let s = long_mode_sregs(kvm_sregs::default(), PML4_START);
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!(s.cr4 & X86_CR4_PAE, X86_CR4_PAE);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!((s.cs.selector, s.cs.l), (0x08, 1));
        assert_eq!((s.ss.selector, s.tr.selector), (0x10, 0x18));
        assert_eq!((s.gdt.base, s.gdt.limit), (GDT_START, 31));
    }

    #[test]
    fn tables_land_in_guest_memory() {
        let m: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        write_descriptor_tables(&m).unwrap();
        let code: u64 = m.read_obj(GuestAddress(GDT_START + 8)).unwrap();
        assert_eq!(code, gdt::boot_gdt()[1]);
    }
}
