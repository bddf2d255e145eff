//! Requests to a running microVM from outside its event loop (another thread of the
//! VMM process, or a console line the guest printed): today, "take a snapshot". The
//! request wakes the event loop through an eventfd; the run loop then stops the vCPUs,
//! saves, answers on the request's channel, and resumes or ends the VM.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::lock;
use crate::snapshot;

/// What the VM does once a snapshot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSnapshot {
    /// Runs on, as if nothing happened.
    Resume,
    /// Ends (the run reports `VmExit::Snapshotted`).
    Stop,
}

/// Where to save a snapshot and what to do after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// The snapshot directory (created; replaced if it exists).
    pub dir: PathBuf,
    /// Recorded in the snapshot; a restore must name the same label.
    pub label: String,
    /// Resume or stop the VM after saving.
    pub then: AfterSnapshot,
}

/// The answer to a snapshot request: the published directory.
pub type SnapshotResult = Result<PathBuf, snapshot::Error>;

/// A snapshot request with its reply channel.
#[derive(Debug)]
pub struct SnapshotRequest {
    /// What to save and what to do after.
    pub plan: SnapshotPlan,
    reply: mpsc::Sender<SnapshotResult>,
}

impl SnapshotRequest {
    /// Answers the requester (who may have stopped waiting).
    pub fn answer(self, result: SnapshotResult) {
        let _ = self.reply.send(result);
    }
}

/// The control channel of one microVM.
#[derive(Debug)]
pub struct Control {
    event: EventFd,
    pending: Mutex<Option<SnapshotRequest>>,
}

impl Control {
    /// A channel with nothing pending.
    pub fn new() -> std::io::Result<Arc<Control>> {
        Ok(Arc::new(Control {
            event: EventFd::new(libc::EFD_NONBLOCK)?,
            pending: Mutex::new(None),
        }))
    }

    /// Asks for a snapshot; the answer arrives on the returned channel. A request made
    /// while another is pending replaces it (the earlier requester gets no answer: its
    /// channel closes).
    pub fn request_snapshot(&self, plan: SnapshotPlan) -> mpsc::Receiver<SnapshotResult> {
        let (reply, rx) = mpsc::channel();
        *lock(&self.pending) = Some(SnapshotRequest { plan, reply });
        if let Err(e) = self.event.write(1) {
            log::error!("cannot wake the VMM event loop for a snapshot: {e}");
        }
        rx
    }

    /// Takes the pending request, if any.
    pub fn take(&self) -> Option<SnapshotRequest> {
        lock(&self.pending).take()
    }

    /// The eventfd written on every request.
    pub fn event(&self) -> &EventFd {
        &self.event
    }
}
