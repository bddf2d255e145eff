//! Container verbs: `run`, `ps`, `logs`, `exec`, `stop`, `kill`, `start`, `restart`, `wait`,
//! `rm`, `inspect`. Parsing and printing only; `runtime::lifecycle` does the work.
//!
//! Failures: `run` and `exec` print `husk: ...` on one line and exit 125 (docker's code for
//! a failure of the engine; the workload's own 126/127/128+n pass through); the other verbs
//! print `Error: ...` and exit 1, as docker does for them.

mod exec;
mod ps;
mod run;
mod term;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use runtime::lifecycle;
use runtime::logs::LogOptions;

pub use exec::{ExecArgs, exec};
pub use ps::{PsArgs, ps};
pub use run::{RunArgs, run};

/// `husk logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow the log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end ("all" for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Container (name, ID or ID prefix).
    container: String,
}

/// `husk stop` / `husk restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the workload to exit before killing it.
    #[arg(short = 't', long = "time", alias = "timeout", default_value_t = 10)]
    time: u64,
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send (name like TERM/SIGTERM or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach to the container's output and exit with its code.
    #[arg(short, long)]
    attach: bool,
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk wait`, `husk inspect`.
#[derive(Args, Debug)]
pub struct ContainersArgs {
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Kill and remove running containers.
    #[arg(short, long)]
    force: bool,
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Runs a verb and reports failure the docker way for the management verbs (`Error: ...`,
/// exit 1).
pub fn report(res: anyhow::Result<ExitCode>) -> ExitCode {
    res.unwrap_or_else(|e| {
        eprintln!("Error: {e:#}");
        ExitCode::from(1)
    })
}

/// Applies `f` to each container, printing its name as typed on success (docker's
/// `stop`/`kill`/`rm` output); the first failure is reported after trying every one.
fn each(
    containers: &[String],
    mut f: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let mut failed = None;
    for c in containers {
        match f(c) {
            Ok(()) => println!("{c}"),
            Err(e) if failed.is_none() => failed = Some(e),
            Err(e) => eprintln!("Error: {e:#}"),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// `husk logs`.
pub fn logs(a: LogsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let tail = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("invalid --tail {n:?}: use a number or \"all\""))?,
        ),
    };
    let opts = LogOptions {
        follow: a.follow,
        tail,
        timestamps: a.timestamps,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    lifecycle::logs(root, &a.container, &opts, &mut out, &mut err)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `husk stop`.
pub fn stop(a: StopArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let t = Duration::from_secs(a.time);
    each(&a.containers, |c| Ok(lifecycle::stop(root, c, t)?))
}

/// `husk restart`.
pub fn restart(a: StopArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let t = Duration::from_secs(a.time);
    each(&a.containers, |c| {
        lifecycle::restart(root, c, t)?;
        Ok(())
    })
}

/// `husk kill`.
pub fn kill(a: KillArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let signal = parse_signal(&a.signal)?;
    each(&a.containers, |c| Ok(lifecycle::kill(root, c, signal)?))
}

/// `husk start`.
pub fn start(a: StartArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if a.attach {
        let [c] = a.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        return Ok(run::start_attached(root, c));
    }
    each(&a.containers, |c| {
        // As docker: returns once the workload runs (or says why it could not).
        lifecycle::start(root, c)?;
        Ok(())
    })
}

/// `husk wait`: prints each container's exit code.
pub fn wait(a: ContainersArgs, root: &Path) -> anyhow::Result<ExitCode> {
    for c in &a.containers {
        println!("{}", lifecycle::wait(root, c)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk rm`.
pub fn rm(a: RmArgs, root: &Path) -> anyhow::Result<ExitCode> {
    each(&a.containers, |c| {
        lifecycle::remove(root, c, a.force)?;
        Ok(())
    })
}

/// `husk inspect`: a JSON array, one object per container.
pub fn inspect(a: ContainersArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut all = Vec::new();
    for c in &a.containers {
        all.push(lifecycle::inspect_json(root, c)?);
    }
    println!("{}", serde_json::to_string_pretty(&all)?);
    Ok(ExitCode::SUCCESS)
}

/// A signal by name (`KILL`, `SIGKILL`, `kill`) or number.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        anyhow::bail!("invalid signal: {s}");
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => anyhow::bail!("invalid signal: {s}"),
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_parses() {
        use clap::Command;
        for cmd in [
            RunArgs::augment_args(Command::new("run")),
            PsArgs::augment_args(Command::new("ps")),
            LogsArgs::augment_args(Command::new("logs")),
            ExecArgs::augment_args(Command::new("exec")),
            StopArgs::augment_args(Command::new("stop")),
            KillArgs::augment_args(Command::new("kill")),
            StartArgs::augment_args(Command::new("start")),
            ContainersArgs::augment_args(Command::new("wait")),
            RmArgs::augment_args(Command::new("rm")),
        ] {
            cmd.debug_assert();
        }
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("NOPE").is_err());
    }
}
