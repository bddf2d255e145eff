//! `husk-init`: docker's `--init` (tini, docker-init) for husk containers. The agent binary
//! runs as this program when its `argv[0]` is [`ARGV0`]: it starts the workload given after
//! `--` as its child, in the child's own process group (the terminal's foreground group with
//! a tty), forwards every signal it can catch to it, reaps every process that ends up its
//! child (orphans reparent to PID 1), and exits with the workload's status (128+N if signal N
//! ended it) as soon as the workload has ended, which as PID 1 of the container's PID
//! namespace ends every process left in it.
//!
//! The agent starts it through [`command`] (see `self_exe`).

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The name the agent runs under when it is the container's init.
pub const ARGV0: &str = "husk-init";

/// Whether this process was started as `husk-init`.
pub fn invoked() -> bool {
    crate::self_exe::invoked_as(ARGV0)
}

/// The command that runs `argv` under `husk-init`.
pub fn command(argv: &[String]) -> io::Result<crate::launch::Command> {
    let mut cmd = crate::self_exe::command(ARGV0)?;
    cmd.arg("--").args(argv);
    Ok(cmd)
}

/// The command that holds a container open (`agent_proto::Tool::Hold`).
pub fn hold_command() -> io::Result<crate::launch::Command> {
    let mut cmd = crate::self_exe::command(ARGV0)?;
    cmd.arg(HOLD);
    Ok(cmd)
}

/// The argument of [`hold_command`].
const HOLD: &str = "--hold";

/// Runs `husk-init -- PROGRAM ARGS...` (or `husk-init --hold`); returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut args = args.into_iter().skip(1);
    let argv: Vec<OsString> = match args.next() {
        Some(dashes) if dashes == "--" => args.collect(),
        Some(hold) if hold == HOLD => return hold_open(),
        _ => Vec::new(),
    };
    let Some((program, rest)) = argv.split_first() else {
        eprintln!("{ARGV0}: usage: {ARGV0} -- PROGRAM [ARGS...]");
        return 125;
    };
    // Shown in `ps` (the executable's name would be the descriptor's number).
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"husk-init".as_ptr()) };
    let all = full_set();
    // Blocked, so they queue for sigwaitinfo; a blocked signal also counts as handled for a
    // PID namespace's init, so the workload's TERM reaches this process and is passed on.
    // SAFETY: sets this (single-threaded) process's mask from a filled local set.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &raw const all, std::ptr::null_mut()) };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // SAFETY: runs in the forked child before exec; setpgid, tcsetpgrp, getpid, sigemptyset
    // and sigprocmask are async-signal-safe and take only local data.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            // Foreground on a controlling terminal, if stdin is one (fails harmlessly if
            // not); SIGTTOU is still blocked here, so asking does not stop the child.
            libc::tcsetpgrp(0, libc::getpid());
            let mut none = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(none.as_mut_ptr());
            libc::sigprocmask(libc::SIG_SETMASK, none.as_ptr(), std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let failure = crate::exec::spawn_failure(&program.to_string_lossy(), &e);
            eprintln!("{ARGV0}: {}", failure.detail);
            return failure.code;
        }
    };
    let Ok(workload) = libc::pid_t::try_from(child.id()) else {
        return 125;
    };
    drop(child);
    serve(workload, &all)
}

/// Holds the container open: reaps whatever reparents here, and ends with 0 at the first
/// SIGTERM, SIGINT, SIGHUP or SIGQUIT (docker's stop).
fn hold_open() -> i32 {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"husk-init".as_ptr()) };
    let all = full_set();
    // SAFETY: sets this (single-threaded) process's mask from a filled local set.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &raw const all, std::ptr::null_mut()) };
    loop {
        // SAFETY: sigwaitinfo reads the set and writes one siginfo_t into a local.
        let sig = unsafe {
            let mut info = MaybeUninit::<libc::siginfo_t>::uninit();
            libc::sigwaitinfo(&raw const all, info.as_mut_ptr())
        };
        match sig {
            libc::SIGCHLD => {
                reap(0);
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT => return 0,
            _ => {}
        }
    }
}

/// Forwards signals and reaps until the workload has ended; returns its code.
fn serve(workload: libc::pid_t, all: &libc::sigset_t) -> i32 {
    loop {
        // SAFETY: sigwaitinfo reads the set and writes one siginfo_t into a local.
        let sig = unsafe {
            let mut info = MaybeUninit::<libc::siginfo_t>::uninit();
            libc::sigwaitinfo(all, info.as_mut_ptr())
        };
        match sig {
            libc::SIGCHLD => {
                if let Some(code) = reap(workload) {
                    return code;
                }
            }
            sig if sig > 0 => {
                // SAFETY: kill takes no pointers; the workload is our unreaped child.
                unsafe { libc::kill(workload, sig) };
            }
            _ => {}
        }
    }
}

/// Reaps every exited child; the workload's code if it was among them.
fn reap(workload: libc::pid_t) -> Option<i32> {
    let mut code = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let pid = unsafe { libc::waitpid(-1, &raw mut status, libc::WNOHANG) };
        if pid <= 0 {
            return code;
        }
        if pid == workload {
            code = Some(if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            });
        }
    }
}

/// Every signal.
fn full_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initializes the whole set.
    unsafe {
        libc::sigfillset(set.as_mut_ptr());
        set.assume_init()
    }
}
