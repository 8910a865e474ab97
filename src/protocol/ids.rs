//! The producer-id file of idempotent producers: [`IdsTable`], each field at the one offset
//! defined here, the header's encoding and validation, and the de-duplication protocol as
//! functions over the table (FORMAT.md, "Producer-id file"; ARCHITECTURE.md, "Idempotent
//! producers"). The policy over them (creating and opening the file, taking an id, recovery)
//! is `queue/ids.rs`.
//!
//! # Protocol
//!
//! Each id slot belongs to one producer id (a name) and has one holder at a time: the process
//! whose lease word is in the slot's owner word. Only the holder writes the slot's `last`,
//! in-flight and entry words. Entry `seq mod W` remembers sequence number `seq` as
//! `(seq + 1, offset)`. Invariants:
//!
//! * (P1) An entry `(seq + 1, o)` is stored only once record `o`, carrying `seq`, is committed
//!   in the queue; `last` is above every sequence number with an entry.
//! * (P2) While a publish of `seq` may be claiming or committing a record, the in-flight words
//!   hold `(seq + 1, o)` from right after claim `o` won to after the outcome was settled: a
//!   claimed record is either named by the in-flight words, or was never committed and never
//!   will be (its claimer died before storing them, and readers abort the claim).
//! * (P3) The outcome of claim `o` is its slot tag in the queue's offset index alone: committed
//!   (published), aborted (not), still pending (its claimer is dead, so it can never commit:
//!   aborted here), or a later offset's (the ring lapped it before anyone looked: unknown).
//!
//! A retry of `seq` whose entry holds `seq + 1` is a duplicate; one older than the window
//! (`seq + W ≤ last`: its entry may hold a newer sequence number) is refused, never guessed.
//!
//! The holder's in-flight and entry words reach the next holder through the kernel's lock
//! release (SYNC P in ARCHITECTURE.md's table).

use crate::error::IdsFault;
use crate::protocol::crc;
use crate::protocol::layout::{get32, put32};
use crate::protocol::ring::{self, tag_offset, Ring, ABORTED, COMMITTED};
use crate::protocol::sync::{AtomicU128, AtomicU64, Ordering, Region};

/// The magic at byte 0 of a producer-id file.
pub(crate) const MAGIC: [u8; 8] = *b"SHMQPIDS";
/// The producer-id file format version.
pub(crate) const VERSION: u32 = 1;
/// Fewest and most id slots.
pub(crate) const MIN_SLOTS: u32 = 1;
/// See [`MIN_SLOTS`].
pub(crate) const MAX_SLOTS: u32 = 1024;
/// Smallest and largest window (entries per id; a power of two).
pub(crate) const MIN_WINDOW: u32 = 16;
/// See [`MIN_WINDOW`].
pub(crate) const MAX_WINDOW: u32 = 1 << 20;
/// Most entries of all slots together (`slots × window`): 256 MiB of entries.
pub(crate) const MAX_ENTRIES: u64 = 1 << 24;
/// Longest producer id (bytes of UTF-8).
pub(crate) const MAX_NAME: usize = 64;

// Immutable header (checksummed).
const H_VERSION: usize = 8;
const H_SLOTS: usize = 12;
const H_WINDOW: usize = 16;
const H_CRC: usize = 20;
/// Bytes of the immutable header, checksum included.
pub(crate) const HEADER_LEN: usize = H_CRC + 4;
/// The boot id of the machine that last opened the file (16 bytes).
pub(crate) const BOOT_ID: u64 = 128;

/// Id slots from byte 4096, each a slot header then the slot's entries.
const SLOT_BASE: u64 = 4096;
const SLOT_HEADER: u64 = 384;
const S_STATE: u64 = 0;
const S_NAME_LEN: u64 = 8;
const S_NAME: u64 = 16;
const S_OWNER: u64 = 128;
/// The holder's words, one 64-byte run: `last`, the in-flight pair, the counters.
const S_HOT: u64 = 256;
const LAST: usize = 0;
const INFLIGHT_SEQ: usize = 1;
const INFLIGHT_OFFSET: usize = 2;
const COUNTERS: usize = 3;
const HOT_WORDS: usize = 6;
/// Entries: `seq + 1` then the record's offset.
const ENTRY: u64 = 16;

