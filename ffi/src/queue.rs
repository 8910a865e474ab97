//! `shmq_queue`: creating, opening and closing queue files, and `shmq_options`.

use std::ffi::c_char;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::time::Duration;

use shmq_core::{Durability, FullPolicy, Options, Queue, Trust};

use crate::error::{guard, Failure};
use crate::non_null;
use crate::status::shmq_status;

/// An open queue file (opaque). Created by `shmq_create` or `shmq_open`, freed by `shmq_close`.
///
/// Thread safety: a queue handle may be used from several threads at once (creating producers
/// and consumers concurrently is fine). Producers and consumers keep the underlying mapping
/// alive on their own, so the queue handle may be closed before or after them.
pub struct shmq_queue {
    pub(crate) queue: Queue,
}

/// What a publish promises about machine crashes (`shmq_options.durability`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_durability {
    /// Page cache only: records reach the disk when the kernel writes them back.
    SHMQ_DURABILITY_NONE = 0,
    /// Group commit: flushed once `batch_max_bytes` accumulate and at least every
    /// `batch_max_delay_ns`.
    SHMQ_DURABILITY_BATCH = 1,
    /// A publish returns only once its record is on disk.
    SHMQ_DURABILITY_SYNC = 2,
}

/// What a producer does when the ring is full (`shmq_options.full_policy`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_full_policy {
    /// Wait (up to the publish timeout) for the slowest gating consumer group to commit.
    SHMQ_FULL_BLOCK = 0,
    /// Fail at once with `SHMQ_FULL`.
    SHMQ_FULL_REJECT = 1,
    /// Overwrite the oldest records; lapped consumers get `SHMQ_LAGGED`.
    SHMQ_FULL_OVERWRITE = 2,
}

/// Creation parameters of a queue file. Always initialise with `shmq_options_default`, which
/// sets `size` (so the struct can grow in later versions without breaking callers compiled
/// against this one), then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_options {
    /// `sizeof(shmq_options)` as known to the caller; set by `shmq_options_default`.
    pub size: usize,
    /// Data-ring size in bytes: a power of two from 4 KiB to 1 TiB. Default 64 MiB.
    pub capacity_bytes: u64,
    /// Largest payload in bytes; at most half the ring minus a record header. Default 1 MiB.
    pub max_message_bytes: u32,
    /// Durability policy. Default `SHMQ_DURABILITY_NONE`.
    pub durability: shmq_durability,
    /// Full policy. Default `SHMQ_FULL_BLOCK`.
    pub full_policy: shmq_full_policy,
    /// Permission bits of the created file. Default 0600.
    pub mode: u32,
    /// How long a claimed record may stay unwritten before readers abort it. Default 1 s.
    pub claim_timeout_ns: u64,
    /// Consumer-group slots, 1 to 64. Default 64.
    pub group_slots: u32,
    /// Producer slots (concurrent producers), 1 to 64. Default 64.
    pub producer_slots: u32,
    /// Under `SHMQ_DURABILITY_BATCH`: longest time a record waits for its flush. Default 10 ms.
    pub batch_max_delay_ns: u64,
    /// Under `SHMQ_DURABILITY_BATCH`: unflushed bytes that trigger a flush. Default 1 MiB.
    pub batch_max_bytes: u64,
    /// Nonzero: records carry a CRC32C of their payload (required by BATCH and SYNC).
    /// Default 1.
    pub checksums: u32,
}

/// The same layout with the enums as plain integers: what C wrote is read through this, so an
/// out-of-range enum value is an error rather than undefined behaviour.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawOptions {
    size: usize,
    capacity_bytes: u64,
    max_message_bytes: u32,
    durability: u32,
    full_policy: u32,
    mode: u32,
    claim_timeout_ns: u64,
    group_slots: u32,
    producer_slots: u32,
    batch_max_delay_ns: u64,
    batch_max_bytes: u64,
    checksums: u32,
}

const _: () = {
    assert!(size_of::<RawOptions>() == size_of::<shmq_options>());
    assert!(size_of::<shmq_durability>() == size_of::<u32>());
    assert!(size_of::<shmq_full_policy>() == size_of::<u32>());
    assert!(offset_of!(RawOptions, durability) == offset_of!(shmq_options, durability));
    assert!(offset_of!(RawOptions, full_policy) == offset_of!(shmq_options, full_policy));
    assert!(offset_of!(RawOptions, checksums) == offset_of!(shmq_options, checksums));
};

/// The smallest `size` accepted: the struct up to and including `producer_slots`.
const MIN_OPTIONS_SIZE: usize = offset_of!(RawOptions, producer_slots) + size_of::<u32>();

