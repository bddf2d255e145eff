//! A container's files from the host: docker's `cp` (both ways), `export`, `diff` and
//! `commit`. Each runs the agent's archive tool (`agent_proto::archive`) in the container:
//! through its running agent, or, for a container that is not running, in a sandbox of its
//! own isolation made just for that (the container's lock held, so it cannot start
//! meanwhile). So a VM container's disk is only ever read by its own guest kernel, never
//! mounted on the host, and everything the tool sends back is treated as hostile.

mod commit;
mod copy;
mod peek;
pub mod stat;

pub use commit::{CommitOptions, commit, layer};
pub use copy::{CopyOptions, CopySource, CopyTarget, copy_from, copy_to};
pub use peek::{read_file, stat};

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use agent_proto::Tool;
use agent_proto::archive::{ArchiveOp, EXIT_NOT_FOUND};

use crate::agent_client::{AgentClient, ClientError, Sink, sink_fn};
use crate::container::{ContainerError, Lock, Status, Store};
use crate::lifecycle::LifecycleError;
use crate::sandbox::{Sandbox, SandboxError};
use crate::shim::ShimError;

/// Errors from working on a container's files.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The container could not be resolved or read.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// Where the container's agent is could not be told.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The container's agent could not be reached.
    #[error("cannot reach the container's agent")]
    Agent(#[from] ClientError),
    /// A sandbox for a stopped container could not be made.
    #[error("cannot start a sandbox for the stopped container")]
    Sandbox(#[from] SandboxError),
    /// husk's own executable could not be found (for a VM sandbox).
    #[error(transparent)]
    Shim(#[from] ShimError),
    /// The container is paused: its agent cannot answer.
    #[error("container {0} is paused: unpause it first (husk works on its files from inside it)")]
    Paused(String),
    /// docker's message for a path missing in the container.
    #[error("Could not find the file {path} in container {container}")]
    NotFound {
        /// The path in the container.
        path: String,
        /// The container as named.
        container: String,
    },
    /// The tool failed; its own words (from the container: data, not code).
    #[error("{0}")]
    Tool(String),
    /// What came back from the container is not what was asked for.
    #[error("the container sent a bad archive: {0}")]
    BadArchive(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String, #[source] io::Error),
    /// A copy cannot go where it was asked to.
    #[error(transparent)]
    Copy(#[from] agent_proto::archive::CopyError),
    /// The image store refused the commit.
    #[error(transparent)]
    Image(#[from] rootfs::archive::ArchiveError),
    /// The image store could not be opened.
    #[error(transparent)]
    Store(#[from] rootfs::store::StoreError),
}

/// Most `diff` output accepted from a container.
const MAX_CHANGES: u64 = 64 << 20;

/// An agent in the container, for the length of one operation.
struct Session {
    client: Option<AgentClient>,
    /// The sandbox made for a stopped container, and its lock.
    own: Option<(Sandbox, Lock)>,
    /// The container as the user named it (for messages).
    query: String,
}

impl Session {
    /// Reaches the agent of container `query`: its own if it runs, a new sandbox's if not.
    fn open(root: &Path, query: &str) -> Result<Self, FilesError> {
        let store = Store::open(root)?;
        let id = store.resolve(query)?;
        let lock = store.lock(&id)?;
        let state = store.state(&id)?.observed();
        let mut session = Session {
            client: None,
            own: None,
            query: query.to_owned(),
        };
        if state.paused && state.running() {
            return Err(FilesError::Paused(query.to_owned()));
        }
        if state.status == Status::Running || state.status == Status::Restarting {
            drop(lock);
            session.client = Some(crate::lifecycle::agent_client(root, &id)?);
            return Ok(session);
        }
        let config = store.config(&id)?;
        let self_cmd = crate::shim::shim_command()?;
        let mut params = crate::shim::sandbox_params(&config, &store.dir(&id), &self_cmd);
        // A stopped container's files need no network.
        params.network = crate::network::Mode::None;
        let mut sandbox = Sandbox::create(config.host_config.isolation, &params)?;
        crate::timing::mark("sandbox.created");
        match sandbox.connect(&config.hostname()) {
            Ok(client) => session.client = Some(client),
            Err(e) => {
                sandbox.teardown();
                return Err(e.into());
            }
        }
        session.own = Some((sandbox, lock));
        Ok(session)
    }

    fn client(&self) -> Result<&AgentClient, FilesError> {
        self.client
            .as_ref()
            .ok_or_else(|| FilesError::Tool("the agent connection is closed".into()))
    }

    /// Runs `op`, feeding it `stdin` and sending its stdout to `stdout`.
    fn tool(
        &self,
        op: ArchiveOp,
        path: &str,
        stdin: Option<&mut dyn Read>,
        stdout: Sink,
    ) -> Result<(), FilesError> {
        run_tool(self.client()?, &self.query, op, path, stdin, stdout)
    }

    /// Runs `op` with its stdout readable by `consume` as it comes (through a pipe); the
    /// tool's failure, if any, wins over what `consume` made of a cut stream.
    fn tool_reading<T>(
        &self,
        op: ArchiveOp,
        path: &str,
        consume: impl FnOnce(&mut dyn Read) -> Result<T, FilesError>,
    ) -> Result<T, FilesError> {
        let (mut reader, writer) =
            io::pipe().map_err(|e| FilesError::Local("cannot make a pipe".into(), e))?;
        let slot = Arc::new(Mutex::new(Some(writer)));
        let feed = Arc::clone(&slot);
        let out = sink_fn(move |b| {
            if let Some(w) = feed.lock().ok().as_mut().and_then(|w| w.as_mut()) {
                let _ = w.write_all(b);
            }
        });
        let (client, query) = (self.client()?, self.query.as_str());
        std::thread::scope(|s| {
            let ran = s.spawn(|| {
                let r = run_tool(client, query, op, path, None, out);
                // End of the stream for `consume`, whatever happened.
                slot.lock().map(|mut w| w.take()).ok();
                r
            });
            let consumed = consume(&mut reader);
            // Unblock a tool still writing if `consume` stopped early.
            drop(reader);
            let ran = ran
                .join()
                .unwrap_or_else(|_| Err(FilesError::Tool("the archive reader panicked".into())));
            ran.and(consumed)
        })
    }

    /// Ends the session: a sandbox made for it is shut down and removed.
    fn close(mut self) {
        self.end();
    }

    fn end(&mut self) {
        let client = self.client.take();
        if let Some((sandbox, lock)) = self.own.take() {
            if let Some(c) = client {
                let _ = c.shutdown();
            }
            sandbox.teardown();
            drop(lock);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

/// Runs the archive tool's `op` through `client`, feeding it `stdin` and sending its stdout
/// to `stdout`; an error from the tool becomes a `FilesError` (`NotFound` names `path` in
/// container `query`).
fn run_tool(
    client: &AgentClient,
    query: &str,
    op: ArchiveOp,
    path: &str,
    stdin: Option<&mut dyn Read>,
    stdout: Sink,
) -> Result<(), FilesError> {
    let exit = crate::tools::run(client, Tool::Archive(op), stdin, stdout)?;
    match exit.code {
        0 => Ok(()),
        EXIT_NOT_FOUND => Err(FilesError::NotFound {
            path: path.to_owned(),
            container: query.to_owned(),
        }),
        _ => Err(FilesError::Tool(exit.said)),
    }
}

/// docker's `diff`: the container's changes as `(kind, path)`, kind `A`, `C` or `D`.
pub fn changes(root: &Path, query: &str) -> Result<Vec<(char, String)>, FilesError> {
    let session = Session::open(root, query)?;
    let text = session.tool_reading(ArchiveOp::Changes, "/", |r| {
        let mut buf = Vec::new();
        r.take(MAX_CHANGES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FilesError::Local("read the changes".into(), e))?;
        if buf.len() as u64 > MAX_CHANGES {
            return Err(FilesError::BadArchive("more than 64 MiB of changes".into()));
        }
        // The rest unread: the tool gets a broken pipe and ends.
        Ok(buf)
    })?;
    session.close();
    String::from_utf8_lossy(&text)
        .lines()
        .map(|line| {
            let bad = || FilesError::BadArchive(format!("bad change line {line:?}"));
            let (kind, path) = line.split_once(' ').ok_or_else(bad)?;
            match (kind, path.starts_with('/')) {
                ("A" | "C" | "D", true) => Ok((
                    kind.chars().next().unwrap_or('C'),
                    crate::tools::printable(path),
                )),
                _ => Err(bad()),
            }
        })
        .collect()
}

/// docker's `export`: the container's root filesystem as a tar, written to `out`.
pub fn export(root: &Path, query: &str, out: &mut dyn Write) -> Result<(), FilesError> {
    let session = Session::open(root, query)?;
    session.tool_reading(ArchiveOp::Export, "/", |r| {
        io::copy(r, out)
            .map(drop)
            .map_err(|e| FilesError::Local("write the archive".into(), e))
    })?;
    session.close();
    Ok(())
}
