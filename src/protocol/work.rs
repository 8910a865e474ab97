//! A work group's file: [`WorkTable`], each field at the one offset defined here, the header's
//! encoding and validation, the entry state word, and the state transitions of the work-group
//! protocol as functions over the table (FORMAT.md, "Work file"; ARCHITECTURE.md, "Work
//! groups"). The policy over them (opening, polling, dead-lettering, recovery) is
//! `queue/work/`; the loom model runs the transitions here over heap memory.
//!
//! # Protocol
//!
//! Entry `o mod W` belongs to offset `o`. Its 128-bit state word is `o << 3 | S` (low half)
//! and `deadline_ms << 20 | count << 8 | holder` (high half). Invariants:
//!
//! * (K1) `base ≤ o < base + W` for every entry that is not final (ACKED, DEAD); an entry is
//!   reused for `o + W` only once `base > o`, where `base` is the group slot's committed
//!   cursor in the queue file.
//! * (K2) A state word never repeats: the offset grows per entry, and for one offset `count`
//!   grows with every delivery while ACKED and DEAD are final. So a CAS from a remembered
//!   word succeeds only for the delivery it remembers.
//! * (K3) A delivery `(o, count)` is acked at most once, and only by its holder: the ack is a
//!   CAS from exactly `(o, IN_FLIGHT, deadline, count, holder)`.
//!
//! Every state CAS is SeqCst (SYNC K in ARCHITECTURE.md's table): its Release half publishes
//! the entry's `pos` written before it, and the base advance that reads a final
//! state (Acquire) happens after it.

use crate::error::WorkFault;
use crate::protocol::crc;
use crate::protocol::layout::{get32, get64, put32, put64, DATA_SEQ, DATA_WAITERS};
use crate::protocol::ring;
use crate::protocol::sync::{pack, unpack, AtomicU128, AtomicU64, Ordering, Region};

/// The magic at byte 0 of a work file.
pub(crate) const MAGIC: [u8; 8] = *b"SHMQWORK";
/// The work file format version.
pub(crate) const VERSION: u32 = 1;
/// Smallest and largest window (entries).
pub(crate) const MIN_WINDOW: u32 = 64;
/// See [`MIN_WINDOW`].
pub(crate) const MAX_WINDOW: u32 = 1 << 20;
/// Largest max-deliveries setting (the count field's range).
pub(crate) const MAX_DELIVERIES: u32 = 4095;
/// Longest dead-letter queue path (bytes).
pub(crate) const MAX_DLQ_PATH: usize = 1024;
/// Longest group name (bytes), as in the queue file.
const MAX_NAME: usize = 64;

// Immutable header (checksummed).
const H_VERSION: usize = 8;
const H_WINDOW: usize = 12;
const H_MAX_DELIVERIES: usize = 16;
const H_FLAGS: usize = 20;
const H_VISIBILITY: usize = 24;
const H_RETRY: usize = 32;
const H_MAX_RETRY: usize = 40;
const H_MAX_AGE: usize = 48;
const H_SLOT: usize = 56;
const H_NAME_LEN: usize = 60;
const H_NAME: usize = 64;
const H_DLQ_LEN: usize = 128;
const H_DLQ: usize = 130;
const H_CRC: usize = H_DLQ + MAX_DLQ_PATH;
/// Bytes of the immutable header, checksum included.
pub(crate) const HEADER_LEN: usize = H_CRC + 4;

/// Header flag: the retry back-off doubles per delivery.
const FLAG_EXPONENTIAL: u32 = 1;
/// Header flag: expired records are copied to the dead-letter queue.
const FLAG_DLQ_EXPIRED: u32 = 2;

// Mutable words, each on its own 128-byte line.
const NEXT: u64 = 1280;
const EARLIEST: u64 = 1408;
const SLEEPERS: u64 = 1536;
/// The boot id of the machine that last opened the file (16 bytes).
pub(crate) const BOOT_ID: u64 = 1664;
const COUNTERS: u64 = 1792;

/// Member slots: [`MEMBERS`] slots of [`MEMBER_SLOT`] bytes from byte 4096.
const MEMBER_BASE: u64 = 4096;
/// Number of member slots (a holder is one byte, 255 meaning none).
pub(crate) const MEMBERS: u32 = 64;
const MEMBER_SLOT: u64 = 64;
const M_OWNER: u64 = 0;
const M_JOINED: u64 = 16;

