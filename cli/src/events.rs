//! `husk events` (and `system events`): what happened to containers and images, from the
//! log every husk process appends to (`runtime::events`): from `--since` (or from now) and
//! then as it happens, until `--until` or an interrupt; docker's line, or `--format`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use chrono::Utc;
use clap::Args;
use runtime::events::{self, Event, Query};

use crate::format::Format;
use crate::human;

/// `husk events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Show events from this time (RFC 3339, Unix time or a duration like 10m).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Stop at this time (same forms); without it husk follows until interrupted.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Filter: type=, event=, container=, image=, label=KEY[=VALUE].
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Go template (`{{json .}}`, `{{.Action}} {{.Actor.ID}}`).
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
}

/// `husk events`.
pub fn events(a: EventsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let nanos = |t: &str| -> anyhow::Result<i64> {
        let t = human::parse_time(t, now)?;
        Ok(t.timestamp_nanos_opt().unwrap_or(i64::MAX))
    };
    let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in &a.filter {
        let Some((key, value)) = f.split_once('=') else {
            bail!("bad format of filter (expected name=value)");
        };
        if !events::FILTER_KEYS.contains(&key) {
            bail!("invalid filter '{key}'");
        }
        filters.entry(key.into()).or_default().push(value.into());
    }
    let query = Query {
        since: a.since.as_deref().map(nanos).transpose()?,
        until: a.until.as_deref().map(nanos).transpose()?,
        filters,
    };
    let format = a.format.as_deref().map(Format::parse).transpose()?;
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    events::follow(root, &query, &mut |e: &Event| {
        let line = match &format {
            Some(f) => serde_json::to_value(e)
                .map_err(anyhow::Error::from)
                .and_then(|v| f.render(&v)),
            None => Ok(e.line()),
        };
        let written = line.and_then(|l| Ok(writeln!(out, "{l}").and_then(|()| out.flush())?));
        match written {
            Ok(()) => true,
            Err(err) => {
                failed = Some(err);
                false
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}
