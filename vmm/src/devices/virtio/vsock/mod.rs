//! virtio-vsock (virtio 1.x "Socket Device"): the device's constants, its configuration and
//! errors. The device model is in `device.rs`, the packet format and guest buffers in
//! `packet.rs`, and the host side (a unix socket per VM, Firecracker's `CONNECT <port>`
//! convention, guest connections to host port P reaching `<socket>_P`) in `muxer.rs` with
//! one `connection.rs` state machine per stream. See docs/vsock.md.

mod connection;
mod device;
mod muxer;
pub mod packet;

use std::path::PathBuf;

pub use device::VsockDevice;

/// The host's context ID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// The guest context ID husk uses unless told otherwise.
pub const DEFAULT_GUEST_CID: u64 = 3;

/// Index of the receive queue (device to driver).
pub const RXQ: usize = 0;
/// Index of the transmit queue (driver to device).
pub const TXQ: usize = 1;
/// Index of the event queue (transport reset events; husk never sends any).
pub const EVQ: usize = 2;
/// Size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;

/// Size of the packet header on the wire.
pub const HDR_SIZE: usize = 44;
/// The only socket type: a stream.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload husk accepts from the guest or puts in one packet.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// Packet operations (virtio 1.x, 5.10.6).
pub mod op {
    /// Connect request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (refused, or torn down).
    pub const RST: u16 = 3;
    /// One or both directions are done (flags say which).
    pub const SHUTDOWN: u16 = 4;
    /// Stream data.
    pub const RW: u16 = 5;
    /// The sender's buffer space changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for a credit update.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Bytes of guest data husk holds per connection while the host socket is full; it is also
/// the `buf_alloc` advertised to the guest, so a guest that respects credit never exceeds it.
pub const CONN_BUF_ALLOC: u32 = 256 << 10;
/// Most host connections in flight at once (handshakes plus streams).
pub const MAX_CONNECTIONS: usize = 1024;

/// A vsock device's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub guest_cid: u64,
    /// The host unix socket the VMM listens on; guest connections to host port P go to
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

impl VsockConfig {
    /// A config with the default guest CID.
    pub fn new(uds_path: impl Into<PathBuf>) -> Self {
        VsockConfig {
            guest_cid: DEFAULT_GUEST_CID,
            uds_path: uds_path.into(),
        }
    }
}

/// Errors creating the vsock device.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CID is reserved (0, 1, 2, or 32-bit all ones) or does not fit 32 bits.
    #[error("guest CID {0} is invalid: use 3 up to 4294967294")]
    InvalidCid(u64),
    /// The host socket could not be bound.
    #[error("cannot listen on the vsock socket {0}")]
    Bind(PathBuf, #[source] std::io::Error),
    /// An eventfd or timerfd could not be created.
    #[error("cannot create a vsock event descriptor")]
    EventFd(#[source] std::io::Error),
}
