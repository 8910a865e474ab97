//! `shmq info`: a queue's parameters, state and consumer groups, as a table or JSON.

use clap::Args;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;

use serde::Serialize;
use shmq::{Durability, Queue};

use crate::duration::format_ns;
use crate::error::CliError;
use crate::fmt::count;
use crate::size::format_size;
use crate::trust;

/// Arguments of `shmq info`.
#[derive(Args)]
pub struct InfoArgs {
    /// The queue file or topic directory.
    path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: trust::TrustArgs,
}

/// Everything `info` reports about a queue file, in the shape of its JSON output.
#[derive(Serialize)]
pub struct Info {
    /// The queue file.
    path: String,
    /// The version of the file format (FORMAT.md); opening refuses any other.
    format_version: u32,
    /// Ring size in bytes.
    capacity: u64,
    /// Largest message in bytes.
    max_message: u32,
    /// `block`, `reject` or `overwrite`.
    full_policy: &'static str,
    /// Consumer-group slots.
    group_slots: u32,
    /// Producer slots.
    producer_slots: u32,
    /// How long a stalled publish may hold readers up, in milliseconds.
    claim_timeout_ms: u128,
    /// Creation time, nanoseconds since the Unix epoch.
    created_ns: u64,
    /// `none`, `batch` or `sync`.
    durability: &'static str,
    /// Batch only: longest wait of a record for its flush, in nanoseconds.
    batch_max_delay_ns: Option<u64>,
    /// Batch only: unflushed bytes that trigger a flush.
    batch_max_bytes: Option<u64>,
    /// Whether records carry a CRC32C of their payload.
    checksums: bool,
    /// The oldest offset still in the ring.
    pub oldest_offset: u64,
    /// The next offset a producer will be given.
    pub tail_offset: u64,
    /// Every record before this offset is on disk.
    pub durable_offset: u64,
    /// Ring bytes producers may not overwrite yet (held by gating groups, the flushed cursor
    /// known to be on disk, or unfinished records).
    pub fill_bytes: u64,
    /// `fill_bytes` as a percentage of the capacity.
    fill_percent: f64,
    /// Producer slots held by running processes.
    pub producers_alive: u32,
    /// Of those, producers asleep waiting for room (held back by a gating group or by records
    /// not yet known to be on disk).
    producers_waiting: u32,
    /// Every consumer group.
    groups: Vec<Group>,
    /// The idempotent producers' ids (absent when the queue has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    producer_ids: Vec<ProducerId>,
    /// Why the producer ids could not be read (their file is damaged; absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_ids_error: Option<String>,
    /// Every inbox of the queue (`<queue>.inbox-<name>`; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inboxes: Vec<Inbox>,
    /// Processes that map a removed or replaced file at this path: they use another queue than
    /// the one the path names now (absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    detached_pids: Vec<u32>,
}

/// One consumer group as reported by `info` and `group list`.
#[derive(Serialize)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// The topic partition this row is about (absent for a queue file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// The next offset the group reads after a restart.
    pub committed: u64,
    /// Messages published but not committed by the group (tail minus committed).
    pub lag: u64,
    /// Ring bytes from the group's committed position to the tail.
    lag_bytes: u64,
    /// Whether the group holds producers back.
    gating: bool,
    /// Process id of the member holding the group, if any.
    holder_pid: Option<u32>,
    /// Whether that process is running.
    holder_alive: bool,
    /// A work group's figures (absent for a plain group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work: Option<Work>,
    /// Why a work group's figures could not be read (its work file is missing or damaged).
    #[serde(skip_serializing_if = "Option::is_none")]
    work_error: Option<String>,
}

/// One idempotent producer's id (`Queue::producer_ids`).
#[derive(Serialize)]
pub struct ProducerId {
    /// The producer id.
    id: String,
    /// The sequence number after the highest one published (where its producer resumes).
    next_sequence: u64,
    /// Sequence numbers it remembers at most (the de-duplication window).
    window: u32,
    /// Sequence numbers it remembers now.
    remembered: u64,
    /// Records published.
    published: u64,
    /// Retries answered as duplicates.
    duplicates: u64,
    /// Publishes cut short by a kill whose outcome could not be learnt (counted as not
    /// published).
    unknown: u64,
    /// Process id of its holder, if any.
    holder_pid: Option<u32>,
    /// Whether that process is running.
    holder_alive: bool,
}

