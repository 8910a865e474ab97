//! `shmq publish`: one message per line of stdin, or synthetic load with `--count`; to a topic,
//! optionally as transactions (`--transaction`).

use clap::Args;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shmq::{
    IdOptions, IdempotentProducer, Producer, PublishOutcome, Queue, Schedule, Topic, TopicProducer,
    TransactionalProducer,
};

use crate::error::{first_given, At, CliError};
use crate::fmt::{count, rate};
use crate::size::format_size;
use crate::{duration, size, trust};

/// Arguments of `shmq publish`.
#[derive(Args)]
pub struct PublishArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// Publish the lines of this file instead of stdin's.
    #[arg(long, conflicts_with = "count", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Publish this many synthetic messages instead of reading stdin.
    #[arg(long)]
    count: Option<u64>,
    /// Topics: give every message this key (it picks the partition).
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// Topics: each message is KEY, this separator, then the value (e.g. --key-separator ' ').
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Topics: publish to this partition instead of routing by key or in turn.
    #[arg(long)]
    partition: Option<u32>,
    /// Size of each synthetic message.
    #[arg(long, requires = "count", default_value = "64", value_parser = size::parse_size, value_name = "SIZE")]
    size: u64,
    /// A line the queue refuses (larger than its max message, or without the key separator)
    /// is reported on stderr and skipped instead of ending the run.
    #[arg(long, conflicts_with = "count")]
    skip_invalid: bool,
    /// Queue files: work groups deliver each message no earlier than this long after it is
    /// published (plain groups and `tail` read it at once).
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    delay: Option<Duration>,
    /// Queue files: work groups expire each message this long after it is published instead
    /// of delivering it (dead-lettered if the group says so).
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    ttl: Option<Duration>,
    /// Queue files: publish through the idempotent producer of this id, each line with the
    /// next sequence number, and print `OFFSET new` or `OFFSET duplicate` (a line whose
    /// sequence number the id published before is not published again).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["count", "delay", "ttl"])]
    id: Option<String>,
    /// With --id: the first line's sequence number [default: where the id left off].
    #[arg(long, requires = "id", value_name = "N")]
    seq: Option<u64>,
    /// Topics: publish the lines as one transaction of this transactional id, committed at
    /// the end of the input: all of them become visible at once, in every partition, or none
    /// does. Prints `PARTITION:OFFSET` per line once its transaction committed.
    #[arg(long, value_name = "ID", conflicts_with_all = ["count", "timeout"])]
    transaction: Option<String>,
    /// With --transaction: commit every N lines (and the rest at the end of the input)
    /// instead of all of them as one transaction.
    #[arg(long, requires = "transaction", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    transaction_size: Option<u64>,
    /// Give up when the queue stays full this long (policy block) [default: wait forever].
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: trust::TrustArgs,
}

/// Synthetic messages between progress-bar updates.
const PROGRESS_EVERY: u64 = 4096;

/// Without `--timeout`, how long a publish waits for room before saying why it is waiting.
const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// Opens the queue or topic and publishes.
pub fn run(args: &PublishArgs) -> Result<(), CliError> {
    let path = &args.path;
    let timeout = Some(args.timeout.unwrap_or(NOTICE_AFTER));
    let target = if Topic::is_topic(path) {
        if let Some(option) = queue_only_option(args) {
            return Err(CliError::new(
                option,
                format_args!(
                    "{} is a topic: delays and times to live are read by work groups, which \
                     are on queue files",
                    path.display()
                ),
            ));
        }
        let topic = args.trust.open_topic(path)?;
        let route = route(args, topic.partition_count())?;
        if let Some(id) = &args.transaction {
            let mut producer = topic.transactional_producer(id).at(path)?;
            return with_input(args, |input, source| {
                let mut txn = Transaction {
                    producer: &mut producer,
                    route: &route,
                    path,
                    every: args.transaction_size,
                };
                txn.lines(input, source, args.skip_invalid)
            });
        }
        let mut producer = topic.producer().at(path)?;
        producer.set_timeout(timeout);
        Target::Topic {
            topic,
            producer,
            route,
        }
    } else {
        if let Some(option) = topic_only_option(args) {
            return Err(CliError::new(
                option,
                format_args!("{} is a queue file, not a topic", path.display()),
            ));
        }
        let queue = args.trust.open_queue(path)?;
        if let Some(id) = &args.id {
            let mut producer = queue
                .idempotent_producer(id, &IdOptions::default())
                .at(path)?;
            producer.set_timeout(timeout);
            let next = args.seq.unwrap_or_else(|| producer.next_sequence());
            Target::Idempotent {
                queue,
                producer,
                next,
            }
        } else {
            let mut producer = queue.producer().at(path)?;
            producer.set_timeout(timeout);
            let schedule = (args.delay.is_some() || args.ttl.is_some()).then(|| Schedule {
                delay: args.delay.unwrap_or(Duration::ZERO),
                ttl: args.ttl,
            });
            Target::Queue {
                queue,
                producer,
                schedule,
            }
        }
    };
    let mut sender = Sender {
        target,
        patient: args.timeout.is_none(),
        told: false,
        duplicate: None,
    };
    match args.count {
        Some(n) => synthetic(&mut sender, n, args.size),
        None => with_input(args, |input, source| {
            lines(&mut sender, input, source, args.skip_invalid)
        }),
    }
}

