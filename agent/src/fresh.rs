//! Clones, not twins: a VM restored from a snapshot wakes up with the RNG state and the
//! clock of the guest the snapshot was taken of. Before the host's first container setup
//! the agent mixes host-supplied bytes into the kernel's pool, credits them and reseeds
//! the kernel's generator, and sets the wall clock to the host's. Only ever in a VM guest
//! (the agent serves vsock): a process sandbox shares the host's kernel.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use agent_proto::GuestIdentity;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])` (linux/random.h).
const RNDADDENTROPY: libc::Ioctl = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::Ioctl = 0x5207;
/// The most entropy accepted per request (the kernel's pool is 256 bits; more only
/// costs time).
const MAX_ENTROPY: usize = 512;

static VM_GUEST: AtomicBool = AtomicBool::new(false);

/// Errors making the guest itself.
#[derive(Debug, thiserror::Error)]
pub enum FreshError {
    /// Asked outside a VM guest.
    #[error("a guest identity is for VM guests only: this agent shares its host's kernel")]
    NotVmGuest,
    /// Too little or too much entropy.
    #[error("{0} bytes of entropy: a guest identity brings 16 to {MAX_ENTROPY}")]
    EntropySize(usize),
    /// The kernel refused the entropy.
    #[error("cannot add entropy to the guest kernel's pool")]
    AddEntropy(#[source] io::Error),
    /// The kernel refused to reseed.
    #[error("cannot reseed the guest kernel's random number generator")]
    Reseed(#[source] io::Error),
    /// The clock could not be set.
    #[error("cannot set the guest's wall clock")]
    Clock(#[source] io::Error),
}

/// Records that the agent serves a VM's host (called when it listens on vsock).
pub fn mark_vm_guest() {
    VM_GUEST.store(true, Ordering::SeqCst);
}

/// Whether the agent serves a VM's host (see [`mark_vm_guest`]).
pub fn is_vm_guest() -> bool {
    VM_GUEST.load(Ordering::SeqCst)
}

/// Reseeds the guest's RNG with the host's bytes and sets its clock.
pub fn apply(identity: &GuestIdentity) -> Result<(), FreshError> {
    if !is_vm_guest() {
        return Err(FreshError::NotVmGuest);
    }
    reseed(&identity.entropy)?;
    set_clock(identity.wall_clock_ns)
}

fn reseed(entropy: &[u8]) -> Result<(), FreshError> {
    if !(16..=MAX_ENTROPY).contains(&entropy.len()) {
        return Err(FreshError::EntropySize(entropy.len()));
    }
    let random = File::open("/dev/urandom").map_err(FreshError::AddEntropy)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let bits = i32::try_from(entropy.len() * 8).unwrap_or(i32::MAX);
    let size = i32::try_from(entropy.len()).unwrap_or(i32::MAX);
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&size.to_ne_bytes());
    info.extend_from_slice(entropy);
    // SAFETY: `info` is a complete rand_pool_info whose buf_size matches the bytes that
    // follow the header; the kernel only reads it during the call.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(FreshError::AddEntropy(io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(FreshError::Reseed(io::Error::last_os_error()));
    }
    Ok(())
}

fn set_clock(wall_clock_ns: u64) -> Result<(), FreshError> {
    let ts = libc::timespec {
        tv_sec: i64::try_from(wall_clock_ns / 1_000_000_000).unwrap_or(i64::MAX),
        tv_nsec: i64::try_from(wall_clock_ns % 1_000_000_000).unwrap_or(0),
    };
    // SAFETY: `ts` is a valid timespec that outlives the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(FreshError::Clock(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_vm_guest_nothing_is_touched() {
        let identity = GuestIdentity {
            entropy: vec![7; 32],
            wall_clock_ns: 0,
        };
        assert!(matches!(apply(&identity), Err(FreshError::NotVmGuest)));
    }

    #[test]
    fn entropy_size_is_checked_first() {
        assert!(matches!(reseed(&[1; 3]), Err(FreshError::EntropySize(3))));
        assert!(matches!(
            reseed(&[1; MAX_ENTROPY + 1]),
            Err(FreshError::EntropySize(_))
        ));
    }
}
