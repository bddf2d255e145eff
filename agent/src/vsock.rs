//! AF_VSOCK for the agent, which std does not cover: a listening socket on any CID, accepting
//! connections as plain descriptors, and the local CID (to tell a VM with a vsock device from
//! a machine without one).

use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `IOCTL_VM_SOCKETS_GET_LOCAL_CID` from <linux/vm_sockets.h>: `_IO(7, 0xb9)`.
const IOCTL_GET_LOCAL_CID: libc::Ioctl = 0x7b9;
/// CIDs 0-2 are the hypervisor, local loopback and the host; a guest's CID is above.
const FIRST_GUEST_CID: u32 = 3;
/// Pending connections the kernel queues for us.
const BACKLOG: libc::c_int = 16;

/// Errors from vsock sockets.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// socket(AF_VSOCK) failed (no vsock support in this kernel?).
    #[error("cannot create a vsock socket")]
    Socket(#[source] io::Error),
    /// bind(2) failed.
    #[error("cannot bind vsock port {0}")]
    Bind(u32, #[source] io::Error),
    /// listen(2) failed.
    #[error("cannot listen on vsock port {0}")]
    Listen(u32, #[source] io::Error),
}

/// A listening vsock socket.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port` of any local CID.
    pub fn bind(port: u32) -> Result<Self, VsockError> {
        // SAFETY: socket takes no pointers; a negative result is handled below.
        let raw =
            unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(VsockError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: socket just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_vm is plain data for which all-zero bytes are valid.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_port = port;
        addr.svm_cid = libc::VMADDR_CID_ANY;
        // SAFETY: `addr` is a live sockaddr_vm and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(VsockError::Bind(port, io::Error::last_os_error()));
        }
        // SAFETY: listen on a descriptor we own; no pointers.
        if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } < 0 {
            return Err(VsockError::Listen(port, io::Error::last_os_error()));
        }
        Ok(Self { fd })
    }

    /// Accepts one connection, as a file (reads and writes are plain read(2)/write(2)).
    pub fn accept(&self) -> io::Result<File> {
        loop {
            // SAFETY: a null address and length are allowed: the peer address is not wanted.
            let raw = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if raw >= 0 {
                // SAFETY: accept4 just returned this descriptor and nothing else owns it.
                return Ok(File::from(unsafe { OwnedFd::from_raw_fd(raw) }));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl std::os::fd::AsFd for VsockListener {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

/// This machine's guest CID, if it is a VM with a vsock device: `None` when there is no
/// vsock support, no device, or only a host-side CID.
pub fn guest_cid() -> Option<u32> {
    let dev = File::open("/dev/vsock").ok()?;
    let mut cid: u32 = libc::VMADDR_CID_ANY;
    // SAFETY: GET_LOCAL_CID writes one u32 through the pointer, which points at `cid`.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), IOCTL_GET_LOCAL_CID, &raw mut cid) };
    (rc == 0 && cid >= FIRST_GUEST_CID && cid != libc::VMADDR_CID_ANY).then_some(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_where_vsock_exists() {
        // Only machines that are themselves VMs with a vsock device can bind a guest port.
        let Some(cid) = guest_cid() else {
            eprintln!("SKIPPED: no guest vsock on this machine");
            return;
        };
        assert!(cid >= FIRST_GUEST_CID);
        let port = 49_152 + std::process::id() % 10_000;
        let listener = VsockListener::bind(port).unwrap();
        assert!(matches!(
            VsockListener::bind(port),
            Err(VsockError::Bind(..))
        ));
        drop(listener);
    }
}
