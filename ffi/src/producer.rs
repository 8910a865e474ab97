//! `shmq_producer`: publishing records and waiting for them to be durable.

use std::time::Duration;

use shmq_core::{Producer, Schedule, Timestamps};

use crate::error::{guard, Failure};
use crate::queue::{queue_ref, shmq_queue};
use crate::status::shmq_status;
use crate::{non_null, timeout};

/// A producer (opaque): holds one of the queue's producer slots until freed with
/// `shmq_producer_free`.
///
/// Thread safety: use a producer from one thread at a time (it may move between threads).
/// Lifetime: it keeps the queue mapping alive, so it may outlive the `shmq_queue` it was made
/// from.
pub struct shmq_producer {
    producer: Producer,
}

/// Creates a producer on `queue` and stores it in `*out` (`SHMQ_EBUSY` if every producer slot
/// is held by a live producer). The caller owns `*out` and frees it with `shmq_producer_free`.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_producer_new(
    queue: *const shmq_queue,
    out: *mut *mut shmq_producer,
) -> shmq_status {
    guard("shmq_producer_new", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        non_null(out, "out")?;
        let producer = queue.producer()?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { crate::put_handle(out, shmq_producer { producer }) };
        Ok(())
    })
}

/// Publishes the `len` bytes at `data` (copied; the buffer is not retained) and, if
/// `offset_out` is not NULL, stores the record's offset there (on `SHMQ_OK`, and on
/// `SHMQ_ENOTDURABLE`: published at `*offset_out` but not on disk).
///
/// `timeout_ns` bounds the wait for room under `SHMQ_FULL_BLOCK` (`SHMQ_TIMEOUT` when it passes).
/// Other outcomes: `SHMQ_FULL` (policy REJECT), `SHMQ_ETOOBIG`, `SHMQ_TIMEOUT` also when the call
/// stalled past the claim timeout and readers aborted the record (nothing was published),
/// `SHMQ_ENOTDURABLE` under SYNC durability when the record was published (at `*offset_out`) but
/// its flush failed, and `SHMQ_EIO` under BATCH and SYNC when an earlier flush of the file failed
/// (the file is poisoned; nothing was published). `data` may be NULL only if `len` is 0.
///
/// # Safety
/// `producer` is NULL or a live producer not used concurrently by another thread; `data` is
/// NULL or points to `len` readable bytes; `offset_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_publish(
    producer: *mut shmq_producer,
    data: *const u8,
    len: usize,
    timeout_ns: i64,
    offset_out: *mut u64,
) -> shmq_status {
    guard("shmq_publish", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        // SAFETY: the caller guarantees `len` readable bytes at `data`, unchanged for the call.
        let payload = unsafe { crate::bytes(data, len, "data") }?;
        p.set_timeout(timeout(timeout_ns)?);
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { crate::published(p.publish(payload), offset_out) }
    })
}

/// Publishes the `len` bytes at `data` like `shmq_publish`, for work groups to deliver no earlier
/// than `delay_ms` milliseconds after its timestamp and, if `ttl_ms` is not 0, to expire instead of
/// delivering it later than `ttl_ms` after it (the delay at most 2^32 - 1 ms, the time to live at
/// most 2^31 - 1 ms, else `SHMQ_EINVAL`). Plain consumer groups read the record at once, as any
/// other. Other outcomes as `shmq_publish`.
///
/// # Safety
/// As for `shmq_publish`.
#[no_mangle]
pub unsafe extern "C" fn shmq_publish_scheduled(
    producer: *mut shmq_producer,
    data: *const u8,
    len: usize,
    delay_ms: u64,
    ttl_ms: u64,
    timeout_ns: i64,
    offset_out: *mut u64,
) -> shmq_status {
    guard("shmq_publish_scheduled", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        // SAFETY: the caller guarantees `len` readable bytes at `data`, unchanged for the call.
        let payload = unsafe { crate::bytes(data, len, "data") }?;
        p.set_timeout(timeout(timeout_ns)?);
        let schedule = Schedule {
            delay: Duration::from_millis(delay_ms),
            ttl: (ttl_ms != 0).then(|| Duration::from_millis(ttl_ms)),
        };
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { crate::published(p.publish_scheduled(payload, &schedule), offset_out) }
    })
}

/// One record of a batch for `shmq_publish_batch`: `len` bytes at `data` (NULL only if `len`
/// is 0).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_record {
    /// The payload.
    pub data: *const u8,
    /// Payload length in bytes.
    pub len: usize,
}

