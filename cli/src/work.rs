//! `shmq consume --shared GROUP`: reading as a worker of a work group (competing consumers).
//!
//! The worker's options for a group it creates (`--visibility-timeout`, `--backoff`, …), how it
//! settles what it printed (`--nack`, `--reject`, else ack), and the [`Shared`] source that
//! `consume` reads from. Settling happens after the output is flushed, so an acked record has
//! reached the reader; one printed but not settled when the run dies is delivered again once
//! its visibility timeout passes (at-least-once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use shmq::{Backoff, Start, Ticket, WorkOptions, Worker};

use crate::consume::{Record, Source};
use crate::duration::parse_duration;
use crate::error::{first_given, At, CliError};
use crate::trust::TrustArgs;

/// The worker options of `shmq consume --shared`.
#[derive(Args)]
pub struct WorkArgs {
    /// --shared: nack each printed record instead of acking it (it is delivered again after
    /// the group's back-off, and dead-lettered after --max-deliveries).
    #[arg(long, requires = "shared", conflicts_with = "reject")]
    nack: bool,
    /// --shared: reject each printed record instead of acking it (it goes to the dead-letter
    /// queue at once).
    #[arg(long, requires = "shared")]
    reject: bool,
    /// New work group: how long a worker holds a record before anyone gets it again [default: 30s].
    #[arg(long, requires = "create", value_parser = parse_duration, value_name = "DURATION")]
    visibility_timeout: Option<Duration>,
    /// New work group: deliveries after which a nacked or timed-out record is dead-lettered
    /// (0: unlimited; at most 4095) [default: 5].
    #[arg(long, requires = "create", value_name = "N")]
    max_deliveries: Option<u32>,
    /// New work group: the delay of a nacked record, fixed (`1s`) or exponential from the
    /// first delivery's delay, doubling, up to a cap (`exp:100ms..10s`) [default: 1s].
    #[arg(long, requires = "create", value_parser = parse_backoff, value_name = "BACKOFF")]
    backoff: Option<Backoff>,
    /// New work group: records in flight or waiting at most, a power of two from 64 to
    /// 1048576 [default: 4096].
    #[arg(long, requires = "create", value_name = "N")]
    window: Option<u32>,
    /// New work group: the queue file that dead-lettered records go to (it must exist;
    /// without it they are dropped and counted).
    #[arg(long, requires = "create", value_name = "PATH")]
    dead_letter: Option<PathBuf>,
    /// New work group: records older than this are expired instead of delivered.
    #[arg(long, requires = "create", value_parser = parse_duration, value_name = "DURATION")]
    max_age: Option<Duration>,
    /// New work group: expired records go to the dead-letter queue too.
    #[arg(long, requires = "dead_letter")]
    dead_letter_expired: bool,
}

/// Parses `--backoff`: a duration (`1s`, fixed) or `exp:INITIAL..MAX` (exponential).
pub fn parse_backoff(s: &str) -> Result<Backoff, String> {
    let Some(range) = s.strip_prefix("exp:") else {
        return parse_duration(s).map(Backoff::Fixed).map_err(|e| {
            format!("{e} (a back-off is a duration, `1s`, or `exp:INITIAL..MAX`, `exp:100ms..10s`)")
        });
    };
    let (initial, max) = range
        .split_once("..")
        .ok_or_else(|| format!("expected exp:INITIAL..MAX, like exp:100ms..10s; got {s:?}"))?;
    let initial = parse_duration(initial)?;
    let max = parse_duration(max)?;
    if max < initial {
        return Err(format!(
            "the cap {max:?} is shorter than the first delay {initial:?}"
        ));
    }
    Ok(Backoff::Exponential { initial, max })
}

/// What a worker does with each record once it is printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Ack: done with it.
    Ack,
    /// Nack: deliver it again after the group's back-off.
    Nack,
    /// Reject: dead-letter it.
    Reject,
}

impl WorkArgs {
    /// The option given that only a worker takes (`--nack`, `--reject`), if any: clap's
    /// `requires` is not enforced for flags, so `consume` checks it.
    pub fn worker_only(&self) -> Option<&'static str> {
        first_given([(self.nack, "--nack"), (self.reject, "--reject")])
    }

    /// Whether any option of a new group was given.
    fn any_setting(&self) -> bool {
        self.visibility_timeout.is_some()
            || self.max_deliveries.is_some()
            || self.backoff.is_some()
            || self.window.is_some()
            || self.dead_letter.is_some()
            || self.max_age.is_some()
    }

    /// The options of a group this worker creates, starting at `start`.
    fn options(&self, start: Start) -> WorkOptions {
        let default = WorkOptions::default();
        WorkOptions {
            visibility_timeout: self
                .visibility_timeout
                .unwrap_or(default.visibility_timeout),
            max_deliveries: self.max_deliveries.unwrap_or(default.max_deliveries),
            backoff: self.backoff.unwrap_or(default.backoff),
            window: self.window.unwrap_or(default.window),
            start,
            dead_letter: self.dead_letter.clone(),
            max_age: self.max_age,
            dead_letter_expired: self.dead_letter_expired,
        }
    }
}

