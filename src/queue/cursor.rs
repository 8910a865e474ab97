//! [`Cursor`]: the read position of one reader and the one implementation of reading a record
//! there, shared by [`Consumer`](crate::Consumer) and [`TailReader`](crate::TailReader).
//!
//! A step at the cursor skips aborted records (counting them for `aborted_before`), aborts a
//! claim stalled past the claim timeout, moves an overrun reader to the oldest retained record
//! with [`Error::Lagged`], and reports a committed record or what to wait for. Delivering a
//! record either reads it in place or copies it and checks the copy against the tail (SYNC L
//! in `ring.rs`); then it verifies the CRC32C and builds the [`Message`]. What differs between
//! readers is passed in: whether a record at a given start is read in place, whether the
//! reader can be overrun at all, and whether the tail check is due.

use std::time::Duration;

use crate::error::{Corruption, Error, Result};
use crate::protocol::crc;
use crate::protocol::ring::sane_cursor;
pub(crate) use crate::protocol::ring::{Found, Ready};
use crate::queue::mapped::MappedQueue;

/// One record, borrowed until the next call on the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The record's offset. Offsets are dense per queue (0, 1, 2, …) except for aborted ones
    /// (see `aborted_before`).
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The payload.
    pub payload: &'a [u8],
    /// How many offsets right before this one were aborted and skipped since this consumer's
    /// previous message: records whose producer gave them up (a dropped claim) or stalled or
    /// died past the claim timeout. They hold no record and no one receives them. A consumer
    /// that checks for gaps expects `offset == previous + 1 + aborted_before`; any other hole
    /// comes with [`Error::Lagged`], a seek, or an error for a record that failed its checksum
    /// (skipped and not counted here).
    pub aborted_before: u64,
}
use crate::runtime::clock;

/// A reader spinning on a pending record reads the tail once in this many steps (unless the
/// caller says the check is due).
const TAIL_CHECK_EVERY: u32 = 64;

/// What a reader finds at its cursor.
pub(crate) enum Next {
    /// A committed record, for [`Cursor::deliver`].
    Ready(Ready),
    /// No record yet: the slot tag to wait for a change of, and how long until the claimed
    /// record there (if any) may be aborted.
    Pending {
        tag: u64,
        stall_left: Option<Duration>,
    },
}

/// How a reader's records may be read: in place, or copied and checked against the tail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reads {
    /// Producers may overrun the reader at any position, so a pending step checks for it.
    pub(crate) lappable: bool,
    /// Records starting below this position are copied and checked against the tail; those at
    /// or after it are read in place (`u64::MAX`: every record is copied).
    pub(crate) copy_below: u64,
}

impl Reads {
    /// A reader that copies and checks every record and may be overrun anywhere.
    pub(crate) const COPY_ALL: Reads = Reads {
        lappable: true,
        copy_below: u64::MAX,
    };

    /// Whether a record starting at `start` must be copied and checked against the tail.
    fn validates(self, start: u64) -> bool {
        start < self.copy_below
    }
}

/// One reader's position in a queue and the state of its reading there.
pub(crate) struct Cursor {
    /// Next record to read: its offset and cursor position.
    offset: u64,
    pos: u64,
    /// Whether `(offset, pos)` is a possible cursor ([`sane_cursor`]): tested where the cursor
    /// is set from values read from the file, true by construction where it moves past a
    /// record read (see [`Ring::read_known`]).
    ///
    /// [`Ring::read_known`]: crate::protocol::ring::Ring::read_known
    sane: bool,
    /// The stalled record and when this reader first saw it stalled
    /// ([`clock::monotonic_ns`]).
    stall: Option<(u64, u64)>,
    /// Aborted offsets skipped since the last message returned.
    aborted_run: u64,
    /// Consecutive steps that found the next record pending.
    pending_polls: u32,
    /// Check each record's CRC32C before returning it (queues with checksums).
    pub(crate) verify: bool,
    /// Records that are copied are copied here.
    buf: Vec<u8>,
}

impl Cursor {
    /// A cursor at `(offset, pos)`, checking CRC32Cs if `verify`.
    pub(crate) fn new((offset, pos): (u64, u64), verify: bool) -> Cursor {
        Cursor {
            offset,
            pos,
            sane: sane_cursor(offset, pos),
            stall: None,
            aborted_run: 0,
            pending_polls: 0,
            verify,
            buf: Vec::new(),
        }
    }

    /// The offset of the next record to read.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Where the next record's claim begins.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Moves the cursor to `(offset, pos)`, forgetting the stall clock and the aborted run.
    pub(crate) fn move_to(&mut self, at: (u64, u64)) {
        self.set(at);
        self.aborted_run = 0;
    }

