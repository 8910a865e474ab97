//! Durability: group-committed flushes of the committed prefix, the durable cursor, and waiting
//! for it (a producer confirm).
//!
//! # Protocol
//!
//! * **Leader.** A flush runs under an exclusive `F_OFD_SETLK` lock on byte [`FLUSH_LOCK`] of
//!   the file, taken through the flusher's own open file description ([`OwnFd`]: a
//!   producer's lease, the Batch flusher's, or one opened for [`Queue::flush`]). The kernel
//!   drops it if the holder dies; one description per flusher makes threads of one process,
//!   and a forked child and its parent, exclude each other too. Whoever holds it flushes for
//!   everyone.
//!
//! [`Queue::flush`]: crate::Queue::flush
//! * **Prefix.** The leader walks the slots from the `DURABLE` cursor over committed and
//!   aborted records up to the first pending one. One `fdatasync` then puts the ring bytes and
//!   the slots of that whole prefix on disk, whoever wrote them. This is group commit: a flush
//!   covers every record committed since the last one, in every process.
//! * **Cursors.** After the `fdatasync` the leader stores the prefix end in `FLUSHED`, the
//!   cursor recovery starts from, and in `DURABLE`, which waiters read (SYNC D), and wakes the
//!   flagged waiters. `FLUSHED` is never ahead of data that is on disk, but it reaches the disk
//!   itself only with a later `fdatasync` (or a writeback before one): until then the disk
//!   holds the value of an earlier flush, and recovery starts there.
//! * **Synced cursor.** So the records from the `FLUSHED` on disk to `DURABLE` must stay
//!   intact on disk until a newer `FLUSHED` is there. The leader loads `FLUSHED` before its
//!   `fdatasync`, which therefore writes that value, and stores it in `SYNCED` after the call
//!   returned (SYNC Y). Under Batch and Sync producers never claim past `SYNCED` plus one
//!   capacity (`scan_limit` in `producer.rs`), so no byte and no offset slot of a record from
//!   `SYNCED` on is written again. Room frees one flush later than with `DURABLE` as the
//!   bound: a record can be overwritten once the flush after the one that made it durable has
//!   completed. A producer held back by `SYNCED` with no new record to flush leads a flush of
//!   the header alone, which carries `FLUSHED` to the disk (`try_flush_for_room`). Under None
//!   producers are not held back by flushes, so a leader that moved `FLUSHED` syncs a second
//!   time, for the header, and only then stores `SYNCED` and `DURABLE`.
//! * **Why no durable record is lost, whichever pages reach the disk.** Let `R` be the
//!   `FLUSHED` on disk when the machine stops, and `D` the last `DURABLE` stored. (1) `R` is at
//!   least every value `SYNCED` held: each was `FLUSHED`'s value when a successful `fdatasync`
//!   began; once that call returned, the disk holds the header page as it was then or a later
//!   version, and `FLUSHED` only grows. (2) The bytes of every record before `D`, and the slot
//!   words recovery reads for it (its tag, and for an aborted record its successor's
//!   position), were written before a successful `fdatasync` began. (3) Every claim since ends
//!   at most one capacity past a `SYNCED` that is at most `R` (a limit computed from an older
//!   value is lower still), and the offset slot of `o` is reused only by `o + N`, whose claim
//!   begins at least one capacity past `pos(o)`. So none of those bytes and words changed
//!   after the flush for a record of `[R, D)`: every version of their pages, written back or
//!   not, torn or not, holds them. Recovery therefore accepts every record of `[R, D)`, and the
//!   tail it recovers is at least `D`. Under None, `R ≥ D` directly. Nothing here depends on
//!   which subset of the dirty pages reached the disk, or in which order.
//! * **Errors poison.** When a writeback fails, the kernel marks the pages clean and reports
//!   the error once to each open file description; a later `fdatasync` succeeds without
//!   writing them. So a failed `fdatasync` stores `(DURABLE offset, errno)` in `POISON`, and no
//!   leader moves the cursors again: each checks `POISON` under the lock before it flushes,
//!   and only a leader (under the lock) sets it. The `fdatasync` goes through a file
//!   description of its own (`MappedQueue::flush_file`), so that an `msync` of the mapping (a Sync
//!   commit) cannot consume the report of an error the flush must see. Recovery after a
//!   machine restart clears `POISON`.
//! * **Waiting.** A waiter for offset `o` returns once `DURABLE.offset > o`. Otherwise it tries to
//!   lead; if another process leads, it sleeps on `DURABLE_SEQ` with its producer-slot bit
//!   flagged (the sleep protocol of SYNC W in `ring.rs`). Sleeps are capped, so a leader killed
//!   mid-flush costs a waiter one cap before it leads itself.

