//! The virtio-net `VirtioDevice` and its event-loop side: frames from the transmit queue
//! go to the TAP, frames from the TAP go into the guest's receive buffers. Activation and
//! queue notifications go through the shared scaffold (`lifecycle`). The TAP is watched
//! edge-triggered and drained until it is empty or the guest has no receive buffer left;
//! a frame read while no buffer is free waits in the device until the guest posts one.
//!
//! The guest is hostile: a chain that is too long, too short, in the wrong direction or
//! outside guest memory costs that one frame (counted in [`NetStats`]), never the VMM.

use std::io::ErrorKind;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::super::lifecycle::{FIRST_DEVICE_TOKEN, Lifecycle};
use super::super::{ActivateError, Activation, VIRTIO_F_VERSION_1, VirtioDevice, device_id};
use super::plug::Change;
use super::{
    Error, HDR_LEN, MAX_BUFFER, NetConfig, Plug, QUEUE_SIZE, RXQ, TXQ, Tap, config_space, features,
};

/// Token of the TAP's fd.
const TOKEN_TAP: u32 = FIRST_DEVICE_TOKEN;
/// Token of the plug's eventfd.
const TOKEN_PLUG: u32 = FIRST_DEVICE_TOKEN + 1;

/// Frames moved and dropped since the device was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames delivered into the guest.
    pub rx_frames: u64,
    /// Frames the guest sent that reached the TAP.
    pub tx_frames: u64,
    /// Frames from the TAP that did not fit the guest's buffer.
    pub rx_dropped: u64,
    /// Frames from the guest that were malformed, unplugged or refused by the TAP.
    pub tx_dropped: u64,
}

/// A virtio-net device over a TAP interface (or none: unplugged).
#[derive(Debug)]
pub struct Net {
    config: [u8; 8],
    tap: Option<Tap>,
    queue_sizes: [u16; 2],
    life: Lifecycle,
    /// A frame read from the TAP that waits for a receive buffer (`rx_len` bytes).
    rx_frame: Vec<u8>,
    rx_len: usize,
    tx_frame: Vec<u8>,
    stats: NetStats,
    /// Where other threads leave a new TAP (or none) for this NIC.
    plug: Arc<Plug>,
    /// The features the driver acked (the TAP's offloads follow them).
    acked: u64,
}

impl Net {
    /// A device for `config`; opens its TAP in the calling thread's network namespace.
    pub fn new(config: &NetConfig) -> Result<Net, Error> {
        let tap = config.tap.as_deref().map(Tap::open).transpose()?;
        Ok(Net {
            config: config_space(config.mac, tap.is_some()),
            tap,
            queue_sizes: [QUEUE_SIZE; 2],
            life: Lifecycle::new("virtio-net", 2).map_err(Error::EventFd)?,
            rx_frame: vec![0; MAX_BUFFER],
            rx_len: 0,
            tx_frame: vec![0; MAX_BUFFER],
            stats: NetStats::default(),
            plug: Plug::new()?,
            acked: 0,
        })
    }

    /// The handle that plugs a TAP into this NIC while the VM runs.
    pub fn plug(&self) -> Arc<Plug> {
        self.plug.clone()
    }

    /// Swaps in the TAP a [`Plug`] left (event loop): the old one is unwatched and
    /// closed, the new one gets the driver's offloads and is watched, and a running
    /// driver hears of the link change.
    fn replug(&mut self, change: Change, ops: &mut EventOps) {
        let Change { tap, mac, done } = change;
        if let Some(old) = self.tap.take() {
            let _ = ops.remove(Events::with_data(&old, TOKEN_TAP, tap_events()));
        }
        self.rx_len = 0;
        let mut result = Ok(());
        if let Some(tap) = &tap {
            let offload = tap_offload(self.acked);
            if self.life.is_active()
                && let Err(e) = tap.set_offload(offload)
            {
                result = Err(format!("{} refused offloads {offload:#x}: {e}", tap.name()));
            } else if let Err(e) = ops.add(Events::with_data(tap, TOKEN_TAP, tap_events())) {
                result = Err(format!("cannot watch TAP {}: {e:?}", tap.name()));
            }
        }
        // A TAP that could not be taken in is dropped: the NIC stays unplugged.
        let tap = tap.filter(|_| result.is_ok());
        self.config = config_space(mac, tap.is_some());
        self.tap = tap;
        log::info!(
            "virtio-net: {}",
            match &self.tap {
                Some(t) => format!("plugged into {}", t.name()),
                None => "unplugged".into(),
            }
        );
        if let Some(r) = self.life.running()
            && let Err(e) = r.interrupt.signal_config_change()
        {
            log::error!("virtio-net: cannot interrupt the guest: {e}");
        }
        let _ = done.send(result);
    }

    /// Frames moved and dropped so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Whether the driver has activated the device.
    pub fn is_active(&self) -> bool {
        self.life.is_active()
    }

    /// Sends every frame the guest queued; interrupts it once if any buffer was used.
    fn process_tx(&mut self) {
        let Some(r) = self.life.running() else {
            return;
        };
        let mut used = false;
        while let Some(chain) = r.queues[TXQ].pop_descriptor_chain(&r.memory) {
            let head = chain.head_index();
            match gather(&r.memory, chain, &mut self.tx_frame) {
                Some(len) if len >= HDR_LEN => match self.tap.as_mut() {
                    Some(tap) => match tap.write_frame(&self.tx_frame[..len]) {
                        Ok(_) => self.stats.tx_frames += 1,
                        Err(e) => {
                            log::debug!("virtio-net: the TAP refused a frame: {e}");
                            self.stats.tx_dropped += 1;
                        }
                    },
                    None => self.stats.tx_dropped += 1,
                },
                _ => self.stats.tx_dropped += 1,
            }
            if let Err(e) = r.queues[TXQ].add_used(&r.memory, head, 0) {
                log::warn!("virtio-net: cannot return tx descriptor {head}: {e}");
            }
            used = true;
        }
        if used {
            r.notify_guest("virtio-net", TXQ);
        }
    }

