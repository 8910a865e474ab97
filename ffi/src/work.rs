//! `shmq_worker`: work groups (competing workers with per-record acks), their options, the
//! group's pending list and counters, and reading dead-letter records.
//!
//! A delivery is settled through a `shmq_ticket` of three plain integers, rebuilt with
//! `Ticket::from_parts` at each call: the handle keeps no table of tickets, and a ticket that
//! names no delivery the worker holds is refused like an expired one (`SHMQ_ELEASE`).

use std::ffi::{c_char, OsStr};
use std::mem::{offset_of, size_of};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use shmq_core::{
    Backoff, DeadLetter, DeadReason, PendingInfo, PendingState, Start, Ticket, WorkInfo,
    WorkOptions, Worker,
};

use crate::error::{guard, Failure};
use crate::queue::{queue_ref, shmq_queue};
use crate::status::shmq_status;
use crate::{group_name, non_null, timeout};

/// A member of a work group (opaque), made by `shmq_worker_new` and freed by
/// `shmq_worker_free`. Any number of workers, in any processes and threads, share a group:
/// each record goes to one of them at a time.
///
/// Thread safety: use a worker from one thread at a time (it may move between threads).
/// Lifetime: it keeps the queue mapping alive, so it may outlive the `shmq_queue` it was made
/// from.
pub struct shmq_worker {
    worker: Worker,
}

/// How a nacked record waits before it is delivered again (`shmq_work_options.backoff`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_backoff {
    /// `backoff_initial_ms` after every delivery.
    SHMQ_BACKOFF_FIXED = 0,
    /// `backoff_initial_ms` after the first delivery, doubling with each further one, at most
    /// `backoff_max_ms`.
    SHMQ_BACKOFF_EXPONENTIAL = 1,
}

/// Where a new work group starts (`shmq_work_options.start`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_work_start {
    /// At the oldest record still in the ring.
    SHMQ_WORK_START_EARLIEST = 0,
    /// At the next record to be published.
    SHMQ_WORK_START_LATEST = 1,
}

/// The settings of a work group, used only when `shmq_worker_new` creates the group (an
/// existing group keeps its own). Always initialise with `shmq_work_options_default`, which
/// sets `size` (so the struct can grow in later versions), then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_work_options {
    /// `sizeof(shmq_work_options)` as known to the caller; set by `shmq_work_options_default`.
    pub size: usize,
    /// How long a worker holds a delivery before it is delivered again to anyone, in ms.
    /// Default 30,000.
    pub visibility_timeout_ms: u64,
    /// Deliveries after which a record that is nacked or times out is dead-lettered instead
    /// (0: unlimited; at most 4095). Default 5.
    pub max_deliveries: u32,
    /// The back-off of a nack that names no delay. Default `SHMQ_BACKOFF_FIXED`.
    pub backoff: shmq_backoff,
    /// The fixed delay, or the first delay of an exponential back-off, in ms. Default 1,000.
    pub backoff_initial_ms: u64,
    /// The longest delay of an exponential back-off, in ms (ignored for a fixed one).
    /// Default 60,000.
    pub backoff_max_ms: u64,
    /// Records dispatched but not settled at most: a power of two from 64 to 2^20.
    /// Default 4096.
    pub window: u32,
    /// Where a new group starts. Default `SHMQ_WORK_START_EARLIEST`.
    pub start: shmq_work_start,
    /// The queue file dead-lettered records are published to (a NUL-terminated path; it must
    /// exist), or NULL: they are dropped, counted as dead-lettered. Only read during
    /// `shmq_worker_new`. Default NULL.
    pub dead_letter: *const c_char,
    /// Records older than this (by their timestamp), in ms, are expired instead of delivered
    /// (0: no limit). Default 0.
    pub max_age_ms: u64,
    /// Nonzero: expired records go to the dead-letter queue too. Default 0.
    pub dead_letter_expired: u32,
}

/// The same layout with the enums as plain integers: what C wrote is read through this, so an
/// out-of-range enum value is an error rather than undefined behaviour.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawWorkOptions {
    size: usize,
    visibility_timeout_ms: u64,
    max_deliveries: u32,
    backoff: u32,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
    window: u32,
    start: u32,
    dead_letter: *const c_char,
    max_age_ms: u64,
    dead_letter_expired: u32,
}

