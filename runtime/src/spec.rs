//! The run spec: what `husk run` will run, built from the image's config and the run flags
//! with docker's precedence rules.
//!
//! - `--entrypoint E` replaces the image's Entrypoint with `[E]` (`""` clears it) and also
//!   drops the image's Cmd; CMD arguments on the command line replace the image's Cmd.
//! - Env: the image's `Env`, then every `--env-file` line, then every `-e`, later entries
//!   replacing earlier ones of the same name. `-e KEY` (and a bare `KEY` line in an env file)
//!   takes the host's value, or removes the variable when the host has none.
//! - `-w` replaces WorkingDir (absolute paths only; default `/`), `-u` replaces User
//!   (default: root, the agent's own identity).
//! - `--hostname` defaults to the short (12 hex) container ID, `--memory` takes docker's
//!   units (bare numbers are bytes, at least 6 MiB, `0` = husk's default), `--cpus` is a
//!   decimal count of CPUs above 0 and at most the host's.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rootfs::store::ImageRecord;

use crate::agent_client::{ProcessSpec, TermSize};
use crate::container::{ContainerConfig, HostConfig, Isolation, RestartPolicy, RunConfig};
use crate::lifecycle::CreateRequest;
use crate::ulimit::Ulimit;
use crate::units;

/// Smallest `--memory` docker accepts (6 MiB).
pub const MIN_MEMORY: i64 = 6 << 20;

