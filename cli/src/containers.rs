//! Container verbs: `create`, `run`, `ps`, `logs`, `exec`, `stop`, `kill`, `start`,
//! `restart`, `wait`, `rm`, `inspect`, `rename`, `cp`, `diff`, `export`, `commit`, ...,
//! at the top level and as `husk container
//! ...` (one [`ContainerCommand`] for both, as docker has both). Parsing and printing only;
//! `runtime::lifecycle` does the work.
//!
//! Failures: `run` and `exec` print `husk: ...` on one line and exit 125 (docker's code for
//! a failure of the engine; the workload's own 126/127/128+n pass through); the other verbs
//! print `Error: ...` and exit 1, as docker does for them.

mod exec;
mod files;
mod ps;
mod run;
mod stats;
mod term;
mod top;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use runtime::engine::{Engine, ErrorKind};
use runtime::logs::LogOptions;

use crate::human;

pub use exec::{ExecArgs, exec};
pub use ps::{PsArgs, ps};
pub use run::{AttachArgs, RunArgs, attach, create, run};

/// The container verbs.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Create a new container (start it with `start`).
    Create(RunArgs),
    /// Run a command in a new container.
    Run(RunArgs),
    /// List containers.
    #[command(alias = "list", alias = "ls")]
    Ps(PsArgs),
    /// Show a container's output.
    Logs(LogsArgs),
    /// Run a command in a running container.
    Exec(ExecArgs),
    /// Stop containers (SIGTERM, then SIGKILL after a grace period).
    Stop(StopArgs),
    /// Send a signal to containers.
    Kill(KillArgs),
    /// Start stopped containers.
    Start(StartArgs),
    /// Restart containers.
    Restart(StopArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(ContainersArgs),
    /// Remove containers.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Show containers' details as JSON.
    Inspect(InspectArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// List a container's published ports, or where one of its ports is published.
    Port(PortArgs),
    /// Remove all stopped containers.
    Prune(PruneArgs),
    /// Pause every process of containers (vm: the VMM stops; process: the cgroup freezes).
    Pause(ContainersArgs),
    /// Resume paused containers.
    Unpause(ContainersArgs),
    /// Show containers' resource use (CPU, memory, I/O, processes).
    Stats(stats::StatsArgs),
    /// Attach to a running container's output (and stdin).
    Attach(AttachArgs),
    /// Copy files between a container and the local filesystem.
    Cp(files::CpArgs),
    /// Show the changes to a container's filesystem.
    Diff(files::DiffArgs),
    /// Write a container's filesystem as a tar archive.
    Export(files::ExportArgs),
    /// Create an image from a container's changes.
    Commit(files::CommitArgs),
    /// Show a running container's processes.
    Top(top::TopArgs),
    /// Change containers' memory, CPUs or restart policy.
    Update(UpdateArgs),
}

/// `husk update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// CPUs (fractional); a running vm container cannot change them.
    #[arg(long)]
    cpus: Option<String>,
    /// Memory limit (b, k, m, g); a running vm container cannot change it.
    #[arg(short, long)]
    memory: Option<String>,
    /// Restart policy: no, always, on-failure[:N], unless-stopped.
    #[arg(long, value_name = "POLICY")]
    restart: Option<String>,
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk container prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Removes every container that is not running: their IDs and the bytes freed.
pub fn prune_stopped(root: &Path) -> anyhow::Result<(Vec<String>, u64)> {
    Ok(engine(root).container_prune()?)
}

/// The engine every container verb goes through.
pub(crate) fn engine(root: &Path) -> Engine {
    Engine::new(root.to_path_buf())
}

/// docker's `Deleted Containers:` section (nothing when none went).
pub fn print_deleted(ids: &[String]) {
    if !ids.is_empty() {
        println!("Deleted Containers:");
        for id in ids {
            println!("{id}");
        }
        println!();
    }
}

/// `husk container prune`: every container that is not running goes, as docker's does.
pub fn prune(a: PruneArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if !a.force && !human::confirm("WARNING! This will remove all stopped containers.")? {
        return Ok(ExitCode::SUCCESS);
    }
    let (deleted, freed) = prune_stopped(root)?;
    print_deleted(&deleted);
    println!("Total reclaimed space: {}", human::size(freed));
    Ok(ExitCode::SUCCESS)
}

/// Runs a container verb.
pub fn dispatch(cmd: ContainerCommand, root: &Path, kvm_device: &Path) -> anyhow::Result<ExitCode> {
    Ok(match cmd {
        ContainerCommand::Create(a) => create(a, root, kvm_device)?,
        ContainerCommand::Run(a) => run(a, root, kvm_device)?,
        ContainerCommand::Exec(a) => exec(a, root)?,
        ContainerCommand::Ps(a) => report(ps(a, root)),
        ContainerCommand::Logs(a) => report(logs(a, root)),
        ContainerCommand::Stop(a) => report(stop(a, root)),
        ContainerCommand::Kill(a) => report(kill(a, root)),
        ContainerCommand::Start(a) => report(start(a, root)),
        ContainerCommand::Restart(a) => report(restart(a, root)),
        ContainerCommand::Wait(a) => report(wait(a, root)),
        ContainerCommand::Rm(a) => report(rm(a, root)),
        ContainerCommand::Inspect(a) => report(inspect(a, root)),
        ContainerCommand::Rename(a) => report(rename(a, root)),
        ContainerCommand::Port(a) => report(port(a, root)),
        ContainerCommand::Prune(a) => report(prune(a, root)),
        ContainerCommand::Pause(a) => {
            report(each(&a.containers, |c| Ok(engine(root).pause(c, true)?)))
        }
        ContainerCommand::Unpause(a) => {
            report(each(&a.containers, |c| Ok(engine(root).pause(c, false)?)))
        }
        ContainerCommand::Stats(a) => report(stats::stats(a, root)),
        ContainerCommand::Attach(a) => report(attach(a, root)),
        ContainerCommand::Cp(a) => report(files::cp(a, root)),
        ContainerCommand::Diff(a) => report(files::diff(a, root)),
        ContainerCommand::Export(a) => report(files::export(a, root)),
        ContainerCommand::Commit(a) => report(files::commit(a, root)),
        ContainerCommand::Top(a) => report(top::top(a, root)),
        ContainerCommand::Update(a) => {
            let req = runtime::update::UpdateRequest {
                memory: a.memory,
                cpus: a.cpus,
                restart: a.restart,
            };
            report(each(&a.containers, |c| {
                Ok(runtime::update::update(root, c, &req)?)
            }))
        }
    })
}

/// `husk inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Go template applied to each container (`{{.State.Pid}}`, `{{json .Config}}`).
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `husk rename`.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// Container (name, ID or ID prefix).
    container: String,
    /// Its new name.
    new_name: String,
}

