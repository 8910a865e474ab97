//! Work groups: competing consumers with per-record acks on a queue file
//! ([`Queue::worker`](crate::Queue::worker)). Any number of [`Worker`]s, in any processes and threads, receive
//! disjoint records of the queue; each record is acked, nacked (delivered again, now or after a
//! delay), rejected (dead-lettered), or its lease (the visibility timeout) expires and it is
//! delivered again to anyone. The state lives in the group's work file next to the queue
//! (`file.rs`, FORMAT.md "Work file"); the protocol is `protocol/work.rs`'s and
//! ARCHITECTURE.md's "Work groups".

pub(crate) mod file;
pub(crate) mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Corruption, Error, Malformed, Result};
use crate::mapping::lease;
use crate::mapping::trust::Trust;
use crate::protocol::layout::{get32, get64, FullPolicy};
use crate::protocol::sync::{unpack, Ordering};
pub use crate::protocol::work::DeadReason;
use crate::protocol::work::{
    Counter, State, WorkConfig, MAX_DELIVERIES, MAX_DLQ_PATH, MAX_WINDOW, MEMBERS, MIN_WINDOW,
};
use crate::queue::consumer::Start;
use crate::queue::group::AdminLock;
use crate::queue::mapped::MappedQueue;
use crate::queue::producer::Producer;
use crate::runtime::clock;
use file::WorkFile;
pub use worker::{Job, Ticket, Worker};

/// How long a nacked record waits before it is delivered again, when the nack names no delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// The same delay after every delivery.
    Fixed(Duration),
    /// `initial` after the first delivery, doubling with each further one, at most `max`.
    Exponential {
        /// The delay after the first delivery.
        initial: Duration,
        /// The longest delay.
        max: Duration,
    },
}

/// The settings of a work group, used only when [`Queue::worker`](crate::Queue::worker) creates it: an existing
/// group keeps its file's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkOptions {
    /// How long a worker holds a delivery before it is delivered again to anyone (30 s).
    pub visibility_timeout: Duration,
    /// Deliveries after which a record that is nacked or times out is dead-lettered instead
    /// (5; 0: unlimited; at most 4095).
    pub max_deliveries: u32,
    /// The delay of a nack that names none (fixed 1 s).
    pub backoff: Backoff,
    /// Records dispatched but not settled (and not yet behind the oldest unsettled one) at
    /// most: a power of two, 64 to 2^20 (4096). The work file holds one 32-byte entry each.
    pub window: u32,
    /// Where a new group starts: the oldest record in the ring, or the tail.
    pub start: Start,
    /// The queue file dead-lettered records are published to (it must exist; `None`: they
    /// are dropped, counted as dead-lettered).
    pub dead_letter: Option<PathBuf>,
    /// Records older than this (by their timestamp) are expired instead of delivered.
    pub max_age: Option<Duration>,
    /// Expired records go to the dead-letter queue too (reason [`DeadReason::Expired`]).
    pub dead_letter_expired: bool,
}

impl Default for WorkOptions {
    fn default() -> Self {
        WorkOptions {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            backoff: Backoff::Fixed(Duration::from_secs(1)),
            window: 4096,
            start: Start::Earliest,
            dead_letter: None,
            max_age: None,
            dead_letter_expired: false,
        }
    }
}

