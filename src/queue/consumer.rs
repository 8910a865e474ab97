//! [`Consumer`]: one member of a consumer group reading records in offset order.
//!
//! A consumer holds its group's lease (one member at a time), polls records from its cursor,
//! and commits offsets to the group's slot so a restarted member resumes after them.
//!
//! Reads are zero-copy when the bytes cannot change under the reader: for a gating group under
//! `Block`/`Reject`, producers never claim bytes at or after the group's committed position
//! within one capacity. Otherwise (non-gating groups, `Overwrite` queues, and reads behind the
//! protected zone after a seek or below the group's mark after its creation or a backwards
//! reset, and every read of a member with a session timeout, whose group another process may
//! take while it holds a message) the record is copied and then checked against the tail (SYNC L in `ring.rs`); an
//! overrun reader gets [`Error::Lagged`].

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::lease::Lease;
use crate::protocol::layout::{Durability, FullPolicy};
use crate::protocol::sync::Ordering;
use crate::queue::cursor::{Cursor, Found, Message, Reads};
pub(crate) use crate::queue::cursor::{Next, Ready};
use crate::queue::mapped::MappedQueue;
use crate::runtime::clock;
use crate::runtime::wait::{Pause, Wait};

/// The shortest session timeout a member may declare: eight heartbeats apart by more than a
/// tick of the coarse clock even on a kernel with 100 ticks a second.
const MIN_SESSION: Duration = Duration::from_millis(100);

/// Longest single sleep of a waiting consumer: a wake-up lost to a takeover race (see
/// [`Ring::wait_data`](crate::protocol::ring::Ring::wait_data)) costs at most this.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// When the next heartbeat of a member with session timeout `session` (ns) is due: eight per
/// session, so a member that polls steadily is never near its timeout.
fn next_beat(session: u64) -> u64 {
    clock::coarse_ns().saturating_add(session / 8)
}

/// Where a newly created group starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// At the oldest record still in the ring.
    #[default]
    Earliest,
    /// At the next record to be published.
    Latest,
}

/// How to create a group if it does not exist yet (ignored for existing groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribe {
    /// Gating groups hold producers back; non-gating ones may be overrun. Default true.
    pub gating: bool,
    /// Where a new group starts. Default [`Start::Earliest`].
    pub start: Start,
    /// How long this member may go without polling before another may take the group from
    /// it (a hung or stopped process; the Kafka consumer's `session.timeout.ms`). `None` (the
    /// default): the member keeps the group for as long as its process lives. A member whose
    /// group was taken gets [`Error::TakenOver`] from its next poll or commit. At least 10 ms.
    /// Applies to this member, whether or not it creates the group; topics ignore it (their
    /// members have [`MemberOptions::session_timeout`](crate::MemberOptions::session_timeout)).
    pub session_timeout: Option<Duration>,
}

impl Default for Subscribe {
    fn default() -> Self {
        Subscribe {
            gating: true,
            start: Start::Earliest,
            session_timeout: None,
        }
    }
}

/// Where [`Consumer::seek`] moves the read cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// The oldest record still in the ring.
    Earliest,
    /// The next record to be published.
    Latest,
    /// The group's committed offset.
    Committed,
    /// A given offset (must still be in the ring).
    Offset(u64),
    /// The first record published at or after this time, in nanoseconds since the Unix epoch
    /// (the tail if there is none), found by binary search over the record timestamps. Records
    /// carry the wall-clock time of their publish. With several producers, timestamp order can
    /// differ from offset order by the time between taking an offset and reading the clock
    /// (well under a millisecond unless a producer is descheduled) and by how far their clocks
    /// disagree ([`Timestamps::Precise`](crate::Timestamps::Precise): tens of nanoseconds),
    /// and a time inside such a window may land on either side of it. A wall clock set
    /// backwards breaks the order too.
    Time(u64),
}

/// A member of a consumer group. Dropping it releases the group's lease.
pub struct Consumer {
    pub(crate) shared: Arc<MappedQueue>,
    group: String,
    pub(crate) slot: u32,
    pub(crate) lease: Lease,
    /// Next record to read, and the state of reading there.
    pub(crate) cursor: Cursor,
    /// How reads are done (see [`update_reads`](Self::update_reads)); `reads.lappable`: every
    /// read must be validated, the group can be overrun.
    reads: Reads,
    /// Reads below this position must be validated (protected zone starts here).
    safe_from: u64,
    /// Every read must be validated until this member's first commit (the group was taken
    /// from a live holder).
    unconfirmed: bool,
    /// The session timeout in nanoseconds (0: none), and when the next heartbeat is due in
    /// [`clock::coarse_ns`] nanoseconds.
    session: u64,
    next_beat: u64,
    /// The group's committed cursor word as this member last read or stored it: commits
    /// replace exactly this value, so anyone else's change fences this member off.
    committed_word: u128,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("path", &self.shared.path)
            .field("group", &self.group)
            .field("slot", &self.slot)
            .field("position", &self.cursor.offset())
            .field("committed", &self.committed())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(shared: Arc<MappedQueue>, group: &str, opts: &Subscribe) -> Result<Consumer> {
        let lease = shared.new_lease()?;
        Consumer::with_lease(shared, group, opts, lease, |_| false)
    }

