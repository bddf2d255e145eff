//! One host connection: says `Ready`, then reads frames and carries out requests until the
//! host hangs up, the connection breaks, or the host asks for shutdown. Frames and messages
//! that are malformed, oversized or from another protocol version get an error reply and the
//! connection carries on. The connection owns the processes it started: when it ends, their
//! process groups are killed.

use std::collections::HashMap;
use std::io::BufReader;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use agent_proto::{
    Data, ErrorKind, Frame, FrameError, FrameReader, PROTOCOL_VERSION, ProcessSpec, Reply, Request,
    STDIN_WINDOW, StreamId, TermSize,
};

use crate::console::say;
use crate::eventfd::{EventFd, EventFdError};
use crate::exec;
use crate::listen::Conn;
use crate::server::Shared;
use crate::server::outbox::Outbox;
use crate::server::procs::Proc;
use crate::server::pump::{self, StdinFeed};
use crate::server::spawn::{self, SpawnError, Spawned};

/// Bytes buffered from the connection per read.
const READ_BUFFER: usize = 64 * 1024;
/// Highest signal number Linux has (SIGRTMAX).
const MAX_SIGNAL: i32 = 64;

/// Why a request was refused: the error reply to send.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Refusal {
    kind: ErrorKind,
    message: String,
}

fn refuse(kind: ErrorKind, message: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        message: message.into(),
    }
}

/// Failures starting a process that are the agent's, not the workload's.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// The spec is unusable or no pty could be had.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The exit flag could not be made.
    #[error(transparent)]
    EventFd(#[from] EventFdError),
}

impl From<StartError> for Refusal {
    fn from(err: StartError) -> Self {
        let kind = match err {
            StartError::Spawn(SpawnError::Invalid(_) | SpawnError::User(_)) => {
                ErrorKind::BadRequest
            }
            _ => ErrorKind::Internal,
        };
        refuse(kind, crate::chain(&err))
    }
}

/// Whether to keep reading requests.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// Serves one connection until it ends.
pub fn serve(conn: Conn, shared: Arc<Shared>, number: u64) {
    let writer = match conn.try_clone() {
        Ok(writer) => writer,
        Err(e) => return say!("connection {number}: cannot split: {e}"),
    };
    let outbox = Arc::new(Outbox::new(writer));
    let ready = Reply::Ready {
        version: PROTOCOL_VERSION,
        agent: crate::init::VERSION.to_owned(),
    };
    if let Err(e) = outbox.send(None, &ready) {
        return say!("connection {number}: {}", crate::chain(&e));
    }
    let mut session = Session {
        outbox,
        shared,
        procs: HashMap::new(),
    };
    let mut frames = FrameReader::new(BufReader::with_capacity(READ_BUFFER, conn));
    loop {
        let flow = match frames.read_frame() {
            Ok(None) => break,
            Ok(Some(Frame::Control(json))) => session.control(&json),
            Ok(Some(Frame::Data(data))) => session.data(data),
            Err(e) if e.is_recoverable() => session.bad_frame(&e),
            Err(e) => {
                say!("connection {number}: {}", crate::chain(&e));
                break;
            }
        };
        if flow == Flow::Stop {
            break;
        }
    }
    session.close();
}

/// One entry per process the host started on this connection.
#[derive(Debug)]
struct Entry {
    proc: Arc<Proc>,
    stdin: Option<StdinFeed>,
    tty: Option<OwnedFd>,
}

struct Session {
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    procs: HashMap<u32, Entry>,
}

impl Session {
    fn reply(&self, id: Option<u64>, result: Result<Reply, Refusal>) -> Flow {
        let sent = match result {
            Ok(reply) => self.outbox.send(id, &reply),
            Err(r) => self.outbox.error(id, r.kind, r.message),
        };
        match sent {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Stop, // The host is gone.
        }
    }

    fn bad_frame(&self, err: &FrameError) -> Flow {
        let kind = match err {
            FrameError::TooLarge { .. } => ErrorKind::TooLarge,
            _ => ErrorKind::BadFrame,
        };
        self.reply(None, Err(refuse(kind, err.to_string())))
    }

