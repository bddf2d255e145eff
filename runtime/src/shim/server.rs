//! The shim's control socket `shim.sock`: newline-delimited JSON requests
//! (`{"op":"kill","signal":N}`, `{"op":"stop","timeout":S}`, `{"op":"resize","rows":R,
//! "cols":C}`, `{"op":"wait"}`, `{"op":"pause","paused":B}`, `{"op":"connect","attachment":
//! {...}}`, `{"op":"disconnect","network":N}`, `{"op":"attach","stdin":B}`), each answered
//! with one JSON
//! line (`{"ok":true}`, `{"exit_code":N}` or `{"error":"..."}`). After an attach's answer the
//! connection carries frames `[u8 stream][u32 BE len][bytes]`: 0 stdin (client to shim,
//! length 0 = end of input), 1 stdout, 2 stderr, 3 exit (`i32 BE` code, the last frame).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::run::Shared;

/// Frame stream ids.
pub const STDIN: u8 = 0;
/// Stdout frames.
pub const STDOUT: u8 = 1;
/// Stderr frames.
pub const STDERR: u8 = 2;
/// The exit frame.
pub const EXIT: u8 = 3;
/// Stream id: why husk could not run the workload (UTF-8, before the exit frame).
pub const ERROR: u8 = 4;
/// How long a slow attached client may block output before it is dropped.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a signal waits for a workload that is being started.
const SIGNAL_START_WAIT: Duration = Duration::from_secs(2);
/// How long a network change waits for a sandbox that is being made (a VM boot under
/// an emulating KVM takes minutes).
const START_WAIT: Duration = Duration::from_secs(600);

/// A control request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Signal the workload.
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// `signal` (SIGTERM if absent), SIGKILL after `timeout` seconds; no more restarts.
    Stop {
        /// Seconds.
        timeout: u64,
        /// The first signal.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
    },
    /// tty size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Until the container will not run again.
    Wait,
    /// Pause (`true`) or resume the running workload's sandbox.
    Pause {
        /// Pause or resume.
        paused: bool,
    },

    /// Join a network while running (`network connect`).
    Connect {
        /// The network, its aliases for the container and `--ip`.
        attachment: crate::network::Attachment,
    },
    /// Leave a network while running (`network disconnect`).
    Disconnect {
        /// The network's name or ID.
        network: String,
    },

    /// Stream output (and stdin).
    Attach {
        /// Forward stdin.
        stdin: bool,
    },
}

/// A control answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Answer {
    /// Success.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ok: bool,
    /// `wait`'s result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Answer {
    /// Success, or the failure's message.
    fn of(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Self {
                ok: true,
                ..Self::default()
            },
            Err(e) => Self {
                error: Some(e),
                ..Self::default()
            },
        }
    }
}

/// An attached client's output side.
pub(crate) struct Client(UnixStream);

impl Client {
    /// Sends a frame; false when the client is gone.
    pub fn send(&self, stream: u8, bytes: &[u8]) -> bool {
        write_frame(&self.0, stream, bytes).is_ok()
    }

    /// Sends the error frame (if husk failed) and the exit frame, and closes the output
    /// side.
    pub fn exit(self, code: i32, error: &str) {
        if !error.is_empty() {
            let _ = write_frame(&self.0, ERROR, error.as_bytes());
        }
        let _ = write_frame(&self.0, EXIT, &code.to_be_bytes());
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

/// Writes one frame.
pub fn write_frame(mut w: &UnixStream, stream: u8, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(5 + bytes.len());
    frame.push(stream);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(bytes);
    w.write_all(&frame)
}

/// Reads one frame; `None` at end of stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > agent_proto::MAX_DATA {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    Ok(Some((head[0], bytes)))
}

/// Binds `<dir>/shim.sock` (replacing a stale one).
pub fn bind(dir: &Path) -> std::io::Result<UnixListener> {
    let sock = crate::sockpath::short(dir, crate::container::files::SHIM_SOCKET)?;
    let _ = std::fs::remove_file(sock.path());
    UnixListener::bind(sock.path())
}

/// Accepts connections until the process ends.
pub(crate) fn serve(shared: &Arc<Shared>, listener: UnixListener) {
    for conn in listener.incoming().flatten() {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || handle(&shared, conn));
    }
}

fn answer(mut conn: &UnixStream, a: &Answer) {
    if let Ok(mut json) = serde_json::to_vec(a) {
        json.push(b'\n');
        let _ = conn.write_all(&json);
    }
}

