//! What both sides of a pair share: the mapped word of the floors, the idle bell, and the
//! bounded spin and idle helpers. (The futex floor and the bell sleep and wake with shmq's own
//! calls, [`shmq::futex`].)

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use shmq::futex;

use crate::{Error, Mode, REPLY_TIMEOUT};

/// Length of the floors' shared file (one page).
const WORD_FILE_LEN: u64 = 4096;
/// Empty `poll`/`receive` calls after which an idle child sleeps on its [`Bell`] between checks
/// (another case is being measured, and an idle spinner must not take a core from it).
pub(crate) const IDLE_POLLS: u32 = 10_000;
/// The same for the atomic floor's child, whose checks are single loads (about 10-50 ms).
pub(crate) const IDLE_SPINS: u32 = 1 << 20;
/// Longest single sleep of a resting child on its bell. The parent's [`Bell::activate`] ends
/// the sleep; this bound only keeps a wake-up that never came (which the futex protocol rules
/// out) below [`REPLY_TIMEOUT`].
const IDLE_WAIT: Duration = Duration::from_secs(5);
/// File name of a pair's bell, in the pair's directory.
const BELL_FILE: &str = "bell";
/// Spins between two looks at the clock while waiting for a reply.
const SPINS_PER_CLOCK_CHECK: u32 = 1 << 16;

/// Maps the one-page file `path` (created if missing) shared by a floor's two processes.
pub(crate) fn map_word_file(path: &Path) -> Result<memmap2::MmapMut, Error> {
    let io = |op| {
        move |source| Error::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io("open"))?;
    f.set_len(WORD_FILE_LEN).map_err(io("set_len"))?;
    // SAFETY: the file lives in a directory made for this pair; the two processes touch its
    // bytes only through the atomics below, never as plain memory.
    unsafe { memmap2::MmapMut::map_mut(&f) }.map_err(io("mmap"))
}

/// The floor's `AtomicU64` at the start of the mapping.
pub(crate) fn word64(map: &memmap2::MmapMut) -> &AtomicU64 {
    assert!(map.len() >= 8);
    // SAFETY: the mapping is page-aligned (so 8-aligned), at least 8 bytes long (checked above)
    // and outlives the borrow; AtomicU64 has the layout of u64, and every access to these bytes
    // in both processes is atomic.
    unsafe { &*(map.as_ptr() as *const AtomicU64) }
}

/// The futex floor's `AtomicU32` at the start of the mapping.
pub(crate) fn word32(map: &memmap2::MmapMut) -> &AtomicU32 {
    assert!(map.len() >= 4);
    // SAFETY: as in `word64`: page-aligned, long enough (checked), outlives the borrow, and only
    // ever accessed atomically.
    unsafe { &*(map.as_ptr() as *const AtomicU32) }
}

/// Bounds a parent's spin for a reply: looks at the clock once every
/// `SPINS_PER_CLOCK_CHECK` spins and fails after [`REPLY_TIMEOUT`].
pub(crate) struct Patience {
    /// Spins so far.
    spins: u32,
    /// When the first clock check happened.
    since: Option<Instant>,
}

impl Patience {
    /// A fresh wait.
    #[inline]
    pub(crate) fn new() -> Patience {
        Patience {
            spins: 0,
            since: None,
        }
    }

    /// One more spin; an error once the wait has lasted [`REPLY_TIMEOUT`].
    #[inline]
    pub(crate) fn spin(&mut self, mode: Mode) -> Result<(), Error> {
        self.spin_named(mode.name())
    }

    /// [`spin`](Self::spin) for a case that is not a ping-pong [`Mode`], named `mode`.
    #[inline]
    pub(crate) fn spin_named(&mut self, mode: &'static str) -> Result<(), Error> {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(SPINS_PER_CLOCK_CHECK) {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > REPLY_TIMEOUT {
                return Err(Error::Timeout { mode });
            }
        }
        Ok(())
    }
}

/// A pair's bell: a futex word in a one-page file of the pair's directory, through which the
/// parent tells its child whether the pair is being measured (odd: active) or resting (even).
/// Only the parent writes it. Starting a timed block ([`Bell::activate`]) marks every other
/// pair of the process resting and this one active, and wakes this one's child.
///
/// An active child never sleeps: a child that went to sleep on its own after a run of empty
/// polls would do so whenever its parent is preempted mid-block, and the next ping would
/// wait for its timer. A resting child sleeps on the bell instead of on a short timer: with
/// both vCPUs spinning, every timer wake-up of an idle child is an interrupt and a context
/// switch on a core the measured pair spins on (a 200 µs timer made about 3,000 of them a
/// second, each stalling one round trip by 5-100 µs; BENCHMARKS.md, "The p99.9 tail").
pub(crate) struct Bell {
    /// The one-page mapping; its first four bytes are the bell's word.
    map: memmap2::MmapMut,
}

