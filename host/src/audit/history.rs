//! The service's usage history: one point per scan, thinned with age (a point a minute for the
//! last day, a point an hour for ninety days, nothing older), kept as text a ConfigMap holds so
//! that growth survives a restart. Pure: the service reads and writes the text.

use serde::Serialize;

const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;
/// How long a point is kept.
const KEEP: i64 = 90 * DAY;

/// One scan's totals, for the growth chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsagePoint {
    pub unix: i64,
    pub volumes: usize,
    pub provisioned_bytes: u64,
    pub findings: usize,
}

/// `points` (oldest first) with each point at least a minute after the previous one kept when
/// under a day old, an hour when under ninety days, and none older; the newest always stays.
pub fn thin(points: &[UsagePoint], now: i64) -> Vec<UsagePoint> {
    let mut kept: Vec<UsagePoint> = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let age = now - point.unix;
        let spacing = match age {
            _ if age > KEEP => continue,
            _ if age > DAY => HOUR,
            _ => MINUTE,
        };
        let newest = i + 1 == points.len();
        if newest
            || kept
                .last()
                .is_none_or(|last| point.unix - last.unix >= spacing)
        {
            kept.push(*point);
        }
    }
    kept
}

/// The text form: a line per point, `unix volumes provisioned-bytes findings`.
pub fn encode(points: &[UsagePoint]) -> String {
    points
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {}\n",
                p.unix, p.volumes, p.provisioned_bytes, p.findings
            )
        })
        .collect()
}

/// Points back from [`encode`]'s text, oldest first; a line that does not read is skipped.
pub fn decode(text: &str) -> Vec<UsagePoint> {
    let mut points: Vec<UsagePoint> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let point = UsagePoint {
                unix: fields.next()?.parse().ok()?,
                volumes: fields.next()?.parse().ok()?,
                provisioned_bytes: fields.next()?.parse().ok()?,
                findings: fields.next()?.parse().ok()?,
            };
            fields.next().is_none().then_some(point)
        })
        .collect();
    points.sort_by_key(|p| p.unix);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> UsagePoint {
        UsagePoint {
            unix,
            volumes: 1,
            provisioned_bytes: unix as u64,
            findings: 0,
        }
    }

    #[test]
    fn thinning_keeps_a_minute_apart_today_an_hour_apart_before_and_nothing_too_old() {
        let now = 100 * DAY;
        let mut points = vec![at(now - 91 * DAY)];
        // Two days ago, every ten minutes for three hours: one an hour stays.
        points.extend((0..18).map(|i| at(now - 2 * DAY + i * 600)));
        // The last ten minutes, every ten seconds: one a minute stays, and the newest.
        points.extend((0..60).map(|i| at(now - 600 + i * 10 + 5)));
        let kept: Vec<i64> = thin(&points, now).iter().map(|p| now - p.unix).collect();
        let mut expected: Vec<i64> = (0..3).map(|h| 2 * DAY - h * HOUR).collect();
        expected.extend((0..10).map(|m| 595 - m * 60));
        expected.push(5);
        assert_eq!(kept, expected);
        // Thinning what is thinned changes nothing: the service can thin after every scan.
        let again = thin(&thin(&points, now), now);
        assert_eq!(again, thin(&points, now));
    }

    #[test]
    fn text_round_trips_and_bad_lines_are_skipped() {
        let points = [at(5), at(70), at(200)];
        let text = encode(&points);
        assert_eq!(decode(&text), points);
        let messy = format!("garbage\n1 2 3\n{text}9 9 9 9 9\n");
        assert_eq!(decode(&messy), points);
    }
}