use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::lease::OwnFd;
use crate::protocol::layout::{Durability, DURABLE_SEQ, DURABLE_WAITERS, FLUSH_LOCK};
use crate::protocol::ring::{self, Found, Ready};
use crate::protocol::sync::{pack, unpack, Ordering};
use crate::queue::mapped::MappedQueue;
use crate::runtime::clock;
use crate::runtime::wait::{Pause, Wait};

/// Longest single sleep of a durability waiter before it re-checks whether a leader is alive.
const LEADER_POLL: Duration = Duration::from_millis(20);

/// The flush leader's lock, held until dropped.
struct LeaderLock<'a>(&'a OwnFd);

impl<'a> LeaderLock<'a> {
    /// Takes the lock through `via` if it is free; `Ok(None)` if another description holds it.
    fn try_take(via: &'a OwnFd) -> std::io::Result<Option<Self>> {
        Ok(via.try_lock(FLUSH_LOCK)?.then_some(LeaderLock(via)))
    }
}

impl Drop for LeaderLock<'_> {
    fn drop(&mut self) {
        self.0.unlock(FLUSH_LOCK);
    }
}

impl MappedQueue {
    /// The durable cursor: every record before it is on disk.
    pub(crate) fn durable(&self) -> (u64, u64) {
        // SYNC D (Acquire): pairs with the leader's Release store after its fdatasync.
        unpack(self.durable_state().durable().load(Ordering::Acquire))
    }

    /// The synced cursor: the flushed cursor on disk is at least this. Under Batch and Sync
    /// producers never overwrite a record from it on.
    pub(crate) fn synced(&self) -> (u64, u64) {
        // SYNC Y (Acquire): pairs with the leader's Release store, made after the fdatasync
        // that put this value on disk returned; a producer that overwrites records before it
        // does so after that call.
        unpack(self.durable_state().synced().load(Ordering::Acquire))
    }

    /// The flushed cursor in the page cache (the leader's word; recovery starts from its value
    /// on disk).
    fn flushed(&self) -> (u64, u64) {
        // Relaxed: only leaders write it, one at a time under the lock, each before its Release
        // store of DURABLE, which the next leader loads (Acquire) before this.
        unpack(self.durable_state().flushed().load(Ordering::Relaxed))
    }

    /// `Some(Error::Poisoned)` once a flush of this file failed (in any process).
    pub(crate) fn poisoned(&self) -> Option<Error> {
        let (offset, errno) = self.poison_word();
        (errno != 0).then(|| Error::Poisoned {
            path: self.path.clone(),
            offset,
            source: std::io::Error::from_raw_os_error(errno as i32),
        })
    }

    /// The `POISON` word: `(first offset not durable, errno)`, errno 0 while healthy.
    fn poison_word(&self) -> (u64, u64) {
        // SeqCst: a durability waiter re-checks it after flagging itself asleep (SYNC W). The
        // word carries its whole meaning, so no other data needs ordering with it.
        unpack(self.durable_state().poison().load(Ordering::SeqCst))
    }

    /// Flushes `fdatasync` calls made on this file (from every process).
    pub(crate) fn flushes(&self) -> u64 {
        // Relaxed: a statistic.
        self.durable_state().flushes().load(Ordering::Relaxed)
    }

