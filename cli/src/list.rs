//! `shmq list DIR`: the queue files and topics in a directory, one row each.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;
use shmq::{Corruption, Queue, Topic};

use crate::error::CliError;
use crate::fmt::count;
use crate::info;
use crate::size::format_size;
use crate::trust::TrustArgs;

/// Arguments of `shmq list`.
#[derive(Args)]
pub struct ListArgs {
    /// The directory to look in (not recursively).
    dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// One queue file or topic, as `list` reports it.
#[derive(Serialize)]
struct Entry {
    /// Its path.
    path: String,
    /// "queue" or "topic".
    kind: &'static str,
    /// Its partitions (1 for a queue file).
    partitions: u32,
    /// Ring size of each partition, in bytes.
    capacity: u64,
    /// Messages published (over all partitions).
    published: u64,
    /// Its consumer groups, by name.
    groups: Vec<String>,
    /// Producers held by running processes (over all partitions).
    producers_alive: u32,
    /// Running processes that hold a group or work as workers of a work group (queue files),
    /// or live group members (topics).
    consumers_alive: u32,
    /// Why it could not be opened (then the other fields are zero), or nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Lists the queue files and topics in `args.dir`.
pub fn run(args: &ListArgs) -> Result<(), CliError> {
    let dir = &args.dir;
    if dir.is_file() {
        return Err(CliError::new(
            dir.display(),
            "is a file, not a directory (shmq list takes the directory that holds queue files \
             and topics; shmq info shows one)",
        ));
    }
    let read = std::fs::read_dir(dir).map_err(|e| CliError::io(dir, "read directory", e))?;
    let mut paths: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Names starting with '.' are the temporary files of a `create` in progress.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
        })
        .collect();
    paths.sort();
    let entries: Vec<Entry> = paths.iter().filter_map(|p| entry(p, &args.trust)).collect();
    let text = if args.json {
        info::to_json(dir, &entries)?
    } else if entries.is_empty() {
        format!("no queue files or topics in {}", dir.display())
    } else {
        table(&entries)
    };
    info::print(&text)
}

/// The entry for `path`, or `None` if it is neither a queue file nor a topic.
fn entry(path: &Path, trust: &TrustArgs) -> Option<Entry> {
    let empty = |kind, error| Entry {
        path: path.display().to_string(),
        kind,
        partitions: 0,
        capacity: 0,
        published: 0,
        groups: Vec::new(),
        producers_alive: 0,
        consumers_alive: 0,
        error: Some(error),
    };
    if Topic::is_topic(path) {
        return Some(match trust.open_topic(path) {
            Ok(topic) => {
                let mut e = summary(path, "topic", topic.partitions());
                e.consumers_alive = topic.members().iter().filter(|m| m.live).count() as u32;
                e
            }
            Err(err) => empty("topic", err.to_string()),
        });
    }
    if !path.is_file() {
        return None;
    }
    match Queue::open_trusting(path, &trust.trust()) {
        Ok(queue) => Some(summary(path, "queue", std::slice::from_ref(&queue))),
        // Not a queue file at all: some other file in the directory.
        Err(shmq::Error::Corrupt {
            kind: Corruption::BadMagic | Corruption::Truncated { .. },
            ..
        }) => None,
        // A queue file that does not open (another user's, another format version, …) is
        // listed with the reason.
        Err(err) => Some(empty("queue", CliError::queue(path, err).to_string())),
    }
}

/// The entry of a queue file or topic made of `partitions`.
fn summary(path: &Path, kind: &'static str, partitions: &[Queue]) -> Entry {
    let mut groups: Vec<String> = Vec::new();
    let (mut published, mut producers, mut holders) = (0, 0, 0);
    for q in partitions {
        published += q.tail_offset();
        producers += q.live_producers();
        for g in q.groups() {
            holders += u32::from(g.holder_alive);
            // A work group has no holder: its live workers count instead.
            if g.work {
                holders += q.work_info(&g.name).map_or(0, |w| w.workers);
            }
            if !groups.contains(&g.name) {
                groups.push(g.name);
            }
        }
    }
    Entry {
        path: path.display().to_string(),
        kind,
        partitions: partitions.len() as u32,
        capacity: partitions.first().map_or(0, |q| q.geometry().capacity),
        published,
        groups,
        producers_alive: producers,
        consumers_alive: holders,
        error: None,
    }
}

/// The human-readable form: one row per entry.
fn table(entries: &[Entry]) -> String {
    let mut rows = vec![[
        "PATH",
        "KIND",
        "PARTITIONS",
        "CAPACITY",
        "PUBLISHED",
        "PRODUCERS",
        "CONSUMERS",
        "GROUPS",
    ]
    .map(String::from)];
    for e in entries {
        let groups = match &e.error {
            Some(error) => error.clone(),
            None if e.groups.is_empty() => "-".to_string(),
            None => e.groups.join(","),
        };
        rows.push([
            e.path.clone(),
            e.kind.to_string(),
            e.partitions.to_string(),
            format_size(e.capacity),
            count(e.published),
            e.producers_alive.to_string(),
            e.consumers_alive.to_string(),
            groups,
        ]);
    }
    info::render_rows(&rows)
}
