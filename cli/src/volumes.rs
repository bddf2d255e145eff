//! `husk volume ...`: create, ls, inspect, rm, prune.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use runtime::volverbs;

use crate::format::Format;
use crate::human;

/// `husk volume ...`.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show volumes in detail.
    Inspect(InspectArgs),
    /// Remove volumes no container uses.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused volumes (anonymous ones; every unused one with --all).
    Prune(PruneArgs),
}

/// `husk volume create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The driver (only local).
    #[arg(short, long, default_value = "local")]
    driver: String,
    /// Metadata (KEY=VALUE).
    #[arg(long)]
    label: Vec<String>,
    /// The volume's name [default: a random one].
    name: Option<String>,
}

/// `husk volume ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only names.
    #[arg(short, long)]
    quiet: bool,
    /// A Go template per volume, or `table TEMPLATE`.
    #[arg(long)]
    format: Option<String>,
}

/// `husk volume inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A Go template over each volume's JSON.
    #[arg(short, long)]
    format: Option<String>,
    /// Volumes.
    #[arg(required = true)]
    volumes: Vec<String>,
}

/// `husk volume rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not complain about volumes that do not exist.
    #[arg(short, long)]
    force: bool,
    /// Volumes.
    #[arg(required = true)]
    volumes: Vec<String>,
}

/// `husk volume prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Every unused volume, named ones too.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Runs a `volume` verb.
pub fn run(cmd: VolumeCommand, root: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        VolumeCommand::Create(a) => create(a, root),
        VolumeCommand::Ls(a) => ls(a, root),
        VolumeCommand::Inspect(a) => inspect(a, root),
        VolumeCommand::Rm(a) => rm(a, root),
        VolumeCommand::Prune(a) => prune(a, root),
    }
}

fn create(a: CreateArgs, root: &Path) -> anyhow::Result<ExitCode> {
    if a.driver != "local" {
        anyhow::bail!(
            "plugin \"{}\" not found: husk has the local driver only",
            a.driver
        );
    }
    let labels = runtime::spec::labels(BTreeMap::new(), &a.label);
    let v = volverbs::create(root, a.name.as_deref(), labels)?;
    println!("{}", v.name);
    Ok(ExitCode::SUCCESS)
}

fn ls(a: LsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let all = volverbs::list(root)?;
    if a.quiet {
        for l in &all {
            println!("{}", l.volume.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let spec = a
        .format
        .unwrap_or_else(|| "table {{.Driver}}\t{{.Name}}".into());
    // Sizes walk every volume's files: only when asked for.
    let sized = spec.contains(".Size");
    let rows: Vec<serde_json::Value> = all
        .iter()
        .map(|l| {
            let labels: Vec<String> = l
                .volume
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            serde_json::json!({
                "Driver": "local",
                "Name": l.volume.name,
                "Scope": "local",
                "Labels": labels.join(","),
                "Mountpoint": runtime::volumes::VolumeStore::at(root).data_dir(&l.volume.name).display().to_string(),
                "Links": l.users.to_string(),
                "Size": match sized {
                    true => human::size(volverbs::size(root, &l.volume.name)),
                    false => String::new(),
                },
            })
        })
        .collect();
    let headers = [
        ("Driver", "DRIVER"),
        ("Name", "VOLUME NAME"),
        ("Scope", "SCOPE"),
        ("Labels", "LABELS"),
        ("Mountpoint", "MOUNTPOINT"),
        ("Links", "LINKS"),
        ("Size", "SIZE"),
    ];
    print!("{}", Format::parse(&spec)?.render_rows(&rows, &headers)?);
    Ok(ExitCode::SUCCESS)
}

fn inspect(a: InspectArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.volumes {
        match volverbs::inspect(root, name) {
            Ok(v) => found.push(v),
            Err(e) => errors.push(e.to_string()),
        }
    }
    crate::format::print_inspected(&found, &errors, a.format.as_deref())
}

fn rm(a: RmArgs, root: &Path) -> anyhow::Result<ExitCode> {
    Ok(human::remove_each(&a.volumes, |name| {
        volverbs::remove(root, name, a.force)
    }))
}

fn prune(a: PruneArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let warning = match a.all {
        true => "WARNING! This will remove all local volumes not used by at least one container.",
        false => {
            "WARNING! This will remove anonymous local volumes not used by at least one container."
        }
    };
    if !a.force && !human::confirm(warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let (removed, freed) = volverbs::prune(root, a.all)?;
    if !removed.is_empty() {
        println!("Deleted Volumes:");
        for n in &removed {
            println!("{n}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human::size(freed));
    Ok(ExitCode::SUCCESS)
}
