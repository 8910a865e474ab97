//! `shmq_consumer`: polling, committing and seeking within a consumer group.

use std::ffi::c_char;

use shmq_core::{Consumer, SeekTo, Start, Subscribe};

use crate::error::{guard, Failure};
use crate::queue::{queue_ref, shmq_queue};
use crate::status::shmq_status;
use crate::{non_null, timeout};

/// A member of a consumer group (opaque): holds the group's lease until freed with
/// `shmq_consumer_free`.
///
/// Thread safety: use a consumer from one thread at a time (it may move between threads).
/// Lifetime: it keeps the queue mapping alive, so it may outlive the `shmq_queue` it was made
/// from.
pub struct shmq_consumer {
    consumer: Consumer,
}

/// One record returned by `shmq_poll`.
///
/// `data` points directly into the shared mapping or into a buffer owned by the consumer
/// (zero-copy where the library can guarantee the bytes are stable). It is valid only until
/// the next call on the same consumer (`shmq_poll`, `shmq_commit`, `shmq_seek`,
/// `shmq_consumer_free`); copy the bytes to keep them. Never write through it. When `len` is 0,
/// `data` must not be dereferenced.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_message {
    /// The payload.
    pub data: *const u8,
    /// Payload length in bytes.
    pub len: usize,
    /// The record's offset (dense per queue: 0, 1, 2, ..., except for aborted offsets).
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// How many offsets right before this one were aborted (given up by their producer, or
    /// stalled or dead past the claim timeout: they hold no record) and skipped since this
    /// consumer's previous message. A gap check expects offset == previous + 1 +
    /// aborted_before; any other hole comes with SHMQ_LAGGED or a seek.
    pub aborted_before: u64,
}

/// `shmq_consumer_subscribe` flag: a group created by this call is non-gating. It never
/// holds producers back (under `SHMQ_FULL_BLOCK` they overwrite what it has not read), and a
/// consumer that falls a whole ring behind gets `SHMQ_LAGGED`. For reading a queue without
/// slowing anyone down, e.g. a debugging peek.
pub const SHMQ_SUBSCRIBE_NON_GATING: u32 = 1;

/// `shmq_consumer_subscribe` flag: a group created by this call starts at the next record
/// published instead of the earliest one still in the ring.
pub const SHMQ_SUBSCRIBE_LATEST: u32 = 2;

/// Joins consumer group `group` (NUL-terminated UTF-8) on `queue` and stores the consumer in
/// `*out`. A group that does not exist is created as a gating group (producers never overrun
/// it under BLOCK/REJECT) starting at the earliest retained record; an existing group resumes
/// after its committed offset. `SHMQ_EBUSY` if another live consumer holds the group (in any
/// process, this one included) or every group slot is used. `shmq_consumer_subscribe` creates
/// non-gating groups and groups that start at the latest record.
///
/// The caller owns `*out` and frees it with `shmq_consumer_free`.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `group` is NULL or a NUL-terminated string; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_consumer_new(
    queue: *const shmq_queue,
    group: *const c_char,
    out: *mut *mut shmq_consumer,
) -> shmq_status {
    guard("shmq_consumer_new", || {
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { subscribe(queue, group, &Subscribe::default(), out) }
    })
}

