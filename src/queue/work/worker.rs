//! [`Worker`]: one member of a work group. It takes a member slot in the work file (its lease
//! word, locked in that file), dispatches fresh records and redelivers due ones by CAS of
//! their entries' state words, and settles its deliveries (ack, nack, reject, extend) by CAS
//! from exactly the word of the delivery it holds (K3 in `protocol/work.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::file::{corrupt, entry_fault, WorkFile};
use super::{now_ms, DeadLetter, DeadReason, OpenProducer};
use crate::error::{Corruption, Error, Result};
use crate::mapping::lease::{self, Lease};
use crate::mapping::trust::Trust;
use crate::protocol::layout::Durability;
use crate::protocol::ring::sane_cursor;
use crate::protocol::sync::{unpack, Ordering};
use crate::protocol::work::{
    pack_state, schedule_delay_ms, schedule_ttl_ms, Counter, Entry, State, MEMBERS, NO_HOLDER,
};
use crate::queue::cursor::{Cursor, Next, Reads};
use crate::queue::mapped::MappedQueue;
use crate::queue::producer::Producer;
use crate::runtime::clock;
use crate::runtime::wait::{Pause, Wait};

/// The longest a worker sleeps between two redelivery scans, and the longest a scan is put
/// off while records are in flight (`earliest` is a hint that a racing scan can raise).
const SCAN_EVERY_MS: u64 = 50;

/// A delivery a worker holds: what [`Worker::ack`], [`Worker::nack`], [`Worker::reject`] and
/// [`Worker::extend`] take. `Copy`, and it outlives the [`Job`], so a worker may hold many
/// deliveries and settle them in any order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    offset: u64,
    count: u32,
    deadline_ms: u64,
}

impl Ticket {
    /// The record's offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// When the lease of this delivery ends, wall-clock ms since the Unix epoch.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// Which delivery of the record this is (1 the first time).
    pub fn deliveries(&self) -> u32 {
        self.count
    }

    /// The ticket of the given parts, as [`Ticket::offset`], [`Ticket::deliveries`] and
    /// [`Ticket::deadline_ms`] report them: for a caller that keeps tickets outside Rust (an
    /// FFI peer, a thread pool passing integers). A ticket whose parts are not those of a
    /// delivery the worker holds settles nothing: [`Worker::ack`] and the others refuse it
    /// with [`Error::LeaseExpired`], as they refuse a ticket whose lease has run out.
    pub fn from_parts(offset: u64, deliveries: u32, deadline_ms: u64) -> Ticket {
        Ticket {
            offset,
            count: deliveries,
            deadline_ms,
        }
    }
}

/// One delivered record, borrowed from the worker until its next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job<'a> {
    /// What settles this delivery.
    pub ticket: Ticket,
    /// The record's offset.
    pub offset: u64,
    /// When it was published, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// How many times it has been delivered, this time included (1 the first time).
    pub deliveries: u32,
    /// The payload (a validated copy).
    pub payload: &'a [u8],
}

/// A member of a work group ([`Queue::worker`](crate::Queue::worker)). One per thread (`Send`, not `Sync`).
pub struct Worker {
    shared: Arc<MappedQueue>,
    /// The work file, watched while the worker lives (removed, replaced, shrunk).
    work: Arc<WorkFile>,
    group: String,
    slot: u32,
    /// Our member slot (the `holder` of our deliveries).
    member: u8,
    lease: Lease,
    /// The read position of the record being dispatched or redelivered.
    cursor: Cursor,
    /// The payload of the last delivery.
    buf: Vec<u8>,
    /// The dead-letter queue's producer, opened at the first dead letter.
    dlq: Option<Producer>,
    /// The source path dead letters name: the queue's path made absolute at open, so that a
    /// replay from another directory finds it.
    source: String,
    /// How to open it, and whose file it may be (the source queue's trust).
    open_dlq: OpenProducer,
    trust: Trust,
    /// When this worker last scanned for due records (wall-clock ms).
    last_scan: u64,
    /// When this worker last synced the work file (`Batch`, `CLOCK_MONOTONIC` ns).
    last_sync: u64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("path", &self.shared.path)
            .field("group", &self.group)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

/// What a worker found nothing to do for, and so waits for a change of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Idle {
    /// The next record (this offset) is not committed: its slot tag as seen.
    Pending(u64, u64),
    /// The window is full: the group's committed cursor word as seen.
    Full(u128),
}

/// What one attempt of a [`Poller`] found.
pub(crate) enum Step<J, I> {
    /// Something to hand out.
    Job(J),
    /// Nothing to do: what to wait for a change of.
    Idle(I),
    /// Progress without a delivery (an entry settled by someone): try again at once.
    Again,
}