/// A slot's state: free.
pub(crate) const FREE: u64 = 0;
/// A slot's state: it belongs to the producer id of its name.
pub(crate) const ACTIVE: u64 = 1;

fn slot_len(window: u32) -> u64 {
    SLOT_HEADER + ENTRY * u64::from(window)
}

/// The file size for `slots` slots of window `window`: exact.
pub(crate) fn file_size(slots: u32, window: u32) -> u64 {
    SLOT_BASE + u64::from(slots) * slot_len(window)
}

/// The file's settings: its immutable header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdsConfig {
    /// Id slots ([`MIN_SLOTS`] ..= [`MAX_SLOTS`]).
    pub slots: u32,
    /// Entries per id (a power of two, [`MIN_WINDOW`] ..= [`MAX_WINDOW`]).
    pub window: u32,
}

impl IdsConfig {
    /// The header bytes of a new file with these settings.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        put32(&mut b, H_VERSION, VERSION);
        put32(&mut b, H_SLOTS, self.slots);
        put32(&mut b, H_WINDOW, self.window);
        let crc = crc::crc32c(&b[..H_CRC]);
        put32(&mut b, H_CRC, crc);
        b
    }

    /// Decodes and validates a header read from a file: magic, version, checksum, then each
    /// field's range. Never panics, whatever the bytes.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<IdsConfig, IdsFault> {
        if b[..8] != MAGIC {
            return Err(IdsFault::BadMagic);
        }
        let found = get32(b, H_VERSION);
        if found != VERSION {
            return Err(IdsFault::Version { found });
        }
        if get32(b, H_CRC) != crc::crc32c(&b[..H_CRC]) {
            return Err(IdsFault::Checksum);
        }
        let config = IdsConfig {
            slots: get32(b, H_SLOTS),
            window: get32(b, H_WINDOW),
        };
        config
            .check()
            .map_err(|(field, value)| IdsFault::Field { field, value })?;
        Ok(config)
    }

    /// The first field out of its range, with its value.
    pub(crate) fn check(&self) -> Result<(), (&'static str, u64)> {
        if !(MIN_SLOTS..=MAX_SLOTS).contains(&self.slots) {
            return Err(("slots", self.slots.into()));
        }
        let w = self.window;
        if !w.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
            return Err(("window", w.into()));
        }
        if u64::from(self.slots) * u64::from(w) > MAX_ENTRIES {
            return Err(("slots × window", u64::from(self.slots) * u64::from(w)));
        }
        Ok(())
    }
}

/// The statistics of an id slot (Relaxed: only its holder writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// Records published.
    Published = 0,
    /// Retries answered as duplicates.
    Duplicates = 1,
    /// Claims whose outcome was unknown when settled (counted as not published).
    Unknown = 2,
}

/// The words of a mapped producer-id file: a view over its region (the mapping is exactly
/// [`file_size`] bytes, checked by the opener, so every offset below is in bounds).
pub(crate) struct IdsTable<'a> {
    region: &'a Region,
    config: IdsConfig,
}

impl<'a> IdsTable<'a> {
    /// The table of a file with `config` mapped as `region`.
    pub(crate) fn new(region: &'a Region, config: IdsConfig) -> Self {
        IdsTable { region, config }
    }

    /// The file's settings.
    pub(crate) fn config(&self) -> IdsConfig {
        self.config
    }

    #[inline]
    fn at(&self, slot: u32, field: u64) -> u64 {
        debug_assert!(slot < self.config.slots);
        SLOT_BASE + u64::from(slot) * slot_len(self.config.window) + field
    }

