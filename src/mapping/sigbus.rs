//! Surviving a shared file that shrinks under its mapping.
//!
//! Touching a page of a `MAP_SHARED` mapping that lies past the end of its file raises
//! `SIGBUS`, whose default action kills the process. Queue files live in shared directories,
//! so someone else can truncate one (`truncate -s 0`, a mistaken `> file`) while this process
//! maps it. shmq must not take its host process down for that:
//!
//! * Every shared mapping shmq makes is a [`Protected`] mapping, registered in a fixed table
//!   of [`ENTRIES`] entries of atomics (start, length, damage) until it is unmapped.
//! * The first such mapping installs a process-wide `SIGBUS` handler (once; the previous
//!   action is kept). The handler does only async-signal-safe work: if the fault is an
//!   address error (`BUS_ADRERR`) inside a registered mapping, it marks that entry
//!   [`Damage::Truncated`] and maps private zero pages (`MAP_FIXED | MAP_PRIVATE |
//!   MAP_ANONYMOUS`) from the faulting page to the end of the mapping, then returns. The
//!   faulting instruction runs again and reads zeros; writes land in the private pages and
//!   reach no one. Every later call on that file returns `Error::Truncated`
//!   (the API checks [`Protected::damage`]).
//! * Any other `SIGBUS` goes to the previous action: its `SA_SIGINFO` or plain handler is
//!   called; `SIG_DFL` or `SIG_IGN` (the kernel does not let a fault be ignored) restore the
//!   default action and re-raise, so the process dies as it would have without shmq.
//!
//! The same damage word carries what the file watcher (`watch.rs`) finds: the file removed or
//! replaced, or shrunk before anyone touched the missing pages.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// How many shared mappings one process can have registered at once.
pub(crate) const ENTRIES: usize = 4096;

/// What happened to a mapped file, in increasing severity: the entry keeps the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Damage {
    /// The file's path was removed (its link count is 0, or the path names nothing).
    Removed = 1,
    /// The file's path names another file now.
    Replaced = 2,
    /// The file is shorter than the mapping: its data is gone.
    Truncated = 3,
}

impl Damage {
    /// The error of a call on a file (at `path`) with this damage: [`Error::Truncated`], or
    /// [`Error::Detached`] for a removed or replaced file.
    #[cold]
    #[inline(never)]
    pub(crate) fn error(self, path: &std::path::Path) -> crate::error::Error {
        use crate::error::{Detachment, Error};
        let path = path.to_path_buf();
        match self {
            Damage::Truncated => Error::Truncated { path },
            Damage::Removed => Error::Detached {
                path,
                why: Detachment::Removed,
            },
            Damage::Replaced => Error::Detached {
                path,
                why: Detachment::Replaced,
            },
        }
    }

    #[cold]
    fn from_u8(v: u8) -> Option<Damage> {
        match v {
            1 => Some(Damage::Removed),
            2 => Some(Damage::Replaced),
            3 => Some(Damage::Truncated),
            _ => None,
        }
    }
}

/// One registered mapping. `start` is 0 while the entry holds no mapping.
struct Entry {
    /// Claimed by a registration (the entry may not be reused until it is released).
    used: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    /// 0, or a [`Damage`].
    damage: AtomicU8,
}

#[allow(clippy::declare_interior_mutable_const)] // a template for the table's entries
const FREE: Entry = Entry {
    used: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    damage: AtomicU8::new(0),
};

static TABLE: [Entry; ENTRIES] = [FREE; ENTRIES];

/// The action `SIGBUS` had before shmq's handler: its handler address and flags.
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_FLAGS: AtomicI32 = AtomicI32::new(0);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// A `MAP_SHARED` mapping of a whole file region that a `SIGBUS` cannot turn fatal: it is
/// registered with the handler while it lives.
pub(crate) struct Protected {
    // Field order: unregistered before unmapped, so the handler never maps over an address
    // range that may already belong to someone else.
    entry: Registration,
    map: MmapRaw,
}

