//! Human sizes as docker takes them (`512m`, `1g`, `1.5g`, `2048k`, `1073741824`).

/// A size husk cannot read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not a number with an optional unit.
    #[error(
        "invalid size {0:?}: use a number with an optional unit b, k, m, g or t (e.g. 512m, 1.5g)"
    )]
    Invalid(String),
    /// Larger than 2^64 bytes.
    #[error("size {0:?} is too large")]
    Overflow(String),
}

/// Parses a size; a bare number counts `default_unit` bytes each (docker: bytes; husk's
/// `--memory` of `vm boot`: MiB). Fractions are allowed, as docker allows them (`1.5g`);
/// the result is rounded down to whole bytes.
pub fn parse_size(text: &str, default_unit: u64) -> Result<u64, Error> {
    let t = text.trim().to_ascii_lowercase();
    let invalid = || Error::Invalid(text.to_string());
    let number_end = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || fraction.len() > 18 {
        return Err(invalid());
    }
    let whole: u128 = whole.parse().map_err(|_| invalid())?;
    let fraction_value: u128 = match fraction {
        "" => 0,
        f => f.parse().map_err(|_| invalid())?,
    };
    let multiplier: u128 = match unit.trim_end_matches(['b', 'i']) {
        "" if unit.is_empty() => u128::from(default_unit),
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(invalid()),
    };
    let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| invalid())?);
    let bytes = whole * multiplier + fraction_value * multiplier / scale;
    u64::try_from(bytes).map_err(|_| Error::Overflow(text.to_string()))
}

/// Formats bytes as MiB/GiB for people.
pub fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512m", 1), Ok(512 << 20));
        assert_eq!(parse_size("1G", 1), Ok(1 << 30));
        assert_eq!(parse_size("2048k", 1), Ok(2 << 20));
        assert_eq!(parse_size("256MiB", 1), Ok(256 << 20));
        assert_eq!(parse_size("100b", 1 << 20), Ok(100));
        assert_eq!(parse_size("256", 1 << 20), Ok(256 << 20));
        assert_eq!(parse_size("1073741824", 1), Ok(1 << 30));
        assert_eq!(parse_size("1.5g", 1), Ok(3 << 29));
        assert_eq!(parse_size("0.5k", 1), Ok(512));
        assert_eq!(parse_size("2.", 1), Ok(2));
        assert_eq!(parse_size("1.0000001k", 1), Ok(1024));
    }

    #[test]
    fn bad_sizes() {
        assert!(matches!(parse_size("", 1), Err(Error::Invalid(_))));
        assert!(matches!(parse_size("12x", 1), Err(Error::Invalid(_))));
        assert!(matches!(parse_size("-5m", 1), Err(Error::Invalid(_))));
        assert!(matches!(parse_size("m", 1), Err(Error::Invalid(_))));
        assert!(matches!(parse_size(".5g", 1), Err(Error::Invalid(_))));
        assert!(matches!(parse_size("1.2.3m", 1), Err(Error::Invalid(_))));
        assert!(matches!(parse_size("1.-5m", 1), Err(Error::Invalid(_))));
        assert!(matches!(
            parse_size("99999999999999g", 1),
            Err(Error::Overflow(_))
        ));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(128 << 20), "128.0 MiB");
        assert_eq!(human(3 << 30), "3.00 GiB");
    }
}