/// Runs `publish` over the lines of `--file` or of stdin, with the input's name for errors.
fn with_input(
    args: &PublishArgs,
    publish: impl FnOnce(&mut dyn BufRead, &str) -> Result<(), CliError>,
) -> Result<(), CliError> {
    match &args.file {
        Some(file) => {
            let f = std::fs::File::open(file).map_err(|e| CliError::io(file, "open", e))?;
            publish(&mut io::BufReader::new(f), &file.display().to_string())
        }
        None => publish(&mut io::stdin().lock(), "stdin"),
    }
}

/// The first topic-only option given, for the error on a queue file.
fn topic_only_option(args: &PublishArgs) -> Option<&'static str> {
    first_given([
        (args.key.is_some(), "--key"),
        (args.key_separator.is_some(), "--key-separator"),
        (args.partition.is_some(), "--partition"),
        (args.transaction.is_some(), "--transaction"),
    ])
}

/// The first queue-only option given, for the error on a topic.
fn queue_only_option(args: &PublishArgs) -> Option<&'static str> {
    first_given([
        (args.delay.is_some(), "--delay"),
        (args.ttl.is_some(), "--ttl"),
        (args.id.is_some(), "--id"),
    ])
}

/// How messages find their partition in a topic of `partitions` partitions.
fn route(args: &PublishArgs, partitions: u32) -> Result<Route, CliError> {
    if let Some(p) = args.partition.filter(|&p| p >= partitions) {
        return Err(CliError::new(
            format_args!("--partition {p}"),
            format_args!(
                "{} has partitions 0 to {}",
                args.path.display(),
                partitions - 1
            ),
        ));
    }
    Ok(match (&args.key, &args.key_separator, args.partition) {
        (Some(key), _, partition) => Route::Key(key.clone().into_bytes(), partition),
        (None, Some(sep), partition) if !sep.is_empty() => {
            Route::Split(sep.clone().into_bytes(), partition)
        }
        (None, Some(_), _) => return Err(CliError::new("--key-separator", "must not be empty")),
        (None, None, Some(p)) => Route::Partition(p),
        (None, None, None) => Route::RoundRobin,
    })
}

/// How a topic message finds its partition.
enum Route {
    /// Unkeyed, to the next partition in turn.
    RoundRobin,
    /// Unkeyed, to this partition.
    Partition(u32),
    /// With this key, to its partition (or to the one given).
    Key(Vec<u8>, Option<u32>),
    /// Each message is `KEY SEP VALUE`: keyed by what precedes the first separator (routed by
    /// it, or to the partition given).
    Split(Vec<u8>, Option<u32>),
}

/// A message routed: its key (if any), value and partition (when one is given).
type Routed<'a> = (Option<&'a [u8]>, &'a [u8], Option<u32>);

impl Route {
    /// A message's key, value and partition (when one is given) under this route.
    fn apply<'a>(&'a self, payload: &'a [u8]) -> shmq::Result<Routed<'a>> {
        Ok(match self {
            Route::RoundRobin => (None, payload, None),
            Route::Partition(p) => (None, payload, Some(*p)),
            Route::Key(key, p) => (Some(&key[..]), payload, *p),
            Route::Split(sep, p) => match find(payload, sep) {
                Some(at) => (Some(&payload[..at]), &payload[at + sep.len()..], *p),
                None => {
                    return Err(shmq::Error::InvalidArgument {
                        argument: "message",
                        why: format!("no key separator {:?} in it", String::from_utf8_lossy(sep)),
                    })
                }
            },
        })
    }
}

