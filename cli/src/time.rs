//! Points in time on the command line: `2026-12-01T07:00:00Z` or `now-15m`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::duration::parse_duration;

/// What `--help` says a TIME is.
pub const TIME_HELP: &str =
    "an RFC 3339 time (2026-12-01T07:00:00Z, UTC if no zone is given) or now-DURATION (now-15m)";

/// Parses a time into nanoseconds since the Unix epoch: RFC 3339 (`2026-12-01T07:00:00Z`,
/// `2026-12-01 07:00:00.5`; UTC when the zone is left out) or `now-DURATION` (`now-90s`).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let at = match s.strip_prefix("now-") {
        Some(ago) => SystemTime::now()
            .checked_sub(parse_duration(ago)?)
            .ok_or_else(|| format!("{ago} before now is before 1970"))?,
        None => {
            humantime::parse_rfc3339_weak(s).map_err(|e| format!("{e}: expected {TIME_HELP}"))?
        }
    };
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "times before 1970 are not supported".to_string())?;
    Ok(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Formats nanoseconds since the Unix epoch as RFC 3339 UTC with milliseconds.
pub fn format_time(ns: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_relative_times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert_eq!(parse_time("1970-01-01 00:00:01.5"), Ok(1_500_000_000));
        assert_eq!(
            format_time(parse_time("2026-12-01T07:00:00Z").unwrap()),
            "2026-12-01T07:00:00.000Z"
        );
        let now = parse_time("now-0s").unwrap();
        let ago = parse_time("now-1h").unwrap();
        assert!((3_599_000_000_000..=3_601_000_000_000).contains(&(now - ago)));
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("now-soon").is_err());
    }
}
