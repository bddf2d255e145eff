//! The agent's standard streams. Owns `say!` (diagnostics to stderr, prefixed
//! `husk-agent: `) and the fallback that points fds 0-2 at `/dev/console` when the kernel
//! could not open one for init (an initramfs without `/dev/console`).

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

/// Prints one diagnostic line to stderr, prefixed `husk-agent: `; write errors are ignored
/// (there is nowhere else to report them).
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = writeln!(::std::io::stderr(), "husk-agent: {}", format_args!($($arg)*));
    }};
}
pub(crate) use say;

/// Errors from setting up the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// `/dev/console` could not be opened.
    #[error("cannot open /dev/console")]
    Open(#[source] io::Error),
    /// dup2(2) onto a standard fd failed.
    #[error("cannot attach /dev/console to fd {0}")]
    Dup(RawFd, #[source] io::Error),
}

/// Attaches `/dev/console` to whichever of fds 0, 1, 2 is closed. Needs /dev mounted.
pub fn ensure_stdio() -> Result<(), ConsoleError> {
    let closed: Vec<RawFd> = (0..=2).filter(|&fd| !is_open(fd)).collect();
    if closed.is_empty() {
        return Ok(());
    }
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .map_err(ConsoleError::Open)?;
    // open(2) returns the lowest free fd, so `console` may itself be one of the closed ones.
    let raw = console.as_raw_fd();
    for fd in closed.iter().copied().filter(|&fd| fd != raw) {
        // SAFETY: dup2 between fds we name explicitly: `console` stays open during the call and
        // `fd` (0-2) is closed, so no descriptor owned by anything else is replaced.
        if unsafe { libc::dup2(raw, fd) } < 0 {
            return Err(ConsoleError::Dup(fd, io::Error::last_os_error()));
        }
    }
    if closed.contains(&raw) {
        // It is a standard stream from now on: keep it open for the life of the process.
        let _ = console.into_raw_fd();
    }
    Ok(())
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table; an invalid fd yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Kernel messages less urgent than this still reach the log buffer (`dmesg`), not the
/// console: warnings and worse (an oops, the OOM killer) still do.
const CONSOLE_LOGLEVEL: libc::c_int = 4;

/// Stops informational kernel messages (a disk's new size, a mount) from being written to a
/// VM's serial console once the agent is up: each byte there is a VM exit and emulated
/// driver work on an emulating KVM, and a warm container's setup printed about ten lines.
/// Best effort.
pub fn quiet_kernel() {
    const SYSLOG_ACTION_CONSOLE_LEVEL: libc::c_int = 8;
    // SAFETY: klogctl with this action takes no buffer, only the level.
    unsafe {
        libc::klogctl(
            SYSLOG_ACTION_CONSOLE_LEVEL,
            std::ptr::null_mut(),
            CONSOLE_LOGLEVEL,
        )
    };
}
