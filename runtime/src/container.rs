//! The container model on disk (docs/run.md): IDs (64 random hex digits), unique names,
//! `config.json` (written once) and `state.json` (rewritten by the shim) with atomic
//! writes, the per-container `lock` (flock) every writer holds, resolution of a query by
//! full ID, name or unambiguous ID prefix, listing, and the docker-shaped `inspect` view.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod files;
mod status;

pub use files::ContainerDir;

pub use status::{Event, Status, TransitionError};

/// Errors from the container store.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Filesystem trouble.
    #[error("{0}")]
    Io(String, #[source] io::Error),
    /// No container matches.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// Several IDs start with the prefix.
    #[error("multiple containers match {0:?}: use more of the ID")]
    Ambiguous(String),
    /// The name is taken.
    #[error(
        "Conflict. The container name \"/{0}\" is already in use by container \"{1}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse(String, String),
    /// An unknown restart policy.
    #[error("invalid restart policy {0:?}: use no, always, on-failure[:N] or unless-stopped")]
    BadRestartPolicy(String),
    /// `rename` to the name the container has.
    #[error("Renaming a container with the same name as its current name")]
    SameName,
    /// The name has characters docker does not allow.
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    BadName(String),
    /// A JSON file is not what husk wrote.
    #[error("{0} is corrupt")]
    Corrupt(PathBuf, #[source] serde_json::Error),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ContainerError {
    let what = what.to_string();
    move |e| ContainerError::Io(what, e)
}

/// The isolation backend (resolved: `auto` never reaches a container).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// A microVM per container.
    #[default]
    Vm,
    /// Namespaces and cgroups on the host kernel.
    Process,
}

impl Isolation {
    /// `vm` or `process`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Vm => "vm",
            Isolation::Process => "process",
        }
    }
}

/// What runs: the image config merged with the flags (docker's `Config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RunConfig {
    /// Entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// Command (appended to the entrypoint).
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory (`""` = `/`).
    pub working_dir: String,
    /// `user[:group]` (`""` = root).
    pub user: String,
    /// A pty for the main process.
    pub tty: bool,
    /// Stdin is forwarded from the attached client.
    pub open_stdin: bool,
    /// Foreground run: the shim waits for the first attach before starting the workload.
    pub attach_stdout: bool,
    /// Hostname (`""` = the short ID).
    pub hostname: String,
    /// Labels (the image's).
    pub labels: BTreeMap<String, String>,
    /// Exposed ports (the image's: `"80/tcp": {}`).
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    /// Volumes (the image's: `"/data": {}`).
    pub volumes: BTreeMap<String, serde_json::Value>,
    /// The signal `stop` sends first (`""` = SIGTERM).
    pub stop_signal: String,
    /// `stop`'s grace period in seconds (`None` = 10).
    pub stop_timeout: Option<i64>,
    /// The health check (the image's under the `--health-*` flags).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<rootfs::store::config::Healthcheck>,
}

/// docker's `RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RestartPolicy {
    /// Which policy.
    pub name: RestartName,
    /// on-failure's limit (0 = unlimited).
    pub maximum_retry_count: u32,
}

/// The restart policies docker knows (their names as docker writes them; an empty name
/// reads as `no`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartName {
    /// Never restarted.
    #[default]
    #[serde(rename = "no", alias = "")]
    No,
    /// Restarted whatever the exit, and when the daemon starts.
    #[serde(rename = "always")]
    Always,
    /// Restarted after a non-zero exit, up to the retry count.
    #[serde(rename = "on-failure")]
    OnFailure,
    /// As `always`, unless a user stopped it.
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
}

impl RestartName {
    /// docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::UnlessStopped => "unless-stopped",
        }
    }
}

impl RestartPolicy {
    /// Parses `--restart`: `no`, `always`, `on-failure[:N]`, `unless-stopped`.
    pub fn parse(s: &str) -> Result<Self, ContainerError> {
        let bad = || ContainerError::BadRestartPolicy(s.to_owned());
        let (name, count) = match s.split_once(':') {
            Some(("on-failure", n)) => ("on-failure", n.parse().map_err(|_| bad())?),
            Some(_) => return Err(bad()),
            None => (s, 0),
        };
        let name = match name {
            "no" => RestartName::No,
            "always" => RestartName::Always,
            "on-failure" => RestartName::OnFailure,
            "unless-stopped" => RestartName::UnlessStopped,
            _ => return Err(bad()),
        };
        Ok(Self {
            name,
            maximum_retry_count: count,
        })
    }
}

