//! The background flusher of `Batch` queues: it flushes the committed prefix at least every
//! `max_delay`, so a record that no later publish pushes out still reaches the disk in time,
//! and at once when a publisher of this process finds `max_bytes` unflushed and wakes it
//! ([`Flusher::nudge`]). The publisher does not flush itself: it goes on writing while the
//! flush runs on this thread, and pays neither the leader lock's `fcntl` calls nor the wait
//! for the device (the wait for room at the synced cursor still flushes, `producer.rs`).
//!
//! It runs while a producer of this process exists (each [`Producer`](crate::Producer) holds
//! the handle) and makes one last flush when the last one is dropped. Every process that
//! publishes runs one. They share the leader lock, and a flusher that finds nothing new to
//! flush does nothing. It leads flushes through a description of the file of its own; in a
//! child forked from a process with a flusher, the parent's flusher thread does not exist, so
//! the child's first producer starts its own (and the stale handle is never joined).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::lease::{self, OwnFd};
use crate::queue::mapped::MappedQueue;
use crate::runtime::thread::{self, Thread};

/// Handle of a running flusher; dropping the last one stops it.
pub(crate) struct Flusher {
    control: Arc<Control>,
    thread: Option<Thread>,
    /// The description the thread flushes through; also tells whether this process made it.
    via: Arc<OwnFd>,
}

impl Flusher {
    /// The flusher of `shared`, kept in `slot` (the open file's), started if it does not run
    /// in this process yet.
    pub(crate) fn get(
        shared: &Arc<MappedQueue>,
        slot: &FlusherSlot,
        every: Duration,
    ) -> Result<Arc<Flusher>> {
        // The slot's mutex is only ever taken inside `lease::fork_safe`, so no fork happens
        // while it is held and a child never inherits it locked. Nothing slow runs under it.
        let running = |slot: &FlusherSlot| {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.upgrade().filter(|f| f.via.current())
        };
        if let Some(f) = lease::fork_safe(|| running(slot)) {
            return Ok(f);
        }
        let io = |op, source| Error::Io {
            path: shared.path.clone(),
            op,
            source,
        };
        let via = Arc::new(
            OwnFd::open(&shared.file, &shared.path)
                .map_err(|e| io("open a descriptor to flush through", e))?,
        );
        let control = Arc::new(Control::default());
        let thread = {
            let (shared, control, via) = (shared.clone(), control.clone(), via.clone());
            thread::spawn(c"shmq-flusher", move || run(&shared, &control, every, &via))
                .map_err(|e| io("start the flusher thread", e))?
        };
        let ours = Arc::new(Flusher {
            control,
            thread: Some(thread),
            via,
        });
        // Another thread may have started one meanwhile: keep the first, and stop ours
        // outside the lock (dropping it closes a descriptor, which takes the registry).
        let kept = lease::fork_safe(|| match running(slot) {
            Some(theirs) => theirs,
            None => {
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(&ours);
                ours.clone()
            }
        });
        drop(ours);
        Ok(kept)
    }
}

/// What a flusher's handles tell its thread.
#[derive(Default)]
struct Control {
    /// Set when the last handle is dropped: one last flush, then the thread returns.
    stop: Mutex<bool>,
    cond: Condvar,
    /// Set by a publisher that found `max_bytes` unflushed ([`Flusher::nudge`]), cleared by the
    /// thread before the flush it asked for: publishers of one batch notify at most once.
    asked: AtomicBool,
}

impl Flusher {
    /// Asks the thread to flush now, not at the end of its `max_delay`: a publisher found a
    /// full batch. The publisher goes on writing while the thread flushes.
    pub(crate) fn nudge(&self) {
        let c = &*self.control;
        // A load first: while a request is pending (the common case under load) a publish
        // pays one load; the swap makes one notifier per request. Relaxed: the flag carries no
        // data (the flush reads the records through the ring's own SYNC T and SYNC C), and
        // the thread checks it under `stop`'s mutex, which this call takes after setting it,
        // so the wake-up is not lost.
        if c.asked.load(Ordering::Relaxed) || c.asked.swap(true, Ordering::Relaxed) {
            return;
        }
        let _stop = c.stop.lock().unwrap_or_else(|e| e.into_inner());
        c.cond.notify_one();
    }
}

fn run(shared: &MappedQueue, control: &Control, every: Duration, via: &OwnFd) {
    loop {
        let stopped = {
            let stop = control.stop.lock().unwrap_or_else(|e| e.into_inner());
            // `_while` checks first: a stop or a request that came before the wait is not
            // missed. The mutex is not held during the flush, so a nudge never waits for one.
            let (stop, _) = control
                .cond
                .wait_timeout_while(stop, every, |stop| {
                    // Relaxed: see `nudge`; the mutex orders the flag with the wait.
                    !*stop && !control.asked.load(Ordering::Relaxed)
                })
                .unwrap_or_else(|e| e.into_inner());
            *stop
        };
        // Cleared before the flush: a batch that fills up during it asks for the next one. A
        // request that raced with the clear is either covered by this flush or made again by
        // the next publish, which still finds the batch full; `max_delay` bounds it anyway.
        // Relaxed: see `nudge`.
        control.asked.store(false, Ordering::Relaxed);
        // Errors are left to the confirms (`wait_durable`) whose promise they break. A failed
        // flush poisons the file, and every later round fails at once.
        if shared.durable().0 < shared.ring.tail().0 {
            let _ = shared.try_flush(via);
        }
        if stopped {
            return;
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if !self.via.current() {
            // A forked child's copy: the thread is the parent's and does not run here, and
            // its mutex may have been held at the fork. Touch neither (dropping a `Thread`
            // calls nothing).
            return;
        }
        let c = &*self.control;
        *c.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        c.cond.notify_all();
        if let Some(t) = self.thread.take() {
            t.join();
        }
    }
}

/// Where an open queue file keeps the Batch flusher of this process while a producer holds it
/// (in its `Queue`, shared by the clones).
pub(crate) type FlusherSlot = Mutex<Weak<Flusher>>;
