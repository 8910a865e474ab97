//! `shmq publish`: one message per line of stdin, or synthetic load with `--count`.

use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use shmq::{Producer, Queue};

use crate::error::CliError;
use crate::fmt::{count, rate};
use crate::size::format_size;
use crate::PublishArgs;

/// Synthetic messages between progress-bar updates.
const PROGRESS_EVERY: u64 = 4096;

/// Without `--timeout`, how long a publish waits for room before saying why it is waiting.
const NOTICE_AFTER: Duration = Duration::from_secs(1);

/// Opens the queue and publishes.
pub fn run(args: &PublishArgs) -> Result<(), CliError> {
    let queue = Queue::open(&args.path).map_err(|e| CliError::queue(&args.path, e))?;
    let mut producer = queue
        .producer()
        .map_err(|e| CliError::queue(&args.path, e))?;
    producer.set_timeout(Some(args.timeout.unwrap_or(NOTICE_AFTER)));
    let mut sender = Sender {
        queue: &queue,
        producer,
        patient: args.timeout.is_none(),
        told: false,
    };
    match (args.count, &args.file) {
        (Some(n), _) => synthetic(&mut sender, n, args.size),
        (None, Some(file)) => {
            let f = std::fs::File::open(file).map_err(|e| CliError::io(file, "open", e))?;
            lines(
                &mut sender,
                io::BufReader::new(f),
                &file.display().to_string(),
            )
        }
        (None, None) => lines(&mut sender, io::stdin().lock(), "stdin"),
    }
}

/// A producer that, when it has no `--timeout`, waits for room indefinitely but says once on
/// stderr which group it is waiting for.
struct Sender<'q> {
    /// The open queue.
    queue: &'q Queue,
    /// Its producer.
    producer: Producer,
    /// No `--timeout` was given: wait as long as it takes.
    patient: bool,
    /// The waiting notice was printed.
    told: bool,
}

impl Sender<'_> {
    /// Publishes `payload` and returns its offset. A timed-out publish published nothing, so
    /// retrying it is safe.
    fn publish(&mut self, payload: &[u8], line: Option<(&str, u64)>) -> Result<u64, CliError> {
        loop {
            match self.producer.publish(payload) {
                Err(shmq::Error::Timeout) if self.patient => {
                    if !self.told {
                        self.told = true;
                        errln!(
                            "shmq: {}: waiting for room{} (Ctrl-C to stop)",
                            self.queue.path().display(),
                            slowest_group(self.queue)
                        );
                    }
                }
                result => return result.map_err(|e| publish_error(self.queue, e, line)),
            }
        }
    }
}

/// Publishes each line of `input` (without its line ending) and prints its offset; `source`
/// names the input in errors.
fn lines(sender: &mut Sender<'_>, mut input: impl BufRead, source: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    let mut line = Vec::new();
    for number in 1u64.. {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError::new(source, e))?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        let offset = sender.publish(&line, Some((source, number)))?;
        if let Err(e) = writeln!(out, "{offset}") {
            return stdout_closed(e);
        }
    }
    Ok(())
}

/// Publishes `n` messages of `size` bytes and prints a summary.
fn synthetic(sender: &mut Sender<'_>, n: u64, size: u64) -> Result<(), CliError> {
    let max = u64::from(sender.queue.geometry().max_message);
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
    let mut range = None;
    for seq in 0..n {
        let head = payload.len().min(8);
        payload[..head].copy_from_slice(&seq.to_le_bytes()[..head]);
        let offset = sender.publish(&payload, None)?;
        range = Some((range.map_or(offset, |(first, _)| first), offset));
        if seq % PROGRESS_EVERY == 0 {
            bar.set_position(seq);
        }
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let offsets = range.map_or("none".to_string(), |(a, b)| format!("{a}..={b}"));
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

/// Describes a failed publish; a full queue names the gating group holding it back.
fn publish_error(queue: &Queue, e: shmq::Error, line: Option<(&str, u64)>) -> CliError {
    let path = queue.path();
    let at = line.map_or(String::new(), |(source, n)| format!("{source} line {n}: "));
    match e {
        shmq::Error::Full | shmq::Error::Timeout => {
            let why = slowest_group(queue);
            let what = if matches!(e, shmq::Error::Full) {
                "queue is full"
            } else {
                "timed out waiting for room in the queue"
            };
            CliError::new(path.display(), format_args!("{at}{what}{why}"))
        }
        e => CliError::new(path.display(), format_args!("{at}{}", strip_path(path, e))),
    }
}

/// "; the slowest gating group "g" is N messages behind", or nothing without gating groups.
fn slowest_group(queue: &Queue) -> String {
    let groups = queue.groups();
    let tail = queue.tail_offset();
    match groups
        .into_iter()
        .filter(|g| g.gating)
        .min_by_key(|g| g.committed)
    {
        Some(g) => format!(
            ": the slowest gating group {:?} is {} messages behind",
            g.name,
            count(tail.saturating_sub(g.committed))
        ),
        None => String::new(),
    }
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
