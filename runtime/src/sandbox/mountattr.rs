//! `mount_setattr(2)` for volume mounts made on the host: a whole mount tree made
//! private (no propagation back to where it came from), `nodev` and, where asked,
//! read-only, in one call that touches only those attributes. Async-signal-safe (no
//! allocation), so a forked child may call it.

use std::ffi::CStr;
use std::os::fd::RawFd;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// Makes the mount tree at `path` beneath `dir` (`c""` with `AT_EMPTY_PATH` in `flags`
/// for `dir` itself) private and `nodev`, and read-only with `read_only`, recursively.
pub fn restrict(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_uint,
    read_only: bool,
) -> std::io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NODEV | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads the NUL-terminated `path` and `attr` (its size passed
    // alongside), both alive across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags | libc::AT_RECURSIVE as libc::c_uint,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}