/// Resources and policies (docker's `HostConfig` essentials).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// The backend.
    pub isolation: Isolation,
    /// `--cpus` in units of 1e-9 CPUs (0 = default).
    pub nano_cpus: i64,
    /// `--memory` in bytes (0 = default).
    pub memory: i64,
    /// `--restart`.
    pub restart_policy: RestartPolicy,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--init`: the workload runs under husk-init, which reaps orphans and passes signals on.
    pub init: bool,
    /// A build step's container: `husk-init --hold` instead of the command (see
    /// `agent_proto::Tool::Hold`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
    /// `--cold`: boot the VM's kernel instead of restoring the warm-start template
    /// (vm isolation; see docs/warm-starts.md).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cold_boot: bool,
    /// `--network` (docker's `NetworkMode`).
    #[serde(default, with = "network_mode")]
    pub network_mode: crate::network::Mode,
    /// `--network-alias`es (docker keeps them in `NetworkingConfig`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_aliases: Vec<String>,
    /// `--ip` (docker's `IPAMConfig.IPv4Address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<std::net::Ipv4Addr>,
    /// Networks joined with `network connect` besides `NetworkMode`, in the order of the
    /// container's interfaces after `eth0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_networks: Vec<crate::network::Attachment>,
    /// `-p`/`-P` as asked (host port 0: ephemeral).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_bindings: Vec<crate::network::ports::PortBinding>,
    /// `--add-host`, as `NAME:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// `--dns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability (see docs/run.md for what it means per isolation).
    pub privileged: bool,
    /// `--read-only`.
    pub readonly_rootfs: bool,
    /// `--shm-size` in bytes (0 = 64 MiB).
    pub shm_size: i64,
    /// `--ulimit`s.
    pub ulimits: Vec<crate::ulimit::Ulimit>,
    /// `--tmpfs`: path -> options.
    pub tmpfs: BTreeMap<String, String>,
    /// `--sysctl`: key -> value.
    pub sysctls: BTreeMap<String, String>,
    /// `--pids-limit` (0: husk's default, 4096 under process isolation, none in a VM).
    pub pids_limit: i64,
    /// `--device`s (process isolation only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<crate::device::DeviceMapping>,
    /// Volumes and bind mounts, resolved at creation, in mount order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::volumes::Mount>,
}

impl HostConfig {
    /// The networks the container is on, `eth0`'s first: `NetworkMode` if it is a bridge
    /// network, then those joined with `network connect`.
    pub fn networks(&self) -> Vec<crate::network::Attachment> {
        let primary = self
            .network_mode
            .is_bridged()
            .then(|| crate::network::Attachment {
                network: self.network_mode.as_str().to_string(),
                aliases: self.network_aliases.clone(),
                ipv4_address: self.ipv4_address,
            });
        primary
            .into_iter()
            .chain(self.extra_networks.iter().cloned())
            .collect()
    }

    /// Puts the container on `networks` (`eth0`'s first; none: loopback only), the
    /// inverse of [`HostConfig::networks`]. Not for `--network host`.
    pub fn set_networks(&mut self, networks: Vec<crate::network::Attachment>) {
        let mut networks = networks.into_iter();
        match networks.next() {
            Some(first) => {
                self.network_mode = match first.network.as_str() {
                    crate::network::BRIDGE => crate::network::Mode::Bridge,
                    other => crate::network::Mode::User(other.to_string()),
                };
                self.network_aliases = first.aliases;
                self.ipv4_address = first.ipv4_address;
            }
            None => {
                self.network_mode = crate::network::Mode::None;
                self.network_aliases.clear();
                self.ipv4_address = None;
            }
        }
        self.extra_networks = networks.collect();
    }

    /// The capability bounding set of the container's processes (checked when created).
    pub fn capabilities(&self) -> u64 {
        crate::caps::bounding_set(self.privileged, &self.cap_add, &self.cap_drop)
            .unwrap_or(crate::caps::DEFAULT_MASK)
    }

