//! Idempotent producers: [`IdempotentProducer`], a producer with a stable id whose records carry
//! sequence numbers, so that a retry of a record already in the queue returns its offset
//! instead of publishing a copy, also after the producer was killed and restarted
//! (ARCHITECTURE.md, "Idempotent producers"). Each id has a slot in the producer-id file
//! (`file.rs`), one holder at a time; the protocol over the slot's words is `protocol/ids.rs`.

pub(crate) mod file;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mapping::lease::{self, Lease};
use crate::mapping::trust::Trust;
use crate::protocol::ids::{self, Counter, IdsConfig, Lookup, Settled};
use crate::protocol::sync::{pack, Ordering};
use crate::queue::flusher::FlusherSlot;
use crate::queue::group::{check_text, AdminLock};
use crate::queue::mapped::MappedQueue;
use crate::queue::producer::Producer;
use file::{corrupt, IdsFile};

/// The settings of the producer-id file (`<queue path>.ids`), used only when the file is
/// created: by the first [`Queue::idempotent_producer`](crate::Queue::idempotent_producer) of
/// the queue. Later calls use the file as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdOptions {
    /// Producer ids the file holds (1 to 1024). Default 64.
    pub slots: u32,
    /// Sequence numbers each id remembers: its de-duplication window (a power of two, 16 to
    /// 2^20; `slots × window` at most 2^24). A retry of a sequence number `window` or more
    /// below the highest one published fails with
    /// [`Error::SequenceOutsideWindow`](crate::Error::SequenceOutsideWindow). Default 1024.
    pub window: u32,
}

impl Default for IdOptions {
    fn default() -> Self {
        IdOptions {
            slots: 64,
            window: 1024,
        }
    }
}

impl IdOptions {
    fn config(&self) -> Result<IdsConfig> {
        let config = IdsConfig {
            slots: self.slots,
            window: self.window,
        };
        config
            .check()
            .map_err(|(field, value)| Error::InvalidArgument {
                argument: "producer-id options",
                why: format!(
                    "{field} {value} is out of range (slots 1 to {}, window a power of two \
                     from {} to {}, slots × window at most {})",
                    ids::MAX_SLOTS,
                    ids::MIN_WINDOW,
                    ids::MAX_WINDOW,
                    ids::MAX_ENTRIES
                ),
            })?;
        Ok(config)
    }
}

/// What [`IdempotentProducer::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The record was published now, at this offset.
    New(u64),
    /// The sequence number was published before, at this offset: nothing was published now.
    Duplicate(u64),
}

impl PublishOutcome {
    /// The record's offset, new or not.
    pub fn offset(&self) -> u64 {
        match *self {
            PublishOutcome::New(o) | PublishOutcome::Duplicate(o) => o,
        }
    }

    /// Whether the sequence number was published before.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, PublishOutcome::Duplicate(_))
    }
}

/// Facts about one producer id ([`Queue::producer_ids`](crate::Queue::producer_ids)), read
/// word by word (a snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdInfo {
    /// The producer id.
    pub id: String,
    /// Process id of its holder, if any.
    pub holder: Option<u32>,
    /// Whether that holder is still running.
    pub holder_alive: bool,
    /// The sequence number after the highest one published (where a restarted producer
    /// resumes).
    pub next_sequence: u64,
    /// Sequence numbers the id remembers at most (the file's window).
    pub window: u32,
    /// Sequence numbers it remembers now (entries in use).
    pub remembered: u64,
    /// Records published.
    pub published: u64,
    /// Retries answered as duplicates.
    pub duplicates: u64,
    /// Publishes whose outcome could not be learnt after a kill (the ring lapped the record
    /// before the next holder looked), counted as not published.
    pub unknown: u64,
}

/// A producer with a stable id (a name): each record carries a sequence number, and a retry of
/// a sequence number already in the queue returns the original offset instead of publishing a
/// copy, also after the process was killed and the id reopened. One holder per id at a time;
/// it owns a [`Producer`] (one producer slot). One per thread (it is `Send`, not `Sync`).
pub struct IdempotentProducer {
    producer: Producer,
    ids: Arc<IdsFile>,
    slot: u32,
    /// The holder's lease (its lock byte in the producer-id file), the slot's owner word.
    lease: Lease,
    id: String,
}

impl std::fmt::Debug for IdempotentProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentProducer")
            .field("path", &self.producer.shared.path)
            .field("id", &self.id)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