fn invalid(argument: &'static str, why: String) -> Error {
    Error::InvalidArgument { argument, why }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl WorkOptions {
    /// The file header these options give group `name` in slot `slot`.
    fn config(&self, name: &str, slot: u32) -> Result<WorkConfig> {
        let w = self.window;
        if !w.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
            return Err(invalid(
                "window",
                format!("{w} is not a power of two from {MIN_WINDOW} to {MAX_WINDOW}"),
            ));
        }
        if self.max_deliveries > MAX_DELIVERIES {
            return Err(invalid(
                "max deliveries",
                format!("{} is more than {MAX_DELIVERIES}", self.max_deliveries),
            ));
        }
        // Durations are stored as ms; 2^40 ms (35 years) is far beyond any sane setting and
        // keeps every deadline sum within the state word's 44 bits.
        let bounded = |argument: &'static str, d: Duration, min: u64| {
            let v = ms(d);
            if v < min || v >= 1 << 40 {
                Err(invalid(argument, format!("{d:?} is out of range")))
            } else {
                Ok(v)
            }
        };
        let visibility_ms = bounded("visibility timeout", self.visibility_timeout, 1)?;
        let (exponential, retry_ms, max_retry_ms) = match self.backoff {
            Backoff::Fixed(d) => (false, bounded("backoff", d, 0)?, 0),
            Backoff::Exponential { initial, max } => (
                true,
                bounded("backoff", initial, 0)?,
                bounded("backoff max", max, 0)?,
            ),
        };
        let max_age_ms = match self.max_age {
            None => 0,
            Some(d) => bounded("max age", d, 1)?,
        };
        let dead_letter = match &self.dead_letter {
            None => String::new(),
            Some(p) => {
                let p = std::path::absolute(p)
                    .map_err(|e| invalid("dead-letter queue", format!("{}: {e}", p.display())))?;
                let s = p.to_str().ok_or_else(|| {
                    invalid("dead-letter queue", format!("{} is not UTF-8", p.display()))
                })?;
                if s.len() > MAX_DLQ_PATH {
                    return Err(invalid(
                        "dead-letter queue",
                        format!("the path is longer than {MAX_DLQ_PATH} bytes"),
                    ));
                }
                s.to_string()
            }
        };
        Ok(WorkConfig {
            window: w,
            max_deliveries: self.max_deliveries,
            exponential,
            dead_letter_expired: self.dead_letter_expired,
            visibility_ms,
            retry_ms,
            max_retry_ms,
            max_age_ms,
            slot,
            name: name.into(),
            dead_letter,
        })
    }
}

impl WorkOptions {
    /// The options that give a new group the settings `config` of an existing group's file,
    /// starting at the oldest record (a group made like another in a new queue file).
    fn like(config: &WorkConfig) -> WorkOptions {
        let ms = Duration::from_millis;
        WorkOptions {
            visibility_timeout: ms(config.visibility_ms),
            max_deliveries: config.max_deliveries,
            backoff: if config.exponential {
                Backoff::Exponential {
                    initial: ms(config.retry_ms),
                    max: ms(config.max_retry_ms),
                }
            } else {
                Backoff::Fixed(ms(config.retry_ms))
            },
            window: config.window,
            start: Start::Earliest,
            dead_letter: (!config.dead_letter.is_empty())
                .then(|| PathBuf::from(&config.dead_letter)),
            max_age: (config.max_age_ms != 0).then(|| ms(config.max_age_ms)),
            dead_letter_expired: config.dead_letter_expired,
        }
    }
}

/// What a record in a work group's window is waiting for ([`PendingInfo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingState {
    /// Delivered to a worker, which holds it until its deadline.
    InFlight,
    /// To be delivered (again) at its deadline: nacked, or published with a delay.
    Waiting,
    /// Being copied to the dead-letter queue by a worker.
    DeadLettering,
}

/// One unsettled record of a work group ([`Queue::pending`](crate::Queue::pending), Redis's `XPENDING`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingInfo {
    /// The record's offset.
    pub offset: u64,
    /// What it waits for.
    pub state: PendingState,
    /// The process id of the worker holding it (in flight or dead-lettering).
    pub holder: Option<u32>,
    /// Whether that worker is still running.
    pub holder_alive: bool,
    /// When its lease ends or it is due, wall-clock ms since the Unix epoch.
    pub deadline_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u32,
}