fn handle(shared: &Arc<Shared>, conn: UnixStream) {
    let mut reader = match conn.try_clone() {
        Ok(c) => BufReader::new(c),
        Err(_) => return,
    };
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let req = match serde_json::from_str::<Request>(&line) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                &conn,
                &Answer {
                    error: Some(format!("bad request: {e}")),
                    ..Answer::default()
                },
            );
        }
    };
    let ok = Answer::of(Ok(()));
    // Until this request is answered the shim does not exit (an attach has had its exit
    // frame by then and needs no such hold).
    let _answering = (!matches!(req, Request::Attach { .. })).then(|| Answering::new(shared));
    match req {
        Request::Kill { signal } => {
            // As docker: the stop signal (SIGTERM) and SIGKILL end the restarts; other
            // signals (SIGHUP to reload, SIGUSR1, ...) leave the policy alone.
            let ends = signal == libc::SIGTERM || signal == libc::SIGKILL;
            let r = signal_workload(shared, signal, ends);
            answer(&conn, &Answer::of(r));
        }
        Request::Stop { timeout, signal } => {
            stop(
                shared,
                Duration::from_secs(timeout),
                signal.unwrap_or(libc::SIGTERM),
            );
            answer(&conn, &ok);
        }
        Request::Resize { rows, cols } => {
            let process = {
                let mut inner = shared.lock();
                inner.size = Some((rows, cols));
                inner.process.clone()
            };
            if let Some(p) = process {
                let _ = p.resize(rows, cols);
            }
            answer(&conn, &ok);
        }
        Request::Wait => {
            let mut guard = shared.lock();
            // A waiter that hung up (a client's timeout) ends this thread too, so that a
            // container that runs for days does not gather one blocked thread per look.
            loop {
                let (g, _) = shared
                    .changed
                    .wait_timeout_while(guard, Duration::from_secs(1), |i| i.finished.is_none())
                    .unwrap_or_else(|p| p.into_inner());
                guard = g;
                if guard.finished.is_some() {
                    break;
                }
                if hung_up(&conn) {
                    return;
                }
            }
            let code = guard.finished;
            drop(guard);
            answer(
                &conn,
                &Answer {
                    exit_code: code,
                    ..Answer::default()
                },
            );
        }
        Request::Attach { stdin } => attach(shared, conn, reader, stdin),
        Request::Pause { paused } => {
            let r = pause(shared, paused);
            answer(&conn, &Answer::of(r));
        }
        Request::Connect { attachment } => {
            let r = rewire(shared, |w| w.connect(&attachment));
            answer(&conn, &Answer::of(r));
        }
        Request::Disconnect { network } => {
            let r = rewire(shared, |w| w.disconnect(&network));
            answer(&conn, &Answer::of(r));
        }
    }
}

/// `network connect`/`disconnect` of the running sandbox (the configuration already
/// has the change). A sandbox being made is waited for; with none (the restart policy's
/// back-off) the next one takes the change from the configuration.
fn rewire(
    shared: &Shared,
    change: impl FnOnce(
        &crate::sandbox::wiring::Wiring,
    ) -> Result<(), crate::sandbox::wiring::WiringError>,
) -> Result<(), String> {
    let guard = shared.lock();
    let (guard, _) = shared
        .changed
        .wait_timeout_while(guard, START_WAIT, |i| i.starting && i.wiring.is_none())
        .unwrap_or_else(|p| p.into_inner());
    if guard.paused {
        let name = &shared.config.name;
        return Err(format!(
            "Container {name} is paused, unpause the container before changing its networks"
        ));
    }
    let wiring = guard.wiring.clone();
    drop(guard);
    match wiring {
        Some(wiring) => change(&wiring).map_err(|e| agent_proto::error_chain(&e)),
        None => Ok(()),
    }
}

/// docker's `pause`/`unpause`: the running sandbox stops or resumes as a whole, and the
/// state file says so.
fn pause(shared: &Shared, paused: bool) -> Result<(), String> {
    let mut inner = shared.lock();
    let id = &shared.id;
    let Some(pauser) = inner.pauser.clone().filter(|_| inner.process.is_some()) else {
        return Err(format!("Container {id} is not running"));
    };
    match (inner.paused, paused) {
        (true, true) => return Err(format!("Container {id} is already paused")),
        (false, false) => return Err(format!("Container {id} is not paused")),
        _ => {}
    }
    pauser
        .set(paused)
        .map_err(|e| agent_proto::error_chain(&e))?;
    inner.paused = paused;
    drop(inner);
    let _ = shared.store.update_state(id, |s| s.paused = paused);
    Ok(())
}