const _: () = {
    assert!(size_of::<RawWorkOptions>() == size_of::<shmq_work_options>());
    assert!(size_of::<shmq_backoff>() == size_of::<u32>());
    assert!(size_of::<shmq_work_start>() == size_of::<u32>());
    assert!(offset_of!(RawWorkOptions, backoff) == offset_of!(shmq_work_options, backoff));
    assert!(offset_of!(RawWorkOptions, start) == offset_of!(shmq_work_options, start));
    assert!(
        offset_of!(RawWorkOptions, dead_letter_expired)
            == offset_of!(shmq_work_options, dead_letter_expired)
    );
};

/// The longest back-off of [`default_work_options`] when it is exponential.
const DEFAULT_BACKOFF_MAX_MS: u64 = 60_000;

/// Whole milliseconds of `d`, saturated.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn default_work_options() -> RawWorkOptions {
    let d = WorkOptions::default();
    let (backoff, initial, max) = match d.backoff {
        Backoff::Fixed(t) => (0, ms(t), DEFAULT_BACKOFF_MAX_MS),
        Backoff::Exponential { initial, max } => (1, ms(initial), ms(max)),
    };
    RawWorkOptions {
        size: size_of::<shmq_work_options>(),
        visibility_timeout_ms: ms(d.visibility_timeout),
        max_deliveries: d.max_deliveries,
        backoff,
        backoff_initial_ms: initial,
        backoff_max_ms: max,
        window: d.window,
        start: match d.start {
            Start::Earliest => 0,
            Start::Latest => 1,
        },
        dead_letter: std::ptr::null(),
        max_age_ms: d.max_age.map_or(0, ms),
        dead_letter_expired: u32::from(d.dead_letter_expired),
    }
}

/// Fills `*out` with the default work-group settings and sets `out->size`. Safe from any
/// thread.
///
/// # Safety
/// `out` is NULL or points to a writable `shmq_work_options`.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_options_default(out: *mut shmq_work_options) -> shmq_status {
    guard("shmq_work_options_default", || {
        non_null(out, "out")?;
        let raw = default_work_options();
        // SAFETY: non-NULL and writable per the caller's contract; `RawWorkOptions` has the
        // layout of `shmq_work_options` (checked above) and the values written to its enum
        // fields are valid variants.
        unsafe { out.cast::<RawWorkOptions>().write(raw) };
        Ok(())
    })
}

/// The caller's settings at `p` (NULL: the defaults) as the library's.
///
/// # Safety
/// `p` is NULL or points to a `shmq_work_options` initialised by `shmq_work_options_default`,
/// whose `dead_letter` is NULL or a NUL-terminated string.
unsafe fn work_options(p: *const shmq_work_options) -> Result<WorkOptions, Failure> {
    if p.is_null() {
        return Ok(WorkOptions::default());
    }
    // SAFETY: non-NULL, and the caller guarantees an initialised struct of at least `size`
    // bytes; every field of `RawWorkOptions` is an integer or a raw pointer.
    let raw: RawWorkOptions = unsafe {
        crate::read_sized(
            p.cast(),
            default_work_options(),
            size_of::<RawWorkOptions>(),
            "options",
            "shmq_work_options_default",
        )
    }?;
    let backoff = match raw.backoff {
        0 => Backoff::Fixed(Duration::from_millis(raw.backoff_initial_ms)),
        1 => Backoff::Exponential {
            initial: Duration::from_millis(raw.backoff_initial_ms),
            max: Duration::from_millis(raw.backoff_max_ms),
        },
        x => return Err(Failure::einval(format!("options->backoff {x} is invalid"))),
    };
    let start = match raw.start {
        0 => Start::Earliest,
        1 => Start::Latest,
        x => return Err(Failure::einval(format!("options->start {x} is invalid"))),
    };
    let dead_letter = if raw.dead_letter.is_null() {
        None
    } else {
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
        let path = unsafe { crate::c_str(raw.dead_letter, "options->dead_letter") }?;
        Some(PathBuf::from(OsStr::from_bytes(path.to_bytes())))
    };
    Ok(WorkOptions {
        visibility_timeout: Duration::from_millis(raw.visibility_timeout_ms),
        max_deliveries: raw.max_deliveries,
        backoff,
        window: raw.window,
        start,
        dead_letter,
        max_age: (raw.max_age_ms != 0).then(|| Duration::from_millis(raw.max_age_ms)),
        dead_letter_expired: raw.dead_letter_expired != 0,
    })
}

