//! A one-shot wake-up flag that `poll(2)` can wait on next to other descriptors: an eventfd
//! that, once set, stays readable. Used to tell output pumps their process has exited and to
//! stop the accept loop on shutdown.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Errors from creating or setting the flag.
#[derive(Debug, thiserror::Error)]
pub enum EventFdError {
    /// eventfd(2) failed.
    #[error("cannot create an eventfd")]
    Create(#[source] io::Error),
    /// Writing to the eventfd failed.
    #[error("cannot signal an eventfd")]
    Write(#[source] io::Error),
}

/// A level-triggered flag: readable forever once [`EventFd::set`] was called.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new, unset flag.
    pub fn new() -> Result<Self, EventFdError> {
        // SAFETY: eventfd takes no pointers; a negative result is handled below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(EventFdError::Create(io::Error::last_os_error()));
        }
        // SAFETY: eventfd just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Sets the flag (idempotent: the counter is never read, so it stays readable).
    pub fn set(&self) -> Result<(), EventFdError> {
        let one: u64 = 1;
        // SAFETY: writes exactly 8 bytes from a live u64, as eventfd requires.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
        if n == 8 {
            Ok(())
        } else {
            Err(EventFdError::Write(io::Error::last_os_error()))
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Which descriptors [`poll_pair`] found ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The first descriptor is readable (or hung up / in error: a read will tell).
    pub first: bool,
    /// The second descriptor is readable.
    pub second: bool,
}

/// Waits until `first` or `second` (if given) is readable, or `timeout_ms` passes (-1: no
/// timeout). Returns `Ok(None)` on timeout.
pub fn poll_pair(
    first: BorrowedFd<'_>,
    second: Option<BorrowedFd<'_>>,
    timeout_ms: i32,
) -> io::Result<Option<Ready>> {
    let entry = |fd: BorrowedFd<'_>| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [entry(first), second.map_or(entry(first), entry)];
    let count: libc::nfds_t = if second.is_some() { 2 } else { 1 };
    loop {
        // SAFETY: `fds` is a live array of at least `count` pollfd structs, and the
        // descriptors are borrowed for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), count, timeout_ms) };
        if n > 0 {
            return Ok(Some(Ready {
                first: fds[0].revents != 0,
                second: count == 2 && fds[1].revents != 0,
            }));
        }
        if n == 0 {
            return Ok(None);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wakes_poll_and_stays_set() {
        let (a, b) = (EventFd::new().unwrap(), EventFd::new().unwrap());
        assert_eq!(poll_pair(a.as_fd(), Some(b.as_fd()), 0).unwrap(), None);
        b.set().unwrap();
        b.set().unwrap();
        let want = Ready {
            first: false,
            second: true,
        };
        assert_eq!(
            poll_pair(a.as_fd(), Some(b.as_fd()), -1).unwrap(),
            Some(want)
        );
        assert_eq!(
            poll_pair(a.as_fd(), Some(b.as_fd()), 0).unwrap(),
            Some(want)
        );
        assert_eq!(poll_pair(a.as_fd(), None, 0).unwrap(), None);
        let only = poll_pair(b.as_fd(), None, 0).unwrap().unwrap();
        assert!(only.first && !only.second);
    }
}
