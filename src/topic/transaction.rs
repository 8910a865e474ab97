//! [`TransactionalProducer`]: records for several partitions of a topic, made visible all at
//! once or not at all (ARCHITECTURE.md, "Transactions"; the protocol is `protocol/txn.rs`).
//!
//! A transaction's records wait in this process until [`commit`](TransactionalProducer::commit),
//! which claims one run per partition, writes and *prepares* each record (invisible, its
//! transaction's link in its header), then moves the transaction's state word from PREPARING
//! to COMMITTED (the commit point, one CAS for every partition) and commits each record's tag.
//! A reader that waits on a prepared record for the claim timeout learns its fate from the
//! state word, and aborts the transaction if it never reached its commit point: a producer
//! killed with a transaction half written costs readers one claim timeout, and nothing of it
//! is ever read.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use crate::error::{Corruption, Error, Result, TxnFault};
use crate::mapping::file::io_err;
use crate::mapping::lease::{self, Lease, OwnFd};
use crate::protocol::ring::{self, Claim};
use crate::protocol::sync::{pack, Ordering};
use crate::protocol::txn::{self, InputCommit, Participant};
use crate::queue::consumer::Consumer;
use crate::queue::producer::Producer;
use crate::queue::txn::TxnFile;
use crate::queue::Queue;
use crate::topic::directory::Topic;
use crate::topic::producer::Published;
use crate::topic::routing::{self, partition_for_key};

/// A producer of transactions on a topic, holding one transactional id. One per id at a time
/// across all processes: a second one fails with [`Error::TransactionalIdBusy`] while the
/// first lives, and the next one after its death first settles the transaction it left.
pub struct TransactionalProducer {
    topic: Topic,
    txns: TxnFile,
    id: String,
    slot: u32,
    /// Held while this producer owns the id: its word is the slot's owner.
    lease: Lease,
    /// Records of the open transaction: partition and framed record, in send order.
    records: Vec<(u32, Vec<u8>)>,
    producers: Vec<Option<Producer>>,
    /// The next partition of the round-robin.
    next: u32,
    /// The growth generation this producer last saw (see `TopicProducer`).
    generation: u64,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("topic", &self.topic.path())
            .field("id", &self.id)
            .field("pending", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl Topic {
    /// A producer of transactions holding transactional id `id` (1 to 64 bytes): records sent
    /// through it become visible, in every partition, when [`commit`] returns, or never.
    /// Creates the topic's transaction file (`<topic>/transactions`) on first use. If the id's
    /// previous holder died, the transaction it left is settled first: committed if it had
    /// reached its commit point, aborted otherwise.
    ///
    /// Errors: [`Error::TransactionalIdBusy`] while another live process holds the id,
    /// [`Error::TooManyTransactionalIds`] once 64 other ids have slots, [`Error::InvalidArgument`]
    /// for an empty or longer id.
    ///
    /// [`commit`]: TransactionalProducer::commit
    pub fn transactional_producer(&self, id: &str) -> Result<TransactionalProducer> {
        TransactionalProducer::new(self.clone(), id)
    }
}

/// Where a transactional id's current transaction stands: the state word's low two bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// No transaction started yet (epoch 0), or a state word with no state.
    None,
    /// Being written: its records are prepared and invisible, its commit point not reached.
    Preparing,
    /// Reached its commit point: every record of it is (or becomes) visible.
    Committed,
    /// Aborted: none of its records is ever read.
    Aborted,
}

/// Facts about one transactional id of a topic ([`Topic::transactions`]), read word by word
/// from the topic's transaction file (a snapshot; a damaged word is reported as found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    /// The transactional id; `None` if its name in the file is not readable (a damaged
    /// length or bytes that are not UTF-8).
    pub id: Option<String>,
    /// Its slot in the transaction file.
    pub slot: u32,
    /// Process id of its holder, if any.
    pub holder: Option<u32>,
    /// Whether that holder is still running.
    pub holder_alive: bool,
    /// The epoch of its current (last begun) transaction: one per commit.
    pub epoch: u64,
    /// Where that transaction stands.
    pub state: TransactionState,
    /// The last epoch whose records (and input commit) are all settled; behind `epoch`, the
    /// id's next holder, or its holder's next commit, finishes that epoch first.
    pub settled: u64,
}

