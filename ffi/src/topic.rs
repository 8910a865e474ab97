//! `shmq_topic`: topics (a directory of partitions), keyed publishing, and group members that
//! share the partitions.

use std::ffi::c_char;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use shmq_core::{
    partition_for_key, Error, MemberOptions, Published, Topic, TopicConsumer, TopicOptions,
    TopicProducer, Trust,
};

use crate::error::{guard, Failure};
use crate::queue::{options_or_default, shmq_options, trust};
use crate::status::shmq_status;
use crate::{bytes, non_null, timeout, write_opt};

/// An open topic (opaque): a directory of partition queue files with a descriptor. Created by
/// `shmq_topic_create` or `shmq_topic_open`, freed by `shmq_topic_close`.
///
/// Thread safety: a topic handle may be used from several threads at once. Producers and
/// consumers keep what they need alive, so the handle may be closed before or after them.
pub struct shmq_topic {
    topic: Mutex<Topic>,
}

/// A producer on a topic (opaque). Use it from one thread at a time; free it with
/// `shmq_topic_producer_free`.
pub struct shmq_topic_producer {
    producer: TopicProducer,
}

/// A member of a topic's consumer group (opaque): holds its share of the partitions until
/// freed with `shmq_topic_consumer_free`. Use it from one thread at a time. Heartbeats and
/// rebalancing happen inside `shmq_topic_poll`: poll at least every 100 ms (the heartbeat
/// interval) for partitions to move promptly.
pub struct shmq_topic_consumer {
    consumer: TopicConsumer,
}

/// One record returned by `shmq_topic_poll`. `key` and `data` point into the shared mapping
/// or a buffer of the consumer and are valid only until the next call on the same consumer;
/// copy them to keep them. When `has_key` is false, `key` is NULL and `key_len` 0; a length
/// of 0 means the pointer must not be dereferenced.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_topic_message {
    /// The partition it was read from.
    pub partition: u32,
    /// Whether the record has a key (an empty key is a key).
    pub has_key: bool,
    /// The key.
    pub key: *const u8,
    /// Key length in bytes.
    pub key_len: usize,
    /// The value.
    pub data: *const u8,
    /// Value length in bytes.
    pub len: usize,
    /// Its offset within the partition.
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Aborted offsets skipped right before this one in its partition (as in shmq_message).
    pub aborted_before: u64,
}

/// Creates a topic directory at `path` with `partitions` partitions (1 to 1024), each a queue
/// file made with `options` (NULL: the defaults), and stores a new handle in `*out`.
/// `SHMQ_EEXIST` if `path` exists. Atomic: no opener ever sees a partial topic.
///
/// Ownership: the caller owns `*out` and frees it with `shmq_topic_close`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `options` is NULL or an `shmq_options`
/// initialised by `shmq_options_default`; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_create(
    path: *const c_char,
    partitions: u32,
    options: *const shmq_options,
    out: *mut *mut shmq_topic,
) -> shmq_status {
    let make = |path: &Path| {
        // SAFETY: the caller guarantees `options` is NULL or an initialised shmq_options.
        let queue = unsafe { options_or_default(options) }?;
        let options = TopicOptions { partitions, queue };
        Ok(topic_handle(Topic::create(path, &options)?))
    };
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::path_handle("shmq_topic_create", path, out, make) }
}

/// Opens the topic at `path` and stores a new handle in `*out`: `SHMQ_ENOENT` if it does not
/// exist, `SHMQ_ECORRUPT` if its descriptor or membership file is invalid or a partition file
/// is missing (the last-error message says which), `SHMQ_EUNTRUSTED` if its directory or a
/// file in it belongs to another user or its group or others may write it
/// (`shmq_topic_open_trusting` accepts another owner or group).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_open(
    path: *const c_char,
    out: *mut *mut shmq_topic,
) -> shmq_status {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::path_handle("shmq_topic_open", path, out, |p| open(p, &Trust::default())) }
}

