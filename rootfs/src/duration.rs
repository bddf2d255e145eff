//! Durations as Go's `time.ParseDuration` writes them (`30s`, `1m30s`, `1.5h`, `300ms`,
//! `0`), the syntax docker's duration flags and Dockerfile options take.

/// A duration that is not Go syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("time: invalid duration \"{0}\"")]
pub struct DurationError(pub String);

/// Parses `text` into nanoseconds (a leading `-` gives a negative duration).
pub fn parse_nanos(text: &str) -> Result<i64, DurationError> {
    let bad = || DurationError(text.to_owned());
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_nanos("30s"), Ok(30_000_000_000));
        assert_eq!(parse_nanos("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_nanos("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(parse_nanos("300ms"), Ok(300_000_000));
        assert_eq!(parse_nanos("0"), Ok(0));
        assert_eq!(parse_nanos("-1s"), Ok(-1_000_000_000));
        for bad in ["", "1", "s", "1x", "1.2.3s", "9999999999h"] {
            assert!(parse_nanos(bad).is_err(), "{bad}");
        }
    }
}
