//! The vsock `VirtioDevice`: three queues (rx, tx, event), the guest CID in config space,
//! and the event-loop side that moves packets between the queues and the muxer.
//! Activation goes through the shared scaffold (`lifecycle`); a reset drops every
//! connection before the event loop handles anything else.

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::muxer::Muxer;
use super::packet::{GuestBuffer, Header};
use super::{EVQ, Error, HDR_SIZE, MAX_PAYLOAD, QUEUE_SIZE, RXQ, TXQ, VsockConfig};
use crate::devices::virtio::lifecycle::{FIRST_DEVICE_TOKEN, Lifecycle};
use crate::devices::virtio::{
    ActivateError, Activation, VIRTIO_F_VERSION_1, VirtioDevice, device_id,
};

/// The event id of a transport reset.
const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: u32 = 0;
/// The virtio-vsock device with its host-side muxer.
#[derive(Debug)]
pub struct VsockDevice {
    guest_cid: u64,
    queue_sizes: [u16; 3],
    life: Lifecycle,
    muxer: Muxer,
    /// A restored VM's driver must hear that every connection it had is gone.
    transport_reset_pending: bool,
    payload: Vec<u8>,
    scratch: Vec<u8>,
}

impl VsockDevice {
    /// Creates the device and binds its host socket at `config.uds_path`.
    pub fn new(config: &VsockConfig) -> Result<VsockDevice, Error> {
        if config.guest_cid < 3 || config.guest_cid >= u64::from(u32::MAX) {
            return Err(Error::InvalidCid(config.guest_cid));
        }
        Ok(VsockDevice {
            guest_cid: config.guest_cid,
            queue_sizes: [QUEUE_SIZE; 3],
            life: Lifecycle::new("vsock", 3).map_err(Error::EventFd)?,
            muxer: Muxer::new(config)?,
            transport_reset_pending: false,
            payload: Vec::with_capacity(MAX_PAYLOAD),
            scratch: vec![0; MAX_PAYLOAD],
        })
    }

    /// The guest's context ID.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// Whether a driver is running (activated and seen by the event loop).
    pub fn is_running(&self) -> bool {
        self.life.is_running()
    }

    /// Streams open now.
    pub fn connection_count(&self) -> usize {
        self.muxer.connection_count()
    }

    /// Applies `activate`/`reset` calls made since the last event.
    fn apply_lifecycle(&mut self, ops: &mut EventOps) {
        let change = self.life.apply(ops);
        if change.stopped {
            self.muxer.drop_all(ops);
        }
        if change.started {
            // The driver may have queued packets before the loop saw the activation.
            self.process_tx();
        }
        if self.transport_reset_pending && self.life.is_running() {
            self.transport_reset_pending = false;
            self.send_transport_reset();
        }
    }

    /// Puts VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue (virtio 1.2, 5.10.6.5):
    /// the driver closes every connection and re-reads the guest CID.
    fn send_transport_reset(&mut self) {
        let Some(r) = self.life.running() else {
            return;
        };
        let q = &mut r.queues[EVQ];
        let Some(chain) = q.pop_descriptor_chain(&r.memory) else {
            log::warn!("vsock: no event buffer for the transport reset");
            return;
        };
        let head = chain.head_index();
        let mut written = 0;
        for desc in chain.writable() {
            if desc.len() >= 4 {
                let id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.to_le_bytes();
                if vm_memory::Bytes::write_slice(&r.memory, &id, desc.addr()).is_ok() {
                    written = 4;
                }
                break;
            }
        }
        if let Err(e) = q.add_used(&r.memory, head, written) {
            log::warn!("vsock: cannot return the event buffer: {e}");
        }
        if let Err(e) = r.interrupt.signal_used_queue() {
            log::error!("vsock: cannot interrupt the guest: {e}");
        }
    }

