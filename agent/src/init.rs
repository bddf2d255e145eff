//! The agent's boot sequence as PID 1, in order: early mounts, console, command line,
//! hostname, SIGCHLD, listening for the host, ready report, then either the `husk.exec=`
//! workload or the protocol server until shutdown, final reap. Owns the agent-wide error
//! type; how the process ends afterwards is `reset`'s business.

use std::sync::Arc;

use crate::cmdline::{self, CmdlineError, Transport};
use crate::console::{self, ConsoleError, say};
use crate::exec::{self, ExecError};
use crate::hostname::{self, HostnameError};
use crate::listen::{ListenError, ListenSpec, Listener};
use crate::mounts::{self, MountError};
use crate::reaper::{Reaper, ReaperError};
use crate::reset;
use crate::server::{self, ServerError};
use crate::transport::{ConsoleTransport, Ready, Report, TransportError};
use crate::vsock;

/// The agent's version, as reported to the host.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that can stop the boot sequence.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Not PID 1: the agent refuses to mount over a running system.
    #[error(
        "must run as PID 1 (of a VM, or of a fresh PID namespace); refusing to touch this system"
    )]
    NotPid1,
    /// An early mount failed.
    #[error("early mounts failed")]
    Mount(#[from] MountError),
    /// The console could not be attached.
    #[error("console setup failed")]
    Console(#[from] ConsoleError),
    /// The command line could not be read or is invalid.
    #[error("bad kernel command line")]
    Cmdline(#[from] CmdlineError),
    /// The hostname could not be set.
    #[error("hostname setup failed")]
    Hostname(#[from] HostnameError),
    /// SIGCHLD handling could not be set up.
    #[error("child reaping setup failed")]
    Reaper(#[from] ReaperError),
    /// The inherited cgroup descriptor is unusable.
    #[error("husk.cgroup: the inherited descriptor is unusable")]
    Cgroup(#[source] std::io::Error),
    /// Reporting to the host failed.
    #[error("cannot report to the host")]
    Transport(#[from] TransportError),
    /// Running the workload failed.
    #[error("workload failed")]
    Exec(#[from] ExecError),
    /// The protocol listener could not be set up.
    #[error("cannot listen for the host")]
    Listen(#[from] ListenError),
    /// The protocol server failed.
    #[error("protocol server failed")]
    Server(#[from] ServerError),
}

/// Worker threads started before the ready report: a connection and a process's stdout,
/// stderr and stdin.
const PRESTARTED_WORKERS: usize = 4;

/// Runs the boot sequence. Returning (with or without error) means: reset the VM.
pub fn run() -> Result<(), AgentError> {
    if !reset::is_pid1() {
        return Err(AgentError::NotPid1);
    }
    let mounted = mounts::mount_early()?;
    console::ensure_stdio()?;
    for report in &mounted {
        say!("{report}");
    }
    let (config, source) = cmdline::load()?;
    say!("command line from {source}");
    for key in &config.unknown {
        say!("ignoring unknown parameter {key}");
    }
    hostname::set(&config.hostname)?;
    say!("hostname {}", config.hostname);
    if let Some(fd) = config.cgroup_fd {
        crate::cgroup::adopt(fd).map_err(AgentError::Cgroup)?;
    }
    let reaper = Arc::new(Reaper::new()?);
    // Listen before saying ready, so a host that reacts to the ready line finds the port open.
    let listener = match &config.exec {
        Some(_) => None,
        None => listener(&config.transport)?,
    };
    if listener.is_some() {
        crate::rootfs::prepare(config.scratch.as_deref());
        // Threads for the first connection and process, already running in a warm start's
        // template (see `workers`); without them the work still gets threads, only slower.
        if let Err(e) = crate::workers::prestart(PRESTARTED_WORKERS) {
            say!("cannot prestart worker threads: {e}");
        }
    }
    if crate::fresh::is_vm_guest() {
        crate::network::prepare_first_nic();
        console::quiet_kernel();
    }
    let mut console = ConsoleTransport::stdout();
    console.ready(&Ready { version: VERSION })?;

    if config.panic_test {
        panic!("husk.panic_test requested a panic");
    }
    if let Some(path) = &config.exec {
        let exit = exec::run(path, &reaper)?;
        console.exited(&exit)?;
    }
    if let Some(listener) = &listener {
        server::serve(listener, Arc::clone(&reaper))?;
    }
    for orphan in reaper.reap()? {
        say!("reaped orphan pid {} ({})", orphan.pid, orphan.status);
    }
    Ok(())
}

/// Binds the transport `husk.transport=` asks for; `None` when there is nothing to serve.
fn listener(transport: &Transport) -> Result<Option<Listener>, AgentError> {
    let spec = match transport {
        Transport::None => return Ok(None),
        Transport::Listen(spec) => spec.clone(),
        Transport::Auto => match vsock::guest_cid() {
            Some(_) => ListenSpec::Vsock(agent_proto::CONTROL_PORT),
            None => {
                say!("no vsock device: not serving the host protocol");
                return Ok(None);
            }
        },
    };
    let listener = Listener::bind(&spec)?;
    if let ListenSpec::Vsock(_) = spec {
        crate::fresh::mark_vm_guest();
    }
    say!("serving the host protocol on {spec}");
    Ok(Some(listener))
}