impl Topic {
    /// Every transactional id of the topic with its holder and the state of its current
    /// transaction, read from `<topic>/transactions` (empty if no transactional producer was
    /// ever opened). Read-only: nothing is settled or changed.
    ///
    /// Errors: those of opening the transaction file ([`Error::Corrupt`] for a damaged
    /// header, [`Error::Untrusted`], [`Error::Io`]).
    pub fn transactions(&self) -> Result<Vec<TransactionInfo>> {
        let path = self.path().join(crate::queue::txn::FILE_NAME);
        let txns = match TxnFile::open(&path, &self.trust()) {
            Ok(t) => t,
            Err(Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let table = txns.table();
        let mut out = Vec::new();
        for slot in 0..txn::SLOTS {
            // Relaxed: a snapshot for people; a free slot has no name length.
            if table.name_len(slot).load(Ordering::Relaxed) == 0 {
                continue;
            }
            // Acquire: see the holder's word as its CAS stored it (a snapshot).
            let held = table.owner(slot).load(Ordering::Acquire);
            // SeqCst (SYNC X): as every reader of the state word.
            let (epoch, state) = txn::unpack_state(table.state(slot).load(Ordering::SeqCst));
            out.push(TransactionInfo {
                id: table.name(slot),
                slot,
                holder: (held != 0).then(|| lease::pid(held)),
                holder_alive: held != 0 && lease::alive(&txns.file, held),
                epoch,
                state: match state {
                    txn::PREPARING => TransactionState::Preparing,
                    txn::COMMITTED => TransactionState::Committed,
                    txn::ABORTED => TransactionState::Aborted,
                    _ => TransactionState::None,
                },
                // Acquire: pairs with the Release store that ends an epoch's settling.
                settled: table.settled(slot).load(Ordering::Acquire),
            });
        }
        Ok(out)
    }
}

impl TransactionalProducer {
    fn new(topic: Topic, id: &str) -> Result<TransactionalProducer> {
        if id.is_empty() || id.len() > txn::MAX_NAME {
            return Err(Error::InvalidArgument {
                argument: "transactional id",
                why: format!("{} bytes; 1 to {} are allowed", id.len(), txn::MAX_NAME),
            });
        }
        let dir = topic.path().to_path_buf();
        let meta = std::fs::metadata(dir.join(crate::mapping::file::TOPIC_DESCRIPTOR))
            .map_err(io_err(&dir, "stat the topic descriptor"))?;
        let txns = TxnFile::open_or_create(&dir, meta.mode() & 0o666, &topic.trust())?;
        let slot = find_slot(&txns, id)?;
        let lease = Lease::new(&txns.file, &txns.path).map_err(io_err(&txns.path, "lease"))?;
        let owner = txns.table().owner(slot);
        // Acquire: see the previous holder's state and participants before taking over.
        let held = owner.load(Ordering::Acquire);
        if held != 0 && lease::alive(&txns.file, held) {
            return Err(Error::TransactionalIdBusy {
                path: txns.path.clone(),
                id: id.to_string(),
                pid: lease::pid(held),
            });
        }
        // AcqRel: Acquire as above; Release publishes our ownership before our first state
        // change. Failure: a racing opener won.
        if owner
            .compare_exchange(held, lease.word(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            let now = owner.load(Ordering::Acquire);
            return Err(Error::TransactionalIdBusy {
                path: txns.path.clone(),
                id: id.to_string(),
                pid: lease::pid(now),
            });
        }
        let n = topic.partition_count() as usize;
        // The handle's own generation, as `TopicProducer` takes it.
        let topic_generation = topic.generation();
        let mut producer = TransactionalProducer {
            topic,
            txns,
            id: id.to_string(),
            slot,
            lease,
            records: Vec::new(),
            producers: (0..n).map(|_| None).collect(),
            next: std::process::id(),
            generation: topic_generation,
        };
        producer.settle_previous()?;
        Ok(producer)
    }

    /// The transactional id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records sent since the last commit or abort.
    pub fn pending(&self) -> usize {
        self.records.len()
    }

    /// Adds `value` with `key` to the open transaction, for partition
    /// [`partition_for_key`]`(key, N)`, and returns that partition. Nothing is written until
    /// [`commit`](Self::commit). A growth of the topic is picked up here, as a
    /// [`TopicProducer`](crate::TopicProducer) does at each publish.
    ///
    /// Errors: [`Error::KeyTooBig`], [`Error::TooBig`] (the partition's maximum message).
    pub fn send_keyed(&mut self, key: &[u8], value: &[u8]) -> Result<u32> {
        self.topic.refresh_if_grown(&mut self.generation)?;
        let partition = partition_for_key(key, self.topic.partition_count());
        self.add(partition, Some(key), value)?;
        Ok(partition)
    }

    /// Adds `value` without a key to the open transaction, for the next partition in
    /// round-robin order, and returns that partition.
    pub fn send(&mut self, value: &[u8]) -> Result<u32> {
        self.topic.refresh_if_grown(&mut self.generation)?;
        let partition = self.next % self.topic.partition_count();
        self.next = partition.wrapping_add(1);
        self.add(partition, None, value)?;
        Ok(partition)
    }

    /// Adds `value` (with `key`, if given) to the open transaction, for `partition`.
    pub fn send_to(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        self.topic.refresh_if_grown(&mut self.generation)?;
        self.add(partition, key, value)
    }

    /// Drops the open transaction's records: nothing of them was written.
    pub fn abort(&mut self) {
        self.records.clear();
    }

    fn add(&mut self, partition: u32, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        let partitions = self.topic.partition_count();
        if partition >= partitions {
            return Err(Error::NoSuchPartition {
                path: self.topic.path().to_path_buf(),
                partition,
                partitions,
            });
        }
        let len = routing::framed_len(key, value.len())?;
        let max = self.topic.partitions()[partition as usize]
            .geometry()
            .max_message;
        if len > max as usize {
            return Err(Error::TooBig { len, max });
        }
        let mut framed = vec![0u8; len];
        let at = routing::write_frame(&mut framed, key);
        framed[at..].copy_from_slice(value);
        self.records.push((partition, framed));
        Ok(())
    }

    /// Commits the open transaction: every record sent since the last commit or abort becomes
    /// visible at once, in every partition (in send order within a partition), and their
    /// places are returned in send order. An empty transaction commits nothing.
    ///
    /// Errors: [`Error::TransactionAborted`] (none of it is visible: a reader gave a record up
    /// because this call stalled past a partition's claim timeout, or a partition had no room
    /// under its `Reject` policy); [`Error::InvalidArgument`] for more than 64 partitions in
    /// one transaction; the errors of [`Producer::publish_batch`] for a partition, after which
    /// the transaction was aborted too. The records are dropped either way. Past the commit
    /// point only the durability wait of a partition can fail ([`Error::NotDurable`],
    /// [`Error::Poisoned`] under `Sync`): the records are then visible, so do not send them
    /// again.
    pub fn commit(&mut self) -> Result<Vec<Published>> {
        self.commit_with(None, || Ok(()))
    }

    /// Commits the open transaction together with `consumer`'s commit of `offset` (the last
    /// input record processed): **consume-transform-produce**. The group's committed offset
    /// moves to `offset + 1` exactly when the transaction's records become visible, so a
    /// transformer killed anywhere neither loses an input nor publishes its output twice: if
    /// it dies after the commit point and before the group's cursor moved, the id's next
    /// holder moves it when it opens (so open the transactional producer before the
    /// consumer). One transactional id per input queue or partition: the id's holder must be
    /// the group's reader.
    ///
    /// Errors: those of [`commit`](Self::commit) and of [`Consumer::commit`]; the records are
    /// dropped either way. An error of the consumer's commit after the commit point leaves the
    /// output visible and the epoch unsettled: the id's next holder (or this one's next
    /// commit) makes the input commit if the cursor still holds the value the transaction
    /// replaced. [`Error::TakenOver`] before anything is written: the group's
    /// offset moved since the consumer read it (a consumer opened before this producer
    /// settled its predecessor's transaction, or another member): make a new consumer, which
    /// resumes after the last committed transaction.
    pub fn commit_consumed(
        &mut self,
        consumer: &mut Consumer,
        offset: u64,
    ) -> Result<Vec<Published>> {
        let plan = consumer
            .planned_commit(offset)
            .inspect_err(|_| self.records.clear())?;
        let Some((old, next, pos)) = plan else {
            return self.commit_with(None, || Ok(()));
        };
        // Before anything is written, the cursor the transaction will replace must be the one
        // in the file.
        consumer
            .check_committed()
            .inspect_err(|_| self.records.clear())?;
        let (path, group) = consumer.source();
        let path = path.to_str().filter(|p| p.len() <= txn::MAX_INPUT_PATH);
        let Some(path) = path else {
            self.records.clear();
            return Err(Error::InvalidArgument {
                argument: "consumer",
                why: format!(
                    "its queue's path must be UTF-8 of at most {} bytes",
                    txn::MAX_INPUT_PATH
                ),
            });
        };
        let input = InputCommit {
            path: path.to_string(),
            group: group.to_string(),
            old,
            new: pack(next, pos),
        };
        self.commit_with(Some(&input), || {
            crate::crash::point("txn.before_input_commit");
            consumer.commit(offset)
        })
    }

    /// Commits the open transaction with `input` (a group commit, recorded so that a next
    /// holder can make it) and runs `then` (which makes it) after the commit point and before
    /// the epoch counts as settled.
    fn commit_with(
        &mut self,
        input: Option<&InputCommit>,
        then: impl FnOnce() -> Result<()>,
    ) -> Result<Vec<Published>> {
        self.lease.check_current(&self.txns.path)?;
        self.txns.check_damage()?;
        // An earlier commit of ours that could not finish is finished first (X3).
        self.settle_previous()?;
        let records = std::mem::take(&mut self.records);
        if records.is_empty() && input.is_none() {
            return Ok(Vec::new());
        }
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, (p, _)) in records.iter().enumerate() {
            by_partition.entry(*p).or_default().push(i);
        }
        if by_partition.len() > txn::MAX_PARTICIPANTS as usize {
            return Err(Error::InvalidArgument {
                argument: "transaction",
                why: format!(
                    "{} partitions; one transaction may write to {} at most",
                    by_partition.len(),
                    txn::MAX_PARTICIPANTS
                ),
            });
        }
        let slot = self.slot;
        let epoch = {
            let table = self.txns.table();
            // Relaxed: only this holder changes an epoch's PREPARING state into another
            // epoch's.
            let (epoch, _) = txn::unpack_state(table.state(slot).load(Ordering::Relaxed));
            let epoch = epoch + 1;
            if epoch > txn::MAX_EPOCH {
                return Err(self.corrupt("the epoch counter is exhausted".into()));
            }
            // Relaxed: the participant list of the new epoch is empty before it starts
            // (published by the state store below).
            table.count(slot).store(0, Ordering::Relaxed);
            table.set_input(slot, input);
            // SYNC X (SeqCst): the epoch starts before any of its records is claimed.
            table
                .state(slot)
                .store(txn::state(epoch, txn::PREPARING), Ordering::SeqCst);
            epoch
        };
        let link = txn::link(slot, epoch);
        let mut runs: Vec<(u32, Vec<Claim>)> = Vec::with_capacity(by_partition.len());
        let prepared = self.prepare_all(&records, &by_partition, link, &mut runs);
        crate::crash::point("txn.after_prepare");
        let state = self.txns.table().state(slot);
        let committed = prepared.and_then(|()| {
            // SYNC X (SeqCst): the commit point. It fails only if a reader aborted the epoch.
            state
                .compare_exchange(
                    txn::state(epoch, txn::PREPARING),
                    txn::state(epoch, txn::COMMITTED),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .map(drop)
                .map_err(|_| self.aborted("a reader gave up a record of it (claim timeout)"))
        });
        if committed.is_err() {
            // SYNC X (SeqCst): abort the epoch if nobody did, before giving up its records
            // (X2); a failed CAS means a reader aborted it already.
            let _ = state.compare_exchange(
                txn::state(epoch, txn::PREPARING),
                txn::state(epoch, txn::ABORTED),
                Ordering::SeqCst,
                Ordering::Relaxed,
            );
        }
        crate::crash::point("txn.after_commit_point");
        let commit = committed.is_ok();
        let mut settled = Ok(());
        for (p, run) in &runs {
            let producer = self.producers[*p as usize]
                .as_mut()
                .expect("a run was claimed through this producer");
            let r = producer.settle_run(run, commit);
            if settled.is_ok() {
                settled = r;
            }
        }
        // The input commit belongs to the epoch as its records do: until it is made, the epoch
        // is not settled, and the id's next holder (or this one's next commit) makes it.
        let input_moved = if commit { then() } else { Ok(()) };
        if input_moved.is_ok() {
            // Release: every record of the epoch is settled before this says so (X3).
            self.txns
                .table()
                .settled(slot)
                .store(epoch, Ordering::Release);
        }
        committed?;
        settled?;
        input_moved?;
        self.topic.notify();
        let mut placed = vec![
            Published {
                partition: 0,
                offset: 0
            };
            records.len()
        ];
        for (p, run) in &runs {
            for (&i, claim) in by_partition[p].iter().zip(run) {
                placed[i] = Published {
                    partition: *p,
                    offset: claim.offset,
                };
            }
        }
        Ok(placed)
    }

    /// Claims and prepares one run per partition, recording each in the participant list
    /// before its records are prepared. Stops at the first failure (the runs claimed so far
    /// are in `runs`, for the caller to settle).
    fn prepare_all(
        &mut self,
        records: &[(u32, Vec<u8>)],
        by_partition: &BTreeMap<u32, Vec<usize>>,
        link: u64,
        runs: &mut Vec<(u32, Vec<Claim>)>,
    ) -> Result<()> {
        for (i, (&p, indexes)) in by_partition.iter().enumerate() {
            let payloads: Vec<&[u8]> = indexes.iter().map(|&r| records[r].1.as_slice()).collect();
            self.producer(p)?;
            let producer = self.producers[p as usize]
                .as_mut()
                .expect("opened just above");
            let (table, slot) = (self.txns.table(), self.slot);
            // The run is listed right after its claim, before any of its records is prepared,
            // so every prepared record of the epoch is in the list a next holder settles (X3).
            let list = |run: &[Claim]| {
                let words = table.participant(slot, i as u32);
                let entry = Participant {
                    partition: p,
                    count: run.len() as u32,
                    first: run[0].offset,
                };
                // Relaxed: published by the count's Release store.
                words[0].store(txn::pack_participant(&entry), Ordering::Relaxed);
                words[1].store(entry.first, Ordering::Relaxed);
                // Release: a next holder that reads the count sees the entries.
                table.count(slot).store(i as u64 + 1, Ordering::Release);
                crate::crash::point("txn.after_list");
            };
            let mut run = Vec::with_capacity(payloads.len());
            let prepared = producer.prepare_run(&payloads, link, &mut run, list);
            runs.push((p, run));
            prepared.map_err(|e| match e {
                Error::Aborted { .. } => {
                    self.aborted("a reader gave up a record of it (claim timeout)")
                }
                e => e,
            })?;
        }
        Ok(())
    }

    /// The producer of partition `p`, opened the first time.
    fn producer(&mut self, p: u32) -> Result<&mut Producer> {
        if self.producers.len() <= p as usize {
            self.producers.resize_with(p as usize + 1, || None);
        }
        let slot = &mut self.producers[p as usize];
        if slot.is_none() {
            *slot = Some(self.topic.partitions()[p as usize].producer()?);
        }
        Ok(slot.as_mut().expect("just opened"))
    }

    /// Settles the transaction the id's previous holder left (X3): a transaction still
    /// preparing is aborted, then every record of the participants it listed that is still
    /// prepared is committed or aborted as the transaction went, and every claim of them
    /// still pending is given up.
    fn settle_previous(&mut self) -> Result<()> {
        let table = self.txns.table();
        let state = table.state(self.slot);
        // SeqCst (SYNC X): as every reader of the state word.
        let (epoch, _) = txn::unpack_state(state.load(Ordering::SeqCst));
        // Acquire: pairs with the Release store that ends an epoch's settling.
        if epoch == 0 || table.settled(self.slot).load(Ordering::Acquire) == epoch {
            return Ok(());
        }
        // A transaction left preparing is aborted here (X1).
        let commit = self.txns.outcome(self.slot, epoch);
        // Acquire: pairs with the participant list's Release count store. (After a machine
        // restart the list is empty: the file's recovery cleared it, `queue/txn.rs`.)
        let count = table.count(self.slot).load(Ordering::Acquire);
        if count > u64::from(txn::MAX_PARTICIPANTS) {
            return Err(self.corrupt(format!("a count of {count}")));
        }
        for i in 0..count as u32 {
            let words = table.participant(self.slot, i);
            // Relaxed: ordered after the count's Acquire load.
            let words = [0, 1].map(|w| words[w].load(Ordering::Relaxed));
            let Some(entry) = txn::unpack_participant(words) else {
                continue;
            };
            let partitions = self.topic.partition_count();
            if entry.partition >= partitions {
                return Err(self.corrupt(format!("partition {} of {partitions}", entry.partition)));
            }
            let shared = self.topic.partitions()[entry.partition as usize].shared();
            let ring = &shared.ring;
            // The run was claimed: it lies below the tail and within one index of slots. A
            // list that says otherwise is damaged, and its offsets are not the holder's.
            let (tail, _) = ring.tail();
            let end = entry.first.checked_add(u64::from(entry.count));
            if end.is_none_or(|e| e > tail) || u64::from(entry.count) > ring.layout.index_entries {
                return Err(self.corrupt(format!(
                    "{} records from offset {} of partition {} (its tail is {tail})",
                    entry.count, entry.first, entry.partition
                )));
            }
            for x in entry.first..entry.first + u64::from(entry.count) {
                // Acquire: see the record a prepared tag publishes.
                let seen = ring.slot_tag(x).load(Ordering::Acquire);
                if ring::is_prepared(x, seen) {
                    // As a reader settles it: the record's own link decides, checked against
                    // its header and a lap (a record overwritten meanwhile is left alone).
                    if let Some(pos) = ring.resolve(x) {
                        let outcome = |slot, e| Ok::<_, Error>(self.txns.outcome(slot, e));
                        txn::give_up_stalled(ring, x, pos, seen, outcome)?;
                    }
                } else if ring::unresolved(x, seen) {
                    // Claimed, never prepared: its producer (the dead holder) is gone.
                    ring.abort(x, seen);
                }
            }
            ring.notify_data();
        }
        if commit {
            if let Some(input) = table.input(self.slot).map_err(|what| self.corrupt(what))? {
                self.apply_input(&input)?;
            }
        }
        // Release as in `commit`.
        self.txns
            .table()
            .settled(self.slot)
            .store(epoch, Ordering::Release);
        Ok(())
    }

    /// Moves the input group's committed cursor as a committed transaction recorded, if it
    /// still holds the value the transaction replaced (its holder died before it moved it;
    /// any other value means someone moved it since, which is theirs to keep).
    fn apply_input(&self, input: &InputCommit) -> Result<()> {
        let queue = Queue::open_trusting(&input.path, &self.topic.trust())?;
        let shared = queue.shared();
        let (offset, pos) = crate::protocol::sync::unpack(input.new);
        // A cursor past the queue's tail is no commit shmq recorded: a damaged list.
        if offset > shared.ring.tail().0 {
            return Err(self.corrupt(format!(
                "an input commit to offset {offset} of {} past its tail",
                input.path
            )));
        }
        if let Some(slot) = shared.find_group(&input.group) {
            if shared.swap_committed(slot, input.old, offset, pos).is_ok() {
                shared.ring.notify_space();
            }
        }
        Ok(())
    }

    fn aborted(&self, why: &str) -> Error {
        Error::TransactionAborted {
            path: self.txns.path.clone(),
            id: self.id.clone(),
            why: why.to_string(),
        }
    }

    fn corrupt(&self, what: String) -> Error {
        Error::Corrupt {
            path: self.txns.path.clone(),
            kind: Corruption::Txn(TxnFault::Participant {
                id: self.id.clone(),
                what,
            }),
        }
    }
}

impl Drop for TransactionalProducer {
    fn drop(&mut self) {
        if !self.lease.current() {
            // A forked child's copy: the id is the parent's.
            return;
        }
        // Release: our last settling is visible before the id reads as free.
        let _ = self.txns.table().owner(self.slot).compare_exchange(
            self.lease.word(),
            pack(0, 0),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

/// The slot of transactional id `id`, taking a free one for a new id (under the file's lock,
/// the name written before the slot reads as taken).
fn find_slot(txns: &TxnFile, id: &str) -> Result<u32> {
    let table = txns.table();
    let find = || (0..txn::SLOTS).find(|&s| table.name(s).as_deref() == Some(id));
    if let Some(slot) = find() {
        return Ok(slot);
    }
    let _lock =
        OwnFd::flock_exclusive(&txns.file, &txns.path).map_err(io_err(&txns.path, "flock"))?;
    if let Some(slot) = find() {
        return Ok(slot);
    }
    // Relaxed: under the lock every name was written by a holder of it.
    let free = (0..txn::SLOTS).find(|&s| table.name_len(s).load(Ordering::Relaxed) == 0);
    let slot = free.ok_or_else(|| Error::TooManyTransactionalIds {
        path: txns.path.clone(),
        slots: txn::SLOTS,
    })?;
    table.set_name(slot, id);
    Ok(slot)
}
