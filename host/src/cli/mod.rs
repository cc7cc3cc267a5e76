//! Command-line helpers for the binary.

pub mod audit;
pub mod backend;
pub mod csi;

use std::time::Duration;

/// Parses `30s`, `500ms`, `2m` or `1h`.
/// `FROM-TO`, both ends included, FROM at least 1.
pub fn parse_range(value: &str) -> Result<std::ops::RangeInclusive<u32>, String> {
    let bad = || format!("{value:?} is not a range of ids like 2000000000-2099999999");
    let (from, to) = value.split_once('-').ok_or_else(bad)?;
    let (from, to): (u32, u32) = (
        from.trim().parse().map_err(|_| bad())?,
        to.trim().parse().map_err(|_| bad())?,
    );
    if from == 0 || from > to {
        return Err(format!(
            "{value:?}: the range must start at 1 or above and not end before it starts"
        ));
    }
    Ok(from..=to)
}

pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?} is not a duration like 30s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 24 * 3600)),
        _ => Err(format!("{value:?} has no unit: use ms, s, m, h or d")),
    }
}

/// Parses a size: `1073741824`, `512Mi`, `10Gi`, `1G`.
pub fn parse_size(value: &str) -> Result<i64, String> {
    modcsi::kube::quantity::bytes(value)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| {
            format!("{value:?} is not a size like 10Gi (units Ki, Mi, Gi, Ti, K, M, G, T)")
        })
}

/// Parses `key=value`.
pub fn parse_pair(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{value:?} is not key=value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_pairs() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_range("10-12"), Ok(10..=12));
        for bad in ["0-5", "5-4", "5", "a-b", "1-99999999999"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_size("10Gi"), Ok(10 << 30));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("1Xi").is_err());
        assert!(parse_size("99999999999Ti").is_err());
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_pair("ab").is_err());
    }
}