/// A worker of a work group as a `consume` source: each record it hands out is settled once
/// the output holding it is flushed.
pub struct Shared {
    /// The queue file, for warnings.
    path: PathBuf,
    /// The worker.
    worker: Worker,
    /// The work group.
    group: String,
    /// What to do with each printed record.
    settle: Settle,
    /// The deliveries handed out and not yet settled, oldest first.
    printed: Vec<Ticket>,
}

/// Joins work group `group` of the queue file `path` as a worker. Without `create`, the group
/// must exist; with it, a new group gets the options of `args` and starts at `start`, and its
/// dead-letter queue must open now (not only at the first dead letter).
pub fn join(
    path: &Path,
    queue: &shmq::Queue,
    group: &str,
    create: bool,
    start: Start,
    args: &WorkArgs,
    trust: &TrustArgs,
) -> Result<Shared, CliError> {
    let exists = queue.groups().iter().any(|g| g.name == group);
    if !create && !exists {
        return Err(CliError::new(
            path.display(),
            format_args!("work group {group:?} does not exist (add --create to create it)"),
        ));
    }
    if let Some(dead) = args.dead_letter.as_ref().filter(|_| !exists) {
        trust
            .open_queue(dead)
            .map_err(|e| e.with_note("--dead-letter names a queue file that must exist"))?;
    }
    if exists && args.any_setting() {
        errln!(
            "shmq: {}: work group {group:?} exists: it keeps its own settings, the ones given \
             here are ignored",
            path.display()
        );
    }
    let worker = queue.worker(group, &args.options(start)).at(path)?;
    let settle = if args.nack {
        Settle::Nack
    } else if args.reject {
        Settle::Reject
    } else {
        Settle::Ack
    };
    Ok(Shared {
        path: path.to_path_buf(),
        worker,
        group: group.to_string(),
        settle,
        printed: Vec::new(),
    })
}

impl Source for Shared {
    fn next(&mut self, timeout: Option<Duration>) -> shmq::Result<Option<Record<'_>>> {
        let Shared {
            worker, printed, ..
        } = self;
        Ok(worker.poll(timeout)?.map(|job| {
            printed.push(job.ticket);
            Record {
                partition: None,
                offset: job.offset,
                timestamp_ns: job.timestamp_ns,
                key: None,
                value: job.payload,
                deliveries: Some(job.deliveries),
            }
        }))
    }

    /// A work group has no committed offset to move: its records are settled one by one.
    fn commit(&mut self, _partition: u32, _offset: u64) -> shmq::Result<()> {
        Ok(())
    }

    /// Acks (nacks, rejects) every record handed out since the last call. A lease that ran out
    /// meanwhile is not an error of the run: the record is another delivery's now.
    fn settle(&mut self) -> shmq::Result<()> {
        for ticket in std::mem::take(&mut self.printed) {
            let settled = match self.settle {
                Settle::Ack => self.worker.ack(ticket),
                Settle::Nack => self.worker.nack(ticket, None),
                Settle::Reject => self.worker.reject(ticket),
            };
            match settled {
                Err(shmq::Error::LeaseExpired { offset, .. }) => errln!(
                    "shmq: {}: work group {:?}: the lease on record {offset} ran out before it \
                     was settled; it is delivered again",
                    self.path.display(),
                    self.group
                ),
                r => r?,
            }
        }
        Ok(())
    }

    fn moves_past_lost_records(&self) -> bool {
        false
    }

    fn group(&self) -> &str {
        &self.group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backoffs() {
        assert_eq!(
            parse_backoff("1s"),
            Ok(Backoff::Fixed(Duration::from_secs(1)))
        );
        assert_eq!(
            parse_backoff("exp:100ms..10s"),
            Ok(Backoff::Exponential {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(10)
            })
        );
        assert!(parse_backoff("exp:10s..1s")
            .unwrap_err()
            .contains("shorter"));
        assert!(parse_backoff("exp:1s")
            .unwrap_err()
            .contains("exp:INITIAL..MAX"));
        assert!(parse_backoff("soon")
            .unwrap_err()
            .contains("exp:INITIAL..MAX"));
    }
}
