//! The async API (feature `tokio`): [`Consumer::recv`], [`Producer::publish_async`],
//! [`TopicConsumer::recv`] and the message streams [`Messages`] and [`TopicMessages`].
//!
//! Each is the blocking call's own protocol with its sleep replaced by a [`Sleep`] on the same
//! futex word: the future flags the same sleeper bit a blocking caller flags, re-checks, and
//! registers with the process's waker thread (`wake.rs`), which wakes its task when the word
//! moves or its deadline passes. Producers and committers therefore need no change, and an
//! idle future costs no CPU. The futures are plain `std` futures: they run on tokio or on any
//! other executor.
//!
//! **Cancellation.** A receive takes a record from the consumer's cursor only in the poll that
//! returns it, so a dropped `recv` future (or stream) loses nothing: the next receive gets the
//! record. Dropping it clears its sleeper bit and its registration. A publish claims, writes and
//! commits its record within one poll, so a dropped `publish_async` future has published
//! nothing unless it completed (exactly once).

mod wake;

use std::future::poll_fn;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_core::Stream;

use crate::async_api::wake::{Sleep, Word};
use crate::error::{Error, Result};
use crate::protocol::layout;
use crate::protocol::ring::{self, Claim};
use crate::protocol::sync::Ordering;
use crate::queue::consumer::{Consumer, Next, Ready};
use crate::queue::mapped::MappedQueue;
use crate::queue::producer::Producer;
use crate::runtime::wait::{Pause, Wait, INFLIGHT_POLL};
use crate::topic::members::{Members, WAKE_SEQ, WAKE_WAITERS};
use crate::topic::TopicConsumer;

/// A sleeper bit a pending future set; dropping it clears the bit.
enum Flag {
    /// A consumer's bit in the data sleeper bitmap, cleared only while its group slot is still
    /// the consumer's (see [`Consumer::owns_slot`]).
    Data {
        shared: Arc<MappedQueue>,
        slot: u32,
        lease: u128,
    },
    /// A producer's bit among the producers waiting for room.
    Space { shared: Arc<MappedQueue>, bit: u64 },
    /// A topic member's bit in the membership file's wake-up bitmap.
    Topic { members: Arc<Members>, bit: u64 },
}

impl Drop for Flag {
    fn drop(&mut self) {
        match self {
            Flag::Data {
                shared,
                slot,
                lease,
            } => shared
                .ring
                .unflag_data(1u64 << *slot, || shared.lease(*slot) == *lease),
            Flag::Space { shared, bit } => {
                ring::unflag(&shared.ring.region, layout::SPACE_WAITERS, *bit)
            }
            Flag::Topic { members, bit } => ring::unflag(members.region(), WAKE_WAITERS, *bit),
        }
    }
}

/// The state of a future between polls: its sleeper bit while set, and its sleep.
#[derive(Default)]
struct Waiting {
    flag: Option<Flag>,
    sleep: Option<Sleep>,
}

impl Waiting {
    /// Polls the pending sleep, if any: `Ready` once there is none left to wait for.
    fn poll_sleep(&mut self, cx: &mut Context<'_>, path: &Path) -> Poll<Result<()>> {
        if let Some(sleep) = &mut self.sleep {
            ready!(sleep.poll(cx)).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                op: "start the async waker thread",
                source,
            })?;
            self.sleep = None;
        }
        Poll::Ready(Ok(()))
    }

    /// Ends the wait: clears the sleeper bit and drops the registration.
    fn done<T>(&mut self, result: T) -> Poll<T> {
        self.flag = None;
        self.sleep = None;
        Poll::Ready(result)
    }
}

/// A record received by a stream: [`Message`](crate::Message) with its payload copied out, as a
/// stream's items cannot borrow from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    /// The record's offset.
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// Aborted offsets skipped right before this one (see
    /// [`Message::aborted_before`](crate::Message::aborted_before)).
    pub aborted_before: u64,
}

/// A record of a topic received by a stream: [`TopicMessage`](crate::TopicMessage) with key and
/// value copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedTopicMessage {
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Its key (`None` for a record published without one).
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub value: Vec<u8>,
    /// Aborted offsets skipped right before this one in its partition.
    pub aborted_before: u64,
}