/// `husk rename`.
pub fn rename(a: RenameArgs, root: &Path) -> anyhow::Result<ExitCode> {
    engine(root).rename(&a.container, &a.new_name)?;
    Ok(ExitCode::SUCCESS)
}

/// `husk port`.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// Container (name, ID or ID prefix).
    container: String,
    /// One of its ports: PORT or PORT/PROTO.
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// `husk port`: docker's lines, `80/tcp -> 0.0.0.0:8080`, or `0.0.0.0:8080` for one port.
pub fn port(a: PortArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let (_, ports) = engine(root).ports(&a.container)?;
    let Some(want) = &a.port else {
        for p in &ports {
            println!("{}", p.describe());
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (number, proto) = want.split_once('/').unwrap_or((want, "tcp"));
    let matching: Vec<_> = ports
        .iter()
        .filter(|p| p.container_port.to_string() == number && p.proto.as_str() == proto)
        .collect();
    if matching.is_empty() {
        anyhow::bail!(
            "No public port '{number}/{proto}' published for {}",
            a.container
        );
    }
    for p in matching {
        let ip = p.host_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        println!("{ip}:{}", p.host_port);
    }
    Ok(ExitCode::SUCCESS)
}

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
    /// Only lines since a time (RFC 3339, a Unix timestamp, or relative: 42s, 10m, 1h30m).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Only lines before a time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Container (name, ID or ID prefix).
    container: String,
}

/// `husk stop` / `husk restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the workload to exit before killing it [default: the
    /// container's --stop-timeout, else 10].
    #[arg(short = 't', long = "time", alias = "timeout")]
    time: Option<u64>,
    /// Signal to send first [default: the container's stop signal, else SIGTERM].
    #[arg(short, long)]
    signal: Option<String>,
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
    /// Attach stdin too (with -a).
    #[arg(short, long)]
    interactive: bool,
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
    /// Remove the container's anonymous volumes (those no other container uses).
    #[arg(short, long)]
    volumes: bool,
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
    let now = chrono::Utc::now();
    let time = |t: &Option<String>| t.as_deref().map(|t| human::parse_time(t, now)).transpose();
    let opts = LogOptions {
        follow: a.follow,
        tail,
        timestamps: a.timestamps,
        since: time(&a.since)?,
        until: time(&a.until)?,
    };
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr());
    engine(root).logs(&a.container, &opts, &mut out, &mut err)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `husk stop`.