    /// Sets the cursor to `(offset, pos)`, read from the file, and forgets the stall clock.
    fn set(&mut self, (offset, pos): (u64, u64)) {
        self.offset = offset;
        self.pos = pos;
        self.sane = sane_cursor(offset, pos);
        self.stall = None;
    }

    /// Moves the cursor past aborted records (aborting one stalled past the claim timeout) and
    /// says whether the record at it is committed or still to wait for. `check_tail`: the
    /// caller is about to sleep, so the tail is read now (otherwise every
    /// `TAIL_CHECK_EVERY`-th pending step) for the stall clock and the overrun check.
    ///
    /// A committed record at the cursor, the common case of a reader that keeps up, is the
    /// inlined fast path ([`look`](Self::look)); anything else goes to
    /// [`step_past`](Self::step_past), out of line.
    // Always inlined into every reader's poll: a call returns its 100-byte `Result<Next>`
    // through memory, which cost `Consumer::poll` about 40 instructions per record
    // (callgrind, `call_cost`).
    #[inline(always)]
    pub(crate) fn step(
        &mut self,
        shared: &MappedQueue,
        reads: Reads,
        check_tail: bool,
    ) -> Result<Next> {
        match self.look(shared) {
            Ok(ready) => Ok(Next::Ready(ready)),
            Err(found) => self.step_past(shared, reads, check_tail, found),
        }
    }

    /// One [`Ring::read_known`] at the cursor: the committed record there, or what was found
    /// instead (for [`step_past`](Self::step_past)). The fast path of [`step`](Self::step), for
    /// a caller that keeps the rest out of line too (`Consumer::poll`).
    ///
    /// [`Ring::read_known`]: crate::protocol::ring::Ring::read_known
    #[inline(always)]
    pub(crate) fn look(&self, shared: &MappedQueue) -> std::result::Result<Ready, Found> {
        match shared.ring.read_known(self.offset, self.pos, self.sane) {
            Found::Ready(ready) => Ok(ready),
            found => Err(found),
        }
    }

    /// [`step`](Self::step) from what it `found` at the cursor that is not a committed record:
    /// skips aborted records, resyncs a lapped reader, reports corruption, or says what to
    /// wait for (reading the cursor again after each move).
    #[inline(never)]
    pub(crate) fn step_past(
        &mut self,
        shared: &MappedQueue,
        reads: Reads,
        check_tail: bool,
        mut found: Found,
    ) -> Result<Next> {
        let ring = &shared.ring;
        loop {
            match found {
                Found::Ready(ready) => return Ok(Next::Ready(ready)),
                Found::Aborted => match ring.past_aborted(self.offset) {
                    Some((next, pos)) => {
                        self.aborted_run += next - self.offset;
                        self.set((next, pos));
                    }
                    None => return Err(self.resync(shared, self.offset)),
                },
                Found::Overtaken => return Err(self.resync(shared, self.offset)),
                Found::Inconsistent { start, why } => {
                    shared.recheck()?;
                    if reads.validates(start) && ring.overrun(start) {
                        return Err(self.resync(shared, self.offset));
                    }
                    return Err(Error::Corrupt {
                        path: shared.path.clone(),
                        kind: Corruption::Shared(why),
                    });
                }
                Found::Pending { tag } => {
                    // Zero pages read as a pending record: never wait on them.
                    shared.check_damage()?;
                    // The tail is the producers' busiest line. A spinning reader looks at it
                    // only every `TAIL_CHECK_EVERY` pending steps and before it sleeps: often
                    // enough for the stall clock and the overrun check, rarely enough not to
                    // slow down the producer it waits for.
                    self.pending_polls = self.pending_polls.wrapping_add(1);
                    let mut stall_left = None;
                    let (t_off, t_pos) =
                        if check_tail || self.pending_polls.is_multiple_of(TAIL_CHECK_EVERY) {
                            ring.tail()
                        } else {
                            (0, 0)
                        };
                    if reads.lappable && t_pos.saturating_sub(self.pos) > ring.layout.capacity {
                        return Err(self.resync(shared, self.offset));
                    }
                    if t_off > self.offset {
                        // Claimed but not committed: start (or continue) the stall clock.
                        let now = clock::monotonic_ns();
                        let since = match self.stall {
                            Some((o, since)) if o == self.offset => since,
                            _ => {
                                self.stall = Some((self.offset, now));
                                now
                            }
                        };
                        let stalled = Duration::from_nanos(now.saturating_sub(since));
                        let left = shared.geometry.claim_timeout.saturating_sub(stalled);
                        if left.is_zero() {
                            // A prepared record goes as its transaction went (`txn.rs`).
                            if !give_up_stalled(shared, self.offset, self.pos, tag)? {
                                return Err(self.resync(shared, self.offset));
                            }
                        } else {
                            stall_left = Some(left);
                            return Ok(Next::Pending { tag, stall_left });
                        }
                    } else {
                        return Ok(Next::Pending { tag, stall_left });
                    }
                }
            }
            found = ring.read_known(self.offset, self.pos, self.sane);
        }
    }

