//! The background flusher of `Batch` queues: it flushes the committed prefix at least every
//! `max_delay`, so a record that no later publish pushes out still reaches the disk in time.
//!
//! It runs while a producer of this process exists (each [`Producer`](crate::Producer) holds
//! the handle) and makes one last flush when the last one is dropped. Every process that
//! publishes runs one. They share the leader lock, and a flusher that finds nothing new to
//! flush does nothing.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::queue::Shared;

/// Handle of a running flusher; dropping the last one stops it.
pub(crate) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// The flusher of `shared`, started if it does not run yet.
    pub(crate) fn get(shared: &Arc<Shared>, every: Duration) -> Arc<Flusher> {
        let mut slot = shared.flusher.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = slot.upgrade() {
            return f;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("shmq-flusher".into())
                .spawn(move || run(&shared, &stop, every))
                .ok()
        };
        let f = Arc::new(Flusher { stop, thread });
        *slot = Arc::downgrade(&f);
        f
    }
}

fn run(shared: &Shared, stop: &(Mutex<bool>, Condvar), every: Duration) {
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
            let _ = shared.try_flush();
        }
        if *stopped {
            return;
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let (lock, cond) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cond.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps the weak reference type in one place for `Shared`.
pub(crate) type FlusherSlot = Mutex<Weak<Flusher>>;
