//! The shim's life: detach, serve the control socket, then run the workload (in a fresh
//! sandbox each time) until the restart policy says stop, recording each transition in
//! `state.json` under the lock; `AutoRemove` removes the container at the end.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::agent_client::{Process, ProcessSpec, SandboxSpec, sink_fn};
use crate::container::files;
use crate::container::{ContainerConfig, Event, Store, now};
use crate::logs::LogWriter;
use crate::sandbox::{Params, Sandbox};

use super::server;

/// First restart delay (docker: 100 ms, doubling).
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long resets the back-off (docker: 10 s).
const BACKOFF_RESET: Duration = Duration::from_secs(10);
/// How long the exiting shim gives pending control answers to be written.
const ANSWER_GRACE: Duration = Duration::from_secs(1);
/// How long a foreground run's shim waits for the first attach.
const ATTACH_WAIT: Duration = Duration::from_secs(10);
/// What a second shim of a running container reports (`start` treats it as success).
pub const ALREADY_RUNNING: &str = "the container is already running";
/// Exit code recorded when the sandbox died under a running workload.
pub const SANDBOX_DIED: i32 = 255;
/// Exit code when husk could not make the sandbox or start the workload (docker's 125).
pub const HUSK_FAILED: i32 = 125;

/// State shared by the run loop and the control socket's threads.
pub(crate) struct Shared {
    pub store: Store,
    pub id: String,
    pub dir: PathBuf,
    pub config: ContainerConfig,
    pub log: LogWriter,
    pub inner: Mutex<Inner>,
    pub changed: Condvar,
}

/// What changes while the shim runs.
#[derive(Default)]
pub(crate) struct Inner {
    /// The running workload.
    pub process: Option<Arc<Process>>,
    /// Attached clients' output streams.
    pub clients: Vec<server::Client>,
    /// Someone attached at least once.
    pub attached: bool,
    /// `stop` (or `kill`) asked: no more restarts.
    pub stopped: bool,
    /// Runs completed (to tell attach waiters a run ended).
    pub runs: u64,
    /// The final exit code once the shim will not run the workload again.
    pub finished: Option<i32>,
    /// The last terminal size a client asked for (rows, cols): a foreground `run -t`
    /// sends it before the workload exists, so each start uses it.
    pub size: Option<(u16, u16)>,
    /// The starter still waits on the shim's stdout for how the first run started
    /// (`started`, or `failed <code> <why>`).
    pub report_pending: bool,
    /// Control requests still being answered (the shim exits only after them).
    pub answering: usize,
    /// What pauses the running sandbox (while a workload runs).
    pub pauser: Option<crate::sandbox::Pauser>,
    /// The workload's stdin (with `-i`), shared by every attach: a client that goes away
    /// (a detach) leaves it open; only an explicit end of input closes it.
    pub stdin: Option<Arc<std::sync::Mutex<Option<crate::agent_client::Stdin>>>>,
    /// The sandbox is paused.
    pub paused: bool,
    /// The running sandbox's networks (`network connect`/`disconnect`).
    pub wiring: Option<Arc<crate::sandbox::wiring::Wiring>>,
    /// A sandbox is being made for a run whose workload has not started yet.
    pub starting: bool,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Output of the workload: log and attached clients.
    fn output(&self, stream: u8, bytes: &[u8]) {
        if let Err(e) = self.log.write(stream == 2, bytes) {
            log::warn!("cannot write the log: {e}");
        }
        if !bytes.is_empty() {
            self.lock().clients.retain(|c| c.send(stream, bytes));
        }
    }
}

/// The shim process: returns its exit code.
pub fn main(root: &Path, id: &str, self_cmd: (PathBuf, Vec<OsString>), wait_attach: bool) -> i32 {
    // Detach: the starter reaps our parent at once; we are adopted by init.
    // SAFETY: fork before any thread exists; the parent only _exits.
    match unsafe { libc::fork() } {
        0 => {}
        -1 => return report_fail("cannot fork the shim"),
        _ => {
            // SAFETY: _exit takes no pointers.
            unsafe { libc::_exit(0) }
        }
    }
    crate::timing::mark("shim.start");
    let shared = match prepare(root, id) {
        Ok(s) => Arc::new(s),
        Err(msg) => return report_fail(&msg),
    };
    let listener = match server::bind(&shared.dir) {
        Ok(l) => l,
        Err(e) => return report_fail(&format!("cannot serve the shim socket: {e}")),
    };
    let server_shared = Arc::clone(&shared);
    std::thread::spawn(move || server::serve(&server_shared, listener));
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ok {pid}").and_then(|()| out.flush());
    if wait_attach {
        // The starter attaches and hears everything there.
        detach_stdout();
    } else {
        shared.lock().report_pending = true;
    }
    let code = run_loop(&shared, self_cmd, wait_attach);
    finish(&shared, code);
    0
}

