//! The container verbs the CLI calls (and, later, the API daemon). Each takes the state
//! directory `root` and, except `create`/`list`, a container *query*: a full ID, an
//! unambiguous ID prefix or a name (docker's rules, `runtime::container::Store::resolve`).
//!
//! ```text
//! create(root, CreateRequest) -> Result<ContainerConfig>     image resolved in the store,
//!                                     layer disks ensured, scratch disk made, config.json
//!                                     and state.json (Status "created") written
//! start(root, q) -> Result<String /*id*/>     spawns the detached shim (`husk shim --root R
//!                                     ID`), returns once the workload runs, or
//!                                     `ShimError::NotStarted` (125/126/127 and why); a
//!                                     running container is left alone (Ok)
//! start_for_attach(root, q)            the same for an attached client: returns once the
//!                                     shim serves shim.sock; the workload waits for attach
//! attach(root, q, AttachOptions{stdin}) -> Result<Attached>
//!     Attached::stdin() -> AttachStdin (io::Write; drop/close = EOF)
//!     Attached::pump(&mut out, &mut err) -> Result<Option<i32>>   Some(code) when the
//!                                     workload exits, None if the shim went away
//! resize(root, q, rows, cols)          the main process's tty size
//! kill(root, q, signal)                signal to the workload; SIGTERM and SIGKILL end the
//!                                     restarts (docker's ExitOnNext), other signals do not
//! stop(root, q, timeout)               SIGTERM, SIGKILL after `timeout`; disables restarts
//! restart(root, q, timeout)            stop (if running) then start
//! wait(root, q) -> Result<i32>         blocks until the container is no longer running and
//!                                     will not restart; its exit code
//! remove(root, q, force) -> Result<String /*id*/>   refuses a running container unless
//!                                     `force` (then kills it first)
//! list(root, all) -> Result<Vec<Summary>>   newest first; `all == false`: running only
//! inspect_json(root, q) -> Result<serde_json::Value>   docker-shaped
//! logs(root, q, &LogOptions{follow, tail, timestamps}, &mut out, &mut err) -> Result<()>
//! agent_endpoint(root, q) -> Result<Endpoint>   where `husk exec` reaches the running
//!                                     container's agent (a new connection; processes it
//!                                     starts run in the container's rootfs)
//! ```
//!
//! Foreground `husk run` = `create` (with `RunConfig.attach_stdout = true`) + `start_for_attach` +
//! `attach` + `pump`: the shim waits (up to 10 s) for the first attach before it starts the
//! workload, so no output is lost. `--rm` is `HostConfig.auto_remove`: the shim removes the
//! container when it has finished. Every error is one line (`LifecycleError`'s Display plus
//! `agent_proto::error_chain` for the causes).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rootfs::digest::Digest;

use crate::agent_client::Endpoint;
use crate::container::{
    self, ContainerConfig, ContainerError, ContainerState, HostConfig, Isolation, Lock, RunConfig,
    Status, Store,
};
use crate::logs::{self, LogOptions};
use crate::shim::client::{Attached, ShimClient};
use crate::shim::{self, ShimError};

pub use crate::shim::client::AttachStdin;

/// The lock `create` and `rmi` share (a file in `<root>/containers`, not a container).
const IMAGES_LOCK: &str = "images.lock";

/// Default writable-layer size (sparse: only what the container writes takes space).
pub const DEFAULT_SCRATCH_BYTES: u64 = 1 << 30;

