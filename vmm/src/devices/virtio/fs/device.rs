//! The virtio-fs `VirtioDevice`. Nothing of the data path runs in the VMM: at activation
//! the daemon gets the queues (the transport's notifiers as kick eventfds, the device's
//! irqfd as call eventfd, so the interrupt status reads as a used-ring update, see
//! `Interrupt`), and the device has no event-loop work of its own. The notifiers are kept
//! to hand back to the transport at reset.

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use super::super::{ActivateError, Activation, VirtioDevice, device_id, read_config_space};
use super::frontend::{Backend, Ring};
use super::{Error, FsConfig, QUEUE_SIZE, QUEUES, TAG_MAX, config_space};

/// A virtio-fs device, its daemon connected (or none: an unplugged slot).
#[derive(Debug)]
pub struct Fs {
    config: [u8; TAG_MAX + 4],
    backend: Option<Backend>,
    queue_sizes: [u16; QUEUES],
    kicks: Vec<EventFd>,
}

impl Fs {
    /// Connects to the daemon of `config` (if it has one) and agrees on features.
    pub fn new(config: &FsConfig) -> Result<Fs, Error> {
        Ok(Fs {
            config: config_space(&config.tag),
            backend: config.socket.as_deref().map(Backend::connect).transpose()?,
            queue_sizes: [QUEUE_SIZE; QUEUES],
            kicks: Vec::new(),
        })
    }
}

impl VirtioDevice for Fs {
    fn name(&self) -> &'static str {
        "fs"
    }

    fn device_type(&self) -> u32 {
        device_id::FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        self.backend
            .as_ref()
            .map_or(super::frontend::GUEST_BITS, Backend::guest_features)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_space(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let Some(backend) = self.backend.as_mut() else {
            // Unplugged: the queues wait for a VM restored with a daemon.
            self.kicks = a.queues.into_iter().map(|q| q.notify).collect();
            return Ok(());
        };
        a.interrupt.raised_by_backend();
        let rings: Vec<Ring<'_>> = a
            .queues
            .iter()
            .enumerate()
            .filter(|(_, q)| virtio_queue::QueueT::ready(&q.queue))
            .map(|(index, q)| Ring {
                index,
                queue: &q.queue,
                kick: &q.notify,
            })
            .collect();
        let started = backend.start(a.acked_features, &a.memory, &rings, a.interrupt.irqfd());
        self.kicks = a.queues.into_iter().map(|q| q.notify).collect();
        started.map_err(|e| ActivateError {
            device: "fs",
            reason: chain(&e),
        })
    }

    fn reset(&mut self) -> Vec<EventFd> {
        if let Some(backend) = self.backend.as_mut() {
            backend.stop();
        }
        std::mem::take(&mut self.kicks)
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        Vec::new()
    }
}

impl MutEventSubscriber for Fs {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {}

    fn init(&mut self, _ops: &mut EventOps) {}
}

/// `e` and its causes, one line.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
