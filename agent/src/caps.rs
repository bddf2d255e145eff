//! Docker's default capability set for container processes: once the rootfs is set up, every
//! process the agent starts keeps only these in its bounding set (with empty inheritable and
//! ambient sets), so a root workload gets exactly docker's root (no `CAP_SYS_ADMIN`, no
//! mounting, no module loading), in a VM and, more importantly, on a host in process mode.
//! Applied in the forked child before exec; everything here is async-signal-safe.

use std::io;

/// Docker's defaults, by number: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
const DEFAULT: &[u32] = &[0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// The default set as a mask (what `/proc/self/status` shows as `CapBnd`).
pub const DEFAULT_MASK: u64 = mask(DEFAULT);

/// The agent's tools: the default set plus DAC_READ_SEARCH (read every file) and
/// SYS_ADMIN (`open_tree` of the root): nothing that reads kernel memory or logs
/// (SYS_RAWIO, SYSLOG), should a workload swap a path for a symlink under a tool.
pub const TOOL_MASK: u64 = DEFAULT_MASK | mask(&[2, 21]);

const fn mask(caps: &[u32]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < caps.len() {
        m |= 1 << caps[i];
        i += 1;
    }
    m
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child, before exec and before the identity switch (dropping needs
/// `CAP_SETPCAP`): shrinks the bounding set to `keep` (docker's [`DEFAULT_MASK`] unless
/// `--cap-add`/`--cap-drop`/`--privileged` said otherwise) and clears the inheritable and
/// ambient sets, so exec cannot grant anything beyond it.
pub fn restrict_in_child(keep: u64) -> io::Result<()> {
    for cap in 0..64u32 {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        // EINVAL: beyond the kernel's last capability.
        if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: prctl with integer arguments only. Kernels without ambient sets say EINVAL.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let empty = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    let mut data = [empty; 2];
    // SAFETY: capget writes two `Data` (version 3) through the pointer, which points at a
    // live array of two; the header is read (and its version may be written).
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    for d in &mut data {
        d.inheritable = 0;
    }
    // SAFETY: capset reads the header and two `Data`, all live locals.
    if unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask_is_dockers() {
        assert_eq!(DEFAULT_MASK, 0xa804_25fb);
    }
}
