//! The virtio-mmio transport (virtio 1.x, 4.2 "Virtio Over MMIO", version 2 register
//! layout) as a `BusDevice`. It owns everything that is the same for every device:
//! feature negotiation with selectors, the status state machine, queue setup and
//! validation, reset, interrupt status/acknowledge, the configuration generation, and
//! activation of the device at DRIVER_OK. Guest accesses that make no sense are logged
//! and ignored; nothing the guest writes can panic the VMM.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{Activation, ActiveQueue, Interrupt, VIRTIO_F_VERSION_1, VirtioDevice};
use crate::devices::BusDevice;
use crate::devices::bus::lock;

/// "virt" in little endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// The modern (non-legacy) register layout.
pub const MMIO_VERSION: u32 = 2;
/// husk's vendor ID ("husk" in little endian); drivers do not interpret it.
pub const VENDOR_ID: u32 = 0x6b73_7568;
/// Size of one device's register window.
pub const MMIO_LEN: u64 = 0x1000;

/// Register offsets (virtio 1.x, 4.2.2).
pub mod reg {
    /// MagicValue (R).
    pub const MAGIC: u64 = 0x000;
    /// Version (R).
    pub const VERSION: u64 = 0x004;
    /// DeviceID (R).
    pub const DEVICE_ID: u64 = 0x008;
    /// VendorID (R).
    pub const VENDOR_ID: u64 = 0x00c;
    /// DeviceFeatures (R), 32 bits selected by DeviceFeaturesSel.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// DeviceFeaturesSel (W).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// DriverFeatures (W), 32 bits selected by DriverFeaturesSel.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// DriverFeaturesSel (W).
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// QueueSel (W).
    pub const QUEUE_SEL: u64 = 0x030;
    /// QueueNumMax (R).
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// QueueNum (W).
    pub const QUEUE_NUM: u64 = 0x038;
    /// QueueReady (RW).
    pub const QUEUE_READY: u64 = 0x044;
    /// QueueNotify (W): the value is the queue index.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// InterruptStatus (R).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// InterruptACK (W).
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Status (RW).
    pub const STATUS: u64 = 0x070;
    /// QueueDescLow (W).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// QueueDescHigh (W).
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// QueueDriverLow (W): the available ring.
    pub const QUEUE_AVAIL_LOW: u64 = 0x090;
    /// QueueDriverHigh (W).
    pub const QUEUE_AVAIL_HIGH: u64 = 0x094;
    /// QueueDeviceLow (W): the used ring.
    pub const QUEUE_USED_LOW: u64 = 0x0a0;
    /// QueueDeviceHigh (W).
    pub const QUEUE_USED_HIGH: u64 = 0x0a4;
    /// SHMLenLow (R): husk devices have no shared memory regions.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// SHMLenHigh (R).
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// ConfigGeneration (R).
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may use its queues.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// One virtio device behind its MMIO registers.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    memory: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    /// Each queue's notification eventfd while the device is inactive (it owns them
    /// while active).
    notify: Vec<Option<EventFd>>,
    /// Clones of the notification eventfds, written on QueueNotify exits (where KVM has
    /// no ioeventfd for the write).
    notify_writers: Vec<EventFd>,
    device_type: u32,
    avail_features: u64,
    acked_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    /// Guest-physical base of the register window, when placed on a bus (for logs).
    base: Option<u64>,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &self.status)
            .field("acked_features", &self.acked_features)
            .finish()
    }
}

