//! Process isolation: the layer disks (read-only) and the scratch disk as loop devices, a
//! cgroup with the limits, and the agent cloned as PID 1 of new pid, mount, uts, ipc and net
//! namespaces (mount propagation made private first, so nothing it mounts reaches the host),
//! joined to the cgroup and tied to the shim with a parent-death SIGKILL before it execs.
//!
//! The shim binds the agent's socket `<ctr>/agent.sock` (0600) itself and hands the
//! listening socket to the agent as descriptor 3 (`husk.transport=fd:3`, socket activation):
//! the host can connect the moment the agent exists, without polling for the socket, the
//! agent's early mounts (tmpfs on /tmp and /run) cannot hide it wherever the state
//! directory lives, and the shim's copy is closed once the agent runs, so a dead agent
//! resets queued connections. Volume sources come the same way, as descriptors from 5 on.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::cgroup::{Cgroup, Limits};
use super::loopdev::{self, LoopDevice};
use super::{Params, SandboxError};
use crate::container::files;

/// A running process sandbox.
#[derive(Debug)]
pub struct ProcessSandbox {
    pid: i32,
    loops: Vec<LoopDevice>,
    layer_devs: Vec<String>,
    scratch_dev: String,
    cgroup: Cgroup,
    socket: PathBuf,
}

/// What the cloned child needs, prepared before the clone (the child may only make
/// async-signal-safe calls).
struct ChildPlan {
    agent: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    dir: CString,
    procs: Vec<File>,
    log: File,
    null: File,
    listener: UnixListener,
    /// `--pids-limit`: the workload group's `cgroup.procs`, for the agent's children.
    workload_procs: Option<File>,
    /// `--network host`: the agent stays in husk's network namespace.
    host_network: bool,
    /// The volumes' host directories and files as detached mounts, passed on as
    /// descriptors from [`VOLUME_FD`] on: the agent's own tmpfs mounts on /tmp and /run
    /// could hide their paths, and a mount of the host's namespace cannot be bound into
    /// the sandbox's.
    volumes: Vec<File>,
}

/// The descriptor the agent finds its listening socket on.
const AGENT_FD: i32 = 3;
/// The descriptor the agent finds the workload group's `cgroup.procs` on (`--pids-limit`).
const CGROUP_FD: i32 = 4;
/// The descriptor of the first volume's source; the others follow.
pub const VOLUME_FD: i32 = 5;
/// Most volumes of a process sandbox.
const MAX_VOLUMES: usize = 256;