impl Consumer {
    /// Waits for the next record without blocking a thread: the async [`poll`](Self::poll)
    /// with no timeout (wrap it in `tokio::time::timeout` for one). Cancellation-safe: the
    /// record is taken from the cursor only when the future completes, so after a dropped
    /// `recv` the next one returns it. Errors as [`poll`](Self::poll).
    pub async fn recv(&mut self) -> Result<crate::Message<'_>> {
        let mut waiting = Waiting::default();
        let found = poll_fn(|cx| self.poll_ready(cx, &mut waiting)).await?;
        self.deliver(found)
    }

    /// Turns this consumer into a [`Stream`] of copied records; commit through
    /// [`Messages::commit`].
    pub fn into_stream(self) -> Messages {
        Messages {
            consumer: self,
            waiting: Waiting::default(),
        }
    }

    /// `Ready` with the next committed record, or `Pending` with the task registered to be
    /// woken when the record's slot may have changed (SYNC W) or a wait bound passed.
    fn poll_ready(&mut self, cx: &mut Context<'_>, w: &mut Waiting) -> Poll<Result<Ready>> {
        if let Err(e) = self.lease.check_current(&self.shared.path) {
            return w.done(Err(e));
        }
        loop {
            if let Err(e) = ready!(w.poll_sleep(cx, &self.shared.path)) {
                return w.done(Err(e));
            }
            if let Err(e) = self.beat() {
                return w.done(Err(e));
            }
            let (tag, stall_left) = match self.next(true) {
                Ok(Next::Ready(found)) => return w.done(Ok(found)),
                Ok(Next::Pending { tag, stall_left }) => (tag, stall_left),
                Err(e) => return w.done(Err(e)),
            };
            let ring = &self.shared.ring;
            let seen = ring.flag_data(self.sleeper_bit());
            w.flag.get_or_insert_with(|| Flag::Data {
                shared: self.shared.clone(),
                slot: self.slot,
                lease: self.lease.word(),
            });
            // SYNC W (SeqCst): re-check after flagging ourselves as a sleeper.
            if ring.slot_tag(self.cursor.offset()).load(Ordering::SeqCst) != tag {
                continue;
            }
            let within = self.wake_within(stall_left);
            // SAFETY: the word is in the queue's mapping, which `MappedQueue` keeps mapped.
            let word = unsafe { Word::new(self.shared.clone(), ring.region.u32(layout::DATA_SEQ)) };
            w.sleep = Some(Sleep::new(word, seen, within));
        }
    }
}

/// A [`Consumer`] as a [`Stream`] of [`OwnedMessage`]s (from [`Consumer::into_stream`]). It
/// never ends: errors are items, and [`Error::Lagged`] or a checksum error is followed by the
/// records after it. Dropping a stream that waits loses no record.
pub struct Messages {
    consumer: Consumer,
    waiting: Waiting,
}

impl Messages {
    /// Commits `offset` (see [`Consumer::commit`]).
    pub fn commit(&mut self, offset: u64) -> Result<()> {
        self.consumer.commit(offset)
    }

    /// The consumer, for its other calls.
    pub fn get_mut(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// The consumer back.
    pub fn into_inner(self) -> Consumer {
        self.consumer
    }
}

impl Stream for Messages {
    type Item = Result<OwnedMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let found = ready!(this.consumer.poll_ready(cx, &mut this.waiting));
        let message = found.and_then(|found| this.consumer.deliver(found));
        Poll::Ready(Some(message.map(|m| OwnedMessage {
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            payload: m.payload.to_vec(),
            aborted_before: m.aborted_before,
        })))
    }
}

