//! `husk bench vmm`: husk's VMM against QEMU's microvm machine, side by side in the same
//! run (these machines are noisy, so only same-run comparisons mean anything).
//!
//! (a) a trivial guest that resets at once: process start to exit wall time and peak
//! RSS; (b) the real guest kernel: process start to `Run /init as init process` on the
//! console, and to the VM's end. Each measured N times; medians, spreads and ratios.
//!
//! `husk bench run` (containers against crun) lives in `containers`, `husk bench net`
//! (host/container TCP against host loopback) in `net`, `husk bench build` (Dockerfile
//! builds against buildah) in `build`.

pub mod build;
pub mod containers;
mod iperf;
pub mod net;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Errors running the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A scratch file could not be written.
    #[error("cannot write benchmark scratch files in {0}")]
    Scratch(PathBuf, #[source] std::io::Error),
    /// A measured program could not be started.
    #[error("cannot start {0}")]
    Spawn(String, #[source] std::io::Error),
    /// A measured program failed.
    #[error("{0} failed during the benchmark: {1}")]
    Failed(String, String),
}

/// One measured run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Process start to exit.
    pub wall: Duration,
    /// Peak resident set size in KiB.
    pub max_rss_kib: u64,
    /// Process start to the watched console line, if one was watched and seen.
    pub milestone: Option<Duration>,
}

/// Runs `cmd` to its end, timing it and reading its peak RSS; with `watch`, reads its
/// stdout and notes when the first line containing `watch` arrived.
pub fn measure(mut cmd: Command, name: &str, watch: Option<&str>) -> Result<Sample, Error> {
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    cmd.stdout(if watch.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::Spawn(name.to_string(), e))?;
    let mut milestone = None;
    if let (Some(pattern), Some(out)) = (watch, child.stdout.take()) {
        for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
            if milestone.is_none() && String::from_utf8_lossy(&line).contains(pattern) {
                milestone = Some(start.elapsed());
            }
        }
    }
    let stderr = child.stderr.take();
    let (status, rusage) = wait4(child.id() as libc::pid_t)
        .map_err(|e| Error::Failed(name.to_string(), e.to_string()))?;
    let wall = start.elapsed();
    let status = std::process::ExitStatus::from_raw(status);
    if status.signal().is_some() {
        let mut err = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut err);
        }
        return Err(Error::Failed(
            name.to_string(),
            format!("{status}: {}", err.trim()),
        ));
    }
    Ok(Sample {
        wall,
        max_rss_kib: rusage.ru_maxrss as u64,
        milestone,
    })
}

fn wait4(pid: libc::pid_t) -> std::io::Result<(i32, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data; zeroed is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child; status and usage point at live locals.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Median, minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

/// Stats of `values`, `None` when empty.
pub fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `husk` binary to measure.
    pub husk: PathBuf,
    /// QEMU, if it is to be measured.
    pub qemu: Option<PathBuf>,
    /// Runs of the trivial guest per VMM.
    pub runs: usize,
    /// Runs of the real kernel per VMM (0 skips it).
    pub kernel_runs: usize,
    /// The guest kernel.
    pub kernel: Option<PathBuf>,
    /// The initramfs for the kernel runs.
    pub initrd: Option<PathBuf>,
    /// The kernel command line husk gives a console-on guest on this host, given to QEMU
    /// too for a fair comparison.
    pub qemu_cmdline: String,
    /// Scratch directory.
    pub work_dir: PathBuf,
}

fn husk_boot(o: &Options, kernel: &Path, initrd: Option<&Path>, console: bool) -> Command {
    let mut c = Command::new(&o.husk);
    c.args(["vm", "boot", "--memory", "128", "--kernel"])
        .arg(kernel);
    match initrd {
        Some(i) => c.arg("--initrd").arg(i),
        None => c.arg("--no-initrd"),
    };
    if console {
        c.arg("--console");
    }
    c
}

fn qemu_boot(qemu: &Path, kernel: &Path, initrd: Option<&Path>, append: Option<&str>) -> Command {
    let mut c = Command::new(qemu);
    c.args([
        "-M",
        "microvm,x-option-roms=off,rtc=off,isa-serial=on",
        "-accel",
        "kvm",
    ]);
    c.args([
        "-cpu",
        // ARCH_CAPABILITIES is not writable under every KVM backend (PVM refuses it).
        "host,-arch-capabilities",
        "-m",
        "128M",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
    ]);
    c.args(["-display", "none", "-serial", "stdio", "-no-reboot"]);
    c.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel"])
        .arg(kernel);
    if let Some(i) = initrd {
        c.arg("-initrd").arg(i);
    }
    if let Some(a) = append {
        c.args(["-append", a]);
    }
    c
}

/// Samples of one VMM on one guest.
#[derive(Debug, Default)]
pub struct Series {
    /// What ran.
    pub label: String,
    /// The samples.
    pub samples: Vec<Sample>,
}

fn run_series(
    label: &str,
    runs: usize,
    watch: Option<&str>,
    make: impl Fn() -> Command,
) -> Result<Series, Error> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        log::info!("{label}: run {}/{runs}", i + 1);
        samples.push(measure(make(), label, watch)?);
    }
    Ok(Series {
        label: label.to_string(),
        samples,
    })
}

