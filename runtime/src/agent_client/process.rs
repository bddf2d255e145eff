//! Handles on processes started through an [`AgentClient`](super::AgentClient): waiting for
//! the exit code, signals, terminal size, and a [`Stdin`] writer that respects the agent's
//! flow-control window (it blocks while the process is not reading).

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{MAX_DATA, Reply, Request, StreamId, TermSize};

use super::demux::{ProcState, Shared, Sink, lock};
use super::{ClientError, request};

/// Largest stdin chunk per data frame: small enough to interleave with other traffic.
const STDIN_CHUNK: usize = 64 * 1024;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessExit {
    /// Docker-style: the exit status, 128 + signal, 126 cannot execute, 127 not found.
    pub code: i32,
    /// The agent's account of it, for people.
    pub detail: String,
    /// The agent saw the kernel's OOM killer end it.
    pub oom_killed: bool,
}

/// A process started on the agent. Dropping it does not stop the process (closing the
/// client does).
pub struct Process {
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Arc<ProcState>,
    pub(crate) id: u32,
    pub(crate) pid: Option<i32>,
    /// Set when the program could not be started at all.
    pub(crate) early_exit: Option<ProcessExit>,
    pub(crate) stdin: bool,
    pub(crate) timeout: Duration,
}

impl Process {
    /// The client's number for it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its pid inside the sandbox; `None` if it could not be started.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// A writer for its stdin (if it was started with stdin). Dropping the writer, or
    /// [`Stdin::close`], ends stdin.
    pub fn stdin(&self) -> Result<Stdin, ClientError> {
        if !self.stdin || self.early_exit.is_some() {
            return Err(ClientError::NoStdin(self.id));
        }
        Ok(Stdin {
            shared: Arc::clone(&self.shared),
            state: Arc::clone(&self.state),
            id: self.id,
            closed: false,
        })
    }

    /// Sends it a signal.
    pub fn signal(&self, signal: i32) -> Result<(), ClientError> {
        let req = Request::Signal {
            process: self.id,
            signal,
        };
        expect_ok(request(&self.shared, &req, Some(self.timeout))?)
    }

    /// Sets its terminal size (tty processes only).
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        let req = Request::Resize {
            process: self.id,
            size: TermSize { rows, cols },
        };
        expect_ok(request(&self.shared, &req, Some(self.timeout))?)
    }

    /// Waits until it has exited and all its output has reached the sinks.
    pub fn wait(&self) -> Result<ProcessExit, ClientError> {
        if let Some(exit) = &self.early_exit {
            self.state.finish();
            lock(&self.shared.processes).remove(&self.id);
            return Ok(exit.clone());
        }
        let reply = request(&self.shared, &Request::Wait { process: self.id }, None)?;
        let exit = match reply {
            Reply::Exited {
                code,
                detail,
                oom_killed,
                ..
            } => ProcessExit {
                code,
                detail,
                oom_killed,
            },
            other => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        self.state.finish();
        lock(&self.shared.processes).remove(&self.id);
        Ok(exit)
    }
}

fn expect_ok(reply: Reply) -> Result<(), ClientError> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .field("early_exit", &self.early_exit)
            .finish_non_exhaustive()
    }
}

/// A process's stdin. Writes block while the agent's window for it is used up.
pub struct Stdin {
    shared: Arc<Shared>,
    state: Arc<ProcState>,
    id: u32,
    closed: bool,
}

impl Stdin {
    /// Ends stdin: the process reads end of file (not forwarded to a tty).
    pub fn close(mut self) -> Result<(), ClientError> {
        self.send_eof()
    }

    fn send_eof(&mut self) -> Result<(), ClientError> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.send(&[])
    }

    fn send(&self, bytes: &[u8]) -> Result<(), ClientError> {
        lock(&self.shared.writer)
            .write_data(self.id, StreamId::Stdin, bytes)
            .map_err(ClientError::Send)
    }

    /// Waits for window and takes up to `want` bytes of it.
    fn reserve(&self, want: usize) -> io::Result<usize> {
        let mut window = lock(&self.state.window);
        loop {
            if window.finished {
                let msg = format!("process {} has exited", self.id);
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, msg));
            }
            if let Some(reason) = self.shared.closed() {
                return Err(io::Error::other(ClientError::Disconnected(reason)));
            }
            if window.bytes > 0 {
                let n = want.min(usize::try_from(window.bytes).unwrap_or(usize::MAX));
                window.bytes -= n as u64;
                return Ok(n);
            }
            window = self
                .state
                .window_grew
                .wait(window)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl std::fmt::Debug for Stdin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stdin")
            .field("process", &self.id)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Write for Stdin {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.closed {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed"));
        }
        let want = buf.len().min(STDIN_CHUNK).min(MAX_DATA);
        let n = self.reserve(want)?;
        self.send(&buf[..n]).map_err(io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Stdin {
    fn drop(&mut self) {
        let _ = self.send_eof();
    }
}

/// Output to a callback: `sink_fn(|bytes| ...)` as a stdout or stderr sink.
pub fn sink_fn<F: FnMut(&[u8]) + Send + 'static>(f: F) -> Sink {
    Box::new(FnSink(f))
}

struct FnSink<F>(F);

impl<F: FnMut(&[u8]) + Send> Write for FnSink<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