    /// The agent's resource limits.
    pub fn rlimits(&self) -> Vec<agent_proto::Rlimit> {
        self.ulimits.iter().filter_map(|u| u.to_rlimit()).collect()
    }
}

/// `config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// 64 hex digits.
    pub id: String,
    /// Unique name (without docker's leading `/`).
    pub name: String,
    /// RFC 3339.
    pub created: String,
    /// Image ID (`sha256:...`).
    pub image: String,
    /// The image as typed.
    pub image_ref: String,
    /// What to run.
    pub config: RunConfig,
    /// Resources and policies.
    pub host_config: HostConfig,
    /// The program (first of Entrypoint + Cmd).
    pub path: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The image's layer disks, lowest first.
    pub layers: Vec<PathBuf>,
}

impl ContainerConfig {
    /// A new config; `path`/`args` from Entrypoint + Cmd.
    pub fn new(
        id: &str,
        name: &str,
        image: &str,
        image_ref: &str,
        config: RunConfig,
        host_config: HostConfig,
        layers: Vec<PathBuf>,
    ) -> Self {
        let mut argv = config.entrypoint.iter().chain(&config.cmd).cloned();
        let path = argv.next().unwrap_or_default();
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            created: now(),
            image: image.to_owned(),
            image_ref: image_ref.to_owned(),
            path,
            args: argv.collect(),
            config,
            host_config,
            layers,
        }
    }

    /// The hostname the sandbox gets.
    pub fn hostname(&self) -> String {
        let host_network = self.host_config.network_mode == crate::network::Mode::Host;
        match self.config.hostname.is_empty() {
            // docker's rule: a container on the host's network has the host's name.
            true if host_network => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| short_id(&self.id).to_owned()),
            true => short_id(&self.id).to_owned(),
            false => self.config.hostname.clone(),
        }
    }
}

/// `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    /// Lifecycle status.
    pub status: Status,
    /// The workload runs.
    pub running: bool,
    /// docker's `State.Pid`: the workload's host pid under process isolation, the VMM's
    /// under vm isolation (0 when not running).
    pub pid: i32,
    /// The shim's host pid (0 when none).
    pub shim_pid: i32,
    /// Last exit code.
    pub exit_code: i32,
    /// Why husk failed, if it did.
    pub error: String,
    /// RFC 3339, `""` if never.
    pub started_at: String,
    /// RFC 3339, `""` if never.
    pub finished_at: String,
    /// Restarts made by the restart policy.
    pub restart_count: u32,
    /// `workload` or `sandbox: <why>`.
    pub last_exit: String,
    /// The backend used.
    pub isolation: Isolation,
    /// `pause`d (the workload still counts as running, as docker counts it).
    #[serde(default)]
    pub paused: bool,
    /// The last run ended by the kernel's OOM killer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom_killed: bool,
    /// Stopped by a user (`stop`) since its last start: an `unless-stopped` container stays
    /// down when the daemon starts (docker's `HasBeenManuallyStopped`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manually_stopped: bool,
    /// The health check's results (with a health check only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

impl ContainerState {
    /// Whether the shim process still exists.
    pub fn shim_alive(&self) -> bool {
        self.shim_pid > 0 && crate::procfs::alive(self.shim_pid)
    }

    /// Running or restarting under a live shim.
    pub fn running(&self) -> bool {
        self.status.is_live() && self.shim_alive()
    }

    /// docker's status word (`inspect`'s `State.Status`, `ps`'s `{{.State}}` and
    /// `status=` filter): `paused` for a paused running container, else the status.
    pub fn status_word(&self) -> &'static str {
        match self.paused && self.running() {
            true => "paused",
            false => self.status.as_str(),
        }
    }

    /// The state as it is. A file that says running or restarting while its shim is gone
    /// means the sandbox died without recording an exit (the shim was killed, or the host
    /// went down): that shows as docker shows a container its runtime lost, exited with
    /// [`LOST_EXIT_CODE`] and the reason in `Error`, never as a clean exit.
    pub fn observed(&self) -> ContainerState {
        let mut s = self.clone();
        if s.status.is_live() && !s.shim_alive() && s.apply(Event::Lost).is_ok() {
            s.exit_code = LOST_EXIT_CODE;
            s.error = format!(
                "the sandbox died: its shim (pid {}) ended without recording the workload's exit",
                self.shim_pid
            );
            s.last_exit = "sandbox: shim lost".into();
        }
        s
    }
}