/// Tells a detached starter how the first run began (once): `started`, or `failed <code>
/// <why>` when it ended without the workload running; then lets go of the pipe.
fn report_start(inner: &mut Inner, line: &str) {
    if !std::mem::take(&mut inner.report_pending) {
        return;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    detach_stdout();
}

fn report_fail(msg: &str) -> i32 {
    println!("error: {msg}");
    1
}

fn detach_stdout() {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 on descriptors we own.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
}

fn prepare(root: &Path, id: &str) -> Result<Shared, String> {
    let store = Store::open(root).map_err(|e| e.to_string())?;
    let config = store.config(id).map_err(|e| e.to_string())?;
    let dir = store.dir(id);
    let log =
        LogWriter::open(&dir.join(files::LOG)).map_err(|e| format!("cannot open the log: {e}"))?;
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    // Check and claim under one lock: of two `start`s racing, exactly one shim runs.
    let lock = store.lock(id).map_err(|e| e.to_string())?;
    let mut state = store.state(id).map_err(|e| e.to_string())?;
    if state.shim_alive() && state.shim_pid != pid {
        return Err(format!("{ALREADY_RUNNING} (shim pid {})", state.shim_pid));
    }
    state.apply(Event::Claim).map_err(|e| e.to_string())?;
    state.shim_pid = pid;
    state.isolation = config.host_config.isolation;
    state.started_at = now();
    state.error.clear();
    store.write_state(id, &state).map_err(|e| e.to_string())?;
    drop(lock);
    Ok(Shared {
        store,
        id: id.to_owned(),
        dir,
        config,
        log,
        inner: Mutex::new(Inner::default()),
        changed: Condvar::new(),
    })
}

/// How one run ended.
#[derive(Default)]
struct Outcome {
    code: i32,
    last_exit: String,
    error: String,
    oom_killed: bool,
    /// No run happened (stopped before it began).
    synthetic: bool,
}

fn run_loop(shared: &Arc<Shared>, self_cmd: (PathBuf, Vec<OsString>), wait_attach: bool) -> i32 {
    if wait_attach {
        let guard = shared.lock();
        let _ = shared
            .changed
            .wait_timeout_while(guard, ATTACH_WAIT, |i| !i.attached && !i.stopped);
    }
    let mut backoff = BACKOFF_START;
    loop {
        let started = Instant::now();
        let outcome = if shared.lock().stopped {
            Outcome {
                code: 0,
                last_exit: "workload".into(),
                error: String::new(),
                oom_killed: false,
                synthetic: true,
            }
        } else {
            run_once(shared, &self_cmd)
        };
        if outcome.oom_killed {
            shared.store.event("oom", &shared.config, &[]);
        }
        if !outcome.synthetic {
            let code = outcome.code.to_string();
            shared
                .store
                .event("die", &shared.config, &[("exitCode", code)]);
        }
        let restart = should_restart(shared, &outcome);
        let _ = shared.store.update_state(&shared.id, |s| {
            s.exit_code = outcome.code;
            s.oom_killed = outcome.oom_killed;
            s.last_exit = outcome.last_exit.clone();
            s.error = outcome.error.clone();
            s.finished_at = now();
            transition(s, Event::Exited { restart });
            if restart {
                s.restart_count += 1;
            }
        });
        if !restart {
            // With --rm the container is gone before anyone hears of the exit, so a
            // foreground `run --rm` returns the moment its exit frame arrives.
            remove_if_auto(shared);
            release(shared);
            end_run(shared, outcome.code, &outcome.error);
            return outcome.code;
        }
        end_run(shared, outcome.code, &outcome.error);
        if started.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        let guard = shared.lock();
        let (guard, _) = shared
            .changed
            .wait_timeout_while(guard, backoff, |i| !i.stopped)
            .unwrap_or_else(|p| p.into_inner());
        if guard.stopped {
            drop(guard);
            let _ = shared
                .store
                .update_state(&shared.id, |s| transition(s, Event::Released));
            remove_if_auto(shared);
            release(shared);
            return outcome.code;
        }
        drop(guard);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Tells attached clients the run ended (and why husk failed, if it did), and wakes waiters.
fn end_run(shared: &Shared, code: i32, error: &str) {
    let mut inner = shared.lock();
    for c in inner.clients.drain(..) {
        c.exit(code, error);
    }
    inner.runs += 1;
    let why = error.replace('\n', " ");
    report_start(&mut inner, &format!("failed {code} {why}"));
    shared.changed.notify_all();
}

fn should_restart(shared: &Shared, outcome: &Outcome) -> bool {
    if shared.lock().stopped {
        return false;
    }
    // Read afresh: `update --restart` may have changed it while the workload ran.
    let policy = shared
        .store
        .config(&shared.id)
        .map(|c| c.host_config.restart_policy)
        .unwrap_or_else(|_| shared.config.host_config.restart_policy.clone());
    let policy = &policy;
    let count = shared
        .store
        .state(&shared.id)
        .map(|s| s.restart_count)
        .unwrap_or(0);
    use crate::container::RestartName;
    match policy.name {
        RestartName::Always | RestartName::UnlessStopped => true,
        RestartName::OnFailure => {
            outcome.code != 0
                && (policy.maximum_retry_count == 0 || count < policy.maximum_retry_count)
        }
        RestartName::No => false,
    }
}

/// The sandbox of the next run, from the config as it is now (`update` may have changed
/// its limits since the shim started).
fn params(shared: &Shared, self_cmd: &(PathBuf, Vec<OsString>)) -> Params {
    let config = shared.store.config(&shared.id);
    sandbox_params(
        config.as_ref().unwrap_or(&shared.config),
        &shared.dir,
        self_cmd,
    )
}

/// The sandbox a container's config asks for (its directory `dir`).
pub(crate) fn sandbox_params(
    c: &ContainerConfig,
    dir: &Path,
    self_cmd: &(PathBuf, Vec<OsString>),
) -> Params {
    Params {
        id: c.id.clone(),
        dir: dir.to_owned(),
        layers: c.layers.clone(),
        scratch: dir.join(files::SCRATCH),
        hostname: c.hostname(),
        memory: u64::try_from(c.host_config.memory).unwrap_or(0),
        nano_cpus: u64::try_from(c.host_config.nano_cpus).unwrap_or(0),
        cold_boot: c.host_config.cold_boot,
        name: c.name.clone(),
        networks: c.host_config.networks(),
        network: c.host_config.network_mode.clone(),
        ports: c.host_config.port_bindings.clone(),
        extra_hosts: c.host_config.extra_hosts.clone(),
        dns: c.host_config.dns.clone(),
        setup: SandboxSpec {
            read_only: c.host_config.readonly_rootfs,
            shm_size: u64::try_from(c.host_config.shm_size)
                .ok()
                .filter(|s| *s > 0),
            tmpfs: c
                .host_config
                .tmpfs
                .iter()
                .map(|(path, options)| agent_proto::TmpfsMount {
                    path: path.clone(),
                    options: options.clone(),
                })
                .collect(),
            sysctls: c.host_config.sysctls.clone().into_iter().collect(),
            pids_limit: u64::try_from(c.host_config.pids_limit)
                .ok()
                .filter(|n| *n > 0),
            devices: c.host_config.devices.iter().map(|d| d.mount()).collect(),
            ..SandboxSpec::default()
        },
        self_cmd: self_cmd.clone(),
        mounts: host_mounts(c, dir),
        warm: warm(c),
    }
}

/// The container's program and its PATH (see `template::Warm`).
fn warm(c: &ContainerConfig) -> crate::sandbox::template::Warm {
    let env = crate::spec::process_env(&c.config, &c.hostname());
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or_default();
    crate::sandbox::template::Warm {
        programs: vec![c.path.clone()],
        path: path.to_owned(),
    }
}

/// The container's volumes and binds as host paths.
fn host_mounts(c: &ContainerConfig, dir: &Path) -> Vec<crate::sandbox::HostMount> {
    let store = crate::volumes::VolumeStore::at(&crate::sandbox::state_root(dir));
    c.host_config
        .mounts
        .iter()
        .map(|m| crate::sandbox::HostMount {
            source: m.host_path(&store),
            target: m.target.clone(),
            read_only: m.read_only,
            fill: m.kind == crate::volumes::Kind::Volume && !m.no_copy,
        })
        .collect()
}

fn process_spec(c: &ContainerConfig, size: Option<(u16, u16)>) -> ProcessSpec {
    let mut argv = vec![c.path.clone()];
    argv.extend(c.args.iter().cloned());
    ProcessSpec {
        argv,
        env: crate::spec::process_env(&c.config, &c.hostname()),
        cwd: Some(c.config.working_dir.clone()).filter(|w| !w.is_empty()),
        user: None,
        tty: c.config.tty,
        size: size
            .filter(|_| c.config.tty)
            .map(|(rows, cols)| agent_proto::TermSize { rows, cols }),
        stdin: c.config.open_stdin,
        user_name: Some(c.config.user.clone()).filter(|u| !u.is_empty()),
        init: c.host_config.init && !c.host_config.hold,
        main: true,
        capabilities: Some(c.host_config.capabilities()),
        rlimits: c.host_config.rlimits(),
        tool: c.host_config.hold.then_some(agent_proto::Tool::Hold),
    }
}

fn sandbox_failure(code: i32, why: String) -> Outcome {
    Outcome {
        code,
        last_exit: format!("sandbox: {why}"),
        error: why,
        oom_killed: false,
        synthetic: false,
    }
}

/// One sandbox, one workload run.
fn run_once(shared: &Arc<Shared>, self_cmd: &(PathBuf, Vec<OsString>)) -> Outcome {
    shared.lock().starting = true;
    let outcome = run_sandbox(shared, self_cmd);
    let mut inner = shared.lock();
    inner.starting = false;
    shared.changed.notify_all();
    drop(inner);
    outcome
}

/// Makes the sandbox, runs the workload in it to its end, tears the sandbox down.
fn run_sandbox(shared: &Arc<Shared>, self_cmd: &(PathBuf, Vec<OsString>)) -> Outcome {
    let isolation = shared.config.host_config.isolation;
    let mut sandbox = match Sandbox::create(isolation, &params(shared, self_cmd)) {
        Ok(s) => s,
        Err(e) => return sandbox_failure(HUSK_FAILED, agent_proto::error_chain(&e)),
    };
    crate::timing::mark("sandbox.created");
    let client = match sandbox.connect(&shared.config.hostname()) {
        Ok(c) => c,
        Err(e) => {
            let why = agent_proto::error_chain(&e);
            sandbox.teardown();
            return sandbox_failure(HUSK_FAILED, why);
        }
    };
    crate::timing::mark("agent.ready");
    let (out, err) = (Arc::clone(shared), Arc::clone(shared));
    let size = shared.lock().size;
    let started = client.start(
        &process_spec(&shared.config, size),
        sink_fn(move |b| out.output(1, b)),
        sink_fn(move |b| err.output(2, b)),
    );
    let outcome = match started {
        Ok(process) => {
            let plan = crate::health::Plan::of(shared.config.config.healthcheck.as_ref());
            let stop = crate::health::Stop::default();
            std::thread::scope(|s| {
                if let Some(plan) = &plan {
                    let (client, stop) = (&client, &stop);
                    s.spawn(move || {
                        crate::health::monitor(client, &shared.store, &shared.config, plan, stop)
                    });
                }
                let outcome = wait_workload(shared, &mut sandbox, process, size);
                stop.set();
                outcome
            })
        }
        Err(crate::agent_client::ClientError::Agent { message, .. }) => Outcome {
            code: 125,
            last_exit: "workload".into(),
            error: message,
            oom_killed: false,
            synthetic: false,
        },
        Err(e) => {
            let why = sandbox.death_reason(Duration::from_secs(2));
            sandbox_failure(
                HUSK_FAILED,
                why.unwrap_or_else(|| agent_proto::error_chain(&e)),
            )
        }
    };
    crate::timing::mark("workload.exited");
    let _ = shared.log.flush_partial();
    if shared.config.host_config.auto_remove && sandbox.discardable() {
        sandbox.kill();
    } else {
        let _ = client.shutdown();
    }
    sandbox.teardown();
    crate::timing::mark("sandbox.down");
    outcome
}

fn wait_workload(
    shared: &Arc<Shared>,
    sandbox: &mut Sandbox,
    process: Process,
    size: Option<(u16, u16)>,
) -> Outcome {
    let process = Arc::new(process);
    let pid = process.pid().unwrap_or(0);
    let host_pid = sandbox.host_pid_of(pid);
    let _ = shared.store.update_state(&shared.id, |s| {
        transition(s, Event::WorkloadStarted);
        s.pid = host_pid;
        s.started_at = now();
    });
    let resized = {
        let mut inner = shared.lock();
        inner.process = Some(Arc::clone(&process));
        inner.pauser = Some(sandbox.pauser());
        inner.wiring = Some(sandbox.wiring());
        inner.starting = false;
        inner.stdin = process
            .stdin()
            .ok()
            .map(|s| Arc::new(std::sync::Mutex::new(Some(s))));
        if pid != 0 {
            report_start(&mut inner, "started");
            shared.store.event("start", &shared.config, &[]);
        }
        shared.changed.notify_all();
        // A resize that came while the workload was being started.
        inner.size.filter(|s| Some(*s) != size)
    };
    if let Some((rows, cols)) = resized.filter(|_| shared.config.config.tty) {
        let _ = process.resize(rows, cols);
    }
    crate::timing::mark("workload.started");
    let result = process.wait();
    {
        let mut inner = shared.lock();
        inner.process = None;
        inner.pauser = None;
        inner.wiring = None;
        inner.paused = false;
        inner.stdin = None;
    }
    match result {
        // Never started (not found, not executable, bad user): the agent says why.
        Ok(exit) if pid == 0 => Outcome {
            code: exit.code,
            last_exit: "workload".into(),
            error: exit.detail,
            oom_killed: false,
            synthetic: false,
        },
        Ok(exit) => Outcome {
            code: exit.code,
            last_exit: "workload".into(),
            error: String::new(),
            oom_killed: sandbox.oom_killed(&exit),
            synthetic: false,
        },
        Err(e) => {
            let conn = agent_proto::error_chain(&e);
            let why = match sandbox.death_reason(Duration::from_secs(2)) {
                Some(d) => format!("sandbox process {} {d} ({conn})", sandbox.pid()),
                None => conn,
            };
            sandbox_failure(SANDBOX_DIED, why)
        }
    }
}

/// With AutoRemove (`--rm`), removes the container directory (under its lock).
fn remove_if_auto(shared: &Shared) {
    if shared.config.host_config.auto_remove
        && let Ok(_lock) = shared.store.lock(&shared.id)
    {
        // docker's `--rm` takes the container's anonymous volumes with it.
        if shared.store.remove_dir(&shared.id).is_ok() {
            let root = crate::sandbox::state_root(&shared.dir);
            crate::volverbs::release_anonymous(&root, &shared.config);
        }
        shared.store.event("destroy", &shared.config, &[]);
    }
}

/// The container will not run again under this shim: stops taking control connections and
/// clears this shim from the state (unless `--rm` removed the container). Done before anyone
/// hears of the end (an attached client's exit frame, a `stop` or `wait` answer), so that
/// whoever acts on it next (`rm`, `start`) finds the container stopped, not this shim still
/// on its way out. Called once: a `start` may bind a new shim's socket right after.
fn release(shared: &Shared) {
    let _ = std::fs::remove_file(shared.dir.join(files::SHIM_SOCKET));
    if shared.config.host_config.auto_remove {
        return;
    }
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let _ = shared.store.update_state(&shared.id, |s| {
        if s.shim_pid == pid {
            s.shim_pid = 0;
            transition(s, Event::Released);
        }
    });
}

/// Records `event` in the state (an impossible one is logged and changes nothing: the
/// state machine has the last word).
fn transition(s: &mut crate::container::ContainerState, event: Event) {
    if let Err(e) = s.apply(event) {
        log::error!("{e}");
    }
}

/// Marks the end and lets every pending control request (`wait`, `stop`, ...) be answered
/// before the process goes.
fn finish(shared: &Shared, code: i32) {
    {
        let mut inner = shared.lock();
        inner.finished = Some(code);
        shared.changed.notify_all();
    }
    let guard = shared.lock();
    let _ = shared
        .changed
        .wait_timeout_while(guard, ANSWER_GRACE, |i| i.answering > 0);
}
