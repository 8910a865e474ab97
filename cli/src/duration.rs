//! Durations on the command line (`1s`, `500ms`) and latencies in output (`41.2 µs`).

use std::time::Duration;

/// Units accepted after the number and their length in nanoseconds.
const UNITS: [(&str, f64); 8] = [
    ("ns", 1.0),
    ("us", 1e3),
    ("µs", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("min", 60e9),
    ("h", 3600e9),
];

/// What a duration looks like, for errors.
const EXPECTED: &str = "expected a number and a unit, like 1s, 500ms or 1h30m";

/// Parses a duration: one or more numbers (decimals allowed), each with a unit (`ns`, `us`,
/// `ms`, `s`, `m`, `h`), added up: `500ms`, `2.5s`, `1h30m`. A unit is required, since a bare
/// `500` could mean seconds or milliseconds; only `0` may go without one.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(EXPECTED.into());
    }
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "a duration needs a unit: {s}s, {s}ms, {s}m (units: ns, us, ms, s, m, h)"
        ));
    }
    let mut ns = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(split);
        let value: f64 = number.parse().map_err(|_| EXPECTED.to_string())?;
        let tail = tail.trim_start();
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, scale)| scale)
            .ok_or_else(|| match unit {
                "" => EXPECTED.to_string(),
                _ => format!("unknown unit '{unit}' (use ns, us, ms, s, m or h)"),
            })?;
        ns += value * scale;
        rest = after.trim_start();
    }
    if !ns.is_finite() || ns > u64::MAX as f64 {
        return Err("too long".into());
    }
    Ok(Duration::from_nanos(ns.round() as u64))
}

/// Formats nanoseconds for people with about three significant digits: `850 ns`, `41.2 µs`,
/// `1.20 ms`, `3.41 s`.
pub fn format_ns(ns: u64) -> String {
    let (value, unit) = match ns {
        0..=999 => return format!("{ns} ns"),
        1_000..=999_999 => (ns as f64 / 1e3, "µs"),
        1_000_000..=999_999_999 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            parse_duration("500"),
            Err("a duration needs a unit: 500s, 500ms, 500m (units: ns, us, ms, s, m, h)".into())
        );
        assert!(parse_duration("2.5").is_err());
        assert!(parse_duration("1h30").is_err());
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("1e400").is_err());
    }

    #[test]
    fn formats_latencies() {
        assert_eq!(format_ns(850), "850 ns");
        assert_eq!(format_ns(41_234), "41.2 µs");
        assert_eq!(format_ns(1_204_000), "1.20 ms");
        assert_eq!(format_ns(3_410_000_000), "3.41 s");
        assert_eq!(format_ns(250_000_000), "250 ms");
    }
}
