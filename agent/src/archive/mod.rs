//! `husk-archive`: the agent binary run as a process of the container to do what docker's
//! daemon does with a container's files: `cp` both ways, `export`, `diff` and `commit`'s
//! layer (operations: `agent_proto::archive`). It runs where an `exec` would (the
//! container's namespaces and root, or the agent's own when nothing runs), as root with
//! every capability; `diff` and `commit` read the overlay's upper and lower directories
//! through descriptors the agent kept at setup and hands down. A failure, a crash or a
//! hostile container spoils one answer, never the agent.

mod changes;
mod put;
mod tree;

use crate::launch::Command;
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use agent_proto::archive::{ArchiveOp, EXIT_FAILED, EXIT_NOT_DIR, EXIT_NOT_FOUND};

/// The name the agent runs under as the archive tool.
pub const ARGV0: &str = "husk-archive";

/// Errors of one operation; each maps to one of the tool's exit codes.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path does not exist.
    #[error("Could not find the file {0} in container")]
    NotFound(String),
    /// A directory was needed, or a file.
    #[error("{0}")]
    NotDir(String),
    /// The request itself is unusable.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String, #[source] io::Error),
}

impl ArchiveError {
    fn code(&self) -> i32 {
        match self {
            ArchiveError::NotFound(_) => EXIT_NOT_FOUND,
            ArchiveError::NotDir(_) => EXIT_NOT_DIR,
            _ => EXIT_FAILED,
        }
    }
}

/// Shorthand for a failed step.
fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let what = what.into();
    move |e| ArchiveError::Io(what, e)
}

/// Whether this process was started as the archive tool.
pub fn invoked() -> bool {
    crate::self_exe::invoked_as(ARGV0)
}

/// The command that runs `op`, and the descriptors it inherits: the overlay's upper and
/// lower directories for `Changes` and `Layer` (passed as arguments after the operation).
pub fn command(op: &ArchiveOp) -> io::Result<(Command, Vec<std::os::fd::RawFd>)> {
    let mut cmd = crate::self_exe::command(ARGV0)?;
    cmd.arg(op.to_arg());
    let mut fds = Vec::new();
    if matches!(op, ArchiveOp::Changes | ArchiveOp::Layer) {
        let kept = crate::rootfs::kept_dirs()
            .ok_or_else(|| io::Error::other("the container's root filesystem is not set up"))?;
        for fd in std::iter::once(&kept.upper).chain(&kept.lowers) {
            fds.push(fd.as_raw_fd());
            cmd.arg(fd.as_raw_fd().to_string());
        }
    }
    Ok((cmd, fds))
}

/// Runs the tool; returns its exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<String> = args
        .into_iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", crate::chain(&e));
            e.code()
        }
    }
}

fn run(args: &[String]) -> Result<(), ArchiveError> {
    let (op, fds) = args
        .split_first()
        .ok_or_else(|| ArchiveError::Invalid("no operation".into()))?;
    let op = ArchiveOp::from_arg(op).map_err(|e| ArchiveError::Invalid(e.to_string()))?;
    let dirs: Vec<PathBuf> = fds
        .iter()
        .map(|fd| PathBuf::from(format!("/proc/self/fd/{fd}")))
        .collect();
    let stdout = io::stdout().lock();
    match op {
        ArchiveOp::Get { path } => tree::get(&path, stdout),
        ArchiveOp::Export => tree::export(stdout),
        ArchiveOp::Put {
            dest,
            copy,
            keep_owner,
        } => put::put(&dest, copy, keep_owner, io::stdin().lock()),
        ArchiveOp::Changes | ArchiveOp::Layer => {
            let (upper, lowers) = dirs
                .split_first()
                .ok_or_else(|| ArchiveError::Invalid("no overlay directories".into()))?;
            let changes = changes::Overlay { upper, lowers };
            match op {
                ArchiveOp::Changes => changes.list(stdout),
                _ => changes.layer(stdout),
            }
        }
    }
}
