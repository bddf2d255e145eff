//! virtio-blk (virtio 1.x, 5.2): a guest disk backed by a host file, read-only or
//! read-write. This file holds the protocol constants, the configuration space and the
//! errors; `disk.rs` the host file, `request.rs` parsing and executing one request,
//! `device.rs` the `VirtioDevice` and its event-loop side.

mod device;
mod disk;
mod request;

pub use device::Block;
pub use disk::Disk;

/// Size of a virtio-blk sector, whatever the host's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;
/// Most data segments per request announced in `seg_max` (header and status need two
/// more descriptors of the queue).
pub const SEG_MAX: u32 = 126;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;

/// Feature bits (virtio 1.x, 5.2.3).
pub mod features {
    /// `seg_max` in the configuration space is valid.
    pub const SEG_MAX: u32 = 2;
    /// The device is read-only.
    pub const RO: u32 = 5;
    /// The device supports the FLUSH command.
    pub const FLUSH: u32 = 9;
}

/// Request types (virtio 1.x, 5.2.6).
pub mod request_type {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Read the device ID string.
    pub const GET_ID: u32 = 8;
}

/// Request status bytes.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const IOERR: u8 = 1;
    /// The request type is not supported.
    pub const UNSUPP: u8 = 2;
}

/// Errors attaching a disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened.
    #[error("cannot open disk image {0}")]
    Open(std::path::PathBuf, #[source] std::io::Error),
    /// The file's size could not be read.
    #[error("cannot read the size of disk image {0}")]
    Metadata(std::path::PathBuf, #[source] std::io::Error),
    /// The size is not a whole number of sectors.
    #[error("disk image {0} is {1} bytes, not a multiple of 512")]
    UnalignedSize(std::path::PathBuf, u64),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd for a block device")]
    EventFd(#[source] std::io::Error),
}

/// The configuration space (`struct virtio_blk_config` up to `blk_size`): capacity in
/// sectors, `size_max` (unused), `seg_max`, geometry (unused), `blk_size` (unused).
fn config_space(capacity: u64) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c
}
