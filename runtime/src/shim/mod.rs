//! The per-container shim (docs/run.md): one detached process per running container,
//! started as `husk shim --root R ID` (or `$HUSK_SHIM --root R ID`). It makes the sandbox,
//! runs the workload through the agent, keeps the log, serves `shim.sock` (attach, kill,
//! stop, wait, resize), writes `state.json` under the container lock, applies the restart
//! policy and, with `AutoRemove`, removes the container at the end. `--vmm SPEC` runs the
//! VMM child of a vm sandbox instead.

pub mod client;
mod run;
mod server;

pub use run::ALREADY_RUNNING;
pub(crate) use run::sandbox_params;

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::container::{ContainerError, Store};

/// Environment variable naming a shim program that takes `--root R ID` (tests use the
/// runtime crate's `husk-shim` binary); default: this executable with `shim`.
pub const SHIM_ENV: &str = "HUSK_SHIM";

/// Errors from starting or talking to a shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// State directory trouble.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// The shim program could not be found or started.
    #[error("cannot start the container's shim")]
    Spawn(#[source] std::io::Error),
    /// The shim reported a failure before serving.
    #[error("{0}")]
    Failed(String),
    /// The workload could not be started (docker's 125, 126 or 127 in `code`).
    #[error("{why}")]
    NotStarted {
        /// The exit code recorded for the run.
        code: i32,
        /// Why.
        why: String,
    },
    /// The shim ended without saying anything.
    #[error("the container's shim exited at once (see shim.log in the container directory)")]
    Died,
    /// The control socket failed.
    #[error("the container's shim connection failed")]
    Io(#[source] std::io::Error),
    /// The shim answered something unexpected.
    #[error("unexpected answer from the container's shim: {0}")]
    Protocol(String),
}

/// The shim's flag: hold the workload until the first attach.
const WAIT_ATTACH: &str = "--wait-attach";

/// The shim command: program and the arguments before `--root`.
pub fn shim_command() -> Result<(PathBuf, Vec<OsString>), ShimError> {
    if let Some(p) = std::env::var_os(SHIM_ENV) {
        return Ok((PathBuf::from(p), Vec::new()));
    }
    let exe = std::env::current_exe().map_err(ShimError::Spawn)?;
    Ok((exe, vec!["shim".into()]))
}

/// Starts the shim of container `id` detached; returns its pid once it serves `shim.sock`.
/// With `wait_attach` the shim waits for the first attach before starting the workload
/// (the attached client hears how it went); without, this returns only once the workload
/// runs, or fails with [`ShimError::NotStarted`] (code and reason) when its first run
/// ended without it running, as `docker start` and `docker run -d` do.
pub fn spawn(root: &Path, id: &str, wait_attach: bool) -> Result<i32, ShimError> {
    let root = std::path::absolute(root).map_err(ShimError::Spawn)?;
    let store = Store::open(&root)?;
    let dir = store.dir(id);
    let (exe, prefix) = shim_command()?;
    let log_path = dir.join(crate::container::files::SHIM_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(ShimError::Spawn)?;
    let mut cmd = Command::new(exe);
    cmd.args(prefix)
        .arg("--root")
        .arg(&root)
        .arg(id)
        .args(wait_attach.then_some(WAIT_ATTACH))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(ShimError::Spawn)?;
    let stdout = child.stdout.take().ok_or(ShimError::Died)?;
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let read = reader.read_line(&mut line);
    let _ = child.wait(); // The first process forks the shim and exits at once.
    read.map_err(ShimError::Io)?;
    let line = line.trim_end();
    if let Some(msg) = line.strip_prefix("error: ") {
        return Err(ShimError::Failed(msg.to_owned()));
    }
    let pid = line
        .strip_prefix("ok ")
        .and_then(|p| p.parse().ok())
        .ok_or(ShimError::Died)?;
    if wait_attach {
        return Ok(pid);
    }
    let mut report = String::new();
    reader.read_line(&mut report).map_err(ShimError::Io)?;
    parse_start_report(report.trim_end()).map(|()| pid)
}

/// The shim's second line for a detached start: `started`, or `failed <code> <why>`.
fn parse_start_report(line: &str) -> Result<(), ShimError> {
    if line == "started" {
        return Ok(());
    }
    let failed = line.strip_prefix("failed ").and_then(|rest| {
        let (code, why) = rest.split_once(' ').unwrap_or((rest, ""));
        Some((code.parse::<i32>().ok()?, why))
    });
    match failed {
        Some((code, why)) => Err(ShimError::NotStarted {
            code,
            why: match why.is_empty() {
                true => format!("the workload exited with {code} before it ran"),
                false => why.to_owned(),
            },
        }),
        None => Err(ShimError::Died),
    }
}

/// The shim program's entry: `--root R ID` runs a container's shim, `--vmm SPEC` a VMM
/// child. Returns the process exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let prefix_len = args
        .iter()
        .position(|a| a == "--root" || a == "--vmm")
        .unwrap_or(args.len());
    let (prefix, rest) = args.split_at(prefix_len);
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let self_cmd = (exe, prefix.iter().skip(1).cloned().collect::<Vec<_>>());
    match rest {
        [flag, spec] if flag == "--vmm" => crate::sandbox::vm::run_vmm(Path::new(spec)),
        [flag, root, id] if flag == "--root" => {
            run::main(Path::new(root), &id.to_string_lossy(), self_cmd, false)
        }
        [flag, root, id, wait] if flag == "--root" && wait == WAIT_ATTACH => {
            run::main(Path::new(root), &id.to_string_lossy(), self_cmd, true)
        }
        _ => {
            eprintln!("usage: shim --root ROOT ID [--wait-attach] | shim --vmm SPEC");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_reports_parse() {
        assert!(parse_start_report("started").is_ok());
        match parse_start_report("failed 127 exec: nope: not found") {
            Err(ShimError::NotStarted { code, why }) => {
                assert_eq!((code, why.as_str()), (127, "exec: nope: not found"));
            }
            other => panic!("{other:?}"),
        }
        match parse_start_report("failed 125") {
            Err(ShimError::NotStarted { code: 125, why }) => assert!(why.contains("125")),
            other => panic!("{other:?}"),
        }
        // A shim that died before saying anything, or said nonsense.
        assert!(matches!(parse_start_report(""), Err(ShimError::Died)));
        assert!(matches!(
            parse_start_report("failed x y"),
            Err(ShimError::Died)
        ));
    }
}
