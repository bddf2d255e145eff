//! The Intel MultiProcessor Specification 1.4 table: how a kernel without ACPI learns the
//! vCPUs (one local APIC each), the I/O APIC and the routing of the 24 legacy IRQs.
//! Written as bytes into the EBDA, where the kernel scans for the `_MP_` signature.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::{APIC_ADDR, APIC_VERSION, EBDA_START, IOAPIC_ADDR, IOAPIC_PINS};

const SPEC_REV: u8 = 4;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const BUS_ID_ISA: u8 = 0;
/// CPU signature (family 6) and feature flags (FPU, APIC) for processor entries.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;
/// Highest number of vCPUs the table numbers (APIC IDs stay below the I/O APIC's).
pub const MAX_CPUS: u8 = 254;

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More vCPUs than the table can describe.
    #[error("the MP table describes at most {MAX_CPUS} vCPUs, not {0}")]
    TooManyCpus(u8),
    /// Guest memory does not cover the EBDA.
    #[error("cannot write the MP table to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

fn processor_entry(apic_id: u8) -> [u8; 20] {
    let mut e = [0u8; 20];
    e[0] = ENTRY_PROCESSOR;
    e[1] = apic_id;
    e[2] = APIC_VERSION;
    e[3] = CPU_ENABLED | if apic_id == 0 { CPU_BOOTPROCESSOR } else { 0 };
    e[4..8].copy_from_slice(&CPU_SIGNATURE.to_le_bytes());
    e[8..12].copy_from_slice(&CPU_FEATURES.to_le_bytes());
    e
}

fn interrupt_entry(kind: u8, irq_type: u8, bus_irq: u8, dest: u8, dest_pin: u8) -> [u8; 8] {
    // Flags 0: polarity and trigger conform to the bus (edge, active high for ISA).
    [kind, irq_type, 0, 0, BUS_ID_ISA, bus_irq, dest, dest_pin]
}

/// The whole MP structure (floating pointer followed by the configuration table) as it is
/// placed at `base`.
pub fn build(base: u64, cpus: u8) -> Result<Vec<u8>, Error> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::TooManyCpus(cpus));
    }
    let ioapic_id = cpus;
    let mut entries: Vec<u8> = Vec::new();
    for id in 0..cpus {
        entries.extend_from_slice(&processor_entry(id));
    }
    entries.extend_from_slice(&[ENTRY_BUS, BUS_ID_ISA, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut ioapic = [ENTRY_IOAPIC, ioapic_id, APIC_VERSION, 1, 0, 0, 0, 0];
    ioapic[4..8].copy_from_slice(&IOAPIC_ADDR.to_le_bytes());
    entries.extend_from_slice(&ioapic);
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&interrupt_entry(
            ENTRY_INTSRC,
            INT_TYPE_INT,
            irq,
            ioapic_id,
            irq,
        ));
    }
    entries.extend_from_slice(&interrupt_entry(ENTRY_LINTSRC, INT_TYPE_EXTINT, 0, 0, 0));
    entries.extend_from_slice(&interrupt_entry(ENTRY_LINTSRC, INT_TYPE_NMI, 0, 0xff, 1));
    let entry_count = u16::from(cpus) + 2 + u16::from(IOAPIC_PINS) + 2;

    let mut table = vec![0u8; 44];
    table[0..4].copy_from_slice(b"PCMP");
    table[4..6].copy_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table[6] = SPEC_REV;
    table[8..16].copy_from_slice(b"HUSK    ");
    table[16..28].copy_from_slice(b"MICROVM     ");
    table[34..36].copy_from_slice(&entry_count.to_le_bytes());
    table[36..40].copy_from_slice(&APIC_ADDR.to_le_bytes());
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut mpf = vec![0u8; 16];
    mpf[0..4].copy_from_slice(b"_MP_");
    mpf[4..8].copy_from_slice(&((base + 16) as u32).to_le_bytes());
    mpf[8] = 1; // length in 16-byte units
    mpf[9] = SPEC_REV;
    mpf[10] = checksum(&mpf);
    mpf.extend_from_slice(&table);
    Ok(mpf)
}

/// Writes the MP table for `cpus` vCPUs into the EBDA.
pub fn write<M: GuestMemoryBackend>(mem: &M, cpus: u8) -> Result<(), Error> {
    let bytes = build(EBDA_START, cpus)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(Error::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn floating_pointer_and_table_checksum_to_zero() {
        for cpus in [1, 2, 8, 32] {
            let t = build(EBDA_START, cpus).unwrap();
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[0..16]), 0);
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0);
            let ptr = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
            assert_eq!(u64::from(ptr), EBDA_START + 16);
        }
    }

    /// Walks the entries as the kernel's `smp_read_mpc` does.
    #[test]
    fn entries_describe_cpus_ioapic_and_irqs() {
        let t = build(EBDA_START, 4).unwrap();
        let table = &t[16..];
        let count = u16::from_le_bytes([table[34], table[35]]);
        let mut off = 44;
        let (mut cpus, mut bsp, mut ioapics, mut intsrc, mut lint) = (0, 0, 0, 0, 0);
        for _ in 0..count {
            match table[off] {
                ENTRY_PROCESSOR => {
                    assert_eq!(table[off + 1], cpus);
                    if table[off + 3] & CPU_BOOTPROCESSOR != 0 {
                        bsp += 1;
                    }
                    cpus += 1;
                    off += 20;
                }
                ENTRY_IOAPIC => {
                    assert_eq!(table[off + 1], 4);
                    ioapics += 1;
                    off += 8;
                }
                ENTRY_INTSRC => {
                    assert_eq!(table[off + 5], table[off + 7]);
                    intsrc += 1;
                    off += 8;
                }
                ENTRY_LINTSRC => {
                    lint += 1;
                    off += 8;
                }
                ENTRY_BUS => off += 8,
                other => panic!("unknown entry type {other}"),
            }
        }
        assert_eq!(off, table.len());
        assert_eq!((cpus, bsp, ioapics, intsrc, lint), (4, 1, 1, 24, 2));
    }

    #[test]
    fn cpu_count_is_bounded() {
        assert!(matches!(build(EBDA_START, 0), Err(Error::TooManyCpus(0))));
        assert!(matches!(
            build(EBDA_START, 255),
            Err(Error::TooManyCpus(255))
        ));
    }

    #[test]
    fn lands_in_the_ebda() {
        let m: GuestMemoryMmap =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write(&m, 2).unwrap();
        let mut sig = [0u8; 4];
        m.read_slice(&mut sig, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
