//! Turning samples into a profile: each sample gets a label (the kernel function its RIP
//! is in, or `[user]`, `[idle]`, `[not started]`), and the labels are counted overall, per
//! boot phase (the spans between the console milestones the VMM timestamped) and per
//! time window; then rendered as a plain-text report.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::sampler::{CpuState, Sample};
use super::symbols::SymbolMap;

/// Addresses below this are user space (the lower canonical half).
pub const KERNEL_HALF: u64 = 0x8000_0000_0000_0000;

/// Label of samples in guest user space.
pub const USER: &str = "[user]";
/// Label of samples of a halted vCPU.
pub const IDLE: &str = "[idle]";
/// Label of samples of an application processor not started yet.
pub const NOT_STARTED: &str = "[not started]";

/// Errors saving a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The report could not be written to its file.
    #[error("cannot write the profile to {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Most windows the timeline is cut into.
const MAX_WINDOWS: u64 = 40;
/// Labels shown per timeline window.
const WINDOW_TOP: usize = 3;

/// The label of one sample.
pub fn label(sample: &Sample, symbols: Option<&SymbolMap>) -> String {
    match sample.state {
        CpuState::Halted => IDLE.to_string(),
        CpuState::NotStarted => NOT_STARTED.to_string(),
        CpuState::User => USER.to_string(),
        CpuState::Kernel => match symbols.and_then(|m| m.lookup(sample.rip)) {
            Some(name) => name.to_string(),
            None if sample.rip < KERNEL_HALF => USER.to_string(),
            None => format!("{:#x}", sample.rip),
        },
    }
}

/// Label counts, most frequent first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    total: u64,
    counts: Vec<(String, u64)>,
}

impl Tally {
    fn from_labels<'a>(labels: impl Iterator<Item = &'a str>) -> Tally {
        let mut map: HashMap<&str, u64> = HashMap::new();
        let mut total = 0;
        for l in labels {
            *map.entry(l).or_default() += 1;
            total += 1;
        }
        let mut counts: Vec<(String, u64)> =
            map.into_iter().map(|(l, n)| (l.to_string(), n)).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Tally { total, counts }
    }

    /// Samples counted.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Every label with its count, most frequent first.
    pub fn counts(&self) -> &[(String, u64)] {
        &self.counts
    }

    /// The count of `label`.
    pub fn count(&self, label: &str) -> u64 {
        self.counts
            .iter()
            .find(|(l, _)| l == label)
            .map_or(0, |(_, n)| *n)
    }

    fn percent(&self, n: u64) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / self.total as f64
        }
    }
}

/// One boot phase: the span from one milestone to the next.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// `start -> Linux version`, `Linux version -> Command line:`, ..., `X -> end`.
    pub name: String,
    /// Where it starts, from the vCPUs' start.
    pub start: Duration,
    /// Where it ends.
    pub end: Duration,
    /// What the vCPUs did in it.
    pub tally: Tally,
}

/// The spans between the milestones that were seen, in time order, covering `0..end`.
pub fn phase_spans(
    milestones: &[(String, Option<Duration>)],
    end: Duration,
) -> Vec<(String, Duration, Duration)> {
    let mut seen: Vec<(&str, Duration)> = milestones
        .iter()
        .filter_map(|(p, at)| at.map(|at| (p.trim(), at.min(end))))
        .collect();
    seen.sort_by_key(|(_, at)| *at);
    let mut spans = Vec::with_capacity(seen.len() + 1);
    let (mut from_name, mut from) = ("start", Duration::ZERO);
    for (name, at) in seen {
        spans.push((format!("{from_name} -> {name}"), from, at));
        (from_name, from) = (name, at);
    }
    spans.push((format!("{from_name} -> end"), from, end));
    spans
}

/// Which span (by index) a time falls into: the last whose start is not after it.
fn span_of(spans: &[(String, Duration, Duration)], at: Duration) -> usize {
    spans
        .partition_point(|(_, start, _)| *start <= at)
        .saturating_sub(1)
}

/// One vCPU's sample counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VcpuTotals {
    /// Every sample.
    pub samples: u64,
    /// In the kernel (CPL 0).
    pub kernel: u64,
    /// In user space.
    pub user: u64,
    /// Halted.
    pub idle: u64,
    /// Not started yet.
    pub not_started: u64,
}

/// What the profile was taken with, besides the samples.
#[derive(Debug, Clone)]
pub struct ProfileInputs<'a> {
    /// The sampling interval.
    pub interval: Duration,
    /// The symbols, if a System.map was loaded.
    pub symbols: Option<&'a SymbolMap>,
    /// The console milestones, from the vCPUs' start.
    pub milestones: &'a [(String, Option<Duration>)],
    /// How long the vCPUs ran.
    pub duration: Duration,
    /// How many vCPUs there were.
    pub vcpus: usize,
    /// Samples whose registers could not be read.
    pub read_errors: u64,
}

