//! `husk run` (and `start -a`): image lookup, the run spec, create + start, and for a
//! foreground run the attached session: output relayed, stdin with `-i`, the local terminal
//! raw with `-t` (window size and its changes passed on), SIGINT/SIGTERM/... relayed to the
//! workload, and husk exiting with the workload's code.

use std::io::{IsTerminal, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, bail};
use clap::Args;
use rootfs::store::{Store, StoreError};
use runtime::container::Isolation;
use runtime::engine::{Engine, EngineError};
use runtime::lifecycle::LifecycleError;
use runtime::shim::ShimError;
use runtime::spec::RunFlags;

use super::term;
use crate::registry::PullPolicy;

/// `husk run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container ID.
    #[arg(short, long)]
    detach: bool,
    /// Name of the container.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: name or UID, optionally with :group or :GID.
    #[arg(short, long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Replace the image's entrypoint (and its default command).
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    entrypoint: Option<String>,
    /// Container host name [default: the short container ID].
    #[arg(long)]
    hostname: Option<String>,
    /// Keep stdin open and pass it to the workload.
    #[arg(short, long)]
    interactive: bool,
    /// Give the workload a terminal.
    #[arg(short, long)]
    tty: bool,
    /// CPUs (fractional): vCPUs in vm isolation, a CPU quota in process isolation.
    #[arg(long)]
    cpus: Option<String>,
    /// Memory limit (b, k, m, g units; at least 6m): guest RAM, or a cgroup limit.
    #[arg(short, long)]
    memory: Option<String>,
    /// Restart policy: no, always, on-failure[:N], unless-stopped.
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Add a Linux capability (NET_ADMIN, ALL, ...).
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a Linux capability (CHOWN, ALL, ...).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Every capability (vm: root of the guest, which stays behind the VM boundary; process:
    /// root of the host's kernel namespaces: trusted workloads only).
    #[arg(long)]
    privileged: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Size of /dev/shm (b, k, m, g) [default: 64m].
    #[arg(long, value_name = "SIZE")]
    shm_size: Option<String>,
    /// A resource limit: NAME=SOFT[:HARD] (nofile=1024:2048, nproc=100, core=-1).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Mount a fresh tmpfs: PATH[:OPTIONS] (rw, ro, exec, size=64m, mode=1777, ...).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Mount a volume or host path: [NAME|/HOST/PATH:]/PATH[:ro|rw|nocopy] (a bare /PATH
    /// is a new anonymous volume).
    #[arg(short = 'v', long = "volume", value_name = "[SOURCE:]PATH[:MODES]")]
    volume: Vec<String>,
    /// Mount a volume, host path or tmpfs: type=volume|bind|tmpfs,source=...,target=...[,readonly]
    /// [,volume-nocopy][,tmpfs-size=...][,tmpfs-mode=...].
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// Mount every volume of another container: CONTAINER[:ro|rw].
    #[arg(long, value_name = "CONTAINER[:ro|rw]")]
    volumes_from: Vec<String>,
    /// Set a namespaced kernel parameter: KEY=VALUE (net.*, fs.mqueue.*, kernel.shm*, ...).
    #[arg(long, value_name = "KEY=VALUE")]
    sysctl: Vec<String>,
    /// Keys that detach from a terminal session (docker's format) [default: ctrl-p,ctrl-q].
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    /// Attach only these streams: STDIN, STDOUT, STDERR [default: all].
    #[arg(short, long = "attach", value_name = "STREAM")]
    attach: Vec<String>,
    /// Pass signals received by husk on to the workload.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// At most this many processes in the container (-1 or 0: no limit of yours).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Write the container ID to this file (which must not exist).
    #[arg(long, value_name = "FILE")]
    cidfile: Option<PathBuf>,
    /// Set a label (KEY=VALUE, or KEY for an empty value).
    #[arg(short = 'l', long = "label", value_name = "KEY[=VALUE]")]
    label: Vec<String>,
    /// Signal `stop` sends first [default: the image's, else SIGTERM].
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds `stop` waits before killing [default: 10].
    #[arg(long, value_name = "SECONDS")]
    stop_timeout: Option<i64>,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Boot the VM's kernel instead of restoring the warm-start template (vm isolation).
    #[arg(long)]
    cold: bool,
    /// Connect the container to a network: bridge (the default bridge network), none,
    /// host (process isolation), or a user network's name [default: bridge].
    #[arg(long = "network", visible_alias = "net", value_name = "NETWORK")]
    network: Option<String>,
    /// A name the container's user network resolves to it (besides its own name).
    #[arg(
        long = "network-alias",
        visible_alias = "net-alias",
        value_name = "ALIAS"
    )]
    network_alias: Vec<String>,
    /// The container's IPv4 address on its user network.
    #[arg(long = "ip", value_name = "IP")]
    ip: Option<String>,
    /// Publish a container's port on the host: [IP:][HOSTPORT:]PORT[/tcp|udp], ranges
    /// as START-END.
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    publish: Vec<String>,
    /// Publish every port the image exposes on an ephemeral host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Add a line to /etc/hosts (NAME:IP).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Use this DNS server (replaces the host's nameservers in /etc/resolv.conf).
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// Command to run to check health (with /bin/sh -c).
    #[arg(long, value_name = "COMMAND")]
    health_cmd: Option<String>,
    /// Time between health checks (ms|s|m|h) [default: 30s].
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    health_interval: Option<String>,
    /// Longest time one check may run (ms|s|m|h) [default: 30s].
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy [default: 3].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    health_retries: Option<i64>,
    /// Start period in which failures do not count (ms|s|m|h) [default: 0s].
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    health_start_period: Option<String>,
    /// Time between checks during the start period (ms|s|m|h) [default: 5s].
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    health_start_interval: Option<String>,
    /// Disable any health check the image specifies.
    #[arg(long)]
    no_healthcheck: bool,
    /// Add a host device: HOST[:CONTAINER][:PERMISSIONS] (process isolation only).
    #[arg(long, value_name = "HOST[:CONTAINER][:rwm]")]
    device: Vec<String>,
    /// Pull the image before running: missing, always or never.
    #[arg(long, default_value = "missing", value_name = "missing|always|never")]
    pull: String,
    /// Sandbox: vm (a microVM per container), process (namespaces) or auto [default:
    /// $HUSK_ISOLATION, else "default-isolation" in <root>/daemon.json, else vm].
    #[arg(long, value_name = "vm|process|auto")]
    isolation: Option<String>,
    /// Image (name[:tag], name@digest or ID).
    image: String,
    /// Command and arguments (replace the image's default command).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

