//! Phase marks for `husk bench run`: with `HUSK_TIMINGS=<file>` in the environment, husk's
//! processes (the CLI, the shim, the VMM child) append one `<mark> <ns>` line per phase
//! boundary to that file, `<ns>` read from `CLOCK_MONOTONIC` (one clock for every process
//! on the host, so marks of different processes compare). Without the variable a mark
//! costs one cached environment lookup. Marks are diagnostics: failing to write one is
//! ignored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming the marks file.
pub const ENV: &str = "HUSK_TIMINGS";

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

fn target() -> Option<&'static PathBuf> {
    static TARGET: OnceLock<Option<PathBuf>> = OnceLock::new();
    TARGET
        .get_or_init(|| std::env::var_os(ENV).map(PathBuf::from))
        .as_ref()
}

/// Records that phase boundary `name` is reached now (when `HUSK_TIMINGS` is set).
pub fn mark(name: &str) {
    let Some(path) = target() else { return };
    let line = format!("{name} {}\n", now_ns());
    // One O_APPEND write per line: lines of concurrent processes never interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The marks in `path`, in file order (unparsable lines skipped).
pub fn read(path: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, ns) = l.rsplit_once(' ')?;
            Some((name.to_owned(), ns.parse().ok()?))
        })
        .collect()
}

/// The first time mark `name` was reached.
pub fn first(marks: &[(String, u64)], name: &str) -> Option<u64> {
    marks.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("husk-timing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("marks");
        std::fs::write(&path, "a 5\nbroken\nb 7\na 9\n").unwrap();
        let marks = read(&path);
        assert_eq!(marks.len(), 3);
        assert_eq!(first(&marks, "a"), Some(5));
        assert_eq!(first(&marks, "b"), Some(7));
        assert_eq!(first(&marks, "c"), None);
        let (t1, t2) = (now_ns(), now_ns());
        assert!(t2 >= t1 && t1 > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
