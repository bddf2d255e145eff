//! virtio-fs (virtio 1.x, 5.11): a host directory shared with the guest, served by a
//! vhost-user daemon (virtiofsd) that reads the queues straight from guest memory. The
//! VMM only negotiates features, hands the daemon the guest RAM (a shared memfd, see
//! `vm::ram`) and each queue's addresses, kick eventfd (the transport's ioeventfd) and
//! call eventfd (the device's irqfd), and answers the configuration space: the mount tag
//! and one request queue. A slot without a daemon (VM templates) lets the driver set
//! its queues up and serves nothing; a VM restored from such a template with a daemon
//! hands the daemon the queues as the driver left them. This file holds the
//! configuration and the errors;
//! `device.rs` the `VirtioDevice`, `frontend.rs` the vhost-user conversation.

mod device;
mod frontend;

use std::path::PathBuf;

pub use device::Fs;

/// Longest mount tag (the configuration space's `tag[36]`).
pub const TAG_MAX: usize = 36;
/// Queues: one high-priority queue and one request queue.
pub const QUEUES: usize = 2;
/// Size of each queue offered to the driver.
pub const QUEUE_SIZE: u16 = 1024;

/// A shared directory's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The daemon's vhost-user socket (listening already, or about to: the device
    /// waits a moment for it); `None` is an *unplugged* slot: the guest's driver finds
    /// the device and sets up its queues, nothing serves them (VM templates keep one, so
    /// a VM restored from them can be given a daemon).
    pub socket: Option<PathBuf>,
    /// The mount tag the guest names (`mount -t virtiofs TAG DIR`).
    pub tag: String,
}

impl FsConfig {
    /// A shared directory behind `socket`, mounted in the guest by `tag`.
    pub fn new(socket: impl Into<PathBuf>, tag: &str) -> Result<FsConfig, Error> {
        Ok(FsConfig {
            socket: Some(socket.into()),
            ..FsConfig::unplugged(tag)?
        })
    }

    /// A slot with tag `tag` and no daemon.
    pub fn unplugged(tag: &str) -> Result<FsConfig, Error> {
        if tag.is_empty() || tag.len() > TAG_MAX || tag.contains('\0') {
            return Err(Error::Tag(tag.to_owned()));
        }
        Ok(FsConfig {
            socket: None,
            tag: tag.to_owned(),
        })
    }
}

/// Errors setting up or running a shared directory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tag does not fit the configuration space.
    #[error("{0:?} is not a valid virtio-fs tag (1 to {TAG_MAX} bytes, no NUL)")]
    Tag(String),
    /// The daemon's socket could not be reached.
    #[error("cannot connect to the virtio-fs daemon at {0}")]
    Connect(PathBuf, #[source] vhost::Error),
    /// The daemon refused or failed a vhost-user request.
    #[error("the virtio-fs daemon failed to {0}")]
    Backend(&'static str, #[source] vhost::Error),
    /// The daemon lacks what the device needs.
    #[error("the virtio-fs daemon does not offer {0}")]
    Missing(&'static str),
    /// Guest memory is not shareable with the daemon.
    #[error("guest memory is not in a shareable file (the VM needs shared memory)")]
    PrivateMemory,
    /// A queue's ring is outside guest memory.
    #[error("queue {0}'s ring is outside guest memory")]
    Ring(usize),
}

/// The configuration space: `tag[36]` then `num_request_queues` (le32).
fn config_space(tag: &str) -> [u8; TAG_MAX + 4] {
    let mut c = [0u8; TAG_MAX + 4];
    c[..tag.len()].copy_from_slice(tag.as_bytes());
    c[TAG_MAX..].copy_from_slice(&1u32.to_le_bytes());
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_must_fit_the_configuration_space() {
        assert!(FsConfig::new("/s", "husk").is_ok());
        assert!(FsConfig::new("/s", &"x".repeat(36)).is_ok());
        for bad in ["", "a\0b", &"x".repeat(37)] {
            let e = FsConfig::new("/s", bad).unwrap_err();
            assert!(e.to_string().contains("not a valid virtio-fs tag"), "{e}");
        }
    }

    #[test]
    fn the_configuration_space_is_the_tag_then_one_request_queue() {
        let c = config_space("vol");
        assert_eq!(&c[..3], b"vol");
        assert!(c[3..TAG_MAX].iter().all(|&b| b == 0));
        assert_eq!(&c[TAG_MAX..], &[1, 0, 0, 0]);
    }
}
