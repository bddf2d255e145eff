//! The vhost-user conversation with a virtio-fs daemon (the rust-vmm `vhost` crate's
//! frontend): ownership, features and protocol features when the device is made; the
//! memory table and every ready queue (addresses as the VMM's own virtual addresses,
//! kick and call eventfds) when the driver starts; the rings stopped when it resets.
//! Every request asks for an acknowledgement where the daemon offers it, so a refusal
//! shows up at the request that caused it.

use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{Error, QUEUES};
use crate::devices::virtio::VIRTIO_F_VERSION_1;

/// How long to wait for the daemon's socket to appear.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// Transport feature bits passed between the guest and the daemon: VERSION_1,
/// INDIRECT_DESC and EVENT_IDX (never the vhost-user bits 26 and 30); also what a slot
/// without a daemon offers.
pub const GUEST_BITS: u64 = (1 << VIRTIO_F_VERSION_1) | (1 << 28) | (1 << 29);

/// Protocol features husk uses: several queues, acknowledged requests, device reset.
fn wanted_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// One queue to start: its index, the driver's setup and the kick eventfd.
pub struct Ring<'a> {
    /// Queue index.
    pub index: usize,
    /// The driver's queue.
    pub queue: &'a Queue,
    /// Signalled when the driver notifies the queue.
    pub kick: &'a EventFd,
}

/// A connected daemon.
pub struct Backend {
    fe: Frontend,
    features: u64,
    protocol: VhostUserProtocolFeatures,
    started: Vec<usize>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("features", &self.features)
            .field("protocol", &self.protocol)
            .field("started", &self.started)
            .finish()
    }
}

fn step(what: &'static str) -> impl FnOnce(vhost::Error) -> Error {
    move |e| Error::Backend(what, e)
}

/// Connects to `socket`, retrying while it does not exist or does not listen yet (the
/// daemon may be starting), for up to [`SOCKET_WAIT`].
fn connect_when_listening(socket: &Path) -> Result<Frontend, Error> {
    let start = Instant::now();
    loop {
        match Frontend::connect(socket, QUEUES as u64) {
            Ok(fe) => return Ok(fe),
            Err(_) if start.elapsed() < SOCKET_WAIT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::Connect(socket.to_path_buf(), e)),
        }
    }
}

impl Backend {
    /// Connects to the daemon at `socket` (waiting for it to appear) and agrees on
    /// features.
    pub fn connect(socket: &Path) -> Result<Backend, Error> {
        let mut fe = connect_when_listening(socket)?;
        fe.set_owner().map_err(step("take ownership"))?;
        let features = fe.get_features().map_err(step("report its features"))?;
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if features & protocol_bit == 0 {
            return Err(Error::Missing("vhost-user protocol features"));
        }
        let protocol = fe
            .get_protocol_features()
            .map_err(step("report its protocol features"))?
            & wanted_protocol();
        fe.set_protocol_features(protocol)
            .map_err(step("take the protocol features"))?;
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if protocol.contains(VhostUserProtocolFeatures::MQ)
            && fe.get_queue_num().map_err(step("report its queues"))? < QUEUES as u64
        {
            return Err(Error::Missing("two queues"));
        }
        Ok(Backend {
            fe,
            features,
            protocol,
            started: Vec::new(),
        })
    }

    /// The transport features the guest may accept.
    pub fn guest_features(&self) -> u64 {
        self.features & GUEST_BITS
    }

    /// Starts the daemon on the driver's queues: features, guest memory, then each
    /// ring, raising the guest's interrupt through `call`.
    pub fn start(
        &mut self,
        acked: u64,
        memory: &GuestMemoryMmap,
        rings: &[Ring<'_>],
        call: &EventFd,
    ) -> Result<(), Error> {
        let protocol_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.fe
            .set_features((acked & self.guest_features()) | protocol_bit)
            .map_err(step("take the guest's features"))?;
        let regions = memory
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::PrivateMemory)?;
        self.fe
            .set_mem_table(&regions)
            .map_err(step("map guest memory"))?;
        for r in rings {
            self.fe
                .set_vring_num(r.index, r.queue.size())
                .map_err(step("size a queue"))?;
        }
        for r in rings {
            self.start_ring(memory, r, call)?;
            self.started.push(r.index);
        }
        Ok(())
    }

    fn start_ring(
        &mut self,
        memory: &GuestMemoryMmap,
        r: &Ring<'_>,
        call: &EventFd,
    ) -> Result<(), Error> {
        let host = |addr: u64| {
            memory
                .get_host_address(GuestAddress(addr))
                .map(|p| p as u64)
                .map_err(|_| Error::Ring(r.index))
        };
        let q = r.queue;
        let config = VringConfigData {
            queue_max_size: q.max_size(),
            queue_size: q.size(),
            flags: 0,
            desc_table_addr: host(q.desc_table())?,
            used_ring_addr: host(q.used_ring())?,
            avail_ring_addr: host(q.avail_ring())?,
            log_addr: None,
        };
        self.fe
            .set_vring_addr(r.index, &config)
            .map_err(step("place a queue"))?;
        self.fe
            .set_vring_base(r.index, q.next_avail())
            .map_err(step("start a queue"))?;
        self.fe
            .set_vring_call(r.index, call)
            .map_err(step("take a queue's interrupt"))?;
        self.fe
            .set_vring_kick(r.index, r.kick)
            .map_err(step("take a queue's notifier"))?;
        self.fe
            .set_vring_enable(r.index, true)
            .map_err(step("enable a queue"))
    }

    /// Stops the started rings (the driver reset the device) and resets the daemon's
    /// file system session where it can.
    pub fn stop(&mut self) {
        for index in std::mem::take(&mut self.started) {
            if let Err(e) = self.fe.get_vring_base(index) {
                log::warn!("virtio-fs: cannot stop queue {index}: {e}");
            }
        }
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::RESET_DEVICE)
            && let Err(e) = self.fe.reset_device()
        {
            log::warn!("virtio-fs: cannot reset the daemon: {e}");
        }
    }
}
