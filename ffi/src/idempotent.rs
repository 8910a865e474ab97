//! `shmq_idempotent_producer`: a producer with a stable id whose records carry sequence
//! numbers, so that a retry of a record already in the queue returns its offset instead of
//! publishing a copy, also after the process was killed and the id opened again.

use std::ffi::c_char;

use shmq_core::{IdOptions, IdempotentProducer, PublishOutcome};

use crate::error::{guard, Failure};
use crate::queue::{queue_ref, shmq_queue};
use crate::status::shmq_status;
use crate::{c_str, non_null, timeout, write_opt};

/// An idempotent producer (opaque): holds its producer id, and one of the queue's producer
/// slots, until freed with `shmq_idempotent_producer_free`. One holder per id at a time, in
/// every process.
///
/// Thread safety: use it from one thread at a time (it may move between threads). Lifetime:
/// it keeps the queue mapping alive, so it may outlive the `shmq_queue` it was made from.
pub struct shmq_idempotent_producer {
    producer: IdempotentProducer,
}

/// Takes producer id `id` (1 to 64 bytes of printable UTF-8) on `queue` and stores the handle
/// in `*out`; the caller frees it with `shmq_idempotent_producer_free`. `slots` and `window`
/// (0: the defaults, 64 and 1024) are used only if this call creates the queue's producer-id
/// file. `SHMQ_EBUSY` while another live handle holds the id (or every id slot is taken),
/// `SHMQ_EINVAL` for a bad id or settings, `SHMQ_ECORRUPT` for a damaged producer-id file.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `id` is NULL or a NUL-terminated string; `out` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_idempotent_producer_new(
    queue: *const shmq_queue,
    id: *const c_char,
    slots: u32,
    window: u32,
    out: *mut *mut shmq_idempotent_producer,
) -> shmq_status {
    guard("shmq_idempotent_producer_new", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `id` is NULL or a valid C string for this call.
        let id = unsafe { c_str(id, "id") }?
            .to_str()
            .map_err(|_| Failure::einval("id is not valid UTF-8"))?;
        non_null(out, "out")?;
        let defaults = IdOptions::default();
        let options = IdOptions {
            slots: if slots == 0 { defaults.slots } else { slots },
            window: if window == 0 { defaults.window } else { window },
        };
        let producer = queue.idempotent_producer(id, &options)?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { crate::put_handle(out, shmq_idempotent_producer { producer }) };
        Ok(())
    })
}

/// Publishes the `len` bytes at `data` as sequence number `seq` of the producer's id, unless
/// `seq` was published before. On `SHMQ_OK` it stores the record's offset in `*offset_out` and
/// in `*duplicate_out` whether `seq` was published before (then nothing was published now and
/// the offset is the one it got); either pointer may be NULL. On `SHMQ_ENOTDURABLE` the record
/// was published at `*offset_out` (not a duplicate) but is not on disk; a retry of it is a
/// duplicate.
///
/// Other outcomes as `shmq_publish`, and `SHMQ_EINVAL` for a `seq` older than the id's window
/// (nobody can tell whether it was published: nothing is) or of 2^64 - 1, `SHMQ_EFORKED` in a
/// child forked after the handle was made.
///
/// # Safety
/// `producer` is NULL or a live handle not used concurrently by another thread; `data` is NULL
/// or points to `len` readable bytes; `offset_out` and `duplicate_out` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_idempotent_publish(
    producer: *mut shmq_idempotent_producer,
    seq: u64,
    data: *const u8,
    len: usize,
    timeout_ns: i64,
    offset_out: *mut u64,
    duplicate_out: *mut bool,
) -> shmq_status {
    guard("shmq_idempotent_publish", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        // SAFETY: the caller guarantees `len` readable bytes at `data`, unchanged for the call.
        let payload = unsafe { crate::bytes(data, len, "data") }?;
        p.set_timeout(timeout(timeout_ns)?);
        let outcome = p.publish(seq, payload);
        if let Ok(o) = &outcome {
            // SAFETY: NULL or writable per the caller's contract.
            unsafe { write_opt(duplicate_out, matches!(o, PublishOutcome::Duplicate(_))) };
        }
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { crate::published(outcome.map(|o| o.offset()), offset_out) }
    })
}

/// Stores in `*out` the sequence number after the highest one published under the producer's
/// id: where a restarted producer resumes (0 for a new id).
///
/// # Safety
/// `producer` is NULL or a live handle not used concurrently by another thread; `out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_idempotent_next_sequence(
    producer: *mut shmq_idempotent_producer,
    out: *mut u64,
) -> shmq_status {
    guard("shmq_idempotent_next_sequence", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let p = unsafe { producer_mut(producer) }?;
        non_null(out, "out")?;
        // SAFETY: checked non-NULL, writable per the caller's contract.
        unsafe { out.write(p.next_sequence()) };
        Ok(())
    })
}

/// Frees an idempotent producer (NULL: no-op): its id is free for the next holder.
///
/// # Safety
/// `producer` is NULL or a live handle, freed exactly once and not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_idempotent_producer_free(producer: *mut shmq_idempotent_producer) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_idempotent_producer_free", producer) }
}

/// Borrows the idempotent producer behind `p`.
///
/// # Safety
/// `p` is NULL or a live handle used by only this thread for `'a`.
unsafe fn producer_mut<'a>(
    p: *mut shmq_idempotent_producer,
) -> Result<&'a mut IdempotentProducer, Failure> {
    non_null(p, "producer")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle used by only this thread for
    // 'a, so a unique borrow is sound.
    Ok(unsafe { &mut (*p).producer })
}
