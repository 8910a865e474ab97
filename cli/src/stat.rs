//! `shmq stat`: live rates of a queue, sampled every interval: published/s, committed/s per
//! group, lag and its trend, fill.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use shmq::Queue;

use crate::duration::parse_duration;
use crate::error::{At, CliError};
use crate::fmt::{count, rate};
use crate::info::render_rows;
use crate::time::format_time;
use crate::trust::TrustArgs;

/// Arguments of `shmq stat`.
#[derive(Args)]
pub struct StatArgs {
    /// The queue file.
    path: PathBuf,
    /// Time between samples.
    #[arg(long, default_value = "1s", value_parser = parse_interval, value_name = "DURATION")]
    interval: Duration,
    /// Stop after this many samples [default: until interrupted].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// One JSON object per sample instead of text.
    #[arg(long)]
    json: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// Parses `--interval`: a duration of at least 10 ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("the interval must be at least 10ms".into());
    }
    Ok(d)
}

/// The counters of one reading.
struct Reading {
    /// When it was taken.
    at: Instant,
    /// Tail offset.
    tail: u64,
    /// Per group: committed offset and lag.
    groups: Vec<(String, u64, u64)>,
    /// Ring bytes held back.
    fill: u64,
    /// Running producers.
    producers: u32,
}

impl Reading {
    /// Reads the queue's counters now.
    fn take(queue: &Queue) -> Reading {
        let groups = queue
            .groups()
            .into_iter()
            .map(|g| (g.name, g.committed, g.lag))
            .collect();
        Reading {
            at: Instant::now(),
            tail: queue.tail_offset(),
            groups,
            fill: queue.protected_bytes(),
            producers: queue.live_producers(),
        }
    }
}

/// One sample: the change between two readings, in the shape of the JSON output.
#[derive(Serialize)]
struct Sample {
    /// Wall-clock time of the sample, nanoseconds since the Unix epoch.
    time_ns: u64,
    /// Seconds since the previous reading.
    seconds: f64,
    /// Tail offset.
    tail_offset: u64,
    /// Messages published per second since the previous reading.
    published_per_sec: f64,
    /// Ring bytes producers may not overwrite yet.
    fill_bytes: u64,
    /// Running producers.
    producers_alive: u32,
    /// Every group.
    groups: Vec<GroupSample>,
}

/// One group in a sample.
#[derive(Serialize)]
struct GroupSample {
    /// The group's name.
    name: String,
    /// Its committed offset.
    committed: u64,
    /// Messages committed per second since the previous reading (`None` for a new group).
    committed_per_sec: Option<f64>,
    /// Messages published but not committed.
    lag: u64,
    /// How the lag changed since the previous reading (`None` for a new group).
    lag_change: Option<i64>,
}

/// Samples the queue every interval and prints what changed.
pub fn run(args: &StatArgs) -> Result<(), CliError> {
    let queue = args.trust.open_queue(&args.path)?;
    let mut previous = Reading::take(&queue);
    let mut taken = 0;
    while args.count.is_none_or(|n| taken < n) {
        std::thread::sleep(args.interval.saturating_sub(previous.at.elapsed()));
        // A file removed, replaced or truncated under us: say so and stop.
        queue.check_file().at(&args.path)?;
        let now = Reading::take(&queue);
        let sample = compare(&previous, &now);
        let text = if args.json {
            serde_json::to_string(&sample)
                .map_err(|e| CliError::new(args.path.display(), format_args!("JSON: {e}")))?
        } else {
            render(&sample)
        };
        crate::info::print(&text)?;
        previous = now;
        taken += 1;
    }
    Ok(())
}

/// The sample between readings `a` and `b`.
fn compare(a: &Reading, b: &Reading) -> Sample {
    let secs = (b.at - a.at).as_secs_f64();
    let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let before: HashMap<&str, (u64, u64)> = a
        .groups
        .iter()
        .map(|(name, committed, lag)| (name.as_str(), (*committed, *lag)))
        .collect();
    let groups = b
        .groups
        .iter()
        .map(|(name, committed, lag)| {
            let old = before.get(name.as_str());
            GroupSample {
                name: name.clone(),
                committed: *committed,
                committed_per_sec: old.map(|&(c, _)| per_sec(committed.saturating_sub(c))),
                lag: *lag,
                lag_change: old.map(|&(_, l)| *lag as i64 - l as i64),
            }
        })
        .collect();
    Sample {
        time_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        seconds: secs,
        tail_offset: b.tail,
        published_per_sec: per_sec(b.tail.saturating_sub(a.tail)),
        fill_bytes: b.fill,
        producers_alive: b.producers,
        groups,
    }
}

/// The text form of a sample: a summary line, then a row per group.
fn render(s: &Sample) -> String {
    let per_sec = |r: f64| rate(r.round() as u64, 1.0);
    let mut out = format!(
        "{}  tail {}  published {}  fill {}  producers {}",
        format_time(s.time_ns),
        count(s.tail_offset),
        per_sec(s.published_per_sec),
        crate::size::format_size(s.fill_bytes),
        s.producers_alive
    );
    let rows: Vec<[String; 4]> = s
        .groups
        .iter()
        .map(|g| {
            let trend = match g.lag_change {
                Some(0) => "steady".to_string(),
                Some(d) if d > 0 => format!("+{}", count(d as u64)),
                Some(d) => format!("-{}", count(d.unsigned_abs())),
                None => "new".to_string(),
            };
            [
                format!("  {}", g.name),
                format!(
                    "committed {}",
                    g.committed_per_sec.map_or("-".into(), per_sec)
                ),
                format!("lag {}", count(g.lag)),
                format!("({trend})"),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&render_rows(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_trends_come_from_two_readings() {
        let t = Instant::now();
        let a = Reading {
            at: t,
            tail: 100,
            groups: vec![("a".into(), 90, 10), ("gone".into(), 0, 100)],
            fill: 0,
            producers: 1,
        };
        let b = Reading {
            at: t + Duration::from_secs(2),
            tail: 300,
            groups: vec![("a".into(), 250, 50), ("new".into(), 0, 300)],
            fill: 4096,
            producers: 1,
        };
        let s = compare(&a, &b);
        assert_eq!(s.published_per_sec, 100.0);
        assert_eq!(s.groups[0].committed_per_sec, Some(80.0));
        assert_eq!(s.groups[0].lag_change, Some(40));
        assert_eq!(s.groups[1].committed_per_sec, None);
        let text = render(&s);
        assert!(
            text.contains("tail 300  published 100/s  fill 4 KiB"),
            "{text}"
        );
        assert!(
            text.contains("a    committed 80/s  lag 50   (+40)"),
            "{text}"
        );
        assert!(
            text.contains("new  committed -     lag 300  (new)"),
            "{text}"
        );
    }
}