impl Protected {
    /// `Err` once the file at `path` (this mapping's) shrank under this process, or its path
    /// was removed or names another file ([`damage`](Self::damage)): calls that may write
    /// check this first, and calls that read the mapping check it before they return what
    /// they read. One atomic load.
    ///
    /// `path` is taken as it is held (a `&PathBuf`): turned into a `&Path` on the error path
    /// only, so a check loads no pointer and length of it (callgrind, `call_cost`).
    #[inline(always)]
    pub(crate) fn check(&self, path: &impl AsRef<std::path::Path>) -> crate::Result<()> {
        match self.damage() {
            None => Ok(()),
            Some(damage) => Err(damage.error(path.as_ref())),
        }
    }

    /// `outcome` of a call that used this mapping, checked after it as [`check`](Self::check)
    /// says: damage found now wins over the outcome. The same as `check(path)?` after the
    /// call, without holding the outcome (a `Result` of 96 bytes) in memory across the check:
    /// on a hot path that cost 16 instructions (callgrind, `call_cost`).
    #[inline(always)]
    pub(crate) fn checked_after<T>(
        &self,
        path: &impl AsRef<std::path::Path>,
        outcome: crate::Result<T>,
    ) -> crate::Result<T> {
        match outcome {
            Ok(v) => self.check(path).map(|()| v),
            Err(e) => Err(self.check(path).err().unwrap_or(e)),
        }
    }

    /// Maps the first `len` bytes of `file` shared, readable and writable, and registers the
    /// mapping. Fails if the table is full ([`ENTRIES`] mappings in this process).
    pub(crate) fn map(file: &File, len: usize) -> io::Result<Protected> {
        install();
        let map = MmapOptions::new().len(len).map_raw(file)?;
        let entry = Registration::new(map.as_mut_ptr() as usize, len).ok_or_else(|| {
            io::Error::other(format!(
                "more than {ENTRIES} shared files mapped in this process"
            ))
        })?;
        Ok(Protected { entry, map })
    }

    /// The mapping's first byte.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The mapping itself (for `msync`).
    pub(crate) fn raw(&self) -> &MmapRaw {
        &self.map
    }

    /// What happened to the file, if anything. One atomic load: the check of every call.
    #[inline]
    pub(crate) fn damage(&self) -> Option<Damage> {
        // Acquire: pairs with the marking (SeqCst in the handler, a Release RMW in `mark`):
        // a call that sees zero pages put in by the handler of another thread, and then this
        // flag, knows that what it read was zeros. Nothing else is published through it.
        match self.entry.0.damage.load(Ordering::Acquire) {
            0 => None,
            v => Damage::from_u8(v),
        }
    }

    /// Records `damage` (the most severe damage found is kept).
    pub(crate) fn mark(&self, damage: Damage) {
        // Release: pairs with the Acquire in `damage`.
        self.entry
            .0
            .damage
            .fetch_max(damage as u8, Ordering::Release);
    }
}

/// A claimed table entry, released on drop.
struct Registration(&'static Entry);

impl Registration {
    fn new(start: usize, len: usize) -> Option<Registration> {
        // Acquire on success: the previous holder's release of the entry happened before.
        // Relaxed on failure: the entry is skipped.
        let index = TABLE.iter().position(|e| {
            e.used
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })?;
        let e = &TABLE[index];
        // Relaxed: published by the Release store of `start` below.
        e.damage.store(0, Ordering::Relaxed);
        e.len.store(len, Ordering::Relaxed);
        // Release: the handler that sees this start (Acquire) sees the length.
        e.start.store(start, Ordering::Release);
        Some(Registration(e))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let e = self.0;
        // Release: the handler stops matching this range before the entry can be reused.
        e.start.store(0, Ordering::Release);
        // Release: every use of the entry happened before the next registration claims it.
        e.used.store(false, Ordering::Release);
    }
}

/// Installs the handler, once per process (a forked child inherits it, `exec` drops it).
fn install() {
    crate::mapping::lease::fork_safe(|| {
        // Relaxed: callers are serialised by `fork_safe`'s mutex.
        if INSTALLED.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            // Relaxed: read by the handler, which runs only after a registered mapping exists,
            // i.e. after the Release store of a `start`.
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: an all-zero `sigaction` is a valid value (no handler, no flags, empty mask).
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: reads the current action into `old`, a valid out-pointer.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return;
        }
        // Relaxed: stored before the `sigaction` call below that makes the handler reachable.
        PREVIOUS_HANDLER.store(old.sa_sigaction, Ordering::Relaxed);
        PREVIOUS_FLAGS.store(old.sa_flags, Ordering::Relaxed);
        // SAFETY: as above.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as Handler as usize;
        // On the alternate stack if the thread has one; restartable; SIGBUS itself is blocked
        // while the handler runs (it never faults itself).
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        new.sa_mask = old.sa_mask;
        // SAFETY: `new` is a valid action whose handler is an `extern "C"` function that lives
        // for the whole program and does only async-signal-safe work.
        if unsafe { libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) } == 0 {
            INSTALLED.store(true, Ordering::Relaxed);
        }
    })
}

