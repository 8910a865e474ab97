//! Topics: a directory of N partitions (queue files), keyed routing, and consumer groups whose
//! members share the partitions among themselves.
//!
//! ```text
//! orders.topic/
//!   descriptor          64 bytes: version, partition count, generation, checksum
//!   members             the membership file: member slots, heartbeats, the wake-up word
//!   partition-0000.q    one queue file per partition
//!   partition-0001.q
//!   ...
//! ```
//!
//! A [`Topic`] is built on [`Queue`](crate::Queue): each partition is an ordinary queue file, a topic
//! consumer group is an ordinary consumer group in each partition, and a member reads a
//! partition only while it holds that group's lease in that partition's file. Records carry
//! their key in a small framing inside the payload (`routing.rs`).
//!
//! ```
//! # fn main() -> shmq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! use shmq::{Options, Topic, TopicOptions};
//! let queue = Options { capacity: 1 << 16, max_message: 1024, ..Options::default() };
//! let options = TopicOptions { partitions: 4, queue };
//! let topic = Topic::create(dir.path().join("orders.topic"), &options)?;
//! let mut consumer = topic.consumer("billing")?;  // joins the group; holds all 4 partitions
//! let mut producer = topic.producer()?;
//! let sent = producer.publish_keyed(b"order-42", b"paid")?;
//! let msg = consumer.poll(Some(Duration::from_secs(1)))?.expect("a message");
//! assert_eq!(msg.partition, sent.partition);
//! assert_eq!((msg.key, msg.value), (Some(&b"order-42"[..]), &b"paid"[..]));
//! let (partition, offset) = (msg.partition, msg.offset);
//! consumer.commit(partition, offset)?;
//! # Ok(()) }
//! ```

pub(crate) mod consumer;
mod descriptor;
mod directory;
mod fanout;
pub(crate) mod members;
mod producer;
pub(crate) mod routing;
mod transaction;
mod work;

use crate::error::Result;
use crate::queue::work::WorkOptions;

pub use consumer::{MemberOptions, TopicConsumer, TopicMessage};
pub use descriptor::MAX_PARTITIONS;
pub use directory::{PartitionInfo, Topic, TopicOptions};
pub use fanout::{fan_out, FanOut};
pub use members::MemberInfo;
pub use producer::{Published, TopicProducer};
pub use routing::{partition_for_key, MAX_KEY};
pub use transaction::{TransactionInfo, TransactionState, TransactionalProducer};
pub use work::{TopicJob, TopicPending, TopicTicket, TopicWorkInfo, TopicWorker};

/// Making the members of a topic: producers, consumer-group members and workers.
impl Topic {
    /// A new producer (takes a producer slot in each partition it publishes to).
    pub fn producer(&self) -> Result<TopicProducer> {
        Ok(TopicProducer::new(self.clone()))
    }

    /// Joins consumer group `group` with the default [`MemberOptions`].
    pub fn consumer(&self, group: &str) -> Result<TopicConsumer> {
        self.subscribe(group, &MemberOptions::default())
    }

    /// Joins consumer group `group`: the member gets its share of the partitions at once (those
    /// no live member holds) and the rest of it as the other members release them.
    pub fn subscribe(&self, group: &str, options: &MemberOptions) -> Result<TopicConsumer> {
        TopicConsumer::new(self.clone(), group, options)
    }

    /// Joins work group `group` (competing workers with per-record acks, see
    /// [`Queue::worker`](crate::Queue::worker)) in every partition, creating it with `options`
    /// where it does not exist: the worker gets records of any partition, each record going to
    /// one worker at a time. It takes a slot of the membership file, like a consumer-group
    /// member ([`Error::TooManyMembers`](crate::Error::TooManyMembers) past 64).
    pub fn worker(&self, group: &str, options: &WorkOptions) -> Result<TopicWorker> {
        TopicWorker::new(self.clone(), group, options)
    }
}