impl Producer {
    /// Publishes `payload` like [`publish`](Self::publish), but waits for room in a full
    /// queue (policy `Block`) without blocking a thread, up to the timeout of
    /// [`set_timeout`](Self::set_timeout). The claim, the copy and the commit happen in the one
    /// poll that finds room, so a dropped future has published nothing, and one that completed
    /// published exactly once. Under [`Durability::Sync`](crate::Durability::Sync) that poll
    /// also waits for the flush, blocking its thread as `publish` does. Errors as `publish`.
    pub async fn publish_async(&mut self, payload: &[u8]) -> Result<u64> {
        self.lease.check_current(&self.shared.path)?;
        let len = self.check_len(payload.len())?;
        self.check_poison()?;
        let mut wait = Wait::started(self.timeout);
        let mut waiting = Waiting::default();
        poll_fn(|cx| {
            let claim = ready!(self.poll_claim(cx, len, &mut wait, &mut waiting))?;
            let crc = crate::queue::producer::write_checked(&self.shared, &claim, payload);
            Poll::Ready(self.finish(claim, crc))
        })
        .await
    }

    /// `Ready` with a claim of `len` bytes, or `Pending` with the task registered to be woken
    /// when a commit may have made room (SYNC W) or the sleep `wait` allows is over.
    fn poll_claim(
        &mut self,
        cx: &mut Context<'_>,
        len: u32,
        wait: &mut Wait,
        w: &mut Waiting,
    ) -> Poll<Result<Claim>> {
        loop {
            if let Err(e) = ready!(w.poll_sleep(cx, &self.shared.path)) {
                return w.done(Err(e));
            }
            let room = match self.try_claim(len) {
                Ok(Ok(claim)) => return w.done(Ok(claim)),
                Ok(Err(room)) => room,
                Err(e) => return w.done(Err(e)),
            };
            // Waits still wake once in a while, as blocking sleeps do (to see what the file
            // watcher found, among others).
            let within = match wait.pause(|| room.sleep_cap()) {
                Pause::TimedOut => return w.done(Err(self.timed_out(&room))),
                Pause::Spun => continue,
                Pause::Sleep(within) => within,
            };
            let region = &self.shared.ring.region;
            let bit = self.sleeper_bit();
            let seen = ring::flag(region, layout::SPACE_WAITERS, layout::SPACE_SEQ, bit);
            w.flag.get_or_insert_with(|| Flag::Space {
                shared: self.shared.clone(),
                bit,
            });
            // SYNC W (SeqCst loads in the limit scan): re-check after flagging ourselves.
            if self.has_room(room.end) {
                continue;
            }
            // SAFETY: the word is in the queue's mapping, which `MappedQueue` keeps mapped.
            let word = unsafe { Word::new(self.shared.clone(), region.u32(layout::SPACE_SEQ)) };
            w.sleep = Some(Sleep::new(word, seen, within));
        }
    }
}

impl TopicConsumer {
    /// Waits for the next record of a held partition without blocking a thread: the async
    /// [`poll`](Self::poll) with no timeout. Heartbeats and rebalances happen in here as in
    /// `poll`, so a member must keep a `recv` pending (or call it at least every heartbeat
    /// interval) to keep its partitions moving. Cancellation-safe as [`Consumer::recv`].
    pub async fn recv(&mut self) -> Result<crate::TopicMessage<'_>> {
        let mut waiting = Waiting::default();
        let (p, found) = poll_fn(|cx| self.poll_ready(cx, &mut waiting)).await?;
        self.deliver(p, found)
    }

    /// Turns this member into a [`Stream`] of copied records; commit through
    /// [`TopicMessages::commit`].
    pub fn into_stream(self) -> TopicMessages {
        TopicMessages {
            consumer: self,
            waiting: Waiting::default(),
        }
    }

    /// `Ready` with a committed record of a held partition, or `Pending` with the task
    /// registered to be woken by a topic producer (SYNC W in `members.rs`), at the next tick,
    /// or in a millisecond while a claimed record is pending.
    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut Waiting,
    ) -> Poll<Result<(usize, Ready)>> {
        if let Err(e) = self.lease.check_current(self.topic.path()) {
            return w.done(Err(e));
        }
        loop {
            if let Err(e) = ready!(w.poll_sleep(cx, self.topic.path())) {
                return w.done(Err(e));
            }
            match self.next() {
                Ok(Some(found)) => return w.done(Ok(found)),
                Ok(None) => {}
                Err(e) => return w.done(Err(e)),
            }
            let members = self.topic.members_file().clone();
            let region = members.region();
            let to_tick = self.to_tick();
            let (seen, within) = if self.backlog() {
                // A claimed record without a wake-up to come: poll, as `poll` does.
                // SeqCst like every access to the wake-up word.
                let seen = region.u32(WAKE_SEQ).load(Ordering::SeqCst);
                (seen, to_tick.min(INFLIGHT_POLL))
            } else {
                let bit = 1u64 << self.slot.index;
                let seen = ring::flag(region, WAKE_WAITERS, WAKE_SEQ, bit);
                w.flag.get_or_insert_with(|| Flag::Topic {
                    members: members.clone(),
                    bit,
                });
                // SYNC W (SeqCst tail loads in `lag`): re-checked after flagging ourselves.
                if self.backlog() {
                    continue;
                }
                (seen, to_tick)
            };
            // SAFETY: the word is in the membership file's mapping, which `Members` keeps
            // mapped.
            let word = unsafe { Word::new(members.clone(), region.u32(WAKE_SEQ)) };
            w.sleep = Some(Sleep::new(word, seen, within));
        }
    }
}

