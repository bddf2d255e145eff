//! The processes the agent runs for the host and their lifecycle: a [`Proc`] is finished once
//! it has been reaped *and* its output streams have ended, and only then are its waiters
//! answered (so every data frame precedes the exit). The [`Table`] maps pids to processes for
//! the reaper thread, which collects every child (orphans too, as PID 1) from the SIGCHLD
//! signalfd.
//!
//! The table's lock is held while spawning, reaping and signalling. That closes two races:
//! a child reaped before it is registered, and a signal sent to a pid that was reaped and
//! reused. It also keeps the reaper away while std's spawn waits for a child whose exec
//! failed (std asserts that wait succeeds).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use agent_proto::Reply;
use libc::pid_t;

use crate::console::say;
use crate::eventfd::{EventFd, EventFdError};
use crate::reaper::{Reaper, Status};
use crate::server::lock;
use crate::server::outbox::Outbox;

/// Errors from signalling a process.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// It has exited (or never started).
    #[error("process {0} is not running")]
    NotRunning(u32),
    /// kill(2) refused.
    #[error("cannot send signal {signal} to process {process}")]
    Kill {
        /// The host's number for the process.
        process: u32,
        /// The signal.
        signal: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

#[derive(Debug)]
struct State {
    /// Set when reaped.
    status: Option<Status>,
    /// Output pumps still running.
    open_outputs: u8,
    /// Request ids of `Wait`s to answer when finished.
    waiters: Vec<u64>,
    /// `(code, detail, killed by the OOM killer)` once finished.
    exit: Option<(i32, String, bool)>,
    /// An `Exited` reply has been sent.
    collected: bool,
}

/// One process started for the host.
#[derive(Debug)]
pub struct Proc {
    id: u32,
    pid: pid_t,
    name: String,
    outbox: Arc<Outbox>,
    exited: EventFd,
    state: Mutex<State>,
    /// The kernel's OOM kill count when it started.
    oom_kills: u64,
}

impl Proc {
    /// A running process with `outputs` pumps still to finish; `exited` is set when it is
    /// reaped (created before the spawn, so registering cannot fail afterwards).
    pub fn running(
        id: u32,
        pid: pid_t,
        name: String,
        outbox: Arc<Outbox>,
        outputs: u8,
        exited: EventFd,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            pid,
            name,
            outbox,
            exited,
            oom_kills: crate::oom::kills(),
            state: Mutex::new(State {
                status: None,
                open_outputs: outputs,
                waiters: Vec::new(),
                exit: None,
                collected: false,
            }),
        })
    }

    /// A process that never ran (its program could not be started): already finished, and
    /// collected, since the reply to its start request already says how it ended.
    pub fn failed(
        id: u32,
        outbox: Arc<Outbox>,
        code: i32,
        detail: String,
        exited: EventFd,
    ) -> Result<Arc<Self>, EventFdError> {
        exited.set()?;
        let proc = Self::running(id, 0, String::new(), outbox, 0, exited);
        {
            let mut state = lock(&proc.state);
            state.exit = Some((code, detail, false));
            state.collected = true;
        }
        Ok(proc)
    }

    /// The host's number for it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The outbox of the connection that owns it.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Readable once the process has been reaped (for the output pumps).
    pub fn exited_fd(&self) -> BorrowedFd<'_> {
        self.exited.as_fd()
    }

    /// The `Exited` reply, once finished.
    pub fn exit_reply(&self) -> Option<Reply> {
        let state = lock(&self.state);
        state
            .exit
            .as_ref()
            .map(|(code, detail, oom)| self.exited_reply(*code, detail, *oom))
    }

    /// Whether an `Exited` reply has gone out, so the host may forget it.
    pub fn collected(&self) -> bool {
        lock(&self.state).collected
    }

    /// Answers `Wait` request `id` now if finished, else when it is.
    pub fn wait(&self, id: u64) {
        let owed = {
            let mut state = lock(&self.state);
            match &state.exit {
                Some((code, detail, oom)) => {
                    let reply = self.exited_reply(*code, detail, *oom);
                    state.collected = true;
                    Owed(vec![(id, reply)])
                }
                None => {
                    state.waiters.push(id);
                    Owed(Vec::new())
                }
            }
        };
        owed.send(&self.outbox);
    }

    /// An output pump has ended (its end-of-stream frame is sent).
    pub fn output_closed(&self) {
        let owed = {
            let mut state = lock(&self.state);
            state.open_outputs = state.open_outputs.saturating_sub(1);
            self.finish_if_done(&mut state)
        };
        owed.send(&self.outbox);
    }

    /// Records the reaped status; called by the table with its lock held, so the replies
    /// this may owe are returned, to be sent once the lock is released.
    fn reaped(&self, status: Status) -> Owed {
        let mut state = lock(&self.state);
        state.status = Some(status);
        if let Err(e) = self.exited.set() {
            say!("process {}: {e}", self.id);
        }
        self.finish_if_done(&mut state)
    }

    fn running_now(&self) -> bool {
        self.pid > 0 && lock(&self.state).status.is_none()
    }

    fn finish_if_done(&self, state: &mut State) -> Owed {
        let (Some(status), 0, None) = (state.status, state.open_outputs, &state.exit) else {
            return Owed(Vec::new());
        };
        let (code, detail) = (status.code(), format!("{} {status}", self.name));
        let oom = status == Status::Signaled(libc::SIGKILL) && crate::oom::kills() > self.oom_kills;
        let waiters = std::mem::take(&mut state.waiters);
        state.collected |= !waiters.is_empty();
        let owed = waiters
            .into_iter()
            .map(|id| (id, self.exited_reply(code, &detail, oom)))
            .collect();
        state.exit = Some((code, detail, oom));
        Owed(owed)
    }

    fn exited_reply(&self, code: i32, detail: &str, oom_killed: bool) -> Reply {
        Reply::Exited {
            process: self.id,
            code,
            detail: detail.to_owned(),
            oom_killed,
        }
    }
}

