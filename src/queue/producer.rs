//! [`Producer`]: publishes records, copying ([`Producer::publish`]) or in place
//! ([`Producer::claim`]), and applies the queue's full policy.
//!
//! A producer owns one producer slot (`ProducerTable` in `protocol/producers.rs`, FORMAT.md):
//! its owner word is the word of its [`Lease`], so the slot's owner is alive exactly while its
//! kernel lock is held, and its intent words hold the record it claims or writes (`offset + 1`,
//! 0 when idle) and that record's position. The claim limit is
//! `min(tail, gating groups' committed positions, live intents) + capacity`, and under Batch and
//! Sync also at most the synced cursor (`durable.rs`) plus one capacity. It is cached and only
//! recomputed when a claim would pass it, so the common publish reads no group or slot.
//!
//! [`Producer::publish_batch`] claims a run of records with one tail CAS (see "Runs" in
//! `protocol/ring.rs`), commits each record by its slot tag as `publish` does, and pays the
//! lease, damage and poison checks, the wake-up and the durability wait once per batch.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Blocker, Corruption, Error, Malformed, Result};
use crate::mapping::lease::{self, Lease};
use crate::mapping::watch;
use crate::protocol::crc;
use crate::protocol::layout::{self, footprint, Durability, FullPolicy};
use crate::protocol::ring::{self, Attempt, Claim, KnownTail, Ring};
use crate::protocol::sync::{pack, Ordering};
use crate::queue::flusher::{Flusher, FlusherSlot};
use crate::queue::mapped::MappedQueue;
use crate::runtime::clock;
use crate::runtime::wait::{Pause, Wait, INFLIGHT_POLL};
use crate::runtime::wall_clock::WallClock;

/// When a work group may deliver a record ([`Producer::publish_scheduled`]): the record's
/// schedule word (FORMAT.md, "Data ring").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Deliver no earlier than this long after the record's timestamp (whole milliseconds).
    pub delay: Duration,
    /// Never deliver later than this long after the record's timestamp: the record then
    /// expires (whole milliseconds, at least 1, below 2^31: 24.8 days). `None`: it does not
    /// expire.
    pub ttl: Option<Duration>,
}

impl Schedule {
    /// The schedule word: the delay in milliseconds in the low 32 bits, the time to live in
    /// the high 32 bits (0: none).
    pub(crate) fn word(&self) -> Result<u64> {
        let ms = |argument: &'static str, d: Duration, min: u128, max: u64, days: &str| {
            let ms = d.as_millis().max(min);
            u64::try_from(ms)
                .ok()
                .filter(|&ms| ms <= max)
                .ok_or_else(|| Error::InvalidArgument {
                    argument,
                    why: format!("{d:?} is longer than the maximum of {max} ms ({days})"),
                })
        };
        let delay = ms(
            "schedule delay",
            self.delay,
            0,
            u32::MAX.into(),
            "49.7 days",
        )?;
        // Below 2^31 ms: a schedule word never has its top bit set, which marks the link of a
        // transaction's record instead (`protocol/ring.rs`, `LINK_MARK`).
        let ttl = match self.ttl {
            None => 0,
            Some(t) => ms("schedule ttl", t, 1, (1 << 31) - 1, "24.8 days")?,
        };
        Ok(delay | ttl << 32)
    }
}

/// The clock a producer stamps its records with ([`Producer::set_timestamps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timestamps {
    /// `CLOCK_REALTIME`, nanosecond resolution (the default). Where the kernel keeps its
    /// time with the CPU's invariant time-stamp counter (clocksource `tsc`), a producer that
    /// has run for 10 ms reads the kernel clock once per 100 ms (or per publish, if it
    /// publishes less often) and extrapolates from the counter in between, at the rate it
    /// measured between its last two kernel reads. A stamp then costs an `rdtsc` and a
    /// multiply instead of the vDSO's ordered counter read (25 ns on this project's benchmark
    /// VM, a fifth of a 64-byte ping-pong hop). It stays within tens of nanoseconds of the
    /// kernel clock while NTP's rate is steady, and within a rate change times 100 ms when it
    /// changes (10 ppm: 1 µs). A producer's stamps never decrease: a lead over the kernel
    /// clock is kept and taken up over the next 100 ms. A kernel clock step is seen up to
    /// 100 ms late; one of more than 1 ms then moves the stamps to the kernel's time, back if
    /// need be. Elsewhere every stamp is a kernel read ("The record clock" in
    /// `BENCHMARKS.md`).
    #[default]
    Precise,
    /// `CLOCK_REALTIME_COARSE`: the time of the kernel's last tick, so a timestamp may be up to
    /// one tick (1 to 10 ms, `CONFIG_HZ`) before the publish and records published within one
    /// tick share it. A read costs a few nanoseconds. A work group's delay and time to live
    /// count from the timestamp, so under this clock a delayed record may be delivered, and
    /// a record with a time to live may expire, up to one tick early.
    Coarse,
}