/// Opens the topic at `path` like `shmq_topic_open`, also accepting a directory and files that
/// belong to user `trust_owner`, or whose group is `trust_group` (which may then write them).
/// Either may be `SHMQ_TRUST_NONE`. The handle keeps this trust for partitions a growth adds.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_open_trusting(
    path: *const c_char,
    trust_owner: u32,
    trust_group: u32,
    out: *mut *mut shmq_topic,
) -> shmq_status {
    let trust = trust(trust_owner, trust_group);
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::path_handle("shmq_topic_open_trusting", path, out, |p| open(p, &trust)) }
}

/// The handle of the topic at `path`, opened with `trust` (`shmq_topic_open`,
/// `shmq_topic_open_trusting`).
fn open(path: &Path, trust: &Trust) -> Result<shmq_topic, Failure> {
    Ok(topic_handle(Topic::open_trusting(path, trust)?))
}

/// The handle of an open topic.
fn topic_handle(topic: Topic) -> shmq_topic {
    shmq_topic {
        topic: Mutex::new(topic),
    }
}

/// Frees a topic handle (NULL: no-op).
///
/// # Safety
/// `topic` is NULL or a live topic handle, freed exactly once and not in use by another
/// thread during or after this call.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_close(topic: *mut shmq_topic) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_topic_close", topic) }
}

/// Re-reads the descriptor (picking up growth by any process) and stores the partition count
/// in `*out`.
///
/// # Safety
/// `topic` is NULL or a live topic handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_partitions(
    topic: *const shmq_topic,
    out: *mut u32,
) -> shmq_status {
    guard("shmq_topic_partitions", || {
        // SAFETY: the caller guarantees `topic` is NULL or live.
        let mut t = unsafe { topic_lock(topic) }?;
        non_null(out, "out")?;
        t.refresh()?;
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { out.write(t.partition_count()) };
        Ok(())
    })
}

/// Grows the topic to `partitions` partitions (no-op if it has that many; `SHMQ_EINVAL` to
/// shrink). Keyed routing changes with the count: a key's new records may go to another
/// partition than its old ones (see the README's "Topics" section).
///
/// # Safety
/// `topic` is NULL or a live topic handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_grow(topic: *const shmq_topic, partitions: u32) -> shmq_status {
    guard("shmq_topic_grow", || {
        // SAFETY: the caller guarantees `topic` is NULL or live.
        unsafe { topic_lock(topic) }?.grow(partitions)?;
        Ok(())
    })
}

/// `shmq_prefault` for every partition file of the topic: this process's publishes and polls
/// on it then take no first-touch page fault. Stops at the first partition that fails.
///
/// # Safety
/// `topic` is NULL or a live topic handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_prefault(topic: *const shmq_topic) -> shmq_status {
    guard("shmq_topic_prefault", || {
        // SAFETY: the caller guarantees `topic` is NULL or live.
        unsafe { topic_lock(topic) }?.prefault()?;
        Ok(())
    })
}

/// Stores in `*out` the partition a record with the `key_len` bytes at `key` goes to in a
/// topic of `partitions` partitions: CRC-32C (Castagnoli) of the key modulo `partitions`
/// (`SHMQ_EINVAL` if `partitions` is 0). Test vector: key "123456789" (CRC 0xE3069283) goes
/// to partition 3 of 8. Safe from any thread.
///
/// # Safety
/// `key` is NULL only if `key_len` is 0, else it points to `key_len` readable bytes; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_partition_for_key(
    key: *const u8,
    key_len: usize,
    partitions: u32,
    out: *mut u32,
) -> shmq_status {
    guard("shmq_topic_partition_for_key", || {
        // SAFETY: the caller's contract on `key` and `key_len`.
        let key = unsafe { bytes(key, key_len, "key") }?;
        non_null(out, "out")?;
        if partitions == 0 {
            return Err(Failure::einval("partitions is 0"));
        }
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { out.write(partition_for_key(key, partitions)) };
        Ok(())
    })
}

/// Creates a producer on `topic` and stores it in `*out`; free it with
/// `shmq_topic_producer_free`.
///
/// # Safety
/// `topic` is NULL or a live topic handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_producer_new(
    topic: *const shmq_topic,
    out: *mut *mut shmq_topic_producer,
) -> shmq_status {
    guard("shmq_topic_producer_new", || {
        // SAFETY: the caller guarantees `topic` is NULL or live.
        let t = unsafe { topic_lock(topic) }?;
        non_null(out, "out")?;
        let producer = t.producer()?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { crate::put_handle(out, shmq_topic_producer { producer }) };
        Ok(())
    })
}

