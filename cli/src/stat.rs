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
use crate::info::{render_rows, Work};
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
    /// Every group.
    groups: Vec<GroupReading>,
    /// Ring bytes held back.
    fill: u64,
    /// Running producers.
    producers: u32,
}

/// One group in a reading.
struct GroupReading {
    /// The group's name.
    name: String,
    /// Its committed offset.
    committed: u64,
    /// Messages published but not committed.
    lag: u64,
    /// A work group's figures.
    work: Option<Work>,
}

impl Reading {
    /// Reads the queue's counters now.
    fn take(queue: &Queue) -> Reading {
        let groups = crate::info::groups(queue, None)
            .into_iter()
            .map(|g| GroupReading {
                name: g.name,
                committed: g.committed,
                lag: g.lag,
                work: g.work,
            })
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
    /// A work group's figures now, and its rates since the previous reading.
    #[serde(skip_serializing_if = "Option::is_none")]
    work: Option<WorkSample>,
}

/// A work group in a sample.
#[derive(Serialize)]
struct WorkSample {
    /// The figures now (`shmq info --json`'s `work`).
    #[serde(flatten)]
    now: Work,
    /// Acks per second since the previous reading (`None` for a new group).
    acked_per_sec: Option<f64>,
    /// Redeliveries per second since the previous reading (`None` for a new group).
    redelivered_per_sec: Option<f64>,
    /// Dead letters per second since the previous reading (`None` for a new group).
    dead_lettered_per_sec: Option<f64>,
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
    let before: HashMap<&str, &GroupReading> =
        a.groups.iter().map(|g| (g.name.as_str(), g)).collect();
    let groups = b
        .groups
        .iter()
        .map(|g| {
            let old = before.get(g.name.as_str());
            let work = g.work.as_ref().map(|w| {
                let was = old.and_then(|o| o.work.as_ref());
                let rate = |f: fn(&Work) -> u64| was.map(|v| per_sec(f(w).saturating_sub(f(v))));
                WorkSample {
                    now: w.clone(),
                    acked_per_sec: rate(|w| w.acked),
                    redelivered_per_sec: rate(|w| w.redelivered),
                    dead_lettered_per_sec: rate(|w| w.dead_lettered),
                }
            });
            GroupSample {
                name: g.name.clone(),
                committed: g.committed,
                committed_per_sec: old.map(|o| per_sec(g.committed.saturating_sub(o.committed))),
                lag: g.lag,
                lag_change: old.map(|o| g.lag as i64 - o.lag as i64),
                work,
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
    let rows: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            let trend = match g.lag_change {
                Some(0) => "steady".to_string(),
                Some(d) if d > 0 => format!("+{}", count(d as u64)),
                Some(d) => format!("-{}", count(d.unsigned_abs())),
                None => "new".to_string(),
            };
            let mut row = vec![
                format!("  {}", g.name),
                format!(
                    "committed {}",
                    g.committed_per_sec.map_or("-".into(), per_sec)
                ),
                format!("lag {}", count(g.lag)),
                format!("({trend})"),
            ];
            if let Some(w) = &g.work {
                row.extend([
                    format!("acked {}", w.acked_per_sec.map_or("-".into(), per_sec)),
                    format!("in flight {}", count(w.now.in_flight)),
                    format!("waiting {}", count(w.now.waiting)),
                    format!(
                        "redelivered {}",
                        w.redelivered_per_sec.map_or("-".into(), per_sec)
                    ),
                    format!(
                        "dead-lettered {}",
                        w.dead_lettered_per_sec.map_or("-".into(), per_sec)
                    ),
                    format!("expired {}", count(w.now.expired)),
                    format!("workers {}", w.now.workers),
                ]);
            }
            row
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

    /// A plain group's reading.
    fn plain(name: &str, committed: u64, lag: u64) -> GroupReading {
        GroupReading {
            name: name.into(),
            committed,
            lag,
            work: None,
        }
    }

    #[test]
    fn rates_and_trends_come_from_two_readings() {
        let t = Instant::now();
        let a = Reading {
            at: t,
            tail: 100,
            groups: vec![plain("a", 90, 10), plain("gone", 0, 100)],
            fill: 0,
            producers: 1,
        };
        let b = Reading {
            at: t + Duration::from_secs(2),
            tail: 300,
            groups: vec![plain("a", 250, 50), plain("new", 0, 300)],
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