fn default_options() -> shmq_options {
    let d = Options::default();
    shmq_options {
        size: size_of::<shmq_options>(),
        capacity_bytes: d.capacity,
        max_message_bytes: d.max_message,
        durability: shmq_durability::SHMQ_DURABILITY_NONE,
        full_policy: shmq_full_policy::SHMQ_FULL_BLOCK,
        mode: d.mode,
        claim_timeout_ns: d.claim_timeout.as_nanos() as u64,
        group_slots: d.group_slots,
        producer_slots: d.producer_slots,
        batch_max_delay_ns: 10_000_000,
        batch_max_bytes: 1 << 20,
        checksums: u32::from(d.checksums),
    }
}

/// The caller's options at `p`, or the defaults if `p` is NULL.
///
/// # Safety
/// `p` is NULL or points to an `shmq_options` initialised by `shmq_options_default`.
pub(crate) unsafe fn options_or_default(p: *const shmq_options) -> Result<Options, Failure> {
    if p.is_null() {
        return Ok(Options::default());
    }
    // SAFETY: non-NULL, and the caller guarantees an initialised shmq_options, which has at
    // least `size` readable bytes.
    unsafe { read_options(p) }
}

/// Reads a caller's options: fields past the caller's `size` keep their defaults, bytes past
/// this library's struct are ignored.
///
/// # Safety
/// `p` is non-NULL and points to at least `(*p).size` readable bytes.
unsafe fn read_options(p: *const shmq_options) -> Result<Options, Failure> {
    let d = default_options();
    let defaults = RawOptions {
        size: d.size,
        capacity_bytes: d.capacity_bytes,
        max_message_bytes: d.max_message_bytes,
        durability: d.durability as u32,
        full_policy: d.full_policy as u32,
        mode: d.mode,
        claim_timeout_ns: d.claim_timeout_ns,
        group_slots: d.group_slots,
        producer_slots: d.producer_slots,
        batch_max_delay_ns: d.batch_max_delay_ns,
        batch_max_bytes: d.batch_max_bytes,
        checksums: d.checksums,
    };
    // SAFETY: the caller guarantees `(*p).size` readable bytes at `p`; every field of
    // `RawOptions` is an integer, so any bytes are valid values.
    let raw = unsafe {
        crate::read_sized(
            p.cast(),
            defaults,
            MIN_OPTIONS_SIZE,
            "options",
            "shmq_options_default",
        )
    }?;
    let durability = match raw.durability {
        0 => Durability::None,
        1 => Durability::Batch {
            max_delay: Duration::from_nanos(raw.batch_max_delay_ns),
            max_bytes: raw.batch_max_bytes,
        },
        2 => Durability::Sync,
        x => {
            return Err(Failure::einval(format!(
                "options->durability {x} is invalid"
            )))
        }
    };
    let full_policy = match raw.full_policy {
        0 => FullPolicy::Block,
        1 => FullPolicy::Reject,
        2 => FullPolicy::Overwrite,
        x => {
            return Err(Failure::einval(format!(
                "options->full_policy {x} is invalid"
            )))
        }
    };
    Ok(Options {
        capacity: raw.capacity_bytes,
        max_message: raw.max_message_bytes,
        full_policy,
        group_slots: raw.group_slots,
        producer_slots: raw.producer_slots,
        claim_timeout: Duration::from_nanos(raw.claim_timeout_ns),
        mode: raw.mode,
        durability,
        checksums: raw.checksums != 0,
    })
}

/// Fills `*out` with the default options and sets `out->size`. Returns `SHMQ_EINVAL` if `out`
/// is NULL. Safe from any thread.
///
/// # Safety
/// `out` is NULL or points to a writable `shmq_options`.
#[no_mangle]
pub unsafe extern "C" fn shmq_options_default(out: *mut shmq_options) -> shmq_status {
    guard("shmq_options_default", || {
        non_null(out, "out")?;
        // SAFETY: non-NULL, and the caller guarantees it points to a writable shmq_options.
        unsafe { out.write(default_options()) };
        Ok(())
    })
}

/// Creates a new queue file at `path` (a NUL-terminated file name) with `options` (NULL: the
/// defaults) and stores a new handle in `*out`. Fails with `SHMQ_EEXIST` if the file exists.
///
/// Ownership: the caller owns `*out` and frees it with `shmq_close`. `path` and `options` are
/// only read during the call. Safe from any thread.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `options` is NULL or points to an
/// `shmq_options` initialised by `shmq_options_default`; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_create(
    path: *const c_char,
    options: *const shmq_options,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    let make = |path: &Path| {
        // SAFETY: the caller guarantees `options` is NULL or an initialised shmq_options.
        let options = unsafe { options_or_default(options) }?;
        let queue = Queue::create(path, &options)?;
        Ok(shmq_queue { queue })
    };
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::path_handle("shmq_create", path, out, make) }
}

/// Trusts no other user or group: the `trust_owner` / `trust_group` argument of
/// `shmq_open_trusting` and `shmq_topic_open_trusting` that names nobody (`(uid_t)-1`, which
/// is never a real user or group).
pub const SHMQ_TRUST_NONE: u32 = 0xFFFF_FFFF;

