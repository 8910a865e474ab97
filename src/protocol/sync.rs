//! Shared-memory primitives: the atomics shim (std or loom) and the [`Region`] they live in.
//!
//! Production code maps a file and views its protocol words as atomics through raw pointers
//! (`AtomicU64::from_ptr`); no reference to a plain value is built over them. Record bytes are
//! different: zero-copy reads and claims hand out `&[u8]` and `&mut [u8]` over the mapping
//! (made from [`Region::bytes_ptr`] by their callers). That is sound only against peers that
//! follow the protocol, which keeps every other writer off those bytes while the reference
//! lives. A hostile peer writing the file directly can change them under the reference, but
//! cannot make a process access memory outside the mapping; readers that do not trust every
//! writer read validated copies instead ("Trust boundary" in `ARCHITECTURE.md`).
//!
//! Under `cfg(loom)` the same [`Region`] API is backed by loom atomics on the heap, so the
//! ring protocol in `ring.rs` runs unchanged inside the model checker.
//!
//! Waiting uses a cross-process futex (`FUTEX_WAIT`/`FUTEX_WAKE` without `FUTEX_PRIVATE_FLAG`,
//! because the word is shared between processes); under loom it is a mutex + condvar with the
//! same check-then-sleep atomicity.

use std::time::Duration;

use crate::protocol::crc;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use portable_atomic::AtomicU128;

/// Splits a 128-bit word into `(low, high)` halves.
pub(crate) fn unpack(v: u128) -> (u64, u64) {
    (v as u64, (v >> 64) as u64)
}

/// Joins `(low, high)` into one 128-bit word.
pub(crate) fn pack(low: u64, high: u64) -> u128 {
    (low as u128) | ((high as u128) << 64)
}

/// A contiguous byte region shared with other processes (production: a `MAP_SHARED` mapping).
///
/// Offsets passed to the accessors are computed by shmq from a validated layout, never read
/// from the region itself; they are checked with `debug_assert!` and by construction.
#[cfg(not(loom))]
pub(crate) struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the region is only ever accessed through atomics or through the ring protocol, which
// gives each byte range a single writer at a time; the pointer itself may move between threads.
#[cfg(not(loom))]
unsafe impl Send for Region {}
// SAFETY: as above; shared access from several threads is the whole point and goes through atomics.
#[cfg(not(loom))]
unsafe impl Sync for Region {}

#[cfg(not(loom))]
impl Region {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Safety
    /// `base` must be 4096-byte aligned and valid for reads and writes of `len` bytes for the
    /// lifetime of the `Region` (the owner keeps the mapping alive).
    pub(crate) unsafe fn new(base: *mut u8, len: usize) -> Self {
        debug_assert_eq!(base as usize % 4096, 0);
        Region { base, len }
    }

    // Always inlined, as the accessors below: each is a compare and a branch where it is used.
    #[inline(always)]
    fn ptr(&self, off: u64, size: u64, align: u64) -> *mut u8 {
        if !off.is_multiple_of(align) || off.checked_add(size).is_none_or(|e| e > self.len as u64) {
            outside(off, size, self.len);
        }
        // SAFETY: off + size <= len was just checked, so the result stays inside the region.
        unsafe { self.base.add(off as usize) }
    }

    /// The 64-bit atomic word at byte offset `off` (8-aligned).
    #[inline(always)]
    pub(crate) fn u64(&self, off: u64) -> &AtomicU64 {
        // SAFETY: `ptr` checked alignment and bounds; the mapping outlives `&self`; the word is
        // only accessed atomically by every process that follows the protocol.
        unsafe { AtomicU64::from_ptr(self.ptr(off, 8, 8).cast()) }
    }

    /// The `N` consecutive 64-bit atomic words at byte offset `off` (8-aligned), with one
    /// bounds check for all of them.
    #[inline(always)]
    pub(crate) fn u64s<const N: usize>(&self, off: u64) -> &[AtomicU64; N] {
        // SAFETY: `ptr` checked the alignment and that all `8 * N` bytes lie in the region; an
        // `AtomicU64` has the size and alignment of a `u64`, so `[AtomicU64; N]` is laid out as
        // `N` consecutive words; the rest as for `u64`.
        unsafe { &*self.ptr(off, 8 * N as u64, 8).cast::<[AtomicU64; N]>() }
    }