/// Where messages go.
enum Target {
    /// A queue file and its producer.
    Queue {
        /// The open queue.
        queue: Queue,
        /// Its producer.
        producer: Producer,
        /// The delay and time to live of every message (`--delay`, `--ttl`), if given.
        schedule: Option<Schedule>,
    },
    /// A queue file and an idempotent producer (`--id`).
    Idempotent {
        /// The open queue.
        queue: Queue,
        /// Its idempotent producer.
        producer: IdempotentProducer,
        /// The sequence number of the next message.
        next: u64,
    },
    /// A topic, its producer and the routing of messages.
    Topic {
        /// The open topic.
        topic: Topic,
        /// Its producer.
        producer: TopicProducer,
        /// How messages find their partition.
        route: Route,
    },
}

/// Where a message went: its partition (topics only) and offset.
type Placed = (Option<u32>, u64);

/// A producer that, when it has no `--timeout`, waits for room indefinitely but says once on
/// stderr which group it is waiting for.
struct Sender {
    /// The queue or topic.
    target: Target,
    /// No `--timeout` was given: wait as long as it takes.
    patient: bool,
    /// The waiting notice was printed.
    told: bool,
    /// `--id`: whether the last message published was a duplicate.
    duplicate: Option<bool>,
}

impl Sender {
    /// Publishes `payload` and returns where it went. A timed-out publish published nothing,
    /// so retrying it is safe.
    fn publish(&mut self, payload: &[u8]) -> shmq::Result<Placed> {
        loop {
            match self.try_publish(payload) {
                Err(shmq::Error::Timeout {
                    path, blocked_by, ..
                }) if self.patient => {
                    if !self.told {
                        self.told = true;
                        waiting_for_room(&path, blocked_by);
                    }
                }
                r => return r,
            }
        }
    }

    /// One publish attempt.
    fn try_publish(&mut self, payload: &[u8]) -> shmq::Result<Placed> {
        let (producer, route) = match &mut self.target {
            Target::Queue {
                producer,
                schedule: None,
                ..
            } => return Ok((None, producer.publish(payload)?)),
            Target::Queue {
                producer,
                schedule: Some(schedule),
                ..
            } => return Ok((None, producer.publish_scheduled(payload, schedule)?)),
            Target::Idempotent { producer, next, .. } => {
                let outcome = producer.publish(*next, payload);
                // A message that timed out is retried with its sequence number; any other
                // outcome, even a refusal, uses it up, so a run given the same input and
                // --seq numbers each line the same way.
                if !matches!(outcome, Err(shmq::Error::Timeout { .. })) {
                    *next += 1;
                }
                let outcome = outcome?;
                self.duplicate = Some(matches!(outcome, PublishOutcome::Duplicate(_)));
                return Ok((None, outcome.offset()));
            }
            Target::Topic {
                producer, route, ..
            } => (producer, &*route),
        };
        let (key, value, partition) = route.apply(payload)?;
        match (key, partition) {
            (Some(key), None) => {
                let p = producer.publish_keyed(key, value)?;
                Ok((Some(p.partition), p.offset))
            }
            (key, Some(p)) => Ok((Some(p), producer.publish_to(p, key, value)?)),
            (None, None) => {
                let p = producer.publish(value)?;
                Ok((Some(p.partition), p.offset))
            }
        }
    }

    /// The queue file or topic directory.
    fn path(&self) -> &std::path::Path {
        match &self.target {
            Target::Queue { queue, .. } | Target::Idempotent { queue, .. } => queue.path(),
            Target::Topic { topic, .. } => topic.path(),
        }
    }

    /// The largest message the target takes.
    fn max_message(&self) -> u64 {
        match &self.target {
            Target::Queue { queue, .. } | Target::Idempotent { queue, .. } => {
                u64::from(queue.geometry().max_message)
            }
            Target::Topic { topic, .. } => topic
                .partitions()
                .first()
                .map_or(0, |q| u64::from(q.geometry().max_message)),
        }
    }
}

/// Says on stderr that a publish to `path` waits for room, and what holds it back.
pub(crate) fn waiting_for_room(path: &std::path::Path, blocked_by: Option<Box<shmq::Blocker>>) {
    let why = blocked_by.map_or(String::new(), |b| format!("; {b}"));
    errln!(
        "shmq: {}: waiting for room{why} (Ctrl-C to stop)",
        path.display()
    );
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Prints where a message went: `OFFSET` for a queue, `PARTITION:OFFSET` for a topic, and
/// with `--id` whether it was new or a `duplicate`.
fn placed(
    out: &mut impl Write,
    (partition, offset): Placed,
    duplicate: Option<bool>,
) -> io::Result<()> {
    match (partition, duplicate) {
        (Some(p), _) => writeln!(out, "{p}:{offset}"),
        (None, Some(true)) => writeln!(out, "{offset} duplicate"),
        (None, Some(false)) => writeln!(out, "{offset} new"),
        (None, None) => writeln!(out, "{offset}"),
    }
}

/// Reads the next line of `input` into `line`, without its line ending (`\n` or `\r\n`);
/// false at the end of the input.
fn read_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    if input.read_until(b'\n', line)? == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    Ok(true)
}

