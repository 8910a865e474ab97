//! `shmq_txn`: transactions across a topic's partitions. Records sent through a transactional
//! producer become visible, in every partition, when `shmq_txn_commit` returns `SHMQ_OK`, or
//! never; `shmq_txn_commit_consumed` also moves a queue consumer's committed offset with them
//! (consume-transform-produce).

use std::ffi::c_char;

use shmq_core::{Published, TransactionalProducer};

use crate::consumer::{consumer_mut, shmq_consumer};
use crate::error::{guard, Failure};
use crate::status::shmq_status;
use crate::topic::{shmq_topic, topic_lock};
use crate::{bytes, c_str, non_null, write_opt};

/// A transactional producer (opaque): holds one transactional id of a topic until freed with
/// `shmq_transactional_producer_free`. One holder per id at a time, in every process. The
/// records of the open transaction wait in this handle until `shmq_txn_commit`.
///
/// Thread safety: use it from one thread at a time (it may move between threads). Lifetime:
/// it keeps the topic open, so it may outlive the `shmq_topic` it was made from.
pub struct shmq_txn {
    producer: TransactionalProducer,
}

/// Where one record of a committed transaction went (`shmq_txn_commit`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_txn_place {
    /// The partition.
    pub partition: u32,
    /// The record's offset within it.
    pub offset: u64,
}

/// Takes transactional id `id` (1 to 64 bytes of UTF-8) of `topic` and stores the handle in
/// `*out`; free it with `shmq_transactional_producer_free`. Creates the topic's transaction
/// file (`<topic>/transactions`) on first use. If the id's previous holder died, the
/// transaction it left is settled first: committed if it had reached its commit point,
/// aborted otherwise. `SHMQ_EBUSY` while another live handle holds the id, or once 64 other
/// ids have slots; `SHMQ_EINVAL` for an empty or longer id; `SHMQ_ECORRUPT` for a damaged
/// transaction file.
///
/// # Safety
/// `topic` is NULL or a live topic handle; `id` is NULL or a NUL-terminated string; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_transactional_producer_new(
    topic: *const shmq_topic,
    id: *const c_char,
    out: *mut *mut shmq_txn,
) -> shmq_status {
    guard("shmq_transactional_producer_new", || {
        // SAFETY: the caller guarantees `topic` is NULL or live.
        let topic = unsafe { topic_lock(topic) }?;
        // SAFETY: the caller guarantees `id` is NULL or a valid C string for this call.
        let id = unsafe { c_str(id, "id") }?
            .to_str()
            .map_err(|_| Failure::einval("id is not valid UTF-8"))?;
        non_null(out, "out")?;
        let producer = topic.transactional_producer(id)?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { crate::put_handle(out, shmq_txn { producer }) };
        Ok(())
    })
}

/// Adds the `len` bytes at `data` with the `key_len`-byte `key` to the open transaction, for
/// the key's partition (`shmq_topic_partition_for_key`), and stores that partition in
/// `*partition_out` (if not NULL). Nothing is written until `shmq_txn_commit`. `SHMQ_ETOOBIG`
/// for a record larger than the partition's maximum message, `SHMQ_EINVAL` for a key longer
/// than 65,534 bytes.
///
/// # Safety
/// `txn` is NULL or a live handle used by this thread only; `key`/`data` are NULL only with a
/// length of 0, else they point to that many readable bytes; `partition_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_send_keyed(
    txn: *mut shmq_txn,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    len: usize,
    partition_out: *mut u32,
) -> shmq_status {
    guard("shmq_txn_send_keyed", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let t = unsafe { txn_mut(txn) }?;
        // SAFETY: the caller's contract on the buffers.
        let (key, value) = unsafe { (bytes(key, key_len, "key")?, bytes(data, len, "data")?) };
        let partition = t.send_keyed(key, value)?;
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { write_opt(partition_out, partition) };
        Ok(())
    })
}

/// Adds the `len` bytes at `data` without a key to the open transaction, for the next
/// partition in round-robin order, and stores that partition in `*partition_out` (if not
/// NULL). Outcomes as for `shmq_txn_send_keyed`.
///
/// # Safety
/// As for `shmq_txn_send_keyed`.
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_send(
    txn: *mut shmq_txn,
    data: *const u8,
    len: usize,
    partition_out: *mut u32,
) -> shmq_status {
    guard("shmq_txn_send", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let t = unsafe { txn_mut(txn) }?;
        // SAFETY: the caller's contract on the buffer.
        let value = unsafe { bytes(data, len, "data") }?;
        let partition = t.send(value)?;
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { write_opt(partition_out, partition) };
        Ok(())
    })
}

/// Adds the `len` bytes at `data` to the open transaction for `partition` (`SHMQ_EINVAL` if
/// it does not exist), with the `key_len`-byte `key`, or without a key if `key` is NULL.
/// Outcomes as for `shmq_txn_send_keyed`.
///
/// # Safety
/// As for `shmq_txn_send_keyed`; a NULL `key` means no key (`key_len` is then ignored).
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_send_to(
    txn: *mut shmq_txn,
    partition: u32,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    len: usize,
) -> shmq_status {
    guard("shmq_txn_send_to", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let t = unsafe { txn_mut(txn) }?;
        let key = if key.is_null() {
            None
        } else {
            // SAFETY: non-NULL, and the caller guarantees `key_len` readable bytes.
            Some(unsafe { bytes(key, key_len, "key") }?)
        };
        // SAFETY: the caller's contract on the buffer.
        let value = unsafe { bytes(data, len, "data") }?;
        t.send_to(partition, key, value)?;
        Ok(())
    })
}

