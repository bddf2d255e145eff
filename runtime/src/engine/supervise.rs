//! Restart policies owned by the daemon: when it starts (after a host reboot, or a restart
//! of the daemon itself) and then every second, it looks for containers its policy says
//! should run and that do not:
//!
//! - a *lost* container (its state says running or restarting, but its shim is gone: killed,
//!   even by SIGKILL, or the host went down) is started again under `always`,
//!   `unless-stopped` and `on-failure` (a lost exit counts as a failure, within the retry
//!   bound), as the shim itself would have restarted its workload;
//! - when the daemon starts, an exited `always` container is started too, and an exited
//!   `unless-stopped` one unless a user stopped it (docker's rules).
//!
//! Live containers are their shims' business (the shim applies the policy to each exit of
//! its workload); the daemon only steps in where no shim is left.

use crate::container::{ContainerState, RestartPolicy, Status, Store};
use crate::lifecycle;

use super::{Engine, EngineError};

/// Why the daemon starts a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revival {
    /// Its shim died.
    Lost,
    /// The daemon started and the policy wants it running.
    AtBoot,
}

/// One container the daemon tried to start: its ID, why, and how it went.
pub type Revived = (String, Revival, Result<(), EngineError>);

/// Whether (and why) the policy wants a container in `state` started now.
pub fn revival(policy: &RestartPolicy, state: &ContainerState, at_boot: bool) -> Option<Revival> {
    let lost = state.status.is_live() && !state.shim_alive();
    let exited = state.status == Status::Exited && !state.shim_alive();
    let within = |max: u32| max == 0 || state.restart_count < max;
    use crate::container::RestartName as R;
    match (policy.name, lost, exited && at_boot) {
        (R::Always, true, _) => Some(Revival::Lost),
        (R::Always, false, true) => Some(Revival::AtBoot),
        (R::UnlessStopped, true, _) if !state.manually_stopped => Some(Revival::Lost),
        (R::UnlessStopped, false, true) if !state.manually_stopped => Some(Revival::AtBoot),
        (R::OnFailure, true, _) if within(policy.maximum_retry_count) => Some(Revival::Lost),
        _ => None,
    }
}

impl Engine {
    /// One pass over every container (`at_boot`: the daemon's first); the containers it
    /// started, with why, and those it could not start.
    pub fn supervise(&self, at_boot: bool) -> Result<Vec<Revived>, EngineError> {
        let store = Store::open(&self.root)?;
        let mut due = Vec::new();
        for id in store.ids()? {
            let (Ok(config), Ok(state)) = (store.config(&id), store.state(&id)) else {
                continue;
            };
            if let Some(why) = revival(&config.host_config.restart_policy, &state, at_boot) {
                due.push((id, why));
            }
        }
        // Side by side: a microVM's start is seconds of guest work, and a host coming back
        // up may have many containers to bring back.
        let store = &store;
        Ok(std::thread::scope(|s| {
            let started: Vec<_> = due
                .into_iter()
                .map(|(id, why)| {
                    s.spawn(move || {
                        let result = self.revive(store, &id, why);
                        (id, why, result)
                    })
                })
                .collect();
            started.into_iter().filter_map(|t| t.join().ok()).collect()
        }))
    }

    fn revive(&self, store: &Store, id: &str, why: Revival) -> Result<(), EngineError> {
        if why == Revival::Lost {
            // What the dead shim left (cgroups with processes in them) goes first; its
            // network leftovers go when the new sandbox is made.
            crate::sandbox::cgroup::remove_leftovers(id);
            store.update_state(id, |s| {
                *s = s.observed();
                s.restart_count += 1;
            })?;
        }
        lifecycle::start(&self.root, id)?;
        store.event_for("restart", id, &[("reason", format!("{why:?}"))]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, max: u32) -> RestartPolicy {
        RestartPolicy {
            maximum_retry_count: max,
            ..RestartPolicy::parse(name).unwrap()
        }
    }

    #[test]
    fn dockers_rules_for_lost_and_exited_containers() {
        // A live status with no shim (pid 0): lost.
        let lost = ContainerState {
            status: Status::Running,
            ..ContainerState::default()
        };
        let exited = ContainerState {
            status: Status::Exited,
            ..ContainerState::default()
        };
        let stopped = ContainerState {
            manually_stopped: true,
            ..exited.clone()
        };
        let created = ContainerState::default();
        assert_eq!(
            revival(&policy("always", 0), &lost, false),
            Some(Revival::Lost)
        );
        assert_eq!(revival(&policy("always", 0), &exited, false), None);
        assert_eq!(
            revival(&policy("always", 0), &exited, true),
            Some(Revival::AtBoot)
        );
        assert_eq!(
            revival(&policy("always", 0), &stopped, true),
            Some(Revival::AtBoot)
        );
        assert_eq!(revival(&policy("always", 0), &created, true), None);
        assert_eq!(revival(&policy("unless-stopped", 0), &stopped, true), None);
        assert_eq!(
            revival(&policy("unless-stopped", 0), &exited, true),
            Some(Revival::AtBoot)
        );
        assert_eq!(
            revival(&policy("on-failure", 2), &lost, false),
            Some(Revival::Lost)
        );
        let tired = ContainerState {
            restart_count: 2,
            ..lost.clone()
        };
        assert_eq!(revival(&policy("on-failure", 2), &tired, false), None);
        assert_eq!(revival(&policy("on-failure", 0), &exited, true), None);
        assert_eq!(revival(&policy("no", 0), &lost, false), None);
        assert_eq!(revival(&RestartPolicy::default(), &lost, true), None);
    }
}