/// Publishes records to one queue. One per thread (it is `Send`, not `Sync`).
pub struct Producer {
    pub(crate) shared: Arc<MappedQueue>,
    slot: u32,
    /// The slot's region offset (`ProducerTable::slot_off`), which the ring protocol's claim,
    /// commit and abort take: kept so the hot path computes it once per producer.
    slot_off: u64,
    pub(crate) lease: Lease,
    tail: KnownTail,
    limit: u64,
    pub(crate) timeout: Option<Duration>,
    /// The clock records are stamped with.
    timestamps: Timestamps,
    /// The state of the precise clock ([`Timestamps::Precise`]).
    wall: WallClock,
    /// The payload lengths of the batch being published (kept to reuse its allocation).
    lens: Vec<u32>,
    /// The claims of the batch being published (kept to reuse its allocation).
    run: Vec<Claim>,
    /// Keeps this process's Batch flusher running while the producer lives.
    flusher: Option<Arc<Flusher>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("path", &self.shared.path)
            .field("slot", &self.slot)
            .field("timeout", &self.timeout)
            .field("timestamps", &self.timestamps)
            .finish_non_exhaustive()
    }
}

/// The room a producer waits for: a claim ending at `end`.
pub(crate) struct Room {
    /// Where the claim would end.
    pub(crate) end: u64,
    /// An unfinished record holds the limit back, which finishes without a wake-up call: the
    /// waiter polls every [`INFLIGHT_POLL`].
    pub(crate) polls: bool,
    /// What holds the limit down (for the error of a wait that runs out).
    bottleneck: Bottleneck,
}

impl Room {
    /// The longest single sleep of a producer waiting for this room: [`INFLIGHT_POLL`] when
    /// it polls, and never longer than a round of the file watcher, to see what it found.
    pub(crate) fn sleep_cap(&self) -> Duration {
        if self.polls {
            INFLIGHT_POLL.min(watch::INTERVAL)
        } else {
            watch::INTERVAL
        }
    }
}

/// What holds the claim limit down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bottleneck {
    /// The tail or a gating group: wait for a commit.
    Groups,
    /// Records not yet on disk, or not yet behind the flushed cursor on disk: flush.
    Flush,
    /// Producer slot `slot`'s unfinished record, seen as intent value `intent`.
    Intent { slot: u32, intent: u64 },
}

impl Producer {
    pub(crate) fn new(shared: Arc<MappedQueue>, flusher: &FlusherSlot) -> Result<Producer> {
        let lease = Lease::new(&shared.file, &shared.path).map_err(|source| Error::Io {
            path: shared.path.clone(),
            op: "take a producer lease",
            source,
        })?;
        let owner = lease.word();
        let slots = shared.geometry.producer_slots;
        let dead = |held| !lease::alive(&shared.file, held);
        let slot = (0..slots)
            .find(|&s| take_slot(&shared, s, owner, |held| held == 0))
            .or_else(|| (0..slots).find(|&s| take_slot(&shared, s, owner, dead)))
            .ok_or(Error::TooManyProducers(slots))?;
        let table = shared.producers();
        let slot_off = table.slot_off(slot);
        // Release: a dead predecessor's intent is gone before we publish our own.
        table.intent(slot).store(0, Ordering::Release);
        // SeqCst like every sleeper-bitmap change; the predecessor may have died asleep.
        shared
            .ring
            .region
            .u64(layout::SPACE_WAITERS)
            .fetch_and(!(1u64 << slot), Ordering::SeqCst);
        let tail = KnownTail::read(
            shared
                .ring
                .region
                .u128(layout::TAIL)
                .load(Ordering::Acquire),
        );
        let flusher = match shared.geometry.durability {
            Durability::Batch { max_delay, .. } => Some(Flusher::get(&shared, flusher, max_delay)?),
            _ => None,
        };
        Ok(Producer {
            flusher,
            shared,
            slot,
            slot_off,
            lease,
            tail,
            limit: 0,
            timeout: None,
            timestamps: Timestamps::Precise,
            wall: WallClock::new(),
            lens: Vec::new(),
            run: Vec::new(),
        })
    }

