//! Human-readable output as docker prints it: sizes (`4.26MB`, base 1000, three significant
//! digits), durations (`2 hours ago`), and tab-aligned tables.

use chrono::{DateTime, Utc};

/// `1.24kB`, `4.26MB`, `123MB`, `512B`, as docker's `HumanSizeWithPrecision(n, 3)`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{s}{}", UNITS[i])
}

pub use runtime::engine::summary::human_duration as duration;

/// `2 hours ago` for an RFC 3339 time; `N/A` when absent or unparsable.
pub fn ago(rfc3339: Option<&str>, now: DateTime<Utc>) -> String {
    match rfc3339.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => format!(
            "{} ago",
            duration((now - t.with_timezone(&Utc)).num_seconds())
        ),
        None => "N/A".into(),
    }
}

/// Left-aligned columns: each cell padded to its column's widest cell plus three spaces,
/// at least ten wide (docker's tabwriter settings); the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            let w = rows
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0);
            (w + 3).max(10)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// docker's confirmation for a destructive verb: `warning`, then `Are you sure you want to
/// continue? [y/N]` on stderr; true only for a yes on stdin.
pub fn confirm(warning: &str) -> std::io::Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// docker's binary sizes (`stats`): four significant digits, `B`, `KiB`, `MiB`, `GiB`, `TiB`.
pub fn binary_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < units.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let decimals = match v {
        v if v < 10.0 => 3,
        v if v < 100.0 => 2,
        v if v < 1000.0 => 1,
        _ => 0,
    };
    let text = format!("{v:.decimals$}");
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    };
    format!("{text}{}", units[unit])
}

/// A point in time as docker's `--since`/`--until` take it: RFC 3339 (`2024-01-02T03:04:05Z`,
/// also without zone: UTC), a date (`2024-01-02`), a Unix timestamp (`1700000000[.5]`), or
/// a duration before `now` (`42s`, `10m`, `1h30m`).
pub fn parse_time(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let bad = || {
        anyhow::anyhow!(
            "invalid time {text:?}: use RFC 3339, a Unix timestamp or a duration like 10m"
        )
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).ok_or_else(bad);
    }
    if let Some((secs, frac)) = text.split_once('.').or(Some((text, "")))
        && !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
    {
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        let nanos: u32 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
        return DateTime::from_timestamp(secs, nanos).ok_or_else(bad);
    }
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        total = total
            .checked_add(n.checked_mul(unit).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(now - chrono::Duration::seconds(total))
}

/// docker's `network rm` / `volume rm` output: each name removed is printed, each
/// failure said on stderr as `Error: ...`; exit 1 if any failed, after trying them all.
pub fn remove_each<E: std::fmt::Display>(
    names: &[String],
    mut remove: impl FnMut(&str) -> Result<(), E>,
) -> std::process::ExitCode {
    let mut failed = false;
    for name in names {
        match remove(name) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    match failed {
        true => std::process::ExitCode::from(1),
        false => std::process::ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes_like_docker_stats() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(256 << 20), "256MiB");
        assert_eq!(binary_size(1_463_000), "1.395MiB");
        assert_eq!(binary_size(3 << 30), "3GiB");
    }

    #[test]
    fn times_as_docker_takes_them() {
        let now = DateTime::parse_from_rfc3339("2024-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = |s: &str| parse_time(s, now).unwrap().to_rfc3339();
        assert_eq!(t("2024-01-01T11:00:00Z"), "2024-01-01T11:00:00+00:00");
        assert_eq!(t("2024-01-01T11:00:00"), "2024-01-01T11:00:00+00:00");
        assert_eq!(t("2024-01-01"), "2024-01-01T00:00:00+00:00");
        assert_eq!(t("1704110400"), "2024-01-01T12:00:00+00:00");
        assert_eq!(t("1704110400.5"), "2024-01-01T12:00:00.500+00:00");
        assert_eq!(t("90s"), "2024-01-01T11:58:30+00:00");
        assert_eq!(t("1h30m"), "2024-01-01T10:30:00+00:00");
        for bad in ["", "soon", "5d", "1.2.3", "m", "10m5"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(512), "512B");
        assert_eq!(size(1240), "1.24kB");
        assert_eq!(size(4_261_000), "4.26MB");
        assert_eq!(size(77_800_000), "77.8MB");
        assert_eq!(size(123_456_789), "123MB");
        assert_eq!(size(4_000_000), "4MB");
        assert_eq!(size(999_999), "1000kB");
    }

    #[test]
    fn table_aligns() {
        let t = table(&[
            vec!["A".into(), "LONGER HEADER".into(), "X".into()],
            vec!["value".into(), "v".into(), "last".into()],
        ]);
        assert_eq!(
            t,
            "A         LONGER HEADER   X\nvalue     v               last\n"
        );
    }
}