/// Runs the whole benchmark; returns the series in report order.
pub fn run(o: &Options) -> Result<Vec<Series>, Error> {
    std::fs::create_dir_all(&o.work_dir).map_err(|e| Error::Scratch(o.work_dir.clone(), e))?;
    let tiny = o.work_dir.join("reset-at-once.elf");
    std::fs::write(&tiny, vmm::tiny_elf::build(vmm::tiny_elf::RESET_AT_ONCE))
        .map_err(|e| Error::Scratch(tiny.clone(), e))?;
    let mut out = vec![run_series("husk: trivial guest", o.runs, None, || {
        husk_boot(o, &tiny, None, false)
    })?];
    if let Some(q) = &o.qemu {
        out.push(run_series(
            "qemu microvm: trivial guest",
            o.runs,
            None,
            || qemu_boot(q, &tiny, None, None),
        )?);
    }
    let Some(kernel) = o.kernel.as_deref().filter(|_| o.kernel_runs > 0) else {
        return Ok(out);
    };
    let watch = Some(crate::guest::MILESTONES[2].0);
    out.push(run_series("husk: kernel", o.kernel_runs, watch, || {
        husk_boot(o, kernel, o.initrd.as_deref(), true)
    })?);
    if let Some(q) = &o.qemu {
        out.push(run_series(
            "qemu microvm: kernel",
            o.kernel_runs,
            watch,
            || qemu_boot(q, kernel, o.initrd.as_deref(), Some(&o.qemu_cmdline)),
        )?);
    }
    Ok(out)
}

fn fmt_stats(s: Option<Stats>, unit: &str) -> String {
    match s {
        Some(s) => format!("{:.1} {unit} [{:.1}-{:.1}]", s.median, s.min, s.max),
        None => "-".to_string(),
    }
}

fn metric(series: &Series, f: impl Fn(&Sample) -> Option<f64>) -> Option<Stats> {
    stats(&series.samples.iter().filter_map(f).collect::<Vec<_>>())
}

/// The report: one line per series and metric, medians with [min-max], and ratios of
/// husk's medians to QEMU's.
pub fn render(series: &[Series]) -> String {
    let mut lines = Vec::new();
    type Metric = (&'static str, &'static str, fn(&Sample) -> Option<f64>);
    let wall_ms: Metric = ("start to exit", "ms", |x| {
        Some(x.wall.as_secs_f64() * 1000.0)
    });
    let rss: Metric = ("peak RSS", "MiB", |x| Some(x.max_rss_kib as f64 / 1024.0));
    let init_s: Metric = ("start to Run /init", "s", |x| {
        x.milestone.map(|d| d.as_secs_f64())
    });
    let total_s: Metric = ("start to exit", "s", |x| Some(x.wall.as_secs_f64()));
    for s in series {
        let metrics: &[Metric] = if s.label.ends_with("kernel") {
            &[init_s, total_s, rss]
        } else {
            &[wall_ms, rss]
        };
        for (name, unit, f) in metrics {
            lines.push(format!(
                "{:<28} {:<20} {:>28}   (n={})",
                s.label,
                name,
                fmt_stats(metric(s, f), unit),
                s.samples.len()
            ));
        }
    }
    for guest in ["trivial guest", "kernel"] {
        let find = |vmm: &str| series.iter().find(|s| s.label == format!("{vmm}: {guest}"));
        if let (Some(h), Some(q)) = (find("husk"), find("qemu microvm")) {
            let metrics: &[Metric] = if guest == "kernel" {
                &[init_s, rss]
            } else {
                &[wall_ms, rss]
            };
            for (name, _, f) in metrics {
                if let (Some(a), Some(b)) = (metric(h, f), metric(q, f)) {
                    lines.push(format!(
                        "ratio husk/qemu, {guest}, {name}: {:.3}x",
                        a.median / b.median
                    ));
                }
            }
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        assert_eq!(
            stats(&[3.0, 1.0, 2.0]),
            Some(Stats {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn measure_times_a_real_process_and_watches_its_output() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo one; echo 'two: Run /init as init process'; echo three",
        ]);
        let s = measure(cmd, "sh", Some("Run /init")).unwrap();
        assert!(s.milestone.is_some());
        assert!(s.wall >= s.milestone.unwrap());
        assert!(s.max_rss_kib > 0);
    }

    #[test]
    fn measure_reports_a_killed_process() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "kill -9 $$"]);
        assert!(matches!(measure(cmd, "sh", None), Err(Error::Failed(..))));
    }

    #[test]
    fn render_prints_ratios() {
        let sample = |ms: u64, kib: u64| Sample {
            wall: Duration::from_millis(ms),
            max_rss_kib: kib,
            milestone: None,
        };
        let series = vec![
            Series {
                label: "husk: trivial guest".into(),
                samples: vec![sample(5, 4096)],
            },
            Series {
                label: "qemu microvm: trivial guest".into(),
                samples: vec![sample(50, 40960)],
            },
        ];
        let r = render(&series);
        assert!(
            r.contains("ratio husk/qemu, trivial guest, start to exit: 0.100x"),
            "{r}"
        );
        assert!(
            r.contains("ratio husk/qemu, trivial guest, peak RSS: 0.100x"),
            "{r}"
        );
    }
}