/// A worker's step: a delivery (its ticket and the record's timestamp; the payload is in the
/// worker's buffer), or what it waits for.
pub(crate) type WorkerStep = Step<(Ticket, u64), Idle>;

/// Something that polls for work in attempts and sleeps between them: a [`Worker`], or a
/// topic's worker over one `Worker` per partition. [`poll_loop`] is the one wait loop of both.
pub(crate) trait Poller {
    /// What an attempt hands out.
    type Found;
    /// What an idle attempt waits for a change of.
    type Idle;
    /// One attempt at finding work, without waiting.
    fn attempt(&mut self) -> Result<Step<Self::Found, Self::Idle>>;
    /// Sleeps until `idle` may have changed, a redelivery may be due, or `cap` passed.
    fn sleep(&mut self, idle: &Self::Idle, cap: Duration);
}

/// The wait loop of every work poll: attempt; when idle, spin, then sleep (capped by the
/// redelivery scan's period), until something is found or `timeout` passed (`Ok(None)`).
pub(crate) fn poll_loop<P: Poller>(
    poller: &mut P,
    timeout: Option<Duration>,
) -> Result<Option<P::Found>> {
    let mut wait = Wait::spinning(timeout);
    loop {
        let idle = match poller.attempt()? {
            Step::Job(found) => return Ok(Some(found)),
            Step::Again => continue,
            Step::Idle(idle) => idle,
        };
        match wait.pause(|| Duration::from_millis(SCAN_EVERY_MS)) {
            Pause::TimedOut => return Ok(None),
            Pause::Spun => {}
            Pause::Sleep(cap) => poller.sleep(&idle, cap),
        }
    }
}

impl Worker {
    pub(super) fn new(
        shared: Arc<MappedQueue>,
        work: WorkFile,
        group: &str,
        slot: u32,
        trust: Trust,
        open_dlq: OpenProducer,
    ) -> Result<Worker> {
        let lease = Lease::new(&work.file, &work.path).map_err(|source| Error::Io {
            path: work.path.clone(),
            op: "take a worker lease",
            source,
        })?;
        let t = work.table();
        let word = lease.word();
        let take = |m: u32, free: &dyn Fn(u128) -> bool| {
            // Acquire: a dead holder's last writes are visible before we reuse its slot.
            let held = t.member(m).load(Ordering::Acquire);
            // AcqRel: Release publishes the slot as ours; Acquire as above.
            free(held)
                && t.member(m)
                    .compare_exchange(held, word, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
        };
        let dead = |held| !lease::alive(&work.file, held);
        let member = (0..MEMBERS)
            .find(|&m| take(m, &|held| held == 0))
            .or_else(|| (0..MEMBERS).find(|&m| take(m, &dead)))
            .ok_or_else(|| Error::TooManyMembers {
                path: work.path.clone(),
                slots: MEMBERS,
            })?;
        // Relaxed: information for `pending` and people.
        t.joined(member).store(now_ms(), Ordering::Relaxed);
        // The slot's previous owner may have been killed asleep: take its sleeper mark out.
        t.leave(&shared.ring.region, 1u64 << slot, member);
        let verify = shared.geometry.checksums;
        let source = std::path::absolute(&shared.path)
            .unwrap_or_else(|_| shared.path.clone())
            .to_string_lossy()
            .into_owned();
        let worker = Worker {
            source,
            shared,
            work: work.watch(),
            group: group.into(),
            slot,
            member: member as u8,
            lease,
            cursor: Cursor::new((0, 0), verify),
            buf: Vec::new(),
            dlq: None,
            open_dlq,
            trust,
            last_scan: 0,
            last_sync: clock::monotonic_ns(),
        };
        // Final entries at the base that nobody moved it over (a settler killed before its
        // advance, or a restart that kept the entries but not the cursor).
        worker.help_base()?;
        worker.release_held()?;
        Ok(worker)
    }

    /// The next record for this worker: a due redelivery (the one due first) or a fresh
    /// record, waiting up to `timeout` (`None`: for ever) for one. `Ok(None)` when the timeout
    /// passed. The record is held until its ticket's deadline (the group's visibility
    /// timeout): settle it before then, or it is delivered again to anyone.
    ///
    /// Errors: [`Error::UnknownGroup`] once the group was deleted, [`Error::Corrupt`] for a
    /// damaged work file or record (a record that fails its checksum is dead-lettered without
    /// a copy first), [`Error::Truncated`] and [`Error::Detached`] as for a consumer,
    /// [`Error::Forked`] in a child forked after the worker was made.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<Job<'_>>> {
        let found = poll_loop(self, timeout)?;
        Ok(found.map(|(ticket, timestamp_ns)| self.job(ticket, timestamp_ns)))
    }

