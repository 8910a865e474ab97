//! [`TopicProducer`]: publishes framed records to a topic's partitions, by key, to a given
//! partition, or round-robin.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::producer::{Producer, Timestamps};
use crate::topic::directory::Topic;
use crate::topic::routing::{self, partition_for_key};

/// Where a record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The partition.
    pub partition: u32,
    /// The record's offset in that partition.
    pub offset: u64,
}

/// Publishes to a topic. One per thread (it is `Send`, not `Sync`). It opens a [`Producer`]
/// on a partition the first time it publishes there, and notices a growth of the topic at its
/// next publish (one atomic load of the membership file per publish).
pub struct TopicProducer {
    topic: Topic,
    producers: Vec<Option<Producer>>,
    /// The next partition of the round-robin.
    next: u32,
    /// The growth generation this producer last saw.
    generation: u64,
    timeout: Option<Duration>,
    /// The clock of every partition's producer.
    timestamps: Timestamps,
}

impl std::fmt::Debug for TopicProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicProducer")
            .field("path", &self.topic.path())
            .field("partitions", &self.producers.len())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TopicProducer {
    pub(crate) fn new(topic: Topic) -> TopicProducer {
        let n = topic.partition_count();
        TopicProducer {
            // The handle's own generation, not the membership file's: a handle opened before a
            // growth must refresh at the first publish, not route with the old count forever.
            generation: topic.generation(),
            producers: (0..n).map(|_| None).collect(),
            // Producers in different processes start the round-robin at different partitions.
            next: std::process::id() % n,
            topic,
            timeout: None,
            timestamps: Timestamps::Precise,
        }
    }

    /// Sets how long a publish waits for room in a full partition (see
    /// [`Producer::set_timeout`]); `None` (the default) waits as long as it takes.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) {
        self.timeout = timeout;
        for p in self.producers.iter_mut().flatten() {
            p.set_timeout(timeout);
        }
    }

    /// Sets the clock records are stamped with, in every partition (see
    /// [`Producer::set_timestamps`]).
    pub fn set_timestamps(&mut self, timestamps: Timestamps) {
        self.timestamps = timestamps;
        for p in self.producers.iter_mut().flatten() {
            p.set_timestamps(timestamps);
        }
    }

    /// The topic as this producer sees it.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Publishes `value` with `key` to partition [`partition_for_key`]`(key, N)`. All records of
    /// one key go to one partition, in publish order (while N does not change).
    ///
    /// Errors: those of [`Producer::publish`], and [`Error::KeyTooBig`] for a key longer
    /// than [`MAX_KEY`](crate::MAX_KEY) bytes.
    pub fn publish_keyed(&mut self, key: &[u8], value: &[u8]) -> Result<Published> {
        self.pick_up_growth()?;
        let partition = partition_for_key(key, self.topic.partition_count());
        let offset = self.write(partition, Some(key), value)?;
        Ok(Published { partition, offset })
    }

    /// Publishes `value` without a key to the next partition in round-robin order.
    pub fn publish(&mut self, value: &[u8]) -> Result<Published> {
        self.pick_up_growth()?;
        let partition = self.next % self.topic.partition_count();
        self.next = partition + 1;
        let offset = self.write(partition, None, value)?;
        Ok(Published { partition, offset })
    }

    /// Publishes `value` (with `key`, if given) to `partition` and returns its offset.
    pub fn publish_to(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<u64> {
        self.pick_up_growth()?;
        self.write(partition, key, value)
    }

    /// Refreshes the topic if a growth happened since this producer last looked.
    fn pick_up_growth(&mut self) -> Result<()> {
        if self.topic.refresh_if_grown(&mut self.generation)? {
            let n = self.topic.partition_count() as usize;
            self.producers.resize_with(n, || None);
        }
        Ok(())
    }

    /// Claims the framed record in place, writes framing, key and value (one copy), commits,
    /// and wakes sleeping members.
    fn write(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<u64> {
        let n = self.topic.partition_count();
        let len = routing::framed_len(key, value.len())?;
        let slot =
            self.producers
                .get_mut(partition as usize)
                .ok_or_else(|| Error::NoSuchPartition {
                    path: self.topic.path().to_path_buf(),
                    partition,
                    partitions: n,
                })?;
        let producer = match slot {
            Some(p) => p,
            None => {
                let mut p = self.topic.partitions()[partition as usize].producer()?;
                p.set_timeout(self.timeout);
                p.set_timestamps(self.timestamps);
                slot.insert(p)
            }
        };
        let mut claim = producer.claim(len)?;
        let buf = claim.as_mut_slice();
        let at = routing::write_frame(buf, key);
        buf[at..].copy_from_slice(value);
        let offset = claim.commit()?;
        self.topic.notify();
        Ok(offset)
    }
}