/// Joins work group `group` (NUL-terminated UTF-8) on `queue` and stores the worker in `*out`.
/// A group that does not exist is created with `options` (NULL: the defaults); an existing
/// one keeps its settings. `SHMQ_EINVAL` if `group` is a plain consumer group (the last-error
/// message says so) or an option is out of range, `SHMQ_EBUSY` if every worker slot of the
/// group is held by a live worker or every group slot is used.
///
/// The caller owns `*out` and frees it with `shmq_worker_free`.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `group` is NULL or a NUL-terminated string;
/// `options` is NULL or an `shmq_work_options` initialised by `shmq_work_options_default`
/// (its `dead_letter` NULL or a NUL-terminated string); `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_worker_new(
    queue: *const shmq_queue,
    group: *const c_char,
    options: *const shmq_work_options,
    out: *mut *mut shmq_worker,
) -> shmq_status {
    guard("shmq_worker_new", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `group` is NULL or a valid C string for this call.
        let group = unsafe { group_name(group) }?;
        // SAFETY: the caller guarantees `options` is NULL or initialised.
        let options = unsafe { work_options(options) }?;
        non_null(out, "out")?;
        let worker = queue.worker(group, &options)?;
        // SAFETY: `out` was checked non-NULL and is writable per the caller's contract.
        unsafe { crate::put_handle(out, shmq_worker { worker }) };
        Ok(())
    })
}

/// Frees a worker and its slot in the group (NULL: no-op). Its unsettled deliveries stay in
/// flight until their visibility timeout, then go to another worker.
///
/// # Safety
/// `worker` is NULL or a live worker handle, freed exactly once and not in use by another
/// thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_worker_free(worker: *mut shmq_worker) {
    // SAFETY: the caller's contract, passed on unchanged.
    unsafe { crate::free_handle("shmq_worker_free", worker) }
}

/// What settles a delivery: three plain integers, as `shmq_work_poll` stored them. Copy it
/// freely (it owns nothing) and settle deliveries in any order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct shmq_ticket {
    /// The record's offset.
    pub offset: u64,
    /// Which delivery of the record this is (1 the first time).
    pub deliveries: u32,
    /// When the lease of this delivery ends, wall-clock ms since the Unix epoch.
    pub deadline_ms: u64,
}

impl shmq_ticket {
    fn of(t: Ticket) -> shmq_ticket {
        shmq_ticket {
            offset: t.offset(),
            deliveries: t.deliveries(),
            deadline_ms: t.deadline_ms(),
        }
    }

    fn ticket(self) -> Ticket {
        Ticket::from_parts(self.offset, self.deliveries, self.deadline_ms)
    }
}

/// One delivery returned by `shmq_work_poll`.
///
/// `data` points into a buffer the worker owns: valid only until the next call on the same
/// worker (any `shmq_work_*` function taking it, or `shmq_worker_free`); copy the bytes to
/// keep them. Never write through it. When `len` is 0, `data` must not be dereferenced.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_job {
    /// The payload.
    pub data: *const u8,
    /// Payload length in bytes.
    pub len: usize,
    /// The record's offset.
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// How many times it has been delivered, this time included (1 the first time).
    pub deliveries: u32,
    /// What settles this delivery (`shmq_work_ack` and the others).
    pub ticket: shmq_ticket,
}

/// Waits up to `timeout_ns` for a record (a due redelivery first, else a fresh one) and stores
/// it in `*out`. The worker holds it until `out->ticket.deadline_ms`: settle it before then,
/// or it is delivered again to any worker. `SHMQ_TIMEOUT` when nothing came in time;
/// `SHMQ_ENOENT` once the group was deleted.
///
/// # Safety
/// `worker` is NULL or a live worker not used concurrently by another thread; `out` is NULL
/// or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_poll(
    worker: *mut shmq_worker,
    timeout_ns: i64,
    out: *mut shmq_job,
) -> shmq_status {
    guard("shmq_work_poll", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let w = unsafe { worker_mut(worker) }?;
        non_null(out, "out")?;
        let t = timeout(timeout_ns)?;
        match w.poll(t)? {
            Some(job) => {
                let job = shmq_job {
                    data: job.payload.as_ptr(),
                    len: job.payload.len(),
                    offset: job.offset,
                    timestamp_ns: job.timestamp_ns,
                    deliveries: job.deliveries,
                    ticket: shmq_ticket::of(job.ticket),
                };
                // SAFETY: non-NULL (checked) and writable per the caller's contract.
                unsafe { out.write(job) };
                Ok(())
            }
            None => Err(Failure::fixed(
                shmq_status::SHMQ_TIMEOUT,
                c"shmq_work_poll: no record within the timeout",
            )),
        }
    })
}