/// The trust named by C arguments `owner` and `group` ([`SHMQ_TRUST_NONE`]: nobody).
pub(crate) fn trust(owner: u32, group: u32) -> Trust {
    let named = |id| (id != SHMQ_TRUST_NONE).then_some(id);
    Trust {
        owner: named(owner),
        group: named(group),
    }
}

/// Opens the existing queue file at `path` and stores a new handle in `*out`: `SHMQ_ENOENT` if
/// it does not exist, `SHMQ_ECORRUPT` / `SHMQ_EVERSION` if it is not a queue this library
/// reads, `SHMQ_EUNTRUSTED` if it belongs to another user or its group or others may write it
/// (`shmq_open_trusting` accepts another owner or group).
///
/// Ownership: the caller owns `*out` and frees it with `shmq_close`. Safe from any thread.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_open(path: *const c_char, out: *mut *mut shmq_queue) -> shmq_status {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::path_handle("shmq_open", path, out, |p| open(p, &Trust::default())) }
}

/// Opens the existing queue file at `path` like `shmq_open`, also accepting a file that
/// belongs to user `trust_owner`, or whose group is `trust_group` (which may then write it).
/// Either may be `SHMQ_TRUST_NONE`. A file every user may write is refused
/// (`SHMQ_EUNTRUSTED`) whatever is trusted.
///
/// Ownership: the caller owns `*out` and frees it with `shmq_close`. Safe from any thread.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_open_trusting(
    path: *const c_char,
    trust_owner: u32,
    trust_group: u32,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    let trust = trust(trust_owner, trust_group);
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::path_handle("shmq_open_trusting", path, out, |p| open(p, &trust)) }
}

/// The handle of the queue file at `path`, opened with `trust` (`shmq_open`,
/// `shmq_open_trusting`).
fn open(path: &Path, trust: &Trust) -> Result<shmq_queue, Failure> {
    let queue = Queue::open_trusting(path, trust)?;
    Ok(shmq_queue { queue })
}

/// Frees a queue handle (NULL: no-op). Producers and consumers created from it stay valid:
/// they keep the mapping alive until they are freed themselves.
///
/// # Safety
/// `queue` is NULL or a handle from `shmq_create`/`shmq_open` not yet closed, and no other
/// thread is using it during or after this call.
#[no_mangle]
pub unsafe extern "C" fn shmq_close(queue: *mut shmq_queue) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_close", queue) }
}

/// Checks now (rather than at the next round of the library's watcher, about once a second)
/// that the queue file is still whole and still the file its path names: `SHMQ_OK`, or
/// `SHMQ_ESTALE` if it was truncated, removed or replaced under this process (as every later
/// call on it then returns).
///
/// Safe from any thread.
///
/// # Safety
/// `queue` is NULL or a live handle from `shmq_create`/`shmq_open`.
#[no_mangle]
pub unsafe extern "C" fn shmq_check_file(queue: *const shmq_queue) -> shmq_status {
    guard("shmq_check_file", || {
        // SAFETY: the caller guarantees a NULL or live handle.
        let queue = unsafe { queue_ref(queue) }?;
        Ok(queue.check_file()?)
    })
}

/// Faults every page of the queue file into this process's page tables now (Linux's
/// `MADV_POPULATE_WRITE`, kernel 5.14 or later), so that the first lap of this process's
/// publishes and polls takes no page fault: a latency-sensitive process calls it once after
/// `shmq_open`. Makes the file resident, at about 1.5 µs per 4 KiB page on tmpfs and 11 µs on
/// ext4 (where it also dirties every page, which writeback then writes once); changes nothing
/// in it. `SHMQ_EIO` if the kernel refuses (an older kernel, out of memory),
/// `SHMQ_ESTALE` if the file was truncated or replaced.
///
/// Safe from any thread.
///
/// # Safety
/// `queue` is NULL or a live handle from `shmq_create`/`shmq_open`.
#[no_mangle]
pub unsafe extern "C" fn shmq_prefault(queue: *const shmq_queue) -> shmq_status {
    guard("shmq_prefault", || {
        // SAFETY: the caller guarantees a NULL or live handle.
        let queue = unsafe { queue_ref(queue) }?;
        Ok(queue.prefault()?)
    })
}

/// Borrows the queue of a handle argument.
///
/// # Safety
/// `q` is NULL or a live `shmq_queue` handle.
pub(crate) unsafe fn queue_ref<'a>(q: *const shmq_queue) -> Result<&'a Queue, Failure> {
    non_null(q, "queue")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle; only shared access is taken.
    Ok(unsafe { &(*q).queue })
}

// A queue handle may be shared between threads; producers and consumers move between them.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Queue>();
    send::<shmq_core::Producer>();
    send::<shmq_core::Consumer>();
};
