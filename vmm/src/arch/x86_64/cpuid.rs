//! The CPUID a vCPU sees: KVM's supported set, with husk's topology (APIC IDs, core
//! counts), the hypervisor bit, no PMU, and on instruction-emulating KVM backends the
//! features whose instructions their emulator cannot execute masked out (the kernel then
//! takes its fallback paths; the same effect as `clearcpuid=`, without the kernel's
//! "tainting" warning).

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

// Leaf 1.
const ECX_FMA: u32 = 1 << 12;
const ECX_CMPXCHG16B: u32 = 1 << 13;
const ECX_MOVBE: u32 = 1 << 22;
const ECX_F16C: u32 = 1 << 29;
const ECX_RDRAND: u32 = 1 << 30;
const ECX_POPCNT: u32 = 1 << 23;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
// Leaf 7, subleaf 0, EBX: the only features kept on emulating backends (no new
// instructions: supervisor-mode execution prevention, enhanced REP MOVSB).
const EBX7_SMEP: u32 = 1 << 7;
const EBX7_ERMS: u32 = 1 << 9;
#[cfg(test)]
const EBX7_SMAP: u32 = 1 << 20;
/// Leaf 1 ECX features whose instructions an emulating backend rejects or may reject.
const ECX1_UNEMULATED: u32 = ECX_FMA
    | ECX_CMPXCHG16B
    | ECX_POPCNT
    | ECX_MOVBE
    | ECX_XSAVE
    | ECX_OSXSAVE
    | ECX_AVX
    | ECX_F16C
    | ECX_RDRAND;
// Leaf 0xb level types.
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// How to shape CPUID for one vCPU.
#[derive(Debug, Clone, Copy)]
pub struct CpuidPolicy {
    /// This vCPU's index, which is also its APIC ID.
    pub vcpu_id: u8,
    /// Number of vCPUs in the VM.
    pub vcpu_count: u8,
    /// Hide features an instruction-emulating backend cannot execute (XSAVE, AVX,
    /// POPCNT, CMPXCHG16B, BMI). Never set on hardware virtualization.
    pub emulation_safe: bool,
}

fn bits_for(count: u8) -> u32 {
    // Number of APIC-ID bits needed to number `count` cores.
    u32::from(count.max(1)).next_power_of_two().trailing_zeros()
}

/// Applies `policy` to one CPUID entry.
pub fn shape_entry(entry: &mut kvm_cpuid_entry2, policy: &CpuidPolicy) {
    let apic_id = u32::from(policy.vcpu_id);
    let count = u32::from(policy.vcpu_count);
    match entry.function {
        0x1 => {
            entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
            entry.ecx |= ECX_HYPERVISOR;
            // KVM's LAPIC emulates the TSC deadline timer even where the host lacks it.
            entry.ecx |= ECX_TSC_DEADLINE;
            if count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
            if policy.emulation_safe {
                entry.ecx &= !ECX1_UNEMULATED;
            }
        }
        0x4 => {
            // Cores per package - 1 in EAX[31:26]; threads sharing this cache - 1 in [25:14].
            entry.eax &= 0x3fff;
            entry.eax |= (count - 1) << 26;
            if entry.eax & 0xe0 >= 0x60 {
                entry.eax |= (count - 1) << 14; // L3 is shared by every core
            }
        }
        0x6 => {
            // No thermal or power management.
            entry.eax = 0;
            entry.ecx = 0;
        }
        0x7 if policy.emulation_safe => {
            // Structured extended features are almost all new instructions (BMI, AVX2/512,
            // RDSEED, ADX, CLAC/STAC for SMAP, FSGSBASE, PKU, ...): seen here, PVM's
            // emulator stops at BMI2 and at the kernel's first CLAC.
            entry.ebx &= if entry.index == 0 {
                EBX7_SMEP | EBX7_ERMS
            } else {
                0
            };
            entry.eax = if entry.index == 0 { entry.eax } else { 0 };
            entry.ecx = 0;
            entry.edx = 0;
        }
        0xa => {
            // No PMU: perf counters are not virtualized for guests.
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        0xb | 0x1f => {
            entry.edx = apic_id;
            match entry.index {
                0 => {
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = (LEVEL_SMT << 8) | entry.index;
                }
                1 => {
                    entry.eax = bits_for(policy.vcpu_count);
                    entry.ebx = count;
                    entry.ecx = (LEVEL_CORE << 8) | entry.index;
                }
                _ => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = entry.index;
                }
            }
        }
        0xd if policy.emulation_safe => {
            // No XSAVE state components.
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        _ => {}
    }
}

/// Shapes the whole CPUID table for one vCPU.
pub fn shape(cpuid: &mut CpuId, policy: &CpuidPolicy) {
    for entry in cpuid.as_mut_slice() {
        shape_entry(entry, policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn policy(id: u8, count: u8, emulation_safe: bool) -> CpuidPolicy {
        CpuidPolicy {
            vcpu_id: id,
            vcpu_count: count,
            emulation_safe,
        }
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = leaf(1, 0);
        e.ebx = 0xffff_0808;
        shape_entry(&mut e, &policy(3, 4, false));
        assert_eq!(e.ebx, 0x0304_0808);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn emulation_safe_masks_unemulated_instructions() {
        let mut e = leaf(1, 0);
        e.ecx = ECX_POPCNT | ECX_XSAVE | ECX_AVX | ECX_CMPXCHG16B | 1;
        shape_entry(&mut e, &policy(0, 1, true));
        assert_eq!(
            e.ecx & (ECX_POPCNT | ECX_XSAVE | ECX_AVX | ECX_CMPXCHG16B),
            0
        );
        assert_eq!(e.ecx & 1, 1);
        let mut e7 = leaf(7, 0);
        e7.ebx = EBX7_SMAP | EBX7_SMEP | (1 << 8) | 1;
        e7.ecx = 0xffff;
        shape_entry(&mut e7, &policy(0, 1, true));
        assert_eq!((e7.ebx, e7.ecx), (EBX7_SMEP, 0));
    }

    #[test]
    fn hardware_keeps_its_features() {
        let mut e = leaf(1, 0);
        e.ecx = ECX_POPCNT | ECX_XSAVE | ECX_AVX;
        shape_entry(&mut e, &policy(0, 1, false));
        assert_eq!(
            e.ecx & (ECX_POPCNT | ECX_XSAVE | ECX_AVX),
            ECX_POPCNT | ECX_XSAVE | ECX_AVX
        );
    }

    #[test]
    fn extended_topology_numbers_cores() {
        let mut smt = leaf(0xb, 0);
        let mut core = leaf(0xb, 1);
        shape_entry(&mut smt, &policy(5, 6, false));
        shape_entry(&mut core, &policy(5, 6, false));
        assert_eq!((smt.ebx, smt.ecx, smt.edx), (1, 0x100, 5));
        assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
    }
}