/// One queue as a snapshot keeps it (virtio-queue's `QueueState`, which is not serde).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    max_size: u16,
    next_avail: u16,
    next_used: u16,
    event_idx_enabled: bool,
    size: u16,
    ready: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl From<QueueState> for SavedQueue {
    fn from(q: QueueState) -> Self {
        SavedQueue {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<SavedQueue> for QueueState {
    fn from(q: SavedQueue) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// A transport's registers and queues, as a snapshot keeps them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    /// The device behind it (`device_id::*`): a restore checks it.
    pub device_type: u32,
    acked_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    interrupt_status: u32,
    queues: Vec<SavedQueue>,
    /// The device's configuration space as the driver last saw it (the first
    /// [`CONFIG_SAVED_LEN`] bytes): a restore whose device differs (a disk slot given a
    /// backing file) announces the change.
    config: Vec<u8>,
    /// Whether the device had connections to the outside world (see
    /// [`VirtioDevice::has_connections`]).
    #[serde(default = "assume_connections")]
    connections: bool,
}

/// A snapshot that does not say had connections, to be safe.
fn assume_connections() -> bool {
    true
}

/// How much of a device's configuration space a snapshot keeps for comparison.
pub const CONFIG_SAVED_LEN: usize = 64;

/// Why a saved transport state does not fit this transport.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Another kind of device sits in this slot.
    #[error("the snapshot has virtio device type {saved} where this VM has {here}")]
    DeviceType {
        /// In the snapshot.
        saved: u32,
        /// In this VM.
        here: u32,
    },
    /// The queue layout differs.
    #[error("the snapshot's virtio {0} has {1} queues, this one {2}")]
    QueueCount(&'static str, usize, usize),
    /// A saved queue is inconsistent.
    #[error("the snapshot's virtio {0} has an invalid queue {1}")]
    Queue(&'static str, usize),
    /// The device refused the saved queues.
    #[error("the snapshot's virtio {0} did not re-activate")]
    Activate(&'static str),
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device asks for a queue size virtqueues cannot have.
    #[error("virtio {0}: queue {1} has an invalid maximum size {2}")]
    QueueSize(&'static str, usize, u16),
    /// One notification eventfd per queue is needed.
    #[error("virtio {0}: {1} queues but {2} notification eventfds")]
    NotifyCount(&'static str, usize, usize),
    /// An eventfd could not be duplicated.
    #[error("cannot duplicate a queue notification eventfd")]
    EventFd(#[source] std::io::Error),
}

impl MmioTransport {
    /// Puts `device` behind a register window; `notify` holds one eventfd per queue (the
    /// ones registered as ioeventfds for QueueNotify, when the host supports them).
    pub fn new(
        memory: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        interrupt: Arc<Interrupt>,
        notify: Vec<EventFd>,
    ) -> Result<Self, Error> {
        let (name, device_type, avail_features, sizes) = {
            let d = lock(&device);
            (
                d.name(),
                d.device_type(),
                d.avail_features(),
                d.queue_max_sizes().to_vec(),
            )
        };
        if sizes.len() != notify.len() {
            return Err(Error::NotifyCount(name, sizes.len(), notify.len()));
        }
        let queues = sizes
            .iter()
            .enumerate()
            .map(|(i, &max)| Queue::new(max).map_err(|_| Error::QueueSize(name, i, max)))
            .collect::<Result<Vec<_>, _>>()?;
        let notify_writers = notify
            .iter()
            .map(|e| e.try_clone().map_err(Error::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            memory,
            interrupt,
            queues,
            notify: notify.into_iter().map(Some).collect(),
            notify_writers,
            device_type,
            avail_features,
            acked_features: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            base: None,
        })
    }

    /// Records where the window sits in guest-physical memory, so logs can say which
    /// device they are about.
    pub fn with_base(mut self, base: u64) -> Self {
        self.base = Some(base);
        self
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    fn name(&self) -> &'static str {
        lock(&self.device).name()
    }

    /// Saves the registers and queues (the device's live queues while it is active).
    /// The vCPUs must be stopped.
    pub fn save(&self) -> TransportState {
        let live = lock(&self.device).queue_states();
        let queues = if live.len() == self.queues.len() {
            live
        } else {
            self.queues.iter().map(Queue::state).collect()
        };
        TransportState {
            device_type: self.device_type,
            acked_features: self.acked_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            queues: queues.into_iter().map(SavedQueue::from).collect(),
            config: self.config_bytes(),
            connections: lock(&self.device).has_connections(),
        }
    }

    fn config_bytes(&self) -> Vec<u8> {
        let mut config = vec![0u8; CONFIG_SAVED_LEN];
        lock(&self.device).read_config(0, &mut config);
        config
    }

    /// Puts a fresh transport into the saved state, re-activating the device with the
    /// saved queues when the driver had it running.
    pub fn restore(&mut self, state: &TransportState) -> Result<(), RestoreError> {
        let name = self.name();
        if state.device_type != self.device_type {
            return Err(RestoreError::DeviceType {
                saved: state.device_type,
                here: self.device_type,
            });
        }
        if state.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount(
                name,
                state.queues.len(),
                self.queues.len(),
            ));
        }
        for (i, (q, saved)) in self.queues.iter_mut().zip(&state.queues).enumerate() {
            if saved.max_size != q.max_size() {
                return Err(RestoreError::Queue(name, i));
            }
            *q = Queue::try_from(QueueState::from(*saved))
                .map_err(|_| RestoreError::Queue(name, i))?;
        }
        self.acked_features = state.acked_features;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.queue_sel = state.queue_sel;
        self.config_generation = state.config_generation;
        self.interrupt.restore_status(state.interrupt_status);
        self.status = state.status & !status::DRIVER_OK;
        if state.status & status::DRIVER_OK != 0 {
            self.activate();
            if self.status & status::DRIVER_OK == 0 {
                return Err(RestoreError::Activate(name));
            }
            if state.connections {
                lock(&self.device).restored();
            }
            if self.config_bytes() != state.config {
                self.announce_config_change();
            }
        }
        Ok(())
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_reg(&mut self, offset: u64) -> Option<u32> {
        Some(match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => MMIO_VERSION,
            reg::DEVICE_ID => self.device_type,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    /// Whether the driver may still change features (DRIVER set, FEATURES_OK not yet).
    fn negotiating(&self) -> bool {
        self.status & (status::DRIVER | status::FEATURES_OK | status::FAILED) == status::DRIVER
    }

    /// Whether the driver may configure queues (features agreed, not yet live).
    fn configuring_queues(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
    }

    fn write_reg(&mut self, offset: u64, v: u32) -> bool {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES if self.negotiating() => self.set_driver_features(v),
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NOTIFY => self.notify_queue(v),
            reg::INTERRUPT_ACK => self.interrupt.ack(v),
            reg::STATUS => self.set_status(v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_AVAIL_LOW
            | reg::QUEUE_AVAIL_HIGH
            | reg::QUEUE_USED_LOW
            | reg::QUEUE_USED_HIGH
                if self.configuring_queues() =>
            {
                return self.write_queue_reg(offset, v);
            }
            _ => return false,
        }
        true
    }

    fn set_driver_features(&mut self, v: u32) {
        let v = u64::from(v);
        match self.driver_features_sel {
            0 => self.acked_features = (self.acked_features & !0xffff_ffff) | v,
            1 => self.acked_features = (self.acked_features & 0xffff_ffff) | (v << 32),
            sel => log::warn!(
                "virtio {}: driver features select {sel} ignored",
                self.name()
            ),
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) -> bool {
        let Some(q) = self.selected_queue() else {
            return false;
        };
        match offset {
            reg::QUEUE_NUM => q.set_size(v.try_into().unwrap_or(0)),
            reg::QUEUE_READY => q.set_ready(v == 1),
            reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
            reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
            reg::QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(v), None),
            reg::QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(v)),
            reg::QUEUE_USED_LOW => q.set_used_ring_address(Some(v), None),
            reg::QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(v)),
            _ => return false,
        }
        true
    }

    /// A QueueNotify that reached us (no ioeventfd matched it): wake the device.
    fn notify_queue(&mut self, index: u32) {
        match self.notify_writers.get(index as usize) {
            Some(fd) if self.status & status::DRIVER_OK != 0 => {
                if let Err(e) = fd.write(1) {
                    log::error!("virtio {}: cannot signal queue {index}: {e}", self.name());
                }
            }
            Some(_) => log::debug!("virtio {}: notify before DRIVER_OK", self.name()),
            None => log::warn!("virtio {}: notify for missing queue {index}", self.name()),
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let added = v & !self.status;
        if self.status & !v != 0 {
            log::warn!(
                "virtio {}: status {v:#x} clears bits of {:#x}; only a reset may",
                self.name(),
                self.status
            );
            return;
        }
        if added & status::FAILED != 0 {
            self.status |= status::FAILED;
            return;
        }
        match added {
            0 => {}
            status::ACKNOWLEDGE if self.status == 0 => self.status = v,
            status::DRIVER if self.status == status::ACKNOWLEDGE => self.status = v,
            status::FEATURES_OK if self.negotiating() => self.accept_features(),
            status::DRIVER_OK if self.configuring_queues() => self.activate(),
            _ => log::warn!(
                "virtio {}: status change {:#x} -> {v:#x} out of order, ignored",
                self.name(),
                self.status
            ),
        }
    }

    /// FEATURES_OK sticks only if the driver accepted a subset of what the device offers,
    /// including VIRTIO_F_VERSION_1; otherwise the driver reads it back unset and fails.
    fn accept_features(&mut self) {
        let unknown = self.acked_features & !self.avail_features;
        let modern = self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0;
        if unknown == 0 && modern {
            self.status |= status::FEATURES_OK;
        } else {
            log::warn!(
                "virtio {}: features {:#x} refused (offered {:#x})",
                self.name(),
                self.acked_features,
                self.avail_features
            );
        }
    }

    fn activate(&mut self) {
        let name = self.name();
        if let Some(i) = self.queues.iter().position(|q| !q.is_valid(&self.memory)) {
            log::warn!("virtio {name}: queue {i} is not ready or not in guest memory");
            self.needs_reset();
            return;
        }
        if self.notify.iter().any(Option::is_none) {
            log::error!("virtio {name}: queue eventfds were not returned at the last reset");
            self.needs_reset();
            return;
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        for (q, fd) in self.queues.iter().zip(self.notify.iter_mut()) {
            let Ok(queue) = Queue::try_from(q.state()) else {
                log::error!("virtio {name}: queue state did not convert");
                self.needs_reset();
                return;
            };
            if let Some(notify) = fd.take() {
                queues.push(ActiveQueue { queue, notify });
            }
        }
        let activation = Activation {
            memory: self.memory.clone(),
            interrupt: self.interrupt.clone(),
            queues,
            acked_features: self.acked_features,
        };
        let result = lock(&self.device).activate(activation);
        match result {
            Ok(()) => {
                self.status |= status::DRIVER_OK;
                let at = self.base.map(|b| format!(" at {b:#x}")).unwrap_or_default();
                log::info!(
                    "virtio-{name}{at}: driver activated (features {:#x})",
                    self.acked_features
                );
            }
            Err(e) => {
                log::error!("{e}");
                self.needs_reset();
            }
        }
    }

    /// Puts the device into DEVICE_NEEDS_RESET and tells the driver.
    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.announce_config_change();
    }

    /// Tells the driver the configuration space changed (virtio 1.x, 4.2.2: a new
    /// generation and a configuration-change interrupt).
    fn announce_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Err(e) = self.interrupt.signal_config_change() {
            log::error!("virtio {}: cannot interrupt the guest: {e}", self.name());
        }
    }

    fn reset(&mut self) {
        let returned = lock(&self.device).reset();
        if !returned.is_empty() {
            if returned.len() == self.notify.len() {
                self.notify = returned.into_iter().map(Some).collect();
            } else {
                log::error!(
                    "virtio {}: reset returned {} of {} queue eventfds",
                    self.name(),
                    returned.len(),
                    self.notify.len()
                );
            }
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.ack(u32::MAX);
        self.acked_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.status = 0;
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            data.fill(0);
            lock(&self.device).read_config(offset - reg::CONFIG, data);
            return;
        }
        let value = match data.len() {
            4 if offset.is_multiple_of(4) => self.read_reg(offset),
            _ => None,
        };
        match value {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => {
                log::warn!(
                    "virtio-mmio: bad {}-byte read at {offset:#x}, answered 0",
                    data.len()
                );
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            lock(&self.device).write_config(offset - reg::CONFIG, data);
            return;
        }
        let handled = match <[u8; 4]>::try_from(data) {
            Ok(bytes) if offset.is_multiple_of(4) => {
                self.write_reg(offset, u32::from_le_bytes(bytes))
            }
            _ => false,
        };
        if !handled {
            log::warn!(
                "virtio-mmio: {}-byte write at {offset:#x} ignored (status {:#x})",
                data.len(),
                self.status
            );
        }
    }
}