impl IdempotentProducer {
    /// Takes producer id `id` (see [`Queue::idempotent_producer`](crate::Queue::idempotent_producer)).
    pub(crate) fn open(
        shared: &Arc<MappedQueue>,
        trust: &Trust,
        flusher: &FlusherSlot,
        id: &str,
        options: &IdOptions,
    ) -> Result<IdempotentProducer> {
        check_text("producer id", id, ids::MAX_NAME)?;
        let config = options.config()?;
        let ids = IdsFile::open_or_create(shared, trust, &config)?.watch();
        let lease = Lease::new(&ids.file, &ids.path).map_err(|source| Error::Io {
            path: ids.path.clone(),
            op: "take a producer-id lease",
            source,
        })?;
        let slot = loop {
            let slot = ids.find_or_create(shared, id)?;
            take(shared, &ids, slot, id, &lease)?;
            // A removal may have freed the slot (and a creation reused it) between the lookup
            // and the owner CAS: the slot is ours only if it still holds the id.
            if ids.name(slot)?.as_deref() == Some(id) {
                break slot;
            }
            release(&ids, slot, &lease);
        };
        // Nothing of the id is done before the slot is ours; a producer slot failing now
        // leaves the id free.
        let opened =
            settle(&ids, slot, shared, false).and_then(|_| Producer::new(shared.clone(), flusher));
        match opened {
            Ok(producer) => Ok(IdempotentProducer {
                producer,
                ids,
                slot,
                lease,
                id: id.to_string(),
            }),
            Err(e) => {
                release(&ids, slot, &lease);
                Err(e)
            }
        }
    }

    /// Publishes `payload` as sequence number `seq` of this producer id, unless `seq` was
    /// published before: then it returns [`PublishOutcome::Duplicate`] with the offset it got,
    /// and publishes nothing. Sequence numbers need not be dense nor in order, but only the
    /// window's worth below the highest one published are remembered ([`IdOptions::window`]).
    ///
    /// Errors: as [`Producer::publish`] (a record that was published but whose flush failed is
    /// remembered, and a retry of it is a duplicate), and
    /// [`Error::SequenceOutsideWindow`] for a sequence number older than the window (shmq
    /// cannot tell whether it was published, and refuses rather than guess),
    /// [`Error::InvalidArgument`] for `u64::MAX`, [`Error::Forked`] in a child forked after
    /// the id was taken, [`Error::Corrupt`] for a damaged producer-id file, and
    /// [`Error::Truncated`] or [`Error::Detached`] when it is truncated or removed.
    pub fn publish(&mut self, seq: u64, payload: &[u8]) -> Result<PublishOutcome> {
        self.lease.check_current(&self.producer.shared.path)?;
        self.ids.check_damage()?;
        let published = self.publish_checked(seq, payload);
        self.ids.checked_after(published)
    }

    fn publish_checked(&mut self, seq: u64, payload: &[u8]) -> Result<PublishOutcome> {
        if seq == u64::MAX {
            return Err(Error::InvalidArgument {
                argument: "sequence number",
                why: "u64::MAX is reserved".into(),
            });
        }
        let (ids, slot) = (&*self.ids, self.slot);
        let t = ids.table();
        match ids::lookup(&t, slot, seq).map_err(|f| corrupt(&ids.path, f))? {
            Lookup::Known(offset) => {
                t.count(slot, Counter::Duplicates);
                return Ok(PublishOutcome::Duplicate(offset));
            }
            Lookup::Outside { oldest } => {
                return Err(Error::SequenceOutsideWindow {
                    path: self.producer.shared.path.clone(),
                    id: self.id.clone(),
                    seq,
                    oldest,
                })
            }
            Lookup::New => {}
        }
        let published = self.producer.publish_noting(
            payload,
            #[inline(always)]
            |offset| {
                crate::crash::point("ids.after_claim");
                ids::note_claim(&t, slot, seq, offset);
                crate::crash::point("ids.after_inflight");
            },
        );
        crate::crash::point("ids.after_publish");
        // The caller learns of a commit from the publish: only a failed one asks the tag.
        // Matched rather than held across `settle`: a `Result` of 96 bytes kept in memory.
        match published {
            Ok(offset) => {
                settle(ids, slot, &self.producer.shared, true)?;
                Ok(PublishOutcome::New(offset))
            }
            Err(e) => {
                settle(
                    ids,
                    slot,
                    &self.producer.shared,
                    matches!(e, Error::NotDurable { .. }),
                )?;
                Err(e)
            }
        }
    }

    /// Sets how long [`publish`](Self::publish) waits for room under
    /// [`FullPolicy::Block`](crate::FullPolicy::Block) ([`Producer::set_timeout`]).
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) {
        self.producer.set_timeout(timeout);
    }

    /// The sequence number after the highest one published under this id: where a producer
    /// that restarted resumes (0 for a new id).
    pub fn next_sequence(&self) -> u64 {
        // Relaxed: this holder's own word.
        self.ids.table().last(self.slot).load(Ordering::Relaxed)
    }

    /// The producer id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for IdempotentProducer {
    fn drop(&mut self) {
        if !self.lease.current() {
            // A forked child's copy: the id is the parent's.
            return;
        }
        release(&self.ids, self.slot, &self.lease);
    }
}

