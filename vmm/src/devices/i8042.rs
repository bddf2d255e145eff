//! The i8042 keyboard controller at ports 0x60-0x64, present only as the guest's reset
//! line: writing 0xfe (pulse reset) to the command port ends the VM with a reset. The
//! register model is vm-superio's (status reads as 0, so the kernel's "wait for the input
//! buffer to empty" loop never spins).

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::bus::BusDevice;
use crate::exit::{ExitLatch, VmExit};

/// First port (data).
pub const I8042_BASE: u64 = 0x60;
/// Ports 0x60..=0x64 (0x61 is the PIT's speaker port, which KVM keeps in the kernel).
pub const I8042_LEN: u64 = 5;

/// Ends the VM with `VmExit::Reset`, synchronously on the vCPU that asked.
#[derive(Debug)]
pub struct ResetTrigger(pub Arc<ExitLatch>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.signal(VmExit::Reset);
        Ok(())
    }
}

/// The reset line.
#[derive(Debug)]
pub struct ResetController {
    inner: I8042Device<ResetTrigger>,
}

impl ResetController {
    /// A controller that ends the VM through `latch` when the guest resets.
    pub fn new(latch: Arc<ExitLatch>) -> Self {
        ResetController {
            inner: I8042Device::new(ResetTrigger(latch)),
        }
    }
}

impl BusDevice for ResetController {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let [byte] = data {
            *byte = self.inner.read(offset as u8);
        } else {
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let [byte] = data {
            let Ok(()) = self.inner.write(offset as u8, *byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_and_others_do_not() {
        let latch = Arc::new(ExitLatch::new().unwrap());
        let mut dev = ResetController::new(latch.clone());
        dev.write(0, &[0xfe]); // data port: ignored
        dev.write(4, &[0xd1]); // another command: ignored
        assert!(!latch.is_set());
        dev.write(4, &[0xfe]);
        assert_eq!(latch.outcome(), Some(VmExit::Reset));
        let mut status = [0xaa];
        dev.read(4, &mut status);
        assert_eq!(status, [0]);
    }
}