/// A work group's counters and window ([`Queue::work_info`](crate::Queue::work_info)).
/// Counters are totals since the group was created, statistics: each is bumped after the
/// change it counts, so a worker killed in between loses that count, and the set is not one
/// atomic snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkInfo {
    /// First deliveries.
    pub delivered: u64,
    /// Deliveries after the first (nacks and expired leases).
    pub redelivered: u64,
    /// Acks.
    pub acked: u64,
    /// Records dead-lettered: rejected, or out of deliveries.
    pub dead_lettered: u64,
    /// Records expired (time to live or max age): found expired at their first dispatch, or
    /// by the redelivery scan when they were due again.
    pub expired: u64,
    /// Records delivered and held by a worker now.
    pub in_flight: u64,
    /// Records waiting to be delivered (again) at a due time.
    pub waiting: u64,
    /// The group's committed offset: every record before it is settled.
    pub base: u64,
    /// The next record to dispatch for the first time.
    pub next: u64,
    /// The window (entries).
    pub window: u32,
    /// Live workers.
    pub workers: u32,
}

/// A record of a dead-letter queue, as a work group publishes it (FORMAT.md, "Dead-letter
/// record"); [`DeadLetter::parse`] reads one from a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    /// The record's offset in its source queue.
    pub offset: u64,
    /// Its timestamp (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// When it was dead-lettered (ns since the Unix epoch).
    pub dead_at_ns: u64,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// Why it was dead-lettered.
    pub reason: DeadReason,
    /// The source queue file's path.
    pub source: &'a str,
    /// The original payload.
    pub payload: &'a [u8],
}

/// The magic a dead-letter record's payload starts with.
const DLQ_MAGIC: &[u8; 8] = b"SHMQDLQ1";
/// Bytes before the source path.
const DLQ_FIXED: usize = 8 + 8 + 8 + 8 + 4 + 4 + 2;

impl<'a> DeadLetter<'a> {
    /// Reads a dead-letter record's payload. A payload that is not one (too short, a bad
    /// magic or reason, a source path that runs past the end or is not UTF-8) is
    /// [`Error::Corrupt`] with [`Malformed::DeadLetter`]; never a panic.
    pub fn parse(bytes: &'a [u8]) -> Result<DeadLetter<'a>> {
        let bad = |why| Error::Corrupt {
            path: PathBuf::new(),
            kind: Corruption::Shared(Malformed::DeadLetter {
                len: bytes.len(),
                why,
            }),
        };
        if bytes.len() < DLQ_FIXED {
            return Err(bad("too short"));
        }
        if &bytes[..8] != DLQ_MAGIC {
            return Err(bad("bad magic"));
        }
        // In range: the length was checked against DLQ_FIXED above.
        let u64_at = |at| get64(bytes, at);
        let u32_at = |at| get32(bytes, at);
        let reason = DeadReason::from_code(u32_at(36).into()).ok_or_else(|| bad("bad reason"))?;
        let source_len = u16::from_le_bytes([bytes[40], bytes[41]]) as usize;
        let rest = &bytes[DLQ_FIXED..];
        if source_len > rest.len() {
            return Err(bad("the source path runs past the end"));
        }
        let source =
            std::str::from_utf8(&rest[..source_len]).map_err(|_| bad("the source is not UTF-8"))?;
        Ok(DeadLetter {
            offset: u64_at(8),
            timestamp_ns: u64_at(16),
            dead_at_ns: u64_at(24),
            deliveries: u32_at(32),
            reason,
            source,
            payload: &rest[source_len..],
        })
    }

    /// Appends this record's payload encoding to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(DLQ_MAGIC);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ns.to_le_bytes());
        out.extend_from_slice(&self.dead_at_ns.to_le_bytes());
        out.extend_from_slice(&self.deliveries.to_le_bytes());
        out.extend_from_slice(&(self.reason as u32).to_le_bytes());
        // The source is a queue path, at most MAX_DLQ_PATH-like lengths in practice; a longer
        // one is cut at u16::MAX bytes rather than misframed.
        let source = &self.source.as_bytes()[..self.source.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(source.len() as u16).to_le_bytes());
        out.extend_from_slice(source);
        out.extend_from_slice(self.payload);
    }
}