/// The exit code of a container whose sandbox died without recording one (docker's 255
/// for a container whose exit status was lost).
pub const LOST_EXIT_CODE: i32 = 255;

/// RFC 3339 with nanoseconds, UTC.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The 12-digit short ID.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// An exclusive flock, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock on `path` (created if missing), waiting for other holders.
    pub fn take(path: &Path) -> Result<Self, ContainerError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(ContainerError::Io(
                    format!("cannot lock {}", path.display()),
                    e,
                ));
            }
        }
    }
}

/// Writes `bytes` to `path` atomically (temporary file + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ContainerError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let what = format!("cannot write {}", path.display());
    let mut f = File::create(&tmp).map_err(io_err(&what))?;
    f.write_all(bytes).map_err(io_err(&what))?;
    f.sync_data().map_err(io_err(&what))?;
    fs::rename(&tmp, path).map_err(io_err(&what))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, id: &str) -> Result<T, ContainerError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ContainerError::NoSuchContainer(id.to_owned()));
        }
        Err(e) => {
            return Err(ContainerError::Io(
                format!("cannot read {}", path.display()),
                e,
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| ContainerError::Corrupt(path.to_owned(), e))
}

/// The containers of one state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// `<root>/containers`, created if missing.
    pub fn open(root: &Path) -> Result<Self, ContainerError> {
        let dir = root.join("containers");
        fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        Ok(Self { dir })
    }

    /// A container's directory.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Records container event `action` for `config` (docker's `events`), with `extra`
    /// attributes.
    pub fn event(&self, action: &str, config: &ContainerConfig, extra: &[(&str, String)]) {
        let root = self.dir.parent().unwrap_or(&self.dir);
        crate::events::record(
            root,
            &crate::events::Event::container(action, config, extra),
        );
    }

    /// Records event `action` for container `id` if its config can be read.
    pub fn event_for(&self, action: &str, id: &str, extra: &[(&str, String)]) {
        if let Ok(config) = self.config(id) {
            self.event(action, &config, extra);
        }
    }

    /// Every container ID.
    pub fn ids(&self) -> Result<Vec<String>, ContainerError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(io_err(format!("cannot list {}", self.dir.display())))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect())
    }

    /// Creates the directory, `config.json` (from `make(id, name)`) and a `created`
    /// `state.json`, with the name checked unique under `<root>/containers.lock`.
    pub fn create(
        &self,
        name: Option<&str>,
        make: impl FnOnce(&str, &str) -> ContainerConfig,
    ) -> Result<ContainerConfig, ContainerError> {
        let _global = Lock::take(&self.dir.with_extension("lock"))?;
        let name = match name {
            Some(n) => {
                let n = n.strip_prefix('/').unwrap_or(n);
                check_name(n)?;
                if let Some(other) = self.by_name(n)? {
                    return Err(ContainerError::NameInUse(n.to_owned(), other));
                }
                n.to_owned()
            }
            None => self.random_name()?,
        };
        let id = random_id()?;
        let config = make(&id, &name);
        let dir = self.dir(&id);
        fs::create_dir(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| ContainerError::Corrupt(dir.clone(), e))?;
        write_atomic(&ContainerDir::new(&dir).config(), &json)?;
        self.write_state(&id, &ContainerState::default())?;
        Ok(config)
    }

    /// Renames container `id` to `name` (unique, checked under `<root>/containers.lock`).
    pub fn rename(&self, id: &str, name: &str) -> Result<(), ContainerError> {
        let _global = Lock::take(&self.dir.with_extension("lock"))?;
        let name = name.strip_prefix('/').unwrap_or(name);
        check_name(name)?;
        let mut config = self.config(id)?;
        if config.name == name {
            return Err(ContainerError::SameName);
        }
        if let Some(other) = self.by_name(name)? {
            return Err(ContainerError::NameInUse(name.to_owned(), other));
        }
        config.name = name.to_owned();
        let dir = self.dir(id);
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| ContainerError::Corrupt(dir.clone(), e))?;
        write_atomic(&ContainerDir::new(&dir).config(), &json)
    }

    /// Changes container `id`'s `config.json` with `change` (under its lock); returns the
    /// new config.
    pub fn update_config(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerConfig),
    ) -> Result<ContainerConfig, ContainerError> {
        let _lock = self.lock(id)?;
        let mut config = self.config(id)?;
        change(&mut config);
        let dir = self.dir(id);
        let json = serde_json::to_vec_pretty(&config)
            .map_err(|e| ContainerError::Corrupt(dir.clone(), e))?;
        write_atomic(&ContainerDir::new(&dir).config(), &json)?;
        Ok(config)
    }

    fn by_name(&self, name: &str) -> Result<Option<String>, ContainerError> {
        for id in self.ids()? {
            if self.config(&id).is_ok_and(|c| c.name == name) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn random_name(&self) -> Result<String, ContainerError> {
        const LEFT: &[&str] = &[
            "brave", "calm", "eager", "fond", "keen", "quiet", "swift", "wise", "bold", "merry",
        ];
        const RIGHT: &[&str] = &[
            "turing", "hopper", "lovelace", "noether", "curie", "dijkstra", "knuth", "ritchie",
            "torvalds", "liskov",
        ];
        loop {
            let r = random_bytes::<2>()?;
            let name = format!(
                "{}_{}",
                LEFT[usize::from(r[0]) % LEFT.len()],
                RIGHT[usize::from(r[1]) % RIGHT.len()]
            );
            let name = match self.by_name(&name)? {
                None => return Ok(name),
                Some(_) => format!("{name}_{}", u16::from_le_bytes(random_bytes::<2>()?) % 1000),
            };
            if self.by_name(&name)?.is_none() {
                return Ok(name);
            }
        }
    }

    /// Resolves a full ID, a name or an unambiguous ID prefix (docker's order).
    pub fn resolve(&self, query: &str) -> Result<String, ContainerError> {
        let ids = self.ids()?;
        if ids.iter().any(|i| i == query) {
            return Ok(query.to_owned());
        }
        let name = query.strip_prefix('/').unwrap_or(query);
        if let Some(id) = self.by_name(name)? {
            return Ok(id);
        }
        let mut hits = ids
            .iter()
            .filter(|i| !query.is_empty() && i.starts_with(query));
        match (hits.next(), hits.next()) {
            (Some(id), None) => Ok(id.clone()),
            (Some(_), Some(_)) => Err(ContainerError::Ambiguous(query.to_owned())),
            _ => Err(ContainerError::NoSuchContainer(query.to_owned())),
        }
    }

    /// Takes the container's lock.
    pub fn lock(&self, id: &str) -> Result<Lock, ContainerError> {
        if !self.dir(id).is_dir() {
            return Err(ContainerError::NoSuchContainer(id.to_owned()));
        }
        Lock::take(&ContainerDir::new(self.dir(id)).lock())
    }

    /// Reads `config.json`.
    pub fn config(&self, id: &str) -> Result<ContainerConfig, ContainerError> {
        read_json(&ContainerDir::new(self.dir(id)).config(), id)
    }

    /// Reads `state.json`.
    pub fn state(&self, id: &str) -> Result<ContainerState, ContainerError> {
        read_json(&ContainerDir::new(self.dir(id)).state(), id)
    }

    /// Writes `state.json` atomically (callers hold the lock).
    pub fn write_state(&self, id: &str, state: &ContainerState) -> Result<(), ContainerError> {
        let path = ContainerDir::new(self.dir(id)).state();
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| ContainerError::Corrupt(path.clone(), e))?;
        write_atomic(&path, &json)
    }

    /// Changes `state.json` under the lock.
    pub fn update_state(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerState),
    ) -> Result<ContainerState, ContainerError> {
        let _lock = self.lock(id)?;
        let mut state = self.state(id)?;
        change(&mut state);
        self.write_state(id, &state)?;
        Ok(state)
    }

    /// Removes the container's directory.
    pub fn remove_dir(&self, id: &str) -> Result<(), ContainerError> {
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ContainerError::Io(
                format!("cannot remove {}", dir.display()),
                e,
            )),
            _ => Ok(()),
        }
    }
}

