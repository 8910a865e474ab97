//! The background flusher of `Batch` queues: it flushes the committed prefix at least every
//! `max_delay`, so a record that no later publish pushes out still reaches the disk in time.
//!
//! It runs while a producer of this process exists (each [`Producer`](crate::Producer) holds
//! the handle) and makes one last flush when the last one is dropped. Every process that
//! publishes runs one. They share the leader lock, and a flusher that finds nothing new to
//! flush does nothing. It leads flushes through a description of the file of its own; in a
//! child forked from a process with a flusher, the parent's flusher thread does not exist, so
//! the child's first producer starts its own (and the stale handle is never joined).

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::mapping::lease::{self, OwnFd};
use crate::queue::mapped::MappedQueue;
use crate::runtime::thread::{self, Thread};

/// Handle of a running flusher; dropping the last one stops it.
pub(crate) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
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
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (shared, stop, via) = (shared.clone(), stop.clone(), via.clone());
            thread::spawn(c"shmq-flusher", move || run(&shared, &stop, every, &via))
                .map_err(|e| io("start the flusher thread", e))?
        };
        let ours = Arc::new(Flusher {
            stop,
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

fn run(shared: &MappedQueue, stop: &(Mutex<bool>, Condvar), every: Duration, via: &OwnFd) {
    let (lock, cond) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        // `_while` checks the flag before sleeping: a stop that came first is not missed.
        let (guard, _) = cond
            .wait_timeout_while(stopped, every, |stop| !*stop)
            .unwrap_or_else(|e| e.into_inner());
        stopped = guard;
        // Errors are left to the confirms (`wait_durable`) whose promise they break. A failed
        // flush poisons the file, and every later round fails at once.
        if shared.durable().0 < shared.ring.tail().0 {
            let _ = shared.try_flush(via);
        }
        if *stopped {
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
        let (lock, cond) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cond.notify_all();
        if let Some(t) = self.thread.take() {
            t.join();
        }
    }
}

/// Where an open queue file keeps the Batch flusher of this process while a producer holds it
/// (in its `Queue`, shared by the clones).
pub(crate) type FlusherSlot = Mutex<Weak<Flusher>>;