    /// Joins `group` holding the lease as `lease`, taking it from a live holder if `may_take`
    /// says so (see [`MappedQueue::acquire_lease`]).
    pub(crate) fn with_lease(
        shared: Arc<MappedQueue>,
        group: &str,
        opts: &Subscribe,
        lease: Lease,
        may_take: impl Fn(u128) -> bool,
    ) -> Result<Consumer> {
        let ring = &shared.ring;
        let start = || match opts.start {
            Start::Earliest => ring.oldest(),
            Start::Latest => ring.tail(),
        };
        let session = match opts.session_timeout {
            None => 0,
            Some(t) if t >= MIN_SESSION => clock::saturating_ns(t),
            Some(t) => {
                return Err(Error::InvalidArgument {
                    argument: "session timeout",
                    why: format!("{t:?} is shorter than the minimum {MIN_SESSION:?}"),
                })
            }
        };
        let (slot, from_live) =
            shared.join_group(group, opts.gating, start, lease.word(), session, may_take)?;
        let committed_word = shared.committed_word(slot);
        let (offset, pos) = crate::protocol::sync::unpack(committed_word);
        let cursor = Cursor::new((offset, pos), shared.geometry.checksums);
        let lappable = !shared.gating(slot) || shared.geometry.full_policy == FullPolicy::Overwrite;
        // A gating group's records below the tail seen at its creation (or at its last
        // backwards reset) are protected only once every producer has rescanned the groups;
        // until the reader passes that mark, validate its reads. This holds whichever handle
        // created the group, this one or one that has since gone.
        let safe_from = pos.max(shared.protected_from(slot));
        // Taken from a live holder (its session expired, or a stale topic member): that holder
        // may be inside a commit that checked the lease before we took it, and its cursor CAS
        // from the word we just read can still land, moving the gating cursor past records we
        // would read in place. So every read is validated until our own first commit, which
        // changes the word and fences it off for good.
        let unconfirmed = from_live;
        let mut consumer = Consumer {
            shared,
            group: group.to_string(),
            slot,
            lease,
            cursor,
            reads: Reads {
                lappable,
                copy_below: u64::MAX,
            },
            safe_from,
            unconfirmed,
            session,
            next_beat: 0,
            committed_word,
        };
        consumer.update_reads();
        Ok(consumer)
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next offset [`poll`](Self::poll) will return (or skip past, if it was aborted).
    pub fn position(&self) -> u64 {
        self.cursor.offset()
    }

    /// The group's committed offset: the next one a restarted member would read.
    pub fn committed(&self) -> u64 {
        self.shared.committed(self.slot).0
    }

    /// Records published but not yet read by this consumer (racy: a snapshot).
    pub fn lag(&self) -> u64 {
        self.shared
            .ring
            .tail()
            .0
            .saturating_sub(self.cursor.offset())
    }

    /// Returns the next record, waiting up to `timeout` (`None`: forever) for one. A wait spins
    /// briefly, then yields, then sleeps on a futex; `Some(Duration::ZERO)` returns at once.
    ///
    /// `Ok(None)` means the timeout passed. [`Error::Lagged`] means records were overwritten
    /// before this consumer read them; it now continues at the oldest retained record.
    /// A record whose producer died mid-publish is skipped after the queue's claim timeout.
    /// A record whose payload fails its CRC32C gives [`Error::Corrupt`] of kind
    /// [`Corruption::Checksum`](crate::Corruption::Checksum) (see
    /// [`set_verify_checksums`](Self::set_verify_checksums)); the consumer has moved past it,
    /// so the next poll returns the record after it.
    ///
    /// [`Error::Truncated`] or [`Error::Detached`]: the queue file was truncated, removed or
    /// replaced under this process (checked again before a message is returned, so zeros read
    /// from a truncated file never pass for a record).
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>> {
        self.lease.check_current(&self.shared.path)?;
        // No damage check before reading: every way out of this call checks after it.
        self.beat()?;
        // The fast path, inlined: a record committed at the cursor is delivered at once. The
        // rest, and any wait, is out of line.
        match self.cursor.look(&self.shared) {
            Ok(ready) => self.deliver(ready).map(Some),
            Err(found) => self.poll_past(timeout, found),
        }
    }

    /// [`poll`](Self::poll) once its first look at the cursor `found` no committed record:
    /// steps past it as [`next`](Self::next) does, then waits.
    #[inline(never)]
    fn poll_past(
        &mut self,
        timeout: Option<Duration>,
        found: Found,
    ) -> Result<Option<Message<'_>>> {
        // A first step never reads the tail: a fresh wait spins before it sleeps.
        let mut next = self
            .cursor
            .step_past(&self.shared, self.reads, false, found)?;
        let mut wait = Wait::spinning(timeout);
        loop {
            let (tag, stall_left) = match next {
                Next::Ready(found) => return self.deliver(found).map(Some),
                Next::Pending { tag, stall_left } => (tag, stall_left),
            };
            match wait.pause(|| self.wake_within(stall_left)) {
                Pause::TimedOut => return Ok(None),
                Pause::Spun => {}
                Pause::Sleep(sleep) => {
                    self.sleep(tag, sleep);
                    self.beat()?;
                }
            }
            next = self.next(wait.sleeping_next())?;
        }
    }