/// `husk run`.
pub fn run(a: RunArgs, root: &Path, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    // Detached, the pty is the container's alone (docker allocates it regardless).
    if a.interactive && a.tty && !a.detach && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    let target: Arc<OnceLock<String>> = Arc::default();
    if a.detach && !a.attach.is_empty() {
        bail!("Conflicting options: -a and -d");
    }
    let (stdin_wanted, streams) = attach_streams(&a.attach)?;
    let engine = Engine::new(root.to_path_buf()).with_kvm_device(kvm_device);
    if !a.detach && a.sig_proxy {
        // Before any other thread exists, so that the signals reach only the relay.
        relay_signals(&engine, &target, a.tty)?;
    }
    let image = find_image(root, &a.image, a.pull.parse()?)?;
    let isolation = pick_isolation(&engine, a.isolation.as_deref())?;
    let flags = flags(&a, isolation);
    check_cidfile(a.cidfile.as_deref())?;
    let config = engine.create_from_flags(&image, &a.image, &flags, &|k| std::env::var(k).ok())?;
    let id = config.id;
    write_cidfile(a.cidfile.as_deref(), &id)?;
    match engine.start(&id, !a.detach) {
        // As docker: a detached run prints the ID once the workload runs, or says why it
        // could not start and exits with 125 or the workload's 126/127.
        Err(EngineError::Lifecycle(LifecycleError::Shim(ShimError::NotStarted { code, why }))) => {
            eprintln!("husk: {why}");
            return Ok(ExitCode::from(
                u8::try_from(code.clamp(1, 255)).unwrap_or(125),
            ));
        }
        Err(e) => {
            if a.rm {
                let _ = engine.remove(&id, true, true);
            }
            return Err(e.into());
        }
        Ok(_) if a.detach => {
            println!("{id}");
            return Ok(ExitCode::SUCCESS);
        }
        Ok(_) => {}
    }
    let _ = target.set(id.clone());
    let detach_keys = a
        .detach_keys
        .as_deref()
        .map(term::parse_detach_keys)
        .transpose()?;
    let code = session(
        &engine,
        &id,
        Session {
            stdin: a.interactive && stdin_wanted,
            streams,
            tty: a.tty,
            detach_keys,
        },
    )?;
    if a.rm {
        wait_removed(&engine, &id);
    }
    Ok(code)
}

