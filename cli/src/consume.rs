//! `shmq consume`: reads messages as the member of a consumer group and prints them.
//!
//! With `--commit`, output is flushed before each commit, so a committed message has reached
//! the reader (at-least-once: a crash between flush and commit prints it again next time).
//! With `--shared GROUP` it reads as a worker of a work group instead (`work.rs`), and settles
//! each record after the output holding it is flushed.

use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmq::{Consumer, MemberOptions, SeekTo, Start, Subscribe, Topic, TopicConsumer};

use crate::error::{At, CliError};
use crate::{duration, trust, work};

/// How `shmq consume` prints messages.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload bytes as they are, one message per line.
    Text,
    /// The offset and the payload in hex (`OFFSET#DELIVERY HEX` with --shared).
    Hex,
    /// One JSON object per line: offset, timestamp and payload (`payload_hex` instead when
    /// it is not UTF-8), and `deliveries` with --shared.
    Json,
}

/// Arguments of `shmq consume`.
#[derive(Args)]
pub struct ConsumeArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// The consumer group to read as.
    #[arg(
        long,
        short,
        required_unless_present = "shared",
        conflicts_with = "shared"
    )]
    group: Option<String>,
    /// Read as a worker of this work group instead: its workers share the records (each goes
    /// to one of them), and each record is acked once printed (queue files only).
    #[arg(long, value_name = "GROUP", conflicts_with_all = ["commit", "non_gating", "session_timeout", "no_verify"])]
    shared: Option<String>,
    /// Where to start: earliest, latest, committed, an offset, or a time: RFC 3339
    /// (2026-12-01T07:00:00Z) or now-DURATION (now-15m). With --shared only latest, where a
    /// new work group starts.
    #[arg(long, default_value = "committed", value_parser = parse_from, value_name = "WHERE")]
    from: SeekTo,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Commit what was printed, so the group resumes after it next time.
    #[arg(long)]
    commit: bool,
    /// Keep waiting for new messages until interrupted (or --count is reached).
    #[arg(long, conflicts_with = "timeout")]
    follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop once no message arrives for this long.
    #[arg(long, default_value = "0s", value_parser = duration::parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Create the group if it does not exist (a gating group, unless --non-gating).
    #[arg(long)]
    create: bool,
    /// With --create: make the new group non-gating (it never holds producers back).
    #[arg(long, requires = "create")]
    non_gating: bool,
    /// Let another consumer take the group (queue files) if this one stops polling for this
    /// long (hung or stopped); without it the group is held while this process lives.
    #[arg(long, value_parser = duration::parse_duration, value_name = "DURATION")]
    session_timeout: Option<Duration>,
    /// Deliver records without checking their CRC32C (by default a damaged record stops the
    /// run with an error naming its offset).
    #[arg(long)]
    no_verify: bool,
    /// The options of a worker (--shared) and of a work group it creates.
    #[command(flatten)]
    work: work::WorkArgs,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: trust::TrustArgs,
}

/// Parses `--from`: `earliest`, `latest`, `committed`, an offset or a time.
pub fn parse_from(s: &str) -> Result<SeekTo, String> {
    match s {
        "earliest" => Ok(SeekTo::Earliest),
        "latest" => Ok(SeekTo::Latest),
        "committed" => Ok(SeekTo::Committed),
        _ => match s.parse() {
            Ok(offset) => Ok(SeekTo::Offset(offset)),
            Err(_) => crate::time::parse_time(s).map(SeekTo::Time).map_err(|e| {
                format!("expected earliest, latest, committed, an offset or a time; as a time: {e}")
            }),
        },
    }
}

/// Commit at least this often (in messages) while messages keep arriving.
const COMMIT_EVERY: u64 = 256;