    /// Sets how long [`publish`](Self::publish) and [`claim`](Self::claim) wait for room under
    /// [`FullPolicy::Block`]; `None` (the default) waits as long as it takes.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
    }

    /// Sets the clock this producer stamps its records with (see [`Timestamps`]; the record's
    /// [`Message::timestamp_ns`](crate::Message::timestamp_ns)). [`Timestamps::Coarse`]
    /// trades the timestamp's resolution for a cheaper publish.
    pub fn set_timestamps(&mut self, timestamps: Timestamps) {
        self.timestamps = timestamps;
    }

    /// Now, on this producer's clock: a record's timestamp.
    #[inline(always)]
    fn stamp(&mut self) -> u64 {
        match self.timestamps {
            Timestamps::Precise => self.wall.now(),
            Timestamps::Coarse => clock::coarse_now_ns(),
        }
    }

    /// Publishes `payload` and returns its offset. Under [`Durability::Sync`] it returns only
    /// once the record is on disk.
    ///
    /// Errors: [`Error::TooBig`], [`Error::Full`] (policy `Reject`), [`Error::Timeout`] (policy
    /// `Block` with a timeout), [`Error::Aborted`] (this call stalled past the claim timeout and
    /// readers gave the record up; nothing was published), [`Error::NotDurable`] (under `Sync`:
    /// the record was published but its flush failed, or did not finish within the timeout set
    /// by [`set_timeout`](Self::set_timeout)), [`Error::Poisoned`] (under `Batch` and `Sync`:
    /// an earlier flush of the file failed; nothing was published).
    ///
    /// [`Error::Truncated`] or [`Error::Detached`]: the queue file was truncated, removed or
    /// replaced under this process (checked before and after, so a publish that went into
    /// zero pages is never reported as done).
    pub fn publish(&mut self, payload: &[u8]) -> Result<u64> {
        self.publish_noting(payload, |_| {})
    }

    /// [`publish`](Self::publish) that runs `on_claim` with the record's offset right after its
    /// claim won, before the record is written or committed: an idempotent producer notes its
    /// claim there (`queue/ids.rs`). Not run if no claim is made.
    // Always inlined: `publish` is the hot path (see `publish_checked`).
    #[inline(always)]
    pub(crate) fn publish_noting(
        &mut self,
        payload: &[u8],
        on_claim: impl FnOnce(u64),
    ) -> Result<u64> {
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let published = self.publish_checked(payload, 0, on_claim);
        self.shared.checked_after(published)
    }

    // Always inlined: `publish` is the hot path, and a call (with its `Result` through
    // memory) costs it about 25 instructions (callgrind, `call_cost`).
    #[inline(always)]
    fn publish_checked(
        &mut self,
        payload: &[u8],
        schedule: u64,
        on_claim: impl FnOnce(u64),
    ) -> Result<u64> {
        let len = self.check_len(payload.len())?;
        let claim = self.claim_raw(len)?;
        on_claim(claim.offset);
        let crc = write_checked(&self.shared, &claim, payload);
        self.finish_scheduled(claim, crc, schedule)
    }

    /// Publishes `payload` with a [`Schedule`]: work groups (see
    /// [`Queue::worker`](crate::Queue::worker)) deliver it no earlier than `delay` after its
    /// timestamp, and never after its time to live. Plain consumer groups and tail readers
    /// ignore the schedule and read the record at once. Fails as [`publish`](Self::publish)
    /// does, and with [`Error::InvalidArgument`] for a delay of 2^32 ms (49.7 days) or more,
    /// or a time to live of 2^31 ms (24.8 days) or more.
    pub fn publish_scheduled(&mut self, payload: &[u8], schedule: &Schedule) -> Result<u64> {
        let word = schedule.word()?;
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let published = self.publish_checked(payload, word, |_| {});
        self.shared.checked_after(published)
    }

    /// Publishes every payload of `payloads` as one run of records with dense offsets, in order,
    /// and returns the first record's offset (the others follow it: `first + i` for `payloads[i]`).
    /// One claim takes room for the whole run, so records of other producers never fall between
    /// them. The batch is atomic: readers see all of its records at once, or none of them (a
    /// producer killed before its batch is committed leaves nothing of it readable, and its offsets
    /// are skipped as aborted ones). Under [`FullPolicy::Block`] it waits until the whole run fits,
    /// and under [`Durability::Sync`] it returns once the last record is on disk (one flush for the
    /// batch). Its records share one timestamp.
    ///
    /// Errors: as [`publish`](Self::publish), and [`Error::InvalidArgument`] for an empty
    /// batch, [`Error::BatchTooBig`] for a batch that could never fit in the ring.
    /// [`Error::Aborted`] names the batch's first record: this call stalled past the claim
    /// timeout and readers gave the batch up; none of it is published.
    /// [`Error::NotDurable`] names the batch's last record.
    pub fn publish_batch(&mut self, payloads: &[&[u8]]) -> Result<u64> {
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let published = self.publish_batch_checked(payloads);
        self.shared.checked_after(published)
    }

    fn publish_batch_checked(&mut self, payloads: &[&[u8]]) -> Result<u64> {
        if payloads.is_empty() {
            return Err(Error::InvalidArgument {
                argument: "batch",
                why: "an empty batch has no offset to return".into(),
            });
        }
        let mut lens = std::mem::take(&mut self.lens);
        lens.clear();
        for payload in payloads {
            match self.check_len(payload.len()) {
                Ok(len) => lens.push(len),
                Err(e) => {
                    self.lens = lens;
                    return Err(e);
                }
            }
        }
        let mut run = std::mem::take(&mut self.run);
        let published = self.publish_run(payloads, &mut lens, &mut run);
        (self.lens, self.run) = (lens, run);
        published
    }

    /// Claims, writes and commits the run of `payloads` (whose lengths are `lens`), then waits
    /// for durability as its policy says. Once the run is claimed its claims hold the lengths,
    /// and `lens` takes the payloads' CRC32Cs for the commit (no second buffer).
    fn publish_run(
        &mut self,
        payloads: &[&[u8]],
        lens: &mut [u32],
        run: &mut Vec<Claim>,
    ) -> Result<u64> {
        self.check_run_size(lens)?;
        self.check_poison()?;
        let slot_off = self.slot_off;
        self.claim_with(|ring, tail, limit| ring.try_claim_run(tail, lens, limit, slot_off, run))?;
        let timestamp = self.stamp();
        let crcs = lens;
        for ((claim, payload), crc) in run.iter().zip(payloads).zip(crcs.iter_mut()) {
            *crc = write_checked(&self.shared, claim, payload);
        }
        self.shared
            .ring
            .commit_run(run, timestamp, crcs, slot_off)
            .map_err(|()| Error::Aborted {
                offset: run[0].offset,
            })?;
        let last = run[run.len() - 1];
        self.after_commit(last.offset, last.start + footprint(last.len as u64))?;
        Ok(run[0].offset)
    }

    /// Claims, writes and prepares `payloads` as one run for the topic transaction `link`
    /// (`protocol/txn.rs`): the records wait in the ring, invisible, for their transaction's
    /// outcome, which [`settle_run`](Self::settle_run) applies. `run` receives the claims
    /// (empty if nothing was claimed), which `claimed` is shown right after the claim, before
    /// anything is written. Waits for room as [`publish_batch`](Self::publish_batch)
    /// does; [`Error::Aborted`] names the run's first record if a reader gave it up first.
    pub(crate) fn prepare_run(
        &mut self,
        payloads: &[&[u8]],
        link: u64,
        run: &mut Vec<Claim>,
        claimed: impl FnOnce(&[Claim]),
    ) -> Result<()> {
        run.clear();
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let mut lens = std::mem::take(&mut self.lens);
        lens.clear();
        let prepared = (|| {
            for payload in payloads {
                lens.push(self.check_len(payload.len())?);
            }
            self.check_run_size(&lens)?;
            self.check_poison()?;
            let slot_off = self.slot_off;
            self.claim_with(|ring, tail, limit| {
                ring.try_claim_run(tail, &lens, limit, slot_off, run)
            })?;
            claimed(run);
            let timestamp = self.stamp();
            for ((claim, payload), crc) in run.iter().zip(payloads).zip(lens.iter_mut()) {
                *crc = write_checked(&self.shared, claim, payload);
            }
            self.shared
                .ring
                .prepare_run(run, timestamp, &lens, link)
                .map_err(|()| Error::Aborted {
                    offset: run[0].offset,
                })
        })();
        self.lens = lens;
        prepared?;
        self.shared.check_damage()
    }

    /// Commits (`commit`) or aborts the prepared run `run` of this producer's, as its
    /// transaction went, withdraws the intent and wakes sleeping readers; after a commit,
    /// waits for durability as the policy says.
    pub(crate) fn settle_run(&mut self, run: &[Claim], commit: bool) -> Result<()> {
        let Some(last) = run.last() else {
            return Ok(());
        };
        self.shared.ring.settle_claims(run, commit, self.slot_off);
        if commit {
            self.after_commit(last.offset, last.start + footprint(last.len as u64))?;
        }
        Ok(())
    }

    /// [`Error::BatchTooBig`] for a run of records of lengths `lens` that no claim can ever
    /// take: its footprints plus the largest padding a record placed at the next lap leaves
    /// (less than the record's footprint) exceed the capacity.
    fn check_run_size(&self, lens: &[u32]) -> Result<()> {
        let footprints = lens.iter().map(|&len| footprint(len as u64));
        let (bytes, widest) = footprints.fold((0u64, 0u64), |(sum, max), f| (sum + f, max.max(f)));
        let needed = bytes + widest - layout::RECORD_ALIGN;
        let capacity = self.shared.geometry.capacity;
        if needed > capacity {
            return Err(Error::BatchTooBig {
                path: self.shared.path.clone(),
                records: lens.len(),
                bytes: needed,
                capacity,
            });
        }
        Ok(())
    }

    /// Waits until record `offset` (and every record before it) is on disk, flushing if no
    /// other process is: a publisher confirm. Works under every durability policy; under
    /// `None` it makes this process do the flush. `None` as the timeout waits as long as it
    /// takes.
    ///
    /// Errors: [`Error::Timeout`], [`Error::Poisoned`] if a flush of the file failed before
    /// `offset` was durable (this one or an earlier one: it never will be),
    /// [`Error::InvalidArgument`] for an offset not yet published.
    pub fn wait_durable(&mut self, offset: u64, timeout: Option<Duration>) -> Result<()> {
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let durable = self.wait_durable_checked(offset, timeout);
        self.shared.check_damage()?;
        durable
    }

    fn wait_durable_checked(&mut self, offset: u64, timeout: Option<Duration>) -> Result<()> {
        let tail = self.shared.ring.tail().0;
        if offset >= tail {
            return Err(Error::InvalidArgument {
                argument: "offset",
                why: format!("{offset} is not published yet (next offset is {tail})"),
            });
        }
        self.shared
            .wait_durable(offset, 1u64 << self.slot, timeout, self.lease.fd())
    }

    /// Claims room for a `len`-byte record to be written in place; commit it with
    /// [`Claimed::commit`]. Dropping the claim uncommitted aborts the record. Fails as
    /// [`publish`](Self::publish) does.
    pub fn claim(&mut self, len: usize) -> Result<Claimed<'_>> {
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let len = self.check_len(len)?;
        let claim = self.claim_raw(len);
        self.shared.check_damage()?;
        let claim = claim?;
        Ok(Claimed {
            producer: self,
            claim: Some(claim),
        })
    }

    /// Turns the failure of the flush that published record `offset` waited for into the
    /// error that says so: the record is visible to consumers but not on disk.
    fn not_durable(&self, offset: u64, e: Error) -> Error {
        let (op, source) = match e {
            Error::Io { op, source, .. } => (op, source),
            // The flush failed, now or before: the record is never reported durable.
            Error::Poisoned { source, .. } => ("fdatasync", source),
            Error::Timeout { .. } => ("wait for the flush", std::io::ErrorKind::TimedOut.into()),
            e => return e,
        };
        Error::NotDurable {
            path: self.shared.path.clone(),
            offset,
            op,
            source,
        }
    }

    pub(crate) fn check_len(&self, len: usize) -> Result<u32> {
        let max = self.shared.geometry.max_message;
        // Built only on failure: an `ok_or` would build and drop an `Error` on every publish.
        match u32::try_from(len) {
            Ok(l) if l <= max => Ok(l),
            _ => Err(Error::TooBig { len, max }),
        }
    }

    pub(crate) fn finish(&mut self, claim: Claim, crc: u32) -> Result<u64> {
        self.finish_scheduled(claim, crc, 0)
    }

    /// [`finish`](Self::finish) with the record's schedule word ([`Schedule::word`]).
    #[inline(always)]
    fn finish_scheduled(&mut self, claim: Claim, crc: u32, schedule: u64) -> Result<u64> {
        let offset = claim.offset;
        let timestamp = self.stamp();
        self.shared
            .ring
            .commit(&claim, timestamp, crc, schedule, self.slot_off)
            .map_err(|()| Error::Aborted { offset })?;
        self.after_commit(offset, claim.start + footprint(claim.len as u64))?;
        Ok(offset)
    }

    /// What the durability policy asks after record `offset`, which ends at position `end`,
    /// was committed (the last record of a batch stands for the batch). Inline for `None`,
    /// which asks nothing: a call cost `publish` about 25 instructions (callgrind, `call_cost`).
    #[inline(always)]
    fn after_commit(&mut self, offset: u64, end: u64) -> Result<()> {
        if self.shared.geometry.durability == Durability::None {
            return Ok(());
        }
        self.after_commit_durable(offset, end)
    }

    /// [`after_commit`](Self::after_commit) under `Batch` and `Sync`.
    #[inline(never)]
    fn after_commit_durable(&mut self, offset: u64, end: u64) -> Result<()> {
        match self.shared.geometry.durability {
            Durability::None => {}
            Durability::Sync => {
                let bit = 1u64 << self.slot;
                self.shared
                    .wait_durable(offset, bit, self.timeout, self.lease.fd())
                    .map_err(|e| self.not_durable(offset, e))?;
            }
            Durability::Batch { max_bytes, .. } => {
                // Group commit: the publisher that finds a full batch has this process's
                // flusher flush it (`flusher.rs`). Saturating: a concurrent flush may have
                // moved the durable cursor past this record already.
                let (_, durable_pos) = self.shared.durable();
                if end.saturating_sub(durable_pos) >= max_bytes {
                    if let Some(flusher) = &self.flusher {
                        flusher.nudge();
                    }
                }
            }
        }
        Ok(())
    }

    /// Claims a `len`-byte record, waiting for room as the full policy says. The first attempt
    /// is made here, inline: when it wins (the ring has room below the cached limit) the
    /// publish pays for no wait set-up and no call (`claim_with` holds the rest).
    #[inline(always)]
    fn claim_raw(&mut self, len: u32) -> Result<Claim> {
        self.check_poison()?;
        let slot_off = self.slot_off;
        let attempt = move |ring: &Ring, tail: &mut KnownTail, limit| {
            ring.try_claim(tail, len, limit, slot_off)
        };
        match attempt(&self.shared.ring, &mut self.tail, self.limit) {
            Attempt::Claimed(claim) => Ok(claim),
            _ => self.claim_with(attempt),
        }
    }

    /// The claim loop of the full policy: `attempt(ring, tail, limit)` is one claim attempt
    /// (one record or a run), retried after waiting for room as the policy says. The caller
    /// checked [`check_poison`](Self::check_poison).
    #[inline(never)]
    fn claim_with(
        &mut self,
        mut attempt: impl FnMut(&Ring, &mut KnownTail, u64) -> Attempt,
    ) -> Result<Claim> {
        let mut wait = Wait::sleeping(self.timeout);
        loop {
            let room = match self.try_claim_with(&mut attempt)? {
                Ok(claim) => return Ok(claim),
                Err(room) => room,
            };
            let sleep = match wait.pause(|| room.sleep_cap()) {
                Pause::TimedOut => return Err(self.timed_out(&room)),
                Pause::Spun => continue,
                Pause::Sleep(sleep) => sleep,
            };
            ring::sleep_on(
                &self.shared.ring.region,
                layout::SPACE_WAITERS,
                layout::SPACE_SEQ,
                self.sleeper_bit(),
                || self.has_room(room.end),
                Some(sleep),
            );
        }
    }

    /// A record that can never be durable is not published under a policy that promises it:
    /// [`Error::Poisoned`] once a flush of the file failed (Batch and Sync).
    #[inline]
    pub(crate) fn check_poison(&self) -> Result<()> {
        if self.shared.geometry.durability != Durability::None {
            if let Some(e) = self.shared.poisoned() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// One claim of `len` bytes without waiting: the claim, or the room to wait for.
    /// [`Error::Full`] under [`FullPolicy::Reject`].
    #[cfg(feature = "tokio")]
    pub(crate) fn try_claim(&mut self, len: u32) -> Result<std::result::Result<Claim, Room>> {
        let slot_off = self.slot_off;
        self.try_claim_with(|ring, tail, limit| ring.try_claim(tail, len, limit, slot_off))
    }

    /// One attempt of `attempt` (see [`claim_with`](Self::claim_with)) without waiting, with
    /// the limit recomputed as needed: the claim, or the room to wait for.
    #[inline]
    fn try_claim_with(
        &mut self,
        mut attempt: impl FnMut(&Ring, &mut KnownTail, u64) -> Attempt,
    ) -> Result<std::result::Result<Claim, Room>> {
        loop {
            let ring = &self.shared.ring;
            let end = match attempt(ring, &mut self.tail, self.limit) {
                Attempt::Claimed(c) => return Ok(Ok(c)),
                Attempt::NoSpace { end } => {
                    // A damaged file never frees room: do not wait for it.
                    self.shared.check_damage()?;
                    end
                }
                Attempt::BadTail { offset, pos } => {
                    return Err(Error::Corrupt {
                        path: self.shared.path.clone(),
                        kind: Corruption::Shared(Malformed::Cursor {
                            which: "tail",
                            offset,
                            pos,
                        }),
                    })
                }
            };
            let (limit, bottleneck) = self.scan_limit();
            self.limit = limit;
            if end <= limit {
                continue;
            }
            match bottleneck {
                Bottleneck::Intent { slot, intent } if self.clear_if_dead(slot, intent) => continue,
                // Retry at once only if the flush moved a cursor: a claim pending at the
                // prefix's end (aborted after the claim timeout) can hold them still.
                Bottleneck::Flush if self.flushed_further()? => continue,
                _ => {}
            }
            if self.shared.geometry.full_policy == FullPolicy::Reject {
                return Err(Error::Full {
                    path: self.shared.path.clone(),
                    blocked_by: blocker(&self.shared, &bottleneck),
                });
            }
            let polls = matches!(bottleneck, Bottleneck::Intent { .. } | Bottleneck::Flush);
            return Ok(Err(Room {
                end,
                polls,
                bottleneck,
            }));
        }
    }

    /// The error of a wait for `room` that ran out after this producer's timeout.
    pub(crate) fn timed_out(&self, room: &Room) -> Error {
        Error::Timeout {
            path: self.shared.path.clone(),
            waiting_for: "room in the queue",
            waited: self.timeout.unwrap_or_default(),
            blocked_by: blocker(&self.shared, &room.bottleneck),
        }
    }

    /// Whether a claim ending at `end` would fit now: the condition a producer waiting for
    /// room re-checks after flagging itself (SYNC W).
    pub(crate) fn has_room(&self, end: u64) -> bool {
        scan_limit(&self.shared, self.slot).0 >= end
    }

    /// This producer's bit in the sleeper bitmap of producers waiting for room.
    pub(crate) fn sleeper_bit(&self) -> u64 {
        1u64 << self.slot
    }

    /// Flushes if no one else is, and says whether the durable or the synced cursor moved. A
    /// flush that makes records durable frees no room by itself when the synced cursor did not
    /// move; the next one, which carries the flushed cursor to the disk, does.
    fn flushed_further(&self) -> Result<bool> {
        let cursors = || (self.shared.durable(), self.shared.synced());
        let before = cursors();
        Ok(self.shared.try_flush_for_room(self.lease.fd())? && cursors() != before)
    }

    fn scan_limit(&self) -> (u64, Bottleneck) {
        scan_limit(&self.shared, self.slot)
    }

    /// If producer slot `slot`'s owner is dead, withdraws its stale intent (by CAS, so a new
    /// owner's intent is never touched). Readers abort the record itself after the timeout.
    fn clear_if_dead(&self, slot: u32, intent: u64) -> bool {
        let table = self.shared.producers();
        // Acquire: see the owner that published this intent.
        let owner = table.owner(slot).load(Ordering::Acquire);
        if lease::alive(&self.shared.file, owner) {
            return false;
        }
        // AcqRel: the withdrawal is visible to every later limit scan.
        table
            .intent(slot)
            .compare_exchange(intent, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// How many producer slots running processes hold, and how many of those producers sleep
/// waiting for room.
pub(crate) fn live_producers(shared: &MappedQueue) -> (u32, u32) {
    let table = shared.producers();
    let held = |s: u32| {
        // Acquire: pairs with the owner CAS in `take_slot` (only a snapshot is promised).
        let owner = table.owner(s).load(Ordering::Acquire);
        lease::alive(&shared.file, owner)
    };
    // Relaxed: a snapshot for people; nothing is ordered by it.
    let sleeping = shared
        .ring
        .region
        .u64(layout::SPACE_WAITERS)
        .load(Ordering::Relaxed);
    (0..table.slots())
        .filter(|&s| held(s))
        .fold((0, 0), |(alive, waiting), s| {
            (alive + 1, waiting + u32::from(sleeping & (1u64 << s) != 0))
        })
}

/// Bytes from the oldest position producers must preserve to the tail (see
/// [`Queue::protected_bytes`]).
///
/// [`Queue::protected_bytes`]: crate::Queue::protected_bytes
pub(crate) fn protected_bytes(shared: &MappedQueue) -> u64 {
    let (limit, _) = scan_limit(shared, u32::MAX);
    let (_, tail) = shared.ring.tail();
    tail.saturating_sub(limit.saturating_sub(shared.geometry.capacity))
}

/// Computes the claim limit for a producer in slot `me` (see the module docs); `u32::MAX`
/// counts every slot.
fn scan_limit(shared: &MappedQueue, me: u32) -> (u64, Bottleneck) {
    let table = shared.producers();
    // SYNC T (Acquire): any claim not covered by an intent we read below started at or after
    // this tail, so it lies past the limit we compute.
    let (_, mut low) = shared.ring.tail();
    let mut bottleneck = Bottleneck::Groups;
    if shared.geometry.full_policy != FullPolicy::Overwrite {
        if let Some(g) = shared.min_gating_pos() {
            low = low.min(g);
        }
    }
    // Under a durability policy a record is never overwritten before it is on disk, nor before
    // the flushed cursor on disk has passed it: recovery walks forward from there (`durable.rs`).
    if shared.geometry.durability != Durability::None {
        let synced = shared.synced().1;
        if synced < low {
            low = synced;
            bottleneck = Bottleneck::Flush;
        }
    }
    for s in (0..table.slots()).filter(|&s| s != me) {
        // Acquire (SYNC I): pairs with the Release that clears an intent after its commit.
        let intent = table.intent(s).load(Ordering::Acquire);
        if intent != 0 {
            // Relaxed: written before the intent; a newer value only moves it forward.
            let at = table.intent_pos(s).load(Ordering::Relaxed);
            if at < low {
                low = at;
                bottleneck = Bottleneck::Intent { slot: s, intent };
            }
        }
    }
    (low.saturating_add(shared.geometry.capacity), bottleneck)
}

/// What `bottleneck` is, for an error: the slowest gating group by name (`None` if there is
/// none any more, e.g. it committed or was deleted meanwhile).
fn blocker(shared: &MappedQueue, bottleneck: &Bottleneck) -> Option<Box<Blocker>> {
    let found = match bottleneck {
        Bottleneck::Flush => Some(Blocker::Flush),
        Bottleneck::Intent { .. } => Some(Blocker::Unfinished),
        Bottleneck::Groups => shared
            .group_infos()
            .into_iter()
            .filter(|g| g.gating)
            .min_by_key(|g| g.committed)
            .map(|g| Blocker::Group {
                name: g.name,
                behind: g.lag,
                holder: g.holder.map(|pid| (pid, g.holder_alive)),
            }),
    };
    found.map(Box::new)
}

/// Writes `payload` into `claim`'s bytes and returns its CRC32C if the queue keeps checksums,
/// else 0. (With checksums a large payload's CRC32C is computed in the copy's pass where the CPU
/// can: `crc::copy_crc32c`.)
#[inline(always)]
pub(crate) fn write_checked(shared: &MappedQueue, claim: &Claim, payload: &[u8]) -> u32 {
    if shared.geometry.checksums {
        shared.ring.write_payload_crc(claim, payload)
    } else {
        shared.ring.write_payload(claim, payload);
        0
    }
}

/// The payload's CRC32C if the queue keeps checksums, else 0.
#[inline(always)]
fn checksum(shared: &MappedQueue, payload: &[u8]) -> u32 {
    if shared.geometry.checksums {
        crc::crc32c(payload)
    } else {
        0
    }
}

fn take_slot(shared: &MappedQueue, slot: u32, owner: u128, free: impl Fn(u128) -> bool) -> bool {
    let cell = shared.producers().owner(slot);
    // Acquire: see the previous owner's last intent before deciding.
    let held = cell.load(Ordering::Acquire);
    // AcqRel: Acquire as above; Release publishes our ownership before our first intent.
    free(held)
        && cell
            .compare_exchange(held, owner, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

impl Drop for Producer {
    fn drop(&mut self) {
        if !self.lease.current() {
            // A forked child's copy: the slot is the parent's.
            return;
        }
        // Release: our last commit is visible before the slot reads as free. The lease (a
        // field, dropped after this) is released only then.
        let _ = self.shared.producers().owner(self.slot).compare_exchange(
            self.lease.word(),
            pack(0, 0),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

/// A record claimed in place by [`Producer::claim`]: write the payload through
/// [`as_mut_slice`](Self::as_mut_slice), then [`commit`](Self::commit).
pub struct Claimed<'a> {
    producer: &'a mut Producer,
    claim: Option<Claim>,
}

impl std::fmt::Debug for Claimed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("producer", &self.producer)
            .field("offset", &self.offset())
            .finish_non_exhaustive()
    }
}

impl Claimed<'_> {
    /// The offset this record will have.
    pub fn offset(&self) -> u64 {
        self.claim.as_ref().map_or(0, |c| c.offset)
    }

    /// The record's payload bytes, to fill in place. Their initial content is unspecified. (In
    /// a child forked while the claim was open these are still the parent's record's bytes:
    /// write nothing there; `commit` fails with [`Error::Forked`].)
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let claim = self
            .claim
            .as_ref()
            .expect("claim present until commit or drop");
        let ptr = self.producer.shared.ring.payload_ptr(claim);
        // SAFETY: the claim gives this producer exclusive ownership of the payload bytes until
        // commit: no reader reads them before the commit CAS, and no producer claims them while
        // our intent is live. The borrow of `self` keeps the mapping alive.
        unsafe { std::slice::from_raw_parts_mut(ptr, claim.len as usize) }
    }

    /// Commits the record and returns its offset. In a child forked while the claim was open
    /// it fails with [`Error::Forked`]: the record is the parent's to commit.
    pub fn commit(mut self) -> Result<u64> {
        let producer = &self.producer;
        producer.lease.check_current(&producer.shared.path)?;
        let shared = self.producer.shared.clone();
        shared.check_damage()?;
        let crc = checksum(&shared, self.as_mut_slice());
        let claim = self
            .claim
            .take()
            .expect("claim present until commit or drop");
        let committed = self.producer.finish(claim, crc);
        shared.check_damage()?;
        committed
    }
}

impl Drop for Claimed<'_> {
    fn drop(&mut self) {
        if !self.producer.lease.current() {
            // A forked child's copy: the claim is the parent's, to commit or give up.
            return;
        }
        if let Some(claim) = self.claim.take() {
            // An uncommitted claim is given up at once so readers skip it without waiting.
            let ring = &self.producer.shared.ring;
            ring.abandon(&claim, self.producer.slot_off);
        }
    }
}
