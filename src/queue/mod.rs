//! [`Queue`]: an open queue file, the factory for producers and consumers.

pub(crate) mod consumer;
pub(crate) mod cursor;
pub(crate) mod durable;
pub(crate) mod flusher;
pub(crate) mod group;
pub(crate) mod ids;
pub(crate) mod inbox;
pub(crate) mod mapped;
pub(crate) mod producer;
pub(crate) mod recovery;
pub(crate) mod tail;
pub(crate) mod txn;
pub(crate) mod work;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, PathKind, Result};
use crate::mapping::file;
use crate::mapping::lease::{Lease, OwnFd};
use crate::mapping::trust::Trust;
use crate::mapping::watch;
use crate::protocol::layout::{Durability, FullPolicy, Geometry};
use crate::queue::consumer::{Consumer, SeekTo, Subscribe};
use crate::queue::flusher::FlusherSlot;
use crate::queue::group::GroupInfo;
use crate::queue::ids::{IdInfo, IdOptions, IdempotentProducer};
use crate::queue::mapped::MappedQueue;
use crate::queue::producer::Producer;
use crate::queue::recovery::Recovery;
use crate::queue::tail::TailReader;

/// Creation parameters of a queue file. Start from [`Options::default`] and adjust.
#[derive(Debug, Clone)]
pub struct Options {
    /// Data-ring size in bytes; a power of two from 4 KiB to 1 TiB. Default 64 MiB.
    pub capacity: u64,
    /// Largest payload in bytes; at most half the ring minus a record header. Default 1 MiB.
    pub max_message: u32,
    /// What a producer does when the ring is full. Default [`FullPolicy::Block`].
    pub full_policy: FullPolicy,
    /// Consumer-group slots (1 to 64). Default 64.
    pub group_slots: u32,
    /// Producer slots, i.e. concurrent producers (1 to 64). Default 64.
    pub producer_slots: u32,
    /// How long a claimed record may stay unwritten before readers abort it (a producer killed
    /// mid-publish stalls consumers at most this long). Default 1 s.
    pub claim_timeout: Duration,
    /// Permission bits of the file. Default `0o600`. A group-writable mode (`0o660`) shares
    /// the file with its group, whose other members open it with
    /// [`Trust::group`](crate::Trust::group); a mode that lets every user write is refused.
    pub mode: u32,
    /// What a publish promises about machine crashes. Default [`Durability::None`].
    pub durability: Durability,
    /// Whether records carry a CRC32C of their payload, checked by recovery after a machine
    /// restart (and required by `Batch` and `Sync`). Default true.
    pub checksums: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: 64 << 20,
            max_message: 1 << 20,
            full_policy: FullPolicy::Block,
            group_slots: 64,
            producer_slots: 64,
            claim_timeout: Duration::from_secs(1),
            mode: 0o600,
            durability: Durability::None,
            checksums: true,
        }
    }
}

