//! [`TopicConsumer`]: one member of a topic's consumer group, reading the partitions assigned
//! to it.
//!
//! **Membership.** A member holds a slot in the topic's membership file and stamps its heartbeat
//! there every `heartbeat_interval` (from inside [`TopicConsumer::poll`]). At each such *tick*
//! it lists its group's live members (process alive and heartbeat younger than the member's
//! session timeout), computes the assignment every member computes alike (partition `p` to the
//! `p mod M`-th live member in lease order), drops the partitions no longer assigned to it and
//! tries to take those newly assigned.
//!
//! **Exclusive hold.** A member reads partition `p` only through a [`Consumer`] of its group in
//! `p`'s queue file, which holds that group's lease there: taken from nobody, from a dead
//! process, or from a live member counted out of the assignment after its session timeout
//! (whose later commits are then fenced); released when the consumer is dropped. So at most
//! one member reads a partition at a time as far as commits go, and a taker resumes at the
//! partition's committed offset (records read but not committed by the previous holder are
//! delivered again: at-least-once).
//!
//! **Reassignment bound.** With every member polling, a partition moves within one heartbeat
//! interval of its holder leaving or dying (the next tick of the new assignee sees the holder
//! gone and takes the lease of a dead process), and within two when a member joins (the holder
//! releases at its tick, the joiner takes at its own). A member that is alive but stops polling
//! is dropped from the assignment after its session timeout, and its new assignee takes its
//! partitions' leases from it at its next tick (the stale member's later commits are fenced,
//! and it gives the partitions up when it polls again).
//!
//! **Waiting.** A poll first tries every held partition once without waiting, round-robin
//! from where the last one left off. Then it spins briefly and sleeps on the topic's wake-up
//! word (SYNC W in `members.rs`) until a topic producer publishes, at most until the next
//! tick.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::lease::Lease;
use crate::queue::consumer::{Consumer, Next, Ready, Subscribe};
use crate::runtime::clock;
use crate::runtime::wait::{Pause, Wait, INFLIGHT_POLL};
use crate::topic::directory::Topic;
use crate::topic::members::{assigned, Slot};
use crate::topic::routing;

/// How a member takes part in its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberOptions {
    /// How often the member heartbeats and rebalances (inside `poll`). Default 100 ms.
    pub heartbeat_interval: Duration,
    /// How old the member's heartbeat may get before the others count it out. At least twice
    /// the heartbeat interval. Default 1 s.
    pub session_timeout: Duration,
    /// How the group is created in a partition where it does not exist yet.
    pub subscribe: Subscribe,
}

impl Default for MemberOptions {
    fn default() -> Self {
        MemberOptions {
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(1),
            subscribe: Subscribe::default(),
        }
    }
}

/// One record of a topic, borrowed until the next call on the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMessage<'a> {
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Its key (`None` for a record published without one).
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: &'a [u8],
    /// How many offsets right before this one were aborted and skipped since this consumer's
    /// previous message: records whose producer gave them up (a dropped claim) or stalled or
    /// died past the claim timeout. They hold no record and no one receives them. A consumer
    /// that checks for gaps expects `offset == previous + 1 + aborted_before`; any other hole
    /// comes with [`Error::Lagged`](crate::Error::Lagged), a seek, or a record that failed its
    /// checksum. (Per partition.)
    pub aborted_before: u64,
}

/// A member of a topic's consumer group. Dropping it releases its partitions and its slot.
pub struct TopicConsumer {
    pub(crate) topic: Topic,
    group: String,
    options: MemberOptions,
    pub(crate) slot: Slot,
    /// This member's lease on the membership file; its word is the slot's and, adopted for
    /// each partition file, the word of every partition lease this member holds.
    pub(crate) lease: Lease,
    /// The consumer of each partition this member holds, by partition index.
    held: Vec<Option<Consumer>>,
    /// The partition the next poll tries first.
    cursor: usize,
    /// When the next tick is due, in [`clock::coarse_ns`] nanoseconds.
    next_tick: u64,
    /// The growth generation last seen.
    generation: u64,
    /// Whether partition reads check each record's CRC32C.
    verify: bool,
}

impl std::fmt::Debug for TopicConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<usize> = (0..self.held.len())
            .filter(|&p| self.held[p].is_some())
            .collect();
        f.debug_struct("TopicConsumer")
            .field("path", &self.topic.path())
            .field("group", &self.group)
            .field("member_slot", &self.slot.index)
            .field("held_partitions", &held)
            .finish_non_exhaustive()
    }
}

