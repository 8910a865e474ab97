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

// The protocol core (`protocol/`), also built under `cfg(loom)` for the model checker, with
// the error type and the two test hooks it uses.
pub mod crash;
mod error;
pub mod fault;
mod protocol;

// The layers around it, bottom to top: the process runtime, the mapped file, the queue API,
// topics, and the async API.
#[cfg(all(feature = "tokio", not(loom)))]
mod async_api;
#[cfg(not(loom))]
mod mapping;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
mod runtime;
#[cfg(not(loom))]
mod topic;

#[cfg(all(feature = "tokio", not(loom)))]
pub use async_api::{Messages, OwnedMessage, OwnedTopicMessage, TopicMessages};
pub use error::{
    Account, Blocker, Corruption, DescriptorFault, Detachment, Distrust, Error, GroupKind,
    IdsFault, InboxFault, Malformed, MembersFault, OutOfRange, PathKind, Result, TxnFault,
    WorkFault,
};
#[cfg(not(loom))]
pub use mapping::trust::Trust;
pub use protocol::layout::{Durability, FullPolicy, Geometry, VERSION as FORMAT_VERSION};
#[cfg(not(loom))]
pub use protocol::sync::futex;
#[cfg(not(loom))]
pub use queue::consumer::{Consumer, SeekTo, Start, Subscribe};
#[cfg(not(loom))]
pub use queue::cursor::Message;
#[cfg(not(loom))]
pub use queue::group::GroupInfo;
#[cfg(not(loom))]
pub use queue::ids::{IdInfo, IdOptions, IdempotentProducer, PublishOutcome};
#[cfg(not(loom))]
pub use queue::inbox::{Admit, Inbox, InboxInfo, InboxOptions, Mark, MAX_INBOX_KEY};
#[cfg(not(loom))]
pub use queue::producer::{Claimed, Producer, Schedule, Timestamps};
#[cfg(not(loom))]
pub use queue::recovery::Recovery;
#[cfg(not(loom))]
pub use queue::tail::TailReader;
#[cfg(not(loom))]
pub use queue::work::{
    Backoff, DeadLetter, DeadReason, Job, PendingInfo, PendingState, Ticket, WorkInfo, WorkOptions,
    Worker,
};
#[cfg(not(loom))]
pub use queue::{Options, Queue};
#[cfg(not(loom))]
pub use topic::{
    fan_out, partition_for_key, FanOut, MemberInfo, MemberOptions, PartitionInfo, Published, Topic,
    TopicConsumer, TopicJob, TopicMessage, TopicOptions, TopicPending, TopicProducer, TopicTicket,
    TopicWorkInfo, TopicWorker, TransactionInfo, TransactionState, TransactionalProducer, MAX_KEY,
    MAX_PARTITIONS,
};

/// The README's example, compiled and run as a doctest so it cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