/// An `SA_SIGINFO` signal handler.
type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        if code == libc::BUS_ADRERR && rescue(addr) {
            return;
        }
    }
    chain(sig, info, ctx);
}

/// If `addr` lies in a registered mapping, marks it truncated and puts zero pages from the
/// faulting page to its end. Async-signal-safe: atomics and one `mmap` system call.
fn rescue(addr: usize) -> bool {
    for e in &TABLE {
        // Acquire: pairs with the Release store of `start` at registration (sees `len`).
        let start = e.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        // Relaxed: ordered by the Acquire load of `start`.
        let len = e.len.load(Ordering::Relaxed);
        if addr - start >= len {
            continue;
        }
        // SeqCst: marked before the zero pages go in, for every thread that later reads them.
        e.damage
            .fetch_max(Damage::Truncated as u8, Ordering::SeqCst);
        // Relaxed: see `install`.
        let page = addr & !(PAGE.load(Ordering::Relaxed) - 1);
        let end = start + len;
        // SAFETY: `page..end` lies inside a mapping shmq made and still holds (it is
        // registered: a mapping is unregistered before it is unmapped, and the faulting
        // access is made through a live handle of it). Replacing those pages changes only
        // what this process sees of a file that no longer backs them.
        let got = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                end - page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        return got != libc::MAP_FAILED;
    }
    false
}

/// Hands a `SIGBUS` that is not shmq's to the action that was there before.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Relaxed: set before the handler was installed (see `install`).
    let handler = PREVIOUS_HANDLER.load(Ordering::Relaxed);
    let flags = PREVIOUS_FLAGS.load(Ordering::Relaxed);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // SAFETY: an all-zero `sigaction` with `SIG_DFL` is the default action.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: `sigaction` and `raise` are async-signal-safe. SIGBUS is blocked while this
        // handler runs, so the raised signal is delivered, with the default action, as soon
        // as the handler returns (and a fault re-raises it anyway when the instruction
        // runs again).
        unsafe {
            libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            libc::raise(sig);
        }
    } else if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous action was installed with SA_SIGINFO, so its address is a
        // three-argument signal handler; it gets the arguments the kernel gave us.
        let f: Handler = unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: without SA_SIGINFO the previous action's address is a one-argument handler.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_mapping_reads_zeros_and_is_marked() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(3 * 4096).unwrap();
        let map = Protected::map(&file, 3 * 4096).unwrap();
        let p = map.as_mut_ptr();
        // SAFETY: inside the 3-page mapping; the file is still that long.
        unsafe { p.add(5000).write_volatile(7) };
        assert_eq!(map.damage(), None);
        file.set_len(0).unwrap();
        // SAFETY: inside the mapping; the fault is rescued by the handler.
        let v = unsafe { p.add(5000).read_volatile() };
        assert_eq!(v, 0);
        assert_eq!(map.damage(), Some(Damage::Truncated));
        // A later watcher finding must not hide the truncation.
        map.mark(Damage::Removed);
        assert_eq!(map.damage(), Some(Damage::Truncated));
    }
}
