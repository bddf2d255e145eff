//! Saving a running microVM and building one from a snapshot. `MicroVm::restore` reads
//! like the boot sequence with the loading replaced: KVM checks, the snapshot's state
//! (checked before anything else), guest memory mapped from its file, VM and irqchip,
//! vCPUs, VM-wide and vCPU state, then devices in their saved state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::{
    Devices, Error, MicroVm, Parts, attach_legacy_devices, attach_serial, attach_virtio_devices,
    check_kvm, create_vcpus, create_vm, setup_irqchip,
};
use crate::arch::x86_64::layout;
use crate::config::VmConfig;
use crate::control::SnapshotPlan;
use crate::devices::Bus;
use crate::devices::bus::lock;
use crate::devices::virtio::device_id;
use crate::snapshot::{self, MEMORY_FILE, Pending, Shape, VmState, cpu, machine, memory};

/// The shape a VM built from `config` has, with `label`.
pub fn shape_of(config: &VmConfig, label: &str) -> Shape {
    let mut devices = vec![device_id::BLOCK; config.disks.len()];
    if config.vsock.is_some() {
        devices.push(device_id::VSOCK);
    }
    devices.extend(config.nets.iter().map(|_| device_id::NET));
    devices.extend(config.fs.iter().map(|_| device_id::FS));
    Shape {
        vcpus: config.vcpus,
        memory: layout::ram_regions(config.mem_bytes()),
        devices,
        label: label.to_owned(),
    }
}

impl MicroVm {
    /// Saves the VM (vCPUs stopped) as `plan` says.
    pub(super) fn save(&mut self, plan: &SnapshotPlan) -> Result<PathBuf, snapshot::Error> {
        let started = Instant::now();
        if self.vcpus.len() != self.vcpu_count {
            return Err(snapshot::Error::VcpuNotStopped(self.vcpus.len()));
        }
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for vcpu in &mut self.vcpus {
            let id = vcpu.id();
            cpu::complete_pending_io(id, vcpu.fd_mut())?;
            vcpus.push(cpu::VcpuState::save(&self.kvm, id, vcpu.fd_mut())?);
        }
        let machine = machine::MachineState::save(&self.vm)?;
        let virtio: Vec<_> = self.transports.iter().map(|t| lock(t).save()).collect();
        let shape = Shape {
            vcpus: self.vcpu_count as u8,
            memory: self
                .memory
                .iter()
                .map(|r| (r.start_addr().0, r.len()))
                .collect(),
            devices: virtio.iter().map(|t| t.device_type).collect(),
            label: plan.label.clone(),
        };
        let pending = Pending::begin(&plan.dir)?;
        let memory_len = memory::save(&self.memory, &pending.memory_path())?;
        let state = VmState {
            shape,
            cmdline: self.cmdline.clone(),
            vcpus,
            machine,
            serial: lock(&self.serial).save(),
            virtio,
            memory_len,
        };
        let dir = pending.finish(&state)?;
        log::info!(
            "snapshot saved to {} in {} ms",
            dir.display(),
            started.elapsed().as_millis()
        );
        Ok(dir)
    }

    /// Whether the snapshot at `dir` is whole (state checksum, memory file length) and
    /// fits the VM `config` describes with `label` (what [`MicroVm::restore`] checks
    /// before anything else).
    pub fn check_snapshot(
        config: &VmConfig,
        dir: &Path,
        label: &str,
    ) -> Result<VmState, snapshot::Error> {
        let state = snapshot::load(dir)?;
        state.check_shape(dir, &shape_of(config, label))?;
        memory::check(
            &dir.join(MEMORY_FILE),
            &state.shape.memory,
            state.memory_len,
        )?;
        Ok(state)
    }

    /// Builds the VM `config` describes in the state saved at `dir`, which must have
    /// been taken of a VM of the same shape with the same `label`.
    pub fn restore(config: &VmConfig, dir: &Path, label: &str) -> Result<MicroVm, Error> {
        let started = Instant::now();
        let (kvm, _host) = check_kvm(config)?;
        let state = MicroVm::check_snapshot(config, dir, label)?;
        let memory_file = dir.join(MEMORY_FILE);
        let memory = match config.shared_memory() {
            // A daemon maps guest memory too: a private copy-on-write mapping of the
            // file would not be the pages it sees, so the saved pages are copied into
            // shared memory.
            true => {
                let shared = super::ram::create(config.mem_bytes(), true)?;
                memory::copy_into(&shared, &memory_file, state.memory_len)
                    .map_err(snapshot::Error::from)?;
                shared
            }
            false => memory::map(&memory_file, &state.shape.memory, state.memory_len)
                .map_err(snapshot::Error::from)?,
        };
        let vm = create_vm(&kvm, &memory)?;
        setup_irqchip(&vm)?;
        let mut vcpus = create_vcpus(&vm, config.vcpus)?;
        // Interrupt controllers and vCPUs first: a device put back into its state may
        // raise its interrupt at once (a UART with a pending THR-empty interrupt does),
        // which restoring the controllers afterwards would wipe out.
        state.machine.restore(&vm).map_err(snapshot::Error::from)?;
        for (vcpu, saved) in vcpus.iter_mut().zip(&state.vcpus) {
            saved
                .restore(vcpu.fd_mut())
                .map_err(snapshot::Error::from)?;
        }
        let (parts, sink) = Parts::new(config)?;
        let serial = attach_serial(&vm, sink, Some(&state.serial))?;
        let pio = attach_legacy_devices(serial.clone(), &parts.exit)?;
        let mut mmio = Bus::new("mmio");
        let (virtio, nics) = attach_virtio_devices(&vm, &memory, &mut mmio, config)?;
        for (transport, saved) in virtio.transports().iter().zip(&state.virtio) {
            lock(transport).restore(saved)?;
        }
        log::info!(
            "restored {} in {} us",
            dir.display(),
            started.elapsed().as_micros()
        );
        Ok(MicroVm::assemble(
            (kvm, vm, memory, vcpus),
            parts,
            Devices {
                serial,
                pio,
                mmio,
                virtio,
                nics,
            },
            state.cmdline,
            started,
        ))
    }
}