    /// The job of delivery `ticket` (of a record published at `timestamp_ns`) whose payload
    /// the last attempt copied into this worker's buffer.
    pub(crate) fn job(&self, ticket: Ticket, timestamp_ns: u64) -> Job<'_> {
        Job {
            ticket,
            offset: ticket.offset,
            timestamp_ns,
            deliveries: ticket.count,
            payload: &self.buf,
        }
    }

    /// Acks a delivery: the record is done. [`Error::LeaseExpired`] (nothing changed) if the
    /// ticket's deadline passed or the delivery was settled already.
    pub fn ack(&mut self, ticket: Ticket) -> Result<()> {
        self.check()?;
        let (seen, e) = self.held(ticket)?;
        if !self
            .work
            .table()
            .transition(seen, e.to(State::Acked, e.deadline, e.holder))
        {
            return Err(self.lease_expired(ticket.offset));
        }
        self.count(Counter::Acked);
        crate::crash::point("work.ack.before_advance");
        self.settled(ticket.offset)
    }

    /// Gives a delivery back: delivered again (to any worker) after `delay`, or after the
    /// group's back-off for `None`. A record delivered the group's max deliveries is
    /// dead-lettered instead ([`DeadReason::MaxDeliveries`]). [`Error::LeaseExpired`] as for
    /// [`ack`](Self::ack).
    pub fn nack(&mut self, ticket: Ticket, delay: Option<Duration>) -> Result<()> {
        self.check()?;
        let (seen, e) = self.held(ticket)?;
        let max = self.work.config.max_deliveries;
        if max != 0 && e.count >= max {
            return self.dead_letter_held(seen, e, DeadReason::MaxDeliveries);
        }
        let delay = delay.map_or_else(|| self.work.config.backoff_ms(e.count), super::ms);
        let due = now_ms().saturating_add(delay);
        let t = self.work.table();
        if !t.transition(seen, e.to(State::Waiting, due, NO_HOLDER)) {
            return Err(self.lease_expired(ticket.offset));
        }
        t.note_deadline(due);
        self.shared.ring.notify_data();
        self.durable(ticket.offset, false)
    }

    /// Rejects a delivery: the record is dead-lettered ([`DeadReason::Rejected`]), copied to
    /// the group's dead-letter queue if it has one. [`Error::LeaseExpired`] as for
    /// [`ack`](Self::ack).
    pub fn reject(&mut self, ticket: Ticket) -> Result<()> {
        self.check()?;
        let (seen, e) = self.held(ticket)?;
        self.dead_letter_held(seen, e, DeadReason::Rejected)
    }

    /// Extends the lease of a delivery to `by` from now; the ticket carries the new deadline.
    /// [`Error::LeaseExpired`] as for [`ack`](Self::ack).
    pub fn extend(&mut self, ticket: &mut Ticket, by: Duration) -> Result<()> {
        self.check()?;
        let (seen, e) = self.held(*ticket)?;
        let deadline = now_ms().saturating_add(super::ms(by));
        if !self
            .work
            .table()
            .transition(seen, e.to(State::InFlight, deadline, e.holder))
        {
            return Err(self.lease_expired(ticket.offset));
        }
        self.work.table().note_deadline(deadline);
        ticket.deadline_ms = deadline;
        self.durable(ticket.offset, false)
    }

    /// Gives back the deliveries our member slot holds: at join, those of the slot's previous
    /// owner (killed: an entry's holder is the slot, so they would otherwise be ours to
    /// settle); at drop, our own. Each becomes WAITING, due now, its count kept (delivered
    /// again at once, to anyone); a dead-lettering left behind is due for the next scan.
    fn release_held(&self) -> Result<()> {
        let t = self.work.table();
        let (base, _) = unpack(self.shared.checked_committed(self.slot)?);
        // Acquire: pairs with `advance_next` (AcqRel), after the dispatches it follows.
        let (next, _) = unpack(t.next().load(Ordering::Acquire));
        let now = now_ms();
        for x in super::unsettled(base, next, self.work.config.window) {
            let Some(e) = self.work.load(x)? else {
                continue;
            };
            let to = match e.state {
                State::InFlight if e.holder == self.member => e.to(State::Waiting, now, NO_HOLDER),
                State::DeadLettering(_) if e.holder == self.member => {
                    e.to(e.state, now.saturating_sub(1), NO_HOLDER)
                }
                _ => continue,
            };
            // A failed CAS: the entry changed meanwhile (a scan took it): nothing to do.
            if t.transition(pack_state(e), to) {
                t.note_deadline(to.deadline);
            }
        }
        Ok(())
    }

    /// Fails if this handle cannot be used: forked, a damaged file, a deleted group.
    fn check(&self) -> Result<()> {
        self.lease.check_current(&self.work.path)?;
        self.shared.check_damage()?;
        self.work.check_damage()?;
        if !self.shared.group_active(self.slot) || !self.shared.is_work(self.slot) {
            return Err(Error::UnknownGroup(self.group.clone()));
        }
        Ok(())
    }

    fn lease_expired(&self, offset: u64) -> Error {
        Error::LeaseExpired {
            path: self.shared.path.clone(),
            group: self.group.clone(),
            offset,
        }
    }

    /// The state word of `ticket`'s delivery if this worker still holds it (K3).
    fn held(&self, ticket: Ticket) -> Result<(u128, Entry)> {
        if now_ms() > ticket.deadline_ms {
            return Err(self.lease_expired(ticket.offset));
        }
        let e = Entry {
            offset: ticket.offset,
            state: State::InFlight,
            deadline: ticket.deadline_ms,
            count: ticket.count,
            holder: self.member,
        };
        Ok((pack_state(e), e))
    }

    fn count(&self, c: Counter) {
        // Relaxed: statistics.
        self.work.table().counter(c).fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt at finding work: a due record first, then a fresh one.
    fn step(&mut self) -> Result<WorkerStep> {
        let now = now_ms();
        // Relaxed: a hint; see `SCAN_EVERY_MS`.
        let earliest = self.work.table().earliest().load(Ordering::Relaxed);
        if earliest <= now || now.saturating_sub(self.last_scan) >= SCAN_EVERY_MS {
            self.last_scan = now;
            if let Some(step) = self.scan(now)? {
                return Ok(step);
            }
        }
        self.dispatch(now)
    }

    /// The redelivery scan over `base..next`: takes the due entry with the smallest deadline
    /// (delayed records come out by due time) and recomputes `earliest`.
    fn scan(&mut self, now: u64) -> Result<Option<WorkerStep>> {
        let t = self.work.table();
        // Relaxed: compared and replaced by the CAS below only.
        let before = t.earliest().load(Ordering::Relaxed);
        let (base, _) = unpack(self.shared.checked_committed(self.slot)?);
        // Acquire: pairs with `advance_next` (AcqRel), after the dispatches it follows.
        let (next, _) = unpack(t.next().load(Ordering::Acquire));
        let mut best: Option<(u64, Entry)> = None;
        let mut low = u64::MAX;
        for x in super::unsettled(base, next, self.work.config.window) {
            let Some(e) = self.work.load(x)? else {
                continue;
            };
            // When the entry is due: a lease is over once its deadline has passed, a wait
            // once its due time has come.
            let due_at = match e.state {
                State::InFlight | State::DeadLettering(_) => e.deadline.saturating_add(1),
                State::Waiting => e.deadline,
                _ => continue,
            };
            match best {
                _ if due_at > now => low = low.min(due_at),
                Some((b, _)) if b <= due_at => low = low.min(due_at),
                _ => {
                    if let Some((b, _)) = best {
                        low = low.min(b);
                    }
                    best = Some((due_at, e));
                }
            }
        }
        // Relaxed: a hint. A failed CAS means a deadline was lowered meanwhile: keep it.
        let _ = t
            .earliest()
            .compare_exchange(before, low, Ordering::Relaxed, Ordering::Relaxed);
        let Some((_, e)) = best else { return Ok(None) };
        let seen = pack_state(e);
        if let State::DeadLettering(reason) = e.state {
            self.dead_letter(seen, e, reason)?;
            return Ok(Some(Step::Again));
        }
        let max = self.work.config.max_deliveries;
        if max != 0 && e.count >= max {
            self.dead_letter(seen, e, DeadReason::MaxDeliveries)?;
            return Ok(Some(Step::Again));
        }
        let (timestamp, schedule) = match self.read_held(seen, e.offset)? {
            Some(read) => read,
            None => return Ok(Some(Step::Again)),
        };
        let t = self.work.table();
        if self.expired(timestamp, schedule, now) {
            self.expire(seen, e)?;
            return Ok(Some(Step::Again));
        }
        let to = Entry {
            state: State::InFlight,
            deadline: now.saturating_add(self.work.config.visibility_ms),
            count: e.count.saturating_add(1),
            holder: self.member,
            ..e
        };
        if !t.transition(seen, to) {
            return Ok(Some(Step::Again));
        }
        crate::crash::point("work.redeliver.after_cas");
        t.note_deadline(to.deadline);
        self.count(if e.count == 0 {
            Counter::Delivered
        } else {
            Counter::Redelivered
        });
        Ok(Some(Step::Job((ticket_of(to), timestamp))))
    }

    /// Dispatches the record at `next`, if there is one and the window has room.
    fn dispatch(&mut self, now: u64) -> Result<WorkerStep> {
        let t = self.work.table();
        let window = u64::from(self.work.config.window);
        // Acquire: pairs with `advance_next` (AcqRel), after the dispatches it follows.
        let seen_next = t.next().load(Ordering::Acquire);
        let (o, p) = unpack(seen_next);
        let base_word = self.shared.checked_committed(self.slot)?;
        let (base, base_pos) = unpack(base_word);
        if o < base {
            // A new file (0), or everything below base settled: start at base.
            t.advance_next(seen_next, (base, base_pos));
            return Ok(Step::Again);
        }
        if o >= base + window {
            return self.full(base_word);
        }
        if !sane_cursor(o, p) {
            return Err(self.bad_entry(o, seen_next));
        }
        self.cursor.move_to((o, p));
        let next = match self.cursor.step(&self.shared, Reads::COPY_ALL, true) {
            Err(e @ Error::Lagged { .. }) => return self.lagged(seen_next, e),
            next => next?,
        };
        // Aborted offsets the cursor skipped hold no record: settle them (ACKED, count 0) so
        // base can pass them, as far as the window reaches.
        let reached = self.cursor.offset();
        for x in o..reached.min(base + window) {
            self.settle_aborted(x)?;
        }
        if reached > o && self.help_base()? {
            return Ok(Step::Again);
        }
        let ready = match next {
            Next::Pending { tag, .. } => {
                if reached > o && reached < base + window {
                    t.advance_next(seen_next, (reached, self.cursor.pos()));
                }
                return Ok(Step::Idle(Idle::Pending(reached, tag)));
            }
            Next::Ready(ready) => ready,
        };
        if reached >= base + window {
            return self.full(base_word);
        }
        let at = self.cursor.pos();
        let undispatched = t.undispatched(reached);
        if undispatched
            .map_err(|w| self.bad_entry(reached, w))?
            .is_none()
        {
            self.pass_dispatched(seen_next, reached);
            return Ok(Step::Again);
        }
        let schedule = self.shared.ring.schedule_at(ready.start);
        let delivered = match self.cursor.deliver(&self.shared, Reads::COPY_ALL, ready) {
            Ok(m) => {
                self.buf.clear();
                self.buf.extend_from_slice(m.payload);
                Ok(m.timestamp_ns)
            }
            Err(e) => Err(e),
        };
        let end = self.cursor.pos();
        let timestamp = match delivered {
            Ok(ts) => ts,
            Err(
                e @ Error::Corrupt {
                    kind: Corruption::Checksum { .. },
                    ..
                },
            ) => {
                // A damaged record is settled as dead (no copy: its bytes are bad), so the
                // group moves on; the error says which.
                let dead = t.dispatch(Entry::new(reached, State::Dead), at);
                if dead.map_err(|w| self.bad_entry(reached, w))? {
                    t.advance_next(seen_next, (reached + 1, end));
                    self.count(Counter::DeadLettered);
                    self.settled(reached)?;
                }
                return Err(e);
            }
            Err(e @ Error::Lagged { .. }) => return self.lagged(seen_next, e),
            Err(e) => return Err(e),
        };
        let to = self.first_state(reached, timestamp, schedule, now);
        if !t.dispatch(to, at).map_err(|w| self.bad_entry(reached, w))? {
            t.advance_next(seen_next, (reached + 1, end));
            return Ok(Step::Again);
        }
        crate::crash::point("work.dispatch.after_cas");
        t.advance_next(seen_next, (reached + 1, end));
        match to.state {
            State::InFlight => {
                t.note_deadline(to.deadline);
                self.count(Counter::Delivered);
                Ok(Step::Job((ticket_of(to), timestamp)))
            }
            State::Waiting => {
                t.note_deadline(to.deadline);
                Ok(Step::Again)
            }
            State::DeadLettering(reason) => {
                self.finish_dead_letter(to, reason)?;
                Ok(Step::Again)
            }
            _ => {
                self.count(Counter::Expired);
                self.settled(reached)?;
                Ok(Step::Again)
            }
        }
    }

    /// A read at `next` (the word `seen_next`) found the record overwritten. Producers pass
    /// only settled offsets, so usually `next` is stale: someone settled the record and moved
    /// `next` on meanwhile, and the worker tries again. Otherwise the record was lost before
    /// the group protected it (a group created at `Earliest` while producers with an older
    /// claim limit overwrote its first records): the error, see ARCHITECTURE.md "Known limits".
    fn lagged(&self, seen_next: u128, e: Error) -> Result<WorkerStep> {
        let t = self.work.table();
        // Acquire: as in `dispatch`.
        if t.next().load(Ordering::Acquire) != seen_next {
            return Ok(Step::Again);
        }
        // Settled and passed by the base meanwhile: the next attempt moves `next` to the base.
        let (o, _) = unpack(seen_next);
        if self.shared.committed(self.slot).0 > o {
            return Ok(Step::Again);
        }
        // Dispatched by a worker that has not moved `next` past it (stopped, or killed).
        if matches!(t.undispatched(o), Ok(None)) && self.pass_dispatched(seen_next, o) {
            return Ok(Step::Again);
        }
        Err(e)
    }

    /// Someone dispatched `o` (the entry holds it) but `next` (the word `seen_next`) is not
    /// past it yet: help move it there. False if `o + 1`'s position cannot be told (lapped).
    fn pass_dispatched(&self, seen_next: u128, o: u64) -> bool {
        let Some(end) = self.shared.ring.resolve(o + 1) else {
            return false;
        };
        self.work.table().advance_next(seen_next, (o + 1, end));
        true
    }

    /// The window is full: help move the base over entries settled at it (their settler may
    /// have been killed before it did); idle if it cannot move.
    fn full(&mut self, base_word: u128) -> Result<WorkerStep> {
        if self.help_base()? {
            return Ok(Step::Again);
        }
        Ok(Step::Idle(Idle::Full(base_word)))
    }

    /// Reads the record of the entry whose word is `seen` into `buf`: `(timestamp, schedule
    /// word)`, or `None` if the entry changed meanwhile. The entry's `pos` is shared with the
    /// offsets `W` apart, and the record's bytes are protected only while the entry is not
    /// final: once settled, the entry may serve a later offset and the producers may reuse
    /// the record's bytes. So the read is checked against the word after it (a seqlock read,
    /// K1 and K2): unchanged, the read was of this record; changed, what it read (or failed
    /// to read) means nothing.
    fn read_held(&mut self, seen: u128, offset: u64) -> Result<Option<(u64, u64)>> {
        // Acquire: pairs with the Release `fetch_max` before the dispatch CAS (SYNC K).
        let pos = self.work.table().pos(offset).load(Ordering::Acquire);
        let read = self.read(offset, pos);
        // SYNC K (SeqCst): the word after the read; unchanged, the entry was not final
        // throughout (its words never repeat), so `pos` was this offset's and the bytes ours.
        if self.work.table().state(offset).load(Ordering::SeqCst) != seen {
            return Ok(None);
        }
        read.map(Some)
    }

    /// The state a fresh record is dispatched to: expired (DEAD, or DEAD_LETTERING when
    /// expired records are dead-lettered), delayed (WAITING until due), or in flight with us.
    fn first_state(&self, offset: u64, timestamp: u64, schedule: u64, now: u64) -> Entry {
        let vis = self.work.config.visibility_ms;
        if self.expired(timestamp, schedule, now) {
            return if self.work.config.dead_letter_expired && self.has_dlq() {
                Entry {
                    offset,
                    state: State::DeadLettering(DeadReason::Expired),
                    deadline: now.saturating_add(vis),
                    count: 0,
                    holder: self.member,
                }
            } else {
                Entry::new(offset, State::Dead)
            };
        }
        // Only a delayed record waits: `now` was read before the record's commit, so a record
        // without a delay may carry a later timestamp, and must not be parked for it.
        let delay = schedule_delay_ms(schedule);
        let due = (timestamp / 1_000_000).saturating_add(delay);
        if delay > 0 && due > now {
            return Entry {
                deadline: due,
                ..Entry::new(offset, State::Waiting)
            };
        }
        Entry {
            offset,
            state: State::InFlight,
            deadline: now.saturating_add(vis),
            count: 1,
            holder: self.member,
        }
    }

    /// Whether a record with this timestamp (ns) and schedule word is past its time to live
    /// or the group's max age at `now` (ms).
    fn expired(&self, timestamp: u64, schedule: u64, now: u64) -> bool {
        let born = timestamp / 1_000_000;
        let ttl = schedule_ttl_ms(schedule);
        let max_age = self.work.config.max_age_ms;
        (ttl != 0 && now > born.saturating_add(ttl))
            || (max_age != 0 && now > born.saturating_add(max_age))
    }

    /// Expires a due record found by the scan: DEAD, or dead-lettered if the group says so.
    fn expire(&mut self, seen: u128, e: Entry) -> Result<()> {
        if self.work.config.dead_letter_expired && self.has_dlq() {
            return self.dead_letter(seen, e, DeadReason::Expired).map(drop);
        }
        if self
            .work
            .table()
            .transition(seen, e.to(State::Dead, e.deadline, NO_HOLDER))
        {
            self.count(Counter::Expired);
            self.settled(e.offset)?;
        }
        Ok(())
    }

    fn has_dlq(&self) -> bool {
        !self.work.config.dead_letter.is_empty()
    }

    /// Dead-letters a delivery this worker holds; [`Error::LeaseExpired`] if it lost it.
    fn dead_letter_held(&mut self, seen: u128, e: Entry, reason: DeadReason) -> Result<()> {
        if self.dead_letter(seen, e, reason)? {
            Ok(())
        } else {
            Err(self.lease_expired(e.offset))
        }
    }

    /// Dead-letters the entry whose word is `seen`: straight to DEAD without a dead-letter
    /// queue; otherwise DEAD_LETTERING (our lease on the copy), the copy published, then DEAD.
    /// False if someone else changed the entry first.
    fn dead_letter(&mut self, seen: u128, e: Entry, reason: DeadReason) -> Result<bool> {
        let t = self.work.table();
        let counter = if reason == DeadReason::Expired {
            Counter::Expired
        } else {
            Counter::DeadLettered
        };
        if !self.has_dlq() {
            if !t.transition(seen, e.to(State::Dead, e.deadline, NO_HOLDER)) {
                return Ok(false);
            }
            self.count(counter);
            self.settled(e.offset)?;
            return Ok(true);
        }
        let lettering = e.to(
            State::DeadLettering(reason),
            now_ms().saturating_add(self.work.config.visibility_ms),
            self.member,
        );
        if !t.transition(seen, lettering) {
            return Ok(false);
        }
        t.note_deadline(lettering.deadline);
        self.finish_dead_letter(lettering, reason)?;
        Ok(true)
    }

    /// The rest of a dead-lettering this worker holds (`lettering`): publish the copy, then
    /// DEAD. A worker killed in between leaves DEAD_LETTERING, which a scan after its deadline
    /// dead-letters again: the copy is at least once.
    fn finish_dead_letter(&mut self, lettering: Entry, reason: DeadReason) -> Result<()> {
        crate::crash::point("work.dead_letter.before_publish");
        let Some((timestamp, _)) = self.read_held(pack_state(lettering), lettering.offset)? else {
            // Our lease ran out and someone else dead-lettered it: the copy is theirs.
            return Ok(());
        };
        let t = self.work.table();
        let mut record = Vec::with_capacity(self.buf.len() + 64);
        DeadLetter {
            offset: lettering.offset,
            timestamp_ns: timestamp,
            dead_at_ns: clock::now_ns(),
            deliveries: lettering.count,
            reason,
            source: &self.source,
            payload: &self.buf,
        }
        .encode(&mut record);
        if self.dlq.is_none() {
            let path = std::path::Path::new(&self.work.config.dead_letter);
            self.dlq = Some((self.open_dlq)(path, &self.trust)?);
        }
        if let Some(dlq) = self.dlq.as_mut() {
            dlq.publish(&record)?;
        }
        crate::crash::point("work.dead_letter.after_publish");
        let dead = lettering.to(State::Dead, lettering.deadline, NO_HOLDER);
        if t.transition(pack_state(lettering), dead) {
            self.count(if reason == DeadReason::Expired {
                Counter::Expired
            } else {
                Counter::DeadLettered
            });
            self.settled(lettering.offset)?;
        }
        Ok(())
    }

    /// Settles aborted offset `x` (no record): ACKED with count 0, unless done already.
    fn settle_aborted(&self, x: u64) -> Result<()> {
        let t = self.work.table();
        if let Some(seen) = t.undispatched(x).map_err(|w| self.bad_entry(x, w))? {
            // A failed CAS: someone else settled it.
            t.transition(seen, Entry::new(x, State::Acked));
        }
        Ok(())
    }

    /// Reads record `offset` at `pos` into `buf`: `(timestamp, schedule word)`.
    fn read(&mut self, offset: u64, pos: u64) -> Result<(u64, u64)> {
        self.cursor.move_to((offset, pos));
        let ready = match self.cursor.step(&self.shared, Reads::COPY_ALL, true)? {
            Next::Ready(r) if self.cursor.offset() == offset => r,
            _ => return Err(self.bad_entry(offset, u128::from(pos))),
        };
        let schedule = self.shared.ring.schedule_at(ready.start);
        let m = self.cursor.deliver(&self.shared, Reads::COPY_ALL, ready)?;
        self.buf.clear();
        self.buf.extend_from_slice(m.payload);
        Ok((m.timestamp_ns, schedule))
    }

    fn bad_entry(&self, offset: u64, word: u128) -> Error {
        corrupt(&self.work.path, entry_fault(offset, word))
    }

    /// Advances base for entries someone else settled; under `Sync` makes the moved cursor
    /// durable (their settlers synced the entries).
    fn help_base(&self) -> Result<bool> {
        let moved = self.advance_base()?;
        if moved && self.shared.geometry.durability == Durability::Sync {
            self.shared.sync_committed(self.slot)?;
        }
        Ok(moved)
    }

    /// After `offset` became final: advance base, then make it durable as the queue says.
    fn settled(&mut self, offset: u64) -> Result<()> {
        let moved = self.advance_base()?;
        self.durable(offset, moved)
    }

    /// Moves the group's committed cursor over every final entry at it (SYNC K, then SYNC G
    /// and W through the existing committed-cursor CAS and space wake-up). A failed CAS means
    /// someone else moved it: reload and go on. True if this call moved it.
    fn advance_base(&self) -> Result<bool> {
        let shared = &self.shared;
        let moved = self
            .work
            .table()
            .advance_base(
                || shared.committed_word(self.slot),
                |seen, o, pos| shared.swap_committed(self.slot, seen, o, pos).is_ok(),
                |o| shared.ring.resolve(o),
            )
            .map_err(|(offset, word)| self.bad_entry(offset, word))?;
        if moved {
            crate::crash::point("work.advance.after_base");
            shared.ring.notify_space();
            // Workers waiting for room in the window.
            shared.ring.notify_data();
        }
        Ok(moved)
    }

    /// Makes a settled entry durable: under `Sync` its page (and the committed cursor if base
    /// moved) now; under `Batch` at the batch pace.
    fn durable(&mut self, offset: u64, moved: bool) -> Result<()> {
        match self.shared.geometry.durability {
            Durability::None => Ok(()),
            Durability::Batch { .. } => self.batch_sync(),
            Durability::Sync => {
                let (off, len) = self.work.table().entry_range(offset);
                self.work.sync_range(off, len)?;
                if moved {
                    self.shared.sync_committed(self.slot)?;
                }
                Ok(())
            }
        }
    }

    /// Under `Batch`: syncs the work file and the committed cursor if the last sync is older
    /// than the batch's max delay.
    fn batch_sync(&mut self) -> Result<()> {
        let Durability::Batch { max_delay, .. } = self.shared.geometry.durability else {
            return Ok(());
        };
        let now = clock::monotonic_ns();
        if now.saturating_sub(self.last_sync) < clock::saturating_ns(max_delay) {
            return Ok(());
        }
        self.last_sync = now;
        self.work.sync_all()?;
        self.shared.sync_committed(self.slot)
    }

    /// `cap` shortened to when a redelivery may be due: the window's `earliest` deadline, and
    /// the redelivery scan's period.
    pub(crate) fn sleep_cap(&self, cap: Duration) -> Duration {
        // Relaxed: a hint of when the next scan is due.
        let earliest = self.work.table().earliest().load(Ordering::Relaxed);
        let due = earliest.saturating_sub(now_ms());
        cap.min(Duration::from_millis(due))
            .min(Duration::from_millis(SCAN_EVERY_MS))
    }

    /// Whether what an idle attempt waited for (`idle`) changed since: the record it waited on
    /// was committed (or its claim aborted), or the group's committed cursor moved.
    pub(crate) fn changed(&self, idle: &Idle) -> bool {
        match *idle {
            // SYNC W (SeqCst): the sleeper re-checks this after flagging itself.
            Idle::Pending(o, tag) => self.shared.ring.slot_tag(o).load(Ordering::SeqCst) != tag,
            Idle::Full(word) => self.shared.committed_word(self.slot) != word,
        }
    }
}