    /// [`u64s`](Self::u64s) without the bounds check, for words at offsets computed from a
    /// layout checked against the region once (the ring's slots and record headers, see
    /// `Ring::new`).
    ///
    /// # Safety
    /// `off` must be 8-aligned and `off + 8 * N` at most the region's [`len`](Self::len).
    #[inline(always)]
    pub(crate) unsafe fn u64s_unchecked<const N: usize>(&self, off: u64) -> &[AtomicU64; N] {
        debug_assert!(off.is_multiple_of(8) && off + 8 * N as u64 <= self.len as u64);
        // SAFETY: the caller guarantees alignment and bounds; the rest as for `u64s`.
        unsafe { &*self.base.add(off as usize).cast::<[AtomicU64; N]>() }
    }

    /// The region's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len as u64
    }

    /// Asks the CPU to fetch the cache line holding byte `off` (`prefetcht0`; nothing on other
    /// architectures). A hint: it reads nothing into the program and never faults, whatever
    /// the offset.
    #[inline(always)]
    pub(crate) fn prefetch(&self, off: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let line = self.base.wrapping_add(off as usize).cast::<i8>();
            // SAFETY: a prefetch is only a hint to the cache: it does not access memory as the
            // program sees it and does not fault on any address, so no bound is needed.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = off;
    }

    /// The 32-bit atomic word at byte offset `off` (4-aligned).
    #[inline(always)]
    pub(crate) fn u32(&self, off: u64) -> &AtomicU32 {
        // SAFETY: as for `u64`.
        unsafe { AtomicU32::from_ptr(self.ptr(off, 4, 4).cast()) }
    }

    /// The 128-bit atomic word at byte offset `off` (16-aligned).
    #[inline(always)]
    pub(crate) fn u128(&self, off: u64) -> &AtomicU128 {
        // SAFETY: as for `u64`; 16-byte alignment is what `AtomicU128` requires, and lock-freedom
        // (cmpxchg16b) is checked when a queue is opened, so the atomicity holds across processes.
        unsafe { AtomicU128::from_ptr(self.ptr(off, 16, 16).cast()) }
    }

    /// Copies `data` into the region at `off`.
    ///
    /// The caller must own `[off, off + data.len())` under the ring protocol (a claimed record).
    pub(crate) fn write_bytes(&self, off: u64, data: &[u8]) {
        let dst = self.ptr(off, data.len() as u64, 1);
        // SAFETY: bounds checked by `ptr`; `data` is process-local so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) }
    }

    /// [`write_bytes`](Self::write_bytes) without the bounds check, for a range computed from
    /// a layout checked against the region once (a claimed record's payload, see `Ring::new`).
    ///
    /// # Safety
    /// `off + data.len()` must be at most the region's [`len`](Self::len), and the caller must
    /// own the range under the ring protocol.
    #[inline(always)]
    pub(crate) unsafe fn write_bytes_unchecked(&self, off: u64, data: &[u8]) {
        debug_assert!(off + data.len() as u64 <= self.len as u64);
        // SAFETY: in bounds by the caller's guarantee; `data` is process-local, so the ranges
        // cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.add(off as usize), data.len())
        }
    }

    /// [`write_bytes_unchecked`](Self::write_bytes_unchecked) that also returns the CRC32C of
    /// `data`, computed in the copy's pass where the CPU can (`crc::copy_crc32c`).
    ///
    /// # Safety
    /// As for `write_bytes_unchecked`.
    #[inline(always)]
    pub(crate) unsafe fn write_bytes_crc_unchecked(&self, off: u64, data: &[u8]) -> u32 {
        debug_assert!(off + data.len() as u64 <= self.len as u64);
        // SAFETY: in bounds by the caller's guarantee, so the destination is valid for
        // `data.len()` bytes; `data` is process-local, so the ranges cannot overlap.
        unsafe { crc::copy_crc32c(self.base.add(off as usize), data) }
    }

    /// Copies `out.len()` bytes at `off` into `out`.
    pub(crate) fn read_bytes(&self, off: u64, out: &mut [u8]) {
        let src = self.ptr(off, out.len() as u64, 1);
        // SAFETY: bounds checked by `ptr`; `out` is process-local. The bytes may be overwritten
        // concurrently by a lapping producer; callers that can be lapped validate afterwards.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) }
    }

    /// A raw pointer to `len` bytes at `off`, for zero-copy access by the ring's owners.
    #[inline(always)]
    pub(crate) fn bytes_ptr(&self, off: u64, len: u64) -> *mut u8 {
        self.ptr(off, len, 1)
    }

    /// [`bytes_ptr`](Self::bytes_ptr) without its bounds check, for ranges inside a layout
    /// checked against the region once (a record's payload, see `Ring::read_known`).
    ///
    /// # Safety
    /// `off + len` must be at most the region's [`len`](Self::len).
    #[inline(always)]
    pub(crate) unsafe fn bytes_ptr_unchecked(&self, off: u64, len: u64) -> *mut u8 {
        debug_assert!(off
            .checked_add(len)
            .is_some_and(|end| end <= self.len as u64));
        // SAFETY: `off + len` is at most the region's length `self.len` (the caller's
        // guarantee), so the result stays inside the region.
        unsafe { self.base.add(off as usize) }
    }

    /// Sleeps while the futex word at `off` still holds `expected`, at most `timeout`.
    /// Returns on wake-up, timeout, signal or value change; callers re-check their condition.
    pub(crate) fn wait(&self, off: u64, expected: u32, timeout: Option<Duration>) {
        futex::wait(self.u32(off), expected, timeout);
    }

    /// Wakes every sleeper on the futex word at `off`.
    pub(crate) fn wake_all(&self, off: u64) {
        futex::wake_all(self.u32(off));
    }
}