/// `husk create`: the container, ready for `start` (or `start -a`); prints its ID.
pub fn create(a: RunArgs, root: &Path, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(root.to_path_buf()).with_kvm_device(kvm_device);
    let image = find_image(root, &a.image, a.pull.parse()?)?;
    let isolation = pick_isolation(&engine, a.isolation.as_deref())?;
    let mut flags = flags(&a, isolation);
    flags.attach = false;
    check_cidfile(a.cidfile.as_deref())?;
    let config = engine.create_from_flags(&image, &a.image, &flags, &|k| std::env::var(k).ok())?;
    write_cidfile(a.cidfile.as_deref(), &config.id)?;
    println!("{}", config.id);
    Ok(ExitCode::SUCCESS)
}

/// `--cidfile`: docker refuses a file that is already there (another container's).
fn check_cidfile(path: Option<&Path>) -> anyhow::Result<()> {
    match path {
        Some(p) if p.exists() => bail!(
            "Container ID file found, make sure the other container isn't running or delete {}",
            p.display()
        ),
        _ => Ok(()),
    }
}

/// Writes the ID to `--cidfile` (created exclusively: a race with another run loses).
fn write_cidfile(path: Option<&Path>, id: &str) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create the container ID file {}", path.display()))?;
    f.write_all(id.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// With `--rm`, docker returns only once the container is gone. The shim removes it before
/// it sends the exit frame, so this normally sees it gone at the first look; it matters
/// when the shim went away without an exit frame (bounded at 10 s).
fn wait_removed(engine: &Engine, id: &str) {
    for _ in 0..200 {
        if engine.inspect(id).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    log::warn!("container {id} is still there after its exit despite --rm");
}

/// `husk start -a [-i]`: starts the container and stays attached to it (with its terminal,
/// and its stdin with `-i`).
pub fn start_attached(root: &Path, query: &str, interactive: bool) -> ExitCode {
    let target: Arc<OnceLock<String>> = Arc::default();
    let engine = Engine::new(root.to_path_buf());
    let res = engine
        .config(query)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            relay_signals(&engine, &target, c.config.tty)?;
            let id = engine.start(query, true)?;
            let _ = target.set(id.clone());
            let s = Session {
                stdin: interactive && c.config.open_stdin,
                streams: Streams::ALL,
                tty: c.config.tty,
                detach_keys: None,
            };
            session(&engine, &id, s)
        });
    res.unwrap_or_else(|e| {
        eprintln!("Error: {e:#}");
        ExitCode::from(1)
    })
}

/// `husk attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not forward stdin.
    #[arg(long)]
    no_stdin: bool,
    /// Keys that detach (docker's format) [default: ctrl-p,ctrl-q].
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    /// Pass signals received by husk on to the workload.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// Container (name, ID or ID prefix).
    container: String,
}

/// `husk attach`: the running container's output from now on (and its stdin, when it was
/// started with `-i`), until it exits or the detach keys are typed.
pub fn attach(a: AttachArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(root.to_path_buf());
    let c = engine.config(&a.container)?;
    let state = engine.state(&a.container)?;
    if !state.running() {
        bail!("You cannot attach to a stopped container, start it first");
    }
    if state.paused {
        bail!("You cannot attach to a paused container, unpause it first");
    }
    let target: Arc<OnceLock<String>> = Arc::default();
    if a.sig_proxy {
        relay_signals(&engine, &target, c.config.tty)?;
    }
    let _ = target.set(c.id.clone());
    let detach_keys = a
        .detach_keys
        .as_deref()
        .map(term::parse_detach_keys)
        .transpose()?;
    let s = Session {
        stdin: !a.no_stdin && c.config.open_stdin,
        streams: Streams::ALL,
        tty: c.config.tty,
        detach_keys,
    };
    session(&engine, &c.id, s)
}

