//! Everything specific to x86_64: the memory map, boot structures (zero page, e820, MP
//! table, GDT, page tables) and vCPU state (CPUID, MSRs, registers, LAPIC).

pub mod bootparams;
pub mod cpuid;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;