impl ProcessSandbox {
    /// Makes the sandbox and starts its agent.
    pub fn create(p: &Params) -> Result<Self, SandboxError> {
        let mut loops = Vec::new();
        for layer in &p.layers {
            loops.push(loopdev::attach(layer, true)?);
        }
        let scratch = loopdev::attach(&p.scratch, false)?;
        let layer_devs = loops
            .iter()
            .map(|l| l.path().display().to_string())
            .collect();
        let scratch_dev = scratch.path().display().to_string();
        loops.push(scratch);
        let limits = Limits {
            memory: p.memory,
            nano_cpus: p.nano_cpus,
            pids: 0,
        };
        let cgroup = Cgroup::create(&p.id, limits)?;
        let plan = match plan(p, &cgroup) {
            Ok(plan) => plan,
            Err(e) => {
                cgroup.destroy();
                return Err(e);
            }
        };
        let spawned = spawn(&plan);
        // The shim's copy of the listening socket goes: the agent holds the only one.
        drop(plan);
        let pid = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                cgroup.destroy();
                return Err(SandboxError::Spawn(e));
            }
        };
        Ok(Self {
            pid,
            loops,
            layer_devs,
            scratch_dev,
            cgroup,
            socket: p.dir.join(files::AGENT_SOCKET),
        })
    }

    /// Whether the kernel's OOM killer has killed a process of the sandbox.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.oom_kills() > 0
    }

    /// What pauses the sandbox: its cgroup's freezer.
    pub fn freezer(&self) -> super::cgroup::Freezer {
        self.cgroup.freezer()
    }

    /// The agent's host pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The agent's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Layer devices, lowest first, and the scratch device.
    pub fn devices(&self) -> (Vec<String>, String) {
        (self.layer_devs.clone(), self.scratch_dev.clone())
    }

    /// Drops the sandbox's hold on its loop devices (they stay while mounted).
    pub fn release_devices(&mut self) {
        self.loops.clear();
    }

    /// Removes the cgroup (killing anything left in it), releases the loop devices and
    /// the socket. Call after the agent has been reaped.
    pub fn teardown(mut self) {
        self.cgroup.destroy();
        self.loops.clear();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, SandboxError> {
    CString::new(s.as_ref()).map_err(|_| SandboxError::Nul)
}

/// Binds `<ctr>/agent.sock` (replacing a stale one), readable and writable by root only.
fn bind_agent_socket(dir: &Path) -> Result<UnixListener, SandboxError> {
    let path = dir.join(files::AGENT_SOCKET);
    let io = |e| SandboxError::Io(path.clone(), e);
    let short = crate::sockpath::short(dir, files::AGENT_SOCKET).map_err(io)?;
    let _ = std::fs::remove_file(short.path());
    let listener = UnixListener::bind(short.path()).map_err(io)?;
    std::fs::set_permissions(short.path(), std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

fn plan(p: &Params, cgroup: &Cgroup) -> Result<ChildPlan, SandboxError> {
    let agent = crate::paths::agent_binary().ok_or(SandboxError::NoAgent)?;
    let workload_procs = match p.setup.pids_limit {
        Some(n) => Some(cgroup.workload_group(n)?),
        None => None,
    };
    let mut cmdline = format!("husk.transport=fd:{AGENT_FD} husk.hostname={}", p.hostname);
    if workload_procs.is_some() {
        cmdline.push_str(&format!(" husk.cgroup=fd:{CGROUP_FD}"));
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.dir.join(files::AGENT_LOG))
        .map_err(|e| SandboxError::Io(p.dir.join(files::AGENT_LOG), e))?;
    let null = File::open("/dev/null").map_err(|e| SandboxError::Io("/dev/null".into(), e))?;
    Ok(ChildPlan {
        argv: vec![cstr(agent.as_os_str().as_bytes())?],
        agent: cstr(agent.as_os_str().as_bytes())?,
        env: vec![
            cstr(format!("{}={cmdline}", "HUSK_AGENT_CMDLINE"))?,
            cstr("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")?,
        ],
        dir: cstr(p.dir.as_os_str().as_bytes())?,
        procs: cgroup.procs_files()?,
        log,
        null,
        listener: bind_agent_socket(&p.dir)?,
        workload_procs,
        host_network: p.network == crate::network::Mode::Host,
        volumes: volume_sources(p)?,
    })
}

/// Each volume's host source as a detached copy of its mount tree (`open_tree` with
/// `OPEN_TREE_CLONE`, recursive), which the agent can attach in its own namespace.
fn volume_sources(p: &Params) -> Result<Vec<File>, SandboxError> {
    if p.mounts.len() > MAX_VOLUMES {
        return Err(SandboxError::TooManyVolumes(MAX_VOLUMES));
    }
    p.mounts
        .iter()
        .map(|m| {
            detached_tree(&m.source, m.read_only).map_err(|e| SandboxError::Io(m.source.clone(), e))
        })
        .collect()
}

/// A detached copy of the mount tree at `path`: private (mounts made on it later do not
/// propagate back to the host), `nodev`, and read-only throughout with `read_only`.
fn detached_tree(path: &Path, read_only: bool) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let flags =
        OPEN_TREE_CLONE | libc::AT_RECURSIVE as libc::c_uint | libc::O_CLOEXEC as libc::c_uint;
    // SAFETY: open_tree reads a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(std::io::Error::other)?;
    // SAFETY: open_tree just returned this descriptor and nothing else owns it.
    let tree = unsafe { File::from_raw_fd(fd) };
    super::mountattr::restrict(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH as libc::c_uint,
        read_only,
    )?;
    Ok(tree)
}

/// Makes every mount of the caller's mount namespace private, so that nothing mounted in it
/// from now on reaches another namespace. One system call: safe in a fork-like child.
pub(crate) fn make_mounts_private() -> bool {
    // SAFETY: mount takes a static NUL-terminated path and null pointers where a remount
    // of propagation flags takes none.
    unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
    }
}

/// Clones the agent into new namespaces; returns its host pid.
fn spawn(plan: &ChildPlan) -> std::io::Result<i32> {
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | if plan.host_network {
            0
        } else {
            libc::CLONE_NEWNET
        }
        | libc::SIGCHLD;
    // SAFETY: a fork-like clone (no new stack: the child gets a copy-on-write copy of this
    // address space). The child only makes async-signal-safe system calls on data prepared
    // above, then execs or _exits; it never returns into Rust code.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; see `child`.
        unsafe { child(plan, argv.as_ptr(), envp.as_ptr()) }
    }
    i32::try_from(pid).map_err(std::io::Error::other)
}

/// The cloned child: join the cgroup, die with the shim, private mounts, stdio, cwd, exec.
///
/// # Safety
/// Only in the child of a fork-like clone; `argv`/`envp` are null-terminated arrays of
/// valid C strings that live as long as `plan`.
unsafe fn child(
    plan: &ChildPlan,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // SAFETY: raw system calls on descriptors and C strings owned by `plan`, which the
    // copy-on-write address space keeps valid; nothing here allocates or takes locks.
    unsafe {
        for f in &plan.procs {
            if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(120);
            }
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if !make_mounts_private() {
            libc::_exit(121);
        }
        if libc::chdir(plan.dir.as_ptr()) != 0 {
            libc::_exit(122);
        }
        libc::dup2(plan.null.as_raw_fd(), 0);
        libc::dup2(plan.log.as_raw_fd(), 1);
        libc::dup2(plan.log.as_raw_fd(), 2);
        // The listening socket as descriptor 3, the workload group (`--pids-limit`) as 4
        // and the volumes from 5 on, without close-on-exec (dup2 clears it). All are first
        // moved above the last of those numbers, so that placing one cannot overwrite
        // another.
        let floor = VOLUME_FD + plan.volumes.len() as i32;
        let high = |fd: i32| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor);
        let listener = high(plan.listener.as_raw_fd());
        let workload = plan.workload_procs.as_ref().map(|f| high(f.as_raw_fd()));
        let mut volumes = [0i32; MAX_VOLUMES];
        for (slot, f) in volumes.iter_mut().zip(&plan.volumes) {
            *slot = high(f.as_raw_fd());
        }
        if listener < 0 || libc::dup2(listener, AGENT_FD) != AGENT_FD {
            libc::_exit(123);
        }
        if let Some(fd) = workload
            && (fd < 0 || libc::dup2(fd, CGROUP_FD) != CGROUP_FD)
        {
            libc::_exit(124);
        }
        for (n, &fd) in volumes.iter().take(plan.volumes.len()).enumerate() {
            let at = VOLUME_FD + n as i32;
            if fd < 0 || libc::dup2(fd, at) != at {
                libc::_exit(125);
            }
        }
        libc::execve(plan.agent.as_ptr(), argv, envp);
        libc::_exit(127)
    }
}