    /// Hands up to `max` records to `f`, in offset order, and returns how many it handed out:
    /// waits as [`poll`](Self::poll) does for the first one (0 when `timeout` passes first, or
    /// for a `max` of 0), then takes every further record that is committed already, without
    /// waiting. A closure rather than a returned slice: each [`Message`] borrows the consumer
    /// (a zero-copy record stays valid until the consumer moves on), so `f` sees one at a time,
    /// and the lease, heartbeat and damage checks are paid once per batch. Commit the last
    /// offset `f` saw as after `poll`.
    ///
    /// Errors: as [`poll`](Self::poll). An error after some records were handed to `f` is
    /// returned as well (the records stay delivered: count them in `f` if it matters), and
    /// the next call goes on from where the error left the consumer.
    pub fn poll_batch(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
        mut f: impl FnMut(Message<'_>),
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        match self.poll(timeout)? {
            Some(message) => f(message),
            None => return Ok(0),
        }
        let mut handed = 1;
        while handed < max {
            // `next(false)`, its fast path kept apart as in `poll`: a committed record goes
            // from the look to `deliver` in registers, not through a `Result<Next>`.
            let ready = match self.cursor.look(&self.shared) {
                Ok(ready) => ready,
                Err(found) => match self
                    .cursor
                    .step_past(&self.shared, self.reads, false, found)?
                {
                    Next::Ready(ready) => ready,
                    Next::Pending { .. } => break,
                },
            };
            f(self.deliver(ready)?);
            handed += 1;
        }
        Ok(handed)
    }

    /// Sleeps until the slot tag at the cursor may have moved from `tag`, at most `sleep`,
    /// flagged in the data sleeper bitmap (SYNC W).
    fn sleep(&self, tag: u64, sleep: Duration) {
        let ring = &self.shared.ring;
        let word = ring.slot_tag(self.cursor.offset());
        // SYNC W (SeqCst): re-check after flagging ourselves as a sleeper.
        let changed = || word.load(Ordering::SeqCst) != tag;
        ring.wait_data(self.sleeper_bit(), changed, Some(sleep), || {
            self.owns_slot()
        });
    }

    /// Moves the cursor past aborted records (aborting one stalled past the claim timeout) and
    /// says whether the record at it is committed or still to wait for. `check_tail`: the
    /// caller is about to sleep, so the tail is read now (otherwise only now and then, see
    /// [`Cursor::step`]) for the stall clock and the overrun check.
    // Always inlined, as `step` is (its fast path is what `poll` is for a record committed
    // already): a call cost `Consumer::poll` about 40 instructions per record (callgrind,
    // `call_cost`).
    #[inline(always)]
    pub(crate) fn next(&mut self, check_tail: bool) -> Result<Next> {
        self.cursor.step(&self.shared, self.reads, check_tail)
    }

    /// Returns the committed record [`next`](Self::next) found and moves the cursor past it.
    #[inline]
    pub(crate) fn deliver(&mut self, found: Ready) -> Result<Message<'_>> {
        self.cursor.deliver(&self.shared, self.reads, found)
    }