/// Longest wait between two looks at the stop flag: how long a signal takes to end a run.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Opens the queue or topic, joins the group, and prints messages until the count, the idle
/// timeout, or (with `--follow`) forever.
pub fn run(args: &ConsumeArgs) -> Result<(), CliError> {
    let path = &args.path;
    let options = Subscribe {
        gating: !args.non_gating,
        start: if args.from == SeekTo::Latest {
            Start::Latest
        } else {
            Start::Earliest
        },
        session_timeout: args.session_timeout,
    };
    if let Some(option) = args.work.worker_only().filter(|_| args.shared.is_none()) {
        return Err(CliError::new(
            option,
            "settles a work group's records: it needs --shared GROUP",
        ));
    }
    let source: Box<dyn Source> = match (&args.shared, &args.group) {
        (Some(group), _) => Box::new(join_shared(args, group, options.start)?),
        (None, Some(group)) if Topic::is_topic(path) => {
            Box::new(join_topic(args, group, &options)?)
        }
        (None, Some(group)) => Box::new(join_queue(args, group, &options)?),
        (None, None) => return Err(CliError::new("consume", "--group or --shared is required")),
    };
    // A signal ends the run like a count or an idle timeout: what was printed is committed
    // and dropping the consumer releases its group, instead of leaving a dead holder.
    let stop = stop_on_signal()?;
    let mut reader = Reader {
        path: path.clone(),
        source,
        out: BufWriter::new(io::stdout().lock()),
        format: args.format,
        commit: args.commit,
        unflushed: BTreeMap::new(),
        since_commit: 0,
        stop,
    };
    let wait = if args.follow {
        None
    } else {
        Some(args.timeout)
    };
    let result = reader.run(args.count.unwrap_or(u64::MAX), wait);
    match result.and_then(|()| reader.flush_and_commit()) {
        Err(Stop::Closed) | Ok(()) => Ok(()),
        Err(Stop::Queue(e)) => Err(CliError::queue(path, e)),
        Err(Stop::Output(e)) => Err(CliError::new("stdout", e)),
    }
}

/// A flag that SIGINT and SIGTERM set, for a run to end cleanly at its next check (SeqCst:
/// see [`Reader::stop`]).
pub(crate) fn stop_on_signal() -> Result<Arc<AtomicBool>, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| CliError::new("signal handler", e))?;
    Ok(stop)
}

/// Joins work group `group` of a queue file as a worker. `--from` may only say where a new
/// group starts (`latest`); a work group's workers read from its oldest unsettled record.
fn join_shared(args: &ConsumeArgs, group: &str, start: Start) -> Result<work::Shared, CliError> {
    let path = &args.path;
    if !matches!(args.from, SeekTo::Committed | SeekTo::Latest) {
        return Err(CliError::new(
            "--from",
            format_args!(
                "a work group's workers read from its oldest unsettled record; with --shared,                  --from latest only says where a new group starts"
            ),
        ));
    }
    let queue = args.trust.open_queue(path)?;
    work::join(
        path,
        &queue,
        group,
        args.create,
        start,
        &args.work,
        &args.trust,
    )
}

/// Joins the group of a queue file and moves to `--from`.
fn join_queue(args: &ConsumeArgs, group: &str, options: &Subscribe) -> Result<Consumer, CliError> {
    let path = &args.path;
    let queue = args.trust.open_queue(path)?;
    if !args.create && !queue.groups().iter().any(|g| g.name == group) {
        return Err(missing_group(path, group));
    }
    let mut consumer = queue.subscribe(group, options).at(path)?;
    if args.from != SeekTo::Committed {
        let to = args.from;
        consumer.seek(to).at(path)?;
    }
    consumer.set_verify_checksums(!args.no_verify);
    Ok(consumer)
}