    /// Returns the committed record [`step`](Self::step) found and moves the cursor past it.
    /// `found` is what this cursor's `look`, `step` or `step_past` returned on `shared`.
    // Always inlined: with the inbox's and the idempotent producer's code in the crate the
    // compiler stopped inlining it into `Consumer::poll`, which cost 39 instructions per record
    // (callgrind, `call_cost`).
    #[inline(always)]
    pub(crate) fn deliver(
        &mut self,
        shared: &MappedQueue,
        reads: Reads,
        found: Ready,
    ) -> Result<Message<'_>> {
        let Ready {
            start,
            end,
            timestamp,
            crc,
            ..
        } = found;
        let len = found.len() as usize;
        let ring = &shared.ring;
        let offset = self.offset;
        let bytes = if reads.validates(start) {
            self.buf.resize(len, 0);
            // SAFETY: the payload's `len` bytes lie in the mapping (`read_known` checked them,
            // `Ready::payload_ptr`); `buf` is process-local, so the ranges cannot overlap. A
            // lapping producer may overwrite the bytes meanwhile: the check below discards the
            // copy then.
            unsafe {
                std::ptr::copy_nonoverlapping(found.payload_ptr(), self.buf.as_mut_ptr(), len)
            };
            // SYNC L: the copy counts only if no producer reached its bytes meanwhile.
            if ring.overrun(start) {
                return Err(self.resync(shared, offset));
            }
            &self.buf[..]
        } else {
            let ptr = found.payload_ptr();
            // SAFETY: the record is committed and lies at or after the reader's protected
            // position (`reads.copy_below`, a gating group's), so no producer writes these
            // bytes until the group commits past them, which needs `&mut` on the reader (the
            // borrow ends first). `read_known` checked the bounds (`Ready::payload_ptr`).
            unsafe { std::slice::from_raw_parts(ptr, len) }
        };
        // Still sane: `read` checked `end` (see `Ready::end`).
        self.offset += 1;
        self.pos = end;
        self.stall = None;
        if self.verify {
            let computed = crc::crc32c(bytes);
            if computed != crc {
                return Err(checksum_failed(shared, offset, crc, computed));
            }
        }
        // What was read is good only if the file was whole after the read.
        shared.check_damage()?;
        Ok(Message {
            offset,
            timestamp_ns: timestamp,
            payload: bytes,
            aborted_before: std::mem::take(&mut self.aborted_run),
        })
    }

    /// Moves past an overrun: to the oldest retained record; returns the `Lagged` error.
    #[cold]
    fn resync(&mut self, shared: &MappedQueue, from: u64) -> Error {
        if let Err(e) = shared.recheck() {
            return e;
        }
        // An overrun record is older than the ring's oldest, so this moves forward.
        let oldest = shared.ring.oldest();
        self.move_to(oldest);
        Error::Lagged {
            lost: oldest.0.saturating_sub(from),
        }
    }
}

/// The error for record `offset`, whose payload's CRC32C is `computed`, not the `stored` one:
/// built out of line, so the hot path does not load the path it names.
#[cold]
#[inline(never)]
fn checksum_failed(shared: &MappedQueue, offset: u64, stored: u32, computed: u32) -> Error {
    // Zeros from a truncated file are no checksum failure. (The page holding the new end reads
    // zeros past it without a fault, so ask the file now.)
    if let Err(e) = shared.recheck() {
        return e;
    }
    Error::Corrupt {
        path: shared.path.clone(),
        kind: Corruption::Checksum {
            offset,
            stored,
            computed,
        },
    }
}

/// Gives up a record stalled past the claim timeout (`MappedQueue::give_up_stalled`), out of
/// the read path's line: inlined into `step`, its error handling cost `Consumer::poll` about
/// 20 instructions per record (callgrind, `call_cost`).
#[cold]
#[inline(never)]
fn give_up_stalled(shared: &MappedQueue, offset: u64, pos: u64, tag: u64) -> Result<bool> {
    shared.give_up_stalled(offset, pos, tag)
}
