//! Sandboxes: where a container's agent runs, behind one interface for both isolation
//! backends. `process` (namespaces + cgroup + loop devices, `process.rs`) and `vm` (our VMM
//! in a child process with virtio-blk disks, `vm.rs`). Owns creating one, reaching its
//! agent (retrying until it listens, or until the sandbox dies), telling how it died, and
//! tearing it down so that no process, mount, loop device or cgroup is left.

pub mod cgroup;
mod image_template;
pub mod loopdev;
mod mountattr;
pub mod process;
pub mod resolv;
pub mod share;
pub mod template;
mod template_gc;
pub mod vm;
pub mod vmctl;
pub mod wiring;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::agent_client::{AgentClient, ClientError, ConnectError, Endpoint, SandboxSpec};
use crate::container::Isolation;

/// How long a process sandbox's agent may take to listen.
const PROCESS_READY: Duration = Duration::from_secs(20);
/// How long a VM's agent may take (a kernel boot under an emulating KVM takes minutes).
const VM_READY: Duration = Duration::from_secs(600);
/// How long one agent request may take before it counts as hung: a hang guard, not a
/// deadline. A VM's agent gets far longer, since on an emulating KVM every guest system
/// call, page fault and mount is emulated kernel work, and a loaded machine slows it more.
const PROCESS_REQUEST: Duration = Duration::from_secs(10);
/// One attempt to connect to the agent and read its `Ready`; a failed one is retried until
/// the backend's ready limit.
const CONNECT_ATTEMPT: Duration = Duration::from_secs(10);
/// The pause before connecting again while the agent's socket has no listener; longer
/// pauses (`connect`) follow a guest that did not answer, whose every refusal is work
/// for it.
const UNREACHABLE_PAUSE: Duration = Duration::from_millis(2);
const VM_REQUEST: Duration = Duration::from_secs(180);
/// Grace for the agent to end the sandbox after `Shutdown`, then after SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How long one agent request of a sandbox of `isolation` may take (a hang guard).
pub fn request_timeout(isolation: Isolation) -> Duration {
    match isolation {
        Isolation::Vm => VM_REQUEST,
        Isolation::Process => PROCESS_REQUEST,
    }
}

