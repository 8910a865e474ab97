//! What both sides of a pair share: the mapped word of the floors, and the bounded spin and
//! idle helpers. (The futex floor sleeps and wakes with shmq's own calls, [`shmq::futex`].)

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use crate::{Error, Mode, REPLY_TIMEOUT};

/// Length of the floors' shared file (one page).
const WORD_FILE_LEN: u64 = 4096;
/// Empty `poll`/`receive` calls after which an idle child starts sleeping between checks
/// (another case is being measured, and an idle spinner must not take a core from it).
pub(crate) const IDLE_POLLS: u32 = 10_000;
/// The same for the atomic floor's child, whose checks are single loads (about 10-50 ms).
pub(crate) const IDLE_SPINS: u32 = 1 << 20;
/// An idle spinning child's sleep between checks.
const IDLE_SLEEP: Duration = Duration::from_micros(200);
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
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(SPINS_PER_CLOCK_CHECK) {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > REPLY_TIMEOUT {
                return Err(Error::Timeout { mode: mode.name() });
            }
        }
        Ok(())
    }
}

/// A spinning child's idle counter: after a number of empty polls in a row it sleeps
/// between polls, so an idle pair does not take a core while another case runs. Each timed
/// block starts with warm-up round trips, which wake it back up.
pub(crate) struct Idle {
    /// Empty polls in a row.
    empty: u32,
    /// How many before it sleeps.
    limit: u32,
}

impl Idle {
    /// No empty polls yet; sleeps after `limit` in a row.
    pub(crate) fn new(limit: u32) -> Idle {
        Idle { empty: 0, limit }
    }

    /// One empty poll.
    #[inline]
    pub(crate) fn empty(&mut self) {
        self.empty = self.empty.saturating_add(1);
        if self.empty > self.limit {
            std::thread::sleep(IDLE_SLEEP);
        } else {
            std::hint::spin_loop();
        }
    }

    /// A message arrived.
    #[inline]
    pub(crate) fn busy(&mut self) {
        self.empty = 0;
    }
}
