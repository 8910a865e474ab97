//! `shmq tail`: prints a queue's or topic's messages without a consumer group.
//!
//! A tail creates no group, holds no lease and stores nothing in the file, so a forgotten
//! tail never holds producers back and leaves `shmq info` as it was. It may be overrun: it
//! then warns how many messages it missed and goes on at the oldest one still in the ring.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use shmq::{SeekTo, TailReader, Topic};

use crate::consume::{parse_from, Format};
use crate::consume::{write, Record, Stop};
use crate::error::{At, CliError};
use crate::trust::TrustArgs;

/// Longest single wait on one partition of a topic before the others are looked at again.
const TOPIC_ROUND: Duration = Duration::from_millis(10);

/// Arguments of `shmq tail`.
#[derive(Args)]
pub struct TailArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// Where to start: earliest, latest, an offset (topics: with --partition), or a time: RFC
    /// 3339 (2026-12-01T07:00:00Z) or now-DURATION (now-15m).
    #[arg(long, default_value = "earliest", value_parser = parse_from, value_name = "WHERE")]
    from: SeekTo,
    /// Topics: read this partition only.
    #[arg(long)]
    partition: Option<u32>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Keep waiting for new messages until interrupted (or --count is reached).
    #[arg(long, conflicts_with = "timeout")]
    follow: bool,
    /// Output format (as for `shmq consume`).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop once no message arrives for this long.
    #[arg(long, default_value = "0s", value_parser = crate::duration::parse_duration, value_name = "DURATION")]
    timeout: Duration,
    /// Print records without checking their CRC32C.
    #[arg(long)]
    no_verify: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// One reader per partition read (one for a queue file): its partition (`None` for a queue
/// file), its file and the reader.
type Readers = Vec<(Option<u32>, PathBuf, TailReader)>;

/// Opens the queue or topic and prints its messages from `--from` on.
pub fn run(args: &TailArgs) -> Result<(), CliError> {
    let path = &args.path;
    let from = match args.from {
        SeekTo::Committed => {
            return Err(CliError::new(
                "--from committed",
                "shmq tail reads without a consumer group, so there is no committed offset \
                 (use `shmq consume --group GROUP` to read from a group's committed offset)",
            ))
        }
        from => from,
    };
    let mut readers: Readers = Vec::new();
    if Topic::is_topic(path) {
        let topic = args.trust.open_topic(path)?;
        let count = topic.partition_count();
        let chosen: Vec<u32> = match args.partition {
            Some(p) if p >= count => {
                return Err(CliError::new(
                    "--partition",
                    format_args!(
                        "{} has partitions 0 to {}, not {p}",
                        path.display(),
                        count - 1
                    ),
                ))
            }
            Some(p) => vec![p],
            None if matches!(from, SeekTo::Offset(_)) => {
                return Err(CliError::new(
                    "--from",
                    format_args!(
                        "{} is a topic: an offset names a message of one partition \
                         (add --partition N)",
                        path.display()
                    ),
                ))
            }
            None => (0..count).collect(),
        };
        for p in chosen {
            let queue = &topic.partitions()[p as usize];
            let reader = queue.tail_reader(from).at(queue.path())?;
            readers.push((Some(p), queue.path().to_path_buf(), reader));
        }
    } else {
        if args.partition.is_some() {
            return Err(CliError::new(
                "--partition",
                format_args!(
                    "{} is a queue file, not a topic: it has no partitions",
                    path.display()
                ),
            ));
        }
        let queue = args.trust.open_queue(path)?;
        let reader = queue.tail_reader(from).at(path)?;
        readers.push((None, path.clone(), reader));
    }
    for (_, _, r) in &mut readers {
        r.set_verify_checksums(!args.no_verify);
    }
    let mut tail = Tail {
        path: path.clone(),
        readers,
        out: BufWriter::new(io::stdout().lock()),
        format: args.format,
    };
    let wait = if args.follow {
        None
    } else {
        Some(args.timeout)
    };
    let result = tail.run(args.count.unwrap_or(u64::MAX), wait);
    match result.and_then(|()| Ok(tail.out.flush()?)) {
        Err(Stop::Closed) | Ok(()) => Ok(()),
        Err(Stop::Queue(e)) => Err(CliError::queue(path, e)),
        Err(Stop::Output(e)) => Err(CliError::new("stdout", e)),
    }
}

/// The readers and the output they print to.
struct Tail<W: Write> {
    /// The queue file or topic, for warnings.
    path: PathBuf,
    /// One reader per partition read.
    readers: Readers,
    /// Buffered stdout.
    out: W,
    /// How to print each message.
    format: Format,
}

impl<W: Write> Tail<W> {
    /// Prints up to `limit` messages, taking the partitions in turn; gives up after `wait`
    /// without one (`None`: never).
    fn run(&mut self, limit: u64, wait: Option<Duration>) -> Result<(), Stop> {
        let mut printed = 0;
        let mut idle_since = Instant::now();
        while printed < limit {
            let mut round = 0;
            for i in 0..self.readers.len() {
                if printed + round < limit && self.print_next(i, Some(Duration::ZERO))? {
                    round += 1;
                }
            }
            printed += round;
            if round > 0 {
                idle_since = Instant::now();
                continue;
            }
            self.out.flush()?;
            let left = wait.map(|w| w.saturating_sub(idle_since.elapsed()));
            if left == Some(Duration::ZERO) {
                return Ok(());
            }
            // One queue file: sleep in its reader; a topic: wait on its first partition for a
            // short while, then look at all of them again.
            let slice = if self.readers.len() == 1 {
                left
            } else {
                Some(left.map_or(TOPIC_ROUND, |l| l.min(TOPIC_ROUND)))
            };
            if self.print_next(0, slice)? {
                printed += 1;
                idle_since = Instant::now();
            }
        }
        Ok(())
    }

    /// Prints the next message of reader `i` if one comes within `timeout`; a reader that was
    /// overrun warns and reports nothing printed.
    fn print_next(&mut self, i: usize, timeout: Option<Duration>) -> Result<bool, Stop> {
        let (partition, file, reader) = &mut self.readers[i];
        match reader.poll(timeout) {
            Ok(Some(m)) => {
                let (key, value) = match partition {
                    Some(_) => TailReader::split_key(file, &m).map_err(Stop::Queue)?,
                    None => (None, m.payload),
                };
                let record = Record {
                    partition: *partition,
                    offset: m.offset,
                    timestamp_ns: m.timestamp_ns,
                    key,
                    value,
                    deliveries: None,
                };
                write(&mut self.out, self.format, &record)?;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(shmq::Error::Lagged { lost }) => {
                let at = partition.map_or(String::new(), |p| format!(" partition {p}:"));
                errln!(
                    "shmq: {}:{at} the tail fell behind: {lost} messages were overwritten \
                     before it read them",
                    self.path.display()
                );
                Ok(false)
            }
            Err(e) => Err(Stop::Queue(e)),
        }
    }
}
