//! The transport-neutral engine: one handle ([`Engine`]) owning the state root and the host
//! settings, one method per verb, taking docker's typed models ([`models`]) and answering
//! with husk's records. The Engine-API daemon (`api` crate) is a thin front end over it;
//! errors say what kind of failure they are ([`ErrorKind`]) so that a front end maps them
//! to its own codes (HTTP status, exit code) without reading messages.

pub mod images;
pub mod models;
mod objects;
pub mod summary;
pub mod supervise;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::container::{ContainerConfig, ContainerError, Isolation};
use crate::lifecycle::{self, LifecycleError, StopOptions, Summary};
use crate::shim::ShimError;
use crate::shim::client::Attached;
use crate::spec::{IsolationChoice, SpecError};

pub use wait::WaitCondition;

/// What kind of failure an [`EngineError`] is (docker's HTTP statuses follow from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (400).
    BadRequest,
    /// A container, image or network does not exist (404).
    NotFound,
    /// The object's state forbids the verb, or a name is taken (409).
    Conflict,
    /// husk failed (500).
    Internal,
}

/// Errors of the engine's verbs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A container verb failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The create body asks for something husk refuses.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The image is not in the store.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// The image store could not be read.
    #[error("cannot read the image store")]
    Images(#[source] rootfs::store::StoreError),
    /// The host's default isolation could not be read.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// A signal name or number that is none.
    #[error(transparent)]
    Signal(#[from] crate::signal::SignalError),
    /// A copy in or out of a container failed.
    #[error(transparent)]
    Files(#[from] crate::files::FilesError),
    /// `top` failed.
    #[error(transparent)]
    Top(#[from] crate::tools::TopError),
    /// The event log could not be read.
    #[error("cannot read the event log")]
    Events(#[source] std::io::Error),
    /// A network verb failed.
    #[error(transparent)]
    Network(#[from] crate::netverbs::NetVerbError),
    /// A volume verb failed.
    #[error(transparent)]
    Volume(#[from] crate::volverbs::Error),
    /// The container's agent failed the request.
    #[error("the container's agent failed")]
    Agent(#[source] crate::agent_client::ClientError),
    /// An image verb (pull, remove, tag) failed.
    #[error(transparent)]
    Pull(images::ImageError),
    /// The container did not come up for an attach in time.
    #[error("container {0} did not start within {1:?} of the attach")]
    AttachTimeout(String, Duration),
}

impl From<ContainerError> for EngineError {
    fn from(e: ContainerError) -> Self {
        Self::Lifecycle(e.into())
    }
}

impl EngineError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Lifecycle(e) => lifecycle_kind(e),
            Self::Network(e) => objects::netverb_kind(e),
            Self::Top(crate::tools::TopError::Lifecycle(e)) => lifecycle_kind(e),
            Self::Top(_) | Self::Events(_) => ErrorKind::Internal,
            Self::Files(e) => files_kind(e),
            Self::Volume(e) => objects::volume_kind(e),
            Self::Spec(_) | Self::Signal(_) => ErrorKind::BadRequest,
            Self::NoSuchImage(_) => ErrorKind::NotFound,
            Self::AttachTimeout(..) => ErrorKind::Conflict,
            Self::Pull(e) => images::kind(e),
            Self::Agent(_) | Self::Images(_) | Self::Settings(_) => ErrorKind::Internal,
        }
    }
}

fn files_kind(e: &crate::files::FilesError) -> ErrorKind {
    use crate::files::FilesError as F;
    match e {
        F::NotFound { .. } => ErrorKind::NotFound,
        F::Container(ContainerError::NoSuchContainer(_)) => ErrorKind::NotFound,
        F::Lifecycle(e) => lifecycle_kind(e),
        F::Paused(_) => ErrorKind::Conflict,
        F::Copy(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

fn lifecycle_kind(e: &LifecycleError) -> ErrorKind {
    use ContainerError as C;
    match e {
        LifecycleError::Container(C::NoSuchContainer(_)) => ErrorKind::NotFound,
        LifecycleError::Container(C::NameInUse(..) | C::SameName) => ErrorKind::Conflict,
        LifecycleError::Container(C::Ambiguous(_) | C::BadName(_) | C::BadRestartPolicy(_)) => {
            ErrorKind::BadRequest
        }
        LifecycleError::Image(_, rootfs::store::StoreError::NoSuchImage(_)) => ErrorKind::NotFound,
        LifecycleError::Network(_) => ErrorKind::NotFound,
        LifecycleError::Running(_) | LifecycleError::NotRunning(_) | LifecycleError::Paused(_) => {
            ErrorKind::Conflict
        }
        LifecycleError::Volume(_) | LifecycleError::Volumes(_) => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    }
}

/// The engine: everything a front end needs, bound to one state directory.
#[derive(Debug, Clone)]
pub struct Engine {
    root: PathBuf,
    kvm_device: PathBuf,
}

impl Engine {
    /// The engine over state directory `root`, using the host's `/dev/kvm`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            kvm_device: PathBuf::from("/dev/kvm"),
        }
    }

    /// The same engine using another KVM device (tests, `--kvm-device`).
    pub fn with_kvm_device(mut self, device: &Path) -> Self {
        self.kvm_device = device.to_owned();
        self
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a container from docker's create body (`name`: `?name=`). The image must
    /// be in the store ([`EngineError::NoSuchImage`] otherwise: clients pull then retry).
    pub fn create(
        &self,
        name: Option<String>,
        body: &models::CreateBody,
    ) -> Result<ContainerConfig, EngineError> {
        let image = self.image_for_create(&body.image)?;
        let isolation = self.isolation(body.isolation())?;
        let flags = body.flags(name, isolation);
        // The client resolved `-e KEY` against its own environment already.
        self.create_from_flags(&image, &body.image, &flags, &|_| None)
    }

    /// Creates a container on `image` (asked for as `image_name`) from run flags, the one
    /// path of every front end's create: the daemon's body and the CLI's flags both come
    /// here. `host_env` answers `-e KEY` (the caller's environment, or none).
    pub fn create_from_flags(
        &self,
        image: &rootfs::store::ImageRecord,
        image_name: &str,
        flags: &crate::spec::RunFlags,
        host_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ContainerConfig, EngineError> {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let req = crate::spec::build(image, image_name, flags, host_env, cpus)?;
        Ok(lifecycle::create(&self.root, req)?)
    }

    fn image_for_create(&self, name: &str) -> Result<rootfs::store::ImageRecord, EngineError> {
        let images = rootfs::store::Store::open(&self.root).map_err(EngineError::Images)?;
        match images.resolve(name) {
            Ok(image) => Ok(image),
            Err(rootfs::store::StoreError::NoSuchImage(_)) => {
                Err(EngineError::NoSuchImage(with_latest(name)))
            }
            Err(e) => Err(EngineError::Images(e)),
        }
    }

    /// The isolation for `asked` (`--isolation`, the body's `HostConfig.Isolation`), else
    /// the host's default (`HUSK_ISOLATION`, `daemon.json`); vm is refused where KVM is not
    /// usable, never replaced by process.
    pub fn isolation(&self, asked: Option<&str>) -> Result<Isolation, EngineError> {
        Ok(self.pick_isolation(asked)?.0)
    }

    /// [`Engine::isolation`], and for `auto` why it picked what it did (for the user).
    pub fn pick_isolation(
        &self,
        asked: Option<&str>,
    ) -> Result<(Isolation, Option<String>), EngineError> {
        let choice: IsolationChoice = match asked {
            Some(a) => a.parse()?,
            None => crate::settings::default_isolation(
                &self.root,
                std::env::var(crate::settings::ISOLATION_ENV).ok(),
            )?
            .parse()?,
        };
        if choice == IsolationChoice::Vm {
            lifecycle::check_vm_possible(&self.kvm_device)?;
        }
        if choice != IsolationChoice::Auto {
            return Ok((choice.resolve(false), None));
        }
        let kvm = crate::info::kvm_info(&self.kvm_device);
        let picked = choice.resolve(kvm.can_run_linux_guests);
        let why = match (kvm.guests, kvm.error) {
            (crate::info::Guests::Hardware, _) => "this host's KVM runs guests natively".to_owned(),
            (crate::info::Guests::Emulated, _) => format!(
                "this host's KVM ({}) runs guests with their kernel code emulated: expect seconds per start",
                kvm.module.unwrap_or_default()
            ),
            (crate::info::Guests::None, e) => {
                format!("KVM is unusable here: {}", e.unwrap_or_default())
            }
        };
        Ok((picked, Some(why)))
    }

    /// Starts a container; with `hold_for_attach` the workload waits (up to 10 s) for the
    /// first attach, so that an attached client sees every byte.
    pub fn start(&self, query: &str, hold_for_attach: bool) -> Result<String, EngineError> {
        Ok(match hold_for_attach {
            true => lifecycle::start_for_attach(&self.root, query)?,
            false => lifecycle::start(&self.root, query)?,
        })
    }

    /// Whether the container runs now.
    pub fn running(&self, query: &str) -> Result<bool, EngineError> {
        Ok(lifecycle::container_state(&self.root, query)?.running())
    }

    /// Attaches to the container's main process, waiting up to `within` for it to be
    /// started (docker's clients attach before they start).
    pub fn attach(
        &self,
        query: &str,
        stdin: bool,
        within: Duration,
    ) -> Result<Attached, EngineError> {
        let deadline = std::time::Instant::now() + within;
        let started = std::time::Instant::now();
        loop {
            match lifecycle::attach(&self.root, query, lifecycle::AttachOptions { stdin }) {
                Ok(a) => return Ok(a),
                Err(e @ LifecycleError::NotRunning(_)) if within.is_zero() => return Err(e.into()),
                Err(LifecycleError::NotRunning(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(wait::poll_interval(started));
                }
                Err(LifecycleError::NotRunning(q)) => {
                    return Err(EngineError::AttachTimeout(q, within));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sets the main process's terminal size.
    pub fn resize(&self, query: &str, rows: u16, cols: u16) -> Result<(), EngineError> {
        Ok(lifecycle::resize(&self.root, query, rows, cols)?)
    }

    /// Waits for the container as `condition` says; its exit code.
    pub fn wait(&self, query: &str, condition: WaitCondition) -> Result<i32, EngineError> {
        let code = wait::wait(&self.root, query, condition, &|| true)?;
        Ok(code.unwrap_or_default())
    }

    /// [`Engine::wait`] for as long as `wanted` says someone waits (checked about every
    /// second); `None` when nobody does any more.
    pub fn wait_while(
        &self,
        query: &str,
        condition: WaitCondition,
        wanted: &dyn Fn() -> bool,
    ) -> Result<Option<i32>, EngineError> {
        wait::wait(&self.root, query, condition, wanted)
    }

    /// Stops the container (`timeout`: grace period before SIGKILL; `signal`: the first).
    pub fn stop(
        &self,
        query: &str,
        timeout: Option<Duration>,
        signal: Option<&str>,
    ) -> Result<(), EngineError> {
        let opts = stop_options(timeout, signal)?;
        match lifecycle::stop(&self.root, query, opts) {
            Err(LifecycleError::NotRunning(_)) | Ok(()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops (if running) and starts the container again.
    pub fn restart(
        &self,
        query: &str,
        timeout: Option<Duration>,
        signal: Option<&str>,
    ) -> Result<String, EngineError> {
        Ok(lifecycle::restart(
            &self.root,
            query,
            stop_options(timeout, signal)?,
        )?)
    }

    /// Waits for the container's workload to end (at once if it is not running); its exit
    /// code (`husk wait`, and an attached run without an exit frame).
    pub fn wait_exit(&self, query: &str) -> Result<i32, EngineError> {
        Ok(lifecycle::wait(&self.root, query)?)
    }

    /// The container's state (as observed: a running state whose shim is gone says so).
    pub fn state(&self, query: &str) -> Result<crate::container::ContainerState, EngineError> {
        Ok(lifecycle::container_state(&self.root, query)?)
    }

    /// The bytes the container's own files take (its writable disk, its logs).
    pub fn disk_usage(&self, id: &str) -> u64 {
        lifecycle::disk_usage(&self.root, id)
    }

    /// The container's published ports (its ID, and one binding per host port).
    pub fn ports(
        &self,
        query: &str,
    ) -> Result<(String, Vec<crate::network::ports::PortBinding>), EngineError> {
        Ok(lifecycle::ports(&self.root, query)?)
    }

    /// Sends a signal (by name or number) to the workload.
    pub fn kill(&self, query: &str, signal: &str) -> Result<(), EngineError> {
        let signal = crate::signal::parse(signal)?;
        match lifecycle::kill(&self.root, query, signal) {
            Err(LifecycleError::Shim(ShimError::Io(_))) => {
                Err(LifecycleError::NotRunning(query.to_owned()).into())
            }
            r => Ok(r?),
        }
    }

    /// Pauses (`true`) or resumes the container.
    pub fn pause(&self, query: &str, paused: bool) -> Result<(), EngineError> {
        Ok(lifecycle::pause(&self.root, query, paused)?)
    }

    /// Renames the container.
    pub fn rename(&self, query: &str, name: &str) -> Result<(), EngineError> {
        Ok(lifecycle::rename(&self.root, query, name)?)
    }

    /// Removes the container (`force`: kill it first; `volumes`: its anonymous volumes too).
    pub fn remove(&self, query: &str, force: bool, volumes: bool) -> Result<String, EngineError> {
        Ok(lifecycle::remove_with(&self.root, query, force, volumes)?)
    }

    /// Every container (`all`) or the running ones, newest first.
    pub fn list(&self, all: bool) -> Result<Vec<Summary>, EngineError> {
        Ok(lifecycle::list(&self.root, all)?)
    }

    /// docker's `inspect` document of a container.
    pub fn inspect(&self, query: &str) -> Result<serde_json::Value, EngineError> {
        Ok(lifecycle::inspect_json(&self.root, query)?)
    }

    /// The container's configuration.
    pub fn config(&self, query: &str) -> Result<ContainerConfig, EngineError> {
        Ok(lifecycle::container_config(&self.root, query)?)
    }

    /// Copies the container's log to `out`/`err` (following it with `opts.follow`).
    pub fn logs(
        &self,
        query: &str,
        opts: &crate::logs::LogOptions,
        out: &mut dyn std::io::Write,
        err: &mut dyn std::io::Write,
    ) -> Result<(), EngineError> {
        Ok(lifecycle::logs(&self.root, query, opts, out, err)?)
    }

    /// Starts a process in the running container as `docker exec` does, its output to
    /// the sinks (with a terminal, all of it to `out`); `lookup` gives `-e KEY` (no value)
    /// the client's value, as docker's CLI does (the API's clients resolved it already).
    pub fn exec(
        &self,
        query: &str,
        flags: &crate::spec::ExecFlags,
        lookup: &dyn Fn(&str) -> Option<String>,
        out: crate::agent_client::Sink,
        err: crate::agent_client::Sink,
    ) -> Result<Exec, EngineError> {
        let container = lifecycle::container_config(&self.root, query)?;
        let spec = crate::spec::exec_process(&container, flags, lookup)?;
        let client = lifecycle::agent_client(&self.root, query)?;
        let process = client.start(&spec, out, err).map_err(EngineError::Agent)?;
        Ok(Exec {
            process,
            _client: client,
        })
    }

    /// One reading of what the running container uses (docker's `stats`); its name too.
    pub fn stats(&self, query: &str) -> Result<(String, crate::stats::Sample), EngineError> {
        let config = lifecycle::container_config(&self.root, query)?;
        let state = lifecycle::container_state(&self.root, query)?;
        if !state.running() {
            return Err(LifecycleError::NotRunning(query.to_owned()).into());
        }
        Ok((config.name.clone(), crate::stats::sample(&config, &state)))
    }

    /// docker's `top`: the container's processes as `ps -ef` shows them.
    pub fn top(&self, query: &str) -> Result<agent_proto::Top, EngineError> {
        Ok(crate::tools::top(&self.root, query)?)
    }

    /// Calls `show` for each event `q` selects (see `events::follow`), until `wanted`
    /// turns false or `show` returns false.
    pub fn events(
        &self,
        q: &crate::events::Query,
        wanted: &dyn Fn() -> bool,
        show: &mut dyn FnMut(&crate::events::Event) -> bool,
    ) -> Result<(), EngineError> {
        crate::events::follow_while(&self.root, q, wanted, show).map_err(EngineError::Events)
    }

    /// docker's `cp` out of a container: the tar of `path` to `out`, its root entry's stat
    /// to `report` (once, before the archive goes on; `None` for an archive without one).
    pub fn copy_out(
        &self,
        query: &str,
        path: &str,
        out: impl std::io::Write,
        report: impl FnMut(Option<crate::files::stat::PathStat>),
    ) -> Result<(), EngineError> {
        let mut tap = crate::files::stat::StatTap::new(out, report);
        crate::files::copy_from(
            &self.root,
            query,
            path,
            crate::files::CopyTarget::Stream(&mut tap),
            crate::files::CopyOptions::default(),
        )?;
        tap.finish()
            .map_err(|e| crate::files::FilesError::Local("write the archive".into(), e))?;
        Ok(())
    }

    /// docker's `cp` into a container: the tar `input` extracted as is into directory
    /// `dir` (which must exist).
    pub fn copy_in(
        &self,
        query: &str,
        dir: &str,
        input: &mut dyn std::io::Read,
    ) -> Result<(), EngineError> {
        crate::files::copy_to(
            &self.root,
            query,
            crate::files::CopySource::Stream(input),
            dir,
            crate::files::CopyOptions::default(),
        )?;
        Ok(())
    }

    /// Every image in the store.
    pub fn images(&self) -> Result<Vec<rootfs::store::ImageRecord>, EngineError> {
        let store = rootfs::store::Store::open(&self.root).map_err(EngineError::Images)?;
        store.list().map_err(EngineError::Images)
    }

    /// Pulls `reference` (plain HTTP only to loopback registries), reporting to
    /// `progress`.
    pub fn pull(
        &self,
        reference: &str,
        progress: &dyn rootfs::registry::Progress,
    ) -> Result<rootfs::registry::PullReport, EngineError> {
        let reference = rootfs::reference::Reference::parse(reference)
            .map_err(|e| EngineError::Pull(e.into()))?;
        images::pull(&self.root, &reference, Vec::new(), progress).map_err(EngineError::Pull)
    }

    /// Removes an image (`rmi`); what was untagged and deleted.
    pub fn image_remove(
        &self,
        query: &str,
        force: bool,
    ) -> Result<Vec<rootfs::store::RemoveEvent>, EngineError> {
        images::remove(&self.root, query, force).map_err(EngineError::Pull)
    }

    /// Removes dangling images (unused ones with `all`): what went, and the bytes freed.
    pub fn image_prune(
        &self,
        all: bool,
    ) -> Result<(Vec<rootfs::store::RemoveEvent>, u64), EngineError> {
        images::prune(&self.root, all).map_err(EngineError::Pull)
    }

    /// Writes images as one docker-archive tar (`save`).
    pub fn image_save(
        &self,
        queries: &[String],
        out: impl std::io::Write,
    ) -> Result<(), EngineError> {
        images::save(&self.root, queries, out).map_err(EngineError::Pull)
    }

    /// Loads a docker-archive or OCI-layout tar (`load`); the images.
    pub fn image_load(&self, path: &Path) -> Result<Vec<rootfs::store::ImageRecord>, EngineError> {
        images::load(&self.root, path).map_err(EngineError::Pull)
    }

    /// Tags an image.
    pub fn image_tag(&self, source: &str, target: &str) -> Result<(), EngineError> {
        images::tag(&self.root, source, target).map_err(EngineError::Pull)?;
        Ok(())
    }

    /// One image, by reference or ID.
    pub fn image(&self, query: &str) -> Result<rootfs::store::ImageRecord, EngineError> {
        let store = rootfs::store::Store::open(&self.root).map_err(EngineError::Images)?;
        match store.resolve(query) {
            Err(rootfs::store::StoreError::NoSuchImage(_)) => {
                Err(EngineError::NoSuchImage(query.to_owned()))
            }
            r => r.map_err(EngineError::Images),
        }
    }
}

fn stop_options(
    timeout: Option<Duration>,
    signal: Option<&str>,
) -> Result<StopOptions, EngineError> {
    Ok(StopOptions {
        timeout,
        signal: signal.map(crate::signal::parse).transpose()?,
    })
}

/// A process `exec` started, with the agent connection it lives on (closing that ends it).
#[derive(Debug)]
pub struct Exec {
    /// The process.
    pub process: crate::agent_client::Process,
    _client: crate::agent_client::AgentClient,
}

/// `busybox` -> `busybox:latest` (docker's "No such image" names the tag); names with a
/// tag or digest stay.
pub fn with_latest(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    match name.contains('@') || last.contains(':') {
        true => name.to_owned(),
        false => format!("{name}:latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_latest;

    #[test]
    fn latest_is_implied_like_docker() {
        assert_eq!(with_latest("busybox"), "busybox:latest");
        assert_eq!(with_latest("husk/busybox:1"), "husk/busybox:1");
        assert_eq!(with_latest("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(with_latest("x@sha256:ab"), "x@sha256:ab");
    }
}