    /// The longest a waiting consumer may sleep: until a stalled claim times out
    /// (`stall_left`), its next heartbeat is due (members with a session), or
    /// [`MAX_SLEEP`].
    pub(crate) fn wake_within(&self, stall_left: Option<Duration>) -> Duration {
        let beat_left = (self.session != 0)
            .then(|| Duration::from_nanos(self.next_beat.saturating_sub(clock::coarse_ns())));
        [stall_left, beat_left]
            .into_iter()
            .flatten()
            .fold(MAX_SLEEP, Duration::min)
    }

    /// This consumer's bit in the data sleeper bitmap: its group slot's.
    pub(crate) fn sleeper_bit(&self) -> u64 {
        1u64 << self.slot
    }

    /// Whether the group slot, and so its sleeper bit, is still this consumer's: a member
    /// taken over while it slept leaves its successor's bit alone.
    pub(crate) fn owns_slot(&self) -> bool {
        self.shared.lease(self.slot) == self.lease.word()
    }

    /// Commits `offset`, the offset of the last record processed: it and every record before it
    /// are processed, and the group's committed offset (what [`committed`](Self::committed),
    /// `shmq info` and Kafka call committed: the next record to read) becomes `offset + 1`,
    /// where a member that starts after this one resumes. Committing an offset at or below the committed
    /// one changes nothing; committing one not yet polled is an error. Under
    /// [`Durability::Sync`](crate::Durability::Sync) it returns once the cursor is on disk
    /// ([`Error::Io`] if that fails: the commit holds in memory but may be lost with the
    /// machine).
    ///
    /// [`Error::TakenOver`] means someone else moved the committed offset since this member
    /// last did (another member that judged this one dead, or a reset): nothing was committed,
    /// and this member should stop reading the group.
    pub fn commit(&mut self, offset: u64) -> Result<()> {
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let committed = self.commit_checked(offset);
        self.shared.checked_after(committed)
    }

    fn commit_checked(&mut self, offset: u64) -> Result<()> {
        let Some((current, next, pos)) = self.planned_commit(offset)? else {
            return Ok(());
        };
        crate::crash::point("commit.before_store");
        self.committed_word = self
            .shared
            .swap_committed(self.slot, current, next, pos)
            .map_err(|found| self.taken_over(found))?;
        crate::crash::point("commit.after_store");
        if self.shared.geometry.durability == Durability::Sync {
            self.shared.sync_committed(self.slot)?;
        }
        self.safe_from = self.safe_from.max(pos);
        self.unconfirmed = false;
        self.update_reads();
        self.shared.ring.notify_space();
        Ok(())
    }

    /// Moves the read cursor (not the committed offset).
    pub fn seek(&mut self, to: SeekTo) -> Result<()> {
        self.lease.check_current(&self.shared.path)?;
        self.shared.check_damage()?;
        let located = locate(&self.shared, self.slot, to);
        self.shared.check_damage()?;
        self.cursor.move_to(located?);
        Ok(())
    }

    fn out_of_range(&self, requested: u64) -> Error {
        out_of_range(&self.shared, requested)
    }

    /// Whether the group's lease is still this consumer's (a topic member whose heartbeat went
    /// stale can have it taken).
    pub(crate) fn holds_lease(&self) -> bool {
        self.shared.lease(self.slot) == self.lease.word()
    }

    /// Sets which records must be copied and checked against the tail rather than read in
    /// place (all of them, or those below the protected zone) from the fields it depends on;
    /// kept in `reads` so a poll does not recompute it.
    ///
    /// A member with a session timeout always copies: once its heartbeat is older than the
    /// timeout another process may take the group and commit past the record, after which
    /// producers may overwrite the bytes while the member still holds the message.
    fn update_reads(&mut self) {
        let copy_all = self.reads.lappable || self.unconfirmed || self.session != 0;
        self.reads.copy_below = if copy_all { u64::MAX } else { self.safe_from };
    }

    /// Whether [`poll`](Self::poll) checks each record's CRC32C before returning it. On by
    /// default in a queue with checksums (Kafka's `check.crcs`); a no-op in one without.
    /// Checking costs one hardware CRC32C pass over the payload.
    pub fn set_verify_checksums(&mut self, verify: bool) {
        self.cursor.verify = verify && self.shared.geometry.checksums;
    }

