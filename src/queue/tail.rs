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

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::protocol::layout::DATA_SEQ;
use crate::protocol::sync::Ordering;
use crate::queue::consumer::{locate, SeekTo};
use crate::queue::cursor::{Cursor, Message, Next, Reads};
use crate::queue::mapped::MappedQueue;
use crate::runtime::wait::{Pause, Wait};

/// Longest single sleep of a waiting tail reader: the latency of a new record when no group
/// member sleeps too (a member's wake-up bumps the futex it sleeps on).
const MAX_SLEEP: Duration = Duration::from_millis(10);

/// A group-less reader of a queue file, made by [`Queue::tail_reader`](crate::Queue::tail_reader).
/// It changes nothing in the file, except that, like every reader, it gives up a record whose
/// producer stalled or died for longer than the claim timeout (so readers never wait forever).
pub struct TailReader {
    shared: Arc<MappedQueue>,
    /// Next record to read, and the state of reading there. Every record is copied and
    /// checked against the tail ([`Reads::COPY_ALL`]).
    cursor: Cursor,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader")
            .field("path", &self.shared.path)
            .field("position", &self.cursor.offset())
            .field("verify", &self.cursor.verify)
            .finish_non_exhaustive()
    }
}

impl TailReader {
    /// A reader whose first record is the one `from` names. [`SeekTo::Committed`] names no
    /// record here (there is no group) and is [`Error::InvalidArgument`].
    pub(crate) fn new(shared: Arc<MappedQueue>, from: SeekTo) -> Result<TailReader> {
        if from == SeekTo::Committed {
            return Err(Error::InvalidArgument {
                argument: "start",
                why: "a tail reader has no group, so no committed offset to start at".into(),
            });
        }
        // The slot is read only for `SeekTo::Committed`, refused above.
        let cursor = Cursor::new(locate(&shared, 0, from)?, shared.geometry.checksums);
        Ok(TailReader { shared, cursor })
    }

    /// The next offset [`poll`](Self::poll) will return (or skip past, if it was aborted).
    pub fn position(&self) -> u64 {
        self.cursor.offset()
    }

    /// Whether [`poll`](Self::poll) checks each record's CRC32C (on by default in a queue with
    /// checksums; a no-op in one without).
    pub fn set_verify_checksums(&mut self, verify: bool) {
        self.cursor.verify = verify && self.shared.geometry.checksums;
    }

    /// Returns the next record, waiting up to `timeout` (`None`: forever); `Ok(None)` when the
    /// timeout passed. [`Error::Lagged`] means records were overwritten before this reader got
    /// to them; it now continues at the oldest retained record. A record that fails its
    /// CRC32C gives [`Error::Corrupt`] of kind [`Corruption::Checksum`](crate::Corruption::Checksum), and the reader has
    /// moved past it. [`Error::Truncated`] or [`Error::Detached`]: the queue file was
    /// truncated, removed or replaced under this process.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<Message<'_>>> {
        let mut wait = Wait::spinning(timeout);
        loop {
            // The tail is checked on every pending step: no producer waits for this reader,
            // so nothing but the tail tells it that it was overrun.
            let (tag, stall_left) = match self.cursor.step(&self.shared, Reads::COPY_ALL, true)? {
                Next::Ready(found) => {
                    return self
                        .cursor
                        .deliver(&self.shared, Reads::COPY_ALL, found)
                        .map(Some)
                }
                Next::Pending { tag, stall_left } => (tag, stall_left),
            };
            match wait.pause(|| stall_left.map_or(MAX_SLEEP, |s| s.min(MAX_SLEEP))) {
                Pause::TimedOut => return Ok(None),
                Pause::Spun => {}
                Pause::Sleep(sleep) => self.sleep(tag, sleep),
            }
        }
    }

    /// Sleeps until the slot tag at the cursor may have moved from `tag`, at most `sleep`,
    /// without a sleeper bit (see the module docs).
    fn sleep(&self, tag: u64, sleep: Duration) {
        let region = &self.shared.ring.region;
        // SeqCst like every access to the futex word (SYNC W); the reader is not in the
        // sleeper bitmap, so a missed bump costs at most `sleep`.
        let seen = region.u32(DATA_SEQ).load(Ordering::SeqCst);
        let tag_now = self.shared.ring.slot_tag(self.cursor.offset());
        if tag_now.load(Ordering::SeqCst) == tag {
            region.wait(DATA_SEQ, seen, Some(sleep));
        }
    }
}
