//! The activation and event-handling scaffold every virtio device shares.
//!
//! The transport calls `activate` and `reset` on a vCPU thread, while fd registrations
//! belong to the event loop. So [`Lifecycle::activate`] and [`Lifecycle::reset`] only
//! record the change and write the wake eventfd; the event loop calls
//! [`Lifecycle::apply`] before handling anything else, which (un)registers the queue
//! notifiers and says what changed. The notifiers the loop watches are duplicates of the
//! transport's, so a reset can hand the originals back at once (Firecracker's
//! `activate_evt` shape).
//!
//! Event tokens: [`TOKEN_WAKE`] and one per queue from [`TOKEN_QUEUE`]; a device's own
//! fds (sockets, a tap) use tokens from [`FIRST_DEVICE_TOKEN`] on.

use std::sync::Arc;

use event_manager::{EventOps, Events};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::{ActivateError, Activation, Interrupt};

/// Token of the wake eventfd.
pub const TOKEN_WAKE: u32 = 0;
/// Token of queue `i`'s notifier is `TOKEN_QUEUE + i`.
pub const TOKEN_QUEUE: u32 = 1;
/// Most queues a device may have.
pub const MAX_QUEUES: usize = 7;
/// First token a device may use for its own fds.
pub const FIRST_DEVICE_TOKEN: u32 = TOKEN_QUEUE + MAX_QUEUES as u32;

/// What a running driver gave the device.
#[derive(Debug)]
pub struct Running {
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// The queues, in index order.
    pub queues: Vec<Queue>,
    /// Duplicates of the transport's notifiers, watched by the event loop.
    notify: Vec<EventFd>,
}

impl Running {
    /// Interrupts the guest if the driver wants to hear about `queue`'s used buffers.
    pub fn notify_guest(&mut self, device: &str, queue: usize) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        match q.needs_notification(&self.memory) {
            Ok(true) => {
                if let Err(e) = self.interrupt.signal_used_queue() {
                    log::error!("{device}: cannot interrupt the guest: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => log::debug!("{device}: queue {queue}: {e}"),
        }
    }
}

/// What [`Lifecycle::apply`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// The running driver was reset: the device drops what it held for it.
    pub stopped: bool,
    /// A driver started: the device looks at its queues once (buffers may be waiting).
    pub started: bool,
}

/// One device's activation state, shared by the vCPU threads and the event loop.
#[derive(Debug)]
pub struct Lifecycle {
    device: &'static str,
    queue_count: usize,
    wake: EventFd,
    starting: Option<Running>,
    running: Option<Running>,
    reset_requested: bool,
    transport_fds: Vec<EventFd>,
}

impl Lifecycle {
    /// The scaffold of `device` (a name for logs), which has `queue_count` queues.
    pub fn new(device: &'static str, queue_count: usize) -> std::io::Result<Lifecycle> {
        debug_assert!(queue_count <= MAX_QUEUES);
        Ok(Lifecycle {
            device,
            queue_count,
            wake: EventFd::new(EFD_NONBLOCK)?,
            starting: None,
            running: None,
            reset_requested: false,
            transport_fds: Vec::new(),
        })
    }

    /// Watches the wake eventfd (the device's `MutEventSubscriber::init`).
    pub fn init(&self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.wake, TOKEN_WAKE, EventSet::IN)) {
            log::error!("{}: cannot watch the wake eventfd: {e:?}", self.device);
        }
    }

    /// Records the driver's queues (vCPU thread); the event loop picks them up.
    pub fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let device = self.device;
        let fail = |reason: String| ActivateError { device, reason };
        if activation.queues.len() != self.queue_count {
            return Err(fail(format!(
                "{} queues instead of {}",
                activation.queues.len(),
                self.queue_count
            )));
        }
        if self.is_active() {
            return Err(fail("already active".into()));
        }
        let mut queues = Vec::with_capacity(self.queue_count);
        let mut notify = Vec::with_capacity(self.queue_count);
        let mut originals = Vec::with_capacity(self.queue_count);
        for q in activation.queues {
            let dup = q
                .notify
                .try_clone()
                .map_err(|e| fail(format!("cannot duplicate a queue notifier: {e}")))?;
            queues.push(q.queue);
            notify.push(dup);
            originals.push(q.notify);
        }
        self.starting = Some(Running {
            memory: activation.memory,
            interrupt: activation.interrupt,
            queues,
            notify,
        });
        self.transport_fds = originals;
        self.wake()
            .map_err(|e| fail(format!("cannot wake the event loop: {e}")))
    }

    /// Records a reset (vCPU thread) and returns the transport's notifiers.
    pub fn reset(&mut self) -> Vec<EventFd> {
        self.starting = None;
        if self.running.is_some() {
            self.reset_requested = true;
        }
        if let Err(e) = self.wake() {
            log::error!(
                "{}: cannot wake the event loop for a reset: {e}",
                self.device
            );
        }
        std::mem::take(&mut self.transport_fds)
    }

    /// Wakes the event loop (also for a device's own reasons, e.g. after a restore).
    pub fn wake(&self) -> std::io::Result<()> {
        self.wake.write(1)
    }

    /// Whether a driver is active (activated and not reset), seen by the loop or not.
    pub fn is_active(&self) -> bool {
        self.starting.is_some() || (self.running.is_some() && !self.reset_requested)
    }

    /// Whether the event loop has taken up a running driver.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running driver's state, once the event loop has taken it up.
    pub fn running(&mut self) -> Option<&mut Running> {
        self.running.as_mut()
    }

    /// The queues' state for a snapshot (none while inactive).
    pub fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        let live = self.starting.as_ref().or(self.running.as_ref());
        live.map(|r| r.queues.iter().map(|q| q.state()).collect())
            .unwrap_or_default()
    }

    /// Applies the `activate`/`reset` calls made since the last event (event loop).
    pub fn apply(&mut self, ops: &mut EventOps) -> Change {
        let mut change = Change::default();
        if self.reset_requested {
            self.reset_requested = false;
            if let Some(r) = self.running.take() {
                self.watch(ops, &r, false);
                change.stopped = true;
            }
        }
        if let Some(r) = self.starting.take() {
            self.watch(ops, &r, true);
            self.running = Some(r);
            change.started = true;
        }
        change
    }

    /// Handles the event with `token` if it is the scaffold's: drains the eventfd and
    /// returns the queue index it names (`None` for the wake eventfd or another token).
    pub fn queue_event(&mut self, token: u32) -> Option<usize> {
        if token == TOKEN_WAKE {
            let _ = self.wake.read();
            return None;
        }
        let queue = token.checked_sub(TOKEN_QUEUE)? as usize;
        if queue >= self.queue_count {
            return None;
        }
        if let Some(fd) = self.running.as_ref().and_then(|r| r.notify.get(queue)) {
            let _ = fd.read();
        }
        Some(queue)
    }

    fn watch(&self, ops: &mut EventOps, r: &Running, add: bool) {
        for (i, fd) in r.notify.iter().enumerate() {
            let ev = Events::with_data(fd, TOKEN_QUEUE + i as u32, EventSet::IN);
            let done = if add { ops.add(ev) } else { ops.remove(ev) };
            if let Err(e) = done {
                log::error!("{}: cannot (un)watch queue {i}: {e:?}", self.device);
            }
        }
    }
}
