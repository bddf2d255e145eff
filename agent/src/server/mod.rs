//! The agent's protocol server (docs/agent-protocol.md): accepts host connections on a
//! [`Listener`] and serves each on its own thread (`conn`), runs and streams processes
//! (`spawn`, `pump`), tracks and reaps them (`procs`), until a host asks for shutdown.
//! Used by the PID 1 path (vsock in a VM, a unix socket in process isolation) and by the
//! host-process mode (a unix socket, nothing else touched).

mod conn;
mod namespaces;
mod outbox;
mod procs;
mod pump;
mod spawn;

use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::console::say;
use crate::eventfd::{EventFd, EventFdError, poll_pair};
use crate::listen::Listener;
use crate::reaper::Reaper;
use procs::Table;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The shutdown flag could not be made.
    #[error("cannot set up the server")]
    EventFd(#[from] EventFdError),
    /// The reaper thread could not be started.
    #[error("cannot start the reaper thread")]
    Reaper(#[source] io::Error),
    /// Waiting for connections failed.
    #[error("cannot accept connections")]
    Accept(#[source] io::Error),
}

/// What every connection shares.
#[derive(Debug)]
struct Shared {
    table: Arc<Table>,
    stop: EventFd,
}

impl Shared {
    /// Ends the accept loop (after a shutdown request).
    fn stop(&self) {
        if let Err(e) = self.stop.set() {
            say!("cannot stop the server: {e}");
        }
    }
}

/// Serves connections on `listener` until a host sends `Shutdown` (then every process has
/// been killed). `reaper` must have been created before any thread was started.
pub fn serve(listener: &Listener, reaper: Arc<Reaper>) -> Result<(), ServerError> {
    let table = Arc::new(Table::default());
    table.start_reaper(reaper).map_err(ServerError::Reaper)?;
    let shared = Arc::new(Shared {
        table,
        stop: EventFd::new()?,
    });
    let mut number = 0u64;
    loop {
        let ready = poll_pair(listener.as_fd(), Some(shared.stop.as_fd()), -1)
            .map_err(ServerError::Accept)?;
        if ready.is_some_and(|r| r.second) {
            say!("shutdown requested");
            return Ok(());
        }
        let conn = match listener.accept() {
            Ok(conn) => conn,
            // The peer may give up between poll and accept; resource limits pass.
            Err(e) => {
                say!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        number += 1;
        let shared = Arc::clone(&shared);
        let started = crate::workers::run(move || conn::serve(conn, shared, number));
        if let Err(e) = started {
            say!("connection {number}: cannot start its thread: {e}");
        }
    }
}

/// Locks a mutex, ignoring poisoning: a panicking agent thread ends the whole agent (the
/// panic hook resets), so a poisoned lock is never observed in practice.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