/// Takes slot `slot` of id `id` for `lease`: its owner word by CAS from 0 or from a dead
/// holder's word. [`Error::ProducerIdBusy`] if a live holder has it.
fn take(shared: &MappedQueue, ids: &IdsFile, slot: u32, id: &str, lease: &Lease) -> Result<()> {
    let owner = ids.table().owner(slot);
    loop {
        // Acquire (SYNC P): with the kernel's lock release, the dead holder's words are seen.
        let held = owner.load(Ordering::Acquire);
        if held != 0 && lease::alive(&ids.file, held) {
            return Err(Error::ProducerIdBusy {
                path: shared.path.clone(),
                id: id.to_string(),
                pid: lease::pid(held),
            });
        }
        // AcqRel: Acquire as above; Release publishes our ownership before our first words.
        if owner
            .compare_exchange(held, lease.word(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
    }
}

/// Gives slot `slot` up if `lease` holds it.
fn release(ids: &IdsFile, slot: u32, lease: &Lease) {
    // Release: our last words are visible before the slot reads as free. The lease is
    // released (its lock dropped) only after this.
    let _ = ids.table().owner(slot).compare_exchange(
        lease.word(),
        pack(0, 0),
        Ordering::Release,
        Ordering::Relaxed,
    );
}

/// Settles slot `slot`'s in-flight claim ([`ids::settle`]) in the queue `shared`.
#[inline]
fn settle(ids: &IdsFile, slot: u32, shared: &MappedQueue, committed: bool) -> Result<Settled> {
    ids::settle(&ids.table(), slot, &shared.ring, committed).map_err(|f| corrupt(&ids.path, f))
}

/// [`Queue::producer_ids`](crate::Queue::producer_ids): every producer id of the queue (none
/// if it has no producer-id file).
pub(crate) fn infos(shared: &MappedQueue, trust: &Trust) -> Result<Vec<IdInfo>> {
    let Some(ids) = IdsFile::open(shared, trust)? else {
        return Ok(Vec::new());
    };
    let t = ids.table();
    let window = t.config().window;
    let mut out = Vec::new();
    for slot in 0..t.config().slots {
        let Some(id) = ids.name(slot)? else {
            continue;
        };
        // Acquire: see the holder's word as its CAS stored it (a snapshot).
        let held = t.owner(slot).load(Ordering::Acquire);
        let mut remembered = 0;
        for i in 0..u64::from(window) {
            if t.load_entry(slot, i)
                .map_err(|f| corrupt(&ids.path, f))?
                .is_some()
            {
                remembered += 1;
            }
        }
        // Relaxed: statistics of another process, a snapshot.
        let count = |c| t.counter(slot, c).load(Ordering::Relaxed);
        out.push(IdInfo {
            id,
            holder: (held != 0).then(|| lease::pid(held)),
            holder_alive: held != 0 && lease::alive(&ids.file, held),
            // Relaxed: as the counters.
            next_sequence: t.last(slot).load(Ordering::Relaxed),
            window,
            remembered,
            published: count(Counter::Published),
            duplicates: count(Counter::Duplicates),
            unknown: count(Counter::Unknown),
        });
    }
    Ok(out)
}

/// [`Queue::remove_producer_id`](crate::Queue::remove_producer_id): frees id `id`'s slot,
/// under the admin lock, holding the slot's owner word (so no holder takes it meanwhile).
pub(crate) fn remove(shared: &MappedQueue, trust: &Trust, id: &str) -> Result<()> {
    let unknown = || Error::UnknownProducerId {
        path: shared.path.clone(),
        id: id.to_string(),
    };
    let ids = IdsFile::open(shared, trust)?.ok_or_else(unknown)?;
    let _lock = AdminLock::take(shared)?;
    let slot = ids.find(id)?.ok_or_else(unknown)?;
    let lease = Lease::new(&ids.file, &ids.path).map_err(|source| Error::Io {
        path: ids.path.clone(),
        op: "take a producer-id lease",
        source,
    })?;
    take(shared, &ids, slot, id, &lease)?;
    // A dead holder's claim is given up, so no record of the removed id is left pending.
    let settled = settle(&ids, slot, shared, false);
    if settled.is_ok() {
        ids.table().free(slot);
    }
    release(&ids, slot, &lease);
    settled.map(drop)
}