/// Joins consumer group `group` like `shmq_consumer_new`; `flags` (0, or an OR of
/// `SHMQ_SUBSCRIBE_NON_GATING` and `SHMQ_SUBSCRIBE_LATEST`) say how the group is created if
/// it does not exist yet. They do not change an existing group. An unknown flag is
/// `SHMQ_EINVAL`.
///
/// # Safety
/// As for `shmq_consumer_new`.
#[no_mangle]
pub unsafe extern "C" fn shmq_consumer_subscribe(
    queue: *const shmq_queue,
    group: *const c_char,
    flags: u32,
    out: *mut *mut shmq_consumer,
) -> shmq_status {
    guard("shmq_consumer_subscribe", || {
        let known = SHMQ_SUBSCRIBE_NON_GATING | SHMQ_SUBSCRIBE_LATEST;
        if flags & !known != 0 {
            return Err(Failure::einval(format!(
                "flags {flags:#x} has unknown bits {:#x} (known: SHMQ_SUBSCRIBE_NON_GATING, \
                 SHMQ_SUBSCRIBE_LATEST)",
                flags & !known
            )));
        }
        let options = Subscribe {
            gating: flags & SHMQ_SUBSCRIBE_NON_GATING == 0,
            start: if flags & SHMQ_SUBSCRIBE_LATEST != 0 {
                Start::Latest
            } else {
                Start::Earliest
            },
            ..Subscribe::default()
        };
        // SAFETY: the caller's contract, as for `shmq_consumer_new`.
        unsafe { subscribe(queue, group, &options, out) }
    })
}

/// The body of the two subscribe functions.
///
/// # Safety
/// As for `shmq_consumer_new`.
unsafe fn subscribe(
    queue: *const shmq_queue,
    group: *const c_char,
    options: &Subscribe,
    out: *mut *mut shmq_consumer,
) -> Result<(), Failure> {
    // SAFETY: the caller guarantees `queue` is NULL or live.
    let queue = unsafe { queue_ref(queue) }?;
    // SAFETY: the caller guarantees `group` is NULL or a valid C string for this call.
    let group = unsafe { crate::group_name(group) }?;
    non_null(out, "out")?;
    let consumer = queue.subscribe(group, options)?;
    // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
    unsafe { crate::put_handle(out, shmq_consumer { consumer }) };
    Ok(())
}

/// Waits up to `timeout_ns` for the next record and stores it in `*out`. `SHMQ_TIMEOUT` when
/// nothing arrived in time; `SHMQ_LAGGED` when records were overwritten before this consumer
/// read them (`*out` is not written; the last-error message says how many were lost; poll
/// again to continue at the oldest retained record).
///
/// Soundness of the borrowed `out->data`: the Rust API returns the payload borrowed from the
/// consumer until its next use, and guarantees the bytes stay unchanged (and mapped: the
/// consumer holds the mapping) for that long. The C contract "valid until the next call on this
/// consumer" is exactly that borrow, so no copy is made here.
///
/// # Safety
/// `consumer` is NULL or a live consumer not used concurrently by another thread; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_poll(
    consumer: *mut shmq_consumer,
    timeout_ns: i64,
    out: *mut shmq_message,
) -> shmq_status {
    guard("shmq_poll", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let c = unsafe { consumer_mut(consumer) }?;
        non_null(out, "out")?;
        let t = timeout(timeout_ns)?;
        match c.poll(t)? {
            Some(m) => {
                let msg = message(&m);
                // SAFETY: non-NULL (checked) and writable per the caller's contract.
                unsafe { out.write(msg) };
                Ok(())
            }
            // A fixed message: an empty poll is an expected outcome, set without allocating.
            None => Err(Failure::fixed(
                shmq_status::SHMQ_TIMEOUT,
                c"shmq_poll: no message within the timeout",
            )),
        }
    })
}

/// The function `shmq_poll_batch` calls with each record: `ctx` as given to it, and the record,
/// valid only during the call (copy the bytes to keep them).
pub type shmq_batch_fn =
    Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void, message: *const shmq_message)>;

