//! The library's background threads (the `Batch` flusher, the file watcher, the async waker),
//! started as plain pthreads rather than through `std::thread`.
//!
//! Why: shmq is used in processes that fork, and a child forked from a multi-threaded process
//! inherits every lock exactly as it was at the fork. `std::thread` keeps process-wide locks of
//! its own that a new thread takes while it starts (the thread-info table of its stack-overflow
//! handler, taken before the thread's closure runs). A fork in that instant leaves the lock held
//! in the child, and the child's own first `std::thread` spawn then waits for ever: a producer
//! made in a forked child of a process that was starting a flusher hung (found by
//! `tests/liveness.rs`, a fork while another thread starts and stops flushers). A pthread started
//! here takes no lock of the library's or of std's. It also keeps no thread of shmq's known to
//! std, which C hosts (valgrind's leak check) and forking hosts prefer.
//!
//! What the threads lose: std's guard page message on a stack overflow (the kernel's guard page
//! still stops it, as a SIGSEGV) and a name in `std::thread::current()`; the kernel name is set.

use std::ffi::CStr;
use std::io;

/// A running background thread: [`join`](Thread::join) or [`detach`](Thread::detach) it.
/// Dropping it without either forgets it and calls nothing, which is right (and the only
/// right thing) for the copy of a handle a forked child inherited: its thread does not exist
/// in the child.
pub(crate) struct Thread {
    id: libc::pthread_t,
}

/// Starts a thread named `name` (at most 15 bytes, as the kernel keeps) running `body`.
///
/// The new thread moves `body` onto its own stack and frees the box that carried it before it
/// runs it, so a long-running thread keeps no heap block that only it refers to: a forked child
/// (where the thread does not exist) leaks nothing that a leak checker would report.
pub(crate) fn spawn<F>(name: &CStr, body: F) -> io::Result<Thread>
where
    F: FnOnce() + Send + 'static,
{
    let arg = Box::into_raw(Box::new(body));
    let mut id: libc::pthread_t = 0;
    // SAFETY: `start::<F>` is an `extern "C"` function that lives for the whole program; it
    // takes ownership of `arg` (a `Box<F>` leaked just above) exactly once, and only if the
    // thread was created.
    let rc = unsafe { libc::pthread_create(&mut id, std::ptr::null(), start::<F>, arg.cast()) };
    if rc != 0 {
        // SAFETY: no thread was created, so `arg` is still ours and is freed only here.
        drop(unsafe { Box::from_raw(arg) });
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `id` is the thread just created (joinable until joined or detached, which only
    // `Thread` does); `name` is NUL-terminated. A name that is too long is refused (ERANGE)
    // and the thread keeps its inherited name, which is harmless.
    unsafe { libc::pthread_setname_np(id, name.as_ptr()) };
    Ok(Thread { id })
}

extern "C" fn start<F>(arg: *mut libc::c_void) -> *mut libc::c_void
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: `arg` is the `Box<F>` that `spawn::<F>` leaked for this thread alone.
    let body = unsafe { *Box::from_raw(arg.cast::<F>()) };
    // No panic may unwind out of a thread's start routine; the bodies handle their own errors,
    // so a panic here is a bug that ends only this thread.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    std::ptr::null_mut()
}

impl Thread {
    /// Waits until the thread has returned.
    pub(crate) fn join(self) {
        // SAFETY: `self.id` is joinable: `join` and `detach` take the handle by value, so
        // neither ran on it before. A thread never joins itself here: callers join from
        // another thread (see `watch::released`).
        unsafe { libc::pthread_join(self.id, std::ptr::null_mut()) };
    }

    /// Lets the thread run to its end on its own; its resources are freed when it returns.
    pub(crate) fn detach(self) {
        // SAFETY: `self.id` is joinable and used only here (see `join`).
        unsafe { libc::pthread_detach(self.id) };
    }
}
