//! The container's own process namespaces. The container's main process (a spec with
//! `main`, started after `Setup`: the workload) becomes PID 1 of a new PID namespace, in a
//! mount namespace of its own whose `/proc` is mounted from inside that PID namespace: in the
//! container, `ps` shows the workload as PID 1 and never the agent, as with docker. Every
//! later process (`exec`) joins both; processes started before any main process run in the
//! agent's namespaces, as they did before this existed. The agent stays outside, in the sandbox's namespaces (the VM's, or the process
//! sandbox's), from where it sees, signals and reaps all of them; when the workload ends,
//! the kernel ends everything else in its PID namespace.
//!
//! Which PID namespace a new child gets is a per-thread setting (`pid_for_children`): the
//! spawning thread switches it just around the fork and back ([`ForChildren`]), with the
//! process table locked, so no other fork of the agent lands in the container by accident.
//! The mount namespace is the child's own step between fork and exec ([`ChildStep`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use libc::{CLONE_NEWNS, CLONE_NEWPID, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_REC, MS_SLAVE};

use super::lock;

/// Errors from preparing a process's namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A second main process.
    #[error("the container already has a main process")]
    SecondMain,
    /// A main process outside a container.
    #[error("a main process needs a container (Setup first)")]
    NotContainer,
    /// The workload has ended, and its PID namespace with it.
    #[error("the container's main process has ended")]
    Ended,
    /// A namespace operation failed.
    #[error("cannot {0}")]
    Step(&'static str, #[source] io::Error),
}

/// The container's namespaces, as handles on its PID 1's.
#[derive(Debug)]
pub struct Joinable {
    pid: OwnedFd,
    mnt: OwnedFd,
}

/// Where the container is: no workload yet, its namespaces, or ended.
#[derive(Debug)]
enum State {
    NotYet,
    Running(Joinable),
    Ended,
}

static STATE: Mutex<State> = Mutex::new(State::NotYet);

/// What a new process does about the container's namespaces.
#[derive(Debug)]
pub enum Plan {
    /// Not in a container (host-process mode, or before `Setup`): nothing.
    Host,
    /// The workload: new PID and mount namespaces.
    Create,
    /// Any later process: the workload's.
    Join(Joinable),
}

/// The plan for the next process: `main` is the spec's, `in_container` whether `Setup` has
/// run.
pub fn plan(in_container: bool, main: bool) -> Result<Plan, NamespaceError> {
    if !in_container {
        return match main {
            true => Err(NamespaceError::NotContainer),
            false => Ok(Plan::Host),
        };
    }
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| NamespaceError::Step("duplicate a namespace handle", e))
    };
    match (&*lock(&STATE), main) {
        (State::NotYet, true) => Ok(Plan::Create),
        (State::NotYet, false) => Ok(Plan::Host),
        (_, true) => Err(NamespaceError::SecondMain),
        (State::Running(ns), false) => Ok(Plan::Join(Joinable {
            pid: dup(&ns.pid)?,
            mnt: dup(&ns.mnt)?,
        })),
        (State::Ended, false) => Err(NamespaceError::Ended),
    }
}

impl Plan {
    /// Switches this thread's `pid_for_children` for the fork to come; switched back when
    /// the guard is dropped.
    pub fn for_children(&self) -> Result<ForChildren, NamespaceError> {
        let join = match self {
            Plan::Host => return Ok(ForChildren { restore: None }),
            Plan::Create => None,
            Plan::Join(ns) => Some(ns.pid.as_raw_fd()),
        };
        let own = File::open("/proc/thread-self/ns/pid")
            .map_err(|e| NamespaceError::Step("open the agent's PID namespace", e))?;
        // SAFETY: unshare and setns take only flags and a descriptor we own.
        let rc = unsafe {
            match join {
                None => libc::unshare(CLONE_NEWPID),
                Some(fd) => libc::setns(fd, CLONE_NEWPID),
            }
        };
        if rc < 0 {
            let what = match join {
                None => "create the container's PID namespace",
                Some(_) => "enter the container's PID namespace",
            };
            return Err(NamespaceError::Step(what, io::Error::last_os_error()));
        }
        Ok(ForChildren {
            restore: Some(own.into()),
        })
    }

    /// What the child does between fork and exec; `cwd` is where it must end up (joining a
    /// mount namespace moves it to the root).
    pub fn child_step(&self, cwd: &str) -> Result<ChildStep, NamespaceError> {
        Ok(match self {
            Plan::Host => ChildStep::Nothing,
            Plan::Create => ChildStep::Create,
            Plan::Join(ns) => ChildStep::Join {
                mnt: ns.mnt.as_raw_fd(),
                cwd: CString::new(cwd).map_err(|e| {
                    NamespaceError::Step("use the working directory", io::Error::other(e))
                })?,
            },
        })
    }

    /// After a successful spawn: the workload's namespaces become the container's.
    pub fn started(&self, pid: libc::pid_t) {
        if !matches!(self, Plan::Create) {
            return;
        }
        let open = |ns: &str| File::open(format!("/proc/{pid}/ns/{ns}")).map(OwnedFd::from);
        // A workload that has already exited (a zombie has no namespaces) ends it at once.
        *lock(&STATE) = match (open("pid"), open("mnt")) {
            (Ok(pid), Ok(mnt)) => State::Running(Joinable { pid, mnt }),
            _ => State::Ended,
        };
    }
}

/// Restores the spawning thread's `pid_for_children` when dropped.
#[derive(Debug)]
pub struct ForChildren {
    restore: Option<OwnedFd>,
}

impl Drop for ForChildren {
    fn drop(&mut self) {
        if let Some(own) = &self.restore {
            // SAFETY: setns takes a descriptor we own and a flag. Going back to the thread's
            // own (active) PID namespace is always allowed.
            if unsafe { libc::setns(own.as_raw_fd(), CLONE_NEWPID) } < 0 {
                let e = io::Error::last_os_error();
                crate::console::say!("cannot switch back to the agent's PID namespace: {e}");
            }
        }
    }
}

/// The child's part, prepared before the fork (nothing to allocate after it).
#[derive(Debug)]
pub enum ChildStep {
    /// Nothing.
    Nothing,
    /// A mount namespace of its own (receiving the agent's later mounts) with a `/proc` of
    /// the new PID namespace.
    Create,
    /// Join the workload's mount namespace, then go to `cwd`.
    Join {
        /// The workload's mount namespace.
        mnt: RawFd,
        /// The working directory.
        cwd: CString,
    },
}

impl ChildStep {
    /// In the child: only async-signal-safe calls on prepared data.
    pub fn run(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| match rc {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        };
        // SAFETY: unshare/setns/mount/chdir take flags, a descriptor the parent owns, and
        // pointers to static C strings or the prepared cwd, all alive until exec.
        unsafe {
            match self {
                ChildStep::Nothing => Ok(()),
                ChildStep::Create => {
                    check(libc::unshare(CLONE_NEWNS))?;
                    let none = std::ptr::null();
                    check(libc::mount(
                        none,
                        c"/".as_ptr(),
                        none,
                        MS_REC | MS_SLAVE,
                        std::ptr::null(),
                    ))?;
                    check(libc::mount(
                        c"proc".as_ptr(),
                        c"/proc".as_ptr(),
                        c"proc".as_ptr(),
                        MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        std::ptr::null(),
                    ))
                }
                ChildStep::Join { mnt, cwd } => {
                    check(libc::setns(*mnt, CLONE_NEWNS))?;
                    check(libc::chdir(cwd.as_ptr()))
                }
            }
        }
    }
}