/// Errors from the container verbs.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// State directory trouble (resolution, config, state, locking).
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The image is not in the store.
    #[error("cannot resolve image {0}")]
    Image(String, #[source] rootfs::store::StoreError),
    /// Layer disks could not be built.
    #[error("cannot prepare the image's layer disks")]
    Layers(#[source] rootfs::layer::LayerError),
    /// The scratch disk could not be made.
    #[error("cannot create the container's writable layer")]
    Scratch(#[source] rootfs::layer::DiskError),
    /// vm isolation asked for on a host without a usable KVM.
    #[error("vm isolation needs a usable KVM ({0}); use --isolation process")]
    VmUnavailable(String),
    /// The shim could not be started or reached.
    #[error(transparent)]
    Shim(#[from] ShimError),
    /// Removing a running container without force.
    #[error(
        "cannot remove container {0}: the container is running, stop it first or use force (-f)"
    )]
    Running(String),
    /// The container is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container is paused (docker refuses `exec` then).
    #[error("Container {0} is paused, unpause the container before exec")]
    Paused(String),
    /// Logs could not be read.
    #[error("cannot read the logs")]
    Logs(#[source] std::io::Error),
    /// The network `--network` names does not exist (or cannot be read).
    #[error(transparent)]
    Network(#[from] crate::network::defs::DefError),
    /// The running container's agent could not be reached.
    #[error("cannot reach the container's agent")]
    Agent(#[source] crate::agent_client::ClientError),
    /// A volume or bind mount could not be set up.
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    /// The mounts of `--volumes-from` could not be read.
    #[error(transparent)]
    Volumes(#[from] crate::volverbs::Error),
}

/// What `create` needs; `runtime::spec::build` fills it from the image and the flags.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// `--name`; a docker-like random name when `None`.
    pub name: Option<String>,
    /// The image as typed (resolved in the store).
    pub image: String,
    /// What to run (image config already merged with the flags). `Config.Env` as docker
    /// keeps it; the shim adds PATH/HOSTNAME/TERM (`spec::process_env`).
    pub config: RunConfig,
    /// Resources, restart policy, isolation (resolved), auto-remove.
    pub host: HostConfig,
    /// `-v` and `--mount` volumes and binds, resolved into `host.mounts` at creation.
    pub mounts: Vec<crate::volumes::MountRequest>,
    /// `--volumes-from` containers with their forced mode (`Some(true)`: `:ro`).
    pub volumes_from: Vec<(String, Option<bool>)>,
}

/// Options of [`attach`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// Forward stdin (the container must have `open_stdin`).
    pub stdin: bool,
}

/// One row of [`list`].
#[derive(Debug, Clone)]
pub struct Summary {
    /// config.json.
    pub config: ContainerConfig,
    /// state.json.
    pub state: ContainerState,
    /// Its network settings while it runs, one per network (`eth0`'s first).
    pub networks: Vec<crate::network::Settings>,
}

/// Creates a container (does not start it). `req.host.isolation` must already be resolved
/// (`auto` -> vm or process, see `spec::IsolationChoice`); vm is refused here where there is
/// no usable KVM.
pub fn create(root: &Path, mut req: CreateRequest) -> Result<ContainerConfig, LifecycleError> {
    if req.host.isolation == Isolation::Vm {
        check_vm_possible(Path::new("/dev/kvm"))?;
    }
    if let crate::network::Mode::User(query) = &req.host.network_mode {
        // Kept by name, as docker does (an ID prefix becomes the name).
        let net = crate::network::defs::find(root, query)?;
        req.host.network_mode = crate::network::Mode::of(&net);
    }
    crate::timing::mark("create.start");
    let store = Store::open(root)?;
    // Held until config.json names the image, so a concurrent `rmi` sees this container.
    let _images = images_lock(&store)?;
    let image_err = |e| LifecycleError::Image(req.image.clone(), e);
    let images = rootfs::store::Store::open(root).map_err(image_err)?;
    let image = images.resolve(&req.image).map_err(image_err)?;
    let disks =
        rootfs::layer::ensure_layer_disks(root, &images, &image).map_err(LifecycleError::Layers)?;
    let layers = disks.into_iter().map(|d| d.path).collect();
    let image_id = image.id.to_string();
    // Held until config.json names the volumes, so a concurrent `volume rm` sees them.
    let volumes = crate::volumes::VolumeStore::open(root)?;
    let volumes_lock = volumes.lock()?;
    let borrowed = crate::volverbs::borrowed(root, &req.volumes_from)?;
    let image_volumes: Vec<String> = req.config.volumes.keys().cloned().collect();
    let (mounts, made) = crate::volumes::resolve(&volumes, &req.mounts, borrowed, &image_volumes)?;
    req.host.mounts = mounts;
    let config = match store.create(req.name.as_deref(), |id, name| {
        ContainerConfig::new(
            id, name, &image_id, &req.image, req.config, req.host, layers,
        )
    }) {
        Ok(c) => c,
        Err(e) => {
            crate::volumes::undo(&volumes, &made);
            return Err(e.into());
        }
    };
    drop(volumes_lock);
    let scratch = crate::container::ContainerDir::new(store.dir(&config.id)).scratch();
    if let Err(e) = rootfs::layer::create_scratch_from_template(
        &rootfs::layer::layers_dir(root),
        &scratch,
        DEFAULT_SCRATCH_BYTES,
    ) {
        let _ = store.remove_dir(&config.id);
        crate::volverbs::release_anonymous(root, &config);
        return Err(LifecycleError::Scratch(e));
    }
    crate::timing::mark("create.done");
    store.event("create", &config, &[]);
    Ok(config)
}

/// What containers hold on to: `rmi` and `image prune` keep these.
#[derive(Debug, Default)]
pub struct InUse {
    /// Image IDs of every container.
    pub images: HashSet<Digest>,
    /// Image IDs of running containers (`rmi -f` refuses these, as docker does).
    pub running: HashSet<Digest>,
    /// Layer disks that containers mount (kept even when their image is force-removed).
    pub disks: HashSet<PathBuf>,
}

/// The images and layer disks containers use, with a lock that keeps `husk run` from
/// creating a container on an image while it is held (take it around `rmi`/`prune`).
pub fn images_in_use(root: &Path) -> Result<(Lock, InUse), LifecycleError> {
    let store = Store::open(root)?;
    let lock = images_lock(&store)?;
    let mut in_use = InUse::default();
    for id in store.ids()? {
        let Ok(config) = store.config(&id) else {
            continue;
        };
        let running = store.state(&id).is_ok_and(|s| s.running());
        if let Ok(image) = Digest::parse(&config.image) {
            if running {
                in_use.running.insert(image.clone());
            }
            in_use.images.insert(image);
        }
        in_use.disks.extend(config.layers);
    }
    Ok((lock, in_use))
}

fn images_lock(store: &Store) -> Result<Lock, LifecycleError> {
    Ok(Lock::take(&store.dir(IMAGES_LOCK))?)
}

/// Refuses vm isolation where there is no usable KVM (on an emulating KVM guests run,
/// slowly, so vm stays available there).
pub fn check_vm_possible(kvm_device: &Path) -> Result<(), LifecycleError> {
    let kvm = crate::info::kvm_info(kvm_device);
    if kvm.can_run_linux_guests {
        return Ok(());
    }
    Err(LifecycleError::VmUnavailable(
        kvm.error.unwrap_or_else(|| "unknown KVM".to_owned()),
    ))
}

/// Starts a created or exited container's shim; returns once its workload runs (or with
/// `ShimError::NotStarted` and the code when it could not), as `docker start` does.
pub fn start(root: &Path, query: &str) -> Result<String, LifecycleError> {
    start_shim(root, query, false)
}

/// Like [`start`], but the shim holds the workload back (up to 10 s) until a client
/// attaches, so that an attached `run` or `start -a` sees every byte of output.
pub fn start_for_attach(root: &Path, query: &str) -> Result<String, LifecycleError> {
    start_shim(root, query, true)
}

fn start_shim(root: &Path, query: &str, wait_attach: bool) -> Result<String, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    // Not under the lock: the shim takes it to record itself (and refuses to run twice).
    if store.state(&id)?.running() {
        return Ok(id);
    }
    let config = store.config(&id)?;
    if config.host_config.isolation == Isolation::Vm {
        check_vm_possible(Path::new("/dev/kvm"))?;
    }
    store.update_state(&id, |s| s.manually_stopped = false)?;
    match shim::spawn(root, &id, wait_attach) {
        // Another `start` won the race: the container runs, as asked.
        Err(shim::ShimError::Failed(m)) if m.starts_with(shim::ALREADY_RUNNING) => Ok(id),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(id),
    }
}

/// Attaches to a running container's main process.
pub fn attach(root: &Path, query: &str, opts: AttachOptions) -> Result<Attached, LifecycleError> {
    Ok(shim_client(root, query)?.attach(opts.stdin)?)
}

/// Sets the main process's terminal size.
pub fn resize(root: &Path, query: &str, rows: u16, cols: u16) -> Result<(), LifecycleError> {
    Ok(shim_client(root, query)?.resize(rows, cols)?)
}

/// Sends `signal` to the workload.
pub fn kill(root: &Path, query: &str, signal: i32) -> Result<(), LifecycleError> {
    shim_client(root, query)?.kill(signal)?;
    let store = Store::open(root)?;
    store.event_for(
        "kill",
        &store.resolve(query)?,
        &[("signal", signal.to_string())],
    );
    Ok(())
}

/// How `stop` and `restart` stop: docker's `-s` and `-t`; what is not given comes from the
/// container (`--stop-signal` or the image's `StopSignal`, `--stop-timeout`), else SIGTERM
/// and 10 seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopOptions {
    /// The grace period.
    pub timeout: Option<Duration>,
    /// The first signal.
    pub signal: Option<i32>,
}

/// docker's default grace period.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Stops the container: its stop signal, then SIGKILL after the grace period. Not running
/// is fine.
pub fn stop(root: &Path, query: &str, opts: StopOptions) -> Result<(), LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let c = store.config(&id)?.config;
    let timeout = opts.timeout.unwrap_or_else(|| {
        c.stop_timeout
            .and_then(|t| u64::try_from(t).ok())
            .map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs)
    });
    let signal = opts
        .signal
        .or_else(|| crate::signal::parse(&c.stop_signal).ok())
        .unwrap_or(libc::SIGTERM);
    // Recorded first: a daemon starting while the stop runs must not bring it back.
    store.update_state(&id, |s| s.manually_stopped = true)?;
    match shim_client(root, &id) {
        Ok(c) => {
            c.stop(timeout, signal)?;
            store.event_for("stop", &id, &[]);
            Ok(())
        }
        Err(LifecycleError::NotRunning(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// docker's `pause` (`true`) and `unpause`: the whole sandbox stops (the VMM process under
/// vm isolation, the cgroup's freezer under process isolation) or resumes.
pub fn pause(root: &Path, query: &str, paused: bool) -> Result<(), LifecycleError> {
    shim_client(root, query)?.pause(paused)?;
    let store = Store::open(root)?;
    let action = if paused { "pause" } else { "unpause" };
    store.event_for(action, &store.resolve(query)?, &[]);
    Ok(())
}

/// Bytes the container's directory takes on disk (its scratch disk is sparse: allocated
/// blocks count, not the apparent size); 0 if it cannot be read.
pub fn disk_usage(root: &Path, id: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(store) = Store::open(root) else {
        return 0;
    };
    std::fs::read_dir(store.dir(id))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// The ports container `query` publishes while it runs (none while it does not).
pub fn ports(
    root: &Path,
    query: &str,
) -> Result<(String, Vec<crate::network::ports::PortBinding>), LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let ports = crate::network::settings(&store.dir(&id))
        .into_iter()
        .flat_map(|s| s.ports)
        .collect();
    Ok((id, ports))
}

/// Renames a container (running or not).
pub fn rename(root: &Path, query: &str, name: &str) -> Result<(), LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let old = store.config(&id)?.name;
    store.rename(&id, name)?;
    store.event_for("rename", &id, &[("oldName", format!("/{old}"))]);
    Ok(())
}

/// Stops (if running) and starts again.
pub fn restart(root: &Path, query: &str, opts: StopOptions) -> Result<String, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let pid = shim_pid(&store, &id);
    stop(root, &id, opts)?;
    wait_pid_gone(pid);
    let started = start(root, &id)?;
    store.event_for("restart", &id, &[]);
    Ok(started)
}

/// Waits until the container has stopped for good; its exit code.
pub fn wait(root: &Path, query: &str) -> Result<i32, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    if let Ok(code) = ShimClient::connect(&store.dir(&id)).and_then(|c| c.wait()) {
        return Ok(code);
    }
    wait_shim_gone(&store, &id);
    match store.state(&id) {
        Ok(s) => Ok(s.observed().exit_code),
        // Removed by --rm after it finished.
        Err(ContainerError::NoSuchContainer(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Removes a container (killing it first with `force`).
pub fn remove(root: &Path, query: &str, force: bool) -> Result<String, LifecycleError> {
    remove_with(root, query, force, false)
}

/// Removes a container (killing it first with `force`) and, with `volumes` (docker's
/// `rm -v`), its anonymous volumes that no other container uses.
pub fn remove_with(
    root: &Path,
    query: &str,
    force: bool,
    volumes: bool,
) -> Result<String, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    if let Ok(client) = ShimClient::connect(&store.dir(&id)) {
        if !force {
            return Err(LifecycleError::Running(query.to_owned()));
        }
        let pid = shim_pid(&store, &id);
        let _ = client.remove();
        wait_pid_gone(pid);
    }
    let _lock = store.lock(&id)?;
    let state = store.state(&id)?;
    if state.shim_alive() {
        return Err(LifecycleError::Running(query.to_owned()));
    }
    // A shim killed from outside could not clean up its sandbox's cgroup or network.
    crate::sandbox::cgroup::remove_leftovers(&id);
    crate::network::remove_leftovers(root, &store.dir(&id), &id);
    let config = store.config(&id).ok();
    store.remove_dir(&id)?;
    if let Some(c) = config {
        if volumes {
            crate::volverbs::release_anonymous(root, &c);
        }
        store.event("destroy", &c, &[]);
    }
    Ok(id)
}

/// Every container (`all`) or the running ones, newest first.
pub fn list(root: &Path, all: bool) -> Result<Vec<Summary>, LifecycleError> {
    let store = Store::open(root)?;
    let mut rows = Vec::new();
    for id in store.ids()? {
        let (Ok(config), Ok(state)) = (store.config(&id), store.state(&id)) else {
            continue;
        };
        if all || state.running() {
            let networks = match state.running() {
                true => crate::network::settings(&store.dir(&id)),
                false => Vec::new(),
            };
            rows.push(Summary {
                config,
                state,
                networks,
            });
        }
    }
    rows.sort_by(|a, b| b.config.created.cmp(&a.config.created));
    Ok(rows)
}

/// A container's configuration.
pub fn container_config(root: &Path, query: &str) -> Result<ContainerConfig, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    Ok(store.config(&id)?)
}

/// A container's state as it is (see `ContainerState::observed`).
pub fn container_state(root: &Path, query: &str) -> Result<ContainerState, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    Ok(store.state(&id)?.observed())
}

/// Docker-shaped `inspect` output.
pub fn inspect_json(root: &Path, query: &str) -> Result<serde_json::Value, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let config = store.config(&id)?;
    let state = store.state(&id)?;
    Ok(container::inspect(&config, &state, &store.dir(&id)))
}

