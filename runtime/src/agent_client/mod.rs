//! The host side of the host↔agent protocol (agent-proto, docs/agent-protocol.md): connect
//! to an agent (a unix socket, or a guest vsock port through the VMM's socket), check its
//! protocol version, start processes, stream their output to writers or callbacks, feed
//! their stdin, signal them and collect docker-style exit codes. Several processes can run at
//! once on one connection; the connection owns them (closing it kills them).
//!
//! One reader thread per client dispatches everything the agent sends (`demux`); callers
//! block on their own replies. Output sinks run on that thread, so a sink that blocks holds
//! up the whole connection: keep them quick.

mod connect;
mod demux;
mod process;

use std::collections::HashMap;
use std::io::BufReader;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use agent_proto::error_chain as chain;
use agent_proto::{
    ErrorKind, Frame, FrameError, FrameReader, FrameWriter, MessageError, PROTOCOL_VERSION, Reply,
    Request,
};
pub use agent_proto::{ProcessSpec, SandboxSpec, TermSize, User};

pub use connect::{ConnectError, Endpoint, connect_unix, connect_vsock};
pub use demux::Sink;
pub(crate) use demux::lock;
use demux::{Pending, ProcState, Shared};
pub use process::{Process, ProcessExit, Stdin, sink_fn};