impl TopicConsumer {
    pub(crate) fn new(topic: Topic, group: &str, options: &MemberOptions) -> Result<Self> {
        let least = options.heartbeat_interval.checked_mul(2);
        if options.heartbeat_interval.is_zero() || least.is_none_or(|l| options.session_timeout < l)
        {
            return Err(Error::InvalidArgument {
                argument: "session timeout",
                why: format!(
                    "{:?} must be at least twice the heartbeat interval ({:?}), which must be \
                     positive",
                    options.session_timeout, options.heartbeat_interval
                ),
            });
        }
        let lease = topic.members_file().new_lease()?;
        let slot = topic
            .members_file()
            .join(group, options.session_timeout, lease.word())?;
        let mut consumer = TopicConsumer {
            // The handle's own generation, not the membership file's: a handle opened before a
            // growth refreshes at the first tick (below) instead of never seeing the new
            // partitions.
            generation: topic.generation(),
            held: (0..topic.partition_count()).map(|_| None).collect(),
            topic,
            group: group.to_string(),
            options: *options,
            slot,
            lease,
            cursor: 0,
            next_tick: 0,
            verify: true,
        };
        consumer.tick()?;
        Ok(consumer)
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The partitions this member holds now, in increasing order.
    pub fn assignment(&self) -> Vec<u32> {
        (0..self.held.len() as u32)
            .filter(|&p| self.held[p as usize].is_some())
            .collect()
    }

    /// The topic as this member sees it.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Returns the next record of a held partition, waiting up to `timeout` (`None`: forever).
    /// `Ok(None)` means the timeout passed. Heartbeats and rebalances happen in here, so a
    /// member must poll at least every heartbeat interval to keep its partitions moving.
    ///
    /// A record that is not topic-framed gives [`Error::Corrupt`] and is skipped by the next
    /// poll. [`Error::Lagged`] comes from a non-gating group overrun in one partition.
    ///
    /// [`Error::Truncated`] or [`Error::Detached`]: a partition file or the membership file
    /// was truncated, removed or replaced under this process.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<Option<TopicMessage<'_>>> {
        self.lease.check_current(self.topic.path())?;
        self.topic.members_file().check_damage()?;
        let mut wait = Wait::spinning(timeout);
        loop {
            if let Some((p, found)) = self.next()? {
                return self.deliver(p, found).map(Some);
            }
            match wait.pause(|| self.to_tick()) {
                Pause::TimedOut => return Ok(None),
                Pause::Spun => {}
                Pause::Sleep(sleep) => self.sleep(sleep),
            }
        }
    }

    /// Sleeps until a topic producer may have published, at most `sleep`: on the topic's
    /// wake-up word, flagged in its bitmap (SYNC W in `members.rs`), or for at most
    /// [`INFLIGHT_POLL`] while a held partition has a claimed record not yet committed (its
    /// producer commits it without a wake-up call; or it died, and the partition's consumer
    /// aborts the record after the claim timeout).
    fn sleep(&self, sleep: Duration) {
        if self.backlog() {
            std::thread::sleep(sleep.min(INFLIGHT_POLL));
            return;
        }
        // SYNC W (SeqCst tail loads in `lag`): re-checked after flagging ourselves.
        self.topic.sleep(self.slot, || self.backlog(), sleep);
    }

    /// Ticks if one is due, then finds a committed record in a held partition, trying each
    /// once without waiting, round-robin from where the last call stopped.
    pub(crate) fn next(&mut self) -> Result<Option<(usize, Ready)>> {
        if clock::coarse_ns() >= self.next_tick {
            self.tick()?;
        }
        let n = self.held.len();
        for i in 0..n {
            let p = (self.cursor + i) % n;
            let Some(consumer) = self.held[p].as_mut() else {
                continue;
            };
            let next = consumer.next(false);
            if !matches!(next, Ok(Next::Pending { .. })) {
                // The next call starts after this partition, so one that keeps failing (a
                // damaged file) does not starve the others.
                self.cursor = p + 1;
            }
            if let Next::Ready(found) = next? {
                return Ok(Some((p, found)));
            }
        }
        Ok(None)
    }

