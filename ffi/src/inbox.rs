//! `shmq_inbox`: a de-duplication filter next to a queue (`Queue::inbox`): begin a key, record
//! its effect done or release it, the inbox's counters, and its removal.
//!
//! A key held by this process is a `shmq_mark`: `shmq_mark_done` records it done and frees
//! the mark, `shmq_mark_free` releases the key (the next begin of it takes it again).

use std::ffi::c_char;

use shmq_core::{Admit, Inbox, InboxInfo, InboxOptions, Mark};

use crate::error::{guard, Failure};
use crate::queue::{queue_ref, shmq_queue};
use crate::status::shmq_status;
use crate::{bytes, c_str, non_null};

/// A handle on an inbox (opaque), made by `shmq_inbox_new` and freed by `shmq_inbox_free`.
/// Any number of handles, in any processes, share an inbox.
///
/// Thread safety: use a handle from one thread at a time (it may move between threads).
/// Lifetime: it keeps the inbox file mapped, so it may outlive the `shmq_queue` it was made
/// from.
pub struct shmq_inbox {
    inbox: Inbox,
}

/// A key this process holds (opaque), made by `shmq_inbox_begin`: apply the key's effect,
/// then `shmq_mark_done`; or `shmq_mark_free` to release the key. Either call frees the mark,
/// exactly once. A mark may outlive its `shmq_inbox` and move between threads.
pub struct shmq_mark {
    mark: Mark,
}

/// What `shmq_inbox_begin` found for a key.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_admit {
    /// The key is new (or was released, or its holder died): this process holds it now, as
    /// the mark stored in `*mark_out`.
    SHMQ_ADMIT_FRESH = 0,
    /// The key's effect was recorded done: skip it.
    SHMQ_ADMIT_DONE = 1,
    /// Another live process (or another mark of this one) holds the key: retry later.
    SHMQ_ADMIT_BUSY = 2,
}

/// An inbox's counters and fill (`shmq_queue_inbox_info`): totals since it was created.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct shmq_inbox_info {
    /// The window (keys).
    pub window: u32,
    /// Keys in the window now.
    pub fill: u64,
    /// Keys admitted since creation.
    pub admitted: u64,
    /// Keys recorded done, of those in the window.
    pub done: u64,
    /// Keys held by a live process now.
    pub held: u64,
    /// Begins that found their key done.
    pub duplicates: u64,
    /// Begins that found their key held by a live process.
    pub busy: u64,
    /// Keys taken again after their holder released them or died.
    pub retaken: u64,
    /// Keys evicted from the window by later ones.
    pub evicted: u64,
}

impl shmq_inbox_info {
    fn of(i: &InboxInfo) -> shmq_inbox_info {
        shmq_inbox_info {
            window: i.window,
            fill: i.fill,
            admitted: i.admitted,
            done: i.done,
            held: i.held,
            duplicates: i.duplicates,
            busy: i.busy,
            retaken: i.retaken,
            evicted: i.evicted,
        }
    }
}

/// Borrows an inbox-name argument: a NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn inbox_name<'a>(p: *const c_char) -> Result<&'a str, Failure> {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { c_str(p, "name") }?
        .to_str()
        .map_err(|_| Failure::einval("inbox name is not valid UTF-8"))
}

/// Opens inbox `name` (NUL-terminated: 1 to 64 ASCII letters, digits, `.`, `_`, `-`) of
/// `queue` and stores the handle in `*out`, creating the inbox with a window of `window`
/// keys (a power of two from 64 to 2^20; 0: 4096) if it does not exist; an existing inbox
/// keeps its window. `SHMQ_EINVAL` for a bad name or window, `SHMQ_ECORRUPT` for a damaged
/// inbox file.
///
/// The caller owns `*out` and frees it with `shmq_inbox_free`.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `name` is NULL or a NUL-terminated string; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_inbox_new(
    queue: *const shmq_queue,
    name: *const c_char,
    window: u32,
    out: *mut *mut shmq_inbox,
) -> shmq_status {
    guard("shmq_inbox_new", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `name` is NULL or a valid C string for this call.
        let name = unsafe { inbox_name(name) }?;
        non_null(out, "out")?;
        let options = match window {
            0 => InboxOptions::default(),
            window => InboxOptions { window },
        };
        let inbox = queue.inbox(name, &options)?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { crate::put_handle(out, shmq_inbox { inbox }) };
        Ok(())
    })
}

/// Frees an inbox handle (NULL: no-op). Marks made from it stay valid.
///
/// # Safety
/// `inbox` is NULL or a live inbox handle, freed exactly once and not in use by another
/// thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_inbox_free(inbox: *mut shmq_inbox) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_inbox_free", inbox) }
}

