//! Host-process mode: the agent as an ordinary process that only serves the protocol on the
//! address it was given. It never mounts, sets a hostname or reboots, and does not need to be
//! PID 1; processes it starts die with it (SIGKILL as parent-death signal).

use std::sync::Arc;

use crate::console::say;
use crate::listen::{ListenError, ListenSpec, Listener};
use crate::reaper::{Reaper, ReaperError};
use crate::server::{self, ServerError};

/// Errors from host-process mode.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// SIGCHLD handling could not be set up.
    #[error("child reaping setup failed")]
    Reaper(#[from] ReaperError),
    /// The address could not be bound.
    #[error("cannot listen")]
    Listen(#[from] ListenError),
    /// The server failed.
    #[error("protocol server failed")]
    Server(#[from] ServerError),
}

/// Serves on `spec` until a host asks for shutdown; the socket file is removed on the way out.
pub fn serve(spec: &ListenSpec) -> Result<(), HostError> {
    // Before any thread: the mask is inherited, and binding changes the umask for a moment.
    let reaper = Arc::new(Reaper::new()?);
    let listener = Listener::bind(spec)?;
    say!("serving the host protocol on {spec} (host-process mode)");
    server::serve(&listener, reaper)?;
    Ok(())
}
