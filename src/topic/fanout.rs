//! [`fan_out`]: copies a consumer group's backlog from one topic into another (typically one
//! with more partitions), keeping per-key order.
//!
//! The emergency answer to a backlog that one consumer per partition cannot drain: stop the
//! group's consumers, fan the backlog out into a topic with more partitions, and point more
//! consumers at the new topic. Growing the topic in place would not do: records already in a
//! partition stay there, and new records of a key would be routed elsewhere than its old ones.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::consumer::Subscribe;
use crate::topic::directory::Topic;
use crate::topic::routing;

/// Records between two commits of the source group while copying.
const COMMIT_EVERY: u64 = 1024;

/// What [`fan_out`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOut {
    /// Records copied from each source partition, by index.
    pub per_partition: Vec<u64>,
    /// Records copied in all.
    pub copied: u64,
}

/// Copies every record of `source` that `group` has not committed, up to each partition's tail
/// at the time it is reached, into `dest`, and commits them in `group`. Every partition of the
/// topic is copied, those added since `source` was opened too.
///
/// Keyed records are routed in `dest` by key as [`TopicProducer::publish_keyed`] does, so every
/// key's records land in one partition of `dest` in their order in `source` (a key's records
/// are in one source partition, which is copied in offset order). Unkeyed records go
/// round-robin. The group must exist in every source partition ([`Error::UnknownGroup`]
/// otherwise, before anything is copied: a misspelt group would copy everything) and its
/// members must be stopped: a partition held by a live member gives [`Error::GroupBusy`]. Publishing into `dest` waits while a destination partition is full
/// (under [`FullPolicy::Block`](crate::FullPolicy::Block)), so make the new topic large enough
/// for the backlog or start its consumers first. At-least-once: if the copy is interrupted, a rerun copies again the
/// records since the group's last commit (every 1,024 records and at the end of each
/// partition).
///
/// [`TopicProducer::publish_keyed`]: crate::TopicProducer::publish_keyed
pub fn fan_out(source: &Topic, group: &str, dest: &Topic) -> Result<FanOut> {
    // The handle may predate a growth: the partitions it does not know of hold backlog too.
    let mut source = source.clone();
    source.refresh()?;
    let has_group = |q: &crate::Queue| q.groups().iter().any(|g| g.name == group);
    if !source.partitions().iter().all(has_group) {
        return Err(Error::UnknownGroup(group.to_string()));
    }
    let mut producer = dest.producer()?;
    let mut per_partition = Vec::with_capacity(source.partition_count() as usize);
    for queue in source.partitions() {
        let mut consumer = queue.subscribe(group, &Subscribe::default())?;
        let end = queue.tail_offset();
        // A claimed record is committed or aborted (by this poll) within the claim timeout.
        let wait = 2 * queue.geometry().claim_timeout + Duration::from_secs(1);
        let mut copied = 0;
        while consumer.position() < end {
            let Some(m) = consumer.poll(Some(wait))? else {
                return Err(Error::Io {
                    path: queue.path().to_path_buf(),
                    op: "wait for the next record to copy",
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            };
            let offset = m.offset;
            let (key, value) = routing::split_record(queue.path(), offset, m.payload)?;
            match key {
                Some(k) => producer.publish_keyed(k, value)?,
                None => producer.publish(value)?,
            };
            copied += 1;
            if copied % COMMIT_EVERY == 0 {
                consumer.commit(offset)?;
            }
        }
        if let Some(last) = consumer.position().checked_sub(1) {
            consumer.commit(last)?;
        }
        per_partition.push(copied);
    }
    Ok(FanOut {
        copied: per_partition.iter().sum(),
        per_partition,
    })
}