/// Wall-clock milliseconds since the Unix epoch: the unit of every work-file deadline.
pub(crate) fn now_ms() -> u64 {
    clock::now_ns() / 1_000_000
}

/// Opens a dead-letter queue and makes a producer of it: `Queue::open_trusting(path,
/// trust)?.producer()`, passed in by the queue layer above this module.
pub(crate) type OpenProducer = fn(&Path, &Trust) -> Result<Producer>;

/// [`Queue::worker`](crate::Queue::worker)(crate::Queue::worker): joins (creating if needed) work group `group`.
pub(crate) fn join(
    shared: &Arc<MappedQueue>,
    trust: &Trust,
    group: &str,
    options: &WorkOptions,
    open_dlq: OpenProducer,
) -> Result<Worker> {
    loop {
        let slot = create(shared, group, options)?;
        // Under the admin lock, which a deletion holds from its check for live workers to the
        // removal of the file: the slot is still this work group's (not deleted, nor deleted
        // and made again) while we open its file and take a member slot in it.
        let _lock = AdminLock::take(shared)?;
        if shared.group_active(slot)
            && shared.is_work(slot)
            && shared.group_name(slot).as_deref() == Some(group)
        {
            let work = WorkFile::open(shared, slot, group, trust)?;
            return Worker::new(shared.clone(), work, group, slot, *trust, open_dlq);
        }
    }
}

/// Finds work group `group`, or creates it with `options` (and its file): its slot.
pub(crate) fn create(shared: &MappedQueue, group: &str, options: &WorkOptions) -> Result<u32> {
    if shared.geometry.full_policy == FullPolicy::Overwrite {
        return Err(invalid(
            "work group",
            "an Overwrite queue cannot hold records for a work group".into(),
        ));
    }
    // Checked before any file is made, so bad options never leave a group behind.
    options.config(group, 0)?;
    let ring = &shared.ring;
    let start = || match options.start {
        Start::Earliest => ring.oldest(),
        Start::Latest => ring.tail(),
    };
    let make = |slot: u32| WorkFile::create(shared, &options.config(group, slot)?);
    shared.find_or_create_kind(group, true, Some(&make), start)
}

/// Creates work group `group` in `shared` with the settings of the group of that name in
/// `source` (from the oldest record), unless it exists: what a topic's growth gives a new
/// partition.
pub(crate) fn create_like(
    shared: &MappedQueue,
    source: &MappedQueue,
    trust: &Trust,
    group: &str,
) -> Result<()> {
    let (work, _) = open_work(source, trust, group)?;
    create(shared, group, &WorkOptions::like(&work.config)).map(drop)
}

/// [`Queue::pending`](crate::Queue::pending): the unsettled records of work group `group`.
pub(crate) fn pending(
    shared: &MappedQueue,
    trust: &Trust,
    group: &str,
) -> Result<Vec<PendingInfo>> {
    let (work, slot) = open_work(shared, trust, group)?;
    let t = work.table();
    let (base, _) = unpack(shared.checked_committed(slot)?);
    // Acquire: pairs with `advance_next` (AcqRel), after the dispatches it follows.
    let (next, _) = unpack(t.next().load(Ordering::Acquire));
    let mut out = Vec::new();
    for x in unsettled(base, next, work.config.window) {
        let Some(e) = work.load(x)? else { continue };
        let state = match e.state {
            State::InFlight => PendingState::InFlight,
            State::Waiting => PendingState::Waiting,
            State::DeadLettering(_) => PendingState::DeadLettering,
            _ => continue,
        };
        let owner = (e.holder < MEMBERS as u8 && state != PendingState::Waiting)
            // Acquire: pairs with the member slot's CAS.
            .then(|| t.member(e.holder.into()).load(Ordering::Acquire))
            .filter(|&w| w != 0);
        out.push(PendingInfo {
            offset: x,
            state,
            holder: owner.map(lease::pid),
            holder_alive: owner.is_some_and(|w| lease::alive(&work.file, w)),
            deadline_ms: e.deadline,
            deliveries: e.count,
        });
    }
    work.check_damage()?;
    Ok(out)
}

