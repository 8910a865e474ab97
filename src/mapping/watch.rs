//! Noticing that a mapped queue file (or a worker's work file) was removed, replaced or shrunk.
//!
//! After `rm` of a queue file in use, its processes would go on with the unlinked inode while
//! new processes find no file, or a new file at the same path: two queues that do not know of
//! each other. So every open queue file is checked at a bounded interval ([`INTERVAL`]) by one
//! watcher thread per process, started with the first file, stopped and joined when the last
//! one is closed, and started again in a forked child (threads do not survive `fork`; the
//! child's first new handle restarts it). Each check `fstat`s the
//! open file (link count 0: removed; shorter than the mapping: truncated) and `lstat`s its path
//! (missing: removed; another device or inode: replaced). What it finds goes into the file's
//! damage word (`sigbus.rs`), the word every call loads: the hot path pays one atomic load.
//! [`check`] does the same synchronously (`Queue::check_file`).

use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use crate::mapping::sigbus::{Damage, Protected};
use crate::runtime::thread::{self, Thread};

/// How often the watcher checks every file.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// Something with a watched file: a queue's shared state, a worker's work file.
pub(crate) trait Watched: Send + Sync {
    /// Checks the file now and records what is wrong with it.
    fn check_now(&self);
}

/// The identity of a file at open, to compare its path against later.
pub(crate) struct Identity {
    /// The path, made absolute at open (a later `chdir` does not move it).
    path: PathBuf,
    dev: u64,
    ino: u64,
    /// The mapping's length: a file shorter than this is truncated.
    len: u64,
}

impl Identity {
    /// Records `file`, open at `path` and mapped for `len` bytes.
    pub(crate) fn new(file: &File, path: &Path, len: u64) -> std::io::Result<Identity> {
        let meta = file.metadata()?;
        Ok(Identity {
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
            dev: meta.dev(),
            ino: meta.ino(),
            len,
        })
    }
}

/// Checks `file` against `id` and marks what is wrong in `map`'s damage word.
pub(crate) fn check(file: &File, id: &Identity, map: &Protected) {
    if let Ok(meta) = file.metadata() {
        if meta.len() < id.len {
            map.mark(Damage::Truncated);
        }
        if meta.nlink() == 0 {
            map.mark(Damage::Removed);
        }
    }
    match std::fs::symlink_metadata(&id.path) {
        Ok(meta) if meta.dev() != id.dev || meta.ino() != id.ino => map.mark(Damage::Replaced),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => map.mark(Damage::Removed),
        // Cannot tell (a permission change, say): no verdict.
        Err(_) => {}
    }
}

/// Every watched file of this process.
static FILES: Mutex<Vec<Weak<dyn Watched>>> = Mutex::new(Vec::new());
/// The watcher thread, if one was started (in this process, or in the parent of this forked
/// child, whose thread does not exist here).
static WATCHER: Mutex<Option<Watcher>> = Mutex::new(None);
/// The process whose watcher thread runs (0: none): a cheap hint for [`ensure_running`]. A
/// forked child sees its parent's pid.
static RUNNING_IN: AtomicU32 = AtomicU32::new(0);
/// The generation of the watcher that should run. A watcher whose generation it no longer is
/// returns; it sleeps on this word as a futex, so a stop wakes it at once.
static GENERATION: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Whether this thread is the watcher.
    static IN_WATCHER: Cell<bool> = const { Cell::new(false) };
}

/// A running watcher thread (a plain pthread: see `thread.rs`).
struct Watcher {
    /// The process it runs in.
    pid: u32,
    thread: Thread,
}

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    // Every critical section leaves its data consistent (push, retain, take, replace).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Watches `file` from now on (until it is dropped), starting the watcher if needed.
pub(crate) fn add(file: Weak<dyn Watched>) {
    crate::mapping::lease::fork_safe(|| {
        lock(&FILES).push(file);
        start_locked();
    });
}

/// Starts the watcher if this process has none (a forked child): called when a handle is made.
pub(crate) fn ensure_running() {
    // Relaxed: a hint; `start_locked` decides under the lock.
    if RUNNING_IN.load(Ordering::Relaxed) != std::process::id() {
        crate::mapping::lease::fork_safe(start_locked);
    }
}

/// Starts the watcher unless it runs; under `fork_safe`, so no fork splits the decision and no
/// child inherits these locks held.
fn start_locked() {
    let me = std::process::id();
    let mut watcher = lock(&WATCHER);
    if matches!(&*watcher, Some(w) if w.pid == me) {
        return;
    }
    // (A parent's thread, which this forked child does not have, is simply forgotten.)
    // Release: pairs with the watcher's Acquire loads; a previous watcher (if its stop is
    // still under way) sees a generation that is not its own and returns.
    let generation = GENERATION.fetch_add(1, Ordering::Release).wrapping_add(1);
    // Without a thread only the synchronous checks run; the next handle tries again.
    if let Ok(thread) = thread::spawn(c"shmq-watch", move || run(generation)) {
        *watcher = Some(Watcher { pid: me, thread });
        // Relaxed: a hint, see `ensure_running`.
        RUNNING_IN.store(me, Ordering::Relaxed);
    }
}

/// Called when a watched file is dropped: stops the watcher once no file is left, and waits
/// for it, so a process that closed every queue has no thread of shmq's left.
pub(crate) fn released() {
    let stopping = crate::mapping::lease::fork_safe(|| {
        let mut files = lock(&FILES);
        files.retain(|f| f.strong_count() > 0);
        if !files.is_empty() {
            return None;
        }
        // A parent's thread (a forked child) needs nothing: it does not exist here.
        let w = lock(&WATCHER)
            .take()
            .filter(|w| w.pid == std::process::id())?;
        // Relaxed: a hint, see `ensure_running`.
        RUNNING_IN.store(0, Ordering::Relaxed);
        // Release: pairs with the watcher's Acquire loads (see `start_locked`).
        GENERATION.fetch_add(1, Ordering::Release);
        Some(w)
    });
    if let Some(w) = stopping {
        crate::protocol::sync::futex::wake_all(&GENERATION);
        if IN_WATCHER.get() {
            // The watcher itself dropped the last handle of a file (the file's owners let go
            // during its check): it returns after this round.
            w.thread.detach();
        } else {
            w.thread.join();
        }
    }
}

fn run(generation: u32) {
    IN_WATCHER.set(true);
    // Acquire: pairs with the Release bumps of `start_locked` and `released`.
    let current = || GENERATION.load(Ordering::Acquire) == generation;
    while current() {
        crate::protocol::sync::futex::wait(&GENERATION, generation, Some(INTERVAL));
        if !current() {
            return;
        }
        // Snapshot under the lock; check outside it (the checks make system calls).
        let files = crate::mapping::lease::fork_safe(|| lock(&FILES).clone());
        for file in files.iter().filter_map(Weak::upgrade) {
            file.check_now();
        }
    }
}