/// Entries: `W` entries of [`ENTRY`] bytes from byte 8192.
const ENTRY_BASE: u64 = 8192;
const ENTRY: u64 = 32;
const E_STATE: u64 = 0;
const E_POS: u64 = 16;

/// The file size for window `w`: exact.
pub(crate) fn file_size(window: u32) -> u64 {
    ENTRY_BASE + ENTRY * u64::from(window)
}

/// Why a record was dead-lettered ([`DeadLetter::reason`](crate::DeadLetter::reason)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// A worker rejected it ([`Worker::reject`](crate::Worker::reject)).
    Rejected = 1,
    /// It was delivered the group's max deliveries and then nacked or timed out again.
    MaxDeliveries = 2,
    /// Its time to live or the group's max age passed before it was delivered.
    Expired = 3,
}

impl DeadReason {
    /// The reason of code `code` (as a dead-letter record stores it), if any.
    pub(crate) fn from_code(code: u64) -> Option<DeadReason> {
        Some(match code {
            1 => DeadReason::Rejected,
            2 => DeadReason::MaxDeliveries,
            3 => DeadReason::Expired,
            _ => return None,
        })
    }
}

/// An entry's state `S` (the low 3 bits of its state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Not dispatched (the entry's offset is older, or 0 in a new file).
    None,
    /// Held by `holder` until `deadline`.
    InFlight,
    /// Acked (or an aborted offset): final.
    Acked,
    /// Dead-lettered, expired or rejected: final.
    Dead,
    /// Deliverable again (or for the first time) at `deadline`.
    Waiting,
    /// Being copied to the dead-letter queue by `holder` until `deadline`, for this reason
    /// (in the state, so that the CAS that wins the entry decides the reason too).
    DeadLettering(DeadReason),
}

impl State {
    fn from_bits(bits: u64) -> Option<State> {
        Some(match bits {
            0 => State::None,
            1 => State::InFlight,
            2 => State::Acked,
            3 => State::Dead,
            4 => State::Waiting,
            5 => State::DeadLettering(DeadReason::Rejected),
            6 => State::DeadLettering(DeadReason::MaxDeliveries),
            7 => State::DeadLettering(DeadReason::Expired),
            _ => return None,
        })
    }

    fn bits(self) -> u64 {
        match self {
            State::None => 0,
            State::InFlight => 1,
            State::Acked => 2,
            State::Dead => 3,
            State::Waiting => 4,
            State::DeadLettering(why) => 4 + why as u64,
        }
    }

    /// ACKED and DEAD: the entry's offset is done, and `base` may pass it.
    pub(crate) fn is_final(self) -> bool {
        matches!(self, State::Acked | State::Dead)
    }
}

/// No holder.
pub(crate) const NO_HOLDER: u8 = 255;
/// Largest deadline (44 bits of milliseconds since the epoch).
const MAX_DEADLINE: u64 = (1 << 44) - 1;
/// Largest offset a state word holds (61 bits).
const MAX_OFFSET: u64 = (1 << 61) - 1;

/// One entry's state word, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The offset the entry speaks of.
    pub offset: u64,
    /// Its state.
    pub state: State,
    /// Wall-clock ms since the epoch: the lease's end (IN_FLIGHT, DEAD_LETTERING) or the due
    /// time (WAITING).
    pub deadline: u64,
    /// Deliveries so far (saturating at [`MAX_DELIVERIES`]).
    pub count: u32,
    /// The member slot holding it ([`NO_HOLDER`]: none).
    pub holder: u8,
}

impl Entry {
    /// An entry of `offset` in `state`, no deadline, count 0, no holder.
    pub(crate) fn new(offset: u64, state: State) -> Entry {
        Entry {
            offset,
            state,
            deadline: 0,
            count: 0,
            holder: NO_HOLDER,
        }
    }

    /// The same delivery in another state, with another deadline and holder.
    pub(crate) fn to(self, state: State, deadline: u64, holder: u8) -> Entry {
        Entry {
            state,
            deadline,
            holder,
            ..self
        }
    }
}