/// Resumes a paused sandbox before a signal must reach it (`kill`, and each signal of
/// `stop`): a stopped VMM or frozen cgroup would hold it, and `stop` would wait for nothing.
fn resume_if_paused(shared: &Shared) {
    let paused = shared.lock().paused;
    if paused {
        let _ = pause(shared, false);
    }
}

/// One request being answered: counted in `Inner::answering` while it lives.
struct Answering<'a>(&'a Shared);

impl<'a> Answering<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.lock().answering += 1;
        Self(shared)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.lock().answering -= 1;
        self.0.changed.notify_all();
    }
}

fn signal_workload(shared: &Shared, signal: i32, manual: bool) -> Result<(), String> {
    resume_if_paused(shared);
    let process = {
        let mut inner = shared.lock();
        if manual {
            inner.stopped = true;
            shared.changed.notify_all();
        }
        // The workload may be starting: its first output can even arrive before the agent's
        // Started reply. Wait briefly for it rather than lose the signal.
        let (inner, _) = shared
            .changed
            .wait_timeout_while(inner, SIGNAL_START_WAIT, |i| {
                i.process.is_none() && i.finished.is_none()
            })
            .unwrap_or_else(|p| p.into_inner());
        inner.process.clone()
    };
    match process {
        Some(p) => p.signal(signal).map_err(|e| agent_proto::error_chain(&e)),
        None => Err(format!("container {} is not running", shared.id)),
    }
}

/// `first` (a zero timeout: SIGKILL at once), then SIGKILL after `timeout`; returns once
/// the run has ended.
fn stop(shared: &Shared, timeout: Duration, first: i32) {
    let runs = {
        let mut inner = shared.lock();
        inner.stopped = true;
        shared.changed.notify_all();
        inner.runs
    };
    let sig = if timeout.is_zero() {
        libc::SIGKILL
    } else {
        first
    };
    let _ = signal_workload(shared, sig, false);
    // The run has ended once the shim has recorded it (`runs` moves on after the state
    // file says exited), not merely when the workload's process is gone: `stop` returns
    // only when `ps`/`rmi` see a stopped container.
    let running = |i: &mut super::run::Inner| i.runs == runs && i.finished.is_none();
    let guard = shared.lock();
    let (guard, _) = shared
        .changed
        .wait_timeout_while(guard, timeout, |i| running(i))
        .unwrap_or_else(|p| p.into_inner());
    let still = guard.runs == runs && guard.finished.is_none();
    drop(guard);
    if still {
        let _ = signal_workload(shared, libc::SIGKILL, false);
        let guard = shared.lock();
        let _ = shared
            .changed
            .wait_timeout_while(guard, Duration::from_secs(30), |i| running(i));
    }
}

fn attach(shared: &Arc<Shared>, conn: UnixStream, mut reader: BufReader<UnixStream>, stdin: bool) {
    let _ = conn.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
    let Ok(out) = conn.try_clone() else { return };
    {
        let mut inner = shared.lock();
        answer(
            &conn,
            &Answer {
                ok: true,
                ..Answer::default()
            },
        );
        if let Some(code) = inner.finished {
            Client(out).exit(code, "");
            return;
        }
        inner.clients.push(Client(out));
        inner.attached = true;
        shared.changed.notify_all();
    }
    if !(stdin && shared.config.config.open_stdin) {
        return;
    }
    // Wait for the workload, then forward stdin frames to it.
    let stdin = {
        let guard = shared.lock();
        let guard = shared
            .changed
            .wait_while(guard, |i| i.process.is_none() && i.finished.is_none())
            .unwrap_or_else(|p| p.into_inner());
        guard.stdin.clone()
    };
    let Some(stdin) = stdin else { return };
    while let Ok(Some((stream, bytes))) = read_frame(&mut reader) {
        if stream != STDIN {
            continue;
        }
        let mut writer = stdin.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = writer.as_mut() else { return };
        if bytes.is_empty() {
            // The client's end of input: the workload's too.
            if let Some(w) = writer.take() {
                let _ = w.close();
            }
            return;
        }
        if w.write_all(&bytes).is_err() {
            return;
        }
    }
    // The client went away without ending input (a detach): stdin stays open for the next.
}

/// Whether the client at the other end of `conn` has closed it (it sends nothing after its
/// request, so any readable end of file means it is gone).
fn hung_up(conn: &UnixStream) -> bool {
    if conn.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    let gone = match socket2::SockRef::from(conn).peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = conn.set_nonblocking(false);
    gone
}
