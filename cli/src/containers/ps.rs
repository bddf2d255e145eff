//! `husk ps`: docker's table (CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES)
//! with its status wording ("Up 2 seconds", "Exited (0) 3 seconds ago").

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;
use runtime::container::{ContainerState, Status, short_id};
use runtime::lifecycle::{self, Summary};

use crate::human;

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
}

/// `husk ps`.
pub fn ps(a: PsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let rows = lifecycle::list(root, a.all)?;
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
    for r in &rows {
        table.push(vec![
            id(r),
            r.config.image_ref.clone(),
            command(&r.config.path, &r.config.args, a.no_trunc),
            human::ago(Some(&r.config.created), now),
            status(&r.state, now),
            String::new(),
            r.config.name.clone(),
        ]);
    }
    print!("{}", human::table(&table));
    Ok(ExitCode::SUCCESS)
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

fn since(t: &str, now: DateTime<Utc>) -> Option<i64> {
    let t = DateTime::parse_from_rfc3339(t).ok()?;
    Some((now - t.with_timezone(&Utc)).num_seconds())
}

/// docker's STATUS column.
pub fn status(s: &ContainerState, now: DateTime<Utc>) -> String {
    let ago = |t: &str| match since(t, now) {
        Some(secs) => format!(" {} ago", human::duration(secs)),
        None => String::new(),
    };
    match s.status {
        Status::Running if s.running() => match since(&s.started_at, now) {
            Some(secs) => format!("Up {}", human::duration(secs)),
            None => "Up".to_owned(),
        },
        Status::Restarting if s.running() => {
            format!("Restarting ({}){}", s.exit_code, ago(&s.finished_at))
        }
        Status::Created => "Created".to_owned(),
        Status::Dead => "Dead".to_owned(),
        Status::Removing => "Removal In Progress".to_owned(),
        // Exited, or running/restarting under a shim that is gone.
        _ => format!("Exited ({}){}", s.exit_code, ago(&s.finished_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn status_words_like_docker() {
        let now = at("2024-01-01T00:01:00Z");
        let exited = ContainerState {
            status: Status::Exited,
            exit_code: 3,
            finished_at: "2024-01-01T00:00:57.5Z".into(),
            ..ContainerState::default()
        };
        assert_eq!(status(&exited, now), "Exited (3) 2 seconds ago");
        let created = ContainerState::default();
        assert_eq!(status(&created, now), "Created");
        // Running with our own pid as the shim: alive.
        let running = ContainerState {
            status: Status::Running,
            shim_pid: std::process::id() as i32,
            started_at: "2024-01-01T00:00:30Z".into(),
            ..ContainerState::default()
        };
        assert_eq!(status(&running, now), "Up 30 seconds");
        // Running according to the file, but the shim is gone: it exited.
        let stale = ContainerState {
            shim_pid: 0,
            exit_code: 137,
            ..running
        };
        assert_eq!(status(&stale, now), "Exited (137)");
    }

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