/// An open queue file. Cheap to clone; every clone maps the same memory.
///
/// ```
/// # fn main() -> shmq::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("orders.q");
/// use std::time::Duration;
/// let queue = shmq::Queue::create(&path, &shmq::Options::default())?;
/// let mut producer = queue.producer()?;
/// let offset = producer.publish(b"order 42 paid")?;
///
/// let mut consumer = queue.consumer("billing")?;
/// let msg = consumer.poll(Some(Duration::from_secs(1)))?.expect("a message");
/// assert_eq!((msg.offset, msg.payload), (offset, &b"order 42 paid"[..]));
/// consumer.commit(offset)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Queue {
    shared: Arc<MappedQueue>,
    /// The Batch flusher of this process for this file, while a producer holds it.
    flusher: Arc<FlusherSlot>,
    /// What recovery after a machine restart did when this process opened the file.
    recovery: Option<Arc<Recovery>>,
    /// Whose files this handle accepts: the queue file's, and its work groups' files.
    trust: Trust,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.shared.path)
            .field("capacity", &self.shared.geometry.capacity)
            .field("tail_offset", &self.tail_offset())
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// The open file this handle shares with the process's other handles of it.
    pub(crate) fn shared(&self) -> &Arc<MappedQueue> {
        &self.shared
    }

    /// Creates a new queue file; fails with [`Error::Exists`](crate::Error::Exists) if `path`
    /// exists.
    pub fn create(path: impl AsRef<Path>, options: &Options) -> Result<Queue> {
        let geometry = Geometry {
            capacity: options.capacity,
            max_message: options.max_message,
            full_policy: options.full_policy,
            group_slots: options.group_slots,
            producer_slots: options.producer_slots,
            claim_timeout: options.claim_timeout,
            created_ns: crate::runtime::clock::now_ns(),
            durability: options.durability,
            checksums: options.checksums,
        };
        let mapped = file::create(path.as_ref(), &geometry, options.mode)?;
        Ok(Queue {
            shared: MappedQueue::new(mapped).share(),
            flusher: Arc::default(),
            recovery: None,
            trust: Trust::default(),
        })
    }

    /// Opens an existing queue file, validating its header against its size. The file must
    /// belong to this process's effective user, and neither its group nor others may write it
    /// ([`Error::Untrusted`](crate::Error::Untrusted) otherwise); [`Queue::open_trusting`]
    /// accepts another owner or group.
    pub fn open(path: impl AsRef<Path>) -> Result<Queue> {
        Queue::open_trusting(path, &Trust::default())
    }

    /// Opens an existing queue file like [`Queue::open`], also accepting a file that belongs
    /// to `trust.owner`, or whose group is `trust.group` (which may then write it). A file
    /// every user may write is refused whatever `trust` says.
    pub fn open_trusting(path: impl AsRef<Path>, trust: &Trust) -> Result<Queue> {
        let path = path.as_ref();
        let mapped = file::open(path, trust).map_err(|e| match e {
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::EISDIR) => {
                Error::WrongKind {
                    path: path.to_path_buf(),
                    found: if file::is_topic_dir(path) {
                        PathKind::TopicDirectory
                    } else {
                        PathKind::Directory
                    },
                    expected: PathKind::QueueFile,
                }
            }
            e => e,
        })?;
        let shared = MappedQueue::new(mapped);
        let recovery = shared.recover_if_restarted()?.map(Arc::new);
        Ok(Queue {
            shared: shared.share(),
            flusher: Arc::default(),
            recovery,
            trust: *trust,
        })
    }

    /// A new producer (takes one producer slot until dropped).
    pub fn producer(&self) -> Result<Producer> {
        self.ready()?;
        Producer::new(self.shared.clone(), &self.flusher)
    }

    /// An idempotent producer with the stable id `id` (1 to 64 bytes of printable text): its
    /// records carry sequence numbers, and a retry of one already in the queue returns the
    /// original offset instead of publishing a copy, also after this process was killed and
    /// the id opened again. `options` are used only if this call creates the queue's
    /// producer-id file (`<path>.ids`); a new id takes a free slot in it. Takes a producer
    /// slot too, until dropped.
    ///
    /// Errors: [`Error::ProducerIdBusy`](crate::Error::ProducerIdBusy) while another live
    /// handle (in this process or another) holds the id,
    /// [`Error::TooManyProducerIds`](crate::Error::TooManyProducerIds),
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad id or options, and
    /// [`Error::Corrupt`](crate::Error::Corrupt) with
    /// [`Corruption::Ids`](crate::Corruption::Ids) for a damaged producer-id file.
    pub fn idempotent_producer(&self, id: &str, options: &IdOptions) -> Result<IdempotentProducer> {
        self.ready()?;
        IdempotentProducer::open(&self.shared, &self.trust, &self.flusher, id, options)
    }

    /// Every producer id of the queue, with its holder, next sequence number, window fill and
    /// counters (a snapshot; empty if no idempotent producer was ever opened).
    pub fn producer_ids(&self) -> Result<Vec<IdInfo>> {
        crate::queue::ids::infos(&self.shared, &self.trust)
    }

    /// Removes producer id `id` and what it remembers, freeing its slot. Fails with
    /// [`Error::ProducerIdBusy`](crate::Error::ProducerIdBusy) while a live handle holds it,
    /// and [`Error::UnknownProducerId`](crate::Error::UnknownProducerId) if there is none.
    pub fn remove_producer_id(&self, id: &str) -> Result<()> {
        self.shared.check_damage()?;
        crate::queue::ids::remove(&self.shared, &self.trust, id)
    }

    /// Checks now, rather than at the watcher's next round (about once a second), that the
    /// file is still whole and still the one its path names. Fails with
    /// [`Error::Truncated`](crate::Error::Truncated) or [`Error::Detached`](crate::Error::Detached)
    /// as every later call on this queue then does.
    pub fn check_file(&self) -> Result<()> {
        self.shared.recheck()
    }

    /// Faults every page of the queue file into this process's page tables now, writable
    /// (Linux's `MADV_POPULATE_WRITE`, kernel 5.14 or later), so that this process's publishes
    /// and polls take no page fault on the first touch of a ring or index page.
    ///
    /// Without it, the first lap through a fresh mapping pays a minor fault per 4 KiB page, in
    /// each process, on the publish or poll that first touches it: a few microseconds each,
    /// one in about 43 messages of 64 bytes, which is the p99.9 of a short run
    /// (`BENCHMARKS.md`, "First-touch faults"). A latency-sensitive process calls this once
    /// after opening. It makes the whole file resident, as a first lap would, and costs about
    /// 1.5 µs per page on tmpfs (a 64 MiB ring, a 96 MiB file: 37 ms) and about 11 µs per page
    /// on a disk file system (ext4: 0.28 s), where it also marks every page dirty, so
    /// writeback writes the whole file once. Nothing in the file changes.
    ///
    /// Errors: [`Error::Io`](crate::Error::Io) with the path if the kernel refuses (an older
    /// kernel: `EINVAL`; out of memory; a fatal signal pending: `EINTR`; a poisoned page:
    /// `EHWPOISON`), [`Error::Truncated`](crate::Error::Truncated) or
    /// [`Error::Detached`](crate::Error::Detached) if the file was cut or replaced.
    pub fn prefault(&self) -> Result<()> {
        self.shared.prefault()
    }

    /// The check before a new handle: the file is intact, and the watcher runs in this
    /// process (again, in a forked child).
    fn ready(&self) -> Result<()> {
        watch::ensure_running();
        self.shared.check_damage()
    }

    /// Joins consumer group `group`, creating it as a gating group that starts at the earliest
    /// retained record if it does not exist. See [`Queue::subscribe`] for other choices.
    pub fn consumer(&self, group: &str) -> Result<Consumer> {
        self.subscribe(group, &Subscribe::default())
    }

    /// Joins consumer group `group` with explicit options for the case that it is created.
    pub fn subscribe(&self, group: &str, options: &Subscribe) -> Result<Consumer> {
        self.ready()?;
        Consumer::new(self.shared.clone(), group, options)
    }

    /// A reader of the records from `from` on that belongs to no group: it creates nothing in
    /// the file and never holds producers back, and it may be overrun
    /// ([`Error::Lagged`](crate::Error::Lagged)). See [`TailReader`].
    pub fn tail_reader(&self, from: SeekTo) -> Result<TailReader> {
        self.ready()?;
        TailReader::new(self.shared.clone(), from)
    }

    /// Joins `group` holding its lease as `word` (a topic member's own lease word, adopted
    /// for this file), taking it from a live holder if `may_take` says so.
    pub(crate) fn subscribe_as(
        &self,
        group: &str,
        options: &Subscribe,
        word: u128,
        may_take: impl Fn(u128) -> bool,
    ) -> Result<Consumer> {
        self.ready()?;
        let shared = &self.shared;
        let lease = Lease::adopt(&shared.file, &shared.path, word)
            .map_err(|source| Error::Io {
                path: shared.path.clone(),
                op: "take a lease",
                source,
            })?
            // This process holds the partition under that word already (a consumer of it
            // not dropped yet).
            .ok_or_else(|| Error::GroupBusy {
                group: group.into(),
                pid: crate::mapping::lease::pid(word),
            })?;
        // Topic members have their own session (their heartbeat in the membership file).
        let options = Subscribe {
            session_timeout: None,
            ..*options
        };
        Consumer::with_lease(shared.clone(), group, &options, lease, may_take)
    }

    /// Deletes a consumer group that no live member holds (e.g. a dead gating group holding
    /// producers back).
    pub fn delete_group(&self, group: &str) -> Result<()> {
        self.shared.check_damage()?;
        let deleted = self.shared.delete_group(
            group,
            |slot| crate::queue::work::check_idle(&self.shared, slot, group, &self.trust),
            |slot| crate::queue::work::remove_file(&self.shared, slot),
        );
        self.shared.check_damage()?;
        deleted
    }

    /// Every consumer group with its committed offset, lag and holder (a snapshot).
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.shared.group_infos()
    }

    /// Moves consumer group `group`'s committed offset to `to` (an operator's answer to a
    /// poisoned or stale backlog: skip it with [`SeekTo::Latest`], replay with
    /// [`SeekTo::Earliest`], an offset or a time) and returns the new committed offset. The
    /// next member of the group resumes there. Fails with
    /// [`Error::GroupBusy`](crate::Error::GroupBusy) while a live member holds the group, and
    /// with [`Error::OffsetOutOfRange`](crate::Error::OffsetOutOfRange) for an offset no
    /// longer (or not yet) in the ring. Moving a gating group backwards does not protect the
    /// records it moved over from producers that have not rescanned the groups yet: the next
    /// member copies and checks those records, and reports [`Error::Lagged`](crate::Error::Lagged)
    /// for any that were overwritten.
    pub fn reset_group(&self, group: &str, to: SeekTo) -> Result<u64> {
        let shared = &self.shared;
        shared.check_damage()?;
        let reset = shared.reset_group(group, |slot| {
            crate::queue::consumer::locate(shared, slot, to)
        });
        shared.check_damage()?;
        reset
    }

    /// Joins (creating if needed, with `options`) work group `group`: a
    /// [`Worker`](crate::Worker) that receives records no other worker of the group holds and
    /// settles each one (ack, nack, reject). Fails with
    /// [`Error::WrongGroupKind`](crate::Error::WrongGroupKind) if `group` is a plain consumer
    /// group, [`Error::InvalidArgument`](crate::Error::InvalidArgument) on an `Overwrite`
    /// queue (a work group holds producers back) or for options out of range,
    /// [`Error::TooManyMembers`](crate::Error::TooManyMembers) when 64 live workers are in the
    /// group, and [`Error::Corrupt`](crate::Error::Corrupt) with
    /// [`Corruption::Work`](crate::Corruption::Work) for a damaged work file.
    pub fn worker(&self, group: &str, options: &work::WorkOptions) -> Result<work::Worker> {
        self.ready()?;
        work::join(&self.shared, &self.trust, group, options, |path, trust| {
            Queue::open_trusting(path, trust)?.producer()
        })
    }

    /// Creates work group `group` here with the settings of the work group of that name in
    /// `source`, from the oldest record, unless it exists (a topic's growth: a new partition
    /// gets partition 0's work groups).
    pub(crate) fn create_work_group_like(&self, source: &Queue, group: &str) -> Result<()> {
        self.ready()?;
        work::create_like(&self.shared, &source.shared, &source.trust, group)
    }

    /// The unsettled records of work group `group` (in flight, waiting, dead-lettering),
    /// oldest first: Redis's `XPENDING`. A snapshot, each entry read on its own.
    pub fn pending(&self, group: &str) -> Result<Vec<work::PendingInfo>> {
        work::pending(&self.shared, &self.trust, group)
    }

    /// The counters (delivered, redelivered, acked, dead-lettered, expired) and window
    /// (base, next, in flight, waiting, live workers) of work group `group`.
    pub fn work_info(&self, group: &str) -> Result<work::WorkInfo> {
        work::info(&self.shared, &self.trust, group)
    }

    /// Opens inbox `name` (a de-duplication filter in the file `<queue path>.inbox-<name>`,
    /// README "Inboxes"), creating it with `options` if it does not exist. `name` is 1 to 64
    /// bytes of ASCII letters, digits, `.`, `_` and `-`, not starting with `.` nor ending in
    /// `.tmp`. Fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a bad name or window, and
    /// [`Error::Corrupt`](crate::Error::Corrupt) with
    /// [`Corruption::Inbox`](crate::Corruption::Inbox) for a damaged file.
    pub fn inbox(&self, name: &str, options: &inbox::InboxOptions) -> Result<inbox::Inbox> {
        self.ready()?;
        inbox::open(&self.shared, &self.trust, name, options)
    }

    /// The counters and fill of inbox `name`
    /// ([`Error::UnknownInbox`](crate::Error::UnknownInbox) if there is none).
    pub fn inbox_info(&self, name: &str) -> Result<inbox::InboxInfo> {
        inbox::info(&self.shared.path, &self.trust, name)
    }

    /// The names of this queue's inboxes (the files `<queue path>.inbox-<name>`), sorted.
    pub fn inboxes(&self) -> Result<Vec<String>> {
        inbox::names(&self.shared.path)
    }

    /// Removes inbox `name`. Fails with [`Error::KeyBusy`](crate::Error::KeyBusy) while a live
    /// process holds one of its keys; a process that still has it open gets
    /// [`Error::Detached`](crate::Error::Detached) within about a second.
    pub fn delete_inbox(&self, name: &str) -> Result<()> {
        inbox::delete(&self.shared, &self.trust, name)
    }

    /// The oldest record still in the ring (the tail if there is none).
    pub fn oldest_offset(&self) -> u64 {
        self.shared.ring.oldest().0
    }

    /// How many producer slots are held by running processes (a snapshot).
    pub fn live_producers(&self) -> u32 {
        crate::queue::producer::live_producers(&self.shared).0
    }

    /// How many of those producers are asleep waiting for room: held back by a gating group
    /// or by records not yet known to be on disk (a snapshot; a producer still spinning before
    /// it sleeps is not counted).
    pub fn producers_waiting(&self) -> u32 {
        crate::queue::producer::live_producers(&self.shared).1
    }

    /// Ring bytes producers may not overwrite yet: from the oldest position that a gating
    /// group, the flushed cursor known to be on disk (Batch and Sync) or an unfinished record
    /// holds, to the tail.
    /// A publish blocks (or fails with [`Error::Full`](crate::Error::Full)) when its record
    /// does not fit in the capacity minus this. A snapshot.
    pub fn protected_bytes(&self) -> u64 {
        crate::queue::producer::protected_bytes(&self.shared)
    }

    /// The next offset a producer will be given (records `0..tail` have been claimed).
    pub fn tail_offset(&self) -> u64 {
        self.shared.ring.tail().0
    }

    /// The offset up to which records are on disk: every record before it survives a machine
    /// crash. Under [`Durability::None`] it moves only when someone flushes.
    pub fn durable_offset(&self) -> u64 {
        self.shared.durable().0
    }

    /// Flushes every committed record to disk now (one `fdatasync`, shared with any flush
    /// already running) and returns the durable offset. Fails with
    /// [`Error::Poisoned`](crate::Error::Poisoned) if this or an earlier flush of the file
    /// failed.
    pub fn flush(&self) -> Result<u64> {
        self.shared.check_damage()?;
        let flushed = self.flush_checked();
        self.shared.check_damage()?;
        flushed
    }

    fn flush_checked(&self) -> Result<u64> {
        let shared = &self.shared;
        let via = OwnFd::open(&shared.file, &shared.path).map_err(|source| Error::Io {
            path: shared.path.clone(),
            op: "open a descriptor to flush through",
            source,
        })?;
        while !self.shared.try_flush(&via)? {
            self.shared.check_damage()?;
            // Another process leads a flush; ours must cover what is committed now.
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(self.durable_offset())
    }

    /// How many flushes (`fdatasync`) have been made on this file, by every process.
    pub fn flushes(&self) -> u64 {
        self.shared.flushes()
    }

    /// What recovery did if this open found the file last used before a machine restart.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_deref()
    }

    /// The queue's immutable parameters.
    pub fn geometry(&self) -> &Geometry {
        &self.shared.geometry
    }

    /// The queue file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}