    /// Waits until record `offset` is on disk, leading flushes (through `via`) when nobody
    /// else does. `bit` is the caller's bit in the durability waiter bitmap. Fails with
    /// `Error::Poisoned` if the record is not durable and the file is poisoned.
    pub(crate) fn wait_durable(
        &self,
        offset: u64,
        bit: u64,
        timeout: Option<Duration>,
        via: &OwnFd,
    ) -> Result<()> {
        let mut wait = Wait::started(timeout);
        loop {
            if self.durable().0 > offset {
                return Ok(());
            }
            // Records from the poisoned offset on never become durable.
            if let Some(e) = self.poisoned() {
                return Err(e);
            }
            // Nor do records of a file truncated, removed or replaced under us.
            self.check_damage()?;
            // Led or not, if the prefix did not reach `offset` (a claim before it is still
            // being written), wait a little: a commit, another leader or the stuck claim's
            // timeout will move it.
            if self.try_flush(via)? && self.durable().0 > offset {
                return Ok(());
            }
            let sleep = match wait.pause(|| LEADER_POLL) {
                Pause::TimedOut => {
                    return Err(Error::Timeout {
                        path: self.path.clone(),
                        waiting_for: "the flush",
                        waited: timeout.unwrap_or_default(),
                        blocked_by: None,
                    })
                }
                Pause::Spun => continue,
                Pause::Sleep(sleep) => sleep,
            };
            ring::sleep_on(
                &self.ring.region,
                DURABLE_WAITERS,
                DURABLE_SEQ,
                bit,
                || self.durable().0 > offset || self.poison_word().1 != 0,
                Some(sleep),
            );
        }
    }

    /// Flushes the committed prefix if this caller can lead through its own description `via`
    /// (`Ok(false)`: another leader runs). Fails with `Error::Poisoned` once a flush of the
    /// file failed, this one or an earlier one.
    pub(crate) fn try_flush(&self, via: &OwnFd) -> Result<bool> {
        self.lead_flush(via, false)
    }

    /// As [`try_flush`](Self::try_flush), and with no new record to flush, still syncs if the
    /// flushed cursor on disk may lag the one in memory, to carry it there: the flush that frees
    /// room for a producer held back by the synced cursor.
    pub(crate) fn try_flush_for_room(&self, via: &OwnFd) -> Result<bool> {
        self.lead_flush(via, true)
    }

    /// Leads a flush through `via` if the lock is free; `carry`: also when only the flushed
    /// cursor is to be put on disk.
    fn lead_flush(&self, via: &OwnFd, carry: bool) -> Result<bool> {
        let lock = LeaderLock::try_take(via).map_err(|e| self.io("lock for flush", e))?;
        let Some(_lock) = lock else {
            return Ok(false);
        };
        // Checked under the lock: a leader whose flush failed poisoned the file before it let
        // the lock go, so no later leader can take its failed records for flushed ones.
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        let from = self.durable();
        let end = self.committed_prefix();
        // The flushed cursor on disk lags while the synced one is behind it in memory.
        let carry = carry && self.synced() != self.flushed();
        if end.0 <= from.0 && !carry {
            return Ok(true);
        }
        self.flush_prefix(from.0, end)?;
        Ok(true)
    }

    /// Puts everything before `end` on disk and advances the cursors (the leader's work).
    /// `from` is the durable offset the prefix starts at; with `end` at the durable cursor,
    /// the flush only carries `FLUSHED` to the disk.
    fn flush_prefix(&self, from: u64, end: (u64, u64)) -> Result<()> {
        // The value this flush's fdatasync puts on disk (SYNC Y).
        let carried = self.flushed();
        crate::crash::point("flush.before_sync");
        self.sync_file(from)?;
        crate::crash::point("flush.after_sync");
        let r = &self.ring.region;
        let d = self.durable_state();
        // Relaxed: only leaders write it (see `flushed`); it reaches the disk with a later
        // fdatasync, below under None, with the next flush otherwise.
        d.flushed().store(pack(end.0, end.1), Ordering::Relaxed);
        // Producers under None are not bounded by the synced cursor, so nothing confirmed may
        // rest on a `FLUSHED` that is not on disk yet.
        let synced = if self.geometry.durability == Durability::None && end != carried {
            self.sync_file(from)?;
            end
        } else {
            carried
        };
        // SYNC Y (Release): stored after the fdatasync that wrote `synced` returned.
        d.synced()
            .store(pack(synced.0, synced.1), Ordering::Release);
        // SYNC D (Release), and SeqCst for the waiter check in `wake_on` (SYNC W).
        d.durable().store(pack(end.0, end.1), Ordering::SeqCst);
        ring::wake_on(r, DURABLE_WAITERS, DURABLE_SEQ);
        // Under Batch and Sync the synced cursor bounds producers (`scan_limit`).
        self.ring.notify_space();
        Ok(())
    }

