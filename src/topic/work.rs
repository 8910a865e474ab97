//! [`TopicWorker`]: a work group over a whole topic. Workers of a topic's work group compete
//! for the records of every partition; each record goes to one worker at a time and is settled
//! on its own, as in a queue's work group (`queue/work/`).
//!
//! **Per partition.** A topic work group is a work group of the same name in every partition
//! file, created with the same [`WorkOptions`]. A `TopicWorker` holds one [`Worker`] per
//! partition, and a settlement goes to the worker of the ticket's partition. A dead-letter
//! queue named in the options is one queue for the whole topic: each partition's dead letters
//! name that partition's file as their source.
//!
//! **Polling.** A poll tries every partition once without waiting (each partition's worker
//! makes one attempt: a due redelivery first, then a fresh record), round-robin from the
//! partition after the one that delivered last, so no partition starves. When every partition
//! is idle, the one wait loop of work polls ([`poll_loop`]) spins, then sleeps once for the
//! whole topic: on the topic's wake-up word, with the bit of the worker's slot in the
//! membership file flagged (SYNC W in `members.rs`), until a topic producer publishes or a
//! topic worker nacks, a record one partition waited on is committed or its window moves, or
//! the earliest redelivery of any partition is due (at most the redelivery scan's 50 ms).
//!
//! **Growth.** A worker compares the membership file's growth generation with its own at
//! every attempt (one load). After a growth it opens the new partitions and joins the group
//! there: [`Topic::grow`] creates it with partition 0's settings, and a worker that finds it
//! missing creates it with its own options.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::lease::Lease;
use crate::queue::work::worker::{poll_loop, Idle, Poller, Step};
use crate::queue::work::{PendingInfo, Ticket, WorkInfo, WorkOptions, Worker};
use crate::topic::directory::Topic;
use crate::topic::members::Slot;
use crate::topic::routing;

/// A delivery a [`TopicWorker`] holds: the partition and the partition worker's [`Ticket`].
/// What [`TopicWorker::ack`], [`TopicWorker::nack`], [`TopicWorker::reject`] and
/// [`TopicWorker::extend`] take; `Copy`, and it outlives the [`TopicJob`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicTicket {
    /// The partition the record is in.
    pub partition: u32,
    /// The delivery in that partition's work group.
    pub ticket: Ticket,
}

/// One delivered record of a topic, borrowed from the worker until its next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicJob<'a> {
    /// What settles this delivery.
    pub ticket: TopicTicket,
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// When it was published, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// How many times it has been delivered, this time included (1 the first time).
    pub deliveries: u32,
    /// Its key (`None` for a record published without one).
    pub key: Option<&'a [u8]>,
    /// Its value (a validated copy).
    pub value: &'a [u8],
}

/// One unsettled record of a topic's work group ([`Topic::pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPending {
    /// The partition it is in.
    pub partition: u32,
    /// Its state in that partition's work group.
    pub info: PendingInfo,
}

/// A topic work group's counters ([`Topic::work_info`]): the sums over its partitions, and
/// each partition's own figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicWorkInfo {
    /// First deliveries.
    pub delivered: u64,
    /// Deliveries after the first (nacks and expired leases).
    pub redelivered: u64,
    /// Acks.
    pub acked: u64,
    /// Records dead-lettered: rejected, or out of deliveries.
    pub dead_lettered: u64,
    /// Records expired (time to live or max age).
    pub expired: u64,
    /// Records held by a worker now.
    pub in_flight: u64,
    /// Records waiting to be delivered (again) at a due time.
    pub waiting: u64,
    /// Each partition's figures, by partition; `None` where the group does not exist yet (a
    /// partition added by a growth that created no work group there and that no worker has
    /// joined since).
    pub partitions: Vec<Option<WorkInfo>>,
}

/// A member of a topic's work group ([`Topic::worker`]). One per thread (`Send`, not `Sync`).
/// It holds a slot of the topic's membership file (its wake-up bit) and a [`Worker`] in every
/// partition; dropping it gives them up, and its deliveries go to anyone at their deadlines.
pub struct TopicWorker {
    topic: Topic,
    group: String,
    /// The options every partition's group is created with (when a worker creates it).
    options: WorkOptions,
    /// The worker of each partition, by index.
    workers: Vec<Worker>,
    /// Our membership slot: the bit we sleep with.
    slot: Slot,
    /// Our lease on the membership file; its word is the slot's.
    lease: Lease,
    /// The partition the next attempt tries first.
    cursor: usize,
    /// The growth generation last seen.
    generation: u64,
}

