//! [`TailReader`]: reads a queue's records without a consumer group.
//!
//! A tail reader is a cursor of its own process: it creates no group, holds no lease, and
//! stores nothing in the file, so producers never wait for it (`tail -f`, Kafka's console
//! consumer without a group, Redis `XREAD`). Like a non-gating group it may be overrun: every
//! record is copied and then checked against the tail (SYNC L in `ring.rs`), and an overrun
//! reader gets [`Error::Lagged`] and continues at the oldest retained record.
//!
//! Waiting: the sleeper bitmap has one bit per group slot and a tail reader has none, so it
//! spins briefly, then sleeps on the data futex for at most [`MAX_SLEEP`] at a time without
//! flagging itself. It is woken early when a producer wakes a sleeping group member, and
//! otherwise sees a new record within [`MAX_SLEEP`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::Backoff;

use crate::consumer::{locate, Message, SeekTo};
use crate::error::{Corruption, Error, Result};
use crate::layout::{footprint, DATA_SEQ};
use crate::queue::Shared;
use crate::ring::Found;
use crate::sync::Ordering;

/// Longest single sleep of a waiting tail reader: the latency of a new record when no group
/// member sleeps too (a member's wake-up bumps the futex it sleeps on).
const MAX_SLEEP: Duration = Duration::from_millis(10);