/// Joins the group of a topic as one more member: it reads the partitions it is assigned.
fn join_topic(
    args: &ConsumeArgs,
    group: &str,
    options: &Subscribe,
) -> Result<TopicConsumer, CliError> {
    let path = &args.path;
    let topic = args.trust.open_topic(path)?;
    let known = topic
        .info()
        .iter()
        .any(|p| p.groups.iter().any(|g| g.name == group));
    if !args.create && !known {
        return Err(missing_group(path, group));
    }
    // A member reads from each partition's committed offset; `latest` can only say where a
    // group created now starts.
    let creating_at_latest = args.from == SeekTo::Latest && !known;
    if args.from != SeekTo::Committed && !creating_at_latest {
        return Err(CliError::new(
            "--from",
            format_args!(
                "{} is a topic: its members start at each partition's committed offset \
                 (move it with `shmq group reset`; --from latest only applies to a new group)",
                path.display()
            ),
        ));
    }
    let member = MemberOptions {
        subscribe: *options,
        ..MemberOptions::default()
    };
    let mut consumer = topic.subscribe(group, &member).at(path)?;
    consumer.set_verify_checksums(!args.no_verify);
    Ok(consumer)
}

/// The error for a group that does not exist without `--create`.
fn missing_group(path: &Path, group: &str) -> CliError {
    CliError::new(
        path.display(),
        format_args!("consumer group {group:?} does not exist (add --create to create it)"),
    )
}

/// One message as `consume` prints it, from a queue or a topic.
#[derive(Clone, Copy)]
pub(crate) struct Record<'a> {
    /// The topic partition it came from (`None` for a queue file).
    pub(crate) partition: Option<u32>,
    /// Its offset (in its partition).
    pub(crate) offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub(crate) timestamp_ns: u64,
    /// Its key (topics only, when it has one).
    pub(crate) key: Option<&'a [u8]>,
    /// The payload.
    pub(crate) value: &'a [u8],
    /// How many times it was delivered, this time included (work groups only).
    pub(crate) deliveries: Option<u32>,
}

/// What `consume` reads from: a queue's consumer, a topic's group member or a work group's
/// worker.
pub(crate) trait Source {
    /// The next message, waiting up to `timeout`.
    fn next(&mut self, timeout: Option<Duration>) -> shmq::Result<Option<Record<'_>>>;
    /// Commits `offset` of `partition` (0 for a queue file) and everything before it.
    fn commit(&mut self, partition: u32, offset: u64) -> shmq::Result<()>;
    /// Settles every message handed out since the last call, once the output holding them
    /// is flushed (a work group's worker acks them); nothing for consumer groups, which
    /// commit instead.
    fn settle(&mut self) -> shmq::Result<()> {
        Ok(())
    }
    /// Whether, after reporting `Lagged`, the next read is past the records lost (consumer
    /// groups); a work group reports it again at the lost record on every poll.
    fn moves_past_lost_records(&self) -> bool {
        true
    }
    /// The consumer group.
    fn group(&self) -> &str;
}

impl Source for Consumer {
    fn next(&mut self, timeout: Option<Duration>) -> shmq::Result<Option<Record<'_>>> {
        Ok(self.poll(timeout)?.map(|m| Record {
            partition: None,
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            key: None,
            value: m.payload,
            deliveries: None,
        }))
    }
    fn commit(&mut self, _partition: u32, offset: u64) -> shmq::Result<()> {
        Consumer::commit(self, offset)
    }
    fn group(&self) -> &str {
        Consumer::group(self)
    }
}

impl Source for TopicConsumer {
    fn next(&mut self, timeout: Option<Duration>) -> shmq::Result<Option<Record<'_>>> {
        Ok(self.poll(timeout)?.map(|m| Record {
            partition: Some(m.partition),
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            key: m.key,
            value: m.value,
            deliveries: None,
        }))
    }
    /// A partition that moved to another member since its records were printed is not an
    /// error for a tail-like reader: the new holder delivers them again (at-least-once).
    fn commit(&mut self, partition: u32, offset: u64) -> shmq::Result<()> {
        match TopicConsumer::commit(self, partition, offset) {
            Err(shmq::Error::NotHeld { .. } | shmq::Error::TakenOver { .. }) => {
                errln!(
                    "shmq: group {:?}: partition {partition} moved to another member before \
                     offset {offset} was committed; that member delivers it again",
                    TopicConsumer::group(self)
                );
                Ok(())
            }
            r => r,
        }
    }
    fn group(&self) -> &str {
        TopicConsumer::group(self)
    }
}

