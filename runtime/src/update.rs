//! docker's `update`: a container's memory and CPU limits and its restart policy, kept in
//! its config (a stopped container gets them at its next start). A running container under
//! process isolation gets new limits at once (its cgroup); a running VM cannot (its RAM and
//! vCPUs are fixed at boot), so resources are refused for it, while the restart policy,
//! which the shim reads at each exit, applies to any running container.

use std::path::Path;

use crate::container::{ContainerError, Isolation, RestartPolicy, Store};
use crate::spec::{self, SpecError};

/// What to change (`None`: leave it).
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    /// `--memory`.
    pub memory: Option<String>,
    /// `--cpus`.
    pub cpus: Option<String>,
    /// `--restart`.
    pub restart: Option<String>,
}

/// Errors from `update` (docker's messages where docker has one).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The container could not be found or written.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A value is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Nothing to change.
    #[error("you must provide one or more flags when using this command")]
    NoFlags,
    /// A bad restart policy.
    #[error("{0}")]
    Restart(String),
    /// A restart policy for an auto-removed container.
    #[error("Restart policy cannot be updated because AutoRemove is enabled for the container")]
    AutoRemove,
    /// Resources of a running VM.
    #[error(
        "cannot update the memory or CPUs of running container {0}: a microVM's RAM and vCPUs are fixed at boot (stop it, update, start it)"
    )]
    RunningVm(String),
    /// The cgroup refused the new limits.
    #[error("cannot apply the new limits")]
    Cgroup(#[from] crate::sandbox::cgroup::CgroupError),
}

/// Applies `req` to container `query`.
pub fn update(root: &Path, query: &str, req: &UpdateRequest) -> Result<(), UpdateError> {
    if req.memory.is_none() && req.cpus.is_none() && req.restart.is_none() {
        return Err(UpdateError::NoFlags);
    }
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let config = store.config(&id)?;
    let memory = req.memory.as_deref().map(spec::parse_memory).transpose()?;
    let host_cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let cpus = req
        .cpus
        .as_deref()
        .map(|c| spec::parse_cpus(c, host_cpus))
        .transpose()?;
    let restart = req
        .restart
        .as_deref()
        .map(|r| RestartPolicy::parse(r).map_err(|e| UpdateError::Restart(e.to_string())))
        .transpose()?;
    if restart
        .as_ref()
        .is_some_and(|r| r.name != crate::container::RestartName::No)
        && config.host_config.auto_remove
    {
        return Err(UpdateError::AutoRemove);
    }
    let running = store.state(&id)?.observed().running();
    if running && (memory.is_some() || cpus.is_some()) {
        match config.host_config.isolation {
            Isolation::Vm => return Err(UpdateError::RunningVm(query.to_owned())),
            Isolation::Process => crate::sandbox::cgroup::update(
                &id,
                memory.map(|m| u64::try_from(m).unwrap_or(0)),
                cpus.map(|c| u64::try_from(c).unwrap_or(0)),
            )?,
        }
    }
    let config = store.update_config(&id, |c| {
        if let Some(m) = memory {
            c.host_config.memory = m;
        }
        if let Some(n) = cpus {
            c.host_config.nano_cpus = n;
        }
        if let Some(r) = restart {
            c.host_config.restart_policy = r;
        }
    })?;
    store.event("update", &config, &[]);
    Ok(())
}