/// Acks a delivery: the record is done. `SHMQ_ELEASE` (nothing changed) if the ticket's
/// lease ran out, the delivery was settled already, or the ticket names no delivery this
/// worker holds.
///
/// # Safety
/// `worker` is NULL or a live worker not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_ack(
    worker: *mut shmq_worker,
    ticket: shmq_ticket,
) -> shmq_status {
    guard("shmq_work_ack", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        unsafe { worker_mut(worker) }?.ack(ticket.ticket())?;
        Ok(())
    })
}

/// `shmq_work_nack`'s `delay_ms` for "after the group's back-off".
pub const SHMQ_NACK_BACKOFF: i64 = -1;

/// Gives a delivery back: delivered again (to any worker) after `delay_ms` milliseconds (0:
/// at once), or after the group's back-off for `SHMQ_NACK_BACKOFF`; other negative delays are
/// `SHMQ_EINVAL`. A record delivered the group's max deliveries is dead-lettered instead.
/// `SHMQ_ELEASE` as for `shmq_work_ack`.
///
/// # Safety
/// `worker` is NULL or a live worker not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_nack(
    worker: *mut shmq_worker,
    ticket: shmq_ticket,
    delay_ms: i64,
) -> shmq_status {
    guard("shmq_work_nack", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let w = unsafe { worker_mut(worker) }?;
        let delay = match delay_ms {
            SHMQ_NACK_BACKOFF => None,
            d if d >= 0 => Some(Duration::from_millis(d as u64)),
            d => {
                return Err(Failure::einval(format!(
                    "delay_ms {d} is invalid: use SHMQ_NACK_BACKOFF (-1) or a delay >= 0"
                )))
            }
        };
        w.nack(ticket.ticket(), delay)?;
        Ok(())
    })
}

/// Rejects a delivery: the record is dead-lettered (reason `SHMQ_DEAD_REJECTED`), copied to
/// the group's dead-letter queue if it has one. `SHMQ_ELEASE` as for `shmq_work_ack`.
///
/// # Safety
/// `worker` is NULL or a live worker not used concurrently by another thread.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_reject(
    worker: *mut shmq_worker,
    ticket: shmq_ticket,
) -> shmq_status {
    guard("shmq_work_reject", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        unsafe { worker_mut(worker) }?.reject(ticket.ticket())?;
        Ok(())
    })
}

/// Extends the lease of the delivery `*ticket` names to `by_ms` milliseconds from now and
/// stores the new deadline in `ticket->deadline_ms` (settle with the updated ticket: the old
/// one no longer matches). `SHMQ_ELEASE` as for `shmq_work_ack` (`*ticket` unchanged).
///
/// # Safety
/// `worker` is NULL or a live worker not used concurrently by another thread; `ticket` is
/// NULL or a readable and writable `shmq_ticket`.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_extend(
    worker: *mut shmq_worker,
    ticket: *mut shmq_ticket,
    by_ms: u64,
) -> shmq_status {
    guard("shmq_work_extend", || {
        // SAFETY: the caller's contract: NULL or a live handle used only by this thread.
        let w = unsafe { worker_mut(worker) }?;
        non_null(ticket, "ticket")?;
        // SAFETY: non-NULL, and readable per the caller's contract.
        let mut t = unsafe { ticket.read() }.ticket();
        w.extend(&mut t, Duration::from_millis(by_ms))?;
        // SAFETY: non-NULL, and writable per the caller's contract.
        unsafe { ticket.write(shmq_ticket::of(t)) };
        Ok(())
    })
}

/// Borrows the worker of a handle argument.
///
/// # Safety
/// `w` is NULL or a live worker handle that only this thread uses for `'a`.
unsafe fn worker_mut<'a>(w: *mut shmq_worker) -> Result<&'a mut Worker, Failure> {
    non_null(w, "worker")?;
    // SAFETY: non-NULL, and the caller guarantees a live handle used by only this thread for
    // 'a, so a unique borrow is sound.
    Ok(unsafe { &mut (*w).worker })
}