fn flags(a: &RunArgs, isolation: Isolation) -> RunFlags {
    RunFlags {
        name: a.name.clone(),
        env: a.env.clone(),
        env_files: a.env_file.clone(),
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        entrypoint: a.entrypoint.clone().map(|e| vec![e]),
        hostname: a.hostname.clone(),
        interactive: a.interactive,
        tty: a.tty,
        cpus: a.cpus.clone(),
        memory: a.memory.clone(),
        restart: a.restart.clone(),
        isolation,
        attach: !a.detach,
        auto_remove: a.rm,
        init: a.init,
        hold: false,
        cold_boot: a.cold,
        network: a.network.clone(),
        network_aliases: a.network_alias.clone(),
        ip: a.ip.clone(),
        publish: a.publish.clone(),
        publish_all: a.publish_all,
        add_hosts: a.add_host.clone(),
        dns: a.dns.clone(),
        labels: a.label.clone(),
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        privileged: a.privileged,
        read_only: a.read_only,
        shm_size: a.shm_size.clone(),
        ulimits: a.ulimit.clone(),
        tmpfs: a.tmpfs.clone(),
        volumes: a.volume.clone(),
        mounts: a.mount.clone(),
        volumes_from: a.volumes_from.clone(),
        sysctls: a.sysctl.clone(),
        pids_limit: a.pids_limit,
        devices: a.device.clone(),
        health: runtime::health::HealthFlags {
            cmd: a.health_cmd.clone(),
            interval: a.health_interval.clone(),
            timeout: a.health_timeout.clone(),
            start_period: a.health_start_period.clone(),
            start_interval: a.health_start_interval.clone(),
            retries: a.health_retries,
            none: a.no_healthcheck,
            test: None,
        },
        cmd: a.cmd.clone(),
    }
}

/// The image, pulled first as `policy` says (docker's `--pull`).
fn find_image(
    root: &Path,
    name: &str,
    policy: PullPolicy,
) -> anyhow::Result<rootfs::store::ImageRecord> {
    // A malformed name is refused before any lookup, as docker does.
    if !looks_like_id(name) {
        rootfs::reference::Reference::parse(name)?;
    }
    let resolve = || {
        let store = Store::open(root).context("cannot open the image store")?;
        match store.resolve(name) {
            Ok(image) => Ok(Some(image)),
            Err(StoreError::NoSuchImage(_)) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot resolve image {name}")),
        }
    };
    let found = match policy {
        PullPolicy::Always => None,
        PullPolicy::Missing | PullPolicy::Never => resolve()?,
    };
    if let Some(image) = found {
        return Ok(image);
    }
    let full = runtime::engine::with_latest(name);
    match policy {
        PullPolicy::Never => bail!("No such image: {full}"),
        PullPolicy::Missing => eprintln!("Unable to find image '{full}' locally"),
        PullPolicy::Always => {}
    }
    crate::registry::pull_for_run(root, name)?;
    resolve()?.with_context(|| format!("No such image: {full}"))
}

