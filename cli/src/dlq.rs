//! `shmq dlq list|replay|purge`: a work group's dead-letter queue, for operators.
//!
//! A dead-letter queue is an ordinary queue file whose records are dead-letter records
//! (FORMAT.md, "Dead-letter record"). Replaying reads them as the non-gating consumer group
//! [`REPLAY_GROUP`] of the dead-letter queue and commits each one after its original payload
//! is published to the target, so a replay that stops resumes where it stopped. The ring is
//! append-only: purging commits that group at the tail, so `list` and `replay` start after
//! the records purged, and producers overwrite them as the ring wraps. Being non-gating, the
//! group never holds the dead-lettering workers back (a full dead-letter queue overwrites its
//! oldest records as it would without the group).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use shmq::{Consumer, DeadLetter, DeadReason, Queue, SeekTo, Start, Subscribe};

use crate::consume::put_bytes;
use crate::error::{At, CliError};
use crate::fmt::count;
use crate::info;
use crate::time::format_time;
use crate::trust::TrustArgs;

/// The consumer group of a dead-letter queue that `replay` reads as and `purge` moves.
pub const REPLAY_GROUP: &str = "shmq-dlq-replay";

/// Characters of a payload shown in `dlq list`'s table.
const PREVIEW_CHARS: usize = 40;

/// Longest wait for room in the target between two looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Records replayed between progress-bar updates.
const PROGRESS_EVERY: u64 = 256;