    /// Slot `slot`'s state ([`FREE`] or [`ACTIVE`]).
    pub(crate) fn state(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, S_STATE))
    }

    /// The length of slot `slot`'s name.
    pub(crate) fn name_len(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, S_NAME_LEN))
    }

    /// Reads slot `slot`'s name bytes (`out.len()` ≤ [`MAX_NAME`]).
    pub(crate) fn read_name(&self, slot: u32, out: &mut [u8]) {
        debug_assert!(out.len() <= MAX_NAME);
        self.region.read_bytes(self.at(slot, S_NAME), out);
    }

    /// Writes slot `slot`'s name bytes, zero-padded (under the admin lock, while the slot is
    /// free).
    pub(crate) fn write_name(&self, slot: u32, name: &[u8]) {
        let mut padded = [0u8; MAX_NAME];
        padded[..name.len()].copy_from_slice(name);
        self.region.write_bytes(self.at(slot, S_NAME), &padded);
    }

    /// Slot `slot`'s owner: its holder's lease word (0: none).
    pub(crate) fn owner(&self, slot: u32) -> &'a AtomicU128 {
        self.region.u128(self.at(slot, S_OWNER))
    }

    /// Slot `slot`'s holder words (`last`, in-flight, counters), with one bounds check.
    #[inline]
    fn hot(&self, slot: u32) -> &'a [AtomicU64; HOT_WORDS] {
        self.region.u64s(self.at(slot, S_HOT))
    }

    /// One above the highest sequence number slot `slot` has published.
    #[inline]
    pub(crate) fn last(&self, slot: u32) -> &'a AtomicU64 {
        &self.hot(slot)[LAST]
    }

    /// Slot `slot`'s counter `c`.
    #[inline]
    pub(crate) fn counter(&self, slot: u32, c: Counter) -> &'a AtomicU64 {
        &self.hot(slot)[COUNTERS + c as usize]
    }

    /// Adds one to slot `slot`'s counter `c` (the holder only: a load and a store).
    #[inline]
    pub(crate) fn count(&self, slot: u32, c: Counter) {
        bump(self.counter(slot, c));
    }

    /// Entry `index`'s words `[seq + 1 (0: none), offset]` in slot `slot`.
    #[inline]
    fn entry(&self, slot: u32, index: u64) -> &'a [AtomicU64; 2] {
        debug_assert!(index < u64::from(self.config.window));
        self.region.u64s(self.at(slot, SLOT_HEADER + ENTRY * index))
    }

    /// The entry of sequence number `seq`.
    #[inline]
    fn index(&self, seq: u64) -> u64 {
        seq & (u64::from(self.config.window) - 1)
    }

    /// Loads entry `index` of slot `slot`: `Some((seq, offset))`, `None` if empty;
    /// [`IdsFault::Entry`] for a sequence number that does not map to the entry.
    #[inline]
    pub(crate) fn load_entry(&self, slot: u32, index: u64) -> Result<Option<(u64, u64)>, IdsFault> {
        let [seq, offset] = self.entry(slot, index);
        // SYNC P (Acquire): pairs with the Release store of `seq + 1` after the offset.
        let stored = seq.load(Ordering::Acquire);
        if stored == 0 {
            return Ok(None);
        }
        if self.index(stored - 1) != index {
            return Err(IdsFault::Entry {
                slot,
                index,
                stored,
            });
        }
        // Relaxed: ordered after the Acquire load above.
        Ok(Some((stored - 1, offset.load(Ordering::Relaxed))))
    }

    /// Stores entry `(seq, offset)` (the holder only): offset first, then `seq + 1`.
    #[inline]
    fn store_entry(&self, slot: u32, seq: u64, offset: u64) {
        let [s, o] = self.entry(slot, self.index(seq));
        // Relaxed: published by the Release store below.
        o.store(offset, Ordering::Relaxed);
        // SYNC P (Release): whoever sees `seq + 1` sees the offset.
        s.store(seq + 1, Ordering::Release);
    }

    /// Empties entry `index` of slot `slot` (recovery, removal).
    pub(crate) fn clear_entry(&self, slot: u32, index: u64) {
        // Relaxed: under the admin lock or the recovery lock, published by what ends them.
        self.entry(slot, index)[0].store(0, Ordering::Relaxed);
    }

    /// The offset of slot `slot`'s in-flight claim, if one is noted.
    pub(crate) fn in_flight_offset(&self, slot: u32) -> Option<u64> {
        let w = self.hot(slot);
        let (s, o) = (&w[INFLIGHT_SEQ], &w[INFLIGHT_OFFSET]);
        // SYNC P (Acquire): pairs with the Release store in `note_claim`; the offset is
        // Relaxed, ordered after it.
        (s.load(Ordering::Acquire) != 0).then(|| o.load(Ordering::Relaxed))
    }

    /// Frees slot `slot` (a removal, under the admin lock, holding the slot's owner word):
    /// entries, `last`, in-flight words and counters cleared, then the state.
    pub(crate) fn free(&self, slot: u32) {
        for i in 0..u64::from(self.config.window) {
            self.clear_entry(slot, i);
        }
        self.clear_in_flight(slot);
        // Relaxed: published by the Release store of the state below.
        self.last(slot).store(0, Ordering::Relaxed);
        for c in [Counter::Published, Counter::Duplicates, Counter::Unknown] {
            // Relaxed: as `last`.
            self.counter(slot, c).store(0, Ordering::Relaxed);
        }
        // Relaxed: as `last`.
        self.name_len(slot).store(0, Ordering::Relaxed);
        // Release: a slot that reads as free is empty.
        self.state(slot).store(FREE, Ordering::Release);
    }

    /// Empties the in-flight words of slot `slot` (recovery, removal).
    pub(crate) fn clear_in_flight(&self, slot: u32) {
        // Relaxed: as in `clear_entry`.
        self.hot(slot)[INFLIGHT_SEQ].store(0, Ordering::Relaxed);
    }
}