/// What an unsettled record waits for (`shmq_pending.state`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_pending_state {
    /// Delivered to a worker, which holds it until its deadline.
    SHMQ_PENDING_IN_FLIGHT = 0,
    /// To be delivered (again) at its deadline: nacked, or published with a delay.
    SHMQ_PENDING_WAITING = 1,
    /// Being copied to the dead-letter queue by a worker.
    SHMQ_PENDING_DEAD_LETTERING = 2,
}

/// One unsettled record of a work group (`shmq_work_pending`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_pending {
    /// The record's offset.
    pub offset: u64,
    /// What it waits for.
    pub state: shmq_pending_state,
    /// The process id of the worker holding it (in flight or dead-lettering), 0 for none.
    pub holder: u32,
    /// Whether that worker is still running.
    pub holder_alive: bool,
    /// When its lease ends or it is due, wall-clock ms since the Unix epoch.
    pub deadline_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u32,
}

impl shmq_pending {
    fn of(p: &PendingInfo) -> shmq_pending {
        shmq_pending {
            offset: p.offset,
            state: match p.state {
                PendingState::InFlight => shmq_pending_state::SHMQ_PENDING_IN_FLIGHT,
                PendingState::Waiting => shmq_pending_state::SHMQ_PENDING_WAITING,
                PendingState::DeadLettering => shmq_pending_state::SHMQ_PENDING_DEAD_LETTERING,
            },
            holder: p.holder.unwrap_or(0),
            holder_alive: p.holder_alive,
            deadline_ms: p.deadline_ms,
            deliveries: p.deliveries,
        }
    }
}

/// Lists the unsettled records of work group `group` (in flight, waiting, dead-lettering),
/// oldest first, as Redis's `XPENDING`: stores the first `capacity` of them in `entries`
/// and how many there are in all in `*count_out` (more than `capacity` means the list was
/// cut; call again with a larger array). A snapshot, each entry read on its own.
/// `SHMQ_ENOENT` for no such group, `SHMQ_EINVAL` for a plain consumer group.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `group` is NULL or a NUL-terminated string;
/// `entries` is NULL (only with a `capacity` of 0) or points to `capacity` writable
/// `shmq_pending`; `count_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_pending(
    queue: *const shmq_queue,
    group: *const c_char,
    entries: *mut shmq_pending,
    capacity: usize,
    count_out: *mut usize,
) -> shmq_status {
    guard("shmq_work_pending", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `group` is NULL or a valid C string for this call.
        let group = unsafe { group_name(group) }?;
        if capacity > 0 {
            non_null(entries, "entries (with a capacity > 0)")?;
        }
        non_null(count_out, "count_out")?;
        let pending = queue.pending(group)?;
        for (i, p) in pending.iter().take(capacity).enumerate() {
            // SAFETY: `i < capacity`, and the caller guarantees `capacity` writable entries.
            unsafe { entries.add(i).write(shmq_pending::of(p)) };
        }
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { count_out.write(pending.len()) };
        Ok(())
    })
}

/// A work group's counters and window (`shmq_work_group_info`). Counters are totals since the
/// group was created, statistics: each is bumped after the change it counts (a worker killed
/// in between loses that count), and the set is not one atomic snapshot.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_work_info {
    /// First deliveries.
    pub delivered: u64,
    /// Deliveries after the first (nacks and expired leases).
    pub redelivered: u64,
    /// Acks.
    pub acked: u64,
    /// Records dead-lettered: rejected, or out of deliveries.
    pub dead_lettered: u64,
    /// Records expired (time to live or max age): at their first dispatch, or by the
    /// redelivery scan when they were due again.
    pub expired: u64,
    /// Records delivered and held by a worker now.
    pub in_flight: u64,
    /// Records waiting to be delivered (again) at a due time.
    pub waiting: u64,
    /// The group's committed offset: every record before it is settled.
    pub base: u64,
    /// The next record to dispatch for the first time.
    pub next: u64,
    /// The window (entries).
    pub window: u32,
    /// Live workers.
    pub workers: u32,
}

