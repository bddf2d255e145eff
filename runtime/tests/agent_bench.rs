//! Agent protocol benchmark (not a test: ignored by default, prints numbers, asserts only
//! correctness). Measures over the host-process agent's unix socket:
//! request round trip (ping), a whole `true` run (start + wait), stdout and stdin throughput,
//! with a plain local pipe as the baseline for throughput.
//!
//! ```text
//! cargo build --release -p agent
//! cargo test --release -p runtime --test agent_bench -- --ignored --nocapture
//! # or against the static agent: HUSK_AGENT_BIN=$PWD/target/husk-agent cargo test ...
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use runtime::agent_client::{AgentClient, ProcessSpec, sink_fn};
use support::Agent;

const PINGS: usize = 2000;
const RUNS: usize = 200;
const STDOUT_MIB: u64 = 1024;
const STDIN_MIB: usize = 256;

fn spec(argv: &[&str]) -> ProcessSpec {
    ProcessSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..ProcessSpec::default()
    }
}

/// (mean, p50, p99) in microseconds.
fn stats(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / samples.len() as f64;
    let at = |q: f64| us(samples[((samples.len() - 1) as f64 * q) as usize]);
    (mean, at(0.5), at(0.99))
}

fn timed(n: usize, mut f: impl FnMut()) -> (f64, f64, f64) {
    let samples = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    stats(samples)
}

fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
}

fn stdout_throughput(client: &AgentClient) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let c = Arc::clone(&count);
    let out = sink_fn(move |b| {
        c.fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    let head = spec(&["head", "-c", &format!("{STDOUT_MIB}M"), "/dev/zero"]);
    let start = Instant::now();
    let exit = client.run(&head, None, out, sink_fn(|_| {})).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(exit.code, 0);
    assert_eq!(count.load(Ordering::Relaxed), STDOUT_MIB << 20);
    mib_per_s(STDOUT_MIB << 20, elapsed)
}

fn stdin_throughput(client: &AgentClient) -> f64 {
    let input = vec![7u8; STDIN_MIB << 20];
    let start = Instant::now();
    let exit = client
        .run(
            &spec(&["sh", "-c", "exec cat > /dev/null"]),
            Some(&mut &input[..]),
            sink_fn(|_| {}),
            sink_fn(|_| {}),
        )
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(exit.code, 0);
    mib_per_s(input.len() as u64, elapsed)
}

/// The same stdout workload through a local pipe, without the agent.
fn local_pipe_throughput() -> f64 {
    let start = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &format!("{STDOUT_MIB}M"), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        match pipe.read(&mut buf).unwrap() {
            0 => break,
            n => total += n as u64,
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(total, STDOUT_MIB << 20);
    mib_per_s(total, start.elapsed())
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn agent_protocol_benchmark() {
    let agent = Agent::start();
    let client = agent.client();
    let connect = timed(100, || drop(agent.client()));
    let ping = timed(PINGS, || client.ping().unwrap());
    let run_true = timed(RUNS, || {
        let exit = client
            .run(&spec(&["true"]), None, sink_fn(|_| {}), sink_fn(|_| {}))
            .unwrap();
        assert_eq!(exit.code, 0);
    });
    let local_true = timed(RUNS, || {
        assert!(Command::new("true").status().unwrap().success());
    });
    let stdout = stdout_throughput(&client);
    let stdin = stdin_throughput(&client);
    let local = local_pipe_throughput();
    println!("agent: {}", support::agent_bin().display());
    println!("{:<34} {:>10} {:>10} {:>10}", "", "mean", "p50", "p99");
    for (name, (mean, p50, p99)) in [
        ("connect + ready (us)", connect),
        (&*format!("ping round trip x{PINGS} (us)"), ping),
        (&*format!("run `true` x{RUNS} (us)"), run_true),
        ("local spawn+wait `true` (us)", local_true),
    ] {
        println!("{name:<34} {mean:>10.1} {p50:>10.1} {p99:>10.1}");
    }
    println!("stdout {STDOUT_MIB} MiB through the agent: {stdout:>8.0} MiB/s");
    println!("stdin {STDIN_MIB} MiB through the agent:   {stdin:>8.0} MiB/s");
    println!("stdout {STDOUT_MIB} MiB via a local pipe:  {local:>8.0} MiB/s (baseline)");
}
