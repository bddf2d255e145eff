//! `husk ps`: docker's table (CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES)
//! with its status wording ("Up 2 seconds", "Exited (0) 3 seconds ago").

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use runtime::container::short_id;
use runtime::engine::summary::status;
use runtime::lifecycle::Summary;

use crate::format::Format;
use crate::human;

mod filter;

/// `husk ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only show container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Show the N most recently created containers (all states).
    #[arg(short = 'n', long, value_name = "N")]
    last: Option<usize>,
    /// Show the most recently created container (all states).
    #[arg(short, long)]
    latest: bool,
    /// Filter: status=, name=, id=, label=KEY[=VALUE], ancestor=, exited=, isolation=.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Go template (`{{.Names}}`, `{{json .}}`, `table {{.ID}}\t{{.Status}}`).
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Show each container's disk use: its own files (writable layer disk, logs), and with
    /// its image's layer disks ("virtual").
    #[arg(short, long)]
    size: bool,
}

/// docker's column titles of `ps --format table` by field.
const HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Isolation", "ISOLATION"),
];

/// `husk ps`.
pub fn ps(a: PsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let filters = filter::Filters::parse(&a.filter)?;
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    let last = match (a.latest, a.last) {
        (true, _) => Some(1),
        (false, n) => n,
    };
    let everything = a.all || last.is_some() || filters.names_a_stopped_state();
    let mut rows = super::engine(root).list(everything)?;
    rows.retain(|r| filters.matches(r));
    if let Some(n) = last {
        rows.truncate(n);
    }
    let id = |s: &Summary| match a.no_trunc {
        true => s.config.id.clone(),
        false => short_id(&s.config.id).to_owned(),
    };
    if a.quiet {
        for r in &rows {
            println!("{}", id(r));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    let sizes = Sizes::new(root);
    let size = |r: &Summary| match a.size {
        true => sizes.of(r),
        false => String::new(),
    };
    if let Some(format) = format {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let mut row = row_json(r, &id(r), a.no_trunc, now);
                row["Size"] = serde_json::json!(sizes.of(r));
                row
            })
            .collect();
        print!("{}", format.render_rows(&rows, HEADERS)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = vec![
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ]
        .map(String::from)
        .to_vec(),
    ];
    if a.size {
        table[0].push("SIZE".into());
    }
    for r in &rows {
        table.push(vec![
            id(r),
            r.config.image_ref.clone(),
            command(&r.config.path, &r.config.args, a.no_trunc),
            human::ago(Some(&r.config.created), now),
            status(&r.state, now),
            ports(r),
            r.config.name.clone(),
        ]);
        if a.size
            && let Some(row) = table.last_mut()
        {
            row.push(size(r));
        }
    }
    print!("{}", human::table(&table));
    Ok(ExitCode::SUCCESS)
}

/// docker's NETWORKS column: the networks' names, comma-separated.
fn networks(h: &runtime::container::HostConfig) -> String {
    let names: Vec<String> = h.networks().into_iter().map(|a| a.network).collect();
    match names.is_empty() {
        true => h.network_mode.as_str().to_string(),
        false => names.join(","),
    }
}

/// docker's PORTS column: `0.0.0.0:8080->80/tcp, 127.0.0.1:32768->81/tcp`.
fn ports(r: &Summary) -> String {
    r.networks
        .iter()
        .flat_map(|n| n.ports.iter().map(|p| p.short()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One container as `ps --format` sees it (docker's field names and wording).
fn row_json(r: &Summary, id: &str, no_trunc: bool, now: DateTime<Utc>) -> serde_json::Value {
    let labels: Vec<String> = r
        .config
        .config
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    serde_json::json!({
        "ID": id,
        "Image": r.config.image_ref,
        "Command": command(&r.config.path, &r.config.args, no_trunc),
        "CreatedAt": created_at(&r.config.created),
        "RunningFor": human::ago(Some(&r.config.created), now),
        "Ports": ports(r),
        "State": r.state.observed().status_word(),
        "Status": status(&r.state, now),
        "Names": r.config.name,
        "Labels": labels.join(","),
        "Mounts": "",
        "Networks": networks(&r.config.host_config),
        "LocalVolumes": "0",
        "Isolation": r.config.host_config.isolation.as_str(),
    })
}

/// docker's SIZE: `<container's own> (virtual <with its image>)`.
struct Sizes {
    images: Option<rootfs::store::Store>,
    root: std::path::PathBuf,
}

impl Sizes {
    fn new(root: &Path) -> Self {
        Sizes {
            images: rootfs::store::Store::open(root).ok(),
            root: root.to_owned(),
        }
    }

    fn of(&self, r: &Summary) -> String {
        let own = super::engine(&self.root).disk_usage(&r.config.id);
        let image = self.images.as_ref().map_or(0, |s| {
            s.resolve(&r.config.image)
                .map_or(0, |i| crate::images::image_size(&self.root, s, &i))
        });
        format!(
            "{} (virtual {})",
            human::size(own),
            human::size(own + image)
        )
    }
}

/// docker's `CreatedAt`: `2024-01-01 00:00:00 +0000 UTC`.
fn created_at(rfc3339: &str) -> String {
    DateTime::parse_from_rfc3339(rfc3339).map_or_else(
        |_| rfc3339.to_owned(),
        |t| {
            t.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M:%S +0000 UTC")
                .to_string()
        },
    )
}

/// `"sh -c 'echo…"`: the command quoted, cut to 20 characters unless `no_trunc`.
fn command(path: &str, args: &[String], no_trunc: bool) -> String {
    let mut cmd = std::iter::once(path)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    if !no_trunc && cmd.chars().count() > 20 {
        cmd = cmd.chars().take(19).collect::<String>() + "…";
    }
    format!("{cmd:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_and_cut() {
        assert_eq!(command("echo", &["hi".into()], false), "\"echo hi\"");
        let long: Vec<String> = vec!["-c".into(), "while true; do sleep 1; done".into()];
        assert_eq!(command("sh", &long, false), "\"sh -c while true; d…\"");
        assert_eq!(
            command("sh", &long, true),
            "\"sh -c while true; do sleep 1; done\""
        );
    }
}