    /// Moves frames from the TAP into receive buffers until either runs out.
    fn process_rx(&mut self) {
        let (Some(r), Some(tap)) = (self.life.running(), self.tap.as_mut()) else {
            return;
        };
        let mut used = false;
        loop {
            if self.rx_len == 0 {
                match tap.read_frame(&mut self.rx_frame) {
                    Ok(n) if n >= HDR_LEN => self.rx_len = n,
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        log::warn!("virtio-net: cannot read from the TAP: {e}");
                        break;
                    }
                }
                // num_buffers: one buffer per frame without VIRTIO_NET_F_MRG_RXBUF.
                self.rx_frame[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            let Some(chain) = r.queues[RXQ].pop_descriptor_chain(&r.memory) else {
                break;
            };
            let head = chain.head_index();
            let written = scatter(&r.memory, chain, &self.rx_frame[..self.rx_len]);
            match written {
                Some(_) => self.stats.rx_frames += 1,
                None => self.stats.rx_dropped += 1,
            }
            self.rx_len = 0;
            let len = written.unwrap_or(0);
            if let Err(e) = r.queues[RXQ].add_used(&r.memory, head, len) {
                log::warn!("virtio-net: cannot return rx descriptor {head}: {e}");
            }
            used = true;
        }
        if used {
            r.notify_guest("virtio-net", RXQ);
        }
    }
}

/// Copies a transmit chain into `out`; `None` if it is too long, has a device-writable
/// descriptor, or leaves guest memory.
fn gather(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    out: &mut [u8],
) -> Option<usize> {
    let mut len = 0usize;
    for desc in chain {
        if desc.is_write_only() {
            return None;
        }
        let n = desc.len() as usize;
        let dst = out.get_mut(len..len.checked_add(n)?)?;
        mem.read_slice(dst, desc.addr()).ok()?;
        len += n;
    }
    Some(len)
}

/// Copies `frame` into a receive chain; returns the bytes written, or `None` if the
/// chain is too small, has a device-readable descriptor, or leaves guest memory.
fn scatter(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    frame: &[u8],
) -> Option<u32> {
    let mut done = 0usize;
    for desc in chain {
        if done == frame.len() {
            break;
        }
        if !desc.is_write_only() {
            return None;
        }
        let n = (desc.len() as usize).min(frame.len() - done);
        mem.write_slice(&frame[done..done + n], desc.addr()).ok()?;
        done += n;
    }
    (done == frame.len()).then_some(done as u32)
}

/// How the TAP is watched: drained on each edge.
fn tap_events() -> EventSet {
    EventSet::IN | EventSet::EDGE_TRIGGERED
}

/// The TAP offloads matching what the driver takes (TSO only with checksum offload, as
/// the specification ties them).
fn tap_offload(acked: u64) -> libc::c_uint {
    let has = |bit: u32| acked & (1 << bit) != 0;
    if !has(features::GUEST_CSUM) {
        return 0;
    }
    let mut flags = super::tap::TUN_F_CSUM;
    if has(features::GUEST_TSO4) {
        flags |= super::tap::TUN_F_TSO4;
    }
    if has(features::GUEST_TSO6) {
        flags |= super::tap::TUN_F_TSO6;
    }
    flags
}

impl VirtioDevice for Net {
    fn name(&self) -> &'static str {
        "net"
    }

    fn device_type(&self) -> u32 {
        device_id::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        [
            features::MAC,
            features::STATUS,
            features::CSUM,
            features::GUEST_CSUM,
            features::GUEST_TSO4,
            features::GUEST_TSO6,
            features::HOST_TSO4,
            features::HOST_TSO6,
        ]
        .iter()
        .fold(1u64 << VIRTIO_F_VERSION_1, |f, bit| f | (1 << bit))
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::super::read_config_space(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log::debug!(
            "virtio-net: {}-byte config write at {offset:#x} ignored",
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.acked = activation.acked_features;
        if let Some(tap) = &self.tap {
            let offload = tap_offload(activation.acked_features);
            tap.set_offload(offload).map_err(|e| ActivateError {
                device: "virtio-net",
                reason: format!("the TAP refused offloads {offload:#x}: {e}"),
            })?;
        }
        self.life.activate(activation)
    }

    fn reset(&mut self) -> Vec<EventFd> {
        self.life.reset()
    }

    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        self.life.queue_states()
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let change = self.life.apply(ops);
        if change.stopped {
            self.rx_len = 0;
        }
        let token = events.data();
        if token == TOKEN_PLUG
            && let Some(c) = self.plug.take()
        {
            self.replug(c, ops);
        }
        let queue = self.life.queue_event(token);
        if change.started || queue == Some(TXQ) {
            self.process_tx();
        }
        if change.started || queue == Some(RXQ) || token == TOKEN_TAP || token == TOKEN_PLUG {
            self.process_rx();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.life.init(ops);
        let plug = Events::with_data(self.plug.event(), TOKEN_PLUG, EventSet::IN);
        if let Err(e) = ops.add(plug) {
            log::error!("virtio-net: cannot watch the plug: {e:?}");
        }
        if let Some(tap) = &self.tap
            && let Err(e) = ops.add(Events::with_data(tap, TOKEN_TAP, tap_events()))
        {
            log::error!("virtio-net: cannot watch TAP {}: {e:?}", tap.name());
        }
    }
}