    /// One `fdatasync` of the file through the flush's own description, counted in `FLUSHES`.
    /// A failure poisons the file from durable offset `from`.
    fn sync_file(&self, from: u64) -> Result<()> {
        let synced = crate::fault::flush_sync(&self.flush_file, || {
            nix::unistd::fdatasync(self.flush_file.as_raw_fd()).map_err(std::io::Error::from)
        });
        if let Err(e) = synced {
            return Err(self.poison(from, e));
        }
        // Relaxed: a statistic.
        self.durable_state()
            .flushes()
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Marks the file poisoned after a failed flush: no record from `from` on is ever reported
    /// durable. Runs under the leader lock, after the check in `lead_flush`, so the first
    /// failure is the one recorded. Returns the error every later durability call gets.
    fn poison(&self, from: u64, failure: std::io::Error) -> Error {
        let errno = failure
            .raw_os_error()
            .filter(|&e| e > 0)
            .unwrap_or(libc::EIO);
        let r = &self.ring.region;
        // SeqCst: the notifier's side of SYNC W for the waiters woken below.
        self.durable_state()
            .poison()
            .store(pack(from, errno as u64), Ordering::SeqCst);
        // Best effort to put the mark on disk, so that it outlives the page cache (an unmount,
        // memory pressure); its result changes nothing here.
        let _ = nix::unistd::fdatasync(self.flush_file.as_raw_fd());
        ring::wake_on(r, DURABLE_WAITERS, DURABLE_SEQ);
        Error::Poisoned {
            path: self.path.clone(),
            offset: from,
            source: failure,
        }
    }

    /// The end `(offset, position)` of the longest prefix from the durable cursor in which
    /// every record is committed or aborted. A claim stuck at its end for longer than the
    /// claim timeout (its producer died, and no reader runs to abort it) is aborted here, as a
    /// reader would, so durability waiters are not held up for ever.
    fn committed_prefix(&self) -> (u64, u64) {
        loop {
            let (end, pending) = self.prefix_once();
            let Some(tag) = pending else {
                return end;
            };
            // Relaxed: only the leader, under the leader lock, reads and writes it.
            let (seen, since) = unpack(self.flush_stall.load(Ordering::Relaxed));
            let now = clock::monotonic_ns();
            if seen != end.0 + 1 {
                self.flush_stall
                    .store(pack(end.0 + 1, now), Ordering::Relaxed);
                return end;
            }
            let timeout = clock::saturating_ns(self.geometry.claim_timeout);
            if now.saturating_sub(since) < timeout {
                return end;
            }
            // As a reader gives it up (a prepared record as its transaction went); a
            // transaction file that cannot be read leaves it for the next flush.
            if !self.give_up_stalled(end.0, end.1, tag).unwrap_or(false)
                || self.ring.slot_tag(end.0).load(Ordering::Relaxed) == tag
            {
                return end;
            }
            self.flush_stall.store(0, Ordering::Relaxed);
        }
    }

    /// One walk of the prefix: its end, and the tag of the claimed but uncommitted record that
    /// stopped it, if one did.
    fn prefix_once(&self) -> ((u64, u64), Option<u64>) {
        let ring = &self.ring;
        let (tail, _) = ring.tail();
        let (mut offset, mut pos) = self.durable();
        while offset < tail {
            match ring.read(offset, pos) {
                Found::Ready(Ready { end, .. }) => pos = end,
                Found::Aborted => match ring.past_aborted(offset) {
                    Some((next, at)) => {
                        (offset, pos) = (next, at);
                        continue;
                    }
                    None => break,
                },
                Found::Pending { tag } => return ((offset, pos), Some(tag)),
                // Lapped (an Overwrite queue outran the flusher) or inconsistent: records the
                // ring no longer holds are not ours to vouch for; restart at the oldest.
                Found::Overtaken | Found::Inconsistent { .. } => {
                    let oldest = ring.oldest();
                    if oldest.0 <= offset {
                        break;
                    }
                    (offset, pos) = oldest;
                    continue;
                }
            }
            offset += 1;
        }
        ((offset, pos), None)
    }
}
