//! Liveness from the kernel: leases held as open-file-description locks, and fork safety.
//!
//! A *holder* (a producer slot's owner, a consumer group's member, a topic member) is judged
//! alive by asking the kernel, never by parsing `/proc`:
//!
//! * **Holding.** A holder draws a random id (62 bits, never 0) and takes an `F_OFD_SETLK`
//!   write lock on byte [`LIVENESS`]` + id` of the shared file its lease word lives in, through
//!   an open file description of its own ([`OwnFd`]). Its lease word is `pid | id << 64`: the
//!   pid is for people (`info`, `GroupBusy`), the id is what counts. The kernel releases the
//!   lock when the last descriptor of that description is closed, so when the holder lets go
//!   or its process dies, however it dies.
//! * **Judging.** [`alive`] asks with `F_OFD_GETLK` on the caller's ordinary descriptor of the
//!   file (which never holds a liveness lock) whether that byte is locked by anyone. That needs
//!   no new descriptor (it works when the process is out of them), sees through pid namespaces
//!   and `hidepid` (locks belong to the file, not to a pid), and cannot be fooled by a
//!   recycled pid. A query that fails reads as *alive*: a check that cannot decide never lets
//!   anyone take a live holder's place.
//! * **Uniqueness.** Two live holders never share an id: the second one's lock fails and it
//!   draws again. A dead holder's word can linger in a slot; a new holder that drew the same id
//!   would make it look alive (a leaked slot, never a stolen one), with probability 2⁻⁶².
//! * **Fork.** A child inherits its parent's descriptors, and with them its parent's locks: a
//!   child that outlives its parent would keep the parent's leases alive. So every [`OwnFd`] is
//!   registered, and a `pthread_atfork` child handler closes them all in the child and bumps
//!   the process's fork generation. Handles made before the fork see the generation change
//!   ([`OwnFd::current`]): they fail with [`Error::Forked`](crate::Error::Forked) instead of
//!   acting on their parent's slots, and on drop they leave those slots alone. Descriptors
//!   are opened `O_CLOEXEC`, so an `exec` (or `posix_spawn`, which runs no fork handlers)
//!   drops them too. Opening and closing happen under the registry's mutex, which the fork
//!   handlers hold across the fork, so a child never inherits a descriptor the registry
//!   does not know.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::protocol::sync::{pack, unpack};

/// First byte of the liveness lock range: a holder with id `i` locks byte `LIVENESS + i`. Far
/// beyond any file's size (locks need no bytes behind them) and clear of the flush lock.
pub(crate) const LIVENESS: u64 = 1 << 62;
/// Ids are drawn below this bound, so `LIVENESS + id` stays a valid positive `off_t`.
const ID_LIMIT: u64 = (1 << 62) - 1;

/// Bumped in every child after `fork`: handles made under an older generation belong to the
/// parent.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Every descriptor an [`OwnFd`] holds in this process, for the fork handlers to close.
static REGISTRY: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

thread_local! {
    /// The registry, locked by the fork `prepare` handler of this thread until the `parent` or
    /// `child` handler (which run on the same thread) releases it.
    static HELD_ACROSS_FORK: std::cell::RefCell<Option<MutexGuard<'static, Vec<RawFd>>>> =
        const { std::cell::RefCell::new(None) };
}

fn registry() -> MutexGuard<'static, Vec<RawFd>> {
    // A panic while holding it leaves a consistent list (push and retain are not split).
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

extern "C" fn before_fork() {
    let guard = registry();
    HELD_ACROSS_FORK.with(|h| *h.borrow_mut() = Some(guard));
}

