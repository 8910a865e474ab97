//! shmq: a persistent, lock-free, multi-process message queue over one memory-mapped file.
//!
//! Processes on one host map the same queue file and exchange records through atomics in it:
//! no broker, no socket. Producers publish lock-free from any process; named consumer groups
//! each keep a committed offset in the file, see every record in offset order at least once, and
//! resume after a crash. A [`Topic`] is a directory of such files (partitions) with keyed
//! routing and consumer groups whose members share the partitions. See `ARCHITECTURE.md` for the protocol and `FORMAT.md` for the bytes.
//!
//! ```
//! # fn main() -> shmq::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! use std::time::Duration;
//! let queue = shmq::Queue::create(dir.path().join("events.q"), &shmq::Options::default())?;
//! let mut consumer = queue.consumer("audit")?;       // a gating group, from the earliest record
//! let mut producer = queue.producer()?;
//! for i in 0..3u8 {
//!     producer.publish(&[i])?;
//! }
//! while let Some(msg) = consumer.poll(Some(Duration::ZERO))? {
//!     println!("{}: {:?}", msg.offset, msg.payload);
//!     let offset = msg.offset;
//!     consumer.commit(offset)?;                       // at-least-once: commit after processing
//! }
//! # Ok(()) }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The loom build compiles only the protocol core, so most of the file layer is unused there.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

// The protocol core, also built under `cfg(loom)` for the model checker.
pub mod crash;
mod error;
mod layout;
#[cfg(all(test, loom))]
mod loom_tests;
mod ring;
mod sync;

// The file-backed API around it.
#[cfg(all(feature = "tokio", not(loom)))]
mod async_api;
#[cfg(not(loom))]
mod boot;
#[cfg(not(loom))]
mod clock;
#[cfg(not(loom))]
mod consumer;
#[cfg(not(loom))]
mod cursor;
#[cfg(not(loom))]
mod durable;
pub mod fault;
#[cfg(not(loom))]
mod file;
#[cfg(not(loom))]
mod flusher;
#[cfg(not(loom))]
mod group;
#[cfg(not(loom))]
mod lease;
#[cfg(not(loom))]
mod producer;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
mod recovery;
#[cfg(not(loom))]
mod sigbus;
#[cfg(not(loom))]
mod tail;
#[cfg(not(loom))]
mod thread;
#[cfg(not(loom))]
mod topic;
#[cfg(not(loom))]
mod trust;
#[cfg(not(loom))]
mod wait;
#[cfg(all(feature = "tokio", not(loom)))]
mod wake;
#[cfg(not(loom))]
mod watch;

#[cfg(all(feature = "tokio", not(loom)))]
pub use async_api::{Messages, OwnedMessage, OwnedTopicMessage, TopicMessages};
#[cfg(not(loom))]
pub use consumer::{Consumer, Message, SeekTo, Start, Subscribe};
pub use error::{Account, Blocker, Corruption, Detachment, Distrust, Error, Result};
#[cfg(not(loom))]
pub use group::GroupInfo;
pub use layout::{Durability, FullPolicy, Geometry, VERSION as FORMAT_VERSION};
#[cfg(not(loom))]
pub use producer::{Claimed, Producer};
#[cfg(not(loom))]
pub use queue::{Options, Queue};
#[cfg(not(loom))]
pub use recovery::Recovery;
#[cfg(not(loom))]
pub use sync::futex;
#[cfg(not(loom))]
pub use tail::TailReader;
#[cfg(not(loom))]
pub use topic::{
    fan_out, partition_for_key, FanOut, MemberInfo, MemberOptions, PartitionInfo, Published, Topic,
    TopicConsumer, TopicMessage, TopicOptions, TopicProducer, MAX_KEY, MAX_PARTITIONS,
};
#[cfg(not(loom))]
pub use trust::Trust;

/// The README's example, compiled and run as a doctest so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