/// An image ID or a prefix of one (`sha256:` optional), which is not a reference.
fn looks_like_id(name: &str) -> bool {
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    !hex.is_empty()
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// `--isolation` (or the host's default); `auto` says on stderr what it picked and why.
fn pick_isolation(engine: &Engine, choice: Option<&str>) -> anyhow::Result<Isolation> {
    let (picked, why) = engine.pick_isolation(choice)?;
    if let Some(why) = why {
        eprintln!("husk: --isolation auto: using {} ({why})", picked.as_str());
    }
    Ok(picked)
}

/// Starts the thread that passes signals on to the container once `target` is known (a
/// signal before that ends husk as it would have), and window changes with a tty.
fn relay_signals(engine: &Engine, target: &Arc<OnceLock<String>>, tty: bool) -> anyhow::Result<()> {
    let mut signals = term::RELAYED.to_vec();
    if tty {
        signals.push(libc::SIGWINCH);
    }
    let engine = engine.clone();
    let target = Arc::clone(target);
    term::relay_signals(&signals, move |sig| {
        let Some(id) = target.get() else {
            if sig != libc::SIGWINCH {
                std::process::exit(128 + sig);
            }
            return;
        };
        let res = match sig {
            libc::SIGWINCH => resize(&engine, id),
            _ => engine.kill(id, &sig.to_string()).map_err(Into::into),
        };
        if let Err(e) = res {
            log::debug!("relaying signal {sig}: {e:#}");
        }
    })?;
    Ok(())
}

fn resize(engine: &Engine, id: &str) -> anyhow::Result<()> {
    let size = term::window_size(std::io::stdout().as_raw_fd())
        .or_else(|| term::window_size(std::io::stdin().as_raw_fd()));
    if let Some((rows, cols)) = size {
        engine.resize(id, rows, cols)?;
    }
    Ok(())
}

/// The attached session of a started container; its exit code.
/// How an attached session goes: stdin forwarded, a terminal, the detach keys (tty only).
#[derive(Debug, Clone, Default)]
pub(super) struct Session {
    /// Forward local stdin.
    pub stdin: bool,
    /// Which output streams to show.
    pub streams: Streams,
    /// The container has a terminal.
    pub tty: bool,
    /// docker's `--detach-keys` as bytes (`None`: the default).
    pub detach_keys: Option<Vec<u8>>,
}

/// docker's `-a`: the output streams a session shows.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Streams {
    pub stdout: bool,
    pub stderr: bool,
}

impl Streams {
    /// Both.
    pub const ALL: Streams = Streams {
        stdout: true,
        stderr: true,
    };
}

/// `-a STREAM`s: which of stdin, stdout and stderr to attach (all without any).
fn attach_streams(names: &[String]) -> anyhow::Result<(bool, Streams)> {
    if names.is_empty() {
        return Ok((true, Streams::ALL));
    }
    let mut stdin = false;
    let mut streams = Streams {
        stdout: false,
        stderr: false,
    };
    for n in names {
        match n.to_ascii_lowercase().as_str() {
            "stdin" => stdin = true,
            "stdout" => streams.stdout = true,
            "stderr" => streams.stderr = true,
            _ => bail!(
                "invalid argument {n:?} for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
            ),
        }
    }
    Ok((stdin, streams))
}

/// Relays the container's output (and stdin) until it exits, or until the detach keys are
/// typed on a terminal (the container goes on; husk exits 0, as docker does).
pub(super) fn session(engine: &Engine, id: &str, s: Session) -> anyhow::Result<ExitCode> {
    let attached = engine.attach(id, s.stdin, std::time::Duration::ZERO)?;
    let on_terminal = s.tty && std::io::stdin().is_terminal();
    let _raw = match on_terminal {
        true => Some(term::RawMode::enter(std::io::stdin().as_raw_fd())?),
        false => None,
    };
    if s.tty {
        resize(engine, id)?;
    }
    let detached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if s.stdin {
        let keys = match (on_terminal, s.detach_keys) {
            (false, _) => Vec::new(),
            (true, Some(k)) => k,
            (true, None) => term::parse_detach_keys(term::DEFAULT_DETACH_KEYS)?,
        };
        let flag = Arc::clone(&detached);
        term::pump_stdin(
            attached.stdin()?,
            term::DetachWatch::new(keys),
            move |input, detach| {
                match detach {
                    // The output side ends too; the workload's stdin stays open.
                    true => {
                        flag.store(true, std::sync::atomic::Ordering::SeqCst);
                        let _ = input.detach();
                    }
                    // Dropping the attach's stdin sends end of file.
                    false => drop(input),
                }
            },
        )?;
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let (mut no_out, mut no_err) = (std::io::sink(), std::io::sink());
    let pumped = attached.pump(
        if s.streams.stdout {
            &mut out
        } else {
            &mut no_out
        },
        if s.streams.stderr {
            &mut err
        } else {
            &mut no_err
        },
        &mut std::io::stderr(),
    );
    if detached.load(std::sync::atomic::Ordering::SeqCst) {
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let code = match pumped? {
        Some(code) => code,
        None => engine.wait_exit(id)?,
    };
    out.flush()?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(125),
    ))
}