extern "C" fn after_fork_in_parent() {
    HELD_ACROSS_FORK.with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn after_fork_in_child() {
    HELD_ACROSS_FORK.with(|h| {
        if let Some(mut fds) = h.borrow_mut().take() {
            for fd in fds.drain(..) {
                // SAFETY: `fd` is a descriptor this process inherited from an `OwnFd` of the
                // parent; nothing else in the child owns it. `close` is async-signal-safe.
                unsafe { libc::close(fd) };
            }
        }
    });
    // Relaxed: read by this (now single-threaded) process only, after this store.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Runs `f` under the registry's mutex, which the fork handlers hold across every `fork`: a
/// forked child never inherits a lock that `f`'s critical section holds. `f` must be short and
/// must not open or drop an [`OwnFd`] (that takes the same mutex).
pub(crate) fn fork_safe<T>(f: impl FnOnce() -> T) -> T {
    install_fork_handlers();
    let _registry = registry();
    f()
}

fn install_fork_handlers() {
    // Not a `Once`: a child forked while another thread ran its closure would wait on it for
    // ever. The first caller registers; another caller racing it may open a description
    // before the handlers exist, which a fork in that instant would not close in the child.
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    // Relaxed: only decides who registers; the registration is idempotent in effect.
    if INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: the three handlers are `extern "C"` functions that live for the whole program;
    // they only lock, close and store.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        )
    };
}

/// This process's fork generation: it changes in a child after `fork`.
pub(crate) fn generation() -> u64 {
    // Relaxed: the value only changes in a freshly forked child, before any other thread runs.
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// An open file description of a shared file that belongs to one holder: its locks exclude
/// every other description, also those of the same process. Closed on drop (which releases
/// its locks), and in a forked child (see the module docs).
pub(crate) struct OwnFd {
    fd: RawFd,
    generation: u64,
}

impl OwnFd {
    /// Opens a new description of `file`, the open file at `path`: through `/proc/self/fd`
    /// (works after the path was removed), else through `path`; either way it must be the same
    /// file (device and inode).
    pub(crate) fn open(file: &File, path: &Path) -> io::Result<OwnFd> {
        install_fork_handlers();
        let meta = file.metadata()?;
        let same = |f: &File| -> io::Result<bool> {
            let m = f.metadata()?;
            Ok(m.dev() == meta.dev() && m.ino() == meta.ino())
        };
        let mut fds = registry();
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        // Not `open_shared`: its O_NOFOLLOW refuses the magic link of our own descriptor.
        let reopen = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&proc_path);
        let own =
            match reopen {
                Ok(f) if same(&f)? => f,
                // No /proc (or not ours): by name. EMFILE and ENFILE are final, not a reason to
                // try the other way.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    return Err(e)
                }
                _ => match crate::mapping::trust::open_shared(path) {
                    Ok(f) if same(&f)? => f,
                    Ok(_) => return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        "the file at this path was replaced, and /proc/self/fd is not available",
                    )),
                    Err(e) => return Err(e),
                },
            };
        let fd = own.into_raw_fd();
        fds.push(fd);
        Ok(OwnFd {
            fd,
            generation: generation(),
        })
    }

    /// Whether this description was opened by this process (not inherited across a `fork`).
    pub(crate) fn current(&self) -> bool {
        self.generation == generation()
    }

    /// Takes an exclusive lock on byte `byte` without waiting: `Ok(false)` if another
    /// description holds it.
    pub(crate) fn try_lock(&self, byte: u64) -> io::Result<bool> {
        match ofd_lock(self.fd, libc::F_OFD_SETLK, libc::F_WRLCK, byte) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes an exclusive lock on byte `byte`, waiting as long as another description holds
    /// it (the kernel drops a dead holder's).
    pub(crate) fn lock(&self, byte: u64) -> io::Result<()> {
        ofd_lock(self.fd, libc::F_OFD_SETLKW, libc::F_WRLCK, byte).map(drop)
    }

    /// Opens a new description of `file` (as [`OwnFd::open`]) and takes an exclusive `flock`
    /// on it, waiting as long as another description holds one: the administration lock of
    /// a shared file. Threads, and a forked child and its parent, exclude each other too,
    /// since each takes it through a description of its own. Released when dropped (or by
    /// the kernel, if the holder dies).
    pub(crate) fn flock_exclusive(file: &File, path: &Path) -> io::Result<OwnFd> {
        let own = OwnFd::open(file, path)?;
        loop {
            // SAFETY: flock(2) on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(own.fd, libc::LOCK_EX) } == 0 {
                return Ok(own);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Releases the lock on byte `byte`.
    pub(crate) fn unlock(&self, byte: u64) {
        // Unlocking cannot fail in a way the caller could act on; closing releases it anyway.
        let _ = ofd_lock(self.fd, libc::F_OFD_SETLK, libc::F_UNLCK, byte);
    }
}

impl Drop for OwnFd {
    fn drop(&mut self) {
        if !self.current() {
            // Inherited across a fork: the child handler closed it already, and the number may
            // now name another file of this process.
            return;
        }
        let mut fds = registry();
        fds.retain(|&fd| fd != self.fd);
        // SAFETY: `fd` is ours (opened in `open`, not closed since: this is the one drop), and
        // it is closed under the registry mutex, so a concurrent fork sees it either
        // registered and open or neither.
        unsafe { libc::close(self.fd) };
    }
}

/// `fcntl(cmd)` with a one-byte `flock` of type `kind` at `byte`; returns the struct as the
/// kernel left it.
fn ofd_lock(fd: RawFd, cmd: libc::c_int, kind: libc::c_int, byte: u64) -> io::Result<libc::flock> {
    // SAFETY: an all-zero `flock` is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    loop {
        // SAFETY: fcntl reads (and for F_OFD_GETLK writes) the `flock` on our stack for the
        // duration of the call; `fd` is open for the caller's borrow.
        if unsafe { libc::fcntl(fd, cmd, &mut fl) } == 0 {
            return Ok(fl);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A holder's lease: an own description of the file with the lock on its id's byte. Its
/// [`word`](Lease::word) goes into the slot it holds; dropping the lease (or dying) makes
/// that word read as dead.
pub(crate) struct Lease {
    fd: OwnFd,
    word: u128,
}

impl Lease {
    /// A new lease on `file` (at `path`) with a fresh id.
    pub(crate) fn new(file: &File, path: &Path) -> io::Result<Lease> {
        let fd = OwnFd::open(file, path)?;
        // A clash means a live holder drew the same id: draw again. Bounded, in case the
        // random source is broken.
        for _ in 0..64 {
            let id = random_id()?;
            if fd.try_lock(LIVENESS + id)? {
                return Ok(Lease {
                    fd,
                    word: pack(u64::from(std::process::id()), id),
                });
            }
        }
        Err(io::Error::other("no free liveness id after 64 draws"))
    }

    /// A lease on `file` for an existing lease word of this process (a topic member holding
    /// a partition under its membership word); `Ok(None)` if that word's byte is locked already.
    pub(crate) fn adopt(file: &File, path: &Path, word: u128) -> io::Result<Option<Lease>> {
        let id = id_of(word).ok_or_else(|| io::Error::other("not a lease word"))?;
        let fd = OwnFd::open(file, path)?;
        Ok(fd.try_lock(LIVENESS + id)?.then_some(Lease { fd, word }))
    }

    /// The lease word: `pid | id << 64`, never 0.
    pub(crate) fn word(&self) -> u128 {
        self.word
    }

    /// Whether this lease was taken by this process (not inherited across a `fork`).
    pub(crate) fn current(&self) -> bool {
        self.fd.current()
    }

    /// Fails with [`Error::Forked`](crate::Error::Forked) (naming `path`, the file or topic
    /// of the handle) in a child forked after this lease was taken: the handle holding it, and
    /// its slot, are the parent's.
    // Generic over the path so that a caller's `&PathBuf` is turned into a `&Path` only on the
    // error path: done at the call, it loaded the path's pointer and length on every poll
    // (callgrind, `call_cost`).
    #[inline]
    pub(crate) fn check_current<P: AsRef<Path> + ?Sized>(&self, path: &P) -> crate::Result<()> {
        if self.current() {
            return Ok(());
        }
        Err(self.forked(path.as_ref()))
    }

    /// The error of [`check_current`](Self::check_current), out of line.
    #[cold]
    #[inline(never)]
    fn forked(&self, path: &Path) -> crate::Error {
        crate::Error::Forked {
            path: path.to_path_buf(),
            pid: pid(self.word),
        }
    }

    /// The lease's own description of the file, for the holder's other locks (a flush).
    pub(crate) fn fd(&self) -> &OwnFd {
        &self.fd
    }
}

/// The id in a lease word, if it can be one.
fn id_of(word: u128) -> Option<u64> {
    let (_, id) = unpack(word);
    (id != 0 && id < ID_LIMIT).then_some(id)
}

/// A 64-bit tag of lease word `word`, never 0: what a slot stores next to fields that belong to
/// the word's holder, so a reader can tell they are this holder's and not a predecessor's. Both
/// halves are mixed, not one alone: a new holder with a recycled pid has the same low half as
/// a dead predecessor.
pub(crate) fn tag(word: u128) -> u64 {
    let (low, high) = unpack(word);
    (low ^ high.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32)).max(1)
}

/// The process id recorded in a lease word (as its holder saw it; another pid namespace may
/// number it differently).
pub(crate) fn pid(word: u128) -> u32 {
    word as u32
}

/// Whether the holder of lease word `word`, found in `file`, still holds its lease. 0 and
/// words that cannot be lease words read as dead; a query that fails reads as alive.
pub(crate) fn alive(file: &File, word: u128) -> bool {
    let Some(id) = id_of(word) else {
        return false;
    };
    match ofd_lock(
        file.as_raw_fd(),
        libc::F_OFD_GETLK,
        libc::F_WRLCK,
        LIVENESS + id,
    ) {
        Ok(fl) => fl.l_type != libc::F_UNLCK as libc::c_short,
        Err(_) => true,
    }
}

/// A random id in `1..ID_LIMIT` from the kernel's generator.
fn random_id() -> io::Result<u64> {
    let mut buf = [0u8; 8];
    loop {
        // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`, which outlives the call.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n == buf.len() as isize {
            break;
        }
        let e = io::Error::last_os_error();
        if n >= 0 || e.kind() != io::ErrorKind::Interrupted {
            return Err(if n >= 0 {
                io::Error::other("short read from getrandom")
            } else {
                e
            });
        }
    }
    Ok(u64::from_le_bytes(buf) % (ID_LIMIT - 1) + 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, File, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        (dir, file, path)
    }

    /// Whether `word` reads dead within a few seconds. A dropped lease is dead once every
    /// copy of its description is closed, and a thread of this test binary that forks (another
    /// test) gives its child copies for the moment until the child's fork handler closes them.
    pub(crate) fn dies(file: &File, word: u128) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alive(file, word) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_lease_is_alive_until_dropped_and_ids_differ() {
        let (_dir, file, path) = scratch();
        let a = Lease::new(&file, &path).unwrap();
        let b = Lease::new(&file, &path).unwrap();
        assert_ne!(a.word(), b.word());
        assert_eq!(pid(a.word()), std::process::id());
        assert!(alive(&file, a.word()) && alive(&file, b.word()));
        let word = a.word();
        drop(a);
        assert!(dies(&file, word), "a dropped lease is dead");
        assert!(alive(&file, b.word()));
        assert!(!alive(&file, 0), "0 is nobody");
        assert!(
            !alive(&file, pack(1, u64::MAX)),
            "an impossible id is nobody"
        );
    }

    #[test]
    fn adopting_a_word_on_another_file_locks_it_there_once() {
        let (_dir, file, path) = scratch();
        let (_dir2, other, other_path) = scratch();
        let lease = Lease::new(&file, &path).unwrap();
        assert!(!alive(&other, lease.word()));
        let adopted = Lease::adopt(&other, &other_path, lease.word())
            .unwrap()
            .unwrap();
        assert!(alive(&other, lease.word()));
        assert!(Lease::adopt(&other, &other_path, lease.word())
            .unwrap()
            .is_none());
        drop(adopted);
        assert!(dies(&other, lease.word()));
        assert!(alive(&file, lease.word()));
    }

    #[test]
    fn a_lease_works_after_its_path_is_removed() {
        let (_dir, file, path) = scratch();
        std::fs::remove_file(&path).unwrap();
        let lease = Lease::new(&file, &path).unwrap();
        assert!(alive(&file, lease.word()));
    }

    #[test]
    fn a_forked_child_drops_its_parents_leases_and_its_handles_know_it() {
        let (_dir, file, path) = scratch();
        let lease = Lease::new(&file, &path).unwrap();
        let word = lease.word();
        // `ready`: the child says it runs (its fork handlers are done); `hold`: closed by the
        // parent to let the child exit.
        let (mut ready, mut hold) = ([0; 2], [0; 2]);
        // SAFETY: each array has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(ready.as_mut_ptr()) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::pipe(hold.as_mut_ptr()) }, 0);
        // SAFETY: the child only calls async-signal-safe functions plus our own fork-handled
        // code, then `_exit`s without running destructors or test-harness code.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            let ok: u8 = if lease.current() { b'n' } else { b'y' };
            std::mem::forget(lease);
            let mut byte = 0u8;
            // SAFETY: closes our copy of the write end (so the read below ends when the parent closes
            // its own), then one-byte writes and reads on our pipe ends, from and into live bytes.
            unsafe {
                libc::close(hold[1]);
                libc::write(ready[1], (&ok as *const u8).cast(), 1);
                libc::read(hold[0], (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut ok = 0u8;
        // SAFETY: closes our copies of the child's ends, then reads one byte into `ok`.
        unsafe {
            libc::close(ready[1]);
            libc::close(hold[0]);
            assert_eq!(libc::read(ready[0], (&mut ok as *mut u8).cast(), 1), 1);
        }
        assert_eq!(
            ok, b'y',
            "the child's copy of the handle knows it is not its own"
        );
        assert!(lease.current());
        assert!(alive(&file, word));
        drop(lease);
        assert!(
            dies(&file, word),
            "a running child that inherited the description keeps no copy of the lock"
        );
        let mut status = 0;
        // SAFETY: closing the write end releases the child; then we wait for our own child.
        unsafe {
            libc::close(hold[1]);
            libc::close(ready[0]);
            assert_eq!(libc::waitpid(child, &mut status, 0), child);
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
