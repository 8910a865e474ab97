//! Noticing that a mapped queue file was removed, replaced or shrunk.
//!
//! After `rm` of a queue file in use, its processes would go on with the unlinked inode while
//! new processes find no file, or a new file at the same path: two queues that do not know of
//! each other. So every open queue file is checked at a bounded interval ([`INTERVAL`]) by one
//! watcher thread per process, started with the first file and again in a forked child (threads
//! do not survive `fork`; the child's first new handle restarts it). Each check `fstat`s the
//! open file (link count 0: removed; shorter than the mapping: truncated) and `lstat`s its path
//! (missing: removed; another device or inode: replaced). What it finds goes into the file's
//! damage word (`sigbus.rs`), the word every call loads: the hot path pays one atomic load.
//! [`check`] does the same synchronously (`Queue::check_file`).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::sigbus::{Damage, Protected};

/// How often the watcher checks every file.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// Something with a watched file: a queue's shared state.
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
/// The process whose watcher thread runs (0: none). A forked child sees its parent's pid.
static RUNNING_IN: AtomicU32 = AtomicU32::new(0);

/// Watches `file` from now on (until it is dropped), starting the watcher if needed.
pub(crate) fn add(file: Weak<dyn Watched>) {
    crate::lease::fork_safe(|| {
        FILES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(file);
        start_locked();
    });
}

/// Starts the watcher if this process has none (a forked child): called when a handle is made.
pub(crate) fn ensure_running() {
    // Relaxed: a hint; `start_locked` decides under the lock.
    if RUNNING_IN.load(Ordering::Relaxed) != std::process::id() {
        crate::lease::fork_safe(start_locked);
    }
}

/// Starts the watcher unless it runs; under `fork_safe`, so no fork splits the decision.
fn start_locked() {
    let me = std::process::id();
    // Relaxed: read and written only under `fork_safe`'s mutex.
    if RUNNING_IN.load(Ordering::Relaxed) == me {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("shmq-watch".into())
        .spawn(run);
    if spawned.is_ok() {
        RUNNING_IN.store(me, Ordering::Relaxed);
    }
}

fn run() {
    loop {
        std::thread::sleep(INTERVAL);
        // Snapshot under the lock; check outside it (the checks make system calls).
        let files = crate::lease::fork_safe(|| {
            let mut files = FILES.lock().unwrap_or_else(PoisonError::into_inner);
            files.retain(|f| f.strong_count() > 0);
            if files.is_empty() {
                // Relaxed: under `fork_safe`'s mutex, like every access.
                RUNNING_IN.store(0, Ordering::Relaxed);
                return None;
            }
            Some(files.clone())
        });
        let Some(files) = files else { return };
        for file in files.iter().filter_map(Weak::upgrade) {
            file.check_now();
        }
    }
}