/// Encodes a state word. Out-of-range fields are clamped (an offset never reaches 2^61, and
/// deadlines are clamped to 2^44 − 1 ms, the year 2527).
pub(crate) fn pack_state(e: Entry) -> u128 {
    let low = (e.offset.min(MAX_OFFSET) << 3) | e.state.bits();
    let high = (e.deadline.min(MAX_DEADLINE) << 20)
        | (u64::from(e.count.min(MAX_DELIVERIES)) << 8)
        | u64::from(e.holder);
    pack(low, high)
}

/// Decodes a state word; `None` for a state value no writer stores (a damaged file).
pub(crate) fn unpack_state(word: u128) -> Option<Entry> {
    let (low, high) = unpack(word);
    Some(Entry {
        offset: low >> 3,
        state: State::from_bits(low & 7)?,
        deadline: high >> 20,
        count: ((high >> 8) & 0xfff) as u32,
        holder: high as u8,
    })
}

/// The low 32 bits of a schedule word: the delivery delay in ms after the timestamp.
pub(crate) fn schedule_delay_ms(word: u64) -> u64 {
    word & 0xffff_ffff
}

/// The high 32 bits of a schedule word: the time to live in ms after the timestamp (0: none).
pub(crate) fn schedule_ttl_ms(word: u64) -> u64 {
    word >> 32
}

/// The work group's settings: the immutable header of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkConfig {
    /// Entries (a power of two, [`MIN_WINDOW`] ..= [`MAX_WINDOW`]).
    pub window: u32,
    /// Deliveries before a record is dead-lettered (0: unlimited).
    pub max_deliveries: u32,
    /// The retry back-off doubles per delivery.
    pub exponential: bool,
    /// Expired records go to the dead-letter queue too.
    pub dead_letter_expired: bool,
    /// The lease of a delivery, ms (≥ 1).
    pub visibility_ms: u64,
    /// The first retry delay, ms.
    pub retry_ms: u64,
    /// The cap of an exponential retry delay, ms.
    pub max_retry_ms: u64,
    /// Records older than this are expired (0: none), ms.
    pub max_age_ms: u64,
    /// The group slot in the queue file.
    pub slot: u32,
    /// The group's name.
    pub name: String,
    /// The dead-letter queue's path, UTF-8 (empty: none).
    pub dead_letter: String,
}

