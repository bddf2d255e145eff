//! The container state machine: which [`Status`] follows which, on what event (youki's
//! `can_*` style). Every status change the shim records goes through
//! [`ContainerState::apply`], so an impossible change (a created container "restarting",
//! an exited one exiting again) is refused in one place, and the table is tested here.

use serde::{Deserialize, Serialize};

use super::ContainerState;

/// `State.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, never started.
    #[default]
    Created,
    /// The workload runs.
    Running,
    /// Waiting to restart.
    Restarting,
    /// Finished.
    Exited,
    /// Could not be cleaned up.
    Dead,
    /// Being removed.
    Removing,
}

impl Status {
    /// docker's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
            Status::Removing => "removing",
        }
    }

    /// Whether a shim may claim the container to run it (`start`, `run`): it was made or
    /// has finished, or its file still says it runs while no shim is alive (a lost shim;
    /// the caller checks the shim first).
    pub fn can_start(self) -> bool {
        matches!(
            self,
            Status::Created | Status::Exited | Status::Running | Status::Restarting
        )
    }

    /// Whether the container counts as running (its workload runs, or will again).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Restarting)
    }

    /// The status after `event`, if the event can happen in this status.
    pub fn after(self, event: Event) -> Result<Status, TransitionError> {
        use Status::{Created, Exited, Restarting, Running};
        let next = match (self, event) {
            (s, Event::Claim) if s.can_start() => Running,
            (Running | Restarting, Event::WorkloadStarted) => Running,
            // From restarting too: a restart whose sandbox failed before its workload ran.
            (Running | Restarting, Event::Exited { restart: true }) => Restarting,
            (Running | Restarting, Event::Exited { restart: false }) => Exited,
            (Running | Restarting | Exited, Event::Released) => Exited,
            (Running | Restarting, Event::Lost) => Exited,
            (Created, Event::Released) => Created,
            _ => {
                return Err(TransitionError { from: self, event });
            }
        };
        Ok(next)
    }
}

/// What happens to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A shim claims it to run its workload.
    Claim,
    /// The workload (first, or again after a restart) has started.
    WorkloadStarted,
    /// The workload ended; the restart policy says whether it runs again.
    Exited {
        /// It will run again.
        restart: bool,
    },
    /// Its shim lets it go for good (the run ended, or a stop ended the restarts).
    Released,
    /// Its shim is gone without recording an exit.
    Lost,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Claim => "be started",
            Event::WorkloadStarted => "start its workload",
            Event::Exited { .. } => "exit",
            Event::Released => "be released",
            Event::Lost => "lose its shim",
        }
    }
}

/// An event that cannot happen in the container's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} container cannot {}", from.as_str(), event.as_str())]
pub struct TransitionError {
    /// The status it was in.
    pub from: Status,
    /// What was to happen.
    pub event: Event,
}

impl ContainerState {
    /// Moves to the status `event` leads to, with the fields that go with it: `running`
    /// follows the status, and a workload that is not running has no pid and is not
    /// paused. Unchanged on a refused event.
    pub fn apply(&mut self, event: Event) -> Result<(), TransitionError> {
        self.status = self.status.after(event)?;
        self.running = self.status.is_live();
        if !matches!(self.status, Status::Running) || event == Event::Claim {
            self.pid = 0;
            self.paused = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Status; 6] = [
        Status::Created,
        Status::Running,
        Status::Restarting,
        Status::Exited,
        Status::Dead,
        Status::Removing,
    ];

    #[test]
    fn only_the_transitions_of_the_table_happen() {
        use Status::*;
        let events = [
            Event::Claim,
            Event::WorkloadStarted,
            Event::Exited { restart: true },
            Event::Exited { restart: false },
            Event::Released,
            Event::Lost,
        ];
        let allowed = [
            (Created, Event::Claim, Running),
            (Exited, Event::Claim, Running),
            (Running, Event::Claim, Running),
            (Restarting, Event::Claim, Running),
            (Running, Event::WorkloadStarted, Running),
            (Restarting, Event::WorkloadStarted, Running),
            (Running, Event::Exited { restart: true }, Restarting),
            (Running, Event::Exited { restart: false }, Exited),
            (Restarting, Event::Exited { restart: true }, Restarting),
            (Restarting, Event::Exited { restart: false }, Exited),
            (Running, Event::Released, Exited),
            (Restarting, Event::Released, Exited),
            (Exited, Event::Released, Exited),
            (Created, Event::Released, Created),
            (Running, Event::Lost, Exited),
            (Restarting, Event::Lost, Exited),
        ];
        for from in ALL {
            for event in events {
                let want = allowed
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                assert_eq!(from.after(event).ok(), want, "{from:?} on {event:?}");
            }
        }
    }

    #[test]
    fn refusals_say_what_could_not_happen_and_change_nothing() {
        let mut s = ContainerState {
            status: Status::Created,
            ..ContainerState::default()
        };
        let e = s.apply(Event::Exited { restart: true }).unwrap_err();
        assert_eq!(e.to_string(), "a created container cannot exit");
        assert_eq!(s.status, Status::Created);
        s.apply(Event::Claim).unwrap();
        assert!(s.running);
        s.pid = 42;
        s.paused = true;
        s.apply(Event::Exited { restart: true }).unwrap();
        assert_eq!(
            (s.status, s.running, s.pid, s.paused),
            (Status::Restarting, true, 0, false)
        );
        s.apply(Event::Released).unwrap();
        assert_eq!((s.status, s.running), (Status::Exited, false));
    }
}