/// A finished profile.
#[derive(Debug, Clone)]
pub struct Profile {
    interval: Duration,
    duration: Duration,
    system_map: Option<PathBuf>,
    read_errors: u64,
    samples: Vec<Sample>,
    vcpus: Vec<VcpuTotals>,
    overall: Tally,
    phases: Vec<Phase>,
    timeline: Vec<Phase>,
}

impl Profile {
    /// Counts `samples` (in time order) into a profile.
    pub fn build(samples: Vec<Sample>, inputs: &ProfileInputs<'_>) -> Profile {
        let labels: Vec<String> = samples.iter().map(|s| label(s, inputs.symbols)).collect();
        let overall = Tally::from_labels(labels.iter().map(String::as_str));
        let spans = phase_spans(inputs.milestones, inputs.duration);
        let phases = bucket(&samples, &labels, spans);
        let timeline = bucket(&samples, &labels, window_spans(inputs.duration));
        let mut vcpus = vec![VcpuTotals::default(); inputs.vcpus];
        for (s, l) in samples.iter().zip(&labels) {
            if let Some(v) = vcpus.get_mut(usize::from(s.vcpu)) {
                v.samples += 1;
                match s.state {
                    CpuState::Kernel | CpuState::User if l == USER => v.user += 1,
                    CpuState::Kernel | CpuState::User => v.kernel += 1,
                    CpuState::Halted => v.idle += 1,
                    CpuState::NotStarted => v.not_started += 1,
                }
            }
        }
        Profile {
            interval: inputs.interval,
            duration: inputs.duration,
            system_map: inputs.symbols.map(|m| m.source().to_path_buf()),
            read_errors: inputs.read_errors,
            samples,
            vcpus,
            overall,
            phases,
            timeline,
        }
    }

    /// Every sample, in time order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Label counts over the whole run.
    pub fn overall(&self) -> &Tally {
        &self.overall
    }

    /// Label counts per boot phase.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// Per-vCPU counts by state.
    pub fn vcpus(&self) -> &[VcpuTotals] {
        &self.vcpus
    }

    /// Writes the full report (`render(top)`) to `path`.
    pub fn write(&self, path: &std::path::Path, top: usize) -> Result<(), Error> {
        std::fs::write(path, self.render(top)).map_err(|e| Error::Write(path.to_path_buf(), e))
    }
}

/// Timeline windows: whole seconds, at most `MAX_WINDOWS` of them.
fn window_spans(duration: Duration) -> Vec<(String, Duration, Duration)> {
    let secs = duration.as_secs() + 1;
    let step = secs.div_ceil(MAX_WINDOWS).max(1);
    (0..secs)
        .step_by(step as usize)
        .map(|s| {
            let (from, to) = (Duration::from_secs(s), Duration::from_secs(s + step));
            (format!("{s:>3}-{:<3}s", s + step), from, to.min(duration))
        })
        .filter(|(_, from, _)| *from <= duration)
        .collect()
}

