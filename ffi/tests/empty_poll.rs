//! An empty poll is an expected outcome (`SHMQ_TIMEOUT`), made in a loop by every idle
//! consumer: it must not touch the heap, its last-error message included. A counting global
//! allocator counts the allocations the calling thread makes during the polls.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ffi::CString;
use std::ptr::null_mut;

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

/// The system allocator, counting the allocations of threads that ask it to.
struct Counting;

thread_local! {
    // Const-initialised `Cell`s: reading them never allocates (no lazy initialisation).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: a thread being torn down has no slots any more; it counts nothing.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is passed on unchanged to the system allocator; the counting touches
// only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How many allocations this thread makes while running `f`.
fn allocations(f: impl FnOnce()) -> usize {
    COUNT.set(0);
    COUNTING.set(true);
    f();
    COUNTING.set(false);
    COUNT.get()
}

fn options() -> shmq_options {
    let mut o = std::mem::MaybeUninit::<shmq_options>::uninit();
    // SAFETY: `o` is writable; on SHMQ_OK it is fully initialised.
    assert_eq!(unsafe { shmq_options_default(o.as_mut_ptr()) }, SHMQ_OK);
    // SAFETY: initialised above.
    let mut o = unsafe { o.assume_init() };
    o.capacity_bytes = 1 << 16;
    o.max_message_bytes = 1024;
    o
}

#[test]
fn an_empty_poll_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let path = cpath(&dir.path().join("q"));
    let group = CString::new("g").unwrap();
    let (mut q, mut c) = (null_mut(), null_mut());
    // SAFETY: valid C strings, initialised options, writable outs.
    unsafe {
        assert_eq!(shmq_create(path.as_ptr(), &options(), &mut q), SHMQ_OK);
        assert_eq!(shmq_consumer_new(q, group.as_ptr(), &mut c), SHMQ_OK);
    }
    let mut msg = std::mem::MaybeUninit::<shmq_message>::uninit();
    // SAFETY: live consumer used by this thread only, writable out.
    let mut poll = |timeout_ns| unsafe { shmq_poll(c, timeout_ns, msg.as_mut_ptr()) };
    // The counter counts: a failure with a message made for it allocates.
    // SAFETY: live consumer; offset 5 was never polled, so this is SHMQ_EINVAL.
    let n = allocations(|| assert_eq!(unsafe { shmq_commit(c, 5) }, SHMQ_EINVAL));
    assert!(n > 0, "a formatted last-error message allocates");
    let n = allocations(|| {
        for _ in 0..1000 {
            assert_eq!(poll(0), SHMQ_TIMEOUT);
        }
        // A poll that sleeps (on the futex) and wakes at its timeout.
        for _ in 0..3 {
            assert_eq!(poll(20_000_000), SHMQ_TIMEOUT);
        }
    });
    assert_eq!(n, 0, "empty polls allocated {n} times");
    assert_eq!(
        last_error(),
        "shmq_poll: no message within the timeout",
        "the message is still set"
    );
    // SAFETY: live handles, freed once.
    unsafe {
        shmq_consumer_free(c);
        shmq_close(q);
    }
}

#[test]
fn an_empty_topic_poll_does_not_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let path = cpath(&dir.path().join("t.topic"));
    let group = CString::new("g").unwrap();
    let (mut t, mut c) = (null_mut(), null_mut());
    // SAFETY: valid C strings, initialised options, writable outs.
    unsafe {
        assert_eq!(
            shmq_topic_create(path.as_ptr(), 2, &options(), &mut t),
            SHMQ_OK
        );
        assert_eq!(shmq_topic_consumer_new(t, group.as_ptr(), &mut c), SHMQ_OK);
    }
    let mut msg = std::mem::MaybeUninit::<shmq_topic_message>::uninit();
    // SAFETY: live consumer used by this thread only, writable out.
    let mut poll = |timeout_ns| unsafe { shmq_topic_poll(c, timeout_ns, msg.as_mut_ptr()) };
    // The first polls take the partitions (a rebalance may allocate); then it is steady.
    for _ in 0..3 {
        assert_eq!(poll(0), SHMQ_TIMEOUT, "{}", last_error());
    }
    let n = allocations(|| {
        for _ in 0..1000 {
            assert_eq!(poll(0), SHMQ_TIMEOUT);
        }
    });
    assert_eq!(n, 0, "empty topic polls allocated {n} times");
    assert_eq!(
        last_error(),
        "shmq_topic_poll: no message within the timeout"
    );
    // SAFETY: live handles, freed once.
    unsafe {
        shmq_topic_consumer_free(c);
        shmq_topic_close(t);
    }
}