impl Poller for Worker {
    type Found = (Ticket, u64);
    type Idle = Idle;

    fn attempt(&mut self) -> Result<WorkerStep> {
        self.check()?;
        // Before the step: an error here must not strand a delivery just taken.
        self.batch_sync()?;
        self.step()
    }

    /// Sleeps on the queue's data word with the group's bit, shared by its sleeping workers
    /// (`WorkTable::sleep`, SYNC W).
    fn sleep(&mut self, idle: &Idle, cap: Duration) {
        let cap = self.sleep_cap(cap);
        if cap.is_zero() {
            return;
        }
        self.work.table().sleep(
            &self.shared.ring.region,
            1u64 << self.slot,
            u32::from(self.member),
            || self.changed(idle),
            Some(cap),
        );
    }
}

/// The ticket of delivery `e`.
fn ticket_of(e: Entry) -> Ticket {
    Ticket {
        offset: e.offset,
        count: e.count,
        deadline_ms: e.deadline,
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.lease.current() {
            // A forked child's copy: the member slot is the parent's.
            return;
        }
        if matches!(self.shared.geometry.durability, Durability::Batch { .. }) {
            // Our last settlements reach the disk as we go, not at another worker's pace.
            let _ = self.work.sync_all();
            let _ = self.shared.sync_committed(self.slot);
        }
        // Our deliveries go back to the group now: nobody can settle them after us.
        let _ = self.release_held();
        // Release: our settlements happen-before the slot's next owner.
        let _ = self
            .work
            .table()
            .member(self.member.into())
            .compare_exchange(self.lease.word(), 0, Ordering::Release, Ordering::Relaxed);
    }
}
