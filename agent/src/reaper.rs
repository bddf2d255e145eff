//! Child reaping for PID 1. Every orphan in the guest is re-parented to the agent, so it must
//! collect them all or they stay zombies. SIGCHLD is blocked and delivered through a signalfd,
//! on which the protocol server's reaper thread (or, for `husk.exec=`, [`Reaper::wait_for`])
//! blocks. Then `waitpid(-1, WNOHANG)` is looped until nothing is left to collect
//! (SIGCHLDs coalesce, so one signal may stand for many exits).

use std::fmt;
use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::{c_int, pid_t};

/// Errors from reaping children.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// SIGCHLD could not be blocked.
    #[error("cannot block SIGCHLD")]
    Mask(#[source] io::Error),
    /// The signalfd could not be created.
    #[error("cannot create the SIGCHLD signalfd")]
    SignalFd(#[source] io::Error),
    /// Reading the signalfd failed.
    #[error("cannot wait for SIGCHLD")]
    Read(#[source] io::Error),
    /// waitpid(2) failed for a reason other than "no children".
    #[error("waitpid failed")]
    Wait(#[source] io::Error),
    /// The child waited for is not (or no longer) a child of the agent.
    #[error("process {0} is not a child of the agent")]
    NotAChild(pid_t),
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// exit(code).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl Status {
    fn from_raw(raw: c_int) -> Self {
        if libc::WIFSIGNALED(raw) {
            Status::Signaled(libc::WTERMSIG(raw))
        } else {
            Status::Exited(libc::WEXITSTATUS(raw))
        }
    }

    /// The shell/docker convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            Status::Exited(code) => code,
            Status::Signaled(sig) => 128 + sig,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exited with {code}"),
            Status::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// One collected child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Its pid.
    pub pid: pid_t,
    /// How it ended.
    pub status: Status,
}

/// Owns SIGCHLD for the agent. Create it before starting any thread or child: threads started
/// later inherit the blocked mask (so only the signalfd sees SIGCHLD), and so do children
/// unless unblocked before exec (`exec` and the server's spawn do that; std no longer does).
#[derive(Debug)]
pub struct Reaper {
    sigfd: OwnedFd,
}

impl Reaper {
    /// Blocks SIGCHLD and opens a signalfd for it.
    pub fn new() -> Result<Self, ReaperError> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset then edits that
        // initialised set; pthread_sigmask and signalfd only read it.
        let fd = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGCHLD);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
            if rc != 0 {
                return Err(ReaperError::Mask(io::Error::from_raw_os_error(rc)));
            }
            libc::signalfd(-1, set.as_ptr(), libc::SFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(ReaperError::SignalFd(io::Error::last_os_error()));
        }
        // SAFETY: signalfd just returned this fd and nothing else owns it.
        let sigfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { sigfd })
    }

    /// Collects every child that has already exited, without blocking.
    pub fn reap(&self) -> Result<Vec<Reaped>, ReaperError> {
        let mut out = Vec::new();
        reap_into(&mut out)?;
        Ok(out)
    }

    /// Blocks until child `pid` exits and returns its status; every other child collected
    /// meanwhile (orphans re-parented to PID 1) is handed to `on_other`.
    pub fn wait_for(
        &self,
        pid: pid_t,
        mut on_other: impl FnMut(Reaped),
    ) -> Result<Status, ReaperError> {
        loop {
            let mut reaped = Vec::new();
            let children_left = reap_into(&mut reaped)?;
            let mut found = None;
            for r in reaped {
                if r.pid == pid {
                    found = Some(r.status)
                } else {
                    on_other(r)
                }
            }
            match found {
                Some(status) => return Ok(status),
                None if !children_left => return Err(ReaperError::NotAChild(pid)),
                None => self.wait_sigchld()?,
            }
        }
    }

    /// Blocks until at least one SIGCHLD is pending, and consumes it.
    pub fn wait_sigchld(&self) -> Result<(), ReaperError> {
        let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
        loop {
            // SAFETY: reads at most size_of::<signalfd_siginfo>() bytes into `info`, which is
            // that large; the content is never read, only the byte count.
            let n = unsafe {
                libc::read(
                    self.sigfd.as_raw_fd(),
                    info.as_mut_ptr().cast(),
                    size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(ReaperError::Read(err));
            }
        }
    }
}

/// `waitpid(-1, WNOHANG)` until it reports nothing more; returns whether children remain.
fn reap_into(out: &mut Vec<Reaped>) -> Result<bool, ReaperError> {
    loop {
        let mut raw: c_int = 0;
        // SAFETY: waitpid writes the status into `raw`, a valid c_int.
        let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
        match pid {
            0 => return Ok(true),
            p if p > 0 => out.push(Reaped {
                pid: p,
                status: Status::from_raw(raw),
            }),
            _ => match io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ECHILD) => return Ok(false),
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e => return Err(ReaperError::Wait(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_docker() {
        assert_eq!(Status::Exited(3).code(), 3);
        assert_eq!(Status::Signaled(libc::SIGKILL).code(), 137);
        assert_eq!(Status::from_raw(7 << 8), Status::Exited(7));
        assert_eq!(
            Status::from_raw(libc::SIGTERM),
            Status::Signaled(libc::SIGTERM)
        );
        assert_eq!(Status::Signaled(9).to_string(), "killed by signal 9");
    }
}