/// Publishes the `len` bytes at `data` with the `key_len`-byte `key` to the key's partition
/// (`shmq_topic_partition_for_key`). Stores the partition and offset in `*partition_out` and
/// `*offset_out` when they are not NULL (on `SHMQ_OK` and on `SHMQ_ENOTDURABLE`: published
/// there but not on disk). `timeout_ns` and the outcomes are those of `shmq_publish`; a key
/// longer than 65,534 bytes is `SHMQ_EINVAL`.
///
/// # Safety
/// `producer` is NULL or a live producer used by this thread only; `key`/`data` are NULL only
/// with a length of 0, else they point to that many readable bytes; the out-pointers are NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_publish_keyed(
    producer: *mut shmq_topic_producer,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    len: usize,
    timeout_ns: i64,
    partition_out: *mut u32,
    offset_out: *mut u64,
) -> shmq_status {
    guard("shmq_topic_publish_keyed", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        // SAFETY: the caller's contract on the buffers.
        let (key, value) = unsafe { (bytes(key, key_len, "key")?, bytes(data, len, "data")?) };
        p.set_timeout(timeout(timeout_ns)?);
        let sent = p.publish_keyed(key, value);
        // SAFETY: each is NULL or writable per the caller's contract.
        unsafe { sent_to(p, sent, partition_out, offset_out) }
    })
}

/// The end of a keyed or round-robin publish: stores where the record went in
/// `*partition_out` and `*offset_out` (each when not NULL) on success, and also on
/// `NotDurable` (published, not on disk), whose partition is the one whose file it names.
///
/// # Safety
/// `partition_out` and `offset_out` are each NULL or writable.
unsafe fn sent_to(
    p: &TopicProducer,
    sent: shmq_core::Result<Published>,
    partition_out: *mut u32,
    offset_out: *mut u64,
) -> Result<(), Failure> {
    let place = match &sent {
        Ok(s) => Some((s.partition, s.offset)),
        Err(Error::NotDurable { path, offset, .. }) => p
            .topic()
            .partitions()
            .iter()
            .position(|q| q.path() == path)
            .map(|i| (i as u32, *offset)),
        Err(_) => None,
    };
    if let Some((partition, offset)) = place {
        // SAFETY: each is NULL or writable per the caller's contract.
        unsafe { write_opt(partition_out, partition) };
        // SAFETY: as above.
        unsafe { write_opt(offset_out, offset) };
    }
    sent.map(drop).map_err(Failure::from)
}

/// Publishes the `len` bytes at `data` without a key to the next partition in round-robin
/// order; outputs and outcomes as for `shmq_topic_publish_keyed`.
///
/// # Safety
/// As for `shmq_topic_publish_keyed`.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_publish(
    producer: *mut shmq_topic_producer,
    data: *const u8,
    len: usize,
    timeout_ns: i64,
    partition_out: *mut u32,
    offset_out: *mut u64,
) -> shmq_status {
    guard("shmq_topic_publish", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        // SAFETY: the caller's contract on the buffer.
        let value = unsafe { bytes(data, len, "data") }?;
        p.set_timeout(timeout(timeout_ns)?);
        let sent = p.publish(value);
        // SAFETY: each is NULL or writable per the caller's contract.
        unsafe { sent_to(p, sent, partition_out, offset_out) }
    })
}

/// Publishes the `len` bytes at `data` to `partition` (`SHMQ_EINVAL` if it does not exist),
/// with the `key_len`-byte `key`, or without a key if `key` is NULL. Stores the offset in
/// `*offset_out` when it is not NULL (on `SHMQ_OK` and on `SHMQ_ENOTDURABLE`).
///
/// # Safety
/// As for `shmq_topic_publish_keyed`; a NULL `key` means no key (`key_len` is then ignored).
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_publish_to(
    producer: *mut shmq_topic_producer,
    partition: u32,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    len: usize,
    timeout_ns: i64,
    offset_out: *mut u64,
) -> shmq_status {
    guard("shmq_topic_publish_to", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        let key = if key.is_null() {
            None
        } else {
            // SAFETY: non-NULL, and the caller guarantees `key_len` readable bytes.
            Some(unsafe { bytes(key, key_len, "key") }?)
        };
        // SAFETY: the caller's contract on the buffer.
        let value = unsafe { bytes(data, len, "data") }?;
        p.set_timeout(timeout(timeout_ns)?);
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { crate::published(p.publish_to(partition, key, value), offset_out) }
    })
}