/// How long the handshake and ordinary requests may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors from talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be made.
    #[error("cannot connect to the agent")]
    Connect(#[from] ConnectError),
    /// Socket setup (timeouts, cloning the handle) failed.
    #[error("cannot set up the agent connection")]
    Socket(#[source] std::io::Error),
    /// The reader thread could not be started.
    #[error("cannot start the agent connection's reader thread")]
    Thread(#[source] std::io::Error),
    /// No `Ready` could be read.
    #[error("no ready message from the agent")]
    Handshake(#[source] FrameError),
    /// The agent hung up before saying ready.
    #[error("the agent closed the connection before saying ready")]
    HandshakeClosed,
    /// The first message was not `Ready`.
    #[error("the agent's first message was not ready but {0}")]
    NotReady(String),
    /// The agent's message could not be understood.
    #[error("invalid message from the agent")]
    BadMessage(#[source] MessageError),
    /// The agent speaks another protocol version.
    #[error("the agent speaks protocol version {agent}, this host speaks version {host}")]
    Version {
        /// The agent's version.
        agent: u32,
        /// Ours.
        host: u32,
    },
    /// A request could not be encoded.
    #[error("cannot encode a request")]
    Encode(#[source] MessageError),
    /// A request could not be sent.
    #[error("cannot send to the agent")]
    Send(#[source] FrameError),
    /// The connection is closed.
    #[error("the agent connection is closed: {0}")]
    Disconnected(String),
    /// No reply in time.
    #[error("no reply from the agent within {0:?}")]
    Timeout(Duration),
    /// The agent refused the request.
    #[error("the agent refused ({kind:?}): {message}")]
    Agent {
        /// Its error kind.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
    /// A reply that does not fit the request.
    #[error("unexpected reply from the agent: {0}")]
    Unexpected(String),
    /// Stdin was asked for a process started without it (or that never ran).
    #[error("process {0} has no stdin (started without stdin, or never ran)")]
    NoStdin(u32),
}

/// A connection to one agent.
pub struct AgentClient {
    shared: Arc<Shared>,
    stream: UnixStream,
    reader: Option<JoinHandle<()>>,
    agent: String,
    timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("agent", &self.agent)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects to `endpoint` and completes the handshake within `timeout`, which also
    /// bounds every later request except [`Process::wait`].
    pub fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Self, ClientError> {
        Self::handshake(endpoint.connect(timeout)?, timeout)
    }

    /// Takes over a connected stream: reads the agent's `Ready`, checks its version, and
    /// starts the reader thread.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, ClientError> {
        stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Socket)?;
        let mut frames = FrameReader::new(BufReader::new(
            stream.try_clone().map_err(ClientError::Socket)?,
        ));
        let agent = read_ready(&mut frames)?;
        frames
            .get_ref()
            .get_ref()
            .set_read_timeout(None)
            .map_err(ClientError::Socket)?;
        let writer = FrameWriter::new(stream.try_clone().map_err(ClientError::Socket)?);
        let shared = Arc::new(Shared {
            writer: Mutex::new(writer),
            next_id: AtomicU64::new(1),
            next_process: AtomicU32::new(1),
            pending: Mutex::new(Pending::default()),
            processes: Mutex::new(HashMap::new()),
        });
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("agent-client".into())
            .spawn(move || demux::run(&reader_shared, frames))
            .map_err(ClientError::Thread)?;
        Ok(Self {
            shared,
            stream,
            reader: Some(reader),
            agent,
            timeout,
        })
    }

    /// Bounds every later request (except [`Process::wait`]) by `timeout` instead of the
    /// connection's: a slow guest may need a longer hang guard than a connect attempt.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The agent's build version, from its `Ready`.
    pub fn agent_version(&self) -> &str {
        &self.agent
    }

    /// One round trip.
    pub fn ping(&self) -> Result<(), ClientError> {
        match request(&self.shared, &Request::Ping, Some(self.timeout))? {
            Reply::Pong => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Starts `spec`, sending its stdout and stderr to the sinks (with a tty, everything goes
    /// to `stdout`). A program that cannot be started is not an error: its [`Process`]
    /// reports 126 or 127 from [`Process::wait`].
    pub fn start(
        &self,
        spec: &ProcessSpec,
        stdout: Sink,
        stderr: Sink,
    ) -> Result<Process, ClientError> {
        let id = self.shared.next_process.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ProcState::new(stdout, stderr));
        // Registered first: output may arrive before the reply.
        lock(&self.shared.processes).insert(id, Arc::clone(&state));
        let req = Request::Start {
            process: id,
            spec: spec.clone(),
        };
        let reply = request(&self.shared, &req, Some(self.timeout)).inspect_err(|_| {
            lock(&self.shared.processes).remove(&id);
        })?;
        let (pid, early_exit) = match reply {
            Reply::Started { pid, .. } => (Some(pid), None),
            Reply::Exited { code, detail, .. } => (
                None,
                Some(ProcessExit {
                    code,
                    detail,
                    oom_killed: false,
                }),
            ),
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        Ok(Process {
            shared: Arc::clone(&self.shared),
            state,
            id,
            pid,
            early_exit,
            stdin: spec.stdin,
            timeout: self.timeout,
        })
    }

    /// Runs `spec` to completion: feeds it `stdin` (if given; the spec's `stdin` flag is set
    /// accordingly), streams its output to the sinks and returns its exit.
    pub fn run(
        &self,
        spec: &ProcessSpec,
        stdin: Option<&mut dyn std::io::Read>,
        stdout: Sink,
        stderr: Sink,
    ) -> Result<ProcessExit, ClientError> {
        let mut spec = spec.clone();
        spec.stdin = stdin.is_some();
        let process = self.start(&spec, stdout, stderr)?;
        if let (Some(input), None) = (stdin, &process.early_exit) {
            let mut writer = process.stdin()?;
            // A process may exit without reading all of it; the wait below tells.
            if let Err(e) = std::io::copy(input, &mut writer) {
                log::debug!("stdin of process {} ended early: {e}", process.id());
            }
            writer.close()?;
        }
        process.wait()
    }

    /// Has the agent assemble the container's root filesystem (layers, scratch, /proc, /dev,
    /// /etc/hosts, ...) and move into it; every process started afterwards runs there. Once
    /// per sandbox: a second call is refused ([`ErrorKind::Setup`]), as is a missing device.
    pub fn setup(&self, spec: &SandboxSpec) -> Result<(), ClientError> {
        let req = Request::Setup { spec: spec.clone() };
        match request(&self.shared, &req, Some(self.timeout))? {
            Reply::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Has the agent assemble an image's rootfs ahead of any setup (an image template's
    /// guest: `Request::PrepareImage`), reading the programs `warm` (searched in `path`)
    /// into the page cache.
    pub fn prepare_image(
        &self,
        layers: Vec<String>,
        layer_fstype: &str,
        warm: &[String],
        path: &str,
    ) -> Result<(), ClientError> {
        let req = Request::PrepareImage {
            layers,
            layer_fstype: layer_fstype.to_owned(),
            warm: warm.to_vec(),
            path: path.to_owned(),
        };
        match request(&self.shared, &req, Some(self.timeout))? {
            Reply::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Changes the running sandbox's interfaces (`network connect`/`disconnect`).
    pub fn network(
        &self,
        add: Vec<agent_proto::InterfaceSpec>,
        remove: Vec<agent_proto::InterfaceSpec>,
        resolv_conf: Option<String>,
    ) -> Result<(), ClientError> {
        let req = Request::Network {
            add,
            remove,
            resolv_conf,
        };
        match request(&self.shared, &req, Some(self.timeout))? {
            Reply::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the agent to kill everything and end the sandbox (a VM resets, a host-process
    /// agent exits).
    pub fn shutdown(self) -> Result<(), ClientError> {
        match request(&self.shared, &Request::Shutdown, Some(self.timeout))? {
            Reply::Ok => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl Drop for AgentClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads the agent's first message, which must be a `Ready` of our protocol version.
fn read_ready(frames: &mut FrameReader<BufReader<UnixStream>>) -> Result<String, ClientError> {
    let json = match frames.read_frame().map_err(ClientError::Handshake)? {
        None => return Err(ClientError::HandshakeClosed),
        Some(Frame::Data(d)) => {
            return Err(ClientError::NotReady(format!(
                "output for process {}",
                d.process
            )));
        }
        Some(Frame::Control(json)) => json,
    };
    let reply = match agent_proto::decode::<Reply>(&json) {
        Ok((_, reply)) => reply,
        Err(MessageError::Version { got, .. }) => {
            return Err(ClientError::Version {
                agent: got,
                host: PROTOCOL_VERSION,
            });
        }
        Err(e) => return Err(ClientError::BadMessage(e)),
    };
    match reply {
        Reply::Ready { version, agent } if version == PROTOCOL_VERSION => Ok(agent),
        Reply::Ready { version, .. } => Err(ClientError::Version {
            agent: version,
            host: PROTOCOL_VERSION,
        }),
        other => Err(ClientError::NotReady(format!("{other:?}"))),
    }
}

/// Sends `req` and waits (at most `timeout`, if given) for its reply; an agent error reply
/// becomes [`ClientError::Agent`].
fn request(
    shared: &Shared,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Reply, ClientError> {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let json = agent_proto::encode(Some(id), req).map_err(ClientError::Encode)?;
    let (tx, rx) = mpsc::channel();
    {
        let mut pending = lock(&shared.pending);
        if let Some(reason) = &pending.closed {
            return Err(ClientError::Disconnected(reason.clone()));
        }
        pending.waiting.insert(id, tx);
    }
    let forget = || lock(&shared.pending).waiting.remove(&id);
    if let Err(e) = lock(&shared.writer).write_control(&json) {
        forget();
        return Err(ClientError::Send(e));
    }
    let received = match timeout {
        Some(t) => rx.recv_timeout(t).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => ClientError::Timeout(t),
            mpsc::RecvTimeoutError::Disconnected => disconnected(shared),
        }),
        None => rx.recv().map_err(|_| disconnected(shared)),
    };
    let reply = received.inspect_err(|_| {
        forget();
    })?;
    match reply {
        Reply::Error { kind, message } => Err(ClientError::Agent { kind, message }),
        other => Ok(other),
    }
}

fn disconnected(shared: &Shared) -> ClientError {
    ClientError::Disconnected(shared.closed().unwrap_or_else(|| "reader stopped".into()))
}