    fn control(&mut self, json: &[u8]) -> Flow {
        let (id, request) = match agent_proto::decode::<Request>(json) {
            Ok(decoded) => decoded,
            Err(e) => return self.reply(e.id(), Err(refuse(e.kind(), crate::chain(&e)))),
        };
        let Some(id) = id else {
            return self.reply(
                None,
                Err(refuse(ErrorKind::BadRequest, "request without an id")),
            );
        };
        let result = match request {
            Request::Ping => Ok(Reply::Pong),
            Request::Start { process, spec } => self.start(process, &spec),
            Request::Signal { process, signal } => self.signal(process, signal),
            Request::Resize { process, size } => self.resize(process, size),
            Request::Wait { process } => match self.entry(process) {
                Ok(entry) => {
                    entry.proc.wait(id); // Replies when the process has finished.
                    return Flow::Continue;
                }
                Err(refusal) => Err(refusal),
            },
            Request::Setup { spec } => crate::rootfs::setup(&spec)
                .map(|()| Reply::Ok)
                .map_err(|e| refuse(ErrorKind::Setup, crate::chain(&e))),
            Request::PrepareImage {
                layers,
                layer_fstype,
                warm,
                path,
            } => crate::rootfs::prepare_image(&layers, &layer_fstype, &warm, &path)
                .map(|()| Reply::Ok)
                .map_err(|e| refuse(ErrorKind::Setup, crate::chain(&e))),
            Request::Network {
                add,
                remove,
                resolv_conf,
            } if crate::rootfs::is_done() => {
                crate::network::change(&add, &remove, resolv_conf.as_deref())
                    .map(|()| Reply::Ok)
                    .map_err(|e| refuse(ErrorKind::Network, crate::chain(&e)))
            }
            // Only a set-up sandbox's interfaces are the host's to change.
            Request::Network { .. } => Err(refuse(
                ErrorKind::Network,
                "no sandbox has been set up on this agent",
            )),
            Request::Shutdown => {
                self.shared.table.kill_all();
                self.reply(Some(id), Ok(Reply::Ok));
                self.shared.stop();
                return Flow::Stop;
            }
        };
        self.reply(Some(id), result)
    }

    fn entry(&self, process: u32) -> Result<&Entry, Refusal> {
        self.procs
            .get(&process)
            .ok_or_else(|| refuse(ErrorKind::UnknownProcess, format!("no process {process}")))
    }

    fn start(&mut self, process: u32, spec: &ProcessSpec) -> Result<Reply, Refusal> {
        self.procs.retain(|_, e| !e.proc.collected());
        if self.procs.contains_key(&process) {
            let msg = format!("process number {process} is in use");
            return Err(refuse(ErrorKind::DuplicateProcess, msg));
        }
        spawn::validate(spec).map_err(StartError::from)?;
        let spec = &spawn::prepare(spec).map_err(StartError::from)?;
        let outbox = Arc::clone(&self.outbox);
        let (proc, spawned) = self
            .shared
            .table
            .spawn(|| start_locked(process, spec, outbox))?;
        let mut entry = Entry {
            proc: Arc::clone(&proc),
            stdin: None,
            tty: None,
        };
        let reply = match spawned {
            Some(spawned) => self.attach(&mut entry, spawned, spec.tty)?,
            None => proc.exit_reply().unwrap_or(Reply::Ok),
        };
        self.procs.insert(process, entry);
        Ok(reply)
    }

    /// Starts the stdio threads of a fresh process.
    fn attach(&self, entry: &mut Entry, spawned: Spawned, tty: bool) -> Result<Reply, Refusal> {
        let proc = &entry.proc;
        pump::start_output(proc, StreamId::Stdout, spawned.stdout);
        if let Some(stderr) = spawned.stderr {
            pump::start_output(proc, StreamId::Stderr, stderr);
        }
        entry.tty = spawned.tty;
        if let Some(stdin) = spawned.stdin {
            match pump::start_stdin(proc, stdin, tty) {
                Ok(feed) => entry.stdin = Some(feed),
                Err(e) => {
                    self.shared.table.kill_groups([proc]);
                    return Err(refuse(ErrorKind::Internal, format!("no stdin thread: {e}")));
                }
            }
        }
        Ok(Reply::Started {
            process: proc.id(),
            pid: spawned.pid,
        })
    }

