//! Brings the sandbox's loopback interface up, as every container runtime does: a server
//! and a client in one container talk over 127.0.0.1, whatever the network mode.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sets `IFF_UP` on `lo` (a no-op if it is up already).
pub fn up() -> io::Result<()> {
    // SAFETY: socket takes no pointers; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (empty name, zero flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq, which lives until the end.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &raw mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        let up = libc::IFF_UP as libc::c_short;
        if req.ifr_ifru.ifru_flags & up != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags |= up;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &raw const req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