/// A [`TopicConsumer`] as a [`Stream`] of [`OwnedTopicMessage`]s (from
/// [`TopicConsumer::into_stream`]). It never ends: errors are items, and the stream goes on
/// after them.
pub struct TopicMessages {
    consumer: TopicConsumer,
    waiting: Waiting,
}

impl TopicMessages {
    /// Commits `offset` of `partition` (see [`TopicConsumer::commit`]).
    pub fn commit(&mut self, partition: u32, offset: u64) -> Result<()> {
        self.consumer.commit(partition, offset)
    }

    /// The member, for its other calls.
    pub fn get_mut(&mut self) -> &mut TopicConsumer {
        &mut self.consumer
    }

    /// The member back.
    pub fn into_inner(self) -> TopicConsumer {
        self.consumer
    }
}

impl Stream for TopicMessages {
    type Item = Result<OwnedTopicMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let found = ready!(this.consumer.poll_ready(cx, &mut this.waiting));
        let message = found.and_then(|(p, found)| this.consumer.deliver(p, found));
        Poll::Ready(Some(message.map(|m| OwnedTopicMessage {
            partition: m.partition,
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            key: m.key.map(<[u8]>::to_vec),
            value: m.value.to_vec(),
            aborted_before: m.aborted_before,
        })))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::wake;
    use crate::protocol::layout::{DATA_WAITERS, SPACE_WAITERS};
    use crate::protocol::sync::Ordering;
    use crate::{Error, Options, Queue};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    /// A receive and a publish dropped while they wait leave no sleeper bit set and no wait
    /// registered with the waker thread.
    #[test]
    fn dropped_futures_leave_no_bit_and_no_registration() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            capacity: 4096,
            max_message: 256,
            ..Options::default()
        };
        let queue = Queue::create(dir.path().join("q"), &options).unwrap();
        let mut consumer = queue.consumer("g").unwrap();
        let shared = consumer.shared.clone();
        // SeqCst like every access to the sleeper bitmaps (SYNC W).
        let bits = |off| shared.ring.region.u64(off).load(Ordering::SeqCst);
        let waited = block_on(async {
            let pending = tokio::time::timeout(Duration::from_millis(100), consumer.recv());
            pending.await.is_err()
        });
        assert!(waited, "nothing to receive");
        assert_eq!(
            bits(DATA_WAITERS),
            0,
            "the consumer's sleeper bit is cleared"
        );
        assert_eq!(wake::registered(), 0, "no wait left registered");

        let mut producer = queue.producer().unwrap();
        producer.set_timeout(Some(Duration::ZERO));
        while !matches!(producer.publish(&[1; 200]), Err(Error::Timeout { .. })) {}
        producer.set_timeout(None);
        let waited = block_on(async {
            let pending = tokio::time::timeout(
                Duration::from_millis(100),
                producer.publish_async(&[1; 200]),
            );
            pending.await.is_err()
        });
        assert!(waited, "the queue is full");
        assert_eq!(
            bits(SPACE_WAITERS),
            0,
            "the producer's sleeper bit is cleared"
        );
        assert_eq!(wake::registered(), 0, "no wait left registered");
    }
}