/// Replies owed to waiters. Sent only once no lock is held: a host that stops reading blocks
/// the send, and must block nothing but its own connection.
#[must_use]
struct Owed(Vec<(u64, Reply)>);

impl Owed {
    fn send(self, outbox: &Outbox) {
        for (id, reply) in self.0 {
            // A closed connection is noticed (and cleaned up) by its request loop.
            let _ = outbox.send(Some(id), &reply);
        }
    }
}

/// Every running process of every connection, by pid.
#[derive(Debug, Default)]
pub struct Table {
    procs: Mutex<HashMap<pid_t, Arc<Proc>>>,
}

impl Table {
    /// Runs `spawn` with the table locked and registers the process it returns.
    pub fn spawn<T, E>(
        &self,
        spawn: impl FnOnce() -> Result<(Arc<Proc>, T), E>,
    ) -> Result<(Arc<Proc>, T), E> {
        let mut procs = lock(&self.procs);
        let (proc, extra) = spawn()?;
        if proc.pid > 0 {
            procs.insert(proc.pid, Arc::clone(&proc));
        }
        Ok((proc, extra))
    }

    /// Sends `signal` to `proc` if it has not been reaped.
    pub fn signal(&self, proc: &Proc, signal: i32) -> Result<(), SignalError> {
        let _procs = lock(&self.procs);
        if !proc.running_now() {
            return Err(SignalError::NotRunning(proc.id));
        }
        // SAFETY: kill takes no pointers. The pid is our unreaped child (checked under the
        // lock the reaper needs), so it cannot have been reused.
        if unsafe { libc::kill(proc.pid, signal) } < 0 {
            return Err(SignalError::Kill {
                process: proc.id,
                signal,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// SIGKILLs the process group of each of `procs` still running (each process leads its
    /// own group or session), so what they started goes too.
    pub fn kill_groups<'a>(&self, procs: impl IntoIterator<Item = &'a Arc<Proc>>) {
        let _procs = lock(&self.procs);
        for proc in procs {
            if proc.running_now() {
                // SAFETY: as in `signal`; a negative pid names the process group it leads.
                unsafe { libc::kill(-proc.pid, libc::SIGKILL) };
            }
        }
    }

    /// SIGKILLs every running process group (shutdown).
    pub fn kill_all(&self) {
        let all: Vec<Arc<Proc>> = lock(&self.procs).values().cloned().collect();
        self.kill_groups(&all);
    }

    /// Collects every exited child and hands each status to its process.
    fn reap(&self, reaper: &Reaper) -> Result<(), crate::reaper::ReaperError> {
        let mut owed = Vec::new();
        {
            let mut procs = lock(&self.procs);
            for reaped in reaper.reap()? {
                match procs.remove(&reaped.pid) {
                    Some(proc) => owed.push((proc.reaped(reaped.status), proc)),
                    None => say!("reaped orphan pid {} ({})", reaped.pid, reaped.status),
                }
            }
        }
        for (replies, proc) in owed {
            replies.send(&proc.outbox);
        }
        Ok(())
    }

    /// Starts the thread that reaps children for as long as the agent runs.
    pub fn start_reaper(self: &Arc<Self>, reaper: Arc<Reaper>) -> io::Result<()> {
        let table = Arc::clone(self);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                let result: Result<(), crate::reaper::ReaperError> = (|| loop {
                    table.reap(&reaper)?;
                    reaper.wait_sigchld()?;
                })();
                if let Err(e) = result {
                    say!("reaper stopped: {}", crate::chain(&e));
                }
            })
            .map(drop)
    }
}
