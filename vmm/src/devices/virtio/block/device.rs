//! The virtio-blk `VirtioDevice` and its event-loop side: activation and queue
//! notifications go through the shared scaffold (`lifecycle`), and the event loop does
//! all request processing, off the vCPU threads.

use std::path::Path;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::QueueT;
use vmm_sys_util::eventfd::EventFd;

use super::super::lifecycle::Lifecycle;
use super::super::{ActivateError, Activation, VIRTIO_F_VERSION_1, VirtioDevice, device_id};
use super::{Disk, Error, QUEUE_SIZE, config_space, features, request};

/// A virtio-blk device over one disk image.
#[derive(Debug)]
pub struct Block {
    disk: Disk,
    config: [u8; 24],
    avail_features: u64,
    queue_sizes: [u16; 1],
    life: Lifecycle,
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
            life: Lifecycle::new("virtio-blk", 1).map_err(Error::EventFd)?,
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
        self.life.is_active()
    }

    /// Serves every request the driver has made available, then interrupts the guest
    /// once if any completed. Returns the number of requests completed.
    pub fn process_queue(&mut self) -> usize {
        let Some(r) = self.life.running() else {
            return 0;
        };
        let mut done = 0;
        while let Some(chain) = r.queues[0].pop_descriptor_chain(&r.memory) {
            let head = chain.head_index();
            let len = request::handle(&self.disk, &r.memory, chain);
            if let Err(e) = r.queues[0].add_used(&r.memory, head, len) {
                log::warn!("virtio-blk: cannot return descriptor {head}: {e}");
            }
            done += 1;
        }
        if done > 0
            && let Err(e) = r.interrupt.signal_used_queue()
        {
            log::error!("virtio-blk: cannot interrupt the guest: {e}");
        }
        done
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
        super::super::read_config_space(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-blk: {}-byte config write at {offset:#x} ignored",
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.life.activate(activation)
    }

    fn reset(&mut self) -> Vec<EventFd> {
        self.life.reset()
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        self.life.queue_states()
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let change = self.life.apply(ops);
        let queue = self.life.queue_event(events.data());
        if change.started || queue.is_some() {
            self.process_queue();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.life.init(ops);
    }
}