    fn signal(&self, process: u32, signal: i32) -> Result<Reply, Refusal> {
        if !(1..=MAX_SIGNAL).contains(&signal) {
            return Err(refuse(ErrorKind::BadRequest, format!("no signal {signal}")));
        }
        let entry = self.entry(process)?;
        self.shared
            .table
            .signal(&entry.proc, signal)
            .map_err(|e| match e {
                crate::server::procs::SignalError::NotRunning(_) => {
                    refuse(ErrorKind::NotRunning, e.to_string())
                }
                other => refuse(ErrorKind::Internal, crate::chain(&other)),
            })?;
        Ok(Reply::Ok)
    }

    fn resize(&self, process: u32, size: TermSize) -> Result<Reply, Refusal> {
        let entry = self.entry(process)?;
        let tty = entry.tty.as_ref().ok_or_else(|| {
            refuse(
                ErrorKind::BadRequest,
                format!("process {process} has no tty"),
            )
        })?;
        spawn::resize(tty, size).map_err(|e| refuse(ErrorKind::Internal, e.to_string()))?;
        Ok(Reply::Ok)
    }

    /// Stdin from the host, within the process's window.
    fn data(&mut self, data: Data) -> Flow {
        match self.feed(data) {
            Ok(()) => Flow::Continue,
            Err(refusal) => self.reply(None, Err(refusal)),
        }
    }

    fn feed(&mut self, data: Data) -> Result<(), Refusal> {
        if data.stream != StreamId::Stdin {
            return Err(refuse(ErrorKind::BadFrame, "the host may only send stdin"));
        }
        let process = data.process;
        let entry = self.procs.get_mut(&process).ok_or_else(|| {
            refuse(
                ErrorKind::UnknownProcess,
                format!("stdin for unknown process {process}"),
            )
        })?;
        let flow = |m: String| refuse(ErrorKind::FlowControl, m);
        let Some(feed) = entry.stdin.as_mut() else {
            return Err(flow(format!("process {process} was started without stdin")));
        };
        if feed.ended {
            return Err(flow(format!(
                "stdin of process {process} has already ended"
            )));
        }
        let len = u32::try_from(data.bytes.len()).unwrap_or(u32::MAX);
        let before = feed.unacked.fetch_add(len, Ordering::AcqRel);
        if before.saturating_add(len) > STDIN_WINDOW {
            feed.unacked.fetch_sub(len, Ordering::AcqRel);
            let m = format!("stdin of process {process} exceeds the window of {STDIN_WINDOW}");
            return Err(flow(m));
        }
        feed.ended = data.bytes.is_empty();
        // The feeder only stops once this queue is dropped.
        let _ = feed.queue.send(data.bytes);
        Ok(())
    }

    /// The connection is over: its processes go with it.
    fn close(self) {
        let procs: Vec<Arc<Proc>> = self.procs.values().map(|e| Arc::clone(&e.proc)).collect();
        self.shared.table.kill_groups(&procs);
    }
}

/// Spawns with the process table locked: a process that cannot run is a workload result
/// (126/127), reported as an already finished process.
fn start_locked(
    process: u32,
    spec: &ProcessSpec,
    outbox: Arc<Outbox>,
) -> Result<(Arc<Proc>, Option<Spawned>), StartError> {
    let exited = EventFd::new()?;
    match spawn::spawn(spec) {
        Ok(spawned) => {
            let outputs = if spawned.stderr.is_some() { 2 } else { 1 };
            let name = spawn::display_name(spec);
            let proc = Proc::running(process, spawned.pid, name, outbox, outputs, exited);
            Ok((proc, Some(spawned)))
        }
        Err(SpawnError::Start(name, err)) => {
            let exit = exec::spawn_failure(&name, &err);
            let proc = Proc::failed(process, outbox, exit.code, exit.detail, exited)?;
            Ok((proc, None))
        }
        Err(other) => Err(other.into()),
    }
}