/// What the entries of a slot say of a sequence number ([`lookup`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Published before, as this offset.
    Known(u64),
    /// Older than the window: its entry may have been reused, so nobody can tell. `oldest` is
    /// the oldest sequence number the window still answers for.
    Outside { oldest: u64 },
    /// Not published: publish it.
    New,
}

/// What the entries of slot `slot` say of sequence number `seq` (< `u64::MAX`).
pub(crate) fn lookup(t: &IdsTable<'_>, slot: u32, seq: u64) -> Result<Lookup, IdsFault> {
    if let Some((s, offset)) = t.load_entry(slot, t.index(seq))? {
        if s == seq {
            return Ok(Lookup::Known(offset));
        }
    }
    // Relaxed: written by the holder alone (this process, or a dead one: SYNC P).
    let last = t.last(slot).load(Ordering::Relaxed);
    let window = u64::from(t.config.window);
    if seq.saturating_add(window) <= last {
        return Ok(Lookup::Outside {
            oldest: last - window,
        });
    }
    Ok(Lookup::New)
}

/// Notes claim `offset` of sequence number `seq` in slot `slot`'s in-flight words (the holder,
/// right after its claim won, before it writes the record): offset first, then `seq + 1`.
#[inline(always)]
pub(crate) fn note_claim(t: &IdsTable<'_>, slot: u32, seq: u64, offset: u64) {
    let w = t.hot(slot);
    let (s, o) = (&w[INFLIGHT_SEQ], &w[INFLIGHT_OFFSET]);
    // Relaxed: published by the Release store below.
    o.store(offset, Ordering::Relaxed);
    // SYNC P (Release): whoever sees the sequence number sees the offset.
    s.store(seq + 1, Ordering::Release);
}

/// The outcome of a settled claim ([`settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Nothing was in flight.
    Idle,
    /// Record `offset` of `seq` is in the queue: its entry is stored.
    Published { seq: u64, offset: u64 },
    /// The claim of `seq` was aborted (or is now): nothing was published.
    NotPublished { seq: u64 },
    /// The ring lapped the claim before anyone looked: counted as not published.
    Unknown { seq: u64 },
}

/// Settles slot `slot`'s in-flight claim, if any: learns from the record's slot tag whether it
/// is in the queue (P3), aborting it if it is still pending (its claimer is dead or gave it
/// up), stores its entry and raises `last` if it is, counts it, and clears the in-flight
/// words. `committed`: the caller knows the record is committed (its publish returned the
/// offset), so the tag is not consulted (the ring may have lapped it since).
///
/// Run by the holder after each publish, and by a new holder for a dead one's claim.
/// [`IdsFault::InFlight`] for an offset that was never claimed (a damaged file).
#[inline]
pub(crate) fn settle(
    t: &IdsTable<'_>,
    slot: u32,
    ring: &Ring,
    committed: bool,
) -> Result<Settled, IdsFault> {
    if committed {
        Ok(settle_committed(t, slot))
    } else {
        settle_by_tag(t, slot, ring)
    }
}