/// `PATH` a container gets when neither the image nor the flags set one (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A run flag or image config husk cannot turn into a container.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// `--tmpfs ...:dev` under process isolation.
    #[error(
        "--tmpfs {0}: the dev option is refused under process isolation (device nodes there could open the host's devices); use --isolation vm"
    )]
    TmpfsDev(String),
    /// A `--device` is wrong.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// A `-v`, `--mount` or `--volumes-from` is wrong.
    #[error(transparent)]
    Volume(#[from] crate::volumes::ParseError),
    /// The health flags are wrong.
    #[error(transparent)]
    Health(#[from] crate::health::HealthError),
    /// Neither the image nor the command line says what to run.
    #[error("no command specified")]
    NoCommand,
    /// An env file cannot be read.
    #[error("open {path}: {reason}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A line of an env file (or a `-e`) has no variable name or a name with spaces.
    #[error("invalid environment variable {0:?}")]
    BadEnv(String),
    /// `-w` is not absolute.
    #[error("the working directory '{0}' is invalid, it needs to be an absolute path")]
    RelativeWorkdir(String),
    /// `-u` is empty or has more than one colon.
    #[error("invalid user {0:?}: use USER, UID, USER:GROUP or UID:GID")]
    BadUser(String),
    /// `--memory` is not a size.
    #[error("invalid --memory")]
    BadMemory(#[source] units::Error),
    /// A `--cap-add`/`--cap-drop` names no capability.
    #[error(transparent)]
    Capability(#[from] crate::caps::CapError),
    /// A `--ulimit` is not usable.
    #[error(transparent)]
    Ulimit(#[from] crate::ulimit::UlimitError),
    /// A `--tmpfs` is not `ABSOLUTE_PATH[:OPTIONS]` with docker's options.
    #[error(
        "invalid --tmpfs {0:?}: use an absolute path, then :options (rw, ro, exec, noexec, suid, nosuid, dev, nodev, size=, mode=, uid=, gid=, nr_inodes=)"
    )]
    BadTmpfs(String),
    /// A `--sysctl` is not `KEY=VALUE`.
    #[error("invalid --sysctl {0:?}: use KEY=VALUE")]
    BadSysctl(String),
    /// A sysctl no container can have its own of.
    #[error("sysctl {0:?} is not in a separate kernel namespace: it cannot be set per container")]
    SysctlNotNamespaced(String),
    /// `--shm-size` is not a size above 0.
    #[error("invalid --shm-size")]
    BadShmSize(#[source] units::Error),
    /// `--stop-signal` (or the image's `StopSignal`) names no signal.
    #[error("invalid stop signal")]
    BadStopSignal(#[source] crate::signal::SignalError),
    /// `--memory` below docker's minimum.
    #[error("minimum memory limit allowed is 6MB (--memory {0} is less)")]
    MemoryTooSmall(String),
    /// `--cpus` is not a positive decimal.
    #[error("invalid --cpus {0:?}: use a number of CPUs above 0, such as 1 or 0.5")]
    BadCpus(String),
    /// `--cpus` above the host's count.
    #[error("range of CPUs is from 0.01 to {host}.00, as there are only {host} CPUs available")]
    TooManyCpus {
        /// The host's CPUs.
        host: usize,
    },
    /// `--restart` cannot be read (the policy parser's message).
    #[error("{0}")]
    BadRestart(String),
    /// `--rm` with a restart policy.
    #[error("conflicting options: --restart and --rm")]
    RestartWithRm,
    /// `--network` names nothing husk can wire.
    #[error(transparent)]
    Network(#[from] crate::network::ModeError),
    /// A `-p` value husk cannot use.
    #[error(transparent)]
    Port(#[from] crate::network::ports::PortError),
    /// A bad `--add-host`.
    #[error("invalid argument {0:?} for \"--add-host\" flag: use NAME:IP")]
    AddHost(String),
    /// A bad `--dns`.
    #[error("invalid argument {0:?} for \"--dns\" flag: not an IP address")]
    Dns(String),
    /// A bad `--ip`.
    #[error("invalid argument {0:?} for \"--ip\" flag: not an IPv4 address")]
    Ip(String),
    /// `--ip` off a user network (docker's words).
    #[error("user specified IP address is supported on user defined networks only")]
    IpWithoutUserNetwork,
    /// `--network-alias` off a user network (docker's words).
    #[error("network-scoped alias is supported only for containers in user defined networks")]
    AliasWithoutUserNetwork,
    /// A `--network-alias` that is no DNS name.
    #[error("invalid argument {0:?} for \"--network-alias\" flag: not a DNS name")]
    Alias(String),
    /// A `net.*` sysctl with `--network host` (docker's words).
    #[error("sysctl {0:?} not allowed in host network namespace")]
    SysctlHostNetwork(String),
    /// Published ports with `--network none`.
    #[error("published ports need a network: --network none has none")]
    PortsWithoutNetwork,
    /// `--isolation` other than vm, process or auto.
    #[error("invalid isolation {0:?}: use vm, process or auto")]
    BadIsolation(String),
}

/// `--isolation` as asked: a backend, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IsolationChoice {
    /// A microVM booted by husk's VMM (the default).
    #[default]
    Vm,
    /// Namespaces and cgroups on the host kernel.
    Process,
    /// vm where the host can run Linux guests, else process.
    Auto,
}

impl FromStr for IsolationChoice {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s {
            "vm" => Ok(Self::Vm),
            "process" => Ok(Self::Process),
            "auto" => Ok(Self::Auto),
            _ => Err(SpecError::BadIsolation(s.to_owned())),
        }
    }
}

impl IsolationChoice {
    /// The backend: `Auto` is vm where `can_run_guests`, else process. An explicit vm stays
    /// vm whatever the host (`lifecycle::create` refuses it with a clear error where it
    /// cannot run): husk never falls back silently.
    pub fn resolve(self, can_run_guests: bool) -> Isolation {
        match self {
            Self::Vm => Isolation::Vm,
            Self::Process => Isolation::Process,
            Self::Auto if can_run_guests => Isolation::Vm,
            Self::Auto => Isolation::Process,
        }
    }
}

/// The `husk run` / `husk create` flags as typed (before any image is looked at).
#[derive(Debug, Clone, Default)]
pub struct RunFlags {
    /// `--name`.
    pub name: Option<String>,
    /// `-e KEY=VALUE` or `-e KEY`, in order.
    pub env: Vec<String>,
    /// `--env-file`, in order.
    pub env_files: Vec<PathBuf>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--entrypoint` as argv (docker's API sends an array; `Some([])` or `Some([""])`
    /// clears the image's).
    pub entrypoint: Option<Vec<String>>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `-i`.
    pub interactive: bool,
    /// `-t`.
    pub tty: bool,
    /// `--cpus`.
    pub cpus: Option<String>,
    /// `--memory`.
    pub memory: Option<String>,
    /// `--restart`.
    pub restart: Option<String>,
    /// `--isolation`, already resolved (see [`IsolationChoice::resolve`]).
    pub isolation: Isolation,
    /// Foreground run: the shim waits for the first attach before starting the workload.
    pub attach: bool,
    /// `--rm`.
    pub auto_remove: bool,
    /// `--init`.
    pub init: bool,
    /// A build step's container: held open by `husk-init --hold` instead of a command (the
    /// step's commands run as execs in it).
    pub hold: bool,
    /// `--cold`.
    pub cold_boot: bool,
    /// `--network` (`None`: the default, the `bridge` network).
    pub network: Option<String>,
    /// `--network-alias`, in order.
    pub network_aliases: Vec<String>,
    /// `--ip`.
    pub ip: Option<String>,
    /// `-p`, in order.
    pub publish: Vec<String>,
    /// `-P`: publish every port the image exposes.
    pub publish_all: bool,
    /// `--add-host NAME:IP`, in order.
    pub add_hosts: Vec<String>,
    /// `--dns IP`, in order.
    pub dns: Vec<String>,
    /// `--label KEY[=VALUE]`, in order (added to the image's labels).
    pub labels: Vec<String>,
    /// `--stop-signal`.
    pub stop_signal: Option<String>,
    /// `--stop-timeout` (seconds).
    pub stop_timeout: Option<i64>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub read_only: bool,
    /// `--shm-size`.
    pub shm_size: Option<String>,
    /// `--ulimit`s.
    pub ulimits: Vec<String>,
    /// `--tmpfs PATH[:OPTIONS]`.
    pub tmpfs: Vec<String>,
    /// `-v [SOURCE:]TARGET[:MODES]`, in order.
    pub volumes: Vec<String>,
    /// `--mount type=...,...`, in order.
    pub mounts: Vec<String>,
    /// `--volumes-from CONTAINER[:ro|rw]`, in order.
    pub volumes_from: Vec<String>,
    /// `--sysctl KEY=VALUE`.
    pub sysctls: Vec<String>,
    /// `--pids-limit` (0 or negative: none of the user's).
    pub pids_limit: Option<i64>,
    /// `--health-*`, `--no-healthcheck`.
    pub health: crate::health::HealthFlags,
    /// `--device HOST[:CONTAINER][:PERMISSIONS]`.
    pub devices: Vec<String>,
    /// CMD arguments after the image.
    pub cmd: Vec<String>,
}

/// What a held container's config names as its command (`ps`, `inspect`).
pub const HOLD_COMMAND: &str = "husk-init";

/// Builds the create request for `image` (typed as `image_ref`) from its config and the
/// flags; `lookup` reads the host's environment (for `-e KEY`), `host_cpus` bounds `--cpus`.
pub fn build(
    image: &ImageRecord,
    image_ref: &str,
    flags: &RunFlags,
    lookup: &dyn Fn(&str) -> Option<String>,
    host_cpus: usize,
) -> Result<CreateRequest, SpecError> {
    let defaults = image.config.config.clone().unwrap_or_default();
    let (entrypoint, cmd) = match flags.hold {
        true => (
            Vec::new(),
            vec![HOLD_COMMAND.to_owned(), "--hold".to_owned()],
        ),
        false => command(
            defaults.entrypoint.unwrap_or_default(),
            defaults.cmd.unwrap_or_default(),
            flags.entrypoint.as_deref(),
            &flags.cmd,
        )?,
    };
    let mut overrides = Vec::new();
    for f in &flags.env_files {
        overrides.extend(read_env_file(f, lookup)?);
    }
    for e in &flags.env {
        overrides.extend(env_flag(e, lookup)?);
    }
    let user = match &flags.user {
        Some(u) => validate_user(u)?,
        None => defaults.user.unwrap_or_default(),
    };
    let config = RunConfig {
        entrypoint,
        cmd,
        env: merge_env(defaults.env.unwrap_or_default(), overrides),
        working_dir: working_dir(defaults.working_dir, flags.workdir.as_deref())?,
        user,
        tty: flags.tty,
        open_stdin: flags.interactive,
        attach_stdout: flags.attach,
        hostname: flags.hostname.clone().unwrap_or_default(),
        labels: labels(defaults.labels.unwrap_or_default(), &flags.labels),
        exposed_ports: defaults.exposed_ports.unwrap_or_default(),
        volumes: defaults.volumes.unwrap_or_default(),
        stop_signal: stop_signal(flags.stop_signal.as_ref().or(defaults.stop_signal.as_ref()))?,
        stop_timeout: flags.stop_timeout,
        healthcheck: crate::health::merge(defaults.healthcheck, &flags.health)?,
    };
    let mut host = host_config(flags, host_cpus)?;
    host.port_bindings = port_bindings(flags, &config)?;
    host.extra_hosts = flags
        .add_hosts
        .iter()
        .map(|h| extra_host(h))
        .collect::<Result<_, _>>()?;
    host.dns = flags
        .dns
        .iter()
        .map(|d| d.parse().map_err(|_| SpecError::Dns(d.clone())))
        .collect::<Result<_, _>>()?;
    user_network_options(flags, &mut host)?;
    if host.network_mode == crate::network::Mode::Host {
        if let Some((key, _)) = host.sysctls.iter().find(|(k, _)| k.starts_with("net.")) {
            return Err(SpecError::SysctlHostNetwork(key.clone()));
        }
        if !host.port_bindings.is_empty() {
            // docker's behaviour: the container's ports are the host's already.
            log::warn!("published ports are discarded when using host network mode");
            host.port_bindings.clear();
        }
    }
    if !host.port_bindings.is_empty() && host.network_mode == crate::network::Mode::None {
        return Err(SpecError::PortsWithoutNetwork);
    }
    let mounts = mount_requests(flags, &mut host)?;
    let volumes_from = flags
        .volumes_from
        .iter()
        .map(|v| crate::volumes::parse_volumes_from(v))
        .collect::<Result<_, _>>()?;
    Ok(CreateRequest {
        name: flags.name.clone(),
        image: image_ref.to_owned(),
        config,
        host,
        mounts,
        volumes_from,
    })
}

/// `-v` and `--mount` in order; a `--mount type=tmpfs` joins the `--tmpfs` mounts.
fn mount_requests(
    flags: &RunFlags,
    host: &mut HostConfig,
) -> Result<Vec<crate::volumes::MountRequest>, SpecError> {
    use crate::volumes::{MountFlag, parse_mount, parse_volume};
    let mut out = Vec::new();
    for v in &flags.volumes {
        out.push(parse_volume(v)?);
    }
    for m in &flags.mounts {
        match parse_mount(m)? {
            MountFlag::Mount(r) => out.push(r),
            MountFlag::Tmpfs(target, options) => {
                let (path, options) = tmpfs(
                    &format!("{target}:{options}"),
                    flags.isolation,
                    flags.privileged,
                )?;
                host.tmpfs.insert(path, options);
            }
        }
    }
    Ok(out)
}

/// `--ip` and `--network-alias`, which only user networks take.
fn user_network_options(flags: &RunFlags, host: &mut HostConfig) -> Result<(), SpecError> {
    let user = matches!(host.network_mode, crate::network::Mode::User(_));
    if let Some(ip) = &flags.ip {
        if !user {
            return Err(SpecError::IpWithoutUserNetwork);
        }
        host.ipv4_address = Some(ip.parse().map_err(|_| SpecError::Ip(ip.clone()))?);
    }
    if !flags.network_aliases.is_empty() && !user {
        return Err(SpecError::AliasWithoutUserNetwork);
    }
    if let Some(alias) = flags
        .network_aliases
        .iter()
        .find(|a| !crate::network::valid_alias(a))
    {
        return Err(SpecError::Alias(alias.clone()));
    }
    host.network_aliases = flags.network_aliases.clone();
    Ok(())
}

/// `--add-host NAME:IP` (also `NAME=IP`; IPv6 addresses may be bracketed) as docker's
/// `ExtraHosts` entry `NAME:IP`.
fn extra_host(spec: &str) -> Result<String, SpecError> {
    let bad = || SpecError::AddHost(spec.to_string());
    let (name, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !valid_name || ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad());
    }
    Ok(format!("{name}:{ip}"))
}

/// `-p` values in order, then (`-P`) every exposed port not already published.
fn port_bindings(
    flags: &RunFlags,
    config: &RunConfig,
) -> Result<Vec<crate::network::ports::PortBinding>, SpecError> {
    use crate::network::ports;
    let mut out = Vec::new();
    for p in &flags.publish {
        out.extend(ports::parse(p)?);
    }
    if flags.publish_all {
        for b in ports::from_exposed(config.exposed_ports.keys()) {
            if !out
                .iter()
                .any(|o| o.container_port == b.container_port && o.proto == b.proto)
            {
                out.push(b);
            }
        }
    }
    Ok(out)
}

fn host_config(flags: &RunFlags, host_cpus: usize) -> Result<HostConfig, SpecError> {
    let restart_policy = match &flags.restart {
        Some(r) => RestartPolicy::parse(r).map_err(|e| SpecError::BadRestart(e.to_string()))?,
        None => RestartPolicy::default(),
    };
    if flags.auto_remove && restart_policy.name != crate::container::RestartName::No {
        return Err(SpecError::RestartWithRm);
    }
    let nano_cpus = match &flags.cpus {
        Some(c) => parse_cpus(c, host_cpus)?,
        None => 0,
    };
    let memory = match &flags.memory {
        Some(m) => parse_memory(m)?,
        None => 0,
    };
    Ok(HostConfig {
        isolation: flags.isolation,
        nano_cpus,
        memory,
        restart_policy,
        auto_remove: flags.auto_remove,
        init: flags.init,
        hold: flags.hold,
        cold_boot: flags.cold_boot,
        network_mode: match &flags.network {
            Some(n) => crate::network::Mode::parse(n, flags.isolation == Isolation::Vm)?,
            // docker's default: the bridge network.
            None => crate::network::Mode::Bridge,
        },
        port_bindings: Vec::new(),
        network_aliases: Vec::new(),
        ipv4_address: None,
        extra_networks: Vec::new(),
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        cap_add: flags.cap_add.clone(),
        cap_drop: flags.cap_drop.clone(),
        privileged: flags.privileged,
        readonly_rootfs: flags.read_only,
        shm_size: match &flags.shm_size {
            Some(s) => shm_size(s)?,
            None => 0,
        },
        ulimits: flags
            .ulimits
            .iter()
            .map(|u| Ulimit::parse(u))
            .collect::<Result<_, _>>()?,
        tmpfs: flags
            .tmpfs
            .iter()
            .map(|t| tmpfs(t, flags.isolation, flags.privileged))
            .collect::<Result<_, _>>()?,
        sysctls: flags
            .sysctls
            .iter()
            .map(|s| sysctl(s))
            .collect::<Result<_, _>>()?,
        pids_limit: flags.pids_limit.filter(|n| *n > 0).unwrap_or(0),
        devices: flags
            .devices
            .iter()
            .map(|d| crate::device::parse(d, flags.isolation))
            .collect::<Result<_, _>>()?,
        mounts: Vec::new(),
    })
    .and_then(|h| {
        crate::caps::bounding_set(h.privileged, &h.cap_add, &h.cap_drop)?;
        Ok(h)
    })
}

/// One `--tmpfs PATH[:OPTIONS]`.
/// One `--tmpfs`. Under process isolation (unless `--privileged`) `dev` is refused: husk
/// has no devices cgroup, so `nodev` is what keeps a workload's own device nodes (it has
/// CAP_MKNOD) from opening the host's devices.
fn tmpfs(
    text: &str,
    isolation: Isolation,
    privileged: bool,
) -> Result<(String, String), SpecError> {
    let bad = || SpecError::BadTmpfs(text.to_owned());
    let (path, options) = text.split_once(':').unwrap_or((text, ""));
    let clean = path.starts_with('/')
        && path != "/"
        && path
            .split('/')
            .skip(1)
            .all(|p| !matches!(p, "" | "." | ".."));
    if !clean {
        return Err(bad());
    }
    const FLAGS: &[&str] = &[
        "rw", "ro", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
    ];
    const DATA: &[&str] = &["size=", "mode=", "uid=", "gid=", "nr_inodes="];
    let ok = options.split(',').filter(|o| !o.is_empty()).all(|o| {
        FLAGS.contains(&o)
            || (DATA.iter().any(|d| o.starts_with(d))
                && o.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'='))
    });
    if isolation == Isolation::Process && !privileged && options.split(',').any(|o| o == "dev") {
        return Err(SpecError::TmpfsDev(text.to_owned()));
    }
    match ok {
        true => Ok((path.to_owned(), options.to_owned())),
        false => Err(bad()),
    }
}

/// One `--sysctl KEY=VALUE`, of the sysctls a container has its own of (docker's list:
/// IPC, POSIX message queues and the network namespace's).
fn sysctl(text: &str) -> Result<(String, String), SpecError> {
    let (key, value) = text
        .split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.contains('\n'))
        .ok_or_else(|| SpecError::BadSysctl(text.to_owned()))?;
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let clean = key.split('.').all(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    });
    let namespaced = IPC.contains(&key) || key.starts_with("fs.mqueue.") || key.starts_with("net.");
    if !clean || !namespaced {
        return Err(SpecError::SysctlNotNamespaced(key.to_owned()));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--shm-size`: docker's units, above 0.
fn shm_size(text: &str) -> Result<i64, SpecError> {
    let bytes = units::parse_size(text, 1).map_err(SpecError::BadShmSize)?;
    match i64::try_from(bytes) {
        Ok(b) if b > 0 => Ok(b),
        _ => Err(SpecError::BadShmSize(units::Error::Invalid(
            text.to_owned(),
        ))),
    }
}

/// `--stop-signal` or the image's `StopSignal`, checked (`""`: SIGTERM).
fn stop_signal(signal: Option<&String>) -> Result<String, SpecError> {
    match signal {
        Some(s) if !s.is_empty() => {
            crate::signal::parse(s).map_err(SpecError::BadStopSignal)?;
            Ok(s.clone())
        }
        _ => Ok(String::new()),
    }
}

/// The image's labels with `--label`s added or replacing them (`KEY` alone: empty value).
/// `--label KEY[=VALUE]` flags over `image`'s labels (a bare key has an empty value).
pub fn labels(
    mut image: std::collections::BTreeMap<String, String>,
    flags: &[String],
) -> std::collections::BTreeMap<String, String> {
    for l in flags {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        image.insert(k.to_owned(), v.to_owned());
    }
    image
}

/// The environment the workload starts with, as docker builds it: a default `PATH`,
/// `HOSTNAME`, `TERM=xterm` with a tty, then `Config.Env` replacing or appending.
pub fn process_env(config: &RunConfig, hostname: &str) -> Vec<String> {
    let mut base = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if config.tty {
        base.push("TERM=xterm".to_owned());
    }
    merge_env(base, config.env.clone())
}

/// The `husk exec` flags.
#[derive(Debug, Clone, Default)]
pub struct ExecFlags {
    /// `-e`, in order.
    pub env: Vec<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub interactive: bool,
    /// The local terminal's size, with `-t`.
    pub size: Option<TermSize>,
    /// Program and arguments.
    pub cmd: Vec<String>,
}

/// The process `husk exec` starts in a running container, as docker's exec does: the
/// container's environment (with `PATH`, `HOSTNAME`) and then `-e`; `-w` else the container's
/// working directory; `-u` else the container's user.
pub fn exec_process(
    container: &ContainerConfig,
    flags: &ExecFlags,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<ProcessSpec, SpecError> {
    if flags.cmd.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let mut overrides = Vec::new();
    for e in &flags.env {
        overrides.extend(env_flag(e, lookup)?);
    }
    let mut base = container.config.clone();
    base.tty = flags.tty;
    let env = merge_env(process_env(&base, &container.hostname()), overrides);
    let cwd = match flags.workdir.as_deref() {
        Some(_) => working_dir(None, flags.workdir.as_deref())?,
        None => working_dir(Some(container.config.working_dir.clone()), None)?,
    };
    let user = match &flags.user {
        Some(u) => validate_user(u)?,
        None => container.config.user.clone(),
    };
    Ok(ProcessSpec {
        argv: flags.cmd.clone(),
        env,
        cwd: Some(cwd),
        user: None,
        tty: flags.tty,
        size: flags.size.filter(|_| flags.tty),
        stdin: flags.interactive,
        user_name: Some(user).filter(|u| !u.is_empty()),
        capabilities: Some(container.host_config.capabilities()),
        rlimits: container.host_config.rlimits(),
        ..ProcessSpec::default()
    })
}

/// Entrypoint and Cmd after `--entrypoint` and CMD arguments.
fn command(
    image_entrypoint: Vec<String>,
    image_cmd: Vec<String>,
    entrypoint: Option<&[String]>,
    args: &[String],
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    let (entrypoint, mut cmd) = match entrypoint {
        Some([]) => (Vec::new(), Vec::new()),
        Some([e]) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (e.to_vec(), Vec::new()),
        None => (image_entrypoint, image_cmd),
    };
    if !args.is_empty() {
        cmd = args.to_vec();
    }
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok((entrypoint, cmd))
}

fn key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// `defaults` with each of `overrides` replacing the entry of the same name or appended;
/// an override without `=` removes the variable (docker's ReplaceOrAppendEnvValues).
pub fn merge_env(mut defaults: Vec<String>, overrides: Vec<String>) -> Vec<String> {
    for o in overrides {
        let pos = defaults.iter().position(|d| key(d) == key(&o));
        match (pos, o.contains('=')) {
            (Some(i), true) => defaults[i] = o,
            (Some(i), false) => {
                defaults.remove(i);
            }
            (None, true) => defaults.push(o),
            (None, false) => {}
        }
    }
    defaults
}

/// One `-e`: `KEY=VALUE` as is; `KEY` takes the host's value, or stays bare (meaning
/// "unset") when the host has none.
fn env_flag(e: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, SpecError> {
    let name = key(e);
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Err(SpecError::BadEnv(e.to_owned()));
    }
    if e.contains('=') {
        return Ok(vec![e.to_owned()]);
    }
    Ok(vec![match lookup(name) {
        Some(v) => format!("{name}={v}"),
        None => name.to_owned(),
    }])
}

/// An env file as docker reads it: one `KEY=VALUE` or `KEY` per line, the value taken
/// literally (no quotes, no expansion), leading blanks ignored, `#` comments and blank lines
/// skipped.
fn read_env_file(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::EnvFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_env_file(text.trim_start_matches('\u{feff}'), lookup)
}

fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.extend(env_flag(line, lookup)?);
    }
    Ok(out)
}

fn working_dir(image: Option<String>, flag: Option<&str>) -> Result<String, SpecError> {
    match flag {
        Some(w) if w.starts_with('/') => Ok(w.to_owned()),
        Some(w) => Err(SpecError::RelativeWorkdir(w.to_owned())),
        None => Ok(image
            .filter(|w| !w.is_empty())
            .map(|w| {
                if w.starts_with('/') {
                    w
                } else {
                    format!("/{w}")
                }
            })
            .unwrap_or_else(|| "/".to_owned())),
    }
}

fn validate_user(u: &str) -> Result<String, SpecError> {
    let parts: Vec<&str> = u.split(':').collect();
    if u.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(SpecError::BadUser(u.to_owned()));
    }
    Ok(u.to_owned())
}

/// `--memory`: docker's units, bare numbers in bytes, `0` for the default, else >= 6 MiB.
pub fn parse_memory(text: &str) -> Result<i64, SpecError> {
    let bytes = units::parse_size(text, 1).map_err(SpecError::BadMemory)?;
    let bytes = i64::try_from(bytes)
        .map_err(|_| SpecError::BadMemory(units::Error::Overflow(text.to_owned())))?;
    if bytes != 0 && bytes < MIN_MEMORY {
        return Err(SpecError::MemoryTooSmall(text.to_owned()));
    }
    Ok(bytes)
}

/// `--cpus` as billionths of a CPU: a decimal above 0 (at most 9 fractional digits) and at
/// most `host_cpus`.
pub fn parse_cpus(text: &str, host_cpus: usize) -> Result<i64, SpecError> {
    let bad = || SpecError::BadCpus(text.to_owned());
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || frac.len() > 9 {
        return Err(bad());
    }
    let whole: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_nanos: i64 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
    let nanos = whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac_nanos))
        .ok_or_else(bad)?;
    if nanos == 0 {
        return Err(bad());
    }
    if nanos > (host_cpus as i64).saturating_mul(1_000_000_000) {
        return Err(SpecError::TooManyCpus { host: host_cpus });
    }
    Ok(nanos)
}

#[cfg(test)]
mod tests;