impl shmq_work_info {
    fn of(w: &WorkInfo) -> shmq_work_info {
        shmq_work_info {
            delivered: w.delivered,
            redelivered: w.redelivered,
            acked: w.acked,
            dead_lettered: w.dead_lettered,
            expired: w.expired,
            in_flight: w.in_flight,
            waiting: w.waiting,
            base: w.base,
            next: w.next,
            window: w.window,
            workers: w.workers,
        }
    }
}

/// Stores the counters and window of work group `group` in `*out`. `SHMQ_ENOENT` for no such
/// group, `SHMQ_EINVAL` for a plain consumer group.
///
/// # Safety
/// `queue` is NULL or a live queue handle; `group` is NULL or a NUL-terminated string; `out`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_work_group_info(
    queue: *const shmq_queue,
    group: *const c_char,
    out: *mut shmq_work_info,
) -> shmq_status {
    guard("shmq_work_group_info", || {
        // SAFETY: the caller guarantees `queue` is NULL or live.
        let queue = unsafe { queue_ref(queue) }?;
        // SAFETY: the caller guarantees `group` is NULL or a valid C string for this call.
        let group = unsafe { group_name(group) }?;
        non_null(out, "out")?;
        let info = shmq_work_info::of(&queue.work_info(group)?);
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { out.write(info) };
        Ok(())
    })
}

/// Why a record was dead-lettered (`shmq_dead_letter.reason`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum shmq_dead_reason {
    /// A worker rejected it (`shmq_work_reject`).
    SHMQ_DEAD_REJECTED = 1,
    /// It was delivered the group's max deliveries and then nacked or timed out again.
    SHMQ_DEAD_MAX_DELIVERIES = 2,
    /// Its time to live or the group's max age passed before it was delivered.
    SHMQ_DEAD_EXPIRED = 3,
}

/// A record of a dead-letter queue, read by `shmq_dead_letter_parse`. `source` and `payload`
/// point into the bytes parsed: valid as long as those are.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct shmq_dead_letter {
    /// The record's offset in its source queue.
    pub offset: u64,
    /// Its timestamp (ns since the Unix epoch).
    pub timestamp_ns: u64,
    /// When it was dead-lettered (ns since the Unix epoch).
    pub dead_at_ns: u64,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// Why it was dead-lettered.
    pub reason: shmq_dead_reason,
    /// The source queue file's absolute path, UTF-8, `source_len` bytes (not NUL-terminated).
    pub source: *const c_char,
    /// The length of `source` in bytes.
    pub source_len: usize,
    /// The original payload.
    pub payload: *const u8,
    /// The length of `payload` in bytes.
    pub payload_len: usize,
}

/// Reads the payload of a dead-letter queue's record (`len` bytes at `data`, e.g. a
/// `shmq_message` polled from that queue) into `*out`, whose `source` and `payload` point into
/// `data`. `SHMQ_ECORRUPT` for bytes that are not a dead-letter record (the last-error message
/// says why).
///
/// # Safety
/// `data` is NULL (only with a `len` of 0) or points to `len` readable bytes; `out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_dead_letter_parse(
    data: *const u8,
    len: usize,
    out: *mut shmq_dead_letter,
) -> shmq_status {
    guard("shmq_dead_letter_parse", || {
        // SAFETY: the caller guarantees `len` readable bytes at `data` for the call.
        let bytes = unsafe { crate::bytes(data, len, "data") }?;
        non_null(out, "out")?;
        let d = DeadLetter::parse(bytes)?;
        let parsed = shmq_dead_letter {
            offset: d.offset,
            timestamp_ns: d.timestamp_ns,
            dead_at_ns: d.dead_at_ns,
            deliveries: d.deliveries,
            reason: match d.reason {
                DeadReason::Rejected => shmq_dead_reason::SHMQ_DEAD_REJECTED,
                DeadReason::MaxDeliveries => shmq_dead_reason::SHMQ_DEAD_MAX_DELIVERIES,
                DeadReason::Expired => shmq_dead_reason::SHMQ_DEAD_EXPIRED,
            },
            source: d.source.as_ptr().cast(),
            source_len: d.source.len(),
            payload: d.payload.as_ptr(),
            payload_len: d.payload.len(),
        };
        // SAFETY: non-NULL (checked) and writable per the caller's contract.
        unsafe { out.write(parsed) };
        Ok(())
    })
}

// A worker moves between threads.
const _: () = {
    const fn send<T: Send>() {}
    send::<Worker>();
};