/// Errors from sandboxes.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A loop device could not be attached.
    #[error(transparent)]
    Loop(#[from] loopdev::LoopError),
    /// The cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    /// The agent binary is missing.
    #[error("no husk-agent binary: build it with scripts/build-agent.sh or set HUSK_AGENT")]
    NoAgent,
    /// A path or argument has a NUL byte.
    #[error("a path or argument contains a NUL byte")]
    Nul,
    /// A file could not be opened or written.
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// The sandbox process could not be started.
    #[error("cannot start the sandbox process")]
    Spawn(#[source] std::io::Error),
    /// The sandbox died before its agent answered.
    #[error("the sandbox died before its agent answered: {0}")]
    Died(String),
    /// The agent did not listen in time.
    #[error("the agent did not answer within {0:?}")]
    NotReady(Duration),
    /// The agent refused the rootfs.
    #[error("the agent could not assemble the container's root filesystem")]
    Setup(#[source] ClientError),
    /// vm-specific preparation failed.
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    /// The container could not be wired to its network.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// More volumes than a process sandbox passes on.
    #[error("too many volumes: a process sandbox takes at most {0}")]
    TooManyVolumes(usize),
    /// The vm's shared directory (volumes) could not be served.
    #[error(transparent)]
    Share(#[from] share::ShareError),
    /// The container's networks could not be joined.
    #[error(transparent)]
    Wiring(#[from] wiring::WiringError),
}

/// One volume or bind mount as the host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    /// The host directory or file.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// A volume to fill from the image if it is empty.
    pub fill: bool,
}

/// What a sandbox is made for.
#[derive(Debug, Clone)]
pub struct Params {
    /// Container ID.
    pub id: String,
    /// Container directory.
    pub dir: PathBuf,
    /// Layer disks, lowest first.
    pub layers: Vec<PathBuf>,
    /// Scratch disk.
    pub scratch: PathBuf,
    /// Hostname.
    pub hostname: String,
    /// The container's name (a DNS name on user networks).
    pub name: String,
    /// The bridge networks it is on (`eth0`'s first), with aliases and `--ip`.
    pub networks: Vec<crate::network::Attachment>,
    /// Memory limit / guest RAM in bytes (0 = default).
    pub memory: u64,
    /// CPU limit / vCPUs in 1e-9 CPUs (0 = default).
    pub nano_cpus: u64,
    /// vm isolation: boot the kernel even where a warm-start template could be restored.
    pub cold_boot: bool,
    /// `--network`.
    pub network: crate::network::Mode,
    /// `-p`/`-P`: ports to publish on the first network.
    pub ports: Vec<crate::network::ports::PortBinding>,
    /// `--add-host` entries (`NAME:IP`) for `/etc/hosts`.
    pub extra_hosts: Vec<String>,
    /// `--dns` servers for `/etc/resolv.conf`.
    pub dns: Vec<std::net::IpAddr>,
    /// What the container asks of its sandbox's setup (`read_only`, `shm_size`, `tmpfs`,
    /// `sysctls`, `pids_limit`); `connect` fills in the rest of the spec.
    pub setup: SandboxSpec,
    /// The command that re-enters the shim (for the VMM child): program and leading args.
    pub self_cmd: (PathBuf, Vec<OsString>),
    /// Volumes and bind mounts, in mount order.
    pub mounts: Vec<HostMount>,
    /// The container's program and PATH, for an image template's page cache.
    pub warm: template::Warm,
}

#[derive(Debug)]
enum Backend {
    Process(process::ProcessSandbox),
    Vm(vm::VmSandbox),
}

/// A live sandbox.
#[derive(Debug)]
pub struct Sandbox {
    backend: Backend,
    pid: i32,
    /// The container's directory, where copies of its identity files go.
    dir: PathBuf,
    /// The container's part of the sandbox spec (see [`Params::setup`]).
    setup: SandboxSpec,
    died: Receiver<String>,
    death: Option<String>,
    /// The container's networks (none: loopback only).
    wiring: Arc<wiring::Wiring>,
    /// `--add-host` entries and `--dns` servers.
    extra_hosts: Vec<String>,
    dns: Vec<std::net::IpAddr>,
    /// `--network host`.
    host_network: bool,
    /// Volumes and bind mounts.
    mounts: Vec<HostMount>,
    /// vm: the daemon serving them.
    share: Option<share::Share>,
}

impl Sandbox {
    /// Makes a sandbox of kind `isolation` and starts its agent.
    pub fn create(isolation: Isolation, p: &Params) -> Result<Self, SandboxError> {
        let root = state_root(&p.dir);
        crate::network::remove_leftovers(&root, &p.dir, &p.id);
        let (max, kind) = match isolation {
            Isolation::Vm => (vm::NICS, "vm"),
            Isolation::Process => (crate::network::MAX_NETWORKS, "process"),
        };
        let wiring = Arc::new(wiring::Wiring::new(p, max, kind));
        // Each address is recorded as it is taken, so a shim killed from here on leaves
        // what `remove_leftovers` needs to give addresses and ports back.
        if let Err(e) = wiring.join_all(&p.networks, &p.ports) {
            wiring.leave_all();
            return Err(e.into());
        }
        match Self::create_backend(isolation, p, &wiring) {
            Ok((backend, pid, share)) => Ok(Self {
                backend,
                pid,
                dir: p.dir.clone(),
                setup: p.setup.clone(),
                died: watch(pid),
                death: None,
                wiring,
                extra_hosts: p.extra_hosts.clone(),
                dns: p.dns.clone(),
                host_network: p.network == crate::network::Mode::Host,
                mounts: p.mounts.clone(),
                share,
            }),
            Err(e) => {
                wiring.leave_all();
                Err(e)
            }
        }
    }

    fn create_backend(
        isolation: Isolation,
        p: &Params,
        wiring: &wiring::Wiring,
    ) -> Result<(Backend, i32, Option<share::Share>), SandboxError> {
        match isolation {
            Isolation::Vm => {
                wiring.make_taps()?;
                let share = match p.mounts.is_empty() {
                    true => None,
                    false => Some(share::Share::start(&p.dir, &p.mounts)?),
                };
                match vm::VmSandbox::create(p, &wiring.endpoints(), share.is_some()) {
                    Ok(vm) => {
                        let pid = vm.pid();
                        Ok((Backend::Vm(vm), pid, share))
                    }
                    Err(e) => {
                        if let Some(share) = share {
                            share.stop();
                        }
                        Err(e)
                    }
                }
            }
            _ => {
                let ps = process::ProcessSandbox::create(p)?;
                let pid = ps.pid();
                if let Err(e) = wiring.plug_veths(pid) {
                    // An agent that died by itself (its namespace gone before the veth
                    // could move in) is the cause to report, not the wiring.
                    let died = exited_already(pid);
                    if died.is_none() {
                        // SAFETY: kill takes no pointers; `pid` is our child and was not
                        // reaped (`exited_already` found it running), so it is still ours.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    ps.teardown();
                    return Err(match died {
                        Some(why) => SandboxError::Died(why),
                        None => e.into(),
                    });
                }
                Ok((Backend::Process(ps), pid, None))
            }
        }
    }

    /// The volumes as the agent finds them: host paths (process), or entries of the
    /// shared directory (vm).
    fn volume_mounts(&self) -> Vec<agent_proto::VolumeMount> {
        self.mounts
            .iter()
            .enumerate()
            .map(|(n, m)| agent_proto::VolumeMount {
                source: match self.backend {
                    Backend::Vm(_) => n.to_string(),
                    Backend::Process(_) => m.source.display().to_string(),
                },
                fd: match self.backend {
                    Backend::Vm(_) => None,
                    Backend::Process(_) => Some(process::VOLUME_FD + n as i32),
                },
                target: m.target.clone(),
                read_only: m.read_only,
                fill: m.fill,
            })
            .collect()
    }

    /// The sandbox process's host pid (the agent, or the VMM).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether a workload that ended with `exit` was killed for memory (docker's
    /// `State.OOMKilled`): the sandbox cgroup's count under process isolation, the guest
    /// kernel's (as the agent saw it) in a VM, where the guest is the container's memory.
    pub fn oom_killed(&self, exit: &crate::agent_client::ProcessExit) -> bool {
        exit.code == 128 + libc::SIGKILL
            && match &self.backend {
                Backend::Vm(_) => exit.oom_killed,
                Backend::Process(p) => p.oom_killed(),
            }
    }

    /// What `pause` and `unpause` act on.
    pub fn pauser(&self) -> Pauser {
        match &self.backend {
            Backend::Vm(_) => Pauser::Vmm(self.pid),
            Backend::Process(p) => Pauser::Freezer(p.freezer()),
        }
    }

    /// docker's `State.Pid` for a workload the agent knows as `agent_pid`: its host pid
    /// under process isolation (a child of the agent, which is PID 1 of the sandbox's PID
    /// namespace), the VMM's under vm isolation (the workload's pid lives in the guest).
    /// 0 if it is already gone.
    pub fn host_pid_of(&self, agent_pid: i32) -> i32 {
        match &self.backend {
            Backend::Vm(_) => self.pid,
            Backend::Process(_) => {
                crate::procfs::child_with_ns_pid(self.pid, agent_pid).unwrap_or(0)
            }
        }
    }

    /// Connects to the agent (retrying until it listens) and has it assemble the rootfs.
    pub fn connect(&mut self, hostname: &str) -> Result<AgentClient, SandboxError> {
        let (endpoint, limit, pause, request) = match &self.backend {
            Backend::Process(p) => (
                Endpoint::Unix(p.socket().to_owned()),
                PROCESS_READY,
                5,
                PROCESS_REQUEST,
            ),
            Backend::Vm(v) => (v.endpoint(), VM_READY, 100, VM_REQUEST),
        };
        let start = Instant::now();
        let client = loop {
            if let Some(why) = self.death_reason(Duration::ZERO) {
                return Err(SandboxError::Died(why));
            }
            let wait = match AgentClient::connect(&endpoint, CONNECT_ATTEMPT) {
                Ok(c) => break c.with_request_timeout(request),
                // Nothing listens on the socket yet (a VMM still starting, ~10 ms for a
                // warm start): asking again costs nobody anything.
                Err(ClientError::Connect(ConnectError::Connect(..))) => UNREACHABLE_PAUSE,
                Err(_) => Duration::from_millis(pause),
            };
            if start.elapsed() > limit {
                return Err(SandboxError::NotReady(limit));
            }
            std::thread::sleep(wait);
        };
        crate::timing::mark("agent.connected");
        let (layers, scratch) = match &self.backend {
            Backend::Process(p) => p.devices(),
            Backend::Vm(v) => v.devices(),
        };
        let ready = match &self.backend {
            Backend::Vm(v) => v.ready(),
            Backend::Process(_) => template::Ready::Nothing,
        };
        let endpoints = self.wiring.endpoints();
        let mut spec = SandboxSpec {
            layers,
            layer_fstype: "erofs".into(),
            scratch,
            scratch_ready: ready != template::Ready::Nothing,
            rootfs_ready: ready == template::Ready::Rootfs,
            hostname: hostname.to_owned(),
            hosts: format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
            ),
            resolv_conf: resolv::from_host(),
            hostname_file: true,
            // The host's cgroup limits a process sandbox; a VM's limit is the guest's job.
            pids_limit: match self.backend {
                Backend::Vm(_) => self.setup.pids_limit,
                Backend::Process(_) => None,
            },
            // Each VM, restored from a shared template or not, its own RNG state and the
            // right time; a process sandbox shares the host's.
            guest: match self.backend {
                Backend::Vm(_) => Some(vm::guest_identity()?),
                Backend::Process(_) => None,
            },
            interfaces: endpoints.iter().map(|e| e.interface()).collect(),
            share: self.share.as_ref().map(|_| share::TAG.to_owned()),
            volumes: self.volume_mounts(),
            ..self.setup.clone()
        };
        if self.host_network {
            // docker's rule: the host's own files, as they are (its loopback resolvers
            // answer here: the container shares the host's network).
            spec.hosts = std::fs::read_to_string("/etc/hosts").unwrap_or(spec.hosts);
            spec.resolv_conf =
                std::fs::read_to_string(resolv::HOST_RESOLV_CONF).unwrap_or(spec.resolv_conf);
        }
        if let Some(ep) = endpoints.first() {
            spec.hosts = format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
                ep.ip
            );
        }
        for entry in &self.extra_hosts {
            if let Some((name, ip)) = entry.split_once(':') {
                spec.hosts.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        // A user network's own DNS server, which forwards to `--dns` (and answers for
        // the container's other user networks too), or the `--dns` servers.
        let base = resolv::with_servers(&spec.resolv_conf, &self.dns);
        spec.resolv_conf = self.wiring.resolv_conf(&base);
        if let Backend::Vm(_) = self.backend {
            // The guest is the container's memory: allocations succeed as they do under a
            // host's heuristic and a cgroup limit, and running out is an OOM kill.
            spec.sysctls
                .push(("vm.overcommit_memory".into(), "1".into()));
        }
        self.record_etc_files(&spec);
        client.setup(&spec).map_err(SandboxError::Setup)?;
        self.wiring
            .set_agent(endpoint, request, &base, &spec.resolv_conf);
        if let Backend::Process(p) = &mut self.backend {
            p.release_devices();
        }
        Ok(client)
    }

    /// Keeps what the container's `/etc/{hosts,resolv.conf,hostname}` hold in its directory,
    /// where `inspect`'s `HostsPath`, `ResolvConfPath` and `HostnamePath` point (best
    /// effort: the container runs without them).
    fn record_etc_files(&self, spec: &SandboxSpec) {
        let hostname = format!("{}\n", spec.hostname);
        for (name, contents) in [
            (crate::container::files::HOSTS, spec.hosts.as_str()),
            (crate::container::files::RESOLV_CONF, &spec.resolv_conf),
            (crate::container::files::HOSTNAME, &hostname),
        ] {
            if let Err(e) = std::fs::write(self.dir.join(name), contents) {
                log::warn!("cannot keep a copy of the container's /etc/{name}: {e}");
            }
        }
    }

    /// Why the sandbox process ended, waiting up to `wait` for it; `None` while it runs.
    pub fn death_reason(&mut self, wait: Duration) -> Option<String> {
        if self.death.is_none() {
            self.death = match self.died.recv_timeout(wait) {
                Ok(why) => Some(why),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some("its process vanished".into()),
            };
        }
        self.death.clone()
    }

    /// Whether the sandbox can end without the guest's orderly shutdown once its disks are
    /// no longer wanted: a VM without shared directories. (What a workload wrote to a
    /// shared directory may sit in the guest's page cache until the agent's final sync.)
    /// A profiled VM (`HUSK_VMM_PROFILE`) is not: its VMM writes the profile as it ends.
    pub fn discardable(&self) -> bool {
        matches!(self.backend, Backend::Vm(_))
            && self.share.is_none()
            && std::env::var_os(vm::PROFILE_ENV).is_none()
    }

    /// Kills the sandbox process at once (then [`teardown`](Self::teardown) frees the
    /// rest): for a [`discardable`](Self::discardable) sandbox whose scratch disk nobody
    /// reads again (`--rm` after the workload's end), instead of the agent's `Shutdown`,
    /// whose guest sync and reset are emulated guest-kernel work on an emulating KVM
    /// (~0.5 s).
    pub fn kill(&mut self) {
        if self.death_reason(Duration::ZERO).is_none() {
            // SAFETY: kill takes no pointers; `pid` is our unreaped child (the watcher has
            // not reported it, so it has not been reaped and cannot have been reused).
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }

    /// Ends the sandbox (waiting `EXIT_GRACE` for it to end by itself after an agent
    /// `Shutdown`, then SIGKILL) and frees everything it held.
    pub fn teardown(mut self) {
        if self.death_reason(EXIT_GRACE).is_none() {
            self.kill();
            if self.death_reason(EXIT_GRACE).is_none() {
                log::warn!("sandbox process {} survived SIGKILL", self.pid);
            }
        }
        match self.backend {
            Backend::Process(p) => p.teardown(),
            Backend::Vm(v) => v.teardown(),
        }
        if let Some(share) = self.share {
            share.stop();
        }
        self.wiring.leave_all();
    }

    /// The container's networks, to change while it runs.
    pub fn wiring(&self) -> Arc<wiring::Wiring> {
        self.wiring.clone()
    }
}

/// The state root a container directory (`<root>/containers/<id>`) belongs to.
pub fn state_root(container_dir: &std::path::Path) -> PathBuf {
    container_dir
        .parent()
        .and_then(std::path::Path::parent)
        .map_or_else(|| container_dir.to_path_buf(), std::path::Path::to_path_buf)
}

/// Pauses and resumes a sandbox (docker's `pause`): under vm isolation the VMM process is
/// stopped (SIGSTOP: no vCPU or device thread runs, the guest's clock catches up on resume),
/// under process isolation the cgroup is frozen.
#[derive(Debug, Clone)]
pub enum Pauser {
    /// The VMM's host pid.
    Vmm(i32),
    /// The container's cgroup.
    Freezer(cgroup::Freezer),
}

impl Pauser {
    /// Pauses (`true`) or resumes.
    pub fn set(&self, paused: bool) -> Result<(), SandboxError> {
        match self {
            Pauser::Vmm(pid) => {
                let sig = if paused { libc::SIGSTOP } else { libc::SIGCONT };
                // SAFETY: kill takes no pointers; the pid is the shim's own unreaped child.
                match unsafe { libc::kill(*pid, sig) } {
                    0 => Ok(()),
                    _ => Err(SandboxError::Io(
                        PathBuf::from(format!("/proc/{pid}")),
                        std::io::Error::last_os_error(),
                    )),
                }
            }
            Pauser::Freezer(f) => f.set(paused).map_err(SandboxError::Cgroup),
        }
    }
}

/// A thread that reaps `pid` and says how it ended.
fn watch(pid: i32) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("sandbox-{pid}"))
        .spawn(move || {
            let mut status = 0;
            loop {
                // SAFETY: waitpid writes the status into our local.
                let r = unsafe { libc::waitpid(pid, &mut status, 0) };
                if r == pid {
                    break;
                }
                if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    let _ = tx.send(format!("pid {pid} cannot be waited for"));
                    return;
                }
            }
            let _ = tx.send(describe(status));
        });
    if let Err(e) = spawned {
        log::error!("cannot start the sandbox watcher: {e}");
    }
    rx
}

/// "exited with 1" / "killed by signal 9".
/// Reaps `pid` if it has already exited (before the watcher exists) and says how.
fn exited_already(pid: i32) -> Option<String> {
    let mut status = 0;
    // SAFETY: waitpid writes only to `status`, a live local.
    let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (reaped == pid).then(|| describe(status))
}

fn describe(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended with status {status:#x}")
    }
}