/// The failure of a region access out of bounds or misaligned: a bug in shmq, since offsets
/// come from a validated layout. Kept out of line so that the accessors inline to a compare
/// and a branch.
#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn outside(off: u64, size: u64, len: usize) -> ! {
    panic!("shmq internal error: region access {off}+{size} outside {len} bytes")
}

/// The two futex calls behind every sleep and wake-up of shmq: `FUTEX_WAIT` and `FUTEX_WAKE`
/// on a 32-bit word, *shared* (without `FUTEX_PRIVATE_FLAG`), so that a process can wake
/// another one sleeping on a word of a file both map.
///
/// Public so that a program measuring shmq (the ping-pong harness's futex floor) makes the very
/// calls shmq makes, not a copy of them. Both are safe: the kernel reads the word (and the
/// timeout) only for the duration of the call.
#[cfg(not(loom))]
pub mod futex {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// Sleeps while `word` still holds `expected`, at most `timeout` (`None`: no limit).
    /// Returns `false` if the timeout ran out, `true` otherwise: on a wake-up, on a signal, or
    /// at once when the word no longer held `expected`; the caller re-checks its condition.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> bool {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: FUTEX_WAIT reads the aligned u32 at `word` (valid for the call) and the
        // optional timespec on our stack. Shared (non-PRIVATE) futex because other processes
        // wake it.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                0u32,
            )
        };
        // Every other error (EAGAIN: the value changed, EINTR) means "re-check".
        !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT))
    }

    /// Wakes every sleeper on `word`, in any process.
    pub fn wake_all(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE only uses the address as a key; it is a valid aligned u32.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
}

/// Loom stand-in for a 128-bit atomic: a mutex makes each operation atomic and, being a loom
/// primitive, lets the model checker interleave around it.
#[cfg(loom)]
pub(crate) struct AtomicU128(loom::sync::Mutex<u128>);

#[cfg(loom)]
impl AtomicU128 {
    fn new(v: u128) -> Self {
        AtomicU128(loom::sync::Mutex::new(v))
    }
    pub(crate) fn load(&self, _: Ordering) -> u128 {
        *self.0.lock().unwrap()
    }
    pub(crate) fn store(&self, v: u128, _: Ordering) {
        *self.0.lock().unwrap() = v;
    }
    pub(crate) fn compare_exchange(
        &self,
        current: u128,
        new: u128,
        _: Ordering,
        _: Ordering,
    ) -> Result<u128, u128> {
        let mut g = self.0.lock().unwrap();
        if *g == current {
            *g = new;
            Ok(current)
        } else {
            Err(*g)
        }
    }
}