impl WorkConfig {
    /// The header bytes of a new file with these settings.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        put32(&mut b, H_VERSION, VERSION);
        put32(&mut b, H_WINDOW, self.window);
        put32(&mut b, H_MAX_DELIVERIES, self.max_deliveries);
        let flags = if self.exponential {
            FLAG_EXPONENTIAL
        } else {
            0
        } | if self.dead_letter_expired {
            FLAG_DLQ_EXPIRED
        } else {
            0
        };
        put32(&mut b, H_FLAGS, flags);
        put64(&mut b, H_VISIBILITY, self.visibility_ms);
        put64(&mut b, H_RETRY, self.retry_ms);
        put64(&mut b, H_MAX_RETRY, self.max_retry_ms);
        put64(&mut b, H_MAX_AGE, self.max_age_ms);
        put32(&mut b, H_SLOT, self.slot);
        let name = self.name.as_bytes();
        put32(&mut b, H_NAME_LEN, name.len() as u32);
        b[H_NAME..H_NAME + name.len()].copy_from_slice(name);
        let dlq = self.dead_letter.as_bytes();
        b[H_DLQ_LEN..H_DLQ_LEN + 2].copy_from_slice(&(dlq.len() as u16).to_le_bytes());
        b[H_DLQ..H_DLQ + dlq.len()].copy_from_slice(dlq);
        let crc = crc::crc32c(&b[..H_CRC]);
        put32(&mut b, H_CRC, crc);
        b
    }

    /// Decodes and validates a header read from a file: magic, version, checksum, then every
    /// field's range. Never panics, whatever the bytes.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<WorkConfig, WorkFault> {
        if b[..8] != MAGIC {
            return Err(WorkFault::BadMagic);
        }
        let version = get32(b, H_VERSION);
        if version != VERSION {
            return Err(WorkFault::Version { found: version });
        }
        if get32(b, H_CRC) != crc::crc32c(&b[..H_CRC]) {
            return Err(WorkFault::Checksum);
        }
        let field = |name, v: u64| WorkFault::Field {
            field: name,
            value: v,
        };
        let window = get32(b, H_WINDOW);
        if !window.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(field("window", window.into()));
        }
        let max_deliveries = get32(b, H_MAX_DELIVERIES);
        if max_deliveries > MAX_DELIVERIES {
            return Err(field("max deliveries", max_deliveries.into()));
        }
        let flags = get32(b, H_FLAGS);
        if flags & !(FLAG_EXPONENTIAL | FLAG_DLQ_EXPIRED) != 0 {
            return Err(field("flags", flags.into()));
        }
        let visibility_ms = get64(b, H_VISIBILITY);
        if visibility_ms == 0 || visibility_ms > MAX_DEADLINE {
            return Err(field("visibility timeout", visibility_ms));
        }
        let ms = |name, off| {
            let v = get64(b, off);
            if v > MAX_DEADLINE {
                Err(field(name, v))
            } else {
                Ok(v)
            }
        };
        let retry_ms = ms("retry delay", H_RETRY)?;
        let max_retry_ms = ms("max retry delay", H_MAX_RETRY)?;
        let max_age_ms = ms("max age", H_MAX_AGE)?;
        let slot = get32(b, H_SLOT);
        if slot >= 64 {
            return Err(field("group slot", slot.into()));
        }
        let name_len = get32(b, H_NAME_LEN) as usize;
        let name = (1..=MAX_NAME)
            .contains(&name_len)
            .then(|| std::str::from_utf8(&b[H_NAME..H_NAME + name_len]).ok())
            .flatten()
            .ok_or(field("group name length", name_len as u64))?;
        let dlq_len = u16::from_le_bytes([b[H_DLQ_LEN], b[H_DLQ_LEN + 1]]) as usize;
        let dead_letter = (dlq_len <= MAX_DLQ_PATH)
            .then(|| std::str::from_utf8(&b[H_DLQ..H_DLQ + dlq_len]).ok())
            .flatten()
            .ok_or(field("dead-letter path length", dlq_len as u64))?;
        Ok(WorkConfig {
            window,
            max_deliveries,
            exponential: flags & FLAG_EXPONENTIAL != 0,
            dead_letter_expired: flags & FLAG_DLQ_EXPIRED != 0,
            visibility_ms,
            retry_ms,
            max_retry_ms,
            max_age_ms,
            slot,
            name: name.to_string(),
            dead_letter: dead_letter.to_string(),
        })
    }

    /// The retry delay after delivery number `count` (≥ 1): fixed, or doubling per delivery
    /// up to the cap.
    pub(crate) fn backoff_ms(&self, count: u32) -> u64 {
        if !self.exponential {
            return self.retry_ms;
        }
        let doublings = count.saturating_sub(1).min(63);
        self.retry_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_retry_ms)
    }
}

/// The counters of a work group (Relaxed: statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// First deliveries.
    Delivered = 0,
    /// Deliveries after the first.
    Redelivered = 1,
    /// Acks.
    Acked = 2,
    /// Records dead-lettered (rejected or out of deliveries).
    DeadLettered = 3,
    /// Records expired.
    Expired = 4,
}

/// The mutable part of a mapped work file of window `window`: a view over its region (the
/// mapping is exactly [`file_size`] bytes, checked by the opener).
pub(crate) struct WorkTable<'a> {
    region: &'a Region,
    mask: u64,
}

impl<'a> WorkTable<'a> {
    /// The table of a work file with `window` entries mapped as `region`.
    pub(crate) fn new(region: &'a Region, window: u32) -> Self {
        WorkTable {
            region,
            mask: u64::from(window) - 1,
        }
    }

