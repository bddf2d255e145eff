//! The VM-wide state KVM emulates in the kernel: the two PICs, the IOAPIC, the PIT and
//! the KVM clock.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_clock_data, kvm_irqchip,
    kvm_pit_state2,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

/// Errors saving or restoring the VM-wide state.
#[derive(Debug, thiserror::Error)]
#[error("KVM refused to {what}")]
pub struct Error {
    what: &'static str,
    #[source]
    source: kvm_ioctls::Error,
}

fn step<T>(what: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, Error> {
    r.map_err(|source| Error { what, source })
}

/// The in-kernel interrupt controllers, timer and clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineState {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

fn irqchip(vm: &VmFd, chip_id: u32) -> Result<kvm_irqchip, Error> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    step("read an interrupt controller", vm.get_irqchip(&mut chip))?;
    Ok(chip)
}

impl MachineState {
    /// Saves the state of a VM whose vCPUs are stopped.
    pub fn save(vm: &VmFd) -> Result<MachineState, Error> {
        Ok(MachineState {
            pic_master: irqchip(vm, KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: irqchip(vm, KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: irqchip(vm, KVM_IRQCHIP_IOAPIC)?,
            pit: step("read the PIT", vm.get_pit2())?,
            clock: step("read the KVM clock", vm.get_clock())?,
        })
    }

    /// Restores it into a VM whose irqchip and PIT were created as at boot.
    pub fn restore(&self, vm: &VmFd) -> Result<(), Error> {
        step("set the master PIC", vm.set_irqchip(&self.pic_master))?;
        step("set the slave PIC", vm.set_irqchip(&self.pic_slave))?;
        step("set the IOAPIC", vm.set_irqchip(&self.ioapic))?;
        step("set the PIT", vm.set_pit2(&self.pit))?;
        // The guest's clock resumes where it stopped; only the value is set (the flags
        // KVM reported describe the old host's clock).
        let clock = kvm_clock_data {
            clock: self.clock.clock,
            ..Default::default()
        };
        step("set the KVM clock", vm.set_clock(&clock))
    }
}
