//! C ABI for shmq: builds `libshmq.so` / `libshmq.a`, described by `include/shmq.h` (generated
//! from this crate by cbindgen; see `cbindgen.toml`).
//!
//! Conventions shared by every function (also stated in the header):
//!
//! * Every function returns a [`shmq_status`] (except the few that return a string); `SHMQ_OK`
//!   is 0, the positive statuses (`SHMQ_TIMEOUT`, `SHMQ_FULL`, `SHMQ_LAGGED`) are expected
//!   outcomes to branch on, the negative ones are errors. Every non-OK status also sets the
//!   calling thread's last-error message ([`shmq_last_error`]).
//! * Out-parameters are written only when the function returns `SHMQ_OK`, except the offset
//!   (and partition) of a publish that returns `SHMQ_ENOTDURABLE`: that record was published.
//! * A NULL handle or required pointer, or an out-of-range argument, gives `SHMQ_EINVAL`.
//! * Timeouts are `int64_t` nanoseconds: `-1` waits forever, `0` never waits, other negative
//!   values are `SHMQ_EINVAL`.
//! * No panic crosses the ABI: a Rust panic inside a call is caught and reported as
//!   `SHMQ_EINTERNAL` with the panic message; the handle it happened on should then only be
//!   freed.
//! * Handles are freed exactly once with their own free function (freeing NULL is a no-op);
//!   using a handle after freeing it, or freeing it twice, is undefined behaviour.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_camel_case_types)]

mod consumer;
mod error;
mod idempotent;
mod inbox;
mod producer;
mod queue;
mod status;
mod topic;
mod transaction;
mod version;
mod work;

use std::ffi::{c_char, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

pub use consumer::{
    shmq_batch_fn, shmq_commit, shmq_consumer, shmq_consumer_free, shmq_consumer_new,
    shmq_consumer_subscribe, shmq_message, shmq_poll, shmq_poll_batch, shmq_seek,
    SHMQ_SUBSCRIBE_LATEST, SHMQ_SUBSCRIBE_NON_GATING,
};
pub use error::shmq_last_error;
#[doc(hidden)]
pub use error::{guard, Failure};
pub use idempotent::{
    shmq_idempotent_next_sequence, shmq_idempotent_producer, shmq_idempotent_producer_free,
    shmq_idempotent_producer_new, shmq_idempotent_publish,
};
pub use inbox::{
    shmq_admit, shmq_inbox, shmq_inbox_begin, shmq_inbox_delete, shmq_inbox_free, shmq_inbox_info,
    shmq_inbox_new, shmq_mark, shmq_mark_done, shmq_mark_free, shmq_queue_inbox_info,
};
pub use producer::{
    shmq_producer, shmq_producer_free, shmq_producer_new, shmq_producer_set_coarse_timestamps,
    shmq_publish, shmq_publish_batch, shmq_publish_scheduled, shmq_record, shmq_wait_durable,
};
pub use queue::{
    shmq_close, shmq_create, shmq_durability, shmq_full_policy, shmq_open, shmq_open_trusting,
    shmq_options, shmq_options_default, shmq_prefault, shmq_queue, SHMQ_TRUST_NONE,
};
pub use status::{shmq_status, shmq_status_name};
pub use topic::{
    shmq_topic, shmq_topic_close, shmq_topic_commit, shmq_topic_consumer, shmq_topic_consumer_free,
    shmq_topic_consumer_join, shmq_topic_consumer_new, shmq_topic_consumer_subscribe,
    shmq_topic_create, shmq_topic_grow, shmq_topic_message, shmq_topic_open,
    shmq_topic_open_trusting, shmq_topic_partition_for_key, shmq_topic_partitions, shmq_topic_poll,
    shmq_topic_prefault, shmq_topic_producer, shmq_topic_producer_free, shmq_topic_producer_new,
    shmq_topic_publish, shmq_topic_publish_keyed, shmq_topic_publish_to,
};
pub use transaction::{
    shmq_transactional_producer_free, shmq_transactional_producer_new, shmq_txn, shmq_txn_abort,
    shmq_txn_commit, shmq_txn_commit_consumed, shmq_txn_pending, shmq_txn_place, shmq_txn_send,
    shmq_txn_send_keyed, shmq_txn_send_to,
};
pub use version::{shmq_format_version, shmq_version};
pub use work::{
    shmq_backoff, shmq_dead_letter, shmq_dead_letter_parse, shmq_dead_reason, shmq_job,
    shmq_pending, shmq_pending_state, shmq_ticket, shmq_work_ack, shmq_work_extend,
    shmq_work_group_info, shmq_work_info, shmq_work_nack, shmq_work_options,
    shmq_work_options_default, shmq_work_pending, shmq_work_poll, shmq_work_reject,
    shmq_work_start, shmq_worker, shmq_worker_free, shmq_worker_new, SHMQ_NACK_BACKOFF,
};

/// Converts a C timeout (`-1` forever, `>= 0` nanoseconds) to the Rust API's.
pub(crate) fn timeout(ns: i64) -> Result<Option<Duration>, Failure> {
    match ns {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(Duration::from_nanos(n as u64))),
        n => Err(Failure::einval(format!(
            "timeout_ns {n} is invalid: use -1 (forever), 0 (no wait) or a positive duration"
        ))),
    }
}

