//! The waker thread of the async API (feature `tokio`): one thread per process sleeps on the
//! futex words of every pending async wait at once and wakes the tasks whose word changed.
//!
//! An async wait is the blocking wait of SYNC W (`ring.rs`) split in two. The task flags its
//! sleeper bit and reads the futex word ([`crate::protocol::ring::flag`]), re-checks its condition, and
//! only then registers a [`Sleep`] for `(word, value seen, deadline)` here and returns
//! `Pending`. Notifiers do what they do for a blocking sleeper: they see the bit, bump the word
//! and `FUTEX_WAKE` it, so producers need nothing new.
//!
//! The thread waits with `futex_waitv` (Linux 5.16+) on the distinct words of all registered
//! waits plus a private *bell* word that every new registration rings, until the earliest
//! deadline. A word that no longer holds the value its wait saw wakes that wait's task; a bump
//! that lands before the thread sleeps makes `futex_waitv` return `EAGAIN` at once, so none is
//! missed (SYNC B below). A deadline that passes wakes its task too: waits are bounded like
//! the blocking ones (heartbeats, stalled claims, the 1 s cap). With more than [`MAX_WORDS`]
//! distinct words, or on a kernel without `futex_waitv`, the thread sleeps on the bell alone and
//! re-reads every word each [`FALLBACK_POLL`] instead: correct, at up to that much more latency
//! and a wake-up per poll interval while anything waits.
//!
//! The bell's ordering is SYNC B in the table "Sync points" of `ARCHITECTURE.md`: a
//! registration the thread's read of the table missed has rung the bell, so the thread's sleep
//! returns at once and it reads the table again.
//!
//! Fork: the thread does not exist in a forked child, and its table lock may be held there. A
//! child's first registration starts a thread of its own with a new table (keyed by the
//! process's fork generation); the parent's is never touched in the child.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicPtr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::mapping::lease;
use crate::protocol::sync::{futex, AtomicU32, Ordering};
use crate::runtime::clock;

/// The most shared words one `futex_waitv` call waits on: the kernel takes 128, one is the bell.
const MAX_WORDS: usize = 127;

/// How often the thread re-reads every word when `futex_waitv` cannot cover them all.
const FALLBACK_POLL: Duration = Duration::from_millis(1);

/// `FUTEX2_SIZE_U32` (`linux/futex.h`): a `futex_waitv` entry is a 32-bit word. Every entry
/// is shared (no `FUTEX2_PRIVATE`), the bell too: it is rung with the shared `FUTEX_WAKE` of
/// [`futex::wake_all`], and a private wait and a shared wake of one word never meet.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// A futex word in a shared mapping, and what keeps that mapping alive.
#[derive(Clone)]
pub(crate) struct Word {
    _keep: Arc<dyn Send + Sync>,
    addr: usize,
}

impl Word {
    /// The futex word `word`, kept mapped by `keep`.
    ///
    /// # Safety
    /// `word` must lie in a mapping that stays mapped for as long as `keep` lives.
    pub(crate) unsafe fn new(keep: Arc<dyn Send + Sync>, word: &AtomicU32) -> Word {
        Word {
            _keep: keep,
            addr: word.as_ptr() as usize,
        }
    }

    fn load(&self) -> u32 {
        // SAFETY: `new`'s contract keeps the word mapped while `self._keep` lives, which it does
        // while `self` does; the address came from an `&AtomicU32`, so it is aligned.
        let word = unsafe { AtomicU32::from_ptr(self.addr as *mut u32) };
        // SeqCst like every access to a SYNC W futex word: compared with the value the waiter
        // read after flagging itself.
        word.load(Ordering::SeqCst)
    }
}

/// One registered wait.
struct Entry {
    word: Word,
    seen: u32,
    /// In [`clock::monotonic_ns`] nanoseconds.
    deadline: u64,
    waker: Waker,
}

#[derive(Default)]
struct Table {
    next_key: u64,
    entries: HashMap<u64, Entry>,
}

/// The waker thread's state; one per process (per fork generation), leaked: it lives as long
/// as the thread, which lives as long as the process.
struct Waiter {
    generation: u64,
    bell: AtomicU32,
    /// Set on a thread that lost the race to become the process's waker: it exits.
    retired: AtomicBool,
    table: Mutex<Table>,
}

impl Waiter {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent across a panic (every change is one map operation).
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self) {
        // SYNC B (SeqCst): after the insert, before the wake.
        self.bell.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.bell);
    }
}

static WAITER: AtomicPtr<Waiter> = AtomicPtr::new(std::ptr::null_mut());

/// This process's waker, started on first use (and again in a forked child).
fn waiter() -> io::Result<&'static Waiter> {
    let generation = lease::generation();
    // Acquire: pairs with the Release of the CAS below, so the fields are seen initialised.
    let current = WAITER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in `WAITER` comes from `Box::leak` below and is never freed.
    if let Some(w) = unsafe { current.as_ref() } {
        if w.generation == generation {
            return Ok(w);
        }
    }
    let fresh: &'static Waiter = Box::leak(Box::new(Waiter {
        generation,
        bell: AtomicU32::new(0),
        retired: AtomicBool::new(false),
        table: Mutex::new(Table::default()),
    }));
    // Never joined: it runs for the life of the process (of this fork generation).
    crate::runtime::thread::spawn(c"shmq-waker", move || run(fresh))?.detach();
    let fresh_ptr = fresh as *const Waiter as *mut Waiter;
    // AcqRel: publishes the new waiter (Release) and reads a racing one's (Acquire).
    match WAITER.compare_exchange(current, fresh_ptr, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(fresh),
        Err(_) => {
            // Another thread started one at the same moment: ours exits (its state stays
            // leaked, a few bytes once per race) and we use theirs.
            // Relaxed: the bell's SeqCst bump right after orders it for the thread.
            fresh.retired.store(true, Ordering::Relaxed);
            fresh.ring();
            waiter()
        }
    }
}