/// Stores in `*out` how many records the open transaction holds (sent since the last commit
/// or abort).
///
/// # Safety
/// `txn` is NULL or a live handle used by this thread only; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_pending(txn: *mut shmq_txn, out: *mut usize) -> shmq_status {
    guard("shmq_txn_pending", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let t = unsafe { txn_mut(txn) }?;
        non_null(out, "out")?;
        // SAFETY: checked non-NULL, writable per the caller's contract.
        unsafe { out.write(t.pending()) };
        Ok(())
    })
}

/// Drops the open transaction's records: nothing of them was written.
///
/// # Safety
/// `txn` is NULL or a live handle used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_abort(txn: *mut shmq_txn) -> shmq_status {
    guard("shmq_txn_abort", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        unsafe { txn_mut(txn) }?.abort();
        Ok(())
    })
}

/// Commits the open transaction: every record sent since the last commit or abort becomes
/// visible at once, in every partition (in send order within a partition). On `SHMQ_OK` the
/// places of the first `capacity` records, in send order, are stored in `places`, and the
/// number of records committed in `*count_out` (if not NULL; more than `capacity` means the
/// list was cut: the records are committed all the same). An empty transaction commits
/// nothing (count 0).
///
/// `SHMQ_TIMEOUT` when the transaction was aborted (none of it is visible: the call stalled
/// past a partition's claim timeout and a reader gave a record up, or a partition had no room
/// under `SHMQ_FULL_REJECT`); `SHMQ_EINVAL` for more than 64 partitions in one transaction;
/// the errors of `shmq_publish_batch` for a partition, after which the transaction was
/// aborted too. The records are dropped on every outcome.
///
/// # Safety
/// `txn` is NULL or a live handle used by this thread only; `places` is NULL (only with a
/// `capacity` of 0) or points to `capacity` writable `shmq_txn_place`; `count_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_commit(
    txn: *mut shmq_txn,
    places: *mut shmq_txn_place,
    capacity: usize,
    count_out: *mut usize,
) -> shmq_status {
    guard("shmq_txn_commit", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let t = unsafe { txn_mut(txn) }?;
        if capacity > 0 {
            non_null(places, "places (with a capacity > 0)")?;
        }
        let placed = t.commit()?;
        // SAFETY: the caller's contract on `places`, `capacity` and `count_out`.
        unsafe { write_places(&placed, places, capacity, count_out) };
        Ok(())
    })
}

/// Commits the open transaction as `shmq_txn_commit` does, together with `consumer`'s commit
/// of `offset` (the last input record processed): the consumer's group moves to
/// `offset + 1` exactly when the transaction's records become visible, so a process killed
/// anywhere neither loses an input nor publishes its output twice. Open the transactional
/// producer before the consumer (the id's next holder finishes a commit its previous holder
/// left), and use one transactional id per input queue or partition.
///
/// Outcomes as `shmq_txn_commit` and `shmq_commit`; `SHMQ_ETAKENOVER` before anything is
/// written when the group's offset moved since the consumer read it (free the consumer and
/// make a new one, which resumes after the last committed transaction); `SHMQ_EINVAL` for an
/// offset not yet polled, or a queue path that is not UTF-8 of at most 768 bytes. The
/// records are dropped on every outcome.
///
/// # Safety
/// As for `shmq_txn_commit`; `consumer` is NULL or a live consumer used by this thread only.
#[no_mangle]
pub unsafe extern "C" fn shmq_txn_commit_consumed(
    txn: *mut shmq_txn,
    consumer: *mut shmq_consumer,
    offset: u64,
    places: *mut shmq_txn_place,
    capacity: usize,
    count_out: *mut usize,
) -> shmq_status {
    guard("shmq_txn_commit_consumed", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let t = unsafe { txn_mut(txn) }?;
        // SAFETY: the caller's contract: NULL or a live consumer used only by this thread.
        let c = unsafe { consumer_mut(consumer) }?;
        if capacity > 0 {
            non_null(places, "places (with a capacity > 0)")?;
        }
        let placed = t.commit_consumed(c, offset)?;
        // SAFETY: the caller's contract on `places`, `capacity` and `count_out`.
        unsafe { write_places(&placed, places, capacity, count_out) };
        Ok(())
    })
}

/// Frees a transactional producer (NULL: no-op): an open transaction's records are dropped
/// (never written) and the id is free for the next holder.
///
/// # Safety
/// `txn` is NULL or a live handle, freed exactly once and not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_transactional_producer_free(txn: *mut shmq_txn) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_transactional_producer_free", txn) }
}

/// Stores the first `capacity` of `placed` in `places` and their number in `*count_out`.
///
/// # Safety
/// `places` points to `capacity` writable entries (or `capacity` is 0); `count_out` is NULL
/// or writable.
unsafe fn write_places(
    placed: &[Published],
    places: *mut shmq_txn_place,
    capacity: usize,
    count_out: *mut usize,
) {
    for (i, p) in placed.iter().take(capacity).enumerate() {
        let place = shmq_txn_place {
            partition: p.partition,
            offset: p.offset,
        };
        // SAFETY: `i < capacity`, and the caller guarantees `capacity` writable entries.
        unsafe { places.add(i).write(place) };
    }
    // SAFETY: NULL or writable per the caller's contract.
    unsafe { write_opt(count_out, placed.len()) };
}

/// Borrows the transactional producer behind `t`.
///
/// # Safety
/// `t` is NULL or a live handle used by only this thread for `'a`.
unsafe fn txn_mut<'a>(t: *mut shmq_txn) -> Result<&'a mut TransactionalProducer, Failure> {
    non_null(t, "txn")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle used by only this thread for
    // 'a, so a unique borrow is sound.
    Ok(unsafe { &mut (*t).producer })
}

// A transactional producer moves between threads.
const _: () = {
    const fn send<T: Send>() {}
    send::<TransactionalProducer>();
};