    /// What a commit of `offset` would do, checked as [`commit`](Self::commit) checks it
    /// before its store: `Some((the committed word it replaces, the next offset, its
    /// position))`, or `None` if the group is past `offset` already. The word is the one this
    /// consumer last stored or read; [`check_committed`](Self::check_committed) compares it
    /// with the file.
    pub(crate) fn planned_commit(&self, offset: u64) -> Result<Option<(u128, u64, u64)>> {
        if offset >= self.cursor.offset() {
            return Err(self.unread_commit(offset));
        }
        let next = offset + 1;
        if !self.holds_lease() {
            return Err(self.taken_over(self.shared.committed_word(self.slot)));
        }
        // The word this consumer last stored or read: the commit's CAS from it fails if anyone
        // else moved the cursor since, so it is not read here (a 128-bit load and its checks:
        // 25 instructions of a commit, callgrind, `call_cost`).
        let (committed, _) = crate::protocol::sync::unpack(self.committed_word);
        if next <= committed {
            // Nothing to store: a takeover is reported all the same, as a store would.
            self.check_committed()?;
            return Ok(None);
        }
        let pos = if next == self.cursor.offset() {
            self.cursor.pos()
        } else {
            match self.shared.ring.resolve(next) {
                Some(pos) => pos,
                None => {
                    // A cursor moved by someone else is the error to report, as when the
                    // word was compared first.
                    self.check_committed()?;
                    return Err(self.out_of_range(next));
                }
            }
        };
        Ok(Some((self.committed_word, next, pos)))
    }

    /// The error of a commit of `offset`, which this consumer has not read yet.
    #[cold]
    fn unread_commit(&self, offset: u64) -> Error {
        let why = match self.cursor.offset() {
            0 => format!(
                "cannot commit offset {offset}: commit takes the offset of the last record \
                 processed, and this consumer has not read any record yet"
            ),
            next => format!(
                "cannot commit offset {offset}: commit takes the offset of the last record \
                 processed, and this consumer's next record is {next}, so it may commit up \
                 to {}",
                next - 1
            ),
        };
        Error::InvalidArgument {
            argument: "offset",
            why,
        }
    }

    /// [`Error::TakenOver`] if the group's committed cursor in the file is no longer the one
    /// this consumer last stored or read: another member, or a reset, moved it.
    pub(crate) fn check_committed(&self) -> Result<()> {
        let current = self.shared.committed_word(self.slot);
        if current != self.committed_word {
            return Err(self.taken_over(current));
        }
        Ok(())
    }

    /// The queue file and the group this consumer reads.
    pub(crate) fn source(&self) -> (&std::path::Path, &str) {
        (&self.shared.path, &self.group)
    }

    /// Stamps a heartbeat if one is due (members with a session timeout only); fails with
    /// [`Error::TakenOver`] if the group was taken from this member.
    // Inlined, the check of a member without a session is one compare in `poll`; when the
    // compiler stopped inlining the whole of it (the transaction code grew `step`), the call
    // cost `Consumer::poll` about 18 instructions per record (callgrind, `call_cost`).
    #[inline(always)]
    pub(crate) fn beat(&mut self) -> Result<()> {
        if self.session == 0 {
            return Ok(());
        }
        self.beat_if_due()
    }

    /// [`beat`](Self::beat) for a member with a session timeout.
    #[inline(never)]
    fn beat_if_due(&mut self) -> Result<()> {
        if clock::coarse_ns() < self.next_beat {
            return Ok(());
        }
        if !self.shared.heartbeat(self.slot, self.lease.word()) {
            return Err(self.taken_over(self.shared.committed_word(self.slot)));
        }
        self.next_beat = next_beat(self.session);
        Ok(())
    }

    #[cold]
    fn taken_over(&self, found: u128) -> Error {
        if let Err(e) = self.shared.recheck() {
            return e;
        }
        Error::TakenOver {
            group: self.group.clone(),
            found: crate::protocol::sync::unpack(found).0,
        }
    }
}

/// The cursor `(offset, position)` that `to` names for the group in `slot`.
pub(crate) fn locate(shared: &MappedQueue, slot: u32, to: SeekTo) -> Result<(u64, u64)> {
    let ring = &shared.ring;
    Ok(match to {
        SeekTo::Earliest => ring.oldest(),
        SeekTo::Latest => ring.tail(),
        SeekTo::Committed => shared.committed(slot),
        SeekTo::Offset(x) => {
            let (oldest, _) = ring.oldest();
            match ring.resolve(x) {
                Some(p) if x >= oldest => (x, p),
                _ => return Err(out_of_range(shared, x)),
            }
        }
        SeekTo::Time(ns) => ring.first_at_or_after(ns),
    })
}

fn out_of_range(shared: &MappedQueue, requested: u64) -> Error {
    let ring = &shared.ring;
    Error::OffsetOutOfRange {
        requested,
        earliest: ring.oldest().0,
        latest: ring.tail().0,
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.lease.current() {
            // The lease itself (a field) is dropped after this: the word is cleared first.
            self.shared.release_lease(self.slot, self.lease.word());
        }
    }
}