/// Frees a topic producer (NULL: no-op).
///
/// # Safety
/// `producer` is NULL or a live producer handle, freed exactly once and not in use.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_producer_free(producer: *mut shmq_topic_producer) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_topic_producer_free", producer) }
}

/// Joins consumer group `group` (NUL-terminated UTF-8, 1 to 64 bytes) of `topic` and stores
/// the member in `*out`. The member holds its share of the partitions at once where they are
/// free and gets the rest as other members release them; `SHMQ_EBUSY` if every member slot
/// (64 per topic) is taken by a live member. Free it with `shmq_topic_consumer_free`.
///
/// # Safety
/// `topic` is NULL or a live topic handle; `group` is NULL or a NUL-terminated string; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_consumer_new(
    topic: *const shmq_topic,
    group: *const c_char,
    out: *mut *mut shmq_topic_consumer,
) -> shmq_status {
    guard("shmq_topic_consumer_new", || {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { subscribe(topic, group, &MemberOptions::default(), out) }
    })
}

/// Joins consumer group `group` like `shmq_topic_consumer_new`, with a heartbeat interval and
/// a session timeout of its own (0: the defaults, 100 ms and 1 s). A member heartbeats and
/// rebalances every `heartbeat_interval_ns` inside `shmq_topic_poll`; the others count it out
/// once its heartbeat is older than `session_timeout_ns`, which must be at least twice the
/// interval (`SHMQ_EINVAL` otherwise). Partitions move within one or two intervals of a member
/// leaving, dying or joining.
///
/// # Safety
/// As for `shmq_topic_consumer_new`.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_consumer_subscribe(
    topic: *const shmq_topic,
    group: *const c_char,
    heartbeat_interval_ns: u64,
    session_timeout_ns: u64,
    out: *mut *mut shmq_topic_consumer,
) -> shmq_status {
    guard("shmq_topic_consumer_subscribe", || {
        let d = MemberOptions::default();
        let pick = |ns: u64, default: Duration| match ns {
            0 => default,
            ns => Duration::from_nanos(ns),
        };
        let options = MemberOptions {
            heartbeat_interval: pick(heartbeat_interval_ns, d.heartbeat_interval),
            session_timeout: pick(session_timeout_ns, d.session_timeout),
            ..d
        };
        // SAFETY: the caller's contract, as for `shmq_topic_consumer_new`.
        unsafe { subscribe(topic, group, &options, out) }
    })
}

/// The older name of `shmq_topic_consumer_subscribe`, the same function: kept so that programs
/// written (or linked) against it keep working. New code calls `shmq_topic_consumer_subscribe`.
///
/// # Safety
/// As for `shmq_topic_consumer_new`.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_consumer_join(
    topic: *const shmq_topic,
    group: *const c_char,
    heartbeat_interval_ns: u64,
    session_timeout_ns: u64,
    out: *mut *mut shmq_topic_consumer,
) -> shmq_status {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe {
        shmq_topic_consumer_subscribe(topic, group, heartbeat_interval_ns, session_timeout_ns, out)
    }
}

/// The body of the topic consumer constructors.
///
/// # Safety
/// As for `shmq_topic_consumer_new`.
unsafe fn subscribe(
    topic: *const shmq_topic,
    group: *const c_char,
    options: &MemberOptions,
    out: *mut *mut shmq_topic_consumer,
) -> Result<(), Failure> {
    // SAFETY: the caller guarantees `topic` is NULL or live.
    let t = unsafe { topic_lock(topic) }?;
    // SAFETY: the caller guarantees `group` is NULL or a valid C string for this call.
    let group = unsafe { crate::group_name(group) }?;
    non_null(out, "out")?;
    let consumer = t.subscribe(group, options)?;
    // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
    unsafe { crate::put_handle(out, shmq_topic_consumer { consumer }) };
    Ok(())
}