fn bucket(
    samples: &[Sample],
    labels: &[String],
    spans: Vec<(String, Duration, Duration)>,
) -> Vec<Phase> {
    let mut per: Vec<Vec<&str>> = vec![Vec::new(); spans.len()];
    for (s, l) in samples.iter().zip(labels) {
        if let Some(p) = per.get_mut(span_of(&spans, s.at)) {
            p.push(l);
        }
    }
    spans
        .into_iter()
        .zip(per)
        .map(|((name, start, end), labels)| Phase {
            name,
            start,
            end,
            tally: Tally::from_labels(labels.into_iter()),
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

impl Profile {
    /// The full text report: header, per-vCPU states, the `top` labels overall and per
    /// phase, and a timeline of the leading labels per window.
    pub fn render(&self, top: usize) -> String {
        let mut out = self.header();
        let overall = format!("overall, {}", secs(self.duration));
        out.push_str(&self.table(&overall, &self.overall, top));
        for (i, p) in self.phases.iter().enumerate() {
            let title = format!(
                "phase {}/{}: {} ({} .. {})",
                i + 1,
                self.phases.len(),
                p.name,
                secs(p.start),
                secs(p.end)
            );
            out.push_str(&self.table(&title, &p.tally, top));
        }
        if self.phases.len() == 1 {
            out.push_str(
                "\n(no console milestones were seen, so there is one phase: boot with \
                 --console or --console-file to split the profile at the kernel's boot \
                 messages)\n",
            );
        }
        out.push_str(&self.timeline_text());
        out
    }

    /// The header and the `top` labels overall: what a terminal shows.
    pub fn summary(&self, top: usize) -> String {
        let mut out = self.header();
        out.push_str(&self.table("overall", &self.overall, top));
        out
    }

    fn header(&self) -> String {
        let mut out = format!(
            "husk guest profile: {} samples of {} vCPU(s), one per {} µs per vCPU, over {}\n",
            self.overall.total(),
            self.vcpus.len(),
            self.interval.as_micros(),
            secs(self.duration),
        );
        match &self.system_map {
            Some(p) => {
                let _ = writeln!(out, "symbols: {}", p.display());
            }
            None => out.push_str("symbols: none (no System.map): kernel addresses in hex\n"),
        }
        if self.read_errors > 0 {
            let _ = writeln!(
                out,
                "samples lost to register-read errors: {}",
                self.read_errors
            );
        }
        for (i, v) in self.vcpus.iter().enumerate() {
            let pct = |n: u64| {
                if v.samples == 0 {
                    0.0
                } else {
                    n as f64 * 100.0 / v.samples as f64
                }
            };
            let _ = writeln!(
                out,
                "vCPU {i}: {} samples: kernel {:.1}%, user {:.1}%, idle {:.1}%, not started {:.1}%",
                v.samples,
                pct(v.kernel),
                pct(v.user),
                pct(v.idle),
                pct(v.not_started)
            );
        }
        out
    }

    /// One table: `title`, then the `top` labels with count, share and time.
    fn table(&self, title: &str, tally: &Tally, top: usize) -> String {
        let shown = top.min(tally.counts().len());
        let mut out = format!(
            "\n== {title}: {} samples, top {shown} of {} ==\n",
            tally.total(),
            tally.counts().len()
        );
        if tally.total() == 0 {
            return out;
        }
        out.push_str(" samples      %      time  function\n");
        for (label, n) in &tally.counts()[..shown] {
            let time = self.interval.as_secs_f64() * *n as f64;
            let _ = writeln!(
                out,
                "{n:>8} {:>5.1}% {:>8.3} s  {label}",
                tally.percent(*n),
                time
            );
        }
        out
    }

    fn timeline_text(&self) -> String {
        let mut out = format!("\n== timeline: top {WINDOW_TOP} per window ==\n");
        for w in &self.timeline {
            let leaders: Vec<String> = w.tally.counts()[..WINDOW_TOP.min(w.tally.counts().len())]
                .iter()
                .map(|(l, n)| format!("{l} {:.0}%", w.tally.percent(*n)))
                .collect();
            let _ = writeln!(
                out,
                "{}  {:>6}  {}",
                w.name,
                w.tally.total(),
                leaders.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    const MAP: &str = "\
ffffffff81000000 T memset_orig
ffffffff81000100 T serial8250_console_putchar
ffffffff81000200 T default_idle
ffffffff81000300 D _sdata
";

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn kernel(at: u64, rip: u64) -> Sample {
        Sample {
            at: ms(at),
            vcpu: 0,
            rip,
            state: CpuState::Kernel,
        }
    }

    fn with_state(at: u64, vcpu: u8, state: CpuState) -> Sample {
        Sample {
            at: ms(at),
            vcpu,
            rip: 0xffffffff81000200,
            state,
        }
    }

    #[test]
    fn labels() {
        let m = SymbolMap::parse(MAP, Path::new("System.map")).unwrap();
        let l = |s: Sample| label(&s, Some(&m));
        assert_eq!(l(kernel(0, 0xffffffff81000004)), "memset_orig");
        assert_eq!(l(kernel(0, 0x40_1000)), USER, "lower half, no symbol");
        assert_eq!(l(kernel(0, 0xffffffff81000300)), "0xffffffff81000300");
        assert_eq!(l(with_state(0, 0, CpuState::User)), USER);
        assert_eq!(l(with_state(0, 0, CpuState::Halted)), IDLE);
        assert_eq!(l(with_state(0, 1, CpuState::NotStarted)), NOT_STARTED);
        assert_eq!(
            label(&kernel(0, 0xffffffff81000004), None),
            "0xffffffff81000004"
        );
    }

    #[test]
    fn phases_follow_the_seen_milestones_in_time_order() {
        let milestones = vec![
            ("Run /init as init process".to_string(), Some(ms(900))),
            ("Linux version ".to_string(), Some(ms(100))),
            ("husk-agent: ready".to_string(), None),
            ("Kernel panic".to_string(), Some(ms(5000))),
        ];
        let spans = phase_spans(&milestones, ms(1000));
        let names: Vec<&str> = spans.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "start -> Linux version",
                "Linux version -> Run /init as init process",
                "Run /init as init process -> Kernel panic",
                "Kernel panic -> end",
            ]
        );
        // A milestone after the end (clock skew) is clamped to the end.
        assert_eq!((spans[2].1, spans[2].2), (ms(900), ms(1000)));
        assert_eq!((spans[3].1, spans[3].2), (ms(1000), ms(1000)));
        assert_eq!(span_of(&spans, ms(0)), 0);
        assert_eq!(span_of(&spans, ms(99)), 0);
        assert_eq!(span_of(&spans, ms(100)), 1);
        assert_eq!(span_of(&spans, ms(950)), 2);
        assert_eq!(phase_spans(&[], ms(5)).len(), 1);
    }

    fn profile() -> Profile {
        let m = SymbolMap::parse(MAP, Path::new("System.map")).unwrap();
        let samples = vec![
            kernel(10, 0xffffffff81000010),
            kernel(20, 0xffffffff81000020),
            with_state(20, 1, CpuState::NotStarted),
            kernel(150, 0xffffffff81000110),
            kernel(160, 0xffffffff81000120),
            kernel(170, 0xffffffff81000130),
            with_state(180, 1, CpuState::Halted),
            with_state(1500, 0, CpuState::User),
        ];
        let milestones = vec![("Linux version ".to_string(), Some(ms(100)))];
        Profile::build(
            samples,
            &ProfileInputs {
                interval: ms(1),
                symbols: Some(&m),
                milestones: &milestones,
                duration: ms(2000),
                vcpus: 2,
                read_errors: 0,
            },
        )
    }

    #[test]
    fn counts_overall_per_phase_and_per_vcpu() {
        let p = profile();
        assert_eq!(p.overall().total(), 8);
        assert_eq!(
            p.overall().counts()[0],
            ("serial8250_console_putchar".into(), 3)
        );
        assert_eq!(p.overall().count("memset_orig"), 2);
        assert_eq!(p.phases().len(), 2);
        assert_eq!(p.phases()[0].tally.count("memset_orig"), 2);
        assert_eq!(p.phases()[0].tally.count(NOT_STARTED), 1);
        assert_eq!(p.phases()[1].tally.count("serial8250_console_putchar"), 3);
        assert_eq!(p.phases()[1].tally.count(IDLE), 1);
        assert_eq!(p.phases()[1].tally.count(USER), 1);
        let v = p.vcpus();
        assert_eq!((v[0].samples, v[0].kernel, v[0].user), (6, 5, 1));
        assert_eq!((v[1].samples, v[1].idle, v[1].not_started), (2, 1, 1));
        assert_eq!(p.timeline.len(), 3, "0-1 s, 1-2 s, 2-3 s");
        assert_eq!(p.timeline[0].tally.total(), 7);
    }

    #[test]
    fn renders_tables_with_shares_and_times() {
        let text = profile().render(2);
        assert!(
            text.starts_with(
                "husk guest profile: 8 samples of 2 vCPU(s), one per 1000 µs per vCPU, over 2.000 s\n\
                 symbols: System.map\n\
                 vCPU 0: 6 samples: kernel 83.3%, user 16.7%, idle 0.0%, not started 0.0%\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\n== overall, 2.000 s: 8 samples, top 2 of 5 ==\n \
                 samples      %      time  function\n       \
                 3  37.5%    0.003 s  serial8250_console_putchar\n       \
                 2  25.0%    0.002 s  memset_orig\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("== phase 1/2: start -> Linux version (0.000 s .. 0.100 s): 3 samples, top 2 of 2 =="),
            "{text}"
        );
        assert!(
            text.contains("== phase 2/2: Linux version -> end (0.100 s .. 2.000 s)"),
            "{text}"
        );
        assert!(!text.contains("no console milestones"), "{text}");
        assert!(
            text.contains(
                "  0-1  s       7  serial8250_console_putchar 43%, memset_orig 29%, [idle] 14%\n"
            ),
            "{text}"
        );
        let summary = profile().summary(1);
        assert!(
            summary.ends_with("3  37.5%    0.003 s  serial8250_console_putchar\n"),
            "{summary}"
        );
        assert!(!summary.contains("phase"), "{summary}");
    }

    #[test]
    fn an_empty_profile_renders_and_says_why_there_is_one_phase() {
        let p = Profile::build(
            Vec::new(),
            &ProfileInputs {
                interval: ms(2),
                symbols: None,
                milestones: &[],
                duration: ms(300),
                vcpus: 1,
                read_errors: 3,
            },
        );
        let text = p.render(30);
        assert!(text.contains("symbols: none"), "{text}");
        assert!(
            text.contains("samples lost to register-read errors: 3"),
            "{text}"
        );
        assert!(
            text.contains("== overall, 0.300 s: 0 samples, top 0 of 0 =="),
            "{text}"
        );
        assert!(text.contains("no console milestones"), "{text}");
    }

    #[test]
    fn write_reports_the_path() {
        let e = profile()
            .write(Path::new("/nonexistent/dir/prof.txt"), 5)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot write the profile to /nonexistent/dir/prof.txt"
        );
    }
}