pub fn stop(a: StopArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let (timeout, signal) = stop_options(&a)?;
    let engine = engine(root);
    each(&a.containers, |c| Ok(engine.stop(c, timeout, signal)?))
}

/// `husk restart`.
pub fn restart(a: StopArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let (timeout, signal) = stop_options(&a)?;
    let engine = engine(root);
    each(&a.containers, |c| {
        engine.restart(c, timeout, signal)?;
        Ok(())
    })
}

/// `-t` and `-s` (the signal checked here, so that a bad one fails before any container).
fn stop_options(a: &StopArgs) -> anyhow::Result<(Option<Duration>, Option<&str>)> {
    if let Some(s) = &a.signal {
        parse_signal(s)?;
    }
    Ok((a.time.map(Duration::from_secs), a.signal.as_deref()))
}

/// `husk kill`.
pub fn kill(a: KillArgs, root: &Path) -> anyhow::Result<ExitCode> {
    parse_signal(&a.signal)?;
    let engine = engine(root);
    each(&a.containers, |c| Ok(engine.kill(c, &a.signal)?))
}

/// `husk start`.
pub fn start(a: StartArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if a.attach {
        let [c] = a.containers.as_slice() else {
            anyhow::bail!("you cannot start and attach multiple containers at once");
        };
        return Ok(run::start_attached(root, c, a.interactive));
    }
    each(&a.containers, |c| {
        // As docker: returns once the workload runs (or says why it could not).
        engine(root).start(c, false)?;
        Ok(())
    })
}

/// `husk wait`: prints each container's exit code.
pub fn wait(a: ContainersArgs, root: &Path) -> anyhow::Result<ExitCode> {
    for c in &a.containers {
        println!("{}", engine(root).wait_exit(c)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `husk rm`.
pub fn rm(a: RmArgs, root: &Path) -> anyhow::Result<ExitCode> {
    each(&a.containers, |c| {
        engine(root).remove(c, a.force, a.volumes)?;
        Ok(())
    })
}

/// `husk inspect`: a JSON array, one object per container (or `-f`'s lines). As docker: the containers found are printed, then one `Error: No such object: X` line
/// per name that is not one, with exit code 1.
pub fn inspect(a: InspectArgs, root: &Path) -> anyhow::Result<ExitCode> {
    // A bad template fails before anything is looked up.
    if let Some(f) = &a.format {
        crate::format::Format::parse(f)?;
    }
    let mut all = Vec::new();
    let mut missing = Vec::new();
    for c in &a.containers {
        match engine(root).inspect(c) {
            Ok(v) => all.push(v),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                missing.push(format!("No such object: {c}"));
            }
            Err(e) => return Err(e.into()),
        }
    }
    crate::format::print_inspected(&all, &missing, a.format.as_deref())
}

/// A signal by name (`KILL`, `SIGKILL`, `kill`) or number.
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    Ok(runtime::signal::parse(s)?)
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
            InspectArgs::augment_args(Command::new("inspect")),
            RenameArgs::augment_args(Command::new("rename")),
            PortArgs::augment_args(Command::new("port")),
            PruneArgs::augment_args(Command::new("prune")),
            RmArgs::augment_args(Command::new("rm")),
            files::CpArgs::augment_args(Command::new("cp")),
            files::ExportArgs::augment_args(Command::new("export")),
            files::CommitArgs::augment_args(Command::new("commit")),
            top::TopArgs::augment_args(Command::new("top")),
            UpdateArgs::augment_args(Command::new("update")),
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