/// A group-less reader of a queue file, made by [`Queue::tail_reader`](crate::Queue::tail_reader).
/// It changes nothing in the file, except that, like every reader, it gives up a record whose
/// producer stalled or died for longer than the claim timeout (so readers never wait forever).
pub struct TailReader {
    shared: Arc<Shared>,
    /// Next record to read: its offset and cursor position.
    offset: u64,
    pos: u64,
    /// The stalled record and when this reader first saw it stalled.
    stall: Option<(u64, Instant)>,
    /// Aborted offsets skipped since the last message returned.
    aborted_run: u64,
    /// Check each record's CRC32C before returning it (queues with checksums).
    verify: bool,
    /// Every record is copied here before it is checked against the tail.
    buf: Vec<u8>,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader")
            .field("path", &self.shared.path)
            .field("position", &self.offset)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl TailReader {
    /// A reader whose first record is the one `from` names. [`SeekTo::Committed`] names no
    /// record here (there is no group) and is [`Error::InvalidArgument`].
    pub(crate) fn new(shared: Arc<Shared>, from: SeekTo) -> Result<TailReader> {
        if from == SeekTo::Committed {
            return Err(Error::InvalidArgument(
                "a tail reader has no group, so no committed offset to start at".into(),
            ));
        }
        // The slot is read only for `SeekTo::Committed`, refused above.
        let (offset, pos) = locate(&shared, 0, from)?;
        let verify = shared.geometry.checksums;
        Ok(TailReader {
            shared,
            offset,
            pos,
            stall: None,
            aborted_run: 0,
            verify,
            buf: Vec::new(),
        })
    }

    /// The next offset [`poll`](Self::poll) will return (or skip past, if it was aborted).
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Whether [`poll`](Self::poll) checks each record's CRC32C (on by default in a queue with
    /// checksums; a no-op in one without).
    pub fn set_verify_checksums(&mut self, verify: bool) {
        self.verify = verify && self.shared.geometry.checksums;
    }

    /// Returns the next record, waiting up to `timeout` (`None`: forever); `Ok(None)` when the
    /// timeout passed. [`Error::Lagged`] means records were overwritten before this reader got
    /// to them; it now continues at the oldest retained record. A record that fails its
    /// CRC32C gives [`Error::Corrupt`] of kind [`Corruption::Checksum`], and the reader has
    /// moved past it. [`Error::Truncated`] or [`Error::Detached`]: the queue file was
    /// truncated, removed or replaced under this process.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>> {
        let mut deadline: Option<Option<Instant>> = None;
        let backoff = Backoff::new();
        loop {
            let ring = &self.shared.ring;
            match ring.read(self.offset, self.pos) {
                Found::Ready {
                    start,
                    len,
                    timestamp,
                    payload,
                    crc,
                } => {
                    let offset = self.offset;
                    self.buf.resize(len as usize, 0);
                    ring.region.read_bytes(payload, &mut self.buf);
                    // SYNC L: the copy counts only if no producer reached its bytes meanwhile.
                    if ring.overrun(start) {
                        return Err(self.resync(offset));
                    }
                    self.offset += 1;
                    self.pos = start + footprint(len as u64);
                    self.stall = None;
                    // The copy is good only if the file was whole after it (Consumer::poll).
                    self.shared.check_damage()?;
                    if self.verify {
                        let computed = crc32c::crc32c(&self.buf);
                        if computed != crc {
                            // Zeros past a truncation within a page are no checksum failure.
                            self.shared.recheck()?;
                            return Err(Error::Corrupt {
                                path: self.shared.path.clone(),
                                kind: Corruption::Checksum {
                                    offset,
                                    stored: crc,
                                    computed,
                                },
                            });
                        }
                    }
                    return Ok(Some(Message {
                        offset,
                        timestamp_ns: timestamp,
                        payload: &self.buf,
                        aborted_before: std::mem::take(&mut self.aborted_run),
                    }));
                }
                Found::Aborted => match ring.resolve(self.offset + 1) {
                    Some(next) => {
                        self.offset += 1;
                        self.pos = next;
                        self.stall = None;
                        self.aborted_run += 1;
                    }
                    None => return Err(self.resync(self.offset)),
                },
                Found::Overtaken => return Err(self.resync(self.offset)),
                Found::Inconsistent { start, why } => {
                    self.shared.recheck()?;
                    if ring.overrun(start) {
                        return Err(self.resync(self.offset));
                    }
                    return Err(Error::Corrupt {
                        path: self.shared.path.clone(),
                        kind: Corruption::Shared(why),
                    });
                }
                Found::Pending { tag } => {
                    // Zero pages read as a pending record: never wait on them.
                    self.shared.check_damage()?;
                    let (t_off, t_pos) = ring.tail();
                    if t_pos.saturating_sub(self.pos) > ring.layout.capacity {
                        return Err(self.resync(self.offset));
                    }
                    let mut stall_left = None;
                    if t_off > self.offset {
                        let now = Instant::now();
                        let since = match self.stall {
                            Some((o, since)) if o == self.offset => since,
                            _ => {
                                self.stall = Some((self.offset, now));
                                now
                            }
                        };
                        let left = self
                            .shared
                            .geometry
                            .claim_timeout
                            .saturating_sub(now - since);
                        if left.is_zero() {
                            ring.abort(self.offset, tag);
                            continue;
                        }
                        stall_left = Some(left);
                    }
                    if timeout == Some(Duration::ZERO) {
                        return Ok(None);
                    }
                    if !backoff.is_completed() {
                        backoff.snooze();
                        continue;
                    }
                    let deadline =
                        *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    if left == Some(Duration::ZERO) {
                        return Ok(None);
                    }
                    let wait = [left, stall_left, Some(MAX_SLEEP)]
                        .into_iter()
                        .flatten()
                        .min();
                    // SeqCst like every access to the futex word (SYNC W); the reader is not
                    // in the sleeper bitmap, so a missed bump costs at most `wait`.
                    let seen = ring.region.u32(DATA_SEQ).load(Ordering::SeqCst);
                    if ring.tag_of(self.offset).load(Ordering::SeqCst) == tag {
                        ring.region.wait(DATA_SEQ, seen, wait);
                    }
                }
            }
        }
    }

    /// Splits a message read from the topic partition file `partition` into its key (if it
    /// has one) and its value: a partition's records carry their key in front of the value
    /// (FORMAT.md). [`Error::Corrupt`], naming `partition`, for a record without valid
    /// framing (a queue file that is no partition, or a damaged record).
    pub fn split_key<'m>(
        partition: &Path,
        message: &Message<'m>,
    ) -> Result<(Option<&'m [u8]>, &'m [u8])> {
        crate::topic::routing::split_record(partition, message.offset, message.payload)
    }

    /// Moves past an overrun: to the oldest retained record; returns the `Lagged` error.
    #[cold]
    fn resync(&mut self, from: u64) -> Error {
        if let Err(e) = self.shared.recheck() {
            return e;
        }
        let (offset, pos) = self.shared.ring.oldest();
        self.offset = offset;
        self.pos = pos;
        self.stall = None;
        self.aborted_run = 0;
        Error::Lagged {
            lost: offset.saturating_sub(from),
        }
    }
}