/// Why reading stopped early.
pub(crate) enum Stop {
    /// Stdout was closed (e.g. `| head`): a normal end.
    Closed,
    /// Writing to stdout failed otherwise.
    Output(io::Error),
    /// The queue returned an error.
    Queue(shmq::Error),
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Stop::Closed
        } else {
            Stop::Output(e)
        }
    }
}

/// The group member and the output it prints to.
struct Reader<W: Write> {
    /// The queue file or topic, for warnings.
    path: PathBuf,
    /// The group member.
    source: Box<dyn Source>,
    /// Buffered stdout.
    out: W,
    /// How to print each message.
    format: Format,
    /// Whether to commit what was printed.
    commit: bool,
    /// Per partition (0 for a queue file), the offset of the last message written but not yet
    /// flushed and committed.
    unflushed: BTreeMap<u32, u64>,
    /// Messages written since the last commit.
    since_commit: u64,
    /// Set by a SIGINT or SIGTERM: stop, commit what was printed, release the group. Relaxed
    /// would do (the flag orders nothing else, and the poll it interrupts wakes within its
    /// slice); SeqCst on both sides keeps it obviously correct at no measurable cost.
    stop: Arc<AtomicBool>,
}

impl<W: Write> Reader<W> {
    /// Prints up to `limit` messages; gives up after `wait` without one (`None`: never).
    fn run(&mut self, limit: u64, wait: Option<Duration>) -> Result<(), Stop> {
        let mut printed = 0;
        while printed < limit && !self.stop.load(Ordering::SeqCst) {
            // Take what is ready; only before blocking, flush and commit what was printed.
            let ready = match self.source.next(Some(Duration::ZERO)) {
                Ok(Some(m)) => Some(write(&mut self.out, self.format, &m)?),
                Ok(None) => None,
                Err(e) => {
                    self.skip_lag(e)?;
                    continue;
                }
            };
            let (partition, offset) = match ready {
                Some(at) => at,
                None => {
                    self.flush_and_commit()?;
                    // Wait in slices, so that a SIGINT or SIGTERM is noticed between them.
                    let deadline = wait.map(|w| Instant::now() + w);
                    loop {
                        if self.stop.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                        let slice = left.map_or(STOP_CHECK, |l| l.min(STOP_CHECK));
                        match self.source.next(Some(slice)) {
                            Ok(Some(m)) => break write(&mut self.out, self.format, &m)?,
                            Ok(None) if left.is_some_and(|l| l <= slice) => return Ok(()),
                            Ok(None) => {}
                            Err(e) => self.skip_lag(e)?,
                        }
                    }
                }
            };
            printed += 1;
            self.unflushed.insert(partition, offset);
            self.since_commit += 1;
            if self.since_commit >= COMMIT_EVERY {
                self.flush_and_commit()?;
            }
        }
        Ok(())
    }

    /// A lapped consumer warns and carries on; any other error ends the run, and so does a
    /// lapped source that does not move past the records it lost.
    fn skip_lag(&mut self, e: shmq::Error) -> Result<(), Stop> {
        match e {
            shmq::Error::Lagged { lost } if self.source.moves_past_lost_records() => {
                errln!(
                    "shmq: {}: group {:?} fell behind: {lost} messages were overwritten before it read them",
                    self.path.display(),
                    self.source.group()
                );
                Ok(())
            }
            e => Err(Stop::Queue(e)),
        }
    }

    /// Flushes the output, then (with `--commit`) commits everything written so far, or
    /// settles it (`--shared`).
    fn flush_and_commit(&mut self) -> Result<(), Stop> {
        self.out.flush()?;
        self.source.settle().map_err(Stop::Queue)?;
        for (partition, offset) in std::mem::take(&mut self.unflushed) {
            if self.commit {
                self.source.commit(partition, offset).map_err(Stop::Queue)?;
            }
        }
        self.since_commit = 0;
        Ok(())
    }
}