/// Publishes each line of `input` (without its line ending) and prints its offset; `source`
/// names the input in errors. With `skip_invalid`, a line the queue refuses (too big, or
/// without its key separator) is reported and skipped; otherwise it ends the run.
fn lines(
    sender: &mut Sender,
    mut input: impl BufRead,
    source: &str,
    skip_invalid: bool,
) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    let mut line = Vec::new();
    let mut done = Tally::default();
    let mut skipped = 0u64;
    for number in 1u64.. {
        if !read_line(&mut input, &mut line).map_err(|e| done.note(CliError::new(source, e)))? {
            break;
        }
        let at = match sender.publish(&line) {
            Ok(at) => at,
            Err(e) if skip_invalid && invalid_message(&e) => {
                let e = publish_error(sender.path(), e, Some((source, number)));
                errln!("shmq: {e} (skipped)");
                skipped += 1;
                continue;
            }
            Err(e) => {
                let rest = if invalid_message(&e) {
                    "nothing after it was published (--skip-invalid skips such lines)"
                } else {
                    "nothing after it was published"
                };
                let e = publish_error(sender.path(), e, Some((source, number)));
                return Err(done.note(e).with_note(rest));
            }
        };
        done.add(at);
        if let Err(e) = placed(&mut out, at, sender.duplicate) {
            return stdout_closed(e);
        }
    }
    if skipped > 0 {
        errln!(
            "shmq: {}: skipped {} invalid lines of {source}; {}",
            sender.path().display(),
            count(skipped),
            done.describe()
        );
    }
    Ok(())
}

/// `--transaction`: lines sent to a transactional producer's open transaction, committed
/// every `every` lines and at the end of the input.
struct Transaction<'a> {
    /// The holder of the transactional id.
    producer: &'a mut TransactionalProducer,
    /// How lines find their partition.
    route: &'a Route,
    /// The topic directory.
    path: &'a std::path::Path,
    /// `--transaction-size`: lines per transaction (all of them if not given).
    every: Option<u64>,
}

impl Transaction<'_> {
    /// Sends each line of `input` to the open transaction, commits as configured, and prints
    /// where each line went once its transaction committed; `source` names the input in
    /// errors. With `skip_invalid`, a line the topic refuses is reported and left out of its
    /// transaction; any other failure ends the run, the open transaction unpublished.
    fn lines(
        &mut self,
        mut input: impl BufRead,
        source: &str,
        skip_invalid: bool,
    ) -> Result<(), CliError> {
        let mut out = io::stdout().lock();
        let mut line = Vec::new();
        let mut done = Tally::default();
        for number in 1u64.. {
            if !read_line(&mut input, &mut line).map_err(|e| done.note(CliError::new(source, e)))? {
                break;
            }
            match self.send(&line) {
                Ok(()) => {}
                Err(e) if skip_invalid && invalid_message(&e) => {
                    let e = publish_error(self.path, e, Some((source, number)));
                    errln!("shmq: {e} (skipped)");
                    continue;
                }
                Err(e) => {
                    let e = publish_error(self.path, e, Some((source, number)));
                    return Err(done
                        .note(e)
                        .with_note("nothing of the open transaction was published"));
                }
            }
            if self
                .every
                .is_some_and(|n| self.producer.pending() as u64 >= n)
            {
                self.commit(&mut done, &mut out)?;
            }
        }
        self.commit(&mut done, &mut out)
    }

    /// Adds one line to the open transaction.
    fn send(&mut self, line: &[u8]) -> shmq::Result<()> {
        let (key, value, partition) = self.route.apply(line)?;
        match (key, partition) {
            (Some(key), None) => self.producer.send_keyed(key, value).map(drop),
            (key, Some(p)) => self.producer.send_to(p, key, value),
            (None, None) => self.producer.send(value).map(drop),
        }
    }

    /// Commits the open transaction and prints where each of its lines went.
    fn commit(&mut self, done: &mut Tally, out: &mut impl Write) -> Result<(), CliError> {
        let lines = self.producer.pending();
        let committed = self.producer.commit().map_err(|e| {
            done.note(publish_error(self.path, e, None))
                .with_note(format_args!(
                    "the {} lines of this transaction were not published",
                    count(lines as u64)
                ))
        })?;
        for p in committed {
            let at = (Some(p.partition), p.offset);
            done.add(at);
            if let Err(e) = placed(out, at, None) {
                return stdout_closed(e);
            }
        }
        Ok(())
    }
}

