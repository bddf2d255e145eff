//! The boot GDT: flat 64-bit code and data segments and a TSS, and their `kvm_segment`
//! forms for the vCPU's segment registers.

use kvm_bindings::kvm_segment;

/// Index of the 64-bit code segment (selector 0x08).
pub const CODE_INDEX: u16 = 1;
/// Index of the data segment (selector 0x10).
pub const DATA_INDEX: u16 = 2;
/// Index of the TSS (selector 0x18).
pub const TSS_INDEX: u16 = 3;

/// Packs a descriptor from its flags (access byte in bits 0..8, flags nibble in 12..16),
/// base and 20-bit limit.
pub const fn entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The four boot descriptors: null, code64, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        entry(0, 0, 0),
        entry(0xa09b, 0, 0xfffff), // code: present, DPL0, exec/read, L=1, G=1
        entry(0xc093, 0, 0xfffff), // data: present, DPL0, read/write, D/B=1, G=1
        entry(0x808b, 0, 0xfffff), // TSS: present, busy 64-bit TSS, G=1
    ]
}

/// The `kvm_segment` a descriptor describes when loaded with selector `index * 8`.
pub fn segment(descriptor: u64, index: u16) -> kvm_segment {
    let base = ((descriptor >> 16) & 0x00ff_ffff) | ((descriptor >> 32) & 0xff00_0000);
    let raw_limit = (descriptor & 0xffff) | ((descriptor >> 32) & 0xf_0000);
    let granularity = ((descriptor >> 55) & 1) as u8;
    // With 4 KiB granularity the limit counts pages: the last byte is limit * 4K + 0xfff.
    let limit = if granularity == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector: index * 8,
        type_: ((descriptor >> 40) & 0xf) as u8,
        present: ((descriptor >> 47) & 1) as u8,
        dpl: ((descriptor >> 45) & 3) as u8,
        db: ((descriptor >> 54) & 1) as u8,
        s: ((descriptor >> 44) & 1) as u8,
        l: ((descriptor >> 53) & 1) as u8,
        g: granularity,
        avl: ((descriptor >> 52) & 1) as u8,
        unusable: u8::from((descriptor >> 47) & 1 == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_flat_long_mode() {
        let gdt = boot_gdt();
        let cs = segment(gdt[CODE_INDEX as usize], CODE_INDEX);
        assert_eq!(cs.selector, 0x08);
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.present, cs.s, cs.dpl),
            (1, 0, 1, 1, 1, 0)
        );
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn data_and_tss_segments() {
        let gdt = boot_gdt();
        let ds = segment(gdt[DATA_INDEX as usize], DATA_INDEX);
        assert_eq!(
            (ds.selector, ds.type_, ds.db, ds.l, ds.s),
            (0x10, 0x3, 1, 0, 1)
        );
        let tss = segment(gdt[TSS_INDEX as usize], TSS_INDEX);
        assert_eq!(
            (tss.selector, tss.type_, tss.s, tss.present),
            (0x18, 0xb, 0, 1)
        );
    }

    #[test]
    fn entry_round_trips_base_and_limit() {
        let d = entry(0x4093, 0x1234_5678, 0xabcde);
        let s = segment(d, 5);
        assert_eq!((s.base, s.limit, s.g), (0x1234_5678, 0xabcde, 0));
        assert_eq!(segment(0, 0).unusable, 1);
    }
}
