//! docker's health checks: the `--health-*` flags merged over the image's `HEALTHCHECK`
//! (this file), the state `inspect` shows (`State.Health`: status, failing streak, the last
//! five results) and the monitor the shim runs beside the workload (`monitor`).

mod monitor;

pub use monitor::{Stop, monitor};

use rootfs::duration::{self, DurationError};
use rootfs::store::config::Healthcheck;
use serde::{Deserialize, Serialize};

/// docker's defaults for a zero field.
const DEFAULT_INTERVAL: i64 = 30_000_000_000;
const DEFAULT_TIMEOUT: i64 = 30_000_000_000;
const DEFAULT_START_INTERVAL: i64 = 5_000_000_000;
const DEFAULT_RETRIES: i64 = 3;
/// Results kept in `State.Health.Log`.
pub const LOG_LEN: usize = 5;
/// Output kept per result.
pub const MAX_OUTPUT: usize = 4096;

/// Errors in the health flags (docker's messages).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// `--no-healthcheck` with a `--health-*` flag.
    #[error("--no-healthcheck conflicts with --health-* options")]
    Conflict,
    /// A duration that is not Go syntax.
    #[error("invalid argument {value:?} for \"--{flag}\" flag")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it is wrong.
        #[source]
        source: DurationError,
    },
    /// A negative duration or count.
    #[error("--{0} cannot be negative")]
    Negative(&'static str),
}

/// The `--health-*` flags as typed.
#[derive(Debug, Clone, Default)]
pub struct HealthFlags {
    /// `--health-cmd` (run with `/bin/sh -c`).
    pub cmd: Option<String>,
    /// The whole test as docker's API gives it (`["CMD", ...]`, `["CMD-SHELL", ...]`,
    /// `["NONE"]`); over `cmd`.
    pub test: Option<Vec<String>>,
    /// `--health-interval`.
    pub interval: Option<String>,
    /// `--health-timeout`.
    pub timeout: Option<String>,
    /// `--health-start-period`.
    pub start_period: Option<String>,
    /// `--health-start-interval`.
    pub start_interval: Option<String>,
    /// `--health-retries`.
    pub retries: Option<i64>,
    /// `--no-healthcheck`.
    pub none: bool,
}

impl HealthFlags {
    fn any(&self) -> bool {
        self.cmd.is_some()
            || self.test.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.start_period.is_some()
            || self.start_interval.is_some()
            || self.retries.is_some()
    }
}

/// The container's health check: the image's with the flags over it (`None`: none).
pub fn merge(
    image: Option<Healthcheck>,
    flags: &HealthFlags,
) -> Result<Option<Healthcheck>, HealthError> {
    if flags.none {
        if flags.any() {
            return Err(HealthError::Conflict);
        }
        return Ok(Some(Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        }));
    }
    if !flags.any() {
        return Ok(image);
    }
    let mut hc = image.unwrap_or_default();
    if let Some(cmd) = &flags.cmd {
        hc.test = vec!["CMD-SHELL".into(), cmd.clone()];
    }
    if let Some(test) = flags.test.as_ref().filter(|t| !t.is_empty()) {
        hc.test = test.clone();
    }
    let set = |field: &mut i64, flag: &'static str, value: &Option<String>| {
        if let Some(v) = value {
            let nanos = duration::parse_nanos(v).map_err(|source| HealthError::Duration {
                flag,
                value: v.clone(),
                source,
            })?;
            if nanos < 0 {
                return Err(HealthError::Negative(flag));
            }
            *field = nanos;
        }
        Ok(())
    };
    set(&mut hc.interval, "health-interval", &flags.interval)?;
    set(&mut hc.timeout, "health-timeout", &flags.timeout)?;
    set(
        &mut hc.start_period,
        "health-start-period",
        &flags.start_period,
    )?;
    set(
        &mut hc.start_interval,
        "health-start-interval",
        &flags.start_interval,
    )?;
    if let Some(r) = flags.retries {
        if r < 0 {
            return Err(HealthError::Negative("health-retries"));
        }
        hc.retries = r;
    }
    Ok(Some(hc))
}

/// What a check runs, with docker's defaults filled in; `None` for no check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The program and arguments.
    pub argv: Vec<String>,
    /// Between checks.
    pub interval: std::time::Duration,
    /// A check running longer fails.
    pub timeout: std::time::Duration,
    /// Failures in this time after start do not count.
    pub start_period: std::time::Duration,
    /// Between checks in the start period, until the first success.
    pub start_interval: std::time::Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u32,
}