/// Waits up to `timeout_ns` for the next record of a partition this member holds and stores
/// it in `*out` (`SHMQ_TIMEOUT` if none came). A record without topic framing is
/// `SHMQ_ECORRUPT` and skipped by the next poll.
///
/// # Safety
/// `consumer` is NULL or a live consumer used by this thread only; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_poll(
    consumer: *mut shmq_topic_consumer,
    timeout_ns: i64,
    out: *mut shmq_topic_message,
) -> shmq_status {
    guard("shmq_topic_poll", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let c = unsafe { consumer_mut(consumer) }?;
        non_null(out, "out")?;
        let t = timeout(timeout_ns)?;
        let Some(m) = c.poll(t)? else {
            // A fixed message: an empty poll is an expected outcome, set without allocating.
            return Err(Failure::fixed(
                shmq_status::SHMQ_TIMEOUT,
                c"shmq_topic_poll: no message within the timeout",
            ));
        };
        let msg = shmq_topic_message {
            partition: m.partition,
            has_key: m.key.is_some(),
            key: m.key.map_or(std::ptr::null(), <[u8]>::as_ptr),
            key_len: m.key.map_or(0, <[u8]>::len),
            data: m.value.as_ptr(),
            len: m.value.len(),
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            aborted_before: m.aborted_before,
        };
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { out.write(msg) };
        Ok(())
    })
}

/// Commits `offset` of `partition`: the member that holds the partition next resumes after it.
/// `SHMQ_ETAKENOVER` if this member does not hold `partition` (any more: partitions move only
/// inside `shmq_topic_poll`, so the partition of the last polled record is still held) or
/// another holder or a reset moved its committed offset (nothing was committed, and the member
/// drops the partition); `SHMQ_EINVAL` if the topic has no such partition or this member has
/// not read `offset` yet.
///
/// # Safety
/// `consumer` is NULL or a live consumer used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_commit(
    consumer: *mut shmq_topic_consumer,
    partition: u32,
    offset: u64,
) -> shmq_status {
    guard("shmq_topic_commit", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        unsafe { consumer_mut(consumer) }?.commit(partition, offset)?;
        Ok(())
    })
}

/// Frees a topic consumer (NULL: no-op): it leaves the group and releases its partitions,
/// which the other members take over.
///
/// # Safety
/// `consumer` is NULL or a live consumer handle, freed exactly once and not in use.
#[no_mangle]
pub unsafe extern "C" fn shmq_topic_consumer_free(consumer: *mut shmq_topic_consumer) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_topic_consumer_free", consumer) }
}

/// Locks the topic of a handle argument (a poisoned lock is still usable: a `Topic` has no
/// invariant a panic could break half-way that a later call relies on).
///
/// # Safety
/// `t` is NULL or a live `shmq_topic` handle.
pub(crate) unsafe fn topic_lock<'a>(
    t: *const shmq_topic,
) -> Result<MutexGuard<'a, Topic>, Failure> {
    non_null(t, "topic")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle; only shared access is taken.
    let t = unsafe { &(*t).topic };
    Ok(t.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Borrows the producer of a handle argument.
///
/// # Safety
/// `p` is NULL or a live handle that only this thread uses for `'a`.
unsafe fn producer_mut<'a>(p: *mut shmq_topic_producer) -> Result<&'a mut TopicProducer, Failure> {
    non_null(p, "producer")?;
    // SAFETY: non-NULL, live, and used by this thread only, so a unique borrow is sound.
    Ok(unsafe { &mut (*p).producer })
}

/// Borrows the consumer of a handle argument.
///
/// # Safety
/// `c` is NULL or a live handle that only this thread uses for `'a`.
unsafe fn consumer_mut<'a>(c: *mut shmq_topic_consumer) -> Result<&'a mut TopicConsumer, Failure> {
    non_null(c, "consumer")?;
    // SAFETY: non-NULL, live, and used by this thread only, so a unique borrow is sound.
    Ok(unsafe { &mut (*c).consumer })
}

// A topic handle is shared between threads; producers and consumers move between them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Topic>();
    send::<TopicProducer>();
    send::<TopicConsumer>();
};