fn check_name(name: &str) -> Result<(), ContainerError> {
    let mut bytes = name.bytes();
    let ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(ContainerError::BadName(name.to_owned())),
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ContainerError> {
    let mut buf = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(io_err("cannot read /dev/urandom"))?;
    Ok(buf)
}

/// 64 random hex digits: docker's ID shape (containers here; exec instances too).
pub fn random_id() -> Result<String, ContainerError> {
    Ok(hex_string(&random_bytes::<32>()?))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// docker's `HostConfig.PortBindings`: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`
/// as asked (empty strings: any address, an ephemeral port).
fn port_bindings_json(bindings: &[crate::network::ports::PortBinding]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for b in bindings {
        let key = format!("{}/{}", b.container_port, b.proto.as_str());
        let entry = serde_json::json!({
            "HostIp": b.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            "HostPort": if b.host_port == 0 { String::new() } else { b.host_port.to_string() },
        });
        if let Some(serde_json::Value::Array(list)) = map.get_mut(&key) {
            list.push(entry);
        } else {
            map.insert(key, serde_json::json!([entry]));
        }
    }
    serde_json::Value::Object(map)
}

/// docker's `NetworkSettings`: the networks the container is on, its addresses and the
/// published ports while it runs (`Ports` lists exposed but unpublished ports as null).
/// The top-level address fields are `eth0`'s, as docker's are the first network's.
fn network_settings_json(
    h: &HostConfig,
    exposed: &BTreeMap<String, serde_json::Value>,
    live: &[crate::network::Settings],
) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for key in exposed.keys() {
        let key = if key.contains('/') {
            key.clone()
        } else {
            format!("{key}/tcp")
        };
        ports.insert(key, serde_json::Value::Null);
    }
    for p in live.iter().flat_map(|s| s.ports.iter()) {
        let key = format!("{}/{}", p.container_port, p.proto.as_str());
        let entry = serde_json::json!({
            "HostIp": p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED).to_string(),
            "HostPort": p.host_port.to_string(),
        });
        match ports.get_mut(&key) {
            Some(serde_json::Value::Array(list)) => list.push(entry),
            _ => {
                ports.insert(key, serde_json::json!([entry]));
            }
        }
    }
    let mut networks = serde_json::Map::new();
    let attachments = match h.network_mode.is_bridged() {
        true => h.networks(),
        // `none` and `host` are listed under their own names.
        false => vec![crate::network::Attachment {
            network: h.network_mode.as_str().to_string(),
            ..Default::default()
        }],
    };
    for a in &attachments {
        let s = live
            .iter()
            .find(|s| s.network == a.network || s.network_id == a.network);
        networks.insert(a.network.clone(), endpoint_json(a, s));
    }
    let first = endpoint_json(&Default::default(), live.first());
    serde_json::json!({
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": "",
        "Ports": ports,
        "IPAddress": first["IPAddress"],
        "IPPrefixLen": first["IPPrefixLen"],
        "Gateway": first["Gateway"],
        "MacAddress": first["MacAddress"],
        "Networks": networks,
    })
}