/// Loom model of the shared region: every 8-byte word is a loom atomic, 32-bit futex words and
/// 128-bit words live in side tables keyed by offset.
#[cfg(loom)]
pub(crate) struct Region {
    words: Vec<AtomicU64>,
    halves: Vec<AtomicU32>,
    wides: Vec<AtomicU128>,
    futex: loom::sync::Mutex<()>,
    cond: loom::sync::Condvar,
}

#[cfg(loom)]
impl Region {
    /// A zeroed model region of `len` bytes.
    pub(crate) fn new_model(len: usize) -> Self {
        Region {
            words: (0..len / 8).map(|_| AtomicU64::new(0)).collect(),
            halves: (0..len / 4).map(|_| AtomicU32::new(0)).collect(),
            wides: (0..len / 16).map(|_| AtomicU128::new(0)).collect(),
            futex: loom::sync::Mutex::new(()),
            cond: loom::sync::Condvar::new(),
        }
    }
    pub(crate) fn u64(&self, off: u64) -> &AtomicU64 {
        &self.words[(off / 8) as usize]
    }
    pub(crate) fn u64s<const N: usize>(&self, off: u64) -> &[AtomicU64; N] {
        let first = (off / 8) as usize;
        self.words[first..first + N]
            .try_into()
            .expect("a slice of N words")
    }
    /// As in production; checked here (the model indexes its words).
    ///
    /// # Safety
    /// None needed in the model; the production contract is `off` 8-aligned and
    /// `off + 8 * N` at most [`len`](Self::len).
    pub(crate) unsafe fn u64s_unchecked<const N: usize>(&self, off: u64) -> &[AtomicU64; N] {
        self.u64s(off)
    }
    /// The model region's length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.words.len() as u64 * 8
    }
    /// A cache hint: nothing to model.
    pub(crate) fn prefetch(&self, _off: u64) {}
    pub(crate) fn u32(&self, off: u64) -> &AtomicU32 {
        &self.halves[(off / 4) as usize]
    }
    pub(crate) fn u128(&self, off: u64) -> &AtomicU128 {
        &self.wides[(off / 16) as usize]
    }
    pub(crate) fn write_bytes(&self, off: u64, data: &[u8]) {
        assert!(
            off % 8 == 0 && data.len() % 8 == 0,
            "loom model copies whole words"
        );
        for (i, chunk) in data.chunks(8).enumerate() {
            let w = u64::from_le_bytes(chunk.try_into().unwrap());
            self.u64(off + 8 * i as u64).store(w, Ordering::Relaxed);
        }
    }
    /// As in production; checked here (the model copies words).
    ///
    /// # Safety
    /// None needed in the model; the production contract is `off + data.len()` at most
    /// [`len`](Self::len).
    pub(crate) unsafe fn write_bytes_unchecked(&self, off: u64, data: &[u8]) {
        self.write_bytes(off, data)
    }
    /// As in production: the copy, then the CRC32C of `data`.
    ///
    /// # Safety
    /// As for `write_bytes_unchecked`.
    pub(crate) unsafe fn write_bytes_crc_unchecked(&self, off: u64, data: &[u8]) -> u32 {
        self.write_bytes(off, data);
        crc::crc32c(data)
    }
    pub(crate) fn read_bytes(&self, off: u64, out: &mut [u8]) {
        assert!(
            off % 8 == 0 && out.len() % 8 == 0,
            "loom model copies whole words"
        );
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let w = self.u64(off + 8 * i as u64).load(Ordering::Relaxed);
            chunk.copy_from_slice(&w.to_le_bytes());
        }
    }
    pub(crate) fn wait(&self, off: u64, expected: u32, _timeout: Option<Duration>) {
        let g = self.futex.lock().unwrap();
        if self.u32(off).load(Ordering::SeqCst) == expected {
            drop(self.cond.wait(g).unwrap());
        }
    }
    pub(crate) fn wake_all(&self, _off: u64) {
        let _g = self.futex.lock().unwrap();
        self.cond.notify_all();
    }
}
