//! Plugging a TAP into a NIC of a running VM, or pulling it out (docker's `network
//! connect` and `disconnect` of a running container). Another thread of the VMM process
//! opens the TAP and leaves it with the NIC's [`Plug`]; the event loop swaps it in, sets
//! the link status and MAC in the configuration space and tells the driver with a
//! configuration-change interrupt (virtio 1.x, 5.1.4: the driver re-reads `status`).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{Error, Tap};
use crate::devices::bus::lock;

/// How long a change may wait for the event loop (which runs while the VM does).
const TAKE_WAIT: Duration = Duration::from_secs(10);

/// A NIC's new host end: a TAP and the guest's MAC, or nothing (unplugged); the event
/// loop says on `done` whether it took it.
#[derive(Debug)]
pub(super) struct Change {
    pub tap: Option<Tap>,
    pub mac: [u8; 6],
    pub done: mpsc::Sender<Result<(), String>>,
}

/// The handle through which other threads plug a NIC.
#[derive(Debug)]
pub struct Plug {
    pending: Mutex<Option<Change>>,
    event: EventFd,
}

impl Plug {
    pub(super) fn new() -> Result<Arc<Plug>, Error> {
        Ok(Arc::new(Plug {
            pending: Mutex::new(None),
            event: EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?,
        }))
    }

    /// Opens TAP `tap` (in the calling thread's network namespace) and plugs it in, the
    /// guest seeing MAC `mac`; a TAP plugged before is pulled out. Returns once the
    /// event loop has made the change.
    pub fn plug(&self, tap: &str, mac: [u8; 6]) -> Result<(), Error> {
        let tap = Tap::open(tap)?;
        self.request(Some(tap), mac)
    }

    /// Pulls the TAP out: the link goes down and frames are dropped.
    pub fn unplug(&self, mac: [u8; 6]) -> Result<(), Error> {
        self.request(None, mac)
    }

    fn request(&self, tap: Option<Tap>, mac: [u8; 6]) -> Result<(), Error> {
        let (done, answer) = mpsc::channel();
        *lock(&self.pending) = Some(Change { tap, mac, done });
        self.event.write(1).map_err(Error::EventFd)?;
        match answer.recv_timeout(TAKE_WAIT) {
            Ok(result) => result.map_err(Error::Replug),
            Err(_) => Err(Error::Replug(
                "the event loop did not take the change in time".into(),
            )),
        }
    }

    /// The change asked for last, if it has not been made (event loop).
    pub(super) fn take(&self) -> Option<Change> {
        let _ = self.event.read();
        lock(&self.pending).take()
    }

    /// Written on every request; watched by the device.
    pub(super) fn event(&self) -> &EventFd {
        &self.event
    }
}
