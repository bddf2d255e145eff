//! The virtio-blk `VirtioDevice` and its event-loop side. The transport activates and
//! resets it from a vCPU thread; both only store state and write the `control` eventfd.
//! The event loop (a `MutEventSubscriber`) then registers or unregisters the queue's
//! notification eventfd and does all request processing, off the vCPU threads.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::super::{
    ActivateError, Activation, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice, device_id,
};
use super::{Disk, Error, QUEUE_SIZE, config_space, features, request};

/// What the device holds between DRIVER_OK and reset.
#[derive(Debug)]
struct Active {
    memory: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queue: Queue,
    notify: EventFd,
}

/// A virtio-blk device over one disk image.
#[derive(Debug)]
pub struct Block {
    disk: Disk,
    config: [u8; 24],
    avail_features: u64,
    queue_sizes: [u16; 1],
    /// Written on activation and reset so the event loop re-syncs its registrations.
    control: EventFd,
    active: Option<Active>,
    /// Queue eventfds the event loop currently watches for this device.
    registered: Vec<RawFd>,
}

impl Block {
    /// A device serving `disk`.
    pub fn new(disk: Disk) -> Result<Block, Error> {
        let mut avail_features =
            (1u64 << VIRTIO_F_VERSION_1) | (1 << features::FLUSH) | (1 << features::SEG_MAX);
        if disk.read_only() {
            avail_features |= 1 << features::RO;
        }
        Ok(Block {
            config: config_space(disk.sectors()),
            disk,
            avail_features,
            queue_sizes: [QUEUE_SIZE],
            control: EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?,
            active: None,
            registered: Vec::new(),
        })
    }

    /// Opens `path` (read-only or read-write) and builds a device for it.
    pub fn open(path: &Path, read_only: bool) -> Result<Block, Error> {
        Block::new(Disk::open(path, read_only)?)
    }

    /// The disk behind the device.
    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Serves every request the driver has made available, then interrupts the guest
    /// once if any completed. Returns the number of requests completed.
    pub fn process_queue(&mut self) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let mut done = 0;
        while let Some(chain) = a.queue.pop_descriptor_chain(&a.memory) {
            let head = chain.head_index();
            let len = request::handle(&self.disk, &a.memory, chain);
            if let Err(e) = a.queue.add_used(&a.memory, head, len) {
                log::warn!("virtio-blk: cannot return descriptor {head}: {e}");
            }
            done += 1;
        }
        if done > 0
            && let Err(e) = a.interrupt.signal_used_queue()
        {
            log::error!("virtio-blk: cannot interrupt the guest: {e}");
        }
        done
    }

    fn wake_event_loop(&self) {
        if let Err(e) = self.control.write(1) {
            log::error!("virtio-blk: cannot wake the event loop: {e}");
        }
    }

    /// Makes the event loop watch exactly the active queue's eventfd (or none).
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        for fd in self.registered.drain(..) {
            // The transport keeps the eventfd open, so the number still names it.
            if let Err(e) = ops.remove(Events::empty_raw(fd)) {
                log::debug!("virtio-blk: unwatching fd {fd}: {e:?}");
            }
        }
        if let Some(a) = &self.active {
            match ops.add(Events::new(&a.notify, EventSet::IN)) {
                Ok(()) => self.registered.push(a.notify.as_raw_fd()),
                Err(e) => log::error!("virtio-blk: cannot watch the queue: {e:?}"),
            }
        }
    }
}

impl VirtioDevice for Block {
    fn name(&self) -> &'static str {
        "block"
    }

    fn device_type(&self) -> u32 {
        device_id::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = self.config.get(start..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-blk: {}-byte config write at {offset:#x} ignored",
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let fail = |reason: &str| ActivateError {
            device: "block",
            reason: reason.to_string(),
        };
        if self.active.is_some() {
            return Err(fail("already active"));
        }
        let mut queues = activation.queues.into_iter();
        let (Some(q), None) = (queues.next(), queues.next()) else {
            return Err(fail("expected exactly one queue"));
        };
        self.active = Some(Active {
            memory: activation.memory,
            interrupt: activation.interrupt,
            queue: q.queue,
            notify: q.notify,
        });
        self.wake_event_loop();
        Ok(())
    }

    fn reset(&mut self) -> Vec<EventFd> {
        let Some(a) = self.active.take() else {
            return Vec::new();
        };
        self.wake_event_loop();
        vec![a.notify]
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        self.active.iter().map(|a| a.queue.state()).collect()
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.control.as_raw_fd() {
            let _ = self.control.read();
            self.sync_registrations(ops);
            return;
        }
        let Some(a) = self.active.as_ref().filter(|a| a.notify.as_raw_fd() == fd) else {
            // A queue eventfd left from before a reset: stop watching it.
            let _ = ops.remove(events);
            self.registered.retain(|r| *r != fd);
            return;
        };
        let _ = a.notify.read();
        self.process_queue();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.control, EventSet::IN)) {
            log::error!("virtio-blk: cannot watch the control eventfd: {e:?}");
        }
    }
}
