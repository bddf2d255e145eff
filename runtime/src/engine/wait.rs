//! docker's `wait` conditions: `not-running` (the default: now, if it is not running),
//! `next-exit` (the next time it exits, even if it has not started yet: clients register
//! this before they start a container) and `removed` (once it is gone; the code of its
//! last exit).

use std::path::Path;
use std::time::Duration;

use crate::container::{ContainerError, Store};
use crate::shim::client::ShimClient;

use super::EngineError;

/// When `wait` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitCondition {
    /// Once the container is not running (at once if it is not).
    #[default]
    NotRunning,
    /// Once it has exited after this call (a created container: after it starts).
    NextExit,
    /// Once it has been removed.
    Removed,
}

impl WaitCondition {
    /// docker's `?condition=`; `None` for a word it does not know.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "not-running" => Some(Self::NotRunning),
            "next-exit" => Some(Self::NextExit),
            "removed" => Some(Self::Removed),
            _ => None,
        }
    }
}

/// How long to sleep between looks at a container that has no shim yet, `started` being
/// when the looking began: every 5 ms for the first 2 s (clients start the container right
/// after they attach or wait, and a start held for an attach waits on this), then every
/// 100 ms.
pub(super) fn poll_interval(started: std::time::Instant) -> Duration {
    match started.elapsed() < Duration::from_secs(2) {
        true => Duration::from_millis(5),
        false => Duration::from_millis(100),
    }
}

/// How long one look at the shim waits before the waiter checks that it is still wanted.
const LOOK: Duration = Duration::from_secs(1);

/// Waits for `cond`; `None` once `wanted` says nobody waits any more (a client that hung
/// up), so that no thread waits on for a container that may run for days.
pub(super) fn wait(
    root: &Path,
    query: &str,
    cond: WaitCondition,
    wanted: &dyn Fn() -> bool,
) -> Result<Option<i32>, EngineError> {
    let store = Store::open(root)?;
    let id = store.resolve(query)?;
    let dir = store.dir(&id);
    let first = store.state(&id)?.observed();
    let mut last = first.exit_code;
    let started = std::time::Instant::now();
    loop {
        if !wanted() {
            return Ok(None);
        }
        if let Ok(Some(code)) = ShimClient::connect(&dir).and_then(|c| c.wait_within(Some(LOOK))) {
            last = code;
            if cond != WaitCondition::Removed {
                return Ok(Some(code));
            }
        }
        let state = match store.state(&id) {
            Ok(s) => s.observed(),
            Err(ContainerError::NoSuchContainer(_)) => return Ok(Some(last)),
            Err(e) => return Err(e.into()),
        };
        if !state.running() {
            let exited_since = state.finished_at != first.finished_at;
            last = state.exit_code;
            match cond {
                WaitCondition::NotRunning => return Ok(Some(last)),
                WaitCondition::NextExit if exited_since => return Ok(Some(last)),
                _ => {}
            }
        }
        std::thread::sleep(poll_interval(started));
    }
}