/// Copies the container's log to `out`/`err`.
pub fn logs(
    root: &Path,
    query: &str,
    opts: &LogOptions,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let dir = store.dir(&id);
    let still_running = || ShimClient::connect(&dir).is_ok();
    logs::read(
        &dir.join(crate::container::files::LOG),
        opts,
        out,
        err,
        &still_running,
    )
    .map_err(LifecycleError::Logs)
}

/// Where a running container's agent listens (for `exec`).
pub fn agent_endpoint(root: &Path, query: &str) -> Result<Endpoint, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let state = store.state(&id)?;
    if state.status != Status::Running {
        return Err(LifecycleError::NotRunning(query.to_owned()));
    }
    if state.paused {
        return Err(LifecycleError::Paused(query.to_owned()));
    }
    let dir = store.dir(&id);
    Ok(match state.isolation {
        Isolation::Vm => Endpoint::Vsock {
            uds: dir.join(crate::container::files::VSOCK_SOCKET),
            port: agent_proto::CONTROL_PORT,
        },
        _ => Endpoint::Unix(dir.join(crate::container::files::AGENT_SOCKET)),
    })
}

/// A connection to a running container's agent (for `exec` and the agent's tools), its
/// requests bounded as the sandbox's own are (a VM's guest may be slow to fork).
pub fn agent_client(
    root: &Path,
    query: &str,
) -> Result<crate::agent_client::AgentClient, LifecycleError> {
    let endpoint = agent_endpoint(root, query)?;
    let store = Store::open(root)?;
    let isolation = store.state(&store.resolve(query)?)?.isolation;
    let client =
        crate::agent_client::AgentClient::connect(&endpoint, crate::agent_client::DEFAULT_TIMEOUT)
            .map_err(LifecycleError::Agent)?;
    Ok(client.with_request_timeout(crate::sandbox::request_timeout(isolation)))
}

fn shim_client(root: &Path, query: &str) -> Result<ShimClient, LifecycleError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    ShimClient::connect(&store.dir(&id)).map_err(|_| LifecycleError::NotRunning(query.to_owned()))
}

/// Waits (bounded) until the container's shim has exited.
/// Waits (up to 30 s) until the container's shim process has exited. The shim clears its
/// pid in `state.json` just before it exits, so the pid is taken once, first: callers that
/// are about to make the shim exit read it before they ask ([`shim_pid`]).
fn wait_shim_gone(store: &Store, id: &str) {
    wait_pid_gone(shim_pid(store, id));
}

/// The container's shim pid as recorded (0: none).
fn shim_pid(store: &Store, id: &str) -> i32 {
    store.state(id).map_or(0, |s| s.shim_pid)
}

fn wait_pid_gone(pid: i32) {
    for _ in 0..600 {
        if pid <= 0 || !crate::procfs::alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
