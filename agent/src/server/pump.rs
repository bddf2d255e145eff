//! The threads that move a process's stdio: one output pump per stream (process → host) and
//! one stdin feeder (host → process), so a process that stops reading or writing never stalls
//! the connection or other processes.
//!
//! An output pump reads until end of stream. Once the process has exited it keeps reading
//! only while output keeps coming: if a background process still holds the stream open and
//! nothing arrives for [`DRAIN_IDLE_MS`], the stream is ended. Everything the process wrote
//! before it exited is already in the pipe, so none of it is lost.
//!
//! A pump reports its end only after the process has been reaped, so the last pump, never the
//! reaper thread, sends the `Exited` replies: a host that stops reading blocks that pump, not
//! the reaping of every other connection's processes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};

use agent_proto::{Reply, StreamId};

use crate::console::say;
use crate::eventfd::poll_pair;
use crate::server::procs::Proc;

/// Largest read from a process's output (and so the largest data frame the agent sends).
const OUTPUT_CHUNK: usize = 128 * 1024;
/// After the process exited: how long a stream may stay silent before it is ended.
const DRAIN_IDLE_MS: i32 = 100;
/// Stdin credit is granted in batches of this many bytes (or whenever the queue runs dry).
const CREDIT_BATCH: u32 = agent_proto::STDIN_WINDOW / 4;

/// Starts the pump for one output stream. If the thread cannot be started, the stream counts
/// as ended (the process still finishes).
pub fn start_output(proc: &Arc<Proc>, stream: StreamId, fd: OwnedFd) {
    let pump_proc = Arc::clone(proc);
    let started = crate::workers::run(move || pump_output(&pump_proc, stream, File::from(fd)));
    if let Err(e) = started {
        say!("process {}: cannot start {stream:?} pump: {e}", proc.id());
        proc.output_closed();
    }
}

fn pump_output(proc: &Proc, stream: StreamId, mut source: File) {
    thread_local! {
        /// The worker's read buffer, kept for its next pump (see `workers`).
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        buf.resize(OUTPUT_CHUNK, 0);
        pump_with(proc, stream, &mut source, buf);
    });
    let _ = proc.outbox().data(proc.id(), stream, &[]);
    wait_reaped(proc);
    proc.output_closed();
}

/// Moves `source` to the host until it ends or the process has exited and it stays quiet.
fn pump_with(proc: &Proc, stream: StreamId, source: &mut File, buf: &mut [u8]) {
    let mut exited = false;
    loop {
        let (timeout, exit_fd) = match exited {
            true => (DRAIN_IDLE_MS, None),
            false => (-1, Some(proc.exited_fd())),
        };
        match poll_pair(source.as_fd(), exit_fd, timeout) {
            Ok(None) => break,
            Ok(Some(ready)) => {
                exited |= ready.second;
                if !ready.first {
                    continue;
                }
            }
            Err(e) => {
                say!("process {}: cannot poll {stream:?}: {e}", proc.id());
                break;
            }
        }
        let n = match source.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A pty master reads EIO once no process has the terminal open any more.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                say!("process {}: cannot read {stream:?}: {e}", proc.id());
                break;
            }
        };
        if proc.outbox().data(proc.id(), stream, &buf[..n]).is_err() {
            break; // The connection is gone; its request loop cleans up.
        }
    }
}

/// Blocks until the process has been reaped (a process may close its output long before).
fn wait_reaped(proc: &Proc) {
    loop {
        match poll_pair(proc.exited_fd(), None, -1) {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(e) => {
                say!("process {}: cannot wait for its exit: {e}", proc.id());
                return;
            }
        }
    }
}

/// The host side of a process's stdin: the feeder thread's queue and the flow-control count.
#[derive(Debug)]
pub struct StdinFeed {
    /// Chunks to write; an empty chunk ends stdin.
    pub queue: std::sync::mpsc::Sender<Vec<u8>>,
    /// Bytes received from the host and not yet credited back.
    pub unacked: Arc<AtomicU32>,
    /// The host has ended stdin.
    pub ended: bool,
}

/// Starts the feeder writing to `sink`. With a tty, the end of stdin is not forwarded: a
/// terminal has no end-of-file (closing the master would hang up the session).
pub fn start_stdin(proc: &Arc<Proc>, sink: OwnedFd, tty: bool) -> io::Result<StdinFeed> {
    let (queue, chunks) = std::sync::mpsc::channel();
    let unacked = Arc::new(AtomicU32::new(0));
    let (feed_proc, feed_unacked) = (Arc::clone(proc), Arc::clone(&unacked));
    crate::workers::run(move || {
        feed_stdin(&feed_proc, File::from(sink), &chunks, &feed_unacked, tty);
    })?;
    Ok(StdinFeed {
        queue,
        unacked,
        ended: false,
    })
}

fn feed_stdin(proc: &Proc, sink: File, chunks: &Receiver<Vec<u8>>, unacked: &AtomicU32, tty: bool) {
    let mut sink = Some(sink);
    let mut owed: u32 = 0;
    // Ends when the connection drops the queue.
    while let Some(chunk) = next_chunk(proc, chunks, unacked, &mut owed) {
        if chunk.is_empty() {
            if !tty {
                sink = None; // The process sees end of file.
            }
            continue;
        }
        if sink.as_mut().is_some_and(|f| f.write_all(&chunk).is_err()) {
            sink = None; // It exited or closed stdin: later input is dropped, still credited.
        }
        owed = owed.saturating_add(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
        if owed >= CREDIT_BATCH && !credit(proc, unacked, &mut owed) {
            break;
        }
    }
}

/// The next queued chunk; before blocking for one, pays the credit owed, so the host is
/// never left waiting for window while the agent waits for data.
fn next_chunk(
    proc: &Proc,
    chunks: &Receiver<Vec<u8>>,
    unacked: &AtomicU32,
    owed: &mut u32,
) -> Option<Vec<u8>> {
    match chunks.try_recv() {
        Ok(chunk) => return Some(chunk),
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {}
    }
    if *owed > 0 && !credit(proc, unacked, owed) {
        return None;
    }
    chunks.recv().ok()
}

/// Grants the host the `owed` bytes again; false if the connection is gone.
fn credit(proc: &Proc, unacked: &AtomicU32, owed: &mut u32) -> bool {
    let bytes = std::mem::take(owed);
    unacked.fetch_sub(bytes, Ordering::AcqRel);
    let credit = Reply::Credit {
        process: proc.id(),
        bytes,
    };
    proc.outbox().send(None, &credit).is_ok()
}