    /// Hands every transmitted packet to the muxer.
    fn process_tx(&mut self) {
        let Some(r) = self.life.running() else {
            return;
        };
        let mut used = false;
        while let Some(chain) = r.queues[TXQ].pop_descriptor_chain(&r.memory) {
            let head = chain.head_index();
            match GuestBuffer::from_chain(chain, false) {
                Ok(buf) => read_tx(&mut self.muxer, &r.memory, &buf, &mut self.payload),
                Err(e) => log::debug!("vsock: dropping a tx buffer: {e}"),
            }
            if let Err(e) = r.queues[TXQ].add_used(&r.memory, head, 0) {
                log::error!("vsock: cannot return a tx buffer: {e}");
            }
            used = true;
        }
        if used {
            r.notify_guest("vsock", TXQ);
        }
    }

    /// Fills receive buffers while the muxer has packets.
    fn process_rx(&mut self) {
        let Some(r) = self.life.running() else {
            return;
        };
        let mut used = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = r.queues[RXQ].pop_descriptor_chain(&r.memory) else {
                break;
            };
            let head = chain.head_index();
            let len = match GuestBuffer::from_chain(chain, true) {
                Ok(buf) if buf.len() >= HDR_SIZE => {
                    let room = buf.payload_room();
                    match self.muxer.next_rx_packet(room, &mut self.scratch) {
                        Some(hdr) => {
                            write_rx(&mut self.muxer, &r.memory, &buf, &hdr, &self.scratch)
                        }
                        None => {
                            r.queues[RXQ].go_to_previous_position();
                            break;
                        }
                    }
                }
                Ok(buf) => {
                    log::debug!("vsock: rx buffer of {} bytes is too short", buf.len());
                    0
                }
                Err(e) => {
                    log::debug!("vsock: unusable rx buffer: {e}");
                    0
                }
            };
            if let Err(e) = r.queues[RXQ].add_used(&r.memory, head, len) {
                log::error!("vsock: cannot return an rx buffer: {e}");
            }
            used = true;
        }
        if used {
            r.notify_guest("vsock", RXQ);
        }
    }
}

fn read_tx(muxer: &mut Muxer, mem: &GuestMemoryMmap, buf: &GuestBuffer, payload: &mut Vec<u8>) {
    let hdr = match buf.read_header(mem) {
        Ok(h) => h,
        Err(e) => {
            log::debug!("vsock: dropping a tx packet: {e}");
            return;
        }
    };
    match buf.read_payload(mem, &hdr, payload) {
        Ok(()) => muxer.guest_packet(&hdr, payload),
        Err(e) => {
            log::debug!("vsock: bad tx packet op {}: {e}", hdr.op);
            muxer.guest_bad_packet(&hdr);
        }
    }
}

fn write_rx(
    muxer: &mut Muxer,
    mem: &GuestMemoryMmap,
    buf: &GuestBuffer,
    hdr: &Header,
    scratch: &[u8],
) -> u32 {
    match buf.write_packet(mem, hdr, &scratch[..hdr.len as usize]) {
        Ok(n) => n,
        Err(e) => {
            log::debug!("vsock: cannot write an rx packet: {e}");
            muxer.rx_failed(hdr);
            0
        }
    }
}

impl VirtioDevice for VsockDevice {
    fn name(&self) -> &'static str {
        "vsock"
    }

    fn device_type(&self) -> u32 {
        device_id::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::read_config_space(&self.guest_cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        log::debug!("vsock: the driver wrote to read-only config space");
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

    fn has_connections(&self) -> bool {
        self.muxer.connection_count() > 0
    }

    fn restored(&mut self) {
        self.transport_reset_pending = true;
        if let Err(e) = self.life.wake() {
            log::error!("vsock: cannot wake the event loop after a restore: {e}");
        }
    }
}

impl MutEventSubscriber for VsockDevice {
    fn init(&mut self, ops: &mut EventOps) {
        self.life.init(ops);
        self.muxer.init(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.apply_lifecycle(ops);
        let token = events.data();
        if token < FIRST_DEVICE_TOKEN {
            if self.life.queue_event(token) == Some(TXQ) {
                self.process_tx();
            }
        } else {
            let active = self.life.is_running();
            self.muxer
                .handle_event(token, events.event_set(), ops, active);
        }
        self.muxer.sync(ops);
        self.process_rx();
        self.muxer.sync(ops);
    }
}