/// Arguments of `shmq dlq`.
#[derive(Args)]
pub struct DlqArgs {
    /// What to do with the dead-letter queue.
    #[command(subcommand)]
    action: Action,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// The `dlq` subcommands.
#[derive(Subcommand)]
enum Action {
    /// List the dead letters not yet replayed or purged: source queue and offset, reason,
    /// deliveries, when, and the start of the payload.
    List {
        /// The dead-letter queue file.
        path: PathBuf,
        /// Every dead letter still in the ring, also those replayed or purged.
        #[arg(long)]
        all: bool,
        /// Print JSON (with the whole payload) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Publish the original payload of each dead letter not yet replayed or purged to a
    /// queue; resumes where a stopped replay stopped (consumer group `shmq-dlq-replay`).
    Replay {
        /// The dead-letter queue file.
        path: PathBuf,
        /// The queue file to publish the payloads to (usually the source queue).
        #[arg(long, value_name = "QUEUE")]
        to: PathBuf,
    },
    /// Mark every dead letter as handled: `list` and `replay` start after them (the records
    /// stay in the ring until producers overwrite them).
    Purge {
        /// The dead-letter queue file.
        path: PathBuf,
    },
}

/// Runs a `dlq` subcommand.
pub fn run(args: &DlqArgs) -> Result<(), CliError> {
    match &args.action {
        Action::List { path, all, json } => list(&args.trust, path, *all, *json),
        Action::Replay { path, to } => replay(&args.trust, path, to),
        Action::Purge { path } => purge(&args.trust, path),
    }
}

/// One record of the dead-letter queue, in the shape of `list --json`.
#[derive(Serialize)]
struct Letter {
    /// Its offset in the dead-letter queue.
    offset: u64,
    /// The fields of the dead letter, or why the record is not one.
    #[serde(flatten)]
    body: Body,
}

/// What a record of the dead-letter queue holds.
#[derive(Serialize)]
#[serde(untagged)]
enum Body {
    /// A dead letter.
    Letter {
        /// The source queue file.
        source: String,
        /// The record's offset there.
        source_offset: u64,
        /// `rejected`, `max_deliveries` or `expired`.
        reason: &'static str,
        /// How many times it was delivered.
        deliveries: u32,
        /// When it was published, ns since the Unix epoch.
        timestamp_ns: u64,
        /// When it was dead-lettered, ns since the Unix epoch.
        dead_at_ns: u64,
        /// The original payload: `payload` if UTF-8, else `payload_hex`.
        #[serde(flatten)]
        payload: serde_json::Value,
    },
    /// A record that is not a dead letter.
    Malformed {
        /// Why it is not.
        error: String,
    },
}

/// The name of a reason in the output.
fn reason_name(reason: DeadReason) -> &'static str {
    match reason {
        DeadReason::Rejected => "rejected",
        DeadReason::MaxDeliveries => "max_deliveries",
        DeadReason::Expired => "expired",
    }
}

/// The options of the replay group: non-gating, from the oldest record.
fn replay_options() -> Subscribe {
    Subscribe {
        gating: false,
        start: Start::Earliest,
        session_timeout: None,
    }
}

/// The replay group's committed offset, if the group exists.
fn replayed_to(queue: &Queue) -> Option<u64> {
    queue
        .groups()
        .into_iter()
        .find(|g| g.name == REPLAY_GROUP)
        .map(|g| g.committed)
}

/// Prints the dead letters from the replay group's committed offset (or all with `all`).
fn list(trust: &TrustArgs, path: &Path, all: bool, json: bool) -> Result<(), CliError> {
    let queue = trust.open_queue(path)?;
    let oldest = queue.oldest_offset();
    let from = match replayed_to(&queue) {
        Some(c) if !all => c.max(oldest),
        _ => oldest,
    };
    let end = queue.tail_offset();
    let mut reader = queue.tail_reader(SeekTo::Offset(from)).at(path)?;
    let mut letters = Vec::new();
    while let Some(m) = reader.poll(Some(Duration::ZERO)).at(path)? {
        if m.offset >= end {
            break;
        }
        letters.push(Letter {
            offset: m.offset,
            body: body(m.payload),
        });
    }
    let text = if json {
        info::to_json(path, &letters)?
    } else if letters.is_empty() {
        format!("{}: no dead letters", path.display())
    } else {
        table(&letters)
    };
    info::print(&text)
}

/// The fields of the dead letter `payload`, or why it is not one.
fn body(payload: &[u8]) -> Body {
    match DeadLetter::parse(payload) {
        Ok(d) => {
            let mut bytes = serde_json::json!({});
            put_bytes(&mut bytes, "payload", d.payload);
            Body::Letter {
                source: d.source.to_string(),
                source_offset: d.offset,
                reason: reason_name(d.reason),
                deliveries: d.deliveries,
                timestamp_ns: d.timestamp_ns,
                dead_at_ns: d.dead_at_ns,
                payload: bytes,
            }
        }
        Err(e) => Body::Malformed {
            error: e.to_string(),
        },
    }
}

/// The first [`PREVIEW_CHARS`] characters of a payload, escaped, with `…` if cut.
fn preview(payload: &serde_json::Value) -> String {
    let text = match (payload.get("payload"), payload.get("payload_hex")) {
        (Some(serde_json::Value::String(s)), _) => s.escape_debug().to_string(),
        (_, Some(serde_json::Value::String(h))) => format!("hex {h}"),
        _ => String::new(),
    };
    let mut shown: String = text.chars().take(PREVIEW_CHARS).collect();
    if text.chars().count() > PREVIEW_CHARS {
        shown.push('…');
    }
    shown
}

/// One row per dead letter.
fn table(letters: &[Letter]) -> String {
    let mut rows = vec![[
        "OFFSET",
        "SOURCE",
        "SOURCE OFFSET",
        "REASON",
        "DELIVERIES",
        "DEAD AT",
        "PAYLOAD",
    ]
    .map(String::from)];
    for l in letters {
        let row = match &l.body {
            Body::Letter {
                source,
                source_offset,
                reason,
                deliveries,
                dead_at_ns,
                payload,
                ..
            } => [
                l.offset.to_string(),
                source.clone(),
                source_offset.to_string(),
                reason.replace('_', " "),
                deliveries.to_string(),
                format_time(*dead_at_ns),
                preview(payload),
            ],
            Body::Malformed { error } => [
                l.offset.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("not a dead letter: {error}"),
            ],
        };
        rows.push(row);
    }
    info::render_rows(&rows)
}

/// Publishes the original payload of each dead letter the replay group has not committed to
/// `to`, committing each after its publish: at least once, resumable. SIGINT or SIGTERM stop
/// it between two records.
fn replay(trust: &TrustArgs, path: &Path, to: &Path) -> Result<(), CliError> {
    let queue = trust.open_queue(path)?;
    let target = trust.open_queue(to)?;
    if same_file(path, to) {
        return Err(CliError::new(
            format_args!("--to {}", to.display()),
            "is the dead-letter queue itself",
        ));
    }
    let mut consumer = queue.subscribe(REPLAY_GROUP, &replay_options()).at(path)?;
    let mut producer = target.producer().at(to)?;
    let end = queue.tail_offset();
    let start = consumer.committed();
    // On stderr, and only when it is a terminal (indicatif hides it otherwise).
    let bar = indicatif::ProgressBar::new(end.saturating_sub(start))
        .with_style(crate::bar::style("magenta"))
        .with_prefix("replay");
    let (mut replayed, mut skipped) = (0u64, 0u64);
    let mut first_last: Option<(u64, u64)> = None;
    // A signal stops the replay between two records: each one replayed is committed.
    let stop = crate::consume::stop_on_signal()?;
    let result = loop {
        // SeqCst: see `consume::stop_on_signal`.
        if stop.load(Ordering::SeqCst) {
            break Ok(true);
        }
        match next_letter(&mut consumer, path, end) {
            Ok(None) => break Ok(false),
            Ok(Some((offset, payload))) => {
                match DeadLetter::parse(&payload) {
                    Ok(letter) => match publish(&mut producer, letter.payload, &stop, to) {
                        Ok(true) => replayed += 1,
                        Ok(false) => break Ok(true),
                        Err(e) => break Err(CliError::queue(to, e)),
                    },
                    Err(e) => {
                        errln!(
                            "shmq: {}: offset {offset} is not a dead letter ({e}); skipped",
                            path.display()
                        );
                        skipped += 1;
                    }
                }
                if let Err(e) = consumer.commit(offset) {
                    break Err(CliError::queue(path, e));
                }
                first_last = Some((first_last.map_or(offset, |(a, _)| a), offset));
                if (replayed + skipped).is_multiple_of(PROGRESS_EVERY) {
                    bar.set_position(offset.saturating_sub(start));
                }
            }
            Err(e) => break Err(e),
        }
    };
    bar.finish_and_clear();
    let done = match first_last {
        Some((a, b)) => format!(
            "replayed {} dead letters (offsets {a} to {b} of {}) to {}{}",
            count(replayed),
            path.display(),
            to.display(),
            if skipped > 0 {
                format!(
                    "; skipped {} records that are not dead letters",
                    count(skipped)
                )
            } else {
                String::new()
            }
        ),
        None => format!("{}: nothing to replay", path.display()),
    };
    match result {
        Ok(true) => info::print(&format!(
            "{done}; stopped by a signal: `shmq dlq replay` resumes after them"
        )),
        Ok(false) => info::print(&done),
        Err(e) => Err(e.with_note(format_args!(
            "{done} before it; `shmq dlq replay` resumes after them"
        ))),
    }
}

/// Publishes `payload`, waiting for room in slices of [`STOP_CHECK`] so that a signal (`stop`)
/// ends the wait; says once on stderr what it waits for. `false`: stopped, nothing published.
fn publish(
    producer: &mut shmq::Producer,
    payload: &[u8],
    stop: &AtomicBool,
    to: &Path,
) -> shmq::Result<bool> {
    producer.set_timeout(Some(STOP_CHECK));
    let mut told = false;
    loop {
        match producer.publish(payload) {
            Ok(_) => return Ok(true),
            // SeqCst: see `consume::stop_on_signal`.
            Err(shmq::Error::Timeout { .. }) if stop.load(Ordering::SeqCst) => return Ok(false),
            Err(shmq::Error::Timeout { blocked_by, .. }) => {
                if !told {
                    told = true;
                    crate::publish::waiting_for_room(to, blocked_by);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The next record below `end` as its offset and a copy of its payload; `None` when there is
/// none. A group overrun by producers warns how many records it lost and goes on.
fn next_letter(
    consumer: &mut Consumer,
    path: &Path,
    end: u64,
) -> Result<Option<(u64, Vec<u8>)>, CliError> {
    loop {
        match consumer.poll(Some(Duration::ZERO)) {
            Ok(Some(m)) if m.offset < end => return Ok(Some((m.offset, m.payload.to_vec()))),
            Ok(_) => return Ok(None),
            Err(shmq::Error::Lagged { lost }) => errln!(
                "shmq: {}: {lost} dead letters were overwritten before they were replayed",
                path.display()
            ),
            Err(e) => return Err(CliError::queue(path, e)),
        }
    }
}

/// Whether `a` and `b` name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Commits the replay group at the tail: every dead letter so far counts as handled.
fn purge(trust: &TrustArgs, path: &Path) -> Result<(), CliError> {
    let queue = trust.open_queue(path)?;
    if replayed_to(&queue).is_none() {
        drop(queue.subscribe(REPLAY_GROUP, &replay_options()).at(path)?);
    }
    let before = replayed_to(&queue).unwrap_or(0).max(queue.oldest_offset());
    let after = queue.reset_group(REPLAY_GROUP, SeekTo::Latest).at(path)?;
    let text = if after > before {
        format!(
            "{}: purged {} dead letters (offsets {before} to {}); `dlq list` and `dlq replay` \
             start at {after}",
            path.display(),
            count(after - before),
            after - 1
        )
    } else {
        format!("{}: nothing to purge", path.display())
    };
    info::print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_short_and_escaped() {
        let mut v = serde_json::json!({});
        put_bytes(&mut v, "payload", "a\nb".as_bytes());
        assert_eq!(preview(&v), "a\\nb");
        let mut v = serde_json::json!({});
        put_bytes(&mut v, "payload", &[b'x'; 50]);
        assert_eq!(preview(&v), format!("{}…", "x".repeat(40)));
        let mut v = serde_json::json!({});
        put_bytes(&mut v, "payload", &[0xff]);
        assert_eq!(preview(&v), "hex ff");
    }

    #[test]
    fn a_record_that_is_not_a_dead_letter_says_why() {
        let Body::Malformed { error } = body(b"hello") else {
            panic!("parsed");
        };
        assert!(error.contains("too short"), "{error}");
    }
}