/// [`Queue::work_info`](crate::Queue::work_info): the counters and window of `group`.
pub(crate) fn info(shared: &MappedQueue, trust: &Trust, group: &str) -> Result<WorkInfo> {
    let (work, slot) = open_work(shared, trust, group)?;
    let t = work.table();
    let (base, _) = unpack(shared.checked_committed(slot)?);
    // Acquire: pairs with `advance_next` (AcqRel), after the dispatches it follows.
    let (next, _) = unpack(t.next().load(Ordering::Acquire));
    let (mut in_flight, mut waiting) = (0, 0);
    for x in unsettled(base, next, work.config.window) {
        match work.load(x)?.map(|e| e.state) {
            Some(State::InFlight | State::DeadLettering(_)) => in_flight += 1,
            Some(State::Waiting) => waiting += 1,
            _ => {}
        }
    }
    // Relaxed: statistics.
    let count = |c| t.counter(c).load(Ordering::Relaxed);
    let workers = (0..MEMBERS)
        // Acquire: pairs with the member slot's CAS.
        .filter(|&m| lease::alive(&work.file, t.member(m).load(Ordering::Acquire)))
        .count() as u32;
    work.check_damage()?;
    Ok(WorkInfo {
        delivered: count(Counter::Delivered),
        redelivered: count(Counter::Redelivered),
        acked: count(Counter::Acked),
        dead_lettered: count(Counter::DeadLettered),
        expired: count(Counter::Expired),
        in_flight,
        waiting,
        base,
        next: next.max(base),
        window: work.config.window,
        workers,
    })
}

/// Opens the file of existing work group `group`.
fn open_work(shared: &MappedQueue, trust: &Trust, group: &str) -> Result<(WorkFile, u32)> {
    shared.check_damage()?;
    let slot = shared
        .find_group(group)
        .ok_or_else(|| Error::UnknownGroup(group.into()))?;
    shared.check_kind(slot, group, true)?;
    Ok((WorkFile::open(shared, slot, group, trust)?, slot))
}

/// The offsets whose entries may be unsettled: `base` up to and with `next` (a record whose
/// dispatch CAS is done but whose dispatcher has not moved `next` yet is at `next`), within
/// the window.
pub(crate) fn unsettled(base: u64, next: u64, window: u32) -> std::ops::Range<u64> {
    base..next.saturating_add(1).min(base + u64::from(window))
}

/// Under the admin lock, before work group `name` (slot `slot`) is deleted: fails with
/// [`Error::GroupBusy`] while a live worker is in it.
pub(crate) fn check_idle(shared: &MappedQueue, slot: u32, name: &str, trust: &Trust) -> Result<()> {
    let work = match WorkFile::open(shared, slot, name, trust) {
        Ok(w) => w,
        // A group whose file is gone or damaged has no workers: deleting it is the way out.
        Err(Error::Corrupt { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let t = work.table();
    for m in 0..MEMBERS {
        // Acquire: pairs with the member slot's CAS.
        let w = t.member(m).load(Ordering::Acquire);
        if lease::alive(&work.file, w) {
            return Err(Error::GroupBusy {
                group: name.into(),
                pid: lease::pid(w),
            });
        }
    }
    Ok(())
}

/// Removes the work file of freed slot `slot` (under the admin lock, after the slot is free).
pub(crate) fn remove_file(shared: &MappedQueue, slot: u32) -> Result<()> {
    let path = file::path_for(&shared.path, slot);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path,
            op: "remove work file",
            source: e,
        }),
        _ => Ok(()),
    }
}
