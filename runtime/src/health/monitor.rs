//! The health monitor the shim runs beside a workload: after each interval (the start
//! interval while the container is still starting in its start period) it runs the check
//! in the container as `exec` would, kills it at the timeout, and records the result in
//! `state.json`. It ends when told to (the workload exited) or when the agent is gone.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Health, HealthResult, MAX_OUTPUT, Plan};
use crate::agent_client::{AgentClient, ClientError, sink_fn};
use crate::container::{ContainerConfig, Store, now};
use crate::spec::{self, ExecFlags};

/// How often a running check looks at its timeout and at [`Stop`].
const POLL: Duration = Duration::from_millis(50);
/// How long a killed check may take to report its end before it counts as timed out
/// anyway.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Tells the monitor to end.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    changed: Condvar,
}

impl Stop {
    /// Ends the monitor (a check in flight is killed).
    pub fn set(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.changed.notify_all();
    }

    /// Waits up to `d`; true if the monitor is to end.
    fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// Checks container `container` (`id` in `store`) through `client` by `plan` until `stop`.
pub fn monitor(
    client: &AgentClient,
    store: &Store,
    container: &ContainerConfig,
    plan: &Plan,
    stop: &Stop,
) {
    let id = &container.id;
    let mut health = Health::starting();
    let _ = store.update_state(id, |s| s.health = Some(health.clone()));
    let started = Instant::now();
    let mut passed = false;
    loop {
        let starting = started.elapsed() < plan.start_period && !passed;
        let wait = if starting {
            plan.start_interval
        } else {
            plan.interval
        };
        if stop.wait(wait) {
            return;
        }
        let Some(result) = check(client, container, plan, stop) else {
            return;
        };
        // In the start period failures do not count, until a check has passed.
        passed |= result.exit_code == 0;
        let counts = passed || started.elapsed() >= plan.start_period;
        let before = health.status.clone();
        health.record(result, counts, plan.retries);
        if health.status != before {
            let action = format!("health_status: {}", health.status);
            store.event(&action, container, &[]);
        }
        let _ = store.update_state(id, |s| s.health = Some(health.clone()));
    }
}

/// Runs the check once; `None` if the agent is gone (or the monitor is ending).
fn check(
    client: &AgentClient,
    container: &ContainerConfig,
    plan: &Plan,
    stop: &Stop,
) -> Option<HealthResult> {
    let start = now();
    let failed = |output: String| HealthResult {
        start: start.clone(),
        end: now(),
        exit_code: -1,
        output,
    };
    let flags = ExecFlags {
        cmd: plan.argv.clone(),
        ..ExecFlags::default()
    };
    let spec = match spec::exec_process(container, &flags, &|_| None) {
        Ok(s) => s,
        Err(e) => return Some(failed(e.to_string())),
    };
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = |output: &Arc<Mutex<Vec<u8>>>| {
        let output = Arc::clone(output);
        sink_fn(move |b| {
            let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
            let room = MAX_OUTPUT.saturating_sub(out.len());
            out.extend_from_slice(&b[..b.len().min(room)]);
        })
    };
    let process = match client.start(&spec, sink(&output), sink(&output)) {
        Ok(p) => p,
        Err(ClientError::Disconnected(_)) => return None,
        Err(e) => return Some(failed(agent_proto::error_chain(&e))),
    };
    let began = Instant::now();
    // The wait runs on its own thread: a check whose output a background process keeps
    // open never ends, and must not stall the monitor past its timeout and a grace.
    let process = Arc::new(process);
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = Arc::clone(&process);
    let spawned = std::thread::Builder::new()
        .name("health-wait".into())
        .spawn(move || {
            let _ = tx.send(waiter.wait());
        });
    if let Err(e) = spawned {
        return Some(failed(format!("cannot wait for the check: {e}")));
    }
    let mut killed: Option<Instant> = None;
    let exit = loop {
        match rx.recv_timeout(POLL) {
            Ok(r) => break r.ok(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        let stopping = stop.wait(Duration::ZERO);
        match killed {
            None if began.elapsed() > plan.timeout || stopping => {
                let _ = process.signal(libc::SIGKILL);
                killed = Some(Instant::now());
            }
            Some(at) if at.elapsed() > KILL_GRACE => break None,
            _ => {}
        }
    };
    if stop.wait(Duration::ZERO) {
        return None;
    }
    if killed.is_some() {
        return Some(failed(format!(
            "Health check exceeded timeout ({:?})",
            plan.timeout
        )));
    }
    let exit = exit?;
    let mut text =
        String::from_utf8_lossy(&output.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    if process.pid().is_none() {
        text = exit.detail.clone();
    }
    Some(HealthResult {
        start,
        end: now(),
        exit_code: exit.code,
        output: text,
    })
}