/// Whether `e` refuses one message for what it is (so the next one may go through).
fn invalid_message(e: &shmq::Error) -> bool {
    matches!(
        e,
        shmq::Error::TooBig { .. }
            | shmq::Error::KeyTooBig { .. }
            | shmq::Error::InvalidArgument {
                argument: "message",
                ..
            }
    )
}

/// What has been published so far, for the error that stops a run.
#[derive(Default)]
struct Tally {
    /// Messages published.
    n: u64,
    /// Where the first went.
    first: Option<Placed>,
    /// Where the last went.
    last: Option<Placed>,
}

impl Tally {
    /// Counts one more message, published at `at`.
    fn add(&mut self, at: Placed) {
        self.n += 1;
        self.first.get_or_insert(at);
        self.last = Some(at);
    }

    /// "published N messages (offsets A to B)", or "published nothing".
    fn describe(&self) -> String {
        let show = |(partition, offset): Placed| match partition {
            Some(p) => format!("{p}:{offset}"),
            None => offset.to_string(),
        };
        match (self.first, self.last) {
            (Some(a), Some(_)) if self.n == 1 => format!("published 1 message ({})", show(a)),
            (Some(a), Some(b)) => format!(
                "published {} messages ({} to {})",
                count(self.n),
                show(a),
                show(b)
            ),
            _ => "published nothing".to_string(),
        }
    }

    /// `e` followed by what was published before it.
    fn note(&self, e: CliError) -> CliError {
        e.with_note(format_args!("{} before it", self.describe()))
    }
}

/// Publishes `n` messages of `size` bytes and prints a summary.
fn synthetic(sender: &mut Sender, n: u64, size: u64) -> Result<(), CliError> {
    let max = sender.max_message();
    if size > max {
        return Err(CliError::new(
            format_args!("--size {size}"),
            format_args!("larger than the queue's max message of {max} bytes"),
        ));
    }
    // A recognisable pattern; the first 8 bytes are the sequence number when they fit.
    let mut payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    // On stderr, and only when it is a terminal (indicatif hides it otherwise).
    let bar = indicatif::ProgressBar::new(n)
        .with_style(crate::bar::style("cyan"))
        .with_prefix("publish");
    let start = Instant::now();
    let mut done = Tally::default();
    for seq in 0..n {
        let head = payload.len().min(8);
        payload[..head].copy_from_slice(&seq.to_le_bytes()[..head]);
        let at = sender
            .publish(&payload)
            .map_err(|e| done.note(publish_error(sender.path(), e, None)))?;
        done.add(at);
        if seq % PROGRESS_EVERY == 0 {
            bar.set_position(seq);
        }
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let offsets = match (done.first, done.last) {
        (Some((_, a)), Some((_, b))) => format!("{a}..={b}"),
        _ => "none".to_string(),
    };
    outln!(
        "published {} messages of {} ({}) in {secs:.3} s: {}, {}/s; offsets {offsets}",
        count(n),
        format_size(size),
        format_size(n.saturating_mul(size)),
        rate(n, secs),
        format_size((n.saturating_mul(size) as f64 / secs.max(1e-9)) as u64),
    );
    Ok(())
}

/// Describes a failed publish (a full queue's error names what holds producers back).
fn publish_error(path: &std::path::Path, e: shmq::Error, line: Option<(&str, u64)>) -> CliError {
    let at = line.map_or(String::new(), |(source, n)| format!("{source} line {n}: "));
    CliError::new(path.display(), format_args!("{at}{}", strip_path(path, e)))
}

/// A library error's text without a leading path (the caller adds its own).
fn strip_path(path: &std::path::Path, e: shmq::Error) -> String {
    let text = e.to_string();
    let shown = format!("{}: ", path.display());
    text.strip_prefix(&shown).unwrap_or(&text).to_string()
}

/// Stdout went away (e.g. `| head`): stop quietly; any other write error is reported.
fn stdout_closed(e: io::Error) -> Result<(), CliError> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(CliError::new("stdout", e))
    }
}
