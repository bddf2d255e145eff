//! `husk system ...`: `df` (what images, containers and volumes take on disk, and what a prune
//! would free), `prune` (stopped containers, then dangling or unused images), `info`.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use rootfs::store::Store;

use crate::{containers, human, images};

/// `husk system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show disk usage.
    Df,
    /// Remove stopped containers and dangling (with -a: unused) images.
    Prune(PruneArgs),
    /// Show what happens to containers and images, as it happens.
    Events(crate::events::EventsArgs),
}

/// `husk system prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only dangling ones.
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Runs a `system` verb.
pub fn run(cmd: SystemCommand, root: &Path) -> anyhow::Result<ExitCode> {
    match cmd {
        SystemCommand::Df => df(root),
        SystemCommand::Prune(a) => prune(a, root),
        SystemCommand::Events(a) => crate::events::events(a, root),
    }
}

/// `husk system df`: docker's table.
fn df(root: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::open(root)?;
    let engine = crate::containers::engine(root);
    let containers = engine.list(true)?;
    let used: HashSet<String> = containers.iter().map(|c| c.config.image.clone()).collect();
    let (mut image_total, mut image_free, mut image_active) = (0, 0, 0);
    let records = store.list()?;
    for rec in &records {
        let size = images::image_size(root, &store, rec);
        image_total += size;
        match used.contains(&rec.id.to_string()) {
            true => image_active += 1,
            false => image_free += size,
        }
    }
    let (mut ctr_total, mut ctr_free, mut ctr_active) = (0, 0, 0);
    for c in &containers {
        let size = engine.disk_usage(&c.config.id);
        ctr_total += size;
        match c.state.running() {
            true => ctr_active += 1,
            false => ctr_free += size,
        }
    }
    let pct = |part: u64, whole: u64| match whole {
        0 => "0B".to_owned(),
        w => format!("{} ({}%)", human::size(part), part * 100 / w),
    };
    let rows = vec![
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .map(String::from)
            .to_vec(),
        vec![
            "Images".into(),
            records.len().to_string(),
            image_active.to_string(),
            human::size(image_total),
            pct(image_free, image_total),
        ],
        vec![
            "Containers".into(),
            containers.len().to_string(),
            ctr_active.to_string(),
            human::size(ctr_total),
            pct(ctr_free, ctr_total),
        ],
        volumes_row(root, pct)?,
        ["Build Cache", "0", "0", "0B", "0B"]
            .map(String::from)
            .to_vec(),
    ];
    print!("{}", human::table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// docker's `Local Volumes` row: every volume, those containers use, their sizes, and
/// what unused ones take.
fn volumes_row(root: &Path, pct: impl Fn(u64, u64) -> String) -> anyhow::Result<Vec<String>> {
    let volumes = runtime::volverbs::list(root)?;
    let (mut total, mut free, mut active) = (0, 0, 0);
    for v in &volumes {
        let size = runtime::volverbs::size(root, &v.volume.name);
        total += size;
        match v.users {
            0 => free += size,
            _ => active += 1,
        }
    }
    Ok(vec![
        "Local Volumes".into(),
        volumes.len().to_string(),
        active.to_string(),
        human::size(total),
        pct(free, total),
    ])
}

/// `husk system prune`: docker's warning, then its sections.
fn prune(a: PruneArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let warning = format!(
        "WARNING! This will remove:\n  - all stopped containers\n  - {}\n",
        images::prune_what(a.all)
    );
    if !a.force && !human::confirm(&warning)? {
        return Ok(ExitCode::SUCCESS);
    }
    let (deleted, ctr_freed) = containers::prune_stopped(root)?;
    containers::print_deleted(&deleted);
    let (events, image_freed) = images::prune_images(root, a.all)?;
    images::print_deleted(&events);
    println!(
        "Total reclaimed space: {}",
        human::size(ctr_freed + image_freed)
    );
    Ok(ExitCode::SUCCESS)
}