/// Writes one message in `format`; returns its partition (0 for a queue file) and offset.
pub(crate) fn write<W: Write>(
    out: &mut W,
    format: Format,
    m: &Record<'_>,
) -> io::Result<(u32, u64)> {
    match format {
        Format::Text => {
            out.write_all(m.value)?;
            out.write_all(b"\n")?;
        }
        Format::Hex => {
            if let Some(p) = m.partition {
                write!(out, "{p}:")?;
            }
            write!(out, "{}", m.offset)?;
            if let Some(d) = m.deliveries {
                write!(out, "#{d}")?;
            }
            write!(out, " ")?;
            if let Some(key) = m.key {
                write!(out, "{}=", hex(key))?;
            }
            writeln!(out, "{}", hex(m.value))?;
        }
        Format::Json => {
            let mut obj = serde_json::json!({
                "offset": m.offset,
                "timestamp_ns": m.timestamp_ns,
            });
            if let Some(p) = m.partition {
                obj["partition"] = p.into();
            }
            if let Some(d) = m.deliveries {
                obj["deliveries"] = d.into();
            }
            if let Some(key) = m.key {
                put_bytes(&mut obj, "key", key);
            }
            put_bytes(&mut obj, "payload", m.value);
            writeln!(out, "{obj}")?;
        }
    }
    Ok((m.partition.unwrap_or(0), m.offset))
}

/// Sets `obj[name]` to `bytes` as a string if they are UTF-8, else `obj[name_hex]` to hex.
pub(crate) fn put_bytes(obj: &mut serde_json::Value, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => obj[name] = s.into(),
        Err(_) => obj[format!("{name}_hex")] = hex(bytes).into(),
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from() {
        assert_eq!(parse_from("latest"), Ok(SeekTo::Latest));
        assert_eq!(parse_from("committed"), Ok(SeekTo::Committed));
        assert_eq!(parse_from("42"), Ok(SeekTo::Offset(42)));
        assert_eq!(
            parse_from("1970-01-01T00:00:03Z"),
            Ok(SeekTo::Time(3_000_000_000))
        );
        assert!(parse_from("-1").is_err());
    }

    #[test]
    fn formats_messages() {
        let m = Record {
            partition: None,
            offset: 7,
            timestamp_ns: 42,
            key: None,
            value: b"hi",
            deliveries: None,
        };
        let mut out = Vec::new();
        for f in [Format::Text, Format::Hex, Format::Json] {
            assert_eq!(write(&mut out, f, &m).unwrap(), (0, 7));
        }
        let bad = Record {
            value: &[0xff],
            ..m
        };
        write(&mut out, Format::Json, &bad).unwrap();
        let keyed = Record {
            partition: Some(3),
            key: Some(b"k"),
            ..m
        };
        assert_eq!(write(&mut out, Format::Hex, &keyed).unwrap(), (3, 7));
        write(&mut out, Format::Json, &keyed).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hi\n7 6869\n{\"offset\":7,\"payload\":\"hi\",\"timestamp_ns\":42}\n\
             {\"offset\":7,\"payload_hex\":\"ff\",\"timestamp_ns\":42}\n\
             3:7 6b=6869\n\
             {\"key\":\"k\",\"offset\":7,\"partition\":3,\"payload\":\"hi\",\"timestamp_ns\":42}\n"
        );
    }

    #[test]
    fn a_work_groups_records_carry_their_delivery() {
        let m = Record {
            partition: None,
            offset: 7,
            timestamp_ns: 42,
            key: None,
            value: b"hi",
            deliveries: Some(2),
        };
        let mut out = Vec::new();
        for f in [Format::Text, Format::Hex, Format::Json] {
            assert_eq!(write(&mut out, f, &m).unwrap(), (0, 7));
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hi\n7#2 6869\n{\"deliveries\":2,\"offset\":7,\"payload\":\"hi\",\"timestamp_ns\":42}\n"
        );
    }
}
