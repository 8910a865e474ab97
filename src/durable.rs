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
//!   cursor recovery starts from. It reaches the disk with the next flush (or any writeback
//!   before it), and it is never ahead of data that is on disk. Then it stores `DURABLE`, which
//!   waiters read (SYNC D), and wakes the flagged waiters.
//! * **Errors poison.** When a writeback fails, the kernel marks the pages clean and reports
//!   the error once to each open file description; a later `fdatasync` succeeds without
//!   writing them. So a failed `fdatasync` stores `(DURABLE offset, errno)` in `POISON`, and no
//!   leader moves the cursors again: each checks `POISON` under the lock before it flushes,
//!   and only a leader (under the lock) sets it. The `fdatasync` goes through a file
//!   description of its own (`Shared::flush_file`), so that an `msync` of the mapping (a Sync
//!   commit) cannot consume the report of an error the flush must see. Recovery after a
//!   machine restart clears `POISON`.
//! * **Waiting.** A waiter for offset `o` returns once `DURABLE.offset > o`. Otherwise it tries to
//!   lead; if another process leads, it sleeps on `DURABLE_SEQ` with its producer-slot bit
//!   flagged (the sleep protocol of SYNC W in `ring.rs`). Sleeps are capped, so a leader killed
//!   mid-flush costs a waiter one cap before it leads itself.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::{
    footprint, DURABLE, DURABLE_SEQ, DURABLE_WAITERS, FLUSHED, FLUSHES, FLUSH_LOCK, POISON,
};
use crate::lease::OwnFd;
use crate::queue::Shared;
use crate::ring::{self, Found};
use crate::sync::{pack, unpack, Ordering};

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

impl Shared {
    /// The durable cursor: every record before it is on disk.
    pub(crate) fn durable(&self) -> (u64, u64) {
        // SYNC D (Acquire): pairs with the leader's Release store after its fdatasync.
        unpack(self.ring.region.u128(DURABLE).load(Ordering::Acquire))
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
        unpack(self.ring.region.u128(POISON).load(Ordering::SeqCst))
    }

    /// Flushes `fdatasync` calls made on this file (from every process).
    pub(crate) fn flushes(&self) -> u64 {
        // Relaxed: a statistic.
        self.ring.region.u64(FLUSHES).load(Ordering::Relaxed)
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
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.durable().0 > offset {
                return Ok(());
            }
            // Records from the poisoned offset on never become durable.
            if let Some(e) = self.poisoned() {
                return Err(e);
            }
            // Led or not, if the prefix did not reach `offset` (a claim before it is still
            // being written), wait a little: a commit, another leader or the stuck claim's
            // timeout will move it.
            if self.try_flush(via)? && self.durable().0 > offset {
                return Ok(());
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(Error::Timeout);
            }
            let wait = Some(left.map_or(LEADER_POLL, |l| l.min(LEADER_POLL)));
            ring::sleep_on(
                &self.ring.region,
                DURABLE_WAITERS,
                DURABLE_SEQ,
                bit,
                || self.durable().0 > offset || self.poison_word().1 != 0,
                wait,
            );
        }
    }

    /// Flushes the committed prefix if this caller can lead through its own description `via`
    /// (`Ok(false)`: another leader runs). Fails with `Error::Poisoned` once a flush of the
    /// file failed, this one or an earlier one.
    pub(crate) fn try_flush(&self, via: &OwnFd) -> Result<bool> {
        let lock = LeaderLock::try_take(via).map_err(|e| self.io("lock for flush", e))?;
        let Some(_lock) = lock else {
            return Ok(false);
        };
        // Checked under the lock: a leader whose flush failed poisoned the file before it let
        // the lock go, so no later leader can take its failed records for flushed ones.
        if let Some(e) = self.poisoned() {
            return Err(e);
        }
        let (from_offset, _) = self.durable();
        let end = self.committed_prefix();
        if end.0 <= from_offset {
            return Ok(true);
        }
        self.flush_prefix(from_offset, end)?;
        Ok(true)
    }

    /// Puts everything before `end` on disk and advances the cursors (the leader's work).
    /// `from` is the durable offset the prefix starts at.
    fn flush_prefix(&self, from: u64, end: (u64, u64)) -> Result<()> {
        crate::crash::point("flush.before_sync");
        let synced = crate::fault::flush_sync(&self.flush_file, || {
            nix::unistd::fdatasync(self.flush_file.as_raw_fd()).map_err(std::io::Error::from)
        });
        if let Err(e) = synced {
            return Err(self.poison(from, e));
        }
        crate::crash::point("flush.after_sync");
        let r = &self.ring.region;
        // Relaxed: only this leader writes these words; FLUSHED reaches the disk with a later
        // flush, and DURABLE's Release below orders it for readers anyway.
        r.u128(FLUSHED).store(pack(end.0, end.1), Ordering::Relaxed);
        r.u64(FLUSHES).fetch_add(1, Ordering::Relaxed);
        // SYNC D (Release), and SeqCst for the waiter check in `wake_on` (SYNC W).
        r.u128(DURABLE).store(pack(end.0, end.1), Ordering::SeqCst);
        ring::wake_on(r, DURABLE_WAITERS, DURABLE_SEQ);
        // Under Batch and Sync the durable cursor bounds producers too (`scan_limit`).
        self.ring.notify_space();
        Ok(())
    }

    /// Marks the file poisoned after a failed flush: no record from `from` on is ever reported
    /// durable. Runs under the leader lock, after the check in `try_flush`, so the first
    /// failure is the one recorded. Returns the error every later durability call gets.
    fn poison(&self, from: u64, failure: std::io::Error) -> Error {
        let errno = failure
            .raw_os_error()
            .filter(|&e| e > 0)
            .unwrap_or(libc::EIO);
        let r = &self.ring.region;
        // SeqCst: the notifier's side of SYNC W for the waiters woken below.
        r.u128(POISON)
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
            let mut stall = self.flush_stall.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            match *stall {
                Some((o, since)) if o == end.0 => {
                    if now - since < self.geometry.claim_timeout || !self.ring.abort(o, tag) {
                        return end;
                    }
                    *stall = None;
                }
                _ => {
                    *stall = Some((end.0, now));
                    return end;
                }
            }
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
                Found::Ready { start, len, .. } => pos = start + footprint(len as u64),
                Found::Aborted => match ring.resolve(offset + 1) {
                    Some(next) => pos = next,
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

    /// An I/O error on this queue's file.
    pub(crate) fn io(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}