/// Borrows a NUL-terminated C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a CStr, Failure> {
    if p.is_null() {
        return Err(Failure::einval(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller guarantees a valid NUL-terminated string for 'a.
    Ok(unsafe { CStr::from_ptr(p) })
}

/// Borrows a group-name argument: a NUL-terminated UTF-8 string.
///
/// # Safety
/// As for [`c_str`].
pub(crate) unsafe fn group_name<'a>(p: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { c_str(p, "group") }?
        .to_str()
        .map_err(|_| Failure::einval("group name is not valid UTF-8"))
}

/// The body of every `*_free` / `*_close` function: drops the handle `p` made by
/// `Box::into_raw` (NULL: no-op), under [`error::guard`] as `function`.
///
/// # Safety
/// `p` is NULL or a live handle made by `Box::into_raw`, freed exactly once and not in use by
/// another thread during or after this call.
pub(crate) unsafe fn free_handle<T>(function: &str, p: *mut T) {
    error::guard(function, || {
        if !p.is_null() {
            // SAFETY: the caller passes a live handle made by Box::into_raw, exactly once.
            drop(unsafe { Box::from_raw(p) });
        }
        Ok(())
    });
}

/// The end of every `*_new` / `*_open` / `*_create` function: moves `value` into a new handle
/// (freed by its `*_free` function with [`free_handle`]) and stores it in `*out`.
///
/// # Safety
/// `out` is non-NULL (checked by the caller before any work) and writable.
pub(crate) unsafe fn put_handle<T>(out: *mut *mut T, value: T) {
    let handle = Box::into_raw(Box::new(value));
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { out.write(handle) };
}

/// The body of every function that makes a handle of a file or directory at `path` (`shmq_create`,
/// `shmq_open`, their topic forms), run under [`error::guard`] as `function`: checks `path` and
/// `out`, then stores the handle `make` returns for the path in `*out`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
pub(crate) unsafe fn path_handle<T>(
    function: &str,
    path: *const c_char,
    out: *mut *mut T,
    make: impl FnOnce(&Path) -> Result<T, Failure>,
) -> status::shmq_status {
    error::guard(function, || {
        // SAFETY: the caller guarantees `path` is NULL or a valid C string for this call.
        let path = unsafe { c_str(path, "path") }?;
        non_null(out, "out")?;
        let handle = make(Path::new(OsStr::from_bytes(path.to_bytes())))?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { put_handle(out, handle) };
        Ok(())
    })
}

/// Borrows `len` bytes at `p` (NULL allowed when `len` is 0).
///
/// # Safety
/// `p` is NULL with `len == 0`, or points to `len` readable bytes unchanged for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    non_null(p, &format!("{what} (with a length > 0)"))?;
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes `v` to `p` unless it is NULL.
///
/// # Safety
/// `p` is NULL or writable.
pub(crate) unsafe fn write_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { p.write(v) };
    }
}

/// The end of every publish: stores the offset of a published record in `*offset_out` (when it
/// is not NULL) on success, and also on `NotDurable` (`SHMQ_ENOTDURABLE`), whose record was
/// published too; returns the failure, if any.
///
/// # Safety
/// `offset_out` is NULL or writable.
pub(crate) unsafe fn published(
    result: shmq_core::Result<u64>,
    offset_out: *mut u64,
) -> Result<(), Failure> {
    let offset = match &result {
        Ok(offset) | Err(shmq_core::Error::NotDurable { offset, .. }) => Some(*offset),
        Err(_) => None,
    };
    if let Some(offset) = offset {
        // SAFETY: NULL or writable per the caller's contract.
        unsafe { write_opt(offset_out, offset) };
    }
    result.map(drop).map_err(Failure::from)
}

/// Reads a caller's struct that starts with its `size` (`shmq_options`, `shmq_work_options`)
/// through `R`, its layout with every enum as a plain integer: fields past the caller's `size`
/// keep their values in `defaults`, bytes past `R` are ignored, and a `size` below `min` is
/// `SHMQ_EINVAL` naming `what` and the function `init` that sets it.
///
/// # Safety
/// `p` is non-NULL and points to at least `size` readable bytes, where `size` is the `usize`
/// at `p`; every field of `R` is an integer or a raw pointer (any bytes are a valid value).
pub(crate) unsafe fn read_sized<R: Copy>(
    p: *const u8,
    defaults: R,
    min: usize,
    what: &str,
    init: &str,
) -> Result<R, Failure> {
    // SAFETY: `size` is the first field, and the caller guarantees `p` points to a struct that
    // has at least it; read as a plain integer, unaligned in case the caller's is not.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    if size < min {
        return Err(Failure::einval(format!(
            "{what}->size is {size}, expected at least {min}: initialise the struct with {init}"
        )));
    }
    let mut raw = defaults;
    let n = size.min(std::mem::size_of::<R>());
    // SAFETY: the caller guarantees `size` readable bytes at `p` and `n <= size`; `raw` is a
    // local of at least `n` bytes whose fields take any bytes as valid values (padding may
    // hold anything). The regions cannot overlap.
    unsafe { std::ptr::copy_nonoverlapping(p, (&mut raw as *mut R).cast::<u8>(), n) };
    Ok(raw)
}

/// Checks that a required pointer argument is not NULL.
pub(crate) fn non_null<T>(p: *const T, what: &str) -> Result<(), Failure> {
    if p.is_null() {
        Err(Failure::einval(format!("{what} is NULL")))
    } else {
        Ok(())
    }
}
