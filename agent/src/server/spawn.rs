//! Starting one process from a [`ProcessSpec`]: validating it, resolving docker's
//! `user_name` (with `HOME`) and creating a missing working directory, building the command
//! (argv, exactly the given environment plus a default `PATH` and, where the kernel does
//! not preserve AVX state, glibc's tunable against it (`fpu`), cwd, identity), its stdio
//! (pipes, or a new pseudo-terminal as controlling tty) and what the child does between its
//! clone and exec (`launch`: the child borrows the agent's memory instead of copying it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use agent_proto::{ProcessSpec, TermSize, Tool, User};
use libc::pid_t;

use super::namespaces::{self, ChildStep, NamespaceError};
use crate::exec::DEFAULT_PATH;
use crate::launch::Command;
use crate::user::{self, UserError};

/// Stdio pipes are grown to this size where the kernel allows: fewer, larger transfers.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Errors from starting a process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The spec is unusable; nothing was started.
    #[error("invalid process spec: {0}")]
    Invalid(String),
    /// `user_name` names no user or group of the container (docker's message).
    #[error(transparent)]
    User(#[from] UserError),
    /// The working directory did not exist and could not be created.
    #[error("cannot create the working directory {0}")]
    Cwd(String, #[source] io::Error),
    /// The container's namespaces could not be entered.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// No pseudo-terminal could be opened.
    #[error("cannot open a pseudo-terminal")]
    Pty(#[source] io::Error),
    /// The program could not be started (a workload result: 126/127).
    #[error("cannot start {0}")]
    Start(String, #[source] io::Error),
}

/// The parent's ends of a started process's stdio.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: pid_t,
    /// Where its stdin goes (a pipe, or the pty master), if the host sends stdin.
    pub stdin: Option<OwnedFd>,
    /// Its stdout (or the pty master).
    pub stdout: OwnedFd,
    /// Its stderr (none with a tty).
    pub stderr: Option<OwnedFd>,
    /// The pty master, for resizing (tty only).
    pub tty: Option<OwnedFd>,
}

/// Checks what the agent cannot leave to exec to find out.
pub fn validate(spec: &ProcessSpec) -> Result<(), SpawnError> {
    let invalid = |m: String| Err(SpawnError::Invalid(m));
    // An empty program name is the workload's problem (not found: 127), as with docker.
    if spec.argv.is_empty() {
        return invalid("argv is empty".into());
    }
    match (&spec.tool, spec.main, spec.init) {
        (Some(Tool::Hold), true, false) | (None, ..) => {}
        (Some(Tool::Hold), ..) => {
            return invalid("the hold tool is a main process without init".into());
        }
        (Some(_), main, init) if main || init => {
            return invalid("a tool cannot be the main process or run under init".into());
        }
        (Some(_), ..) => {}
    }
    let strings = spec
        .argv
        .iter()
        .chain(&spec.env)
        .chain(&spec.cwd)
        .chain(&spec.user_name);
    if let Some(s) = strings.into_iter().find(|s| s.contains('\0')) {
        return invalid(format!("{s:?} contains a NUL byte"));
    }
    if let Some(e) = spec
        .env
        .iter()
        .find(|e| e.split_once('=').is_none_or(|(k, _)| k.is_empty()))
    {
        return invalid(format!("environment entry {e:?} is not KEY=VALUE"));
    }
    match &spec.cwd {
        Some(cwd) if !cwd.starts_with('/') => invalid(format!("cwd {cwd:?} is not absolute")),
        _ => Ok(()),
    }
}

/// Docker's preparations of a validated spec: `user_name` resolved in the current root
/// (the container's, after `Setup`) into `user`; unless `env` has one, `HOME` from the
/// passwd entry of that user (of root without `user_name`, in a container; `/` without an
/// entry); in a container (after `Setup`) a missing `cwd` is created (root's, 0755), as
/// docker creates `WorkingDir` (never on a host, in host-process mode).
pub fn prepare(spec: &ProcessSpec) -> Result<ProcessSpec, SpawnError> {
    let mut spec = spec.clone();
    if spec.tool.is_some() {
        spec.user = None;
        spec.user_name = None;
        spec.cwd = None;
        return Ok(spec);
    }
    let in_container = crate::rootfs::is_done();
    let mut home = None;
    if let Some(name) = &spec.user_name {
        let resolved = user::resolve_in_root(name)?;
        spec.user = Some(resolved.user);
        home = Some(resolved.home);
    } else if in_container {
        let uid = spec.user.as_ref().map_or(0, |u| u.uid);
        home = Some(
            user::resolve_in_root(&uid.to_string()).map_or_else(|_| "/".to_owned(), |r| r.home),
        );
    }
    if let Some(home) = home.filter(|_| !spec.env.iter().any(|e| e.starts_with("HOME="))) {
        spec.env.push(format!("HOME={home}"));
    }
    if let Some(cwd) = spec.cwd.as_ref().filter(|_| in_container) {
        std::fs::create_dir_all(cwd).map_err(|e| SpawnError::Cwd(cwd.clone(), e))?;
    }
    Ok(spec)
}

/// Starts `spec` (validated). Call with the process table locked (see `procs`): a main
/// process becomes PID 1 of the container's namespaces, later ones join them
/// (`namespaces`).
pub fn spawn(spec: &ProcessSpec) -> Result<Spawned, SpawnError> {
    let in_container = crate::rootfs::is_done();
    let plan = namespaces::plan(in_container, spec.main)?;
    let cwd = spec.cwd.as_deref().unwrap_or("/");
    let step = plan.child_step(cwd)?;
    let for_children = plan.for_children()?;
    let spawned = spawn_in(spec, step, in_container);
    drop(for_children);
    if let Ok(spawned) = &spawned {
        plan.started(spawned.pid);
    }
    spawned
}

fn spawn_in(
    spec: &ProcessSpec,
    step: ChildStep,
    in_container: bool,
) -> Result<Spawned, SpawnError> {
    let (mut cmd, keep_fds) = match (&spec.tool, spec.init) {
        (Some(Tool::Archive(op)), _) => {
            crate::archive::command(op).map_err(|e| start_error(spec, e))?
        }
        (Some(Tool::Hold), _) => (
            crate::husk_init::hold_command().map_err(|e| start_error(spec, e))?,
            Vec::new(),
        ),
        (Some(Tool::Top), _) => (
            crate::top::command().map_err(|e| start_error(spec, e))?,
            Vec::new(),
        ),
        (None, true) => (
            crate::husk_init::command(&spec.argv).map_err(|e| start_error(spec, e))?,
            Vec::new(),
        ),
        (None, false) => {
            let mut cmd = Command::new(&spec.argv[0]);
            cmd.args(&spec.argv[1..]);
            (cmd, Vec::new())
        }
    };
    for entry in &spec.env {
        if let Some((key, value)) = entry.split_once('=') {
            cmd.env(key, value);
        }
    }
    if !cmd.has_env("PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    let name = crate::fpu::ENV;
    let asked = spec
        .env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(name)?.strip_prefix('='));
    if let Some(tunables) = crate::fpu::glibc_tunables(asked) {
        cmd.env(name, tunables);
    }
    cmd.current_dir(spec.cwd.as_deref().unwrap_or("/"));
    let pty = if spec.tty {
        Some(open_pty(spec.size)?)
    } else {
        None
    };
    let mut setup = ChildSetup::new(spec.user.as_ref(), spec.tty, step);
    setup.keep_fds = keep_fds;
    // A tool does the daemon's work on the container: as root, with the capabilities that
    // takes, outside the workload's cgroup and limits.
    if spec.tool.is_some() {
        setup.restrict_caps = in_container.then_some(crate::caps::TOOL_MASK);
    } else {
        setup.restrict_caps =
            in_container.then(|| spec.capabilities.unwrap_or(crate::caps::DEFAULT_MASK));
        setup.cgroup_procs = in_container.then(crate::cgroup::procs_fd).flatten();
        setup.rlimits = spec
            .rlimits
            .iter()
            .map(|r| (r.resource, r.soft, r.hard))
            .collect();
    }
    match pty {
        Some((master, slave)) => spawn_tty(&cmd, &setup, spec, master, slave),
        None => spawn_piped(&cmd, &setup, spec),
    }
}

/// Starts `cmd` with `setup` between clone and exec and `stdio` as its 0, 1, 2.
fn start(
    cmd: &Command,
    setup: &ChildSetup,
    spec: &ProcessSpec,
    stdio: [&OwnedFd; 3],
) -> Result<pid_t, SpawnError> {
    let fds = stdio.map(AsRawFd::as_raw_fd);
    // SAFETY: `ChildSetup::run` makes only async-signal-safe system calls (raw ones for the
    // identity) on data prepared before the clone, and resets the dispositions before it
    // unblocks signals.
    unsafe { cmd.spawn(fds, &|| setup.run()) }.map_err(|e| start_error(spec, e))
}

fn spawn_piped(
    cmd: &Command,
    setup: &ChildSetup,
    spec: &ProcessSpec,
) -> Result<Spawned, SpawnError> {
    let fail = |e| start_error(spec, e);
    let (stdin, child_stdin) = if spec.stdin {
        let (read, write) = pipe().map_err(fail)?;
        (Some(write), read)
    } else {
        let null = std::fs::File::open("/dev/null").map_err(fail)?;
        (None, OwnedFd::from(null))
    };
    let (stdout, child_stdout) = pipe().map_err(fail)?;
    let (stderr, child_stderr) = pipe().map_err(fail)?;
    let pid = start(
        cmd,
        setup,
        spec,
        [&child_stdin, &child_stdout, &child_stderr],
    )?;
    // The child's ends close here, so the parent's reads end when the process side closes.
    for pipe in [Some(&stdout), Some(&stderr), stdin.as_ref()]
        .into_iter()
        .flatten()
    {
        grow_pipe(pipe);
    }
    Ok(Spawned {
        pid,
        stdin,
        stdout,
        stderr: Some(stderr),
        tty: None,
    })
    // The reaper collects the process.
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn spawn_tty(
    cmd: &Command,
    setup: &ChildSetup,
    spec: &ProcessSpec,
    master: OwnedFd,
    slave: OwnedFd,
) -> Result<Spawned, SpawnError> {
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(SpawnError::Pty);
    let pid = start(cmd, setup, spec, [&slave, &slave, &slave])?;
    // The parent's slave is closed now, so reading the master ends with EIO once the
    // process side has closed the terminal.
    drop(slave);
    Ok(Spawned {
        pid,
        stdin: if spec.stdin {
            Some(dup(&master)?)
        } else {
            None
        },
        stdout: dup(&master)?,
        stderr: None,
        tty: Some(master),
    })
}

fn start_error(spec: &ProcessSpec, err: io::Error) -> SpawnError {
    SpawnError::Start(spec.argv[0].clone(), err)
}

/// Best effort: a larger pipe means fewer wake-ups per MiB of output.
fn grow_pipe(fd: &OwnedFd) {
    // SAFETY: F_SETPIPE_SZ takes an integer argument; failure (limits) is harmless.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
}

/// A new pseudo-terminal: (master, slave), both close-on-exec.
fn open_pty(size: Option<TermSize>) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (mut master, mut slave) = (-1, -1);
    let size = size.unwrap_or(TermSize { rows: 24, cols: 80 });
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors through the first two pointers, which point at
    // live c_ints; the name and termios pointers may be null; winsize is only read.
    let rc = unsafe {
        libc::openpty(
            &raw mut master,
            &raw mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &raw const winsize,
        )
    };
    if rc < 0 {
        return Err(SpawnError::Pty(io::Error::last_os_error()));
    }
    // SAFETY: openpty just returned these descriptors and nothing else owns them.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: F_SETFD with an integer flag on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

/// Sets a tty's size.
pub fn resize(tty: &OwnedFd, size: TermSize) -> io::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points at a live one.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &raw const winsize) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the child does between clone and exec, prepared before the clone (no allocation after).
struct ChildSetup {
    /// The container's namespaces.
    namespaces: ChildStep,
    tty: bool,
    /// The capability bounding set to keep (in a container, after `Setup`).
    restrict_caps: Option<u64>,
    /// `(resource, soft, hard)` for setrlimit.
    rlimits: Vec<(u32, u64, u64)>,
    /// The container's `cgroup.procs` to join (a VM's `--pids-limit`).
    cgroup_procs: Option<std::os::fd::RawFd>,
    /// `(uid, gid, supplementary groups)`.
    user: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// Descriptors the program inherits (close-on-exec cleared).
    keep_fds: Vec<std::os::fd::RawFd>,
}

impl ChildSetup {
    fn new(user: Option<&User>, tty: bool, namespaces: ChildStep) -> Self {
        let user = user.map(|u| (u.uid, u.gid, u.additional_gids.clone()));
        Self {
            namespaces,
            tty,
            restrict_caps: None,
            rlimits: Vec::new(),
            cgroup_procs: None,
            user,
            keep_fds: Vec::new(),
        }
    }

    /// In the child: every signal's disposition back to default (ignored ones survive exec,
    /// and whatever started husk may have ignored some) and an empty signal mask (std passes
    /// the agent's, which blocks SIGCHLD, on to children), the container's namespaces, own
    /// session with the tty as controlling terminal or own process group, identity, and
    /// SIGKILL if the agent thread that started it dies.
    fn run(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: every call below is async-signal-safe and takes only pointers to live local
        // data or to the prepared group list; nothing allocates or takes locks. The identity
        // is changed with the raw system calls: libc's wrappers would signal the agent's
        // other threads, whose memory this child shares.
        unsafe {
            // Dispositions first: the agent's handlers must never run in this child.
            reset_dispositions();
            libc::sigemptyset(set.as_mut_ptr());
            let rc = libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            for &fd in &self.keep_fds {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
            if let Some(fd) = self.cgroup_procs
                && libc::write(fd, c"0".as_ptr().cast(), 1) < 0
            {
                return Err(io::Error::last_os_error());
            }
            self.namespaces.run()?;
            if self.tty {
                check(libc::setsid())?;
                check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
            } else {
                check(libc::setpgid(0, 0))?;
            }
            for &(resource, soft, hard) in &self.rlimits {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                check(libc::setrlimit(resource as _, &raw const limit))?;
            }
            if let Some(keep) = self.restrict_caps {
                crate::caps::restrict_in_child(keep)?;
            }
            if let Some((uid, gid, groups)) = &self.user {
                let raw = |rc: libc::c_long| check(if rc < 0 { -1 } else { 0 });
                raw(libc::syscall(
                    libc::SYS_setgroups,
                    groups.len(),
                    groups.as_ptr(),
                ))?;
                raw(libc::syscall(libc::SYS_setgid, *gid))?;
                raw(libc::syscall(libc::SYS_setuid, *uid))?;
            }
            // After setuid, which clears it.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        }
        Ok(())
    }
}

/// Sets every catchable signal's disposition to the default. Async-signal-safe. The raw
/// system call, because libc refuses its own signals (32-34), which a caller may well have
/// ignored too.
fn reset_dispositions() {
    // The kernel's struct sigaction: handler (0 = SIG_DFL), flags, restorer, mask.
    let default = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: rt_sigaction reads one kernel sigaction (all zero: SIG_DFL, no flags,
            // empty mask) of the given size; a signal it refuses is left as it is.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
}

/// The program's name for messages.
pub fn display_name(spec: &ProcessSpec) -> String {
    spec.argv.first().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> ProcessSpec {
        ProcessSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            ..ProcessSpec::default()
        }
    }

    #[test]
    fn validation() {
        assert!(validate(&spec(&["true"])).is_ok());
        assert!(validate(&spec(&[])).is_err());
        assert!(validate(&spec(&[""])).is_ok());
        assert!(validate(&spec(&["a\0b"])).is_err());
        let mut s = spec(&["env"]);
        s.env = vec!["A=1".into(), "B=".into()];
        assert!(validate(&s).is_ok());
        for bad in ["NOEQUALS", "=x", "A=\0"] {
            s.env = vec![bad.into()];
            assert!(validate(&s).is_err(), "{bad}");
        }
        s.env.clear();
        s.cwd = Some("relative".into());
        assert!(validate(&s).is_err());
        s.cwd = Some("/".into());
        assert!(validate(&s).is_ok());
    }
}