/// [`settle`] of a claim whose outcome its tag tells.
#[inline(never)]
fn settle_by_tag(t: &IdsTable<'_>, slot: u32, ring: &Ring) -> Result<Settled, IdsFault> {
    let w = t.hot(slot);
    // SYNC P (Acquire): pairs with the Release store in `note_claim`.
    let stored = w[INFLIGHT_SEQ].load(Ordering::Acquire);
    if stored == 0 {
        return Ok(Settled::Idle);
    }
    let seq = stored - 1;
    // Relaxed: ordered after the Acquire load above.
    let offset = w[INFLIGHT_OFFSET].load(Ordering::Relaxed);
    let (tail, _) = ring.tail();
    if offset >= tail {
        return Err(IdsFault::InFlight { slot, offset, tail });
    }
    let settled = outcome(ring, seq, offset);
    match settled {
        // A holder killed after storing the entry, before clearing the in-flight words, left
        // nothing to do but that.
        Settled::Published { seq, offset } => {
            if t.load_entry(slot, t.index(seq))? != Some((seq, offset)) {
                record(t, slot, seq, offset);
            }
        }
        Settled::Unknown { .. } => bump(&w[COUNTERS + Counter::Unknown as usize]),
        Settled::NotPublished { .. } | Settled::Idle => {}
    }
    // Release: the entry is stored before the in-flight words read as empty.
    w[INFLIGHT_SEQ].store(0, Ordering::Release);
    Ok(settled)
}

/// [`settle`] of a claim its holder knows committed (its publish returned the offset): the
/// tag is not consulted (the ring may have lapped it since). Inline: every idempotent publish
/// makes it.
#[inline]
fn settle_committed(t: &IdsTable<'_>, slot: u32) -> Settled {
    let w = t.hot(slot);
    // SYNC P (Acquire): pairs with the Release store in `note_claim`.
    let stored = w[INFLIGHT_SEQ].load(Ordering::Acquire);
    if stored == 0 {
        return Settled::Idle;
    }
    // Relaxed: ordered after the Acquire load above.
    let offset = w[INFLIGHT_OFFSET].load(Ordering::Relaxed);
    record(t, slot, stored - 1, offset);
    // Release: the entry is stored before the in-flight words read as empty.
    w[INFLIGHT_SEQ].store(0, Ordering::Release);
    Settled::Published {
        seq: stored - 1,
        offset,
    }
}

/// Records that `seq` was published as record `offset`: its entry, `last`, the counter.
#[inline]
fn record(t: &IdsTable<'_>, slot: u32, seq: u64, offset: u64) {
    t.store_entry(slot, seq, offset);
    let last = t.last(slot);
    // Relaxed: the holder's own word (SYNC P hands it over).
    if last.load(Ordering::Relaxed) <= seq {
        last.store(seq + 1, Ordering::Relaxed);
    }
    t.count(slot, Counter::Published);
    crate::crash::point("ids.after_entry");
}

/// Adds one to a counter of the holder's (a load and a store: only the holder writes it).
#[inline]
fn bump(word: &AtomicU64) {
    // Relaxed: statistics.
    word.store(
        word.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// What record `offset`'s slot tag says of it (P3), aborting a pending claim.
fn outcome(ring: &Ring, seq: u64, offset: u64) -> Settled {
    // Bounded: each failed abort means the tag changed, to a final state or a later offset's.
    for _ in 0..4 {
        // Acquire (SYNC C): a committed tag comes with the whole record.
        let seen = ring.slot_tag(offset).load(Ordering::Acquire);
        if ring::unresolved(offset, seen) {
            // Its claimer is dead or gave it up (the holder is the only one to publish for
            // this id, and it is here): nobody can commit it any more.
            if ring.abort(offset, seen) {
                return Settled::NotPublished { seq };
            }
            continue;
        }
        if tag_offset(seen) != offset {
            return Settled::Unknown { seq };
        }
        return if seen & ABORTED == 0 && seen & COMMITTED != 0 {
            Settled::Published { seq, offset }
        } else {
            Settled::NotPublished { seq }
        };
    }
    Settled::Unknown { seq }
}