/// One entry of docker's `NetworkSettings.Networks`: what the container asked of the
/// network, and its address there while it runs (`live`).
fn endpoint_json(
    a: &crate::network::Attachment,
    live: Option<&crate::network::Settings>,
) -> serde_json::Value {
    let text = |v: Option<std::net::Ipv4Addr>| v.map(|a| a.to_string()).unwrap_or_default();
    let (ip, prefix, gateway, mac) = match live {
        Some(s) => (text(s.ip), s.prefix, text(s.gateway), s.mac.clone()),
        None => (String::new(), 0, String::new(), String::new()),
    };
    let (network_id, dns_names) = match live {
        Some(s) => (s.network_id.clone(), serde_json::json!(s.dns_names)),
        None => (String::new(), serde_json::Value::Null),
    };
    let ipam = a
        .ipv4_address
        .map(|a| serde_json::json!({ "IPv4Address": a.to_string() }));
    let aliases = match a.aliases.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::json!(a.aliases),
    };
    serde_json::json!({
        "IPAMConfig": ipam,
        "Aliases": aliases,
        "DNSNames": dns_names,
        "NetworkID": network_id,
        "EndpointID": "",
        "Gateway": gateway,
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "MacAddress": mac,
    })
}

/// docker's `HostConfig.Binds`: the bind and named-volume mounts as `SOURCE:TARGET[:ro]`.
fn binds_json(mounts: &[crate::volumes::Mount]) -> serde_json::Value {
    let binds: Vec<String> = mounts
        .iter()
        .filter(|m| !m.anonymous)
        .map(|m| {
            format!(
                "{}:{}{}",
                m.source,
                m.target,
                if m.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    match binds.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::json!(binds),
    }
}

/// docker's `inspect` shape for one container.
pub fn inspect(config: &ContainerConfig, state: &ContainerState, dir: &Path) -> serde_json::Value {
    let state = state.observed();
    let running = state.running();
    let c = &config.config;
    let h = &config.host_config;
    let restart = h.restart_policy.name.as_str();
    let empty_is_null = |v: &Vec<String>| match v.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::json!(v),
    };
    let volumes = crate::volumes::VolumeStore::at(&crate::sandbox::state_root(dir));
    let mounts: Vec<serde_json::Value> = h.mounts.iter().map(|m| m.inspect(&volumes)).collect();
    let mut config_json = serde_json::json!({
        "Hostname": config.hostname(),
        "User": c.user,
        "Tty": c.tty,
        "OpenStdin": c.open_stdin,
        "Env": c.env,
        "Cmd": empty_is_null(&c.cmd),
        "Entrypoint": empty_is_null(&c.entrypoint),
        "WorkingDir": c.working_dir,
        "Image": config.image_ref,
        "Labels": c.labels,
        "Volumes": if c.volumes.is_empty() { serde_json::Value::Null } else { serde_json::json!(c.volumes) },
    });
    if !c.exposed_ports.is_empty() {
        config_json["ExposedPorts"] = serde_json::json!(c.exposed_ports);
    }
    if !c.stop_signal.is_empty() {
        config_json["StopSignal"] = serde_json::json!(c.stop_signal);
    }
    if let Some(t) = c.stop_timeout {
        config_json["StopTimeout"] = serde_json::json!(t);
    }
    if let Some(hc) = &c.healthcheck {
        config_json["Healthcheck"] = serde_json::json!(hc);
    }
    let paused = running && state.paused;
    serde_json::json!({
        "Id": config.id,
        "Created": config.created,
        "Path": config.path,
        "Args": config.args,
        "State": {
            "Status": state.status_word(),
            "Running": running && state.status == Status::Running,
            "Paused": paused,
            "Restarting": running && state.status == Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": state.status == Status::Dead,
            "Pid": if running { state.pid } else { 0 },
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
            "LastExit": state.last_exit,
            "Health": state.health,
        },
        "Image": config.image,
        "ResolvConfPath": dir.join(files::RESOLV_CONF),
        "HostnamePath": dir.join(files::HOSTNAME),
        "HostsPath": dir.join(files::HOSTS),
        "LogPath": dir.join(files::LOG),
        "Name": format!("/{}", config.name),
        "RestartCount": state.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Isolation": h.isolation.as_str(),
            "NanoCpus": h.nano_cpus,
            "Memory": h.memory,
            "RestartPolicy": {
                "Name": restart,
                "MaximumRetryCount": h.restart_policy.maximum_retry_count,
            },
            "AutoRemove": h.auto_remove,
            "Init": h.init,
            "NetworkMode": h.network_mode.as_str(),
            "Privileged": h.privileged,
            "ReadonlyRootfs": h.readonly_rootfs,
            "CapAdd": if h.cap_add.is_empty() { serde_json::Value::Null } else { serde_json::json!(h.cap_add) },
            "CapDrop": if h.cap_drop.is_empty() { serde_json::Value::Null } else { serde_json::json!(h.cap_drop) },
            "ShmSize": if h.shm_size > 0 { h.shm_size } else { 64 << 20 },
            "Ulimits": if h.ulimits.is_empty() { serde_json::Value::Null } else { serde_json::json!(h.ulimits) },
            "Tmpfs": if h.tmpfs.is_empty() { serde_json::Value::Null } else { serde_json::json!(h.tmpfs) },
            "PidsLimit": if h.pids_limit > 0 { serde_json::json!(h.pids_limit) } else { serde_json::Value::Null },
            "Devices": h.devices,
            "Sysctls": if h.sysctls.is_empty() { serde_json::Value::Null } else { serde_json::json!(h.sysctls) },
            "PortBindings": port_bindings_json(&h.port_bindings),
            "ExtraHosts": if h.extra_hosts.is_empty() { serde_json::Value::Null } else { serde_json::json!(h.extra_hosts) },
            "Dns": h.dns,
            "Binds": binds_json(&h.mounts),
            "LogConfig": { "Type": "json-file", "Config": {} },
        },
        "Mounts": mounts,
        "Config": config_json,
        "NetworkSettings": network_settings_json(
            h,
            &c.exposed_ports,
            &match running {
                true => crate::network::settings(dir),
                false => Vec::new(),
            },
        ),
        "Isolation": state.isolation.as_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(store: &Store, name: Option<&str>) -> Result<ContainerConfig, ContainerError> {
        store.create(name, |id, name| {
            ContainerConfig::new(
                id,
                name,
                "sha256:00",
                "busybox",
                RunConfig::default(),
                HostConfig::default(),
                vec![],
            )
        })
    }

    #[test]
    fn networks_and_set_networks_are_inverses() {
        use crate::network::{Attachment, Mode};
        let on = |n: &str| Attachment {
            network: n.into(),
            aliases: vec![format!("{n}-alias")],
            ipv4_address: None,
        };
        let mut h = HostConfig::default();
        assert!(h.networks().is_empty(), "none by default");
        for list in [
            vec![on("a")],
            vec![on("bridge"), on("b")],
            vec![on("a"), on("b"), on("c")],
            vec![],
        ] {
            h.set_networks(list.clone());
            assert_eq!(h.networks(), list);
        }
        assert_eq!(h.network_mode, Mode::None);
        h.set_networks(vec![on("bridge")]);
        assert_eq!(h.network_mode, Mode::Bridge);
    }

    #[test]
    fn names_are_unique_and_resolve() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let a = cfg(&store, Some("web")).unwrap();
        let err = cfg(&store, Some("web")).unwrap_err();
        assert!(matches!(err, ContainerError::NameInUse(..)), "{err}");
        assert!(matches!(
            cfg(&store, Some("-x")),
            Err(ContainerError::BadName(_))
        ));
        let b = cfg(&store, None).unwrap();
        assert_ne!(a.name, b.name);
        assert_eq!(store.resolve("web").unwrap(), a.id);
        assert_eq!(store.resolve("/web").unwrap(), a.id);
        assert_eq!(store.resolve(&a.id[..10]).unwrap(), a.id);
        assert_eq!(store.resolve(&b.name).unwrap(), b.id);
        assert!(matches!(
            store.resolve("zz"),
            Err(ContainerError::NoSuchContainer(_))
        ));
        assert_eq!(store.state(&a.id).unwrap().status, Status::Created);
        store.update_state(&a.id, |s| s.restart_count = 4).unwrap();
        assert_eq!(store.state(&a.id).unwrap().restart_count, 4);
        store.remove_dir(&a.id).unwrap();
        assert!(matches!(
            store.resolve("web"),
            Err(ContainerError::NoSuchContainer(_))
        ));
    }

    #[test]
    fn restart_policies_parse() {
        assert_eq!(
            RestartPolicy::parse("on-failure:3")
                .unwrap()
                .maximum_retry_count,
            3
        );
        assert_eq!(
            RestartPolicy::parse("always").unwrap().name,
            RestartName::Always
        );
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("always:2").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
    }

    #[test]
    fn path_and_args_come_from_entrypoint_then_cmd() {
        let run = RunConfig {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            ..RunConfig::default()
        };
        let c = ContainerConfig::new("ab", "n", "i", "r", run, HostConfig::default(), vec![]);
        assert_eq!(c.path, "/bin/sh");
        assert_eq!(c.args, ["-c", "echo hi"]);
    }
}

/// `HostConfig.NetworkMode` as docker writes it (`none`, `bridge`).
mod network_mode {
    use crate::network::Mode;

    pub fn serialize<S: serde::Serializer>(mode: &Mode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(mode.as_str())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        Mode::parse(&text, false).map_err(serde::de::Error::custom)
    }
}