/// The bells of this process's live pairs, so that activating one rests the others.
static BELLS: Mutex<Vec<Weak<Bell>>> = Mutex::new(Vec::new());

impl Bell {
    /// Maps (creating it if missing) the bell of the pair whose directory is `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Bell, Error> {
        Ok(Bell {
            map: map_word_file(&dir.join(BELL_FILE))?,
        })
    }

    /// Maps the bell of the pair in `dir` for its parent, which activates it with
    /// [`activate`](Self::activate).
    pub(crate) fn register(dir: &Path) -> Result<Arc<Bell>, Error> {
        let bell = Arc::new(Bell::open(dir)?);
        let mut bells = BELLS.lock().unwrap_or_else(|e| e.into_inner());
        bells.retain(|b| b.strong_count() > 0);
        bells.push(Arc::downgrade(&bell));
        Ok(bell)
    }

    /// The word.
    fn word(&self) -> &AtomicU32 {
        word32(&self.map)
    }

    /// Sets the word's active bit to `active` (the parent's side; a change wakes the child).
    fn set(&self, active: bool) {
        let w = self.word();
        // Relaxed: the bell carries no data. Only the parent writes it, and FUTEX_WAIT compares
        // the word under the kernel's futex lock, which FUTEX_WAKE takes too, so a sleeping
        // child either sees the new value (and does not sleep) or is woken below.
        let v = w.load(Ordering::Relaxed);
        if (v & 1 == 1) != active {
            w.store(v.wrapping_add(1), Ordering::Relaxed);
            futex::wake_all(w);
        }
    }

    /// A timed block of this pair starts: every other pair of the process rests, this one is
    /// active (its child spins and never sleeps).
    pub(crate) fn activate(self: &Arc<Bell>) {
        let bells = BELLS.lock().unwrap_or_else(|e| e.into_inner());
        for other in bells.iter().filter_map(Weak::upgrade) {
            if !Arc::ptr_eq(&other, self) {
                other.set(false);
            }
        }
        self.set(true);
    }

    /// Whether the pair is resting, and the word's value (the child's side).
    fn resting(&self) -> (bool, u32) {
        // Relaxed: see `set`.
        let v = self.word().load(Ordering::Relaxed);
        (v & 1 == 0, v)
    }
}

/// A spinning child's idle counter: after a number of empty polls in a row, and only while its
/// pair rests, it sleeps on the pair's [`Bell`] between polls, so an idle pair takes neither a
/// core nor timer wake-ups while another case runs.
pub(crate) struct Idle<'a> {
    /// Empty polls in a row.
    empty: u32,
    /// How many before it may sleep.
    limit: u32,
    /// The pair's bell.
    bell: &'a Bell,
}

impl<'a> Idle<'a> {
    /// No empty polls yet; may sleep on `bell` after `limit` in a row.
    pub(crate) fn new(limit: u32, bell: &'a Bell) -> Idle<'a> {
        Idle {
            empty: 0,
            limit,
            bell,
        }
    }

    /// One empty poll.
    #[inline]
    pub(crate) fn empty(&mut self) {
        if self.empty < self.limit {
            self.empty += 1;
        } else if let (true, v) = self.bell.resting() {
            futex::wait(self.bell.word(), v, Some(IDLE_WAIT));
            return;
        }
        std::hint::spin_loop();
    }

    /// A message arrived.
    #[inline]
    pub(crate) fn busy(&mut self) {
        self.empty = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activating_a_pair_rests_the_others_and_wakes_its_child() {
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let a = Bell::register(dirs[0].path()).unwrap();
        let b = Bell::register(dirs[1].path()).unwrap();
        // A new pair rests.
        assert!(a.resting().0 && b.resting().0);
        a.activate();
        assert!(!a.resting().0 && b.resting().0);
        b.activate();
        assert!(a.resting().0 && !b.resting().0);
        // The child's side maps the same word through its own mapping.
        let child = Bell::open(dirs[0].path()).unwrap();
        assert!(child.resting().0);

        // A resting child sleeps on the bell; activating its pair wakes it, long before the
        // sleep's bound (IDLE_WAIT, 5 s).
        let woke = std::thread::scope(|s| {
            let sleeper = s.spawn(|| {
                let mut idle = Idle::new(0, &child);
                let t = Instant::now();
                while child.resting().0 {
                    idle.empty();
                }
                t.elapsed()
            });
            // Let it fall asleep (not required for the outcome: a ring before the sleep
            // keeps it from sleeping at all).
            std::thread::sleep(Duration::from_millis(20));
            a.activate();
            sleeper.join().unwrap()
        });
        assert!(!child.resting().0);
        assert!(
            woke < IDLE_WAIT - Duration::from_secs(1),
            "the child slept {woke:?}: activate did not wake it"
        );
    }
}