/// Publishes the `count` records of `records` (copied; nothing is retained) as one batch: one
/// claim takes room for all of them, they get the dense offsets `first .. first + count` in
/// array order, and if `first_offset_out` is not NULL the first one's offset is stored there
/// (on `SHMQ_OK`, and on `SHMQ_ENOTDURABLE`: published, not on disk). The batch is atomic:
/// consumers see all of its records or none of them.
///
/// Outcomes as `shmq_publish`, the flush under SYNC durability covering the whole batch, and:
/// `SHMQ_EINVAL` for a `count` of 0, `SHMQ_ETOOBIG` for a record larger than the queue's
/// maximum or a batch that could never fit in the ring. `SHMQ_TIMEOUT` also when the call
/// stalled past the claim timeout and readers gave the batch up: none of it was published
/// (the last-error message names its first offset).
///
/// # Safety
/// `producer` is NULL or a live producer not used concurrently by another thread; `records` is
/// NULL or points to `count` readable `shmq_record`s, each of whose `data` is NULL (with a
/// `len` of 0) or points to `len` readable bytes; `first_offset_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_publish_batch(
    producer: *mut shmq_producer,
    records: *const shmq_record,
    count: usize,
    timeout_ns: i64,
    first_offset_out: *mut u64,
) -> shmq_status {
    guard("shmq_publish_batch", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        non_null(records, "records")?;
        // SAFETY: non-NULL, and the caller guarantees `count` readable records.
        let records = unsafe { std::slice::from_raw_parts(records, count) };
        let payloads = records
            .iter()
            // SAFETY: the caller guarantees each record's `len` readable bytes at `data`.
            .map(|r| unsafe { crate::bytes(r.data, r.len, "record data") })
            .collect::<Result<Vec<&[u8]>, Failure>>()?;
        p.set_timeout(timeout(timeout_ns)?);
        // `NotDurable` names the batch's last record: report the first, as on success.
        let last = (count as u64).saturating_sub(1);
        let result = p.publish_batch(&payloads).map_err(|e| match e {
            shmq_core::Error::NotDurable {
                path,
                offset,
                op,
                source,
            } => shmq_core::Error::NotDurable {
                path,
                offset: offset - last,
                op,
                source,
            },
            e => e,
        });
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { crate::published(result, first_offset_out) }
    })
}

/// Waits until the record at `offset` (and every record before it) is on disk, flushing if no
/// other process is: `SHMQ_TIMEOUT` when `timeout_ns` passes, `SHMQ_EIO` if a flush of the file
/// failed before the record was on disk (the file is poisoned: it never will be), `SHMQ_EINVAL`
/// for an offset not yet published. Works under every durability policy.
///
/// # Safety
/// `producer` is NULL or a live producer not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_wait_durable(
    producer: *mut shmq_producer,
    offset: u64,
    timeout_ns: i64,
) -> shmq_status {
    guard("shmq_wait_durable", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        let t = timeout(timeout_ns)?;
        p.wait_durable(offset, t)?;
        Ok(())
    })
}

/// Frees a producer and releases its slot (NULL: no-op).
///
/// # Safety
/// `producer` is NULL or a live producer handle, freed exactly once and not in use by another
/// thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_producer_free(producer: *mut shmq_producer) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_producer_free", producer) }
}

/// Sets the clock `producer` stamps its records with: `CLOCK_REALTIME` at nanosecond resolution
/// (`coarse` false, the default; where the kernel keeps time with the CPU's time-stamp
/// counter, extrapolated from that counter between kernel clock reads at most 100 ms apart,
/// within tens of nanoseconds of the kernel clock), or `CLOCK_REALTIME_COARSE` (`coarse`
/// true): the time of the kernel's last tick, up to one tick (1 to 10 ms) before the publish,
/// for a cheaper publish (a few ns, against about 10 ns for the extrapolation and 25 ns for a
/// kernel read on some virtual machines). A work group's delay and time to live count from
/// the timestamp, so under the coarse clock they may end up to one tick early. `SHMQ_EINVAL`
/// for a NULL handle.
///
/// # Safety
/// `producer` is NULL or a live producer not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_producer_set_coarse_timestamps(
    producer: *mut shmq_producer,
    coarse: bool,
) -> shmq_status {
    guard("shmq_producer_set_coarse_timestamps", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        p.set_timestamps(if coarse {
            Timestamps::Coarse
        } else {
            Timestamps::Precise
        });
        Ok(())
    })
}

/// Borrows the producer of a handle argument.
///
/// # Safety
/// `p` is NULL or a live producer handle that only this thread uses for `'a`.
unsafe fn producer_mut<'a>(p: *mut shmq_producer) -> Result<&'a mut Producer, Failure> {
    non_null(p, "producer")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle used by only this thread for
    // 'a, so a unique borrow is sound.
    Ok(unsafe { &mut (*p).producer })
}
