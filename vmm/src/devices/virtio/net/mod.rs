//! virtio-net (virtio 1.x, 5.1): one receive and one transmit queue between the guest
//! and a host TAP interface. This file holds the protocol constants, the configuration
//! space, the configuration and the errors; `tap.rs` the host end, `device.rs` the
//! `VirtioDevice` and its event-loop side.
//!
//! Checksum and TCP segmentation offloads are offered both ways (`features`): the guest
//! may hand over frames of up to 64 KiB with a partial checksum and the TAP (the host
//! kernel) segments and checksums them; with the guest's consent the TAP hands the guest
//! such frames too (`TUNSETOFFLOAD`). Every frame is one buffer (no mergeable receive
//! buffers), so a guest that takes large frames posts 64 KiB receive chains, as Linux
//! does. A device without a TAP (an *unplugged* NIC, kept in VM templates so restored
//! guests can get one) drops what the guest sends; a running VM's NIC can be plugged and
//! unplugged through its [`Plug`] (`plug.rs`).

mod device;
mod plug;
mod tap;

pub use device::Net;
pub use plug::Plug;
pub use tap::Tap;

/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
pub const RXQ: usize = 0;
/// Transmit queue index.
pub const TXQ: usize = 1;
/// Length of `struct virtio_net_hdr_v1` (VERSION_1: `num_buffers` always present).
pub const HDR_LEN: usize = 12;
/// Largest frame the device moves: a 64 KiB segmentation-offloaded packet with its
/// Ethernet and VLAN headers (virtio's 65562-byte buffer less the header).
pub const MAX_FRAME: usize = 65550;
/// Largest buffer one frame takes with its header.
pub const MAX_BUFFER: usize = HDR_LEN + MAX_FRAME;

/// Feature bits (virtio 1.x, 5.1.3).
pub mod features {
    /// The device takes frames with a partial checksum.
    pub const CSUM: u32 = 0;
    /// The driver takes frames with a partial checksum.
    pub const GUEST_CSUM: u32 = 1;
    /// The driver takes TCPv4 segmentation-offloaded frames.
    pub const GUEST_TSO4: u32 = 7;
    /// The driver takes TCPv6 segmentation-offloaded frames.
    pub const GUEST_TSO6: u32 = 8;
    /// The device takes TCPv4 segmentation-offloaded frames.
    pub const HOST_TSO4: u32 = 11;
    /// The device takes TCPv6 segmentation-offloaded frames.
    pub const HOST_TSO6: u32 = 12;
    /// The device has a MAC address in its configuration space.
    pub const MAC: u32 = 5;
    /// The configuration space has a link status field.
    pub const STATUS: u32 = 16;
}

/// Link status bit in the configuration space's `status`.
pub const LINK_UP: u16 = 1;

/// A NIC's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The host TAP interface (opened, or created, in the VMM's network namespace);
    /// `None` is an unplugged NIC: link down, frames dropped.
    pub tap: Option<String>,
    /// The guest's MAC address.
    pub mac: [u8; 6],
}

/// Errors setting up a NIC.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interface name cannot be a Linux interface name.
    #[error("{0:?} is not a valid interface name (1 to 15 bytes, no NUL)")]
    TapName(String),
    /// The TAP could not be opened or configured.
    #[error("cannot open TAP interface {0}")]
    Tap(String, #[source] std::io::Error),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd for a network device")]
    EventFd(#[source] std::io::Error),
    /// A running NIC's new TAP could not be swapped in.
    #[error("cannot change the NIC's TAP: {0}")]
    Replug(String),
}

/// The configuration space (`struct virtio_net_config` up to `status`).
fn config_space(mac: [u8; 6], link_up: bool) -> [u8; 8] {
    let mut c = [0u8; 8];
    c[..6].copy_from_slice(&mac);
    let status = if link_up { LINK_UP } else { 0 };
    c[6..8].copy_from_slice(&status.to_le_bytes());
    c
}
