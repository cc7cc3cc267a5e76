//! The clock, and timestamps as storage APIs write them.

#![warn(missing_docs)]

/// Now, in seconds since the Unix epoch (the WASI wall clock), as `snapshot` records it.
pub fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A UTC time written `YYYY-MM-DD HH:MM:SS` (or with a `T`, as RFC 3339 writes it) in seconds
/// since the Unix epoch. What follows the seconds (a fraction, a `Z`) is ignored: the time is
/// taken as UTC, and an offset is not applied.
pub fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.get(..8)?.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::parse_utc;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(parse_utc("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_utc("2021-11-26 14:54:11"), Some(1_637_938_451));
        assert_eq!(parse_utc("2024-02-29T12:00:00"), Some(1_709_208_000));
        assert_eq!(parse_utc("2024-02-29T12:00:00.123Z"), Some(1_709_208_000));
        assert_eq!(parse_utc("garbage"), None);
        assert_eq!(parse_utc("2024-02-29"), None);
    }
}
