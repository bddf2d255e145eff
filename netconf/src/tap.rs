//! Persistent TAP interfaces: made by the host side before a VMM opens them by name
//! (`TUNSETIFF` + `TUNSETPERSIST`), so they can be put on a bridge first and outlive
//! the VMM until deleted (`Netlink::delete_link`).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::Error;

/// `TUNSETIFF`: `_IOW('T', 202, int)` (`libc::Ioctl`: the request type differs between
/// glibc and musl, and the agent is built for either).
const TUNSETIFF: libc::Ioctl = 0x4004_54ca;
/// `TUNSETPERSIST`: `_IOW('T', 203, int)`.
const TUNSETPERSIST: libc::Ioctl = 0x4004_54cb;
/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: what the VMM opens it with.
const FLAGS: libc::c_short = 0x0002 | 0x1000 | 0x4000;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates the persistent TAP `name` (down) in the calling thread's namespace.
pub fn create_persistent(name: &str) -> Result<(), Error> {
    let op = "create a TAP interface";
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Error::NoSuchLink(name.to_string()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| Error::Io(op, e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: FLAGS,
        _pad: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    let kernel = |source| Error::Kernel { op, source };
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `IfReq` lays out in full; the fd
    // is the tun device opened above.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(kernel(std::io::Error::last_os_error()));
    }
    // SAFETY: TUNSETPERSIST takes its argument by value; no memory is passed.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(kernel(std::io::Error::last_os_error()));
    }
    Ok(())
}
