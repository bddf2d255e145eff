//! Model-specific registers every boot vCPU starts with: syscall/sysenter targets cleared,
//! TSC at zero, and fast string operations enabled.

use kvm_bindings::{Msrs, kvm_msr_entry};

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 0x1;

/// Errors while building the MSR list.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The KVM MSR list could not be allocated.
    #[error("cannot build the boot MSR list")]
    Build(#[source] vmm_sys_util::fam::Error),
}

/// The boot MSR entries (index, value).
pub fn boot_msr_values() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

/// The boot MSRs as the KVM structure `KVM_SET_MSRS` takes.
pub fn boot_msrs() -> Result<Msrs, Error> {
    let entries: Vec<kvm_msr_entry> = boot_msr_values()
        .into_iter()
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(Error::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_enable_fast_strings_and_clear_syscall_targets() {
        let msrs = boot_msrs().unwrap();
        let entries = msrs.as_slice();
        assert_eq!(entries.len(), boot_msr_values().len());
        let misc = entries
            .iter()
            .find(|e| e.index == MSR_IA32_MISC_ENABLE)
            .unwrap();
        assert_eq!(misc.data, MISC_ENABLE_FAST_STRING);
        assert!(
            entries
                .iter()
                .filter(|e| e.index != MSR_IA32_MISC_ENABLE)
                .all(|e| e.data == 0)
        );
    }
}
