//! The guest profiler (`husk vm boot --profile`): samples every vCPU's instruction
//! pointer at a fixed interval while the VM runs, symbolizes the samples with the guest
//! kernel's `System.map`, and reports the busiest functions overall, per boot phase (the
//! spans between console milestones) and over time. This module owns the profiling
//! settings and the glue the VM's run loop calls; `sampler` takes the samples, `symbols`
//! reads the map, `report` counts and renders.
//!
//! Off by default, and then free: no signal handler, no thread, no signals.

pub mod report;
pub mod sampler;
pub mod symbols;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::{Phase, Profile, ProfileInputs, Tally, VcpuTotals};
pub use sampler::{CpuState, Sample, SampleSink, Ticker};
pub use symbols::SymbolMap;

/// The sampling interval unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(1);
/// The shortest interval accepted: each sample costs a signal, a VM exit and three ioctls.
pub const MIN_INTERVAL: Duration = Duration::from_micros(100);
/// The longest interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(1);

/// Errors preparing or starting the profiler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The interval is out of bounds.
    #[error(
        "a profile interval of {0} µs is out of bounds: use {min} to {max} µs",
        min = MIN_INTERVAL.as_micros(),
        max = MAX_INTERVAL.as_micros()
    )]
    Interval(u128),
    /// The symbol map given could not be used.
    #[error(transparent)]
    Symbols(#[from] symbols::Error),
    /// The sampler could not start.
    #[error(transparent)]
    Sampler(#[from] sampler::Error),
}

/// How to profile a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Time between two samples of one vCPU.
    pub interval: Duration,
    /// The guest kernel's System.map; `None` means the one beside the kernel (after
    /// following symlinks), if it exists.
    pub system_map: Option<PathBuf>,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            interval: DEFAULT_INTERVAL,
            system_map: None,
        }
    }
}

/// A profiler ready for a run: the checked settings and the loaded symbols.
#[derive(Debug)]
pub struct Profiler {
    interval: Duration,
    symbols: Option<SymbolMap>,
}

impl Profiler {
    /// Checks `config` and loads the symbols for `kernel`. A map named in the config
    /// must load; the default one is used only if it exists (without it the report shows
    /// kernel addresses in hex).
    pub fn prepare(config: &ProfileConfig, kernel: &Path) -> Result<Profiler, Error> {
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&config.interval) {
            return Err(Error::Interval(config.interval.as_micros()));
        }
        let symbols = match &config.system_map {
            Some(path) => Some(SymbolMap::load(path)?),
            None => {
                let path = symbols::default_path(kernel);
                if path.is_file() {
                    Some(SymbolMap::load(&path)?)
                } else {
                    log::warn!(
                        "profiler: no System.map at {}: kernel addresses stay in hex",
                        path.display()
                    );
                    None
                }
            }
        };
        Ok(Profiler {
            interval: config.interval,
            symbols,
        })
    }

    /// The sink the vCPU threads record into, counting time from `start`.
    pub fn sink(&self, vcpus: usize, start: Instant) -> Arc<SampleSink> {
        Arc::new(SampleSink::new(vcpus, start))
    }

    /// Starts sampling the running vCPU threads `threads` into `sink`.
    pub fn start(
        &self,
        sink: &Arc<SampleSink>,
        threads: Vec<libc::pthread_t>,
    ) -> Result<Ticker, Error> {
        Ok(Ticker::start(sink.clone(), threads, self.interval)?)
    }

    /// Counts what `sink` collected into a profile.
    pub fn finish(
        &self,
        sink: &SampleSink,
        milestones: &[(String, Option<Duration>)],
        duration: Duration,
    ) -> Profile {
        Profile::build(
            sink.samples(),
            &ProfileInputs {
                interval: self.interval,
                symbols: self.symbols.as_ref(),
                milestones,
                duration,
                vcpus: sink.vcpus(),
                read_errors: sink.read_errors(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn interval_bounds() {
        let cfg = |us| ProfileConfig {
            interval: Duration::from_micros(us),
            system_map: None,
        };
        let e = Profiler::prepare(&cfg(50), Path::new("/no/vmlinux")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a profile interval of 50 µs is out of bounds: use 100 to 1000000 µs"
        );
        assert!(Profiler::prepare(&cfg(2_000_000), Path::new("/no/vmlinux")).is_err());
        let p = Profiler::prepare(&cfg(100), Path::new("/no/vmlinux")).unwrap();
        assert!(p.symbols.is_none(), "no map beside a missing kernel: hex");
    }

    #[test]
    fn an_explicit_map_must_exist_and_the_default_is_beside_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ProfileConfig {
            system_map: Some(dir.path().join("nope.map")),
            ..ProfileConfig::default()
        };
        let e = Profiler::prepare(&missing, Path::new("/k")).unwrap_err();
        assert!(matches!(e, Error::Symbols(symbols::Error::Read(..))), "{e}");
        std::fs::write(dir.path().join("vmlinux"), b"x").unwrap();
        std::fs::write(dir.path().join("System.map"), "1000 T f\n").unwrap();
        let p = Profiler::prepare(&ProfileConfig::default(), &dir.path().join("vmlinux")).unwrap();
        assert_eq!(p.symbols.unwrap().lookup(0x1000), Some("f"));
    }
}