/// Waits up to `timeout_ns` for the next record, then hands it and every further record that
/// is already committed, up to `max` in all, to `callback` in offset order, and stores how many
/// it handed out in `*count_out` (if not NULL). The lease and heartbeat checks are paid once
/// per call. `SHMQ_TIMEOUT` when nothing arrived in time (`callback` was not called; also for a
/// `max` of 0), `SHMQ_LAGGED` as for `shmq_poll`. A record's `data` is valid only during its
/// callback: the next record may reuse the consumer's buffer. Commit the last offset seen, as
/// after `shmq_poll`.
///
/// An error after some records were handed out is returned as well (`*count_out` is not
/// written then; the records stay delivered: count them in the callback if it matters), and
/// the next call goes on from where the error left the consumer. `callback` must not call
/// functions on the same consumer and must return normally.
///
/// # Safety
/// `consumer` is NULL or a live consumer not used concurrently by another thread; `callback`
/// is NULL or a function safe to call with `ctx` and a record; `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_poll_batch(
    consumer: *mut shmq_consumer,
    max: usize,
    timeout_ns: i64,
    callback: shmq_batch_fn,
    ctx: *mut std::ffi::c_void,
    count_out: *mut usize,
) -> shmq_status {
    guard("shmq_poll_batch", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let c = unsafe { consumer_mut(consumer) }?;
        let Some(callback) = callback else {
            return Err(Failure::einval("callback is NULL"));
        };
        let t = timeout(timeout_ns)?;
        let handed = c.poll_batch(max, t, |m| {
            let msg = message(&m);
            // SAFETY: the caller guarantees `callback` may be called with `ctx` and a record;
            // `msg` and the bytes it points to live until the call returns.
            unsafe { callback(ctx, &msg) };
        })?;
        if handed == 0 {
            return Err(Failure::fixed(
                shmq_status::SHMQ_TIMEOUT,
                c"shmq_poll_batch: no message within the timeout",
            ));
        }
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { crate::write_opt(count_out, handed) };
        Ok(())
    })
}

/// The C form of a record the Rust API hands out, borrowing its payload.
fn message(m: &shmq_core::Message<'_>) -> shmq_message {
    shmq_message {
        data: m.payload.as_ptr(),
        len: m.payload.len(),
        offset: m.offset,
        timestamp_ns: m.timestamp_ns,
        aborted_before: m.aborted_before,
    }
}

/// Commits `offset`: it and every record before it are processed, and a consumer that joins
/// the group later resumes at `offset + 1`. Committing at or below the committed offset does
/// nothing; an offset not yet polled is `SHMQ_EINVAL`. Under SYNC durability it returns once the
/// committed offset is on disk (`SHMQ_EIO` if that fails). `SHMQ_ETAKENOVER` if someone else
/// took the group or moved its committed offset while this consumer held it (another member
/// judged it dead, or an operator reset the group): nothing was committed; free the consumer.
///
/// # Safety
/// `consumer` is NULL or a live consumer not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_commit(consumer: *mut shmq_consumer, offset: u64) -> shmq_status {
    guard("shmq_commit", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        unsafe { consumer_mut(consumer) }?.commit(offset)?;
        Ok(())
    })
}

/// Moves the read cursor (not the committed offset) to `offset`, which must still be in the
/// ring (`SHMQ_EINVAL` otherwise; the message gives the retained range).
///
/// # Safety
/// `consumer` is NULL or a live consumer not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_seek(consumer: *mut shmq_consumer, offset: u64) -> shmq_status {
    guard("shmq_seek", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        unsafe { consumer_mut(consumer) }?.seek(SeekTo::Offset(offset))?;
        Ok(())
    })
}

/// Frees a consumer and releases its group's lease (NULL: no-op). The committed offset stays
/// in the file.
///
/// # Safety
/// `consumer` is NULL or a live consumer handle, freed exactly once and not in use by another
/// thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_consumer_free(consumer: *mut shmq_consumer) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_consumer_free", consumer) }
}

/// Borrows the consumer of a handle argument.
///
/// # Safety
/// `c` is NULL or a live consumer handle that only this thread uses for `'a`.
pub(crate) unsafe fn consumer_mut<'a>(c: *mut shmq_consumer) -> Result<&'a mut Consumer, Failure> {
    non_null(c, "consumer")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle used by only this thread for
    // 'a, so a unique borrow is sound.
    Ok(unsafe { &mut (*c).consumer })
}
