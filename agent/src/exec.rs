//! Runs the optional `husk.exec=` program: spawn it with the agent's console as stdio, wait
//! for it while reaping orphans, and turn the outcome into a docker-style exit code. A workload
//! that cannot start is a workload failure (126/127), not an agent failure.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::console::say;
use crate::reaper::{Reaper, ReaperError};
use crate::transport::Exit;

/// `PATH` given to the program when the kernel passed none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors from running the program (not its failure to start, which is an [`Exit`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Waiting for the program failed.
    #[error("cannot wait for {0}")]
    Wait(String, #[source] ReaperError),
    /// The kernel returned a pid outside pid_t.
    #[error("child pid {0} out of range")]
    Pid(u32),
}

/// Runs `path` without arguments and waits for it.
pub fn run(path: &Path, reaper: &Reaper) -> Result<Exit, ExecError> {
    let shown = path.display().to_string();
    let mut cmd = Command::new(path);
    // The agent's own configuration is not the workload's business.
    cmd.env_remove(crate::cmdline::CMDLINE_ENV);
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    // std hands the parent's signal mask to children (rust-lang/rust#101077), and the agent
    // blocks SIGCHLD for its signalfd: the workload must start with nothing blocked.
    // SAFETY: runs in the forked child before exec and only calls sigemptyset and
    // pthread_sigmask on a local set, both async-signal-safe; it allocates and locks nothing.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            match libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) {
                0 => Ok(()),
                rc => Err(io::Error::from_raw_os_error(rc)),
            }
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return Ok(spawn_failure(&shown, &e)),
    };
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| ExecError::Pid(child.id()))?;
    say!("started {shown} as pid {pid}");
    // `child` is dropped without waiting: the reaper collects it, along with any orphans.
    drop(child);
    let status = reaper
        .wait_for(pid, |orphan| {
            say!("reaped orphan pid {} ({})", orphan.pid, orphan.status)
        })
        .map_err(|e| ExecError::Wait(shown.clone(), e))?;
    Ok(Exit {
        code: status.code(),
        detail: format!("{shown} {status}"),
    })
}

/// Docker's codes for a program that never ran: 127 not found, 126 cannot execute, and
/// docker's words for a name that is not in `PATH`.
pub(crate) fn spawn_failure(shown: &str, err: &io::Error) -> Exit {
    let (code, detail) = match err.kind() {
        io::ErrorKind::NotFound if !shown.contains('/') => (
            127,
            format!("exec: {shown:?}: executable file not found in $PATH"),
        ),
        io::ErrorKind::NotFound => (127, format!("{shown}: no such file or directory")),
        _ => (126, format!("{shown}: {err}")),
    };
    Exit { code, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawn_failures_map_to_docker_codes() {
        let nf = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(spawn_failure("/x", &nf).code, 127);
        assert_eq!(
            spawn_failure("", &nf).detail,
            r#"exec: "": executable file not found in $PATH"#
        );
        let perm = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(spawn_failure("/x", &perm).code, 126);
        let noexec = io::Error::from_raw_os_error(libc::ENOEXEC);
        assert_eq!(spawn_failure("/x", &noexec).code, 126);
    }
}