impl Plan {
    /// The plan for `hc`, if it checks anything.
    pub fn of(hc: Option<&Healthcheck>) -> Option<Plan> {
        let hc = hc?;
        let argv = match hc.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, [cmd])) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
            }
            _ => return None,
        };
        let or = |v: i64, default: i64| {
            let nanos = if v > 0 { v } else { default };
            std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
        };
        Some(Plan {
            argv,
            interval: or(hc.interval, DEFAULT_INTERVAL),
            timeout: or(hc.timeout, DEFAULT_TIMEOUT),
            start_period: or(hc.start_period, 0),
            start_interval: or(hc.start_interval, DEFAULT_START_INTERVAL),
            retries: u32::try_from(if hc.retries > 0 {
                hc.retries
            } else {
                DEFAULT_RETRIES
            })
            .unwrap_or(u32::MAX),
        })
    }
}

/// `State.Health`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Consecutive failures.
    pub failing_streak: u32,
    /// The last results, oldest first.
    pub log: Vec<HealthResult>,
}

/// One check's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// 0 healthy, else failed (-1: it timed out or could not run).
    pub exit_code: i32,
    /// Its output (stdout and stderr), cut at [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// The status a newly started container's health begins with.
pub const STARTING: &str = "starting";
/// After a passing check.
pub const HEALTHY: &str = "healthy";
/// After `retries` failing checks in a row.
pub const UNHEALTHY: &str = "unhealthy";

impl Health {
    /// A fresh start.
    pub fn starting() -> Self {
        Health {
            status: STARTING.into(),
            ..Health::default()
        }
    }

    /// Records `result`; `counts` says whether a failure counts (not in the start period).
    pub fn record(&mut self, result: HealthResult, counts: bool, retries: u32) {
        if result.exit_code == 0 {
            self.status = HEALTHY.into();
            self.failing_streak = 0;
        } else if counts {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = UNHEALTHY.into();
            }
        }
        self.log.push(result);
        if self.log.len() > LOG_LEN {
            self.log.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> HealthFlags {
        HealthFlags::default()
    }

    #[test]
    fn flags_over_the_image() {
        let image = Healthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: 7,
            ..Healthcheck::default()
        };
        assert_eq!(
            merge(Some(image.clone()), &flags()).unwrap(),
            Some(image.clone())
        );
        let f = HealthFlags {
            cmd: Some("test -f /ok".into()),
            retries: Some(2),
            timeout: Some("1m".into()),
            ..flags()
        };
        let hc = merge(Some(image), &f).unwrap().unwrap();
        assert_eq!(hc.test, ["CMD-SHELL", "test -f /ok"]);
        assert_eq!(
            (hc.interval, hc.retries, hc.timeout),
            (7, 2, 60_000_000_000)
        );
        let none = HealthFlags {
            none: true,
            ..flags()
        };
        assert_eq!(merge(None, &none).unwrap().unwrap().test, ["NONE"]);
        let both = HealthFlags {
            none: true,
            retries: Some(1),
            ..flags()
        };
        assert_eq!(
            merge(None, &both).unwrap_err().to_string(),
            "--no-healthcheck conflicts with --health-* options"
        );
        let bad = HealthFlags {
            interval: Some("-1s".into()),
            ..flags()
        };
        assert_eq!(
            merge(None, &bad).unwrap_err().to_string(),
            "--health-interval cannot be negative"
        );
        let bad = HealthFlags {
            interval: Some("soon".into()),
            ..flags()
        };
        assert!(merge(None, &bad).is_err());
    }

    #[test]
    fn plans_and_streaks() {
        assert_eq!(Plan::of(None), None);
        let none = Healthcheck {
            test: vec!["NONE".into()],
            ..Healthcheck::default()
        };
        assert_eq!(Plan::of(Some(&none)), None);
        let shell = Healthcheck {
            test: vec!["CMD-SHELL".into(), "x".into()],
            ..Healthcheck::default()
        };
        let plan = Plan::of(Some(&shell)).unwrap();
        assert_eq!(plan.argv, ["/bin/sh", "-c", "x"]);
        assert_eq!((plan.interval.as_secs(), plan.retries), (30, 3));

        let result = |code| HealthResult {
            exit_code: code,
            ..HealthResult::default()
        };
        let mut h = Health::starting();
        h.record(result(1), false, 2);
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 0));
        h.record(result(1), true, 2);
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 1));
        h.record(result(1), true, 2);
        assert_eq!(h.status, UNHEALTHY);
        h.record(result(0), true, 2);
        assert_eq!((h.status.as_str(), h.failing_streak), (HEALTHY, 0));
        for _ in 0..10 {
            h.record(result(0), true, 2);
        }
        assert_eq!(h.log.len(), LOG_LEN);
    }
}
