//! The demo's child processes (`shmq demo-worker`): the order service publishing events, and
//! one consumer per group checking and timing them. Each writes a [`Report`] for the parent.

use clap::{Args, ValueEnum};
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmq::{Consumer, Message, Queue};

use super::event::{monotonic_ns, OrderPaid, Pacer, FIRST_ORDER};
use super::report::{histogram, to_pairs, Report, Tally};
use crate::error::{At, CliError};

/// Which process of the demo a worker is.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The order service: publishes the events.
    Producer,
    /// The single member of one consumer group.
    Consumer,
}

/// Arguments of the hidden `shmq demo-worker`.
#[derive(Args)]
pub struct WorkerArgs {
    /// Producer or consumer.
    #[arg(long, value_enum)]
    role: Role,
    /// The queue file.
    #[arg(long)]
    queue: PathBuf,
    /// The consumer group (consumers only).
    #[arg(long, required_if_eq("role", "consumer"))]
    group: Option<String>,
    /// How many events to publish or to expect.
    #[arg(long)]
    messages: u64,
    /// Events per second at most (0: unthrottled).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Where to write the JSON report for the parent.
    #[arg(long)]
    report: PathBuf,
}

/// Commit at least every this many events.
pub const COMMIT_EVERY: u64 = 256;

/// A worker that sees no progress for this long gives up (e.g. its parent was killed).
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Longest single blocking wait for the next event.
const POLL_WAIT: Duration = Duration::from_millis(500);

/// Runs the worker's role and writes its report.
pub fn run(args: &WorkerArgs) -> Result<(), CliError> {
    let report = match (args.role, &args.group) {
        (Role::Producer, _) => produce(args)?,
        (Role::Consumer, Some(group)) => consume(args, group)?,
        (Role::Consumer, None) => return Err(CliError::new("demo-worker", "--group is required")),
    };
    report.write(&args.report)
}

/// Opens the queue, naming its path in any error.
fn open(path: &Path) -> Result<Queue, CliError> {
    Queue::open(path).at(path)
}

/// The order service: publishes `messages` events at up to `rate` per second.
fn produce(args: &WorkerArgs) -> Result<Report, CliError> {
    let path = &args.queue;
    let queue = open(path)?;
    let mut producer = queue.producer().at(path)?;
    producer.set_timeout(Some(STALL_LIMIT));
    let mut pacer = Pacer::new(args.rate);
    let mut tally = Tally::new();
    let start = Instant::now();
    for i in 0..args.messages {
        let event = OrderPaid::new(FIRST_ORDER + i).encode();
        let offset = producer.publish(&event).at(path)?;
        tally.see(offset, &event);
        pacer.pace(i + 1);
    }
    Ok(tally.report(start.elapsed().as_nanos() as u64, Vec::new()))
}

/// What a consumer has seen: the tally and the latency of each event.
struct Seen {
    /// Offsets, order ids and the digest.
    tally: Tally,
    /// Publish-to-receive latency in nanoseconds.
    latency: hdrhistogram::Histogram<u64>,
}

impl Seen {
    /// Checks, times and counts one event; returns its offset.
    fn observe(&mut self, m: &Message<'_>) -> u64 {
        let now = monotonic_ns();
        if let Some(event) = self.tally.see(m.offset, m.payload) {
            self.latency
                .saturating_record(now.saturating_sub(event.paid_at_ns).max(1));
        }
        m.offset
    }
}

/// One consumer group's only member: reads `messages` events, at up to `rate` per second,
/// committing every [`COMMIT_EVERY`] events and before every blocking wait.
fn consume(args: &WorkerArgs, group: &str) -> Result<Report, CliError> {
    let path = &args.queue;
    let queue = open(path)?;
    let mut consumer = queue.consumer(group).at(path)?;
    let mut pacer = Pacer::new(args.rate);
    let mut seen = Seen {
        tally: Tally::new(),
        latency: histogram(),
    };
    let mut uncommitted: Option<u64> = None;
    let mut since_commit = 0;
    let mut idle = Duration::ZERO;
    let mut start = None;
    let fail = |e| CliError::queue(path, e);
    while seen.tally.count < args.messages {
        let ready = match consumer.poll(Some(Duration::ZERO)) {
            Ok(Some(m)) => Some(seen.observe(&m)),
            Ok(None) => None,
            Err(e) => return Err(fail(e)),
        };
        let offset = match ready {
            Some(offset) => offset,
            None => {
                // Caught up: commit, then sleep until the next event (no busy waiting).
                commit(&mut consumer, &mut uncommitted).map_err(fail)?;
                since_commit = 0;
                match consumer.poll(Some(POLL_WAIT)) {
                    Ok(Some(m)) => seen.observe(&m),
                    Ok(None) => {
                        idle += POLL_WAIT;
                        if idle >= STALL_LIMIT {
                            return Err(CliError::new(
                                path.display(),
                                format_args!(
                                    "group {group}: no event for {} s after {} of {}",
                                    STALL_LIMIT.as_secs(),
                                    seen.tally.count,
                                    args.messages
                                ),
                            ));
                        }
                        continue;
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
        };
        idle = Duration::ZERO;
        start.get_or_insert_with(Instant::now);
        uncommitted = Some(offset);
        since_commit += 1;
        if since_commit >= COMMIT_EVERY {
            commit(&mut consumer, &mut uncommitted).map_err(fail)?;
            since_commit = 0;
        }
        pacer.pace(seen.tally.count);
    }
    commit(&mut consumer, &mut uncommitted).map_err(fail)?;
    let elapsed = start.map_or(0, |s| s.elapsed().as_nanos() as u64);
    Ok(seen.tally.report(elapsed, to_pairs(&seen.latency)))
}

/// Commits `uncommitted`, if any.
fn commit(consumer: &mut Consumer, uncommitted: &mut Option<u64>) -> shmq::Result<()> {
    match uncommitted.take() {
        Some(offset) => consumer.commit(offset),
        None => Ok(()),
    }
}