/// Looks up the `key_len` bytes at `key` (at most 64; NULL allowed when 0) and stores what it
/// found in `*admit_out`: `SHMQ_ADMIT_FRESH` with the key's mark in `*mark_out` (the caller
/// owns it: `shmq_mark_done` or `shmq_mark_free`), `SHMQ_ADMIT_DONE` or `SHMQ_ADMIT_BUSY`
/// (then `*mark_out` is set to NULL). `SHMQ_EINVAL` for a longer key, `SHMQ_EBUSY` when every
/// key of the window is held by a live process, `SHMQ_EFORKED` in a child forked after the
/// handle was made.
///
/// # Safety
/// `inbox` is NULL or a live inbox handle not used concurrently by another thread; `key` is
/// NULL (with `key_len` 0) or points to `key_len` readable bytes; `admit_out` and `mark_out`
/// are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_inbox_begin(
    inbox: *mut shmq_inbox,
    key: *const u8,
    key_len: usize,
    admit_out: *mut shmq_admit,
    mark_out: *mut *mut shmq_mark,
) -> shmq_status {
    guard("shmq_inbox_begin", || {
        non_null(inbox, "inbox")?;
        // SAFETY: the caller guarantees `key_len` readable bytes at `key` (or NULL and 0).
        let key = unsafe { bytes(key, key_len, "key") }?;
        non_null(admit_out, "admit_out")?;
        non_null(mark_out, "mark_out")?;
        // SAFETY: non-NULL, and the caller guarantees a live handle used by only this thread
        // for this call, so a unique borrow is sound.
        let inbox = unsafe { &mut (*inbox).inbox };
        let (admit, mark) = match inbox.begin(key)? {
            Admit::Fresh(mark) => (
                shmq_admit::SHMQ_ADMIT_FRESH,
                Box::into_raw(Box::new(shmq_mark { mark })),
            ),
            Admit::Done => (shmq_admit::SHMQ_ADMIT_DONE, std::ptr::null_mut()),
            Admit::Busy => (shmq_admit::SHMQ_ADMIT_BUSY, std::ptr::null_mut()),
        };
        // SAFETY: both non-NULL (checked) and writable per the caller's contract.
        unsafe {
            admit_out.write(admit);
            mark_out.write(mark);
        }
        Ok(())
    })
}

/// Records the mark's key done (on a `SHMQ_DURABILITY_SYNC` queue, on disk when this returns)
/// and frees the mark, whatever the status. `SHMQ_EFORKED` in a child forked after the mark
/// was made (the parent's hold is left alone), `SHMQ_ELEASE` if the key was no longer this
/// mark's (the file was written outside the protocol): nothing was recorded.
///
/// # Safety
/// `mark` is NULL or a live mark, freed by this call (or `shmq_mark_free`) exactly once and
/// not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_mark_done(mark: *mut shmq_mark) -> shmq_status {
    guard("shmq_mark_done", || {
        non_null(mark, "mark")?;
        // SAFETY: a live mark made by Box::into_raw in `shmq_inbox_begin`, freed here once.
        let mark = unsafe { Box::from_raw(mark) };
        mark.mark.done()?;
        Ok(())
    })
}

/// Releases the mark's key without recording it done (the next begin of it, here or in any
/// process, takes it again) and frees the mark (NULL: no-op).
///
/// # Safety
/// `mark` is NULL or a live mark, freed exactly once and not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_mark_free(mark: *mut shmq_mark) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_mark_free", mark) }
}

/// Stores the counters and fill of inbox `name` of `queue` in `*out`. `SHMQ_ENOENT` if the
/// queue has no such inbox.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `name` is NULL or a NUL-terminated string; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_queue_inbox_info(
    queue: *const shmq_queue,
    name: *const c_char,
    out: *mut shmq_inbox_info,
) -> shmq_status {
    guard("shmq_queue_inbox_info", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `name` is NULL or a valid C string for this call.
        let name = unsafe { inbox_name(name) }?;
        non_null(out, "out")?;
        let info = shmq_inbox_info::of(&queue.inbox_info(name)?);
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Removes inbox `name` of `queue`. `SHMQ_ENOENT` if there is none, `SHMQ_EBUSY` while a live
/// process holds one of its keys.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shmq_inbox_delete(
    queue: *const shmq_queue,
    name: *const c_char,
) -> shmq_status {
    guard("shmq_inbox_delete", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `name` is NULL or a valid C string for this call.
        let name = unsafe { inbox_name(name) }?;
        queue.delete_inbox(name)?;
        Ok(())
    })
}