    /// Returns the record [`next`](Self::next) found in partition `p`, split into key and
    /// value, and moves that partition's cursor past it.
    pub(crate) fn deliver(&mut self, p: usize, found: Ready) -> Result<TopicMessage<'_>> {
        let path = self.topic.partitions()[p].path();
        let Some(consumer) = self.held[p].as_mut() else {
            // `next` just found the record there, and nothing in between drops a partition.
            return Err(Error::NotHeld {
                group: self.group.clone(),
                partition: p as u32,
            });
        };
        let m = consumer.deliver(found)?;
        let (key, value) = routing::split_record(path, m.offset, m.payload)?;
        Ok(TopicMessage {
            partition: p as u32,
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            key,
            value,
            aborted_before: m.aborted_before,
        })
    }

    /// How long until the next tick is due.
    pub(crate) fn to_tick(&self) -> Duration {
        Duration::from_nanos(self.next_tick.saturating_sub(clock::coarse_ns()))
    }

    /// Whether any held partition has records claimed past this member's position.
    pub(crate) fn backlog(&self) -> bool {
        self.held.iter().flatten().any(|c| c.lag() > 0)
    }

    /// Commits `offset` of `partition` (see [`Consumer::commit`]): the member that holds the
    /// partition next resumes after it. [`Error::NotHeld`] if this member does not hold
    /// `partition` (partitions move only inside `poll`, so one returned by the last poll is
    /// still held), [`Error::NoSuchPartition`] if the topic has no such partition.
    ///
    /// [`Error::TakenOver`] means another holder of the partition (one that judged this
    /// member dead) or a reset moved its committed offset: nothing was committed, and this
    /// member drops the partition.
    pub fn commit(&mut self, partition: u32, offset: u64) -> Result<()> {
        self.lease.check_current(self.topic.path())?;
        let held = self.held.get_mut(partition as usize);
        match held {
            Some(Some(c)) => {
                let result = c.commit(offset);
                if matches!(result, Err(Error::TakenOver { .. })) {
                    self.held[partition as usize] = None;
                }
                result
            }
            Some(None) => Err(Error::NotHeld {
                group: self.group.clone(),
                partition,
            }),
            None => Err(Error::NoSuchPartition {
                path: self.topic.path().to_path_buf(),
                partition,
                partitions: self.held.len() as u32,
            }),
        }
    }

    /// The committed offset of a held partition (the next offset its next holder reads).
    pub fn committed(&self, partition: u32) -> Option<u64> {
        self.held
            .get(partition as usize)?
            .as_ref()
            .map(Consumer::committed)
    }

    /// Whether [`poll`](Self::poll) checks each record's CRC32C before returning it (on by
    /// default); see [`Consumer::set_verify_checksums`].
    pub fn set_verify_checksums(&mut self, verify: bool) {
        self.verify = verify;
        for c in self.held.iter_mut().flatten() {
            c.set_verify_checksums(verify);
        }
    }

    /// Heartbeat, growth, and rebalance (see the module docs).
    fn tick(&mut self) -> Result<()> {
        self.topic.members_file().check_damage()?;
        self.next_tick = clock::coarse_ns()
            .saturating_add(clock::saturating_ns(self.options.heartbeat_interval));
        let members = self.topic.members_file();
        if !members.heartbeat(self.slot) {
            // Our slot was taken (a damaged or hostile file): give everything up and rejoin.
            self.held.iter_mut().for_each(|c| *c = None);
            self.slot =
                members.join(&self.group, self.options.session_timeout, self.lease.word())?;
        }
        let generation = members.generation();
        if generation != self.generation {
            self.topic.refresh()?;
            // Only now: a failed refresh is retried at the next tick.
            self.generation = generation;
            let n = self.topic.partition_count() as usize;
            self.held.resize_with(n, || None);
        }
        let live = self.topic.members_file().live(&self.group);
        let mine = assigned(&live, self.slot.word, self.topic.partition_count());
        // Releases first, all of them: a partition that fails to open below must not keep
        // another member waiting for one this member gives up. A partition whose lease was
        // taken from this member (while its heartbeat was stale) is given up too.
        for (held, &assigned) in self.held.iter_mut().zip(&mine) {
            if !assigned || held.as_ref().is_some_and(|c| !c.holds_lease()) {
                // Dropping the consumer releases the partition's lease (if still ours).
                *held = None;
            }
        }
        // Then takes, every one it can: a failure is reported after the others were tried.
        // The partition's lease is this member's own word, so every member can tell who holds
        // a partition; one held by a member counted out (stale heartbeat, process running) is
        // taken from it.
        let stale = self.topic.members_file().stale(&self.group);
        let mut failed = None;
        for (p, &assigned) in mine.iter().enumerate() {
            if !assigned || self.held[p].is_some() {
                continue;
            }
            let queue = &self.topic.partitions()[p];
            let taken = queue.subscribe_as(
                &self.group,
                &self.options.subscribe,
                self.slot.word,
                |holder| stale.contains(&holder),
            );
            match taken {
                Ok(mut c) => {
                    c.set_verify_checksums(self.verify);
                    self.held[p] = Some(c);
                }
                // Its previous holder has not released it yet: retry at the next tick.
                Err(Error::GroupBusy { .. }) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

impl Drop for TopicConsumer {
    fn drop(&mut self) {
        // Partitions first, so a member that sees the slot gone can take them at once. (In a
        // forked child the consumers leave the parent's leases alone, and so do we.)
        self.held.clear();
        if self.lease.current() {
            self.topic.members_file().leave(self.slot);
        }
    }
}