    /// The dispatch hint `(offset, position)`.
    pub(crate) fn next(&self) -> &'a AtomicU128 {
        self.region.u128(NEXT)
    }

    /// The lower bound of the deadlines of entries that wait for one.
    pub(crate) fn earliest(&self) -> &'a AtomicU64 {
        self.region.u64(EARLIEST)
    }

    /// The bitmap of the group's workers sleeping on the queue's data futex: bit `m` for
    /// member slot `m` (a bitmap, not a count, so that a worker killed asleep is taken out
    /// by the next owner of its slot).
    pub(crate) fn sleepers(&self) -> &'a AtomicU64 {
        self.region.u64(SLEEPERS)
    }

    /// A counter.
    pub(crate) fn counter(&self, c: Counter) -> &'a AtomicU64 {
        self.region.u64(COUNTERS + 8 * c as u64)
    }

    /// Member slot `m`'s owner lease word (0: free).
    pub(crate) fn member(&self, m: u32) -> &'a AtomicU128 {
        debug_assert!(m < MEMBERS);
        self.region
            .u128(MEMBER_BASE + u64::from(m) * MEMBER_SLOT + M_OWNER)
    }

    /// Member slot `m`'s join time (wall-clock ms).
    pub(crate) fn joined(&self, m: u32) -> &'a AtomicU64 {
        self.region
            .u64(MEMBER_BASE + u64::from(m) * MEMBER_SLOT + M_JOINED)
    }

    fn entry(&self, offset: u64) -> u64 {
        ENTRY_BASE + ENTRY * (offset & self.mask)
    }

    /// The state word of `offset`'s entry.
    pub(crate) fn state(&self, offset: u64) -> &'a AtomicU128 {
        self.region.u128(self.entry(offset) + E_STATE)
    }

    /// `pos(offset)` as the dispatcher stored it.
    pub(crate) fn pos(&self, offset: u64) -> &'a AtomicU64 {
        self.region.u64(self.entry(offset) + E_POS)
    }

    /// The byte range of `offset`'s entry (for syncing it).
    pub(crate) fn entry_range(&self, offset: u64) -> (u64, u64) {
        (self.entry(offset), ENTRY)
    }

    /// Loads `offset`'s entry: `None` if its word holds an older offset of the entry (or is
    /// 0); `Err` with the raw word if it is damaged (an impossible state, or an offset that
    /// does not map to this entry), for the caller to report.
    pub(crate) fn load(&self, offset: u64) -> Result<Option<Entry>, u128> {
        // SYNC K (Acquire, as SeqCst): pairs with the state CASes, so the `pos`
        // written before them are visible.
        let word = self.state(offset).load(Ordering::SeqCst);
        match unpack_state(word) {
            None => Err(word),
            // A new (or recovered) entry: nobody's, offset 0's included.
            Some(_) if word == 0 => Ok(None),
            Some(e) if e.offset == offset => Ok(Some(e)),
            Some(e) if e.offset & self.mask != offset & self.mask => Err(word),
            Some(_) => Ok(None),
        }
    }

    /// The CAS of a transition: from exactly `from` to `to` (same offset). False if anyone
    /// changed the word meanwhile.
    pub(crate) fn transition(&self, from: u128, to: Entry) -> bool {
        // SYNC K (SeqCst): Release publishes the entry's `pos`; SeqCst orders the
        // change before a notifier's sleeper check (SYNC W). Relaxed on failure: the caller
        // reloads.
        self.state(to.offset)
            .compare_exchange(from, pack_state(to), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// The word of `offset`'s entry if `offset` can still be dispatched there: 0 (a new or
    /// recovered entry) or an older offset's word. `None` if the entry holds `offset` (someone
    /// dispatched it) or a later offset (it was settled and the entry reused: a dispatcher
    /// that read `next` long ago must not bring it back). `Err` with the word if it is damaged.
    pub(crate) fn undispatched(&self, offset: u64) -> Result<Option<u128>, u128> {
        // SYNC K (SeqCst): see `load`.
        let seen = self.state(offset).load(Ordering::SeqCst);
        match unpack_state(seen) {
            None => Err(seen),
            Some(_) if seen == 0 => Ok(Some(seen)),
            Some(e) if e.offset & self.mask != offset & self.mask => Err(seen),
            Some(e) if e.offset >= offset => Ok(None),
            Some(_) => Ok(Some(seen)),
        }
    }

    /// Dispatches `to.offset`, whose record begins at `pos`, unless someone did already (see
    /// [`undispatched`](Self::undispatched)): raises `pos`, then CASes the state from the
    /// value loaded to `to`. `Ok(false)` if it was dispatched or the entry changed meanwhile
    /// (someone else dispatched it); `Err` with the word if it is damaged.
    pub(crate) fn dispatch(&self, to: Entry, pos: u64) -> Result<bool, u128> {
        let Some(seen) = self.undispatched(to.offset)? else {
            return Ok(false);
        };
        // Release: published by the SeqCst state CAS below (SYNC K); every contender writes
        // the same value.
        self.pos(to.offset).fetch_max(pos, Ordering::Release);
        Ok(self.transition(seen, to))
    }

    /// Lowers `earliest` to `deadline` (every deadline written does this).
    pub(crate) fn note_deadline(&self, deadline: u64) {
        // Relaxed: a hint; a scan that misses it runs at its 50 ms pace anyway.
        self.earliest().fetch_min(deadline, Ordering::Relaxed);
    }

    /// Moves `next` from `seen` to `to`; false if someone else moved it.
    pub(crate) fn advance_next(&self, seen: u128, to: (u64, u64)) -> bool {
        // AcqRel: whoever sees the new hint sees the dispatch CAS that preceded it.
        self.next()
            .compare_exchange(seen, pack(to.0, to.1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Moves the group's committed cursor (`base`) over every final entry at it: `load`
    /// reads the cursor word, `swap(seen, offset, pos)` CASes it from `seen` (the queue's
    /// fenced committed-cursor CAS, SeqCst, SYNC G), and `resolve(o)` is `pos(o)`. A failed
    /// CAS means someone else moved it: reload and go on. True if this call moved it.
    /// `Err` with the offset and word of a damaged entry at the base.
    pub(crate) fn advance_base(
        &self,
        load: impl Fn() -> u128,
        swap: impl Fn(u128, u64, u64) -> bool,
        resolve: impl Fn(u64) -> Option<u64>,
    ) -> Result<bool, (u64, u128)> {
        let mut moved = false;
        loop {
            let word = load();
            let (b, _) = unpack(word);
            // SYNC K: the load (SeqCst) sees the final state's CAS, and so everything the
            // settling worker did before it.
            match self.load(b) {
                Ok(Some(e)) if e.state.is_final() => {}
                Ok(_) => return Ok(moved),
                Err(w) => return Err((b, w)),
            }
            // Checked: `b` is read from the shared file, and a hostile u64::MAX must not wrap.
            let Some(n) = b.checked_add(1) else {
                return Ok(moved);
            };
            let Some(pos) = resolve(n) else {
                return Ok(moved);
            };
            moved |= swap(word, n, pos);
        }
    }

    /// Sleeps on the queue's data futex (`queue`'s `DATA_SEQ`) with the group's `bit` in
    /// `DATA_WAITERS`, which all the group's sleeping workers share through the sleeper
    /// bitmap (SYNC W): mark member `member` asleep, flag, re-check `changed`, sleep at most
    /// `cap`, then [`leave`](Self::leave).
    pub(crate) fn sleep(
        &self,
        queue: &Region,
        bit: u64,
        member: u32,
        changed: impl Fn() -> bool,
        cap: Option<std::time::Duration>,
    ) {
        debug_assert!(member < MEMBERS);
        // SeqCst: ordered before the bit's `fetch_or` and against the last sleeper's re-check
        // of the bitmap in `leave`.
        self.sleepers().fetch_or(1 << member, Ordering::SeqCst);
        let seen = ring::flag(queue, DATA_WAITERS, DATA_SEQ, bit);
        if !changed() {
            queue.wait(DATA_SEQ, seen, cap);
        }
        self.leave(queue, bit, member);
    }

    /// Marks member `member` awake: the last sleeper out clears the group's `bit`, and if
    /// another worker began a sleep in between it sets the bit again and wakes the sleepers,
    /// so that one re-checks under its own flag (and clears the bit again if that worker is
    /// out meanwhile, so none is left behind). A worker taking over a member slot calls this
    /// too: the slot's previous owner may have been killed asleep.
    pub(crate) fn leave(&self, queue: &Region, bit: u64, member: u32) {
        let me = 1u64 << member;
        // SeqCst as in `sleep`. Hostile bits read as "others sleep", which only costs
        // spurious wake-ups until their slots are taken over.
        if self.sleepers().fetch_and(!me, Ordering::SeqCst) & !me != 0 {
            return;
        }
        loop {
            ring::unflag(queue, DATA_WAITERS, bit);
            // SeqCst: after the clear in the single total order. A worker marked in between
            // may have re-checked and slept after the clear, when no notifier saw its bit:
            // set it again and wake the sleepers to re-check under it.
            if self.sleepers().load(Ordering::SeqCst) == 0 {
                return;
            }
            ring::flag(queue, DATA_WAITERS, DATA_SEQ, bit);
            ring::wake_on(queue, DATA_WAITERS, DATA_SEQ);
            // Still marked: that worker is out later, and the last one out clears the bit.
            // Out already: clear the bit we set, so no notifier pays for it for nothing.
            if self.sleepers().load(Ordering::SeqCst) != 0 {
                return;
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn state_words_round_trip() {
        let e = Entry {
            offset: 123_456_789,
            state: State::InFlight,
            deadline: 1_700_000_000_000,
            count: 4095,
            holder: 63,
        };
        assert_eq!(unpack_state(pack_state(e)), Some(e));
        for why in [
            DeadReason::Rejected,
            DeadReason::MaxDeliveries,
            DeadReason::Expired,
        ] {
            let e = Entry::new(7, State::DeadLettering(why));
            assert_eq!(unpack_state(pack_state(e)), Some(e));
        }
        assert_eq!(
            unpack_state(0),
            Some(Entry {
                offset: 0,
                state: State::None,
                deadline: 0,
                count: 0,
                holder: 0
            })
        );
    }

    /// A dispatcher that read `next` before offset 5 was settled and its entry reused by 69
    /// must not dispatch 5 again, nor touch 69's state; nor may it dispatch 5 twice.
    #[test]
    fn settled_and_reused_entries_are_not_dispatched_again() {
        #[repr(C, align(4096))]
        struct Page([u8; 4096]);
        let len = file_size(MIN_WINDOW) as usize;
        let mut mem: Vec<Page> = (0..len.div_ceil(4096)).map(|_| Page([0; 4096])).collect();
        // SAFETY: `mem` is 4096-aligned, at least `len` bytes long and outlives `region`.
        let region = unsafe { Region::new(mem.as_mut_ptr().cast(), len) };
        let t = WorkTable::new(&region, MIN_WINDOW);
        let e5 = Entry {
            deadline: 9,
            ..Entry::new(5, State::InFlight)
        };
        assert_eq!(t.dispatch(e5, 64), Ok(true));
        assert_eq!(t.dispatch(e5, 64), Ok(false), "dispatched already");
        let e69 = Entry {
            deadline: 9,
            ..Entry::new(69, State::InFlight)
        };
        assert!(t.transition(pack_state(e5), e5.to(State::Acked, 9, NO_HOLDER)));
        assert_eq!(t.dispatch(e69, 96), Ok(true));
        assert_eq!(t.dispatch(e5, 64), Ok(false), "settled, the entry reused");
        assert_eq!(t.load(69), Ok(Some(e69)));
        assert_eq!(t.load(5), Ok(None));
        assert_eq!(t.undispatched(6), Ok(Some(0)));
        t.state(7)
            .store(pack_state(Entry::new(8, State::Acked)), Ordering::SeqCst);
        assert!(t.undispatched(7).is_err(), "offset 8 in offset 7's entry");
    }

    #[test]
    fn headers_round_trip_and_refuse_damage() {
        let c = WorkConfig {
            window: 128,
            max_deliveries: 5,
            exponential: true,
            dead_letter_expired: false,
            visibility_ms: 30_000,
            retry_ms: 100,
            max_retry_ms: 1000,
            max_age_ms: 0,
            slot: 3,
            name: "jobs".into(),
            dead_letter: "/tmp/dlq.q".into(),
        };
        let b = c.encode();
        assert_eq!(WorkConfig::decode(&b), Ok(c.clone()));
        assert_eq!(c.backoff_ms(1), 100);
        assert_eq!(c.backoff_ms(3), 400);
        assert_eq!(c.backoff_ms(60), 1000);
        let mut bad = b;
        bad[H_WINDOW] ^= 1;
        assert_eq!(WorkConfig::decode(&bad), Err(WorkFault::Checksum));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(WorkConfig::decode(&bad), Err(WorkFault::BadMagic));
    }
}