impl From<shmq::IdInfo> for ProducerId {
    fn from(i: shmq::IdInfo) -> Self {
        ProducerId {
            id: i.id,
            next_sequence: i.next_sequence,
            window: i.window,
            remembered: i.remembered,
            published: i.published,
            duplicates: i.duplicates,
            unknown: i.unknown,
            holder_pid: i.holder,
            holder_alive: i.holder_alive,
        }
    }
}

/// The figures of a work group (`Queue::work_info`): its window now and its counters since it
/// was created.
#[derive(Serialize, Clone)]
pub struct Work {
    /// Live workers.
    pub workers: u32,
    /// Records delivered and held by a worker now.
    pub in_flight: u64,
    /// Records waiting to be delivered (again) at a due time.
    pub waiting: u64,
    /// The next record to dispatch for the first time.
    next: u64,
    /// The window (entries of the work file).
    window: u32,
    /// First deliveries.
    pub delivered: u64,
    /// Deliveries after the first (nacks and expired leases).
    pub redelivered: u64,
    /// Acks.
    pub acked: u64,
    /// Records dead-lettered: rejected, or out of deliveries.
    pub dead_lettered: u64,
    /// Records expired (time to live or max age) before they were delivered.
    pub expired: u64,
}

/// One inbox as `info` reports it (`Queue::inbox_info`): its window's fill now and its
/// counters since it was created.
#[derive(Serialize)]
pub struct Inbox {
    /// The inbox's name.
    pub name: String,
    /// The window (keys).
    pub window: u32,
    /// Keys in the window now.
    pub fill: u64,
    /// `fill` as a percentage of the window.
    fill_percent: f64,
    /// Keys held by a live process now.
    pub held: u64,
    /// Keys recorded done, of those in the window.
    pub done: u64,
    /// Keys admitted since creation.
    pub admitted: u64,
    /// Begins that found their key done (duplicates filtered out).
    pub duplicates: u64,
    /// Begins that found their key held by a live process.
    pub busy: u64,
    /// Keys taken again after their holder released them or died.
    pub retaken: u64,
    /// Keys evicted from the window by later ones.
    pub evicted: u64,
    /// Why its figures could not be read (a damaged file); the figures are then 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The queue's inboxes; one whose file cannot be read is a row with its error.
pub fn inboxes(queue: &Queue) -> Vec<Inbox> {
    let names = match queue.inboxes() {
        Ok(names) => names,
        Err(e) => return vec![Inbox::failed("?".into(), e)],
    };
    names
        .into_iter()
        .map(|name| match queue.inbox_info(&name) {
            Ok(i) => Inbox {
                fill_percent: percent(i.fill, u64::from(i.window)),
                name: i.name,
                window: i.window,
                fill: i.fill,
                held: i.held,
                done: i.done,
                admitted: i.admitted,
                duplicates: i.duplicates,
                busy: i.busy,
                retaken: i.retaken,
                evicted: i.evicted,
                error: None,
            },
            Err(e) => Inbox::failed(name, e),
        })
        .collect()
}

impl Inbox {
    /// The row of inbox `name`, whose figures could not be read because of `e`.
    fn failed(name: String, e: shmq::Error) -> Inbox {
        Inbox {
            name,
            window: 0,
            fill: 0,
            fill_percent: 0.0,
            held: 0,
            done: 0,
            admitted: 0,
            duplicates: 0,
            busy: 0,
            retaken: 0,
            evicted: 0,
            error: Some(e.to_string()),
        }
    }
}

/// The inboxes as a table, one row each.
pub fn inbox_table(inboxes: &[Inbox]) -> String {
    let header = [
        "INBOX",
        "WINDOW",
        "FILL",
        "HELD",
        "DONE",
        "ADMITTED",
        "DUPLICATES",
        "BUSY",
        "RETAKEN",
        "EVICTED",
    ];
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for i in inboxes {
        let row = match &i.error {
            Some(e) => vec![i.name.clone(), format!("unreadable: {e}")],
            None => vec![
                i.name.clone(),
                count(u64::from(i.window)),
                format!("{} ({:.1}%)", count(i.fill), i.fill_percent),
                count(i.held),
                count(i.done),
                count(i.admitted),
                count(i.duplicates),
                count(i.busy),
                count(i.retaken),
                count(i.evicted),
            ],
        };
        rows.push(row);
    }
    render_rows(&rows)
}

impl From<shmq::WorkInfo> for Work {
    fn from(w: shmq::WorkInfo) -> Self {
        Work {
            workers: w.workers,
            in_flight: w.in_flight,
            waiting: w.waiting,
            next: w.next,
            window: w.window,
            delivered: w.delivered,
            redelivered: w.redelivered,
            acked: w.acked,
            dead_lettered: w.dead_lettered,
            expired: w.expired,
        }
    }
}

/// Opens the queue (or topic) and prints its state.
pub fn run(args: &InfoArgs) -> Result<(), CliError> {
    if shmq::Topic::is_topic(&args.path) {
        return crate::topic::info(&args.trust.open_topic(&args.path)?, args.json);
    }
    let queue = match args.trust.open_queue(&args.path) {
        Ok(queue) => queue,
        Err(e) => return Err(with_detached_pids(e, &args.path)),
    };
    let info = gather(&queue);
    let text = if args.json {
        to_json(&args.path, &info)?
    } else {
        table(&info)
    };
    print(&text)
}

/// Pretty JSON of `value`; an error names `path`.
pub fn to_json(path: &Path, value: &impl Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(path.display(), format_args!("JSON: {e}")))
}

