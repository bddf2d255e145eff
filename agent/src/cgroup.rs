//! The container's own cgroup for `--pids-limit`, which counts the container's processes
//! and never the agent's threads: every process started after `Setup` joins it between fork
//! and exec (a write of `0` to its `cgroup.procs`, opened once). In a microVM the agent makes
//! it (`husk-container` under the guest's cgroup2 mount, pids controller on); under process
//! isolation the host makes it and passes its `cgroup.procs` down (`husk.cgroup=fd:N`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::OnceLock;

/// The guest's cgroup2 mount (an early mount of the agent's).
const ROOT: &str = "/sys/fs/cgroup";
/// The container's group.
const GROUP: &str = "husk-container";

static PROCS: OnceLock<File> = OnceLock::new();

/// Creates the group with at most `pids` processes.
pub fn setup(pids: u64) -> io::Result<()> {
    let root = Path::new(ROOT);
    let dir = root.join(GROUP);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(root.join("cgroup.subtree_control"), "+pids")?;
    std::fs::write(dir.join("pids.max"), pids.to_string())?;
    let procs = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    let _ = PROCS.set(procs);
    Ok(())
}

/// Adopts an inherited `cgroup.procs` descriptor (`husk.cgroup=fd:N`); close-on-exec from
/// now on, so no workload inherits it.
pub fn adopt(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor; F_GETFD fails (EBADF) if it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the host passed this descriptor for the agent alone; nothing else owns it.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = PROCS.set(file);
    Ok(())
}

/// `cgroup.procs` of the group, if there is one, for a child to join (write `0`).
pub fn procs_fd() -> Option<RawFd> {
    PROCS.get().map(AsRawFd::as_raw_fd)
}