impl std::fmt::Debug for TopicWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicWorker")
            .field("path", &self.topic.path())
            .field("group", &self.group)
            .field("member_slot", &self.slot.index)
            .field("partitions", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// The idle partitions of an attempt, each with what it waits for.
type IdlePartitions = Vec<(usize, Idle)>;

impl TopicWorker {
    pub(crate) fn new(topic: Topic, group: &str, options: &WorkOptions) -> Result<TopicWorker> {
        let workers = topic
            .partitions()
            .iter()
            .map(|q| q.worker(group, options))
            .collect::<Result<Vec<_>>>()?;
        let lease = topic.members_file().new_lease()?;
        let slot = topic
            .members_file()
            .join(group, options.visibility_timeout, lease.word())?;
        Ok(TopicWorker {
            // The handle's own generation, not the membership file's: a handle opened before a
            // growth picks it up at the first attempt.
            generation: topic.generation(),
            topic,
            group: group.into(),
            options: options.clone(),
            workers,
            slot,
            lease,
            cursor: 0,
        })
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic as this worker sees it.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The next record of any partition for this worker, waiting up to `timeout` (`None`: for
    /// ever); `Ok(None)` when the timeout passed. Partitions take turns, so none starves. The
    /// record is held until its ticket's deadline (the group's visibility timeout): settle it
    /// before then, or it is delivered again to anyone.
    ///
    /// Errors: those of [`Worker::poll`], for one partition (the next poll starts after it, so
    /// a partition that keeps failing does not stop the others). A record without topic
    /// framing (published to the partition file directly) is rejected, so it is dead-lettered
    /// as [`DeadReason::Rejected`](crate::DeadReason::Rejected), and the poll returns
    /// [`Error::Corrupt`] naming it.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<TopicJob<'_>>> {
        let Some((p, ticket, timestamp_ns)) = poll_loop(self, timeout)? else {
            return Ok(None);
        };
        let path = self.topic.partitions()[p].path();
        let unframed = {
            let job = self.workers[p].job(ticket, timestamp_ns);
            routing::split_record(path, job.offset, job.payload).err()
        };
        if let Some(e) = unframed {
            self.workers[p].reject(ticket)?;
            return Err(e);
        }
        let job = self.workers[p].job(ticket, timestamp_ns);
        let (key, value) = routing::split_record(path, job.offset, job.payload)?;
        let partition = p as u32;
        Ok(Some(TopicJob {
            ticket: TopicTicket { partition, ticket },
            partition,
            offset: job.offset,
            timestamp_ns,
            deliveries: job.deliveries,
            key,
            value,
        }))
    }

    /// Acks a delivery (see [`Worker::ack`]); [`Error::NoSuchPartition`] for a ticket of a
    /// partition this worker does not know.
    pub fn ack(&mut self, ticket: TopicTicket) -> Result<()> {
        self.worker(ticket.partition)?.ack(ticket.ticket)
    }

    /// Gives a delivery back, delivered again after `delay` or the group's back-off (see
    /// [`Worker::nack`]), and wakes the topic's sleeping workers.
    pub fn nack(&mut self, ticket: TopicTicket, delay: Option<Duration>) -> Result<()> {
        self.worker(ticket.partition)?.nack(ticket.ticket, delay)?;
        self.topic.notify();
        Ok(())
    }

    /// Rejects a delivery: dead-lettered (see [`Worker::reject`]).
    pub fn reject(&mut self, ticket: TopicTicket) -> Result<()> {
        self.worker(ticket.partition)?.reject(ticket.ticket)
    }

    /// Extends the lease of a delivery to `by` from now; the ticket carries the new deadline
    /// (see [`Worker::extend`]).
    pub fn extend(&mut self, ticket: &mut TopicTicket, by: Duration) -> Result<()> {
        self.worker(ticket.partition)?
            .extend(&mut ticket.ticket, by)
    }

    /// The worker of `partition`.
    fn worker(&mut self, partition: u32) -> Result<&mut Worker> {
        let partitions = self.workers.len() as u32;
        self.workers
            .get_mut(partition as usize)
            .ok_or_else(|| Error::NoSuchPartition {
                path: self.topic.path().to_path_buf(),
                partition,
                partitions,
            })
    }

    /// Joins the group in the partitions a growth added since this worker last looked.
    fn pick_up_growth(&mut self) -> Result<()> {
        let generation = self.topic.members_file().generation();
        if generation == self.generation {
            return Ok(());
        }
        self.topic.refresh()?;
        for q in &self.topic.partitions()[self.workers.len()..] {
            self.workers.push(q.worker(&self.group, &self.options)?);
        }
        // Only now: a failed refresh or join is retried at the next attempt.
        self.generation = generation;
        Ok(())
    }
}

impl Poller for TopicWorker {
    /// The partition, the delivery, and the record's timestamp (its payload is in that
    /// partition's worker).
    type Found = (usize, Ticket, u64);
    type Idle = IdlePartitions;

    /// One attempt in every partition, round-robin from `cursor`.
    fn attempt(&mut self) -> Result<Step<Self::Found, IdlePartitions>> {
        self.lease.check_current(self.topic.path())?;
        let members = self.topic.members_file();
        members.check_damage()?;
        if !members.heartbeat(self.slot) {
            // Our slot was taken (a damaged or hostile file): take another one.
            self.slot = members.join(
                &self.group,
                self.options.visibility_timeout,
                self.lease.word(),
            )?;
        }
        self.pick_up_growth()?;
        let n = self.workers.len();
        let mut idle = Vec::new();
        let mut again = false;
        for i in 0..n {
            let p = (self.cursor + i) % n;
            match self.workers[p].attempt() {
                Ok(Step::Job((ticket, timestamp))) => {
                    self.cursor = p + 1;
                    return Ok(Step::Job((p, ticket, timestamp)));
                }
                Ok(Step::Idle(waits)) => idle.push((p, waits)),
                Ok(Step::Again) => again = true,
                Err(e) => {
                    // The next attempt starts after this partition.
                    self.cursor = p + 1;
                    return Err(e);
                }
            }
        }
        Ok(if again { Step::Again } else { Step::Idle(idle) })
    }

    /// One sleep for the whole topic, on its wake-up word (see the module docs).
    fn sleep(&mut self, idle: &IdlePartitions, cap: Duration) {
        let cap = self.workers.iter().fold(cap, |cap, w| w.sleep_cap(cap));
        if cap.is_zero() {
            return;
        }
        let workers = &self.workers;
        // SYNC W: each partition's condition is re-checked after the flag (SeqCst slot-tag
        // loads; topic producers commit, then load the bitmap).
        let changed = || idle.iter().any(|(p, waits)| workers[*p].changed(waits));
        self.topic.sleep(self.slot, changed, cap);
    }
}

impl Drop for TopicWorker {
    fn drop(&mut self) {
        // Partition workers first (they give up their member slots), then our membership slot.
        // In a forked child both belong to the parent and are left alone.
        self.workers.clear();
        if self.lease.current() {
            self.topic.members_file().leave(self.slot);
        }
    }
}

/// A topic's work groups, as a whole.
impl Topic {
    /// The unsettled records of work group `group` in every partition this handle knows of
    /// (see [`Queue::pending`](crate::Queue::pending)), by partition, oldest first in each.
    /// Partitions where the group does not exist yet are left out;
    /// [`Error::UnknownGroup`] if it exists in none.
    pub fn pending(&self, group: &str) -> Result<Vec<TopicPending>> {
        let mut out = Vec::new();
        for (p, info) in self.each_work_group(group, crate::Queue::pending)? {
            out.extend(info.into_iter().map(|info| TopicPending {
                partition: p as u32,
                info,
            }));
        }
        Ok(out)
    }

    /// The counters of work group `group` summed over the partitions, with each partition's
    /// figures (see [`Queue::work_info`](crate::Queue::work_info)). [`Error::UnknownGroup`] if
    /// the group exists in no partition.
    pub fn work_info(&self, group: &str) -> Result<TopicWorkInfo> {
        let mut total = TopicWorkInfo {
            delivered: 0,
            redelivered: 0,
            acked: 0,
            dead_lettered: 0,
            expired: 0,
            in_flight: 0,
            waiting: 0,
            partitions: vec![None; self.partitions().len()],
        };
        // Saturating: the counters are read from files, which may hold anything.
        for (p, w) in self.each_work_group(group, crate::Queue::work_info)? {
            total.delivered = total.delivered.saturating_add(w.delivered);
            total.redelivered = total.redelivered.saturating_add(w.redelivered);
            total.acked = total.acked.saturating_add(w.acked);
            total.dead_lettered = total.dead_lettered.saturating_add(w.dead_lettered);
            total.expired = total.expired.saturating_add(w.expired);
            total.in_flight = total.in_flight.saturating_add(w.in_flight);
            total.waiting = total.waiting.saturating_add(w.waiting);
            total.partitions[p] = Some(w);
        }
        Ok(total)
    }

    /// `read` of work group `group` in each partition that has it, by partition index;
    /// [`Error::UnknownGroup`] if none has it.
    fn each_work_group<T>(
        &self,
        group: &str,
        read: impl Fn(&crate::Queue, &str) -> Result<T>,
    ) -> Result<Vec<(usize, T)>> {
        let mut found = Vec::new();
        for (p, q) in self.partitions().iter().enumerate() {
            match read(q, group) {
                Ok(t) => found.push((p, t)),
                Err(Error::UnknownGroup(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if found.is_empty() {
            return Err(Error::UnknownGroup(group.into()));
        }
        Ok(found)
    }
}