/// Prints `text` and a newline; a closed stdout (`| head`) is not an error.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::new("stdout", e)),
        _ => Ok(()),
    }
}

/// The queue's groups as `info` reports them (lag taken against one tail read after them);
/// `partition` is the queue's index if it is a topic partition.
pub fn groups(queue: &Queue, partition: Option<u32>) -> Vec<Group> {
    queue
        .groups()
        .into_iter()
        .map(|gi| {
            let (work, work_error) = match gi.work.then(|| queue.work_info(&gi.name)) {
                None => (None, None),
                Some(Ok(w)) => (Some(Work::from(w)), None),
                Some(Err(e)) => (None, Some(e.to_string())),
            };
            Group {
                partition,
                work,
                work_error,
                lag: gi.lag,
                lag_bytes: gi.lag_bytes,
                name: gi.name,
                committed: gi.committed,
                gating: gi.gating,
                holder_pid: gi.holder,
                holder_alive: gi.holder_alive,
            }
        })
        .collect()
}

/// Reads the queue's state: the groups first, then the tail, so no lag comes out negative.
pub fn gather(queue: &Queue) -> Info {
    let groups = groups(queue, None);
    let (producer_ids, producer_ids_error) = match queue.producer_ids() {
        Ok(ids) => (ids.into_iter().map(ProducerId::from).collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let tail = queue.tail_offset();
    let g = queue.geometry();
    let fill = queue.protected_bytes();
    let (batch_max_delay_ns, batch_max_bytes) = match g.durability {
        Durability::Batch {
            max_delay,
            max_bytes,
        } => (
            Some(u64::try_from(max_delay.as_nanos()).unwrap_or(u64::MAX)),
            Some(max_bytes),
        ),
        _ => (None, None),
    };
    Info {
        path: queue.path().display().to_string(),
        format_version: shmq::FORMAT_VERSION,
        capacity: g.capacity,
        max_message: g.max_message,
        full_policy: g.full_policy.name(),
        group_slots: g.group_slots,
        producer_slots: g.producer_slots,
        claim_timeout_ms: g.claim_timeout.as_millis(),
        created_ns: g.created_ns,
        durability: g.durability.name(),
        batch_max_delay_ns,
        batch_max_bytes,
        checksums: g.checksums,
        oldest_offset: queue.oldest_offset(),
        tail_offset: tail,
        durable_offset: queue.durable_offset(),
        fill_bytes: fill,
        fill_percent: percent(fill, g.capacity),
        producers_alive: queue.live_producers(),
        producers_waiting: queue.producers_waiting(),
        groups,
        producer_ids,
        producer_ids_error,
        inboxes: inboxes(queue),
        detached_pids: detached_pids(queue.path()),
    }
}

/// The processes that map a file at `path` other than the one it names now (which may be
/// none): a removed or replaced queue file still in use. Read from `/proc/*/maps`, so only
/// processes this user may inspect are seen.
pub fn detached_pids(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = std::path::absolute(path) else {
        return Vec::new();
    };
    let current = std::fs::symlink_metadata(&path).ok().map(|m| m.ino());
    // The path field follows a space; the kernel marks a removed file " (deleted)".
    let name = format!(" {}", path.display());
    let deleted = format!("{name} (deleted)");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
                return false;
            };
            maps.lines().any(|line| {
                // address perms offset device inode path
                let inode = line.split_whitespace().nth(4).and_then(|i| i.parse().ok());
                (line.ends_with(&deleted) || line.ends_with(&name)) && inode != current
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// `e`, the failure to open `path`, with the processes that still map a removed or replaced
/// file there.
fn with_detached_pids(e: CliError, path: &Path) -> CliError {
    match detached_pids(path).as_slice() {
        [] => e,
        pids => CliError::new(
            e,
            format_args!(
                "a removed file at this path is still mapped by {}",
                pid_list(pids)
            ),
        ),
    }
}

/// `pid 1, pid 2`.
fn pid_list(pids: &[u32]) -> String {
    let pids: Vec<String> = pids.iter().map(|p| format!("pid {p}")).collect();
    pids.join(", ")
}

/// `part` as a percentage of `whole`, to one decimal.
fn percent(part: u64, whole: u64) -> f64 {
    (part as f64 * 1000.0 / whole.max(1) as f64).round() / 10.0
}

/// Renders the human-readable form.
fn table(info: &Info) -> String {
    let durability = match (info.batch_max_delay_ns, info.batch_max_bytes) {
        (Some(ns), Some(bytes)) => format!(
            "{} (flush within {} or every {})",
            info.durability,
            format_ns(ns),
            format_size(bytes)
        ),
        _ => info.durability.to_string(),
    };
    let mut out = format!(
        "queue        {} (format version {})\n\
         capacity     {} ({} bytes)\n\
         max message  {} ({} bytes)\n\
         full policy  {}\n\
         durability   {}{}\n\
         slots        {} groups, {} producers ({} running, {} waiting for room)\n\
         offsets      oldest {}, tail {}, durable {}\n\
         fill         {} ({}% of the ring held back)\n",
        info.path,
        info.format_version,
        format_size(info.capacity),
        info.capacity,
        format_size(u64::from(info.max_message)),
        info.max_message,
        info.full_policy,
        durability,
        if info.checksums { ", checksums" } else { "" },
        info.group_slots,
        info.producer_slots,
        info.producers_alive,
        info.producers_waiting,
        count(info.oldest_offset),
        count(info.tail_offset),
        count(info.durable_offset),
        format_size(info.fill_bytes),
        info.fill_percent,
    );
    if !info.detached_pids.is_empty() {
        out.push_str(&format!(
            "file         DETACHED: a removed or replaced file at this path is still mapped by {} \
             (they use another queue than this one)\n",
            pid_list(&info.detached_pids)
        ));
    }
    if info.groups.is_empty() {
        out.push_str("groups       none");
    } else {
        out.push('\n');
        out.push_str(&group_table(&info.groups));
        if info.groups.iter().any(|g| g.work.is_some()) {
            out.push_str("\n\n");
            out.push_str(&work_table(&info.groups));
        }
    }
    if let Some(e) = &info.producer_ids_error {
        out.push_str(&format!("\nproducer ids {e}"));
    } else if !info.producer_ids.is_empty() {
        out.push_str("\n\n");
        out.push_str(&id_table(&info.producer_ids));
    }
    if !info.inboxes.is_empty() {
        out.push_str("\n\n");
        out.push_str(&inbox_table(&info.inboxes));
    }
    out
}

/// The idempotent producers' ids, one row each.
fn id_table(ids: &[ProducerId]) -> String {
    let header = [
        "PRODUCER ID",
        "NEXT SEQ",
        "WINDOW FILL",
        "PUBLISHED",
        "DUPLICATES",
        "UNKNOWN",
        "HOLDER",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for i in ids {
        rows.push(vec![
            i.id.clone(),
            count(i.next_sequence),
            format!("{} of {}", count(i.remembered), count(u64::from(i.window))),
            count(i.published),
            count(i.duplicates),
            count(i.unknown),
            holder(i.holder_pid, i.holder_alive),
        ]);
    }
    render_rows(&rows)
}

/// The work groups' figures, one row each.
pub fn work_table(groups: &[Group]) -> String {
    let partitioned = groups.iter().any(|g| g.partition.is_some());
    let mut header = vec!["WORK GROUP"];
    if partitioned {
        header.push("PARTITION");
    }
    header.extend([
        "WORKERS",
        "IN FLIGHT",
        "WAITING",
        "DELIVERED",
        "REDELIVERED",
        "ACKED",
        "DEAD-LETTERED",
        "EXPIRED",
    ]);
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for g in groups {
        let Some(w) = &g.work else { continue };
        let mut row = vec![g.name.clone()];
        if partitioned {
            row.push(g.partition.map_or("-".into(), |p| p.to_string()));
        }
        row.extend([
            w.workers.to_string(),
            count(w.in_flight),
            count(w.waiting),
            count(w.delivered),
            count(w.redelivered),
            count(w.acked),
            count(w.dead_lettered),
            count(w.expired),
        ]);
        rows.push(row);
    }
    render_rows(&rows)
}

/// The groups as a table, one row each (with a PARTITION column for a topic's groups).
pub fn group_table(groups: &[Group]) -> String {
    let partitioned = groups.iter().any(|g| g.partition.is_some());
    let mut header = vec!["GROUP"];
    if partitioned {
        header.push("PARTITION");
    }
    header.extend(["COMMITTED", "LAG", "LAG BYTES", "GATING", "HOLDER"]);
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for g in groups {
        let holder = match (g.holder_pid, &g.work, &g.work_error) {
            (_, Some(w), _) if w.workers == 1 => "1 worker".to_string(),
            (_, Some(w), _) => format!("{} workers", w.workers),
            (_, None, Some(e)) => format!("work group: {e}"),
            (pid, ..) => holder(pid, g.holder_alive),
        };
        let mut row = vec![g.name.clone()];
        if partitioned {
            row.push(g.partition.map_or("-".into(), |p| p.to_string()));
        }
        row.extend([
            count(g.committed),
            count(g.lag),
            format_size(g.lag_bytes),
            if g.gating { "yes" } else { "no" }.to_string(),
            holder,
        ]);
        rows.push(row);
    }
    render_rows(&rows)
}

/// A holder as tables show it: `pid 42 (alive)`, `pid 42 (dead)`, or `-` for none.
pub fn holder(pid: Option<u32>, alive: bool) -> String {
    match pid {
        Some(pid) if alive => format!("pid {pid} (alive)"),
        Some(pid) => format!("pid {pid} (dead)"),
        None => "-".to_string(),
    }
}

/// Lays out rows in left-aligned columns two spaces apart.
pub fn render_rows<R: AsRef<[String]>>(rows: &[R]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .as_ref()
                .iter()
                .zip(&widths)
                .map(|(cell, &w)| format!("{cell:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_line_up() {
        let rows = [
            ["A".to_string(), "BB".to_string()],
            ["CCC".to_string(), "D".to_string()],
        ];
        assert_eq!(render_rows(&rows), "A    BB\nCCC  D");
    }
}
