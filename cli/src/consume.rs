//! `shmq consume`: reads messages as the member of a consumer group and prints them.
//!
//! With `--commit`, output is flushed before each commit, so a committed message has reached
//! the reader (at-least-once: a crash between flush and commit prints it again next time).

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use shmq::{Consumer, Message, Queue, SeekTo, Start, Subscribe};

use crate::error::CliError;
use crate::{ConsumeArgs, Format, StartAt};

/// Commit at least this often (in messages) while messages keep arriving.
const COMMIT_EVERY: u64 = 256;

/// Opens the queue, joins the group, and prints messages until the count, the idle timeout,
/// or (with `--follow`) forever.
pub fn run(args: &ConsumeArgs) -> Result<(), CliError> {
    let path = &args.path;
    let queue = Queue::open(path).map_err(|e| CliError::queue(path, e))?;
    if !args.create && !queue.groups().iter().any(|g| g.name == args.group) {
        return Err(CliError::new(
            path.display(),
            format_args!(
                "consumer group {:?} does not exist (add --create to create it)",
                args.group
            ),
        ));
    }
    let options = Subscribe {
        gating: !args.non_gating,
        start: if args.from == StartAt::Latest {
            Start::Latest
        } else {
            Start::Earliest
        },
    };
    let mut consumer = queue
        .subscribe(&args.group, &options)
        .map_err(|e| CliError::queue(path, e))?;
    let seek = match args.from {
        StartAt::Committed => None,
        StartAt::Earliest => Some(SeekTo::Earliest),
        StartAt::Latest => Some(SeekTo::Latest),
        StartAt::Offset(x) => Some(SeekTo::Offset(x)),
        StartAt::Time(ns) => Some(SeekTo::Time(ns)),
    };
    if let Some(to) = seek {
        consumer.seek(to).map_err(|e| CliError::queue(path, e))?;
    }
    let mut reader = Reader {
        path: path.clone(),
        consumer,
        out: BufWriter::new(io::stdout().lock()),
        format: args.format,
        commit: args.commit,
        unflushed: None,
        since_commit: 0,
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

/// Why reading stopped early.
enum Stop {
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

/// The consumer and the output it prints to.
struct Reader<W: Write> {
    /// The queue file, for warnings.
    path: PathBuf,
    /// The group member.
    consumer: Consumer,
    /// Buffered stdout.
    out: W,
    /// How to print each message.
    format: Format,
    /// Whether to commit what was printed.
    commit: bool,
    /// Offset of the last message written but not yet flushed and committed.
    unflushed: Option<u64>,
    /// Messages written since the last commit.
    since_commit: u64,
}

impl<W: Write> Reader<W> {
    /// Prints up to `limit` messages; gives up after `wait` without one (`None`: never).
    fn run(&mut self, limit: u64, wait: Option<Duration>) -> Result<(), Stop> {
        let mut printed = 0;
        while printed < limit {
            // Take what is ready; only before blocking, flush and commit what was printed.
            let ready = match self.consumer.poll(Some(Duration::ZERO)) {
                Ok(Some(m)) => Some(write(&mut self.out, self.format, &m)?.offset),
                Ok(None) => None,
                Err(e) => {
                    self.skip_lag(e)?;
                    continue;
                }
            };
            let offset = match ready {
                Some(offset) => offset,
                None => {
                    self.flush_and_commit()?;
                    match self.consumer.poll(wait) {
                        Ok(Some(m)) => write(&mut self.out, self.format, &m)?.offset,
                        Ok(None) => return Ok(()),
                        Err(e) => {
                            self.skip_lag(e)?;
                            continue;
                        }
                    }
                }
            };
            printed += 1;
            self.unflushed = Some(offset);
            self.since_commit += 1;
            if self.since_commit >= COMMIT_EVERY {
                self.flush_and_commit()?;
            }
        }
        Ok(())
    }

    /// A lapped consumer warns and carries on; any other error ends the run.
    fn skip_lag(&mut self, e: shmq::Error) -> Result<(), Stop> {
        match e {
            shmq::Error::Lagged { lost } => {
                errln!(
                    "shmq: {}: group {:?} fell behind: {lost} messages were overwritten before it read them",
                    self.path.display(),
                    self.consumer.group()
                );
                Ok(())
            }
            e => Err(Stop::Queue(e)),
        }
    }

    /// Flushes the output, then (with `--commit`) commits everything written so far.
    fn flush_and_commit(&mut self) -> Result<(), Stop> {
        self.out.flush()?;
        if let Some(offset) = self.unflushed.take() {
            if self.commit {
                self.consumer.commit(offset).map_err(Stop::Queue)?;
            }
        }
        self.since_commit = 0;
        Ok(())
    }
}

/// Writes one message in `format`; returns it for its offset.
fn write<'m, W: Write>(out: &mut W, format: Format, m: &Message<'m>) -> io::Result<Message<'m>> {
    match format {
        Format::Text => {
            out.write_all(m.payload)?;
            out.write_all(b"\n")?;
        }
        Format::Hex => writeln!(out, "{} {}", m.offset, hex(m.payload))?,
        Format::Json => {
            let mut obj = serde_json::json!({
                "offset": m.offset,
                "timestamp_ns": m.timestamp_ns,
            });
            match std::str::from_utf8(m.payload) {
                Ok(s) => obj["payload"] = s.into(),
                Err(_) => obj["payload_hex"] = hex(m.payload).into(),
            }
            writeln!(out, "{obj}")?;
        }
    }
    Ok(*m)
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
    fn formats_messages() {
        let m = Message {
            offset: 7,
            timestamp_ns: 42,
            payload: b"hi",
        };
        let mut out = Vec::new();
        for f in [Format::Text, Format::Hex, Format::Json] {
            write(&mut out, f, &m).unwrap();
        }
        let bad = Message {
            payload: &[0xff],
            ..m
        };
        write(&mut out, Format::Json, &bad).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "hi\n7 6869\n{\"offset\":7,\"payload\":\"hi\",\"timestamp_ns\":42}\n\
             {\"offset\":7,\"payload_hex\":\"ff\",\"timestamp_ns\":42}\n"
        );
    }
}
