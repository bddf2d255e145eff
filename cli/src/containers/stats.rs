//! `husk stats`: docker's table (CONTAINER ID, NAME, CPU %, MEM USAGE / LIMIT, MEM %, NET I/O,
//! BLOCK I/O, PIDS) from two readings a second apart; streamed until interrupted unless
//! `--no-stream`. What each column means per isolation: `runtime::stats`.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use runtime::container::short_id;
use runtime::lifecycle::Summary;
use runtime::stats::{self, Sample};

use crate::format::Format;
use crate::human;

/// `husk stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Print one reading and exit.
    #[arg(long)]
    no_stream: bool,
    /// Do not truncate IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Go template (`{{.Name}} {{.CPUPerc}}`, `{{json .}}`, `table ...`).
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Containers (default: every running one).
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// docker's column titles by field.
const HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// docker's default `table` format.
const DEFAULT: &str = "table {{.ID}}\\t{{.Name}}\\t{{.CPUPerc}}\\t{{.MemUsage}}\\t{{.MemPerc}}\\t{{.NetIO}}\\t{{.BlockIO}}\\t{{.PIDs}}";

/// `husk stats`.
pub fn stats(a: StatsArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let format = Format::parse(a.format.as_deref().unwrap_or(DEFAULT))?;
    let pick = |all: Vec<Summary>| -> anyhow::Result<Vec<Summary>> {
        if a.containers.is_empty() {
            return Ok(all);
        }
        let store = runtime::container::Store::open(root)?;
        let mut chosen = Vec::new();
        for q in &a.containers {
            let id = store.resolve(q)?;
            chosen.extend(all.iter().filter(|s| s.config.id == id).cloned());
        }
        Ok(chosen)
    };
    let terminal = std::io::stdout().is_terminal();
    loop {
        let containers = pick(super::engine(root).list(a.all || !a.containers.is_empty())?)?;
        let first: Vec<(Sample, Instant)> = containers
            .iter()
            .map(|c| (stats::sample(&c.config, &c.state), Instant::now()))
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let rows: Vec<serde_json::Value> = containers
            .iter()
            .zip(&first)
            .map(|(c, (before, at))| {
                row(
                    c,
                    before,
                    *at,
                    &stats::sample(&c.config, &c.state),
                    a.no_trunc,
                )
            })
            .collect();
        let out = format.render_rows(&rows, HEADERS)?;
        let mut stdout = std::io::stdout().lock();
        if terminal && !a.no_stream {
            write!(stdout, "\x1b[2J\x1b[H")?;
        }
        write!(stdout, "{out}")?;
        stdout.flush()?;
        if a.no_stream {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// One container's row: CPU % from the two readings.
fn row(
    c: &Summary,
    before: &Sample,
    at: Instant,
    now: &Sample,
    no_trunc: bool,
) -> serde_json::Value {
    let running = c.state.running();
    let secs = at.elapsed().as_secs_f64().max(0.001);
    let used = now.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
    let cpu = used / stats::ticks_per_second() as f64 / secs * 100.0;
    let (mem, limit) = match running {
        true => (now.memory, now.limit),
        false => (0, 0),
    };
    let mem_perc = match limit {
        0 => 0.0,
        l => mem as f64 * 100.0 / l as f64,
    };
    let id = match no_trunc {
        true => c.config.id.clone(),
        false => short_id(&c.config.id).to_owned(),
    };
    let pair = |(a, b): (u64, u64)| format!("{} / {}", human::size(a), human::size(b));
    serde_json::json!({
        "ID": id,
        "Container": id,
        "Name": c.config.name,
        "CPUPerc": format!("{:.2}%", if running { cpu } else { 0.0 }),
        "MemUsage": format!("{} / {}", human::binary_size(mem), human::binary_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": pair(now.net_io),
        "BlockIO": pair(now.block_io),
        "PIDs": match (running, now.pids) {
            (false, _) => "0".to_owned(),
            (true, Some(p)) => p.to_string(),
            (true, None) => "-".to_owned(),
        },
    })
}