/// The thread: wake the tasks whose word moved or whose deadline passed, then sleep on the
/// rest.
fn run(w: &'static Waiter) {
    let mut waitv = true;
    let mut words: Vec<(Word, u32)> = Vec::new();
    let mut ready: Vec<Waker> = Vec::new();
    loop {
        // SYNC B (SeqCst): loaded before the table is read.
        let bell = w.bell.load(Ordering::SeqCst);
        // Relaxed: set before a bell bump this thread has read (SeqCst) or will wake for.
        if w.retired.load(Ordering::Relaxed) {
            return;
        }
        let now = clock::monotonic_ns();
        let mut deadline = u64::MAX;
        words.clear();
        w.lock().entries.retain(|_, e| {
            if e.deadline <= now || e.word.load() != e.seen {
                ready.push(e.waker.clone());
                return false;
            }
            deadline = deadline.min(e.deadline);
            if !words.iter().any(|(x, _)| x.addr == e.word.addr) {
                words.push((e.word.clone(), e.seen));
            }
            true
        });
        // Outside the lock: a waker may run executor code that registers again.
        ready.drain(..).for_each(Waker::wake);
        sleep(w, bell, &words, deadline, &mut waitv);
    }
}

/// Sleeps until the bell or one of `words` moves from the value given, or until `deadline`.
fn sleep(w: &Waiter, bell: u32, words: &[(Word, u32)], deadline: u64, waitv: &mut bool) {
    if *waitv && words.len() <= MAX_WORDS {
        match futex_waitv(&w.bell, bell, words, deadline) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => *waitv = false,
            // Woken, EAGAIN (a word moved before the call), ETIMEDOUT or EINTR: look again.
            _ => return,
        }
    }
    let left = (deadline != u64::MAX)
        .then(|| Duration::from_nanos(deadline.saturating_sub(clock::monotonic_ns())));
    let poll = (!words.is_empty()).then_some(FALLBACK_POLL);
    futex::wait(&w.bell, bell, [left, poll].into_iter().flatten().min());
}

/// One entry of the `futex_waitv` array (`struct futex_waitv` in `linux/futex.h`).
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// `futex_waitv` on the bell and `words`, until `deadline` on
/// `CLOCK_MONOTONIC` (`u64::MAX`: none).
fn futex_waitv(
    bell: &AtomicU32,
    seen: u32,
    words: &[(Word, u32)],
    deadline: u64,
) -> io::Result<()> {
    let mut waiters = Vec::with_capacity(words.len() + 1);
    waiters.push(FutexWaitv {
        val: seen.into(),
        uaddr: bell.as_ptr() as u64,
        flags: FUTEX2_SIZE_U32,
        reserved: 0,
    });
    waiters.extend(words.iter().map(|(word, seen)| FutexWaitv {
        val: (*seen).into(),
        uaddr: word.addr as u64,
        flags: FUTEX2_SIZE_U32,
        reserved: 0,
    }));
    let ts = (deadline != u64::MAX).then(|| libc::timespec {
        tv_sec: (deadline / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (deadline % 1_000_000_000) as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the kernel reads `waiters.len()` entries of the live vector, the optional
    // timespec on our stack, and the u32 at each `uaddr`: the bell lives in a leaked `Waiter`,
    // and `words` keep their mappings alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A wait for a futex word to move from a value seen, or for a deadline: a future's half of a
/// SYNC W sleep. Dropping it removes its registration.
pub(crate) struct Sleep {
    word: Word,
    seen: u32,
    /// In [`clock::monotonic_ns`] nanoseconds.
    deadline: u64,
    registered: Option<(&'static Waiter, u64)>,
}

impl Sleep {
    /// A wait for `word` to move from `seen`, for at most `within`.
    pub(crate) fn new(word: Word, seen: u32, within: Duration) -> Sleep {
        Sleep {
            word,
            seen,
            deadline: clock::monotonic_ns().saturating_add(clock::saturating_ns(within)),
            registered: None,
        }
    }

    /// Ready once the word moved or the deadline passed. Until then the waker thread wakes
    /// `cx`'s task when either happens. Fails only if the thread cannot be started.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.word.load() != self.seen || clock::monotonic_ns() >= self.deadline {
            self.cancel();
            return Poll::Ready(Ok(()));
        }
        let w = match self.registered {
            Some((w, _)) => w,
            None => waiter()?,
        };
        let mut table = w.lock();
        if let Some(entry) = self
            .registered
            .and_then(|(_, key)| table.entries.get_mut(&key))
        {
            if !entry.waker.will_wake(cx.waker()) {
                entry.waker = cx.waker().clone();
            }
            return Poll::Pending;
        }
        let key = table.next_key;
        table.next_key += 1;
        table.entries.insert(
            key,
            Entry {
                word: self.word.clone(),
                seen: self.seen,
                deadline: self.deadline,
                waker: cx.waker().clone(),
            },
        );
        drop(table);
        self.registered = Some((w, key));
        w.ring();
        Poll::Pending
    }

    fn cancel(&mut self) {
        if let Some((w, key)) = self.registered.take() {
            // A waiter of an older fork generation belongs to the parent; its lock may be held
            // by a thread that does not exist here.
            if w.generation == lease::generation() {
                w.lock().entries.remove(&key);
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// How many waits are registered with this process's waker thread (tests: a dropped future
/// leaves none behind).
#[cfg(test)]
pub(crate) fn registered() -> usize {
    waiter().map_or(0, |w| w.lock().entries.len())
}
