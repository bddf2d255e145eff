//! `GET /containers/{id}/stats?stream=`: docker's stats document, one per second while the
//! client reads (or one, with `stream=0`, after a second so that CPU use has a base). CPU
//! times are nanoseconds (from the host's clock ticks: the workload's processes, or the
//! VMM's vCPU threads), the system's from `/proc/stat`, as docker computes CPU percent.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runtime::stats::Sample;
use serde_json::{Value, json};

use crate::body::{self, Resp};
use crate::error::ApiError;
use crate::route::Query;
use crate::server::{Daemon, blocking};

/// The host's CPU time so far (all CPUs, all states), in nanoseconds.
fn system_ns(tick_ns: u64) -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks.saturating_mul(tick_ns)
}

struct Reading {
    at: String,
    sample: Sample,
    system: u64,
}

fn read(
    engine: &runtime::engine::Engine,
    id: &str,
    tick_ns: u64,
) -> Result<(String, Reading), ApiError> {
    let (name, sample) = engine.stats(id)?;
    let reading = Reading {
        at: runtime::container::now(),
        sample,
        system: system_ns(tick_ns),
    };
    Ok((name, reading))
}

fn cpu(r: &Reading, tick_ns: u64, cpus: usize) -> Value {
    json!({
        "cpu_usage": {"total_usage": r.sample.cpu_ticks.saturating_mul(tick_ns),
                      "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": r.system,
        "online_cpus": cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

fn document(id: &str, name: &str, now: &Reading, pre: &Reading, tick_ns: u64) -> Value {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let s = &now.sample;
    json!({
        "read": now.at,
        "preread": pre.at,
        "id": id,
        "name": format!("/{name}"),
        "pids_stats": {"current": s.pids.unwrap_or(0)},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu(now, tick_ns, cpus),
        "precpu_stats": cpu(pre, tick_ns, cpus),
        "memory_stats": {"usage": s.memory, "limit": s.limit, "stats": {}},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": s.block_io.0},
            {"major": 0, "minor": 0, "op": "write", "value": s.block_io.1},
        ]},
        "networks": {"eth0": {"rx_bytes": s.net_io.0, "tx_bytes": s.net_io.1,
                               "rx_packets": 0, "tx_packets": 0, "rx_errors": 0,
                               "tx_errors": 0, "rx_dropped": 0, "tx_dropped": 0}},
    })
}

/// `GET /containers/{id}/stats?stream=`.
pub async fn stats(d: &Arc<Daemon>, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let stream = q.get("stream").is_none_or(|v| v == "1" || v == "true");
    let tick_ns = 1_000_000_000 / runtime::stats::ticks_per_second();
    let (engine, query) = (d.engine.clone(), id.to_owned());
    let (name, first) = {
        let (engine, query) = (engine.clone(), query.clone());
        blocking(move || read(&engine, &query, tick_ns)).await?
    };
    let full = {
        let (engine, query) = (engine.clone(), query.clone());
        blocking(move || Ok(engine.config(&query)?.id)).await?
    };
    let (tx, resp) = body::streamed("application/json");
    tokio::task::spawn_blocking(move || {
        let mut pre = first;
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let Ok((_, now)) = read(&engine, &query, tick_ns) else {
                return;
            };
            let doc = document(&full, &name, &now, &pre, tick_ns);
            if tx
                .blocking_send(Bytes::from(doc.to_string() + "\n"))
                .is_err()
                || !stream
            {
                return;
            }
            pre = now;
        }
    });
    Ok(resp)
}
