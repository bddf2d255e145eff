//! The client's shared state and its reader thread, which owns the receiving half of the
//! connection: replies go to the caller waiting on their request id, output bytes to the
//! process's sink, stdin credits to the process's window. Anything malformed from the agent
//! ends the connection (the guest is not trusted, and the host never tries to resync).

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use agent_proto::{Data, Frame, FrameReader, FrameWriter, Reply, StreamId};

/// Output destination for one stream of a process.
pub type Sink = Box<dyn Write + Send>;

/// Requests waiting for replies, and why the connection closed once it has.
#[derive(Default)]
pub(crate) struct Pending {
    pub waiting: HashMap<u64, Sender<Reply>>,
    pub closed: Option<String>,
}

/// Stdin flow control for one process.
pub(crate) struct Window {
    /// Bytes the agent will accept now.
    pub bytes: u64,
    /// The process has finished: stdin writes fail.
    pub finished: bool,
}

/// One process's host-side state.
pub(crate) struct ProcState {
    stdout: Mutex<Option<Sink>>,
    stderr: Mutex<Option<Sink>>,
    /// Stdin window.
    pub window: Mutex<Window>,
    /// Signalled when the window grows, the process finishes or the connection closes.
    pub window_grew: Condvar,
}

impl ProcState {
    pub fn new(stdout: Sink, stderr: Sink) -> Self {
        Self {
            stdout: Mutex::new(Some(stdout)),
            stderr: Mutex::new(Some(stderr)),
            window: Mutex::new(Window {
                bytes: u64::from(agent_proto::STDIN_WINDOW),
                finished: false,
            }),
            window_grew: Condvar::new(),
        }
    }

    /// The process has finished: flushes and drops both sinks, fails stdin writers.
    pub fn finish(&self) {
        for sink in [&self.stdout, &self.stderr] {
            if let Some(mut s) = lock(sink).take() {
                let _ = s.flush();
            }
        }
        lock(&self.window).finished = true;
        self.window_grew.notify_all();
    }

    fn output(&self, stream: StreamId, bytes: &[u8], process: u32) {
        let slot = match stream {
            StreamId::Stdout => &self.stdout,
            StreamId::Stderr => &self.stderr,
            StreamId::Stdin => return log::warn!("agent sent stdin bytes for process {process}"),
        };
        let mut sink = lock(slot);
        let Some(s) = sink.as_mut() else { return };
        let result = match bytes.is_empty() {
            true => s.flush(),
            false => s.write_all(bytes),
        };
        if let Err(e) = result {
            log::warn!("process {process}: {stream:?} sink failed, dropping its output: {e}");
            *sink = None;
        } else if bytes.is_empty() {
            *sink = None;
        }
    }
}

/// Everything the client's handles and its reader thread share.
pub(crate) struct Shared {
    pub writer: Mutex<FrameWriter<UnixStream>>,
    pub next_id: AtomicU64,
    pub next_process: AtomicU32,
    pub pending: Mutex<Pending>,
    pub processes: Mutex<HashMap<u32, Arc<ProcState>>>,
}

impl Shared {
    /// Why the connection closed, if it has.
    pub fn closed(&self) -> Option<String> {
        lock(&self.pending).closed.clone()
    }

    fn on_control(&self, json: &[u8]) -> Result<(), String> {
        let (id, reply) = agent_proto::decode::<Reply>(json)
            .map_err(|e| format!("invalid message from the agent: {}", super::chain(&e)))?;
        if let Some(id) = id {
            match lock(&self.pending).waiting.remove(&id) {
                Some(waiter) => {
                    let _ = waiter.send(reply); // The caller may have timed out.
                }
                None => log::debug!("reply to request {id} nobody waits for: {reply:?}"),
            }
            return Ok(());
        }
        match reply {
            Reply::Credit { process, bytes } => self.credit(process, bytes),
            Reply::Error { kind, message } => log::warn!("agent error ({kind:?}): {message}"),
            other => log::warn!("unexpected event from the agent: {other:?}"),
        }
        Ok(())
    }

    fn credit(&self, process: u32, bytes: u32) {
        let Some(state) = lock(&self.processes).get(&process).cloned() else {
            return;
        };
        let mut window = lock(&state.window);
        window.bytes = window.bytes.saturating_add(u64::from(bytes));
        state.window_grew.notify_all();
    }

    fn on_data(&self, data: &Data) {
        let state = lock(&self.processes).get(&data.process).cloned();
        match state {
            Some(state) => state.output(data.stream, &data.bytes, data.process),
            None => log::debug!("output for unknown process {}", data.process),
        }
    }

    /// Marks the connection closed: fails every waiting request and wakes stdin writers.
    fn close(&self, reason: String) {
        let mut pending = lock(&self.pending);
        pending.closed = Some(reason);
        pending.waiting.clear(); // Dropping the senders wakes their receivers.
        drop(pending);
        for state in lock(&self.processes).values() {
            state.window_grew.notify_all();
        }
    }
}

/// The reader thread's body: dispatches frames until the connection ends.
pub(crate) fn run(shared: &Shared, mut frames: FrameReader<BufReader<UnixStream>>) {
    let reason = loop {
        match frames.read_frame() {
            Ok(None) => break "the agent closed the connection".to_owned(),
            Ok(Some(Frame::Control(json))) => {
                if let Err(reason) = shared.on_control(&json) {
                    break reason;
                }
            }
            Ok(Some(Frame::Data(data))) => shared.on_data(&data),
            Err(e) => break format!("bad frame from the agent: {}", super::chain(&e)),
        }
    };
    log::debug!("agent connection closed: {reason}");
    shared.close(reason);
}

/// Locks a mutex, ignoring poisoning (a panicking sink must not take the client down).
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
