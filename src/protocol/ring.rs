//! The record protocol over the data ring: claim, commit, read, abort, and locating offsets.
//!
//! It works over a [`Region`] and a few offsets, not over a file, so the model checker runs the
//! same code over heap memory (`src/protocol/loom_tests.rs`).
//!
//! # Protocol
//!
//! * **Tail.** `TAIL = (next offset o, next position p)`, one 128-bit word. A producer claims
//!   record `o` with one CAS `(o, p) → (o + 1, end)`. Positions grow forever; the byte at
//!   position `p` lives at ring index `p & (capacity - 1)`. A record never straddles the ring's
//!   end: when it does not fit in the rest of the lap, it starts at the next lap (`start`) and
//!   the claim covers the unused rest as well, so `end = start + footprint`.
//! * **Slots.** Every offset `o` owns the slot `o % N` of an offset-keyed table (`N = capacity /
//!   32`, one slot per smallest record in one ring's worth of bytes). A slot holds `pos`, where
//!   record `o`'s claim begins, and `tag = o << 3 | flags`, the record's state. Slots only ever
//!   hold values shmq wrote for offsets `≡ o (mod N)`: unlike ring bytes, which may be stale
//!   payload of an earlier lap, a slot can never show a future offset by accident. The `pos`
//!   words of all slots form one table and the tags another, so a reader waiting on a tag
//!   never shares a cache line with the `fetch_max` of a position (a locked write that took
//!   a fifth of a publish's time, `perf`, when both words shared a line).
//! * **Position.** Before the tail CAS every contender for `o` does `slot.pos.fetch_max(p)`.
//!   They all read the same tail, so they agree on `p`; the winner's entry is therefore in place
//!   even if it dies right after the CAS, and `fetch_max` keeps a stalled contender's late write
//!   for an older offset from clobbering a newer one. `slot(x).pos` is `pos(x)` exactly while
//!   `x < tail.offset < x + N` ([`Ring::resolve`]). `pos(o + 1)` is where a dead claim `o` ends.
//! * **Intent.** Before the CAS a producer also publishes `(o + 1, p)` in its producer slot and
//!   clears it after its commit. Producers never claim bytes within one capacity of a live
//!   intent, so a producer that stalls mid-write never scribbles over a newer record.
//! * **Commit.** The writer fills the record header (offset, length, timestamp) and payload at
//!   `start`, then CASes the slot tag from the older value it saw to `(o, COMMITTED)` (with
//!   `WRAPPED` if the record starts at the next lap). A reader accepts record `o` only when one
//!   atomic load of the slot tag shows `(o, COMMITTED)`.
//! * **Abort.** A reader stuck on a claimed record for longer than the claim timeout CASes the
//!   tag it saw to `(o, ABORTED)`. Exactly one of commit and abort wins the CAS: a late writer's
//!   publish fails with `Aborted` and its record is skipped by everyone; a committed record is
//!   never aborted (but for the later members of a run whose first record was, which nobody
//!   has read: "Runs"). Readers skip an aborted record to `pos(o + 1)`. Once `o` is aborted
//!   its slot may be reused by `o + kN`, so a late writer must not CAS from whatever tag it
//!   loads: it seals only while `unresolved(o, tag)` holds: the tag is an older offset's,
//!   with any flags, or `(o, no flags)` (the 0 of a new or cleared slot is `(0, no flags)`).
//!   A tag `(o, any flag)` or one of a later offset makes it refuse before it writes a header
//!   byte, and its publish fails with `Aborted`. `abandon` aborts its own claim by the same
//!   rule.
//! * **Runs.** A batch claims `n` records `o .. o + n` with one CAS `(o, p) → (o + n, end)`
//!   and is published all at once or not at all. Each record is placed as a single claim
//!   would place it after the one before (never straddling the ring's end), and the limit
//!   check covers `end`. Before the CAS, `pos(o)` gets `p` as for one record, and every later
//!   member's slot gets the *provisional* value `p + 1` (`fetch_max`): odd, so no reader takes
//!   it for a position, above any older lap's position of that slot and below any true
//!   position of that offset. Only the winner knows the members' positions, so it stores them
//!   right after the CAS (SYNC R), before it writes or commits a record, as *member* positions
//!   `at + 2` (a loser's provisional values lose to them): a position that also says "a later
//!   member of a run" ([`Position::Member`]). Until then a member reads as *unpublished*
//!   ([`Ring::position`]). The intent `(o + n, p)` covers the whole run until it is committed
//!   or given up.
//!
//!   The run's first record is its commit point. The producer commits the later members
//!   first, then the first record: readers read offsets in order, so nobody reaches a member
//!   before the first record is resolved, and a reader that sees it committed finds every
//!   member committed (SYNC C). If the first record is aborted instead (a reader gave it up
//!   after the claim timeout, or its producer gave up the run, which it does first record
//!   first), none of the run may be read, although some members may be committed already: a
//!   reader that skips aborted record `x` and finds `x + 1` a member or unpublished knows it
//!   belongs to `x`'s run, and aborts it at once, committed or not, walking on to the first
//!   offset whose claim began a new one ([`Ring::past_aborted`]). A producer killed anywhere
//!   before its first record's commit thus leaves nothing of its run readable, and it costs
//!   readers one claim timeout.
//! * **Transactions.** A topic transaction's record is *prepared*: its header and payload are
//!   written and its tag CASed to `(o, PREPARED)` (`COMMITTED | ABORTED`, with `WRAPPED` as for
//!   a commit), its header's schedule word holding the transaction's link
//!   (`protocol/txn.rs`). Readers wait on it as on a pending claim; its producer, or a reader
//!   after the claim timeout, CASes it to `COMMITTED` or `ABORTED` as its transaction's state
//!   word says ([`Ring::settle_prepared`]); the link stays (work groups read it as no
//!   schedule). `unresolved` is false
//!   for it, so a late producer never seals over it.
//! * **Overtaken.** A slot tag with an offset above the reader's means the slot was reused by
//!   `o + kN`: the reader was lapped.
//!
//! ## Sync points
//!
//! The orderings this protocol relies on are labelled SYNC T (tail), C (commit), W (wake-up),
//! L (lapping), I (intent), R (a run's positions) and X (a transaction's state,
//! `protocol/txn.rs`); the one table of every label, with both sides of each, is "Sync points"
//! in `ARCHITECTURE.md`.

use crate::error::Malformed;
use crate::protocol::layout::{self, footprint, RECORD_HEADER};
use crate::protocol::producers::{INTENT, INTENT_POS};

const _: () = assert!(INTENT_POS == INTENT + 8);
use crate::protocol::sync::{fence, pack, unpack, AtomicU64, Ordering, Region};

/// Record states, the low bits of a slot tag (0: never written, as in a new file).
pub(crate) const COMMITTED: u64 = 1;
pub(crate) const ABORTED: u64 = 2;
/// Flag on `COMMITTED`: the record starts at the next lap, not at the slot's position.
pub(crate) const WRAPPED: u64 = 4;
/// A record of a topic transaction, written whole, that its transaction's outcome commits or
/// aborts (with `WRAPPED` as for `COMMITTED`): see "Transactions" in the module docs.
pub(crate) const PREPARED: u64 = COMMITTED | ABORTED;
const FLAG_BITS: u32 = 3;

/// Added to a later run member's position in its slot: the slot then says both where the
/// member's claim begins and that it is a member (see "Runs"). Positions are multiples of 8,
/// and the provisional value of an unpublished member is `+ 1`.
const MEMBER: u64 = 2;

/// Marks a schedule word as a transaction's link (`protocol/txn.rs`): a schedule's time to
/// live is below 2^31 ms, so a schedule word never has this bit, and a record that carries a
/// link has no schedule.
pub(crate) const LINK_MARK: u64 = 1 << 63;

/// Whether slot tag `t` says record `offset` is prepared (a transaction's record waiting for
/// its transaction's outcome).
pub(crate) fn is_prepared(offset: u64, t: u64) -> bool {
    t == tag(offset, PREPARED) || t == tag(offset, PREPARED | WRAPPED)
}

/// Encodes a slot tag.
pub(crate) fn tag(offset: u64, flags: u64) -> u64 {
    (offset << FLAG_BITS) | flags
}

/// The offset a slot tag speaks of.
pub(crate) fn tag_offset(tag: u64) -> u64 {
    tag >> FLAG_BITS
}

/// Whether slot tag `t` can still belong to a claim of `offset` that nobody resolved, so that
/// its producer may CAS it to a final state (commit, or abort its own claim).
///
/// Until claim `offset` is committed or aborted nobody writes its slot's tag, which holds what
/// the slot's earlier records left: the tag of an older offset `offset - kN` with any flags
/// (committed, aborted, or a dead claim nobody resolved), or 0, the slot of a new file or one
/// that recovery cleared, which reads as offset 0 without flags. Every other value means the
/// claim is over: `(offset, any flag)` is an abort by a reader (or a commit already made), and
/// an offset above `offset` means the slot was reused by a later lap after the claim was
/// given up, so CASing from it would overwrite a newer record's tag and report a skipped record
/// as published.
pub(crate) fn unresolved(offset: u64, t: u64) -> bool {
    tag_offset(t) < offset || t == tag(offset, 0)
}

/// Largest position a sane cursor holds (4 EiB of traffic): larger ones come from a damaged
/// file, and refusing them keeps every position sum below `u64::MAX`.
pub(crate) const MAX_POSITION: u64 = 1 << 62;

/// Whether `(offset, position)` read from the shared file can be a cursor: an 8-aligned
/// position no larger than [`MAX_POSITION`], and at least one smallest record per offset.
pub(crate) fn sane_cursor(offset: u64, pos: u64) -> bool {
    const ALIGN_BITS: u32 = layout::RECORD_ALIGN.trailing_zeros();
    const _: () = assert!(layout::RECORD_ALIGN == 1 << ALIGN_BITS);
    // Aligned and at most `MAX_POSITION` in one compare: rotating moves the alignment bits to
    // the top, so a misaligned position becomes larger than any aligned one could. (Two tests
    // cost `Consumer::poll_batch` 6 instructions more per record: callgrind, `call_cost`.)
    let sane_pos = pos.rotate_right(ALIGN_BITS) <= MAX_POSITION >> ALIGN_BITS;
    // `offset <= pos / RECORD_HEADER` is `offset * RECORD_HEADER <= pos` without overflow, and
    // with `pos <= MAX_POSITION` it bounds the offset by `MAX_POSITION / RECORD_HEADER`.
    sane_pos && offset <= pos / RECORD_HEADER
}

/// The position a slot's `pos` word `raw` says its record's claim begins at: `raw` itself, or
/// a later run member's value less [`MEMBER`]; `None` for a provisional or implausible value.
pub(crate) fn claim_start(raw: u64) -> Option<u64> {
    match raw % layout::RECORD_ALIGN {
        0 => Some(raw),
        MEMBER => Some(raw - MEMBER),
        _ => None,
    }
}

/// Record header words (each a u64, little-endian), by index: the offset first.
const REC_OFFSET: usize = 0;
/// Low 32 bits: payload length; high 32 bits: CRC32C of the payload (0: not computed).
const REC_LEN: usize = 1;
const REC_TIMESTAMP: usize = 2;
/// The schedule word: low 32 bits the delivery delay, high 32 bits the time to live, both in
/// milliseconds after the timestamp (0: none); only work groups read it (`protocol/work.rs`).
const REC_SCHEDULE: usize = 3;
/// The words of a record header.
const HEADER_WORDS: usize = 4;
const _: () = assert!(HEADER_WORDS as u64 * 8 == RECORD_HEADER);

/// Where the ring's pieces are inside its region, and its limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingLayout {
    pub capacity: u64,
    pub max_message: u32,
    pub index: u64,
    pub index_entries: u64,
    pub data: u64,
}

/// The data ring of one queue file.
pub(crate) struct Ring {
    pub(crate) region: Region,
    pub(crate) layout: RingLayout,
    mask: u64,
}

/// A claimed, not yet committed record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub offset: u64,
    /// Position where the claim begins (`pos(offset)`).
    pub at: u64,
    /// Position of the record header (`at`, or the next lap's start if it did not fit).
    pub start: u64,
    pub len: u32,
}

/// What a reader finds at its cursor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// Record committed (see [`Ready`]).
    Ready(Ready),
    /// The record was aborted: skip to `pos(offset + 1)`.
    Aborted,
    /// Not committed yet: `tag` is the slot tag seen.
    Pending { tag: u64 },
    /// The offset's slot was reused by a later offset: the reader was lapped.
    Overtaken,
    /// The slot says committed but the record header disagrees (`start` as in `Ready`):
    /// overwritten under a lappable reader, or a corrupt file.
    Inconsistent { start: u64, why: Malformed },
}

/// A committed record that [`Ring::read`] found, and what its header says: its header is at
/// position `start`, its payload is [`len`](Self::len) bytes at
/// [`payload_ptr`](Self::payload_ptr). For a lappable reader these values are only
/// trustworthy once [`Ring::overrun`] says the bytes were not overwritten.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The position of its header.
    pub start: u64,
    /// The position right after it, where the next offset's claim begins: with the next
    /// offset, a sane cursor ([`sane_cursor`]; [`Ring::read_known`] checks it).
    pub end: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// The CRC32C its producer stored (0 in a queue without checksums).
    pub crc: u32,
    /// Its payload's length. This and the payload's place are private: only
    /// [`Ring::read_known`] makes them, after its bounds checks, so
    /// [`payload_ptr`](Self::payload_ptr) needs no check of its own.
    len: u32,
    /// The payload's address in the mapping.
    #[cfg(not(loom))]
    ptr: *const u8,
    /// The region offset of its payload (the model's region has no addresses).
    #[cfg(loom)]
    payload: u64,
}

impl Ready {
    /// Its payload's length.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    /// The region offset of its payload.
    #[cfg(loom)]
    pub(crate) fn payload(&self) -> u64 {
        self.payload
    }

    /// The address of its `len` payload bytes in the mapping of the ring that read it, inside
    /// that ring (checked when the `Ready` was made). The bytes are as safe to read as the
    /// protocol makes them: see the callers. (Addressing the payload through the checked
    /// `Region::bytes_ptr` cost `Consumer::poll` 8 instructions, callgrind, `call_cost`.)
    #[cfg(not(loom))]
    #[inline(always)]
    pub(crate) fn payload_ptr(&self) -> *const u8 {
        self.ptr
    }
}

/// A producer's last known tail word `(offset, position)`: what its last CAS stored, or what
/// a failed CAS found in the file. [`Ring::try_claim`] tests a value from the file with
/// [`sane_cursor`] once; the value of a claim it won is sane by construction (the claim's end
/// is at most `MAX_POSITION`, and each offset takes at least a smallest record), so a producer
/// that keeps winning pays no test (10 instructions of `Producer::publish`, callgrind,
/// `call_cost`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KnownTail {
    word: u128,
    /// Whether `word` passed `sane_cursor` (or was made by a claim that did).
    tested: bool,
}

impl KnownTail {
    /// A tail word read from the file, not tested yet.
    pub(crate) fn read(word: u128) -> KnownTail {
        KnownTail {
            word,
            tested: false,
        }
    }

    /// The tail `(offset, position)`, tested with [`sane_cursor`] unless it was already:
    /// `Err(Attempt::BadTail)` for one that is not a possible cursor.
    #[inline(always)]
    fn checked(&mut self) -> Result<(u64, u64), Attempt> {
        let (offset, at) = unpack(self.word);
        if !self.tested {
            if !sane_cursor(offset, at) {
                return Err(Attempt::BadTail { offset, pos: at });
            }
            self.tested = true;
        }
        Ok((offset, at))
    }

    /// The tail `(offset, position)` (for the claim loop's models and errors).
    #[cfg(loom)]
    pub(crate) fn get(self) -> (u64, u64) {
        unpack(self.word)
    }
}

/// Result of one claim attempt.
pub(crate) enum Attempt {
    Claimed(Claim),
    /// The record would end at `end`, past the caller's limit.
    NoSpace {
        end: u64,
    },
    /// The tail read from the file is not a possible cursor (a damaged file).
    BadTail {
        offset: u64,
        pos: u64,
    },
}

/// What a reader knows of where record `offset` begins ([`Ring::position`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// The record's claim begins at this position.
    At(u64),
    /// A later member of a claimed run, whose claim begins at this position (see "Runs" in
    /// the module docs).
    Member(u64),
    /// A later member of a claimed run whose producer has not stored its position yet (see
    /// "Runs" in the module docs).
    Unpublished,
    /// Not claimed yet, or the slot was reused or holds an implausible value.
    Unknown,
}

impl Ring {
    /// A ring over `region` laid out as `layout` (offsets already validated).
    ///
    /// Checks once that the offset index and the data ring lie in the region, 8-aligned, with
    /// power-of-two sizes: the slot and record-header accessors mask their offsets into these
    /// ranges and access them without a check of their own.
    pub(crate) fn new(region: Region, layout: RingLayout) -> Self {
        let RingLayout {
            capacity,
            index,
            index_entries,
            data,
            ..
        } = layout;
        let ends = |at: u64, size: Option<u64>| size.and_then(|s| at.checked_add(s));
        let index_end = ends(index, index_entries.checked_mul(layout::INDEX_SLOT));
        assert!(
            capacity.is_power_of_two()
                && capacity >= RECORD_HEADER
                && index_entries.is_power_of_two()
                && index % 8 == 0
                && data % 8 == 0
                && index_end.is_some_and(|end| end <= region.len())
                && ends(data, Some(capacity)).is_some_and(|end| end <= region.len()),
            "shmq internal error: ring layout {layout:?} outside a region of {} bytes",
            region.len()
        );
        Ring {
            region,
            mask: layout.capacity - 1,
            layout,
        }
    }

    /// The tail: `(next offset, next position)`.
    pub(crate) fn tail(&self) -> (u64, u64) {
        // SYNC T (SeqCst): Acquire sees the slot positions and intents written before the claim
        // CAS; SeqCst orders this load in SYNC G (a plain load on x86).
        unpack(self.region.u128(layout::TAIL).load(Ordering::SeqCst))
    }

    /// Region offset of the ring byte at position `pos`.
    #[inline]
    pub(crate) fn data_at(&self, pos: u64) -> u64 {
        self.layout.data + (pos & self.mask)
    }

    /// The header words of the record at position `pos`, bounds-checked once for all of them.
    #[inline]
    fn header(&self, pos: u64) -> &[AtomicU64; HEADER_WORDS] {
        self.region.u64s(self.data_at(pos))
    }

    /// Which entry of the two index tables belongs to `offset`.
    #[inline]
    fn entry(&self, offset: u64) -> u64 {
        offset & (self.layout.index_entries - 1)
    }

    /// The tag word of `offset`'s slot (also for sleepers re-checking it, SYNC W).
    #[inline]
    pub(crate) fn slot_tag(&self, offset: u64) -> &AtomicU64 {
        let tags = self.layout.index + 8 * self.layout.index_entries;
        // SAFETY: `entry` masks `offset` into the `index_entries` words of the tag table, the
        // second half of the index, which `new` checked lies in the region, 8-aligned.
        unsafe {
            &self
                .region
                .u64s_unchecked::<1>(tags + 8 * self.entry(offset))[0]
        }
    }

    /// The position word of `offset`'s slot.
    #[inline]
    pub(crate) fn slot_pos(&self, offset: u64) -> &AtomicU64 {
        // SAFETY: as for `slot_tag`: the position table, the first half of the index.
        unsafe {
            &self
                .region
                .u64s_unchecked::<1>(self.layout.index + 8 * self.entry(offset))[0]
        }
    }

    /// Pulls the first two lines of the record whose claim begins at `pos` toward this CPU
    /// while a reader waits for its commit. Its producer writes them before it commits the
    /// tag, so a reader spinning on the tag has them on their way when the tag turns, instead
    /// of fetching them from the producer's cache after it: one cache-line transfer per
    /// message instead of two in a row. Where a transfer is slow (about 240 ns one way in one
    /// of this VM's placements) it took the spinning ping-pong from 566–596 to 481–496 ns one
    /// way; where it is fast nothing changed (BENCHMARKS.md, "Prefetching the record").
    #[inline(always)]
    fn prefetch_record(&self, pos: u64) {
        let at = self.data_at(pos);
        self.region.prefetch(at);
        self.region.prefetch(at + 64);
    }

    /// The header words of the record at ring index `idx`, without a bounds check.
    ///
    /// # Safety
    /// `idx` must be 8-aligned and the header must lie in the ring:
    /// `idx + RECORD_HEADER <= capacity`.
    #[inline(always)]
    unsafe fn ring_header(&self, idx: u64) -> &[AtomicU64; HEADER_WORDS] {
        // SAFETY: the caller keeps the header inside the ring, which `new` checked lies in the
        // region, 8-aligned.
        unsafe { self.region.u64s_unchecked(self.layout.data + idx) }
    }

    /// The record header at position `pos` as stored, untrusted: `(offset, length, crc)`.
    #[cfg(not(loom))]
    pub(crate) fn header_at(&self, pos: u64) -> (u64, u32, u32) {
        let head = self.header(pos);
        // Relaxed: only used where no writer runs (recovery) or validated afterwards.
        let offset = head[REC_OFFSET].load(Ordering::Relaxed);
        let word = head[REC_LEN].load(Ordering::Relaxed);
        (offset, word as u32, (word >> 32) as u32)
    }

    /// Tries to claim a record of `len` bytes ending no later than `limit`. `tail` is the
    /// caller's last known tail, refreshed here on CAS failure; `intent` is the caller's
    /// producer slot (region offset). Always inlined: it is most of `publish`.
    #[inline(always)]
    pub(crate) fn try_claim(
        &self,
        tail: &mut KnownTail,
        len: u32,
        limit: u64,
        intent: u64,
    ) -> Attempt {
        let size = footprint(len as u64);
        // No claim ends past `MAX_POSITION`: the tail it stores stays sane (`KnownTail`).
        let limit = limit.min(MAX_POSITION);
        loop {
            let (offset, at) = match tail.checked() {
                Ok(tail) => tail,
                Err(bad) => return bad,
            };
            let start = self.place(at, size);
            let end = start + size;
            if end > limit {
                return self.no_space(intent, (offset, at), end);
            }
            self.announce(offset, 1, at, intent);
            if self.swap_tail(tail, offset, 1, end) {
                return Attempt::Claimed(Claim {
                    offset,
                    at,
                    start,
                    len,
                });
            }
        }
    }

    /// Tries to claim a run of records, one per length in `lens` (at least one), ending no
    /// later than `limit`, with one tail CAS (see "Runs" in the module docs). On success `run`
    /// holds the claims in offset order (dense offsets from the first) and their positions are
    /// stored; the result is the first claim. Arguments as for [`try_claim`](Self::try_claim).
    pub(crate) fn try_claim_run(
        &self,
        tail: &mut KnownTail,
        lens: &[u32],
        limit: u64,
        intent: u64,
        run: &mut Vec<Claim>,
    ) -> Attempt {
        let n = lens.len() as u64;
        // As in `try_claim`.
        let limit = limit.min(MAX_POSITION);
        loop {
            let (offset, at) = match tail.checked() {
                Ok(tail) => tail,
                Err(bad) => return bad,
            };
            run.clear();
            let mut end = at;
            for (i, &len) in lens.iter().enumerate() {
                let size = footprint(len as u64);
                let start = self.place(end, size);
                run.push(Claim {
                    offset: offset + i as u64,
                    at: end,
                    start,
                    len,
                });
                end = start + size;
            }
            if end > limit {
                return self.no_space(intent, (offset, at), end);
            }
            self.announce(offset, n, at, intent);
            for member in 1..n {
                let pos = self.slot_pos(offset + member);
                // Provisional (odd): see "Runs". Relaxed load: only decides whether the RMW is
                // needed. Release RMW as for `pos(o)` in `announce`.
                if pos.load(Ordering::Relaxed) <= at {
                    pos.fetch_max(at + 1, Ordering::Release);
                }
            }
            if self.swap_tail(tail, offset, n, end) {
                for claim in &run[1..] {
                    // SYNC R (Release): before any commit or give-up of the run's records, so a
                    // reader that sees one of their tags resolved by us sees every position. A
                    // plain store: nobody else writes a true position for these offsets, and
                    // no later lap reuses their slots while our intent holds the limit back; a
                    // loser's late provisional value is below it.
                    self.slot_pos(claim.offset)
                        .store(claim.at + MEMBER, Ordering::Release);
                }
                return Attempt::Claimed(run[0]);
            }
        }
    }

    /// Where a record of `size` bytes whose claim begins at `at` starts: at `at`, or at the
    /// next lap if it does not fit in the rest of this one.
    #[inline]
    fn place(&self, at: u64, size: u64) -> u64 {
        let rest = self.layout.capacity - (at & self.mask);
        if rest >= size {
            at
        } else {
            at + rest
        }
    }

    /// A claim from tail `(offset, at)` ending at `end` found no room below the limit:
    /// `NoSpace`, or `BadTail` if `end` is past `MAX_POSITION`, where no room ever comes (4 EiB
    /// of traffic, or a damaged tail: the claim limit is capped there, see `KnownTail`).
    #[inline]
    fn no_space(&self, intent: u64, (offset, at): (u64, u64), end: u64) -> Attempt {
        // An earlier round of the claim loop may have published an intent for a claim that
        // lost its CAS: withdraw it, or it would hold back the limit of every producer while
        // this one waits for room (SYNC I, Release as in `commit`).
        self.region.u64(intent + INTENT).store(0, Ordering::Release);
        if end > MAX_POSITION {
            return Attempt::BadTail { offset, pos: at };
        }
        Attempt::NoSpace { end }
    }

    /// Before the tail CAS of a claim of `n` records at tail `(offset, at)`: the intent
    /// `(offset + n, at)` and `pos(offset) = at`.
    #[inline]
    fn announce(&self, offset: u64, n: u64, at: u64, intent: u64) {
        // One bounds check for both words (`INTENT_POS` follows `INTENT`).
        let [next, pos_word] = self.region.u64s::<2>(intent + INTENT);
        // Relaxed: these two stores are published by the tail CAS (SYNC T); a stale intent is
        // only ever read as "in flight at or after `at`".
        pos_word.store(at, Ordering::Relaxed);
        next.store(offset + n, Ordering::Relaxed);
        // Relaxed load: only decides whether the RMW is needed. Release RMW: a reader that
        // sees this value through `resolve` also sees the tail it checks against.
        let pos = self.slot_pos(offset);
        if pos.load(Ordering::Relaxed) < at {
            pos.fetch_max(at, Ordering::Release);
        }
    }

    /// The tail CAS `(offset, ·) → (offset + n, end)` from `*tail`; refreshes `*tail` either
    /// way and says whether it won.
    #[inline]
    fn swap_tail(&self, tail: &mut KnownTail, offset: u64, n: u64, end: u64) -> bool {
        crate::crash::point("publish.before_claim");
        // SYNC T (SeqCst, see the module docs); Relaxed on failure: the caller only recomputes
        // from the returned value.
        match self.region.u128(layout::TAIL).compare_exchange(
            tail.word,
            pack(offset + n, end),
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // Still tested: `end` is at most the limit, so at most `MAX_POSITION`, and at
                // least a smallest record per offset past the sane `(offset, at)`.
                tail.word = pack(offset + n, end);
                // SYNC L: a lapped reader that sees any byte written after this fence also
                // sees the tail CAS above and discards what it read.
                fence(Ordering::Release);
                crate::crash::point("publish.after_claim");
                true
            }
            Err(current) => {
                *tail = KnownTail::read(current);
                false
            }
        }
    }

    /// Raw pointer to a claim's payload bytes (zero-copy writes; not modelled under loom).
    #[cfg(not(loom))]
    pub(crate) fn payload_ptr(&self, claim: &Claim) -> *mut u8 {
        self.region
            .bytes_ptr(self.data_at(claim.start) + RECORD_HEADER, claim.len as u64)
    }

    /// Writes a claim's payload.
    #[inline]
    pub(crate) fn write_payload(&self, claim: &Claim, data: &[u8]) {
        let at = self.payload_at(claim, data);
        // SAFETY: the claim's whole footprint, header and payload, fits in the rest of its
        // lap (see `seal`), inside the ring that `new` checked lies in the region; the claim
        // gives its producer these bytes (the ring protocol).
        unsafe { self.region.write_bytes_unchecked(at, data) }
    }

    /// Writes a claim's payload and returns its CRC32C, computed in the copy's pass where the
    /// CPU can.
    #[inline(always)]
    pub(crate) fn write_payload_crc(&self, claim: &Claim, data: &[u8]) -> u32 {
        let at = self.payload_at(claim, data);
        // SAFETY: as in `write_payload`.
        unsafe { self.region.write_bytes_crc_unchecked(at, data) }
    }

    /// Where a claim's payload starts in the region, for `data` of the claim's length.
    #[inline(always)]
    fn payload_at(&self, claim: &Claim, data: &[u8]) -> u64 {
        assert_eq!(
            data.len(),
            claim.len as usize,
            "a payload of its claim's length"
        );
        self.data_at(claim.start) + RECORD_HEADER
    }

    /// Commits a claim whose payload is written, with the payload's CRC32C (0: none) and its
    /// schedule word (0 for a plain record). `Err(())` means a reader aborted it first.
    #[inline(always)]
    pub(crate) fn commit(
        &self,
        claim: &Claim,
        timestamp: u64,
        crc: u32,
        schedule: u64,
        intent: u64,
    ) -> Result<(), ()> {
        let result = self.seal::<COMMITTED>(claim, timestamp, crc, schedule);
        self.release_intent(intent);
        if result.is_ok() {
            self.notify_data();
        }
        result
    }

    /// Commits a claimed run whose payloads are written (`crcs[i]`: the CRC32C of member `i`'s
    /// payload, 0 for none; plain records, schedule word 0): the later members first, then the
    /// first record, whose commit publishes the run (see "Runs" in the module docs). Then it
    /// withdraws the intent and wakes sleeping consumers, once for the run. `Err(())`: a
    /// reader aborted one of its records first, and the whole run is given up (its first
    /// record first): nothing of it is read.
    pub(crate) fn commit_run(
        &self,
        run: &[Claim],
        timestamp: u64,
        crcs: &[u32],
        intent: u64,
    ) -> Result<(), ()> {
        debug_assert_eq!(run.len(), crcs.len());
        let (Some((first, members)), Some((first_crc, member_crcs))) =
            (run.split_first(), crcs.split_first())
        else {
            return Ok(());
        };
        let committed = members
            .iter()
            .zip(member_crcs)
            .all(|(claim, &crc)| self.seal::<COMMITTED>(claim, timestamp, crc, 0).is_ok())
            && self
                .seal::<COMMITTED>(first, timestamp, *first_crc, 0)
                .is_ok();
        if !committed {
            for claim in run {
                self.give_up(claim);
            }
        }
        self.release_intent(intent);
        if committed {
            self.notify_data();
            Ok(())
        } else {
            Err(())
        }
    }

    /// SYNC I (Release): the claim is finished (or given up); producers scanning intents may
    /// now reuse bytes up to one capacity past it.
    #[inline]
    fn release_intent(&self, intent: u64) {
        self.region.u64(intent + INTENT).store(0, Ordering::Release);
    }

    /// Writes a claim's header and CASes its tag to `STATE` (`COMMITTED`, or `PREPARED` for a
    /// transaction's record), with `WRAPPED` if the record starts at the next lap. A constant:
    /// as a parameter it cost `publish` 3 instructions (callgrind, `call_cost`). Always inlined:
    /// the call cost `publish` about 15 (its prologue, epilogue and `Result`).
    #[inline(always)]
    fn seal<const STATE: u64>(
        &self,
        claim: &Claim,
        timestamp: u64,
        crc: u32,
        schedule: u64,
    ) -> Result<(), ()> {
        let o = claim.offset;
        let cell = self.slot_tag(o);
        // Relaxed: the value only serves as the CAS's expected value and for the check below;
        // a reader that aborts meanwhile changes it and our CAS fails.
        let stale = cell.load(Ordering::Relaxed);
        // Before the header: a claim that is over must not write a byte, and its slot may
        // already hold a newer record's tag, which the CAS below would overwrite.
        if !unresolved(o, stale) {
            return Err(());
        }
        crate::crash::point("publish.before_header");
        let idx = claim.start & self.mask;
        debug_assert!(
            idx.is_multiple_of(8) && idx + footprint(claim.len as u64) <= self.layout.capacity
        );
        // SAFETY: a claim comes from `try_claim` or `try_claim_run`, which place a record
        // where its whole footprint (at least a header) fits in the rest of its lap, at an
        // 8-aligned position (the tail is checked sane and footprints are multiples of 8).
        let head = unsafe { self.ring_header(idx) };
        // Relaxed: published by the tag CAS below (SYNC C).
        head[REC_OFFSET].store(o, Ordering::Relaxed);
        head[REC_LEN].store(claim.len as u64 | (crc as u64) << 32, Ordering::Relaxed);
        head[REC_TIMESTAMP].store(timestamp, Ordering::Relaxed);
        head[REC_SCHEDULE].store(schedule, Ordering::Relaxed);
        crate::crash::point("publish.before_commit");
        let flags = if claim.start == claim.at {
            STATE
        } else {
            STATE | WRAPPED
        };
        // SYNC C and W (SeqCst): Release publishes header and payload; SeqCst orders the tag
        // before the waiter check in `notify_data`. Relaxed on failure: we give up.
        cell.compare_exchange(stale, tag(o, flags), Ordering::SeqCst, Ordering::Relaxed)
            .map_err(drop)?;
        crate::crash::point("publish.after_commit");
        Ok(())
    }

    /// Gives up an uncommitted claim of our own: readers skip it at once. A claim already
    /// aborted by a reader is left alone: its slot may hold a newer record by now.
    pub(crate) fn abandon(&self, claim: &Claim, intent: u64) {
        self.give_up(claim);
        self.release_intent(intent);
    }

    /// Prepares a claimed run of a transaction whose payloads are written (`crcs` as for
    /// [`commit_run`](Self::commit_run)): writes each header with the transaction's `link` in
    /// its schedule word and CASes its tag to `PREPARED` (see "Transactions" in the module
    /// docs). Leaves the intent. `Err(())`: a reader aborted one of its records first (this
    /// call stalled past the claim timeout); the caller aborts the transaction and gives the
    /// run up ([`settle_claims`](Self::settle_claims)).
    pub(crate) fn prepare_run(
        &self,
        run: &[Claim],
        timestamp: u64,
        crcs: &[u32],
        link: u64,
    ) -> Result<(), ()> {
        debug_assert_eq!(run.len(), crcs.len());
        for (claim, &crc) in run.iter().zip(crcs) {
            self.seal::<PREPARED>(claim, timestamp, crc, link)?;
        }
        Ok(())
    }

    /// Settles a run of our own claims once its transaction's outcome is known: each prepared
    /// record is committed (`commit`) or aborted, each record still pending is given up; then
    /// the intent is withdrawn and sleeping consumers woken.
    pub(crate) fn settle_claims(&self, run: &[Claim], commit: bool, intent: u64) {
        for claim in run {
            // Relaxed: the CAS in `settle_prepared` or `give_up` decides.
            let seen = self.slot_tag(claim.offset).load(Ordering::Relaxed);
            if is_prepared(claim.offset, seen) {
                self.settle_prepared(claim.offset, seen, commit);
            } else {
                self.give_up(claim);
            }
        }
        self.release_intent(intent);
        self.notify_data();
    }

    /// What the header of prepared record `offset` (claim at `pos`, tag `seen`) says: the
    /// offset it repeats and the link in its schedule word. Loaded after the caller's Acquire
    /// load of the PREPARED tag (SYNC C: the preparing producer wrote the header before its
    /// tag CAS), then `fence(Acquire)` and the tag again: the values count only if the tag
    /// still reads `seen` ([`None`] otherwise: read it all again), and, for a reader whose
    /// record may have been overwritten, only if [`overrun`](Self::overrun) says no (SYNC L:
    /// a read that saw any byte of a lapping writer sees that writer's tail).
    pub(crate) fn prepared_header(&self, offset: u64, pos: u64, seen: u64) -> Option<(u64, u64)> {
        let head = self.header(self.record_start(pos, seen));
        // Relaxed: ordered after the caller's Acquire tag load; validated below.
        let stored = head[REC_OFFSET].load(Ordering::Relaxed);
        let link = head[REC_SCHEDULE].load(Ordering::Relaxed);
        // SYNC X: the fence keeps the two loads above before the tag load below (an Acquire
        // load alone does not order earlier loads).
        fence(Ordering::Acquire);
        (self.slot_tag(offset).load(Ordering::Relaxed) == seen).then_some((stored, link))
    }

    /// Where the record whose claim begins at `pos` starts, as its tag `t` says (`WRAPPED`:
    /// at the next lap).
    #[inline(always)]
    fn record_start(&self, pos: u64, t: u64) -> u64 {
        if t & WRAPPED != 0 {
            pos + (self.layout.capacity - (pos & self.mask))
        } else {
            pos
        }
    }

    /// Commits (`commit`) or aborts prepared record `offset`, whose tag was `seen`, as its
    /// transaction's outcome says; the caller wakes sleeping readers. Anyone may do it, any
    /// number of times: only the first CAS from `seen` changes the record, and nothing but
    /// the tag is written (the link stays in the header, which work groups read as no
    /// schedule), so a settler whose record was overwritten meanwhile writes no byte of the
    /// newer one. True if this call changed it.
    pub(crate) fn settle_prepared(&self, offset: u64, seen: u64, commit: bool) -> bool {
        if !is_prepared(offset, seen) {
            return false;
        }
        let to = if commit {
            tag(offset, COMMITTED | (seen & WRAPPED))
        } else {
            tag(offset, ABORTED)
        };
        // SYNC C and W (SeqCst) as a commit or an abort.
        self.slot_tag(offset)
            .compare_exchange(seen, to, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Aborts an uncommitted claim of our own unless it is over already.
    fn give_up(&self, claim: &Claim) {
        // Relaxed: the value is only the CAS's expected value and checked as in `seal`.
        let seen = self.slot_tag(claim.offset).load(Ordering::Relaxed);
        if unresolved(claim.offset, seen) {
            self.abort(claim.offset, seen);
        }
    }

    /// Reads what is at cursor `(offset, pos)`; `pos` must be `pos(offset)`.
    #[inline(always)]
    pub(crate) fn read(&self, offset: u64, pos: u64) -> Found {
        self.read_known(offset, pos, sane_cursor(offset, pos))
    }

    /// [`read`](Self::read) for a reader that knows whether its cursor is sane: `sane` is
    /// [`sane_cursor`]`(offset, pos)`, tested where the reader set its cursor from the file.
    /// One it moved past a record `read` returned is sane (see [`Ready::end`]), so a reader
    /// that keeps up pays no test per record. (The test was 11 instructions of
    /// `Consumer::poll`; with the flag's test and the bound on `end` the saving is 4,
    /// callgrind, `call_cost`.)
    // Always inlined into its callers (`Cursor::look` and `Cursor::step_past`, `read`), and
    // so into every reader's poll: with more readers the compiler stopped inlining it, which cost
    // `Consumer::poll` about 37 instructions per record (callgrind, `call_cost`).
    #[inline(always)]
    pub(crate) fn read_known(&self, offset: u64, pos: u64, sane: bool) -> Found {
        debug_assert_eq!(sane, sane_cursor(offset, pos));
        if !sane {
            return Found::Inconsistent {
                start: pos,
                why: Malformed::Cursor {
                    which: "cursor",
                    offset,
                    pos,
                },
            };
        }
        // SYNC C (Acquire): pairs with the commit CAS; header and payload are visible after it.
        let t = self.slot_tag(offset).load(Ordering::Acquire);
        // Committed, with or without `WRAPPED`: one compare for both.
        if t | WRAPPED != tag(offset, COMMITTED | WRAPPED) {
            return if t == tag(offset, ABORTED) {
                Found::Aborted
            } else if tag_offset(t) > offset {
                Found::Overtaken
            } else {
                self.prefetch_record(pos);
                Found::Pending { tag: t }
            };
        }
        let start = self.record_start(pos, t);
        // Masked to the record alignment as well: `start` is aligned for a sane cursor, and
        // whatever a caller passes as `sane`, the header read below stays aligned.
        let idx = start & self.mask & !(layout::RECORD_ALIGN - 1);
        let bad = |why: Malformed| Found::Inconsistent { start, why };
        // A header across the ring's end (never for `WRAPPED`: it starts a lap, at index 0).
        if idx + RECORD_HEADER > self.layout.capacity {
            return bad(Malformed::Misplaced { offset, pos });
        }
        // SAFETY: `idx` is 8-aligned (masked so) and the header lies in the ring, as just
        // checked.
        let head = unsafe { self.ring_header(idx) };
        // Relaxed: ordered after the Acquire load above.
        let stored = head[REC_OFFSET].load(Ordering::Relaxed);
        let len_crc = head[REC_LEN].load(Ordering::Relaxed);
        let (len, crc) = (len_crc & 0xffff_ffff, (len_crc >> 32) as u32);
        let timestamp = head[REC_TIMESTAMP].load(Ordering::Relaxed);
        if stored != offset {
            return bad(Malformed::HeaderOffset {
                offset,
                found: stored,
            });
        }
        let size = footprint(len);
        if len > self.layout.max_message as u64 || idx + size > self.layout.capacity {
            return bad(Malformed::Length {
                offset,
                len,
                max: self.layout.max_message,
            });
        }
        let end = start + size;
        // The next cursor, `(offset + 1, end)`, is sane if `end` is in range: `end` is aligned
        // (so are `start` and footprints) and at least one smallest record past `pos`.
        if end > MAX_POSITION {
            return bad(Malformed::Cursor {
                which: "cursor after a record",
                offset: offset + 1,
                pos: end,
            });
        }
        let payload = self.layout.data + idx + RECORD_HEADER;
        Found::Ready(Ready {
            start,
            end,
            len: len as u32,
            timestamp,
            crc,
            // SAFETY: `idx + size <= capacity`, checked above, and `RECORD_HEADER + len <=
            // size`, so the payload's `len` bytes lie in the ring, which `new` checked lies in
            // the region.
            #[cfg(not(loom))]
            ptr: unsafe { self.region.bytes_ptr_unchecked(payload, len) },
            #[cfg(loom)]
            payload,
        })
    }

    /// The schedule word of the record whose header is at position `start`, as [`read`]
    /// found it ready: ordered after its slot-tag load (SYNC C), and like the rest of the
    /// header trustworthy for a lappable reader only once [`overrun`](Self::overrun) says so.
    ///
    /// [`read`]: Self::read
    #[cfg(not(loom))]
    pub(crate) fn schedule_at(&self, start: u64) -> u64 {
        // Relaxed: ordered after the caller's Acquire load of the slot tag.
        let word = self.header(start)[REC_SCHEDULE].load(Ordering::Relaxed);
        // A transaction's record keeps its link: it has no schedule.
        if word & LINK_MARK != 0 {
            0
        } else {
            word
        }
    }

    /// For lappable readers: true if the bytes at `pos` can have been overwritten since the
    /// record was read (SYNC L).
    pub(crate) fn overrun(&self, pos: u64) -> bool {
        fence(Ordering::Acquire);
        let (_, tail_pos) = self.tail();
        tail_pos.saturating_sub(pos) > self.layout.capacity
    }

    /// Gives up a record: CAS the slot tag from `seen` to `(offset, ABORTED)`. `seen` is a
    /// pending state of `offset` (a stuck claim), or a committed one of a run member that
    /// [`past_aborted`](Self::past_aborted) gives up with its run. Returns false if the word
    /// changed meanwhile (committed, aborted, or the slot was reused).
    pub(crate) fn abort(&self, offset: u64, seen: u64) -> bool {
        // SeqCst like a commit: the change must be visible to sleepers (SYNC W).
        let done = self
            .slot_tag(offset)
            .compare_exchange(
                seen,
                tag(offset, ABORTED),
                Ordering::SeqCst,
                Ordering::Relaxed,
            )
            .is_ok();
        if done {
            self.notify_data();
        }
        done
    }

    /// The position of record `offset`, if it is known: `None` if it is not claimed yet, its
    /// slot has been reused, or it is an unpublished member of a run ([`position`]).
    ///
    /// [`position`]: Self::position
    pub(crate) fn resolve(&self, offset: u64) -> Option<u64> {
        match self.position(offset) {
            Position::At(pos) | Position::Member(pos) => Some(pos),
            Position::Unpublished | Position::Unknown => None,
        }
    }

    /// Where record `offset` begins, as far as its slot tells (see "Runs" in the module docs).
    /// An implausible (unaligned or too large) entry reads as unknown.
    pub(crate) fn position(&self, offset: u64) -> Position {
        let (t_off, t_pos) = self.tail();
        if offset == t_off {
            return Position::At(t_pos);
        }
        if offset > t_off {
            return Position::Unknown;
        }
        // SYNC T (Acquire): pairs with the contenders' Release fetch_max; SYNC R: with a run's
        // position stores.
        let pos = self.slot_pos(offset).load(Ordering::Acquire);
        let (t2_off, _) = self.tail();
        // Checked: a tail that went backwards (zero pages of a truncated file, a hostile
        // write) is no proof of freshness, and must not underflow.
        let fresh = t2_off
            .checked_sub(offset)
            .is_some_and(|d| d < self.layout.index_entries);
        if !fresh || pos > t_pos {
            return Position::Unknown;
        }
        match (claim_start(pos), pos % layout::RECORD_ALIGN) {
            (Some(at), 0) => Position::At(at),
            (Some(at), _) => Position::Member(at),
            (None, 1) => Position::Unpublished,
            (None, _) => Position::Unknown,
        }
    }

    /// Where a reader goes from aborted record `offset`: the next offset whose claim began a
    /// new one and that offset's position, or `None` if it cannot be told (the slot was reused:
    /// lapped). The later members of the aborted record's run, committed or not, are aborted on
    /// the way (see "Runs" in the module docs); the result's offset says how many offsets were
    /// passed.
    pub(crate) fn past_aborted(&self, offset: u64) -> Option<(u64, u64)> {
        let mut next = offset + 1;
        loop {
            match self.position(next) {
                Position::At(pos) => return Some((next, pos)),
                Position::Unknown => return None,
                Position::Member(_) | Position::Unpublished => {
                    // `next` belongs to the run of aborted record `next - 1`, whose first
                    // record was therefore aborted (its producer gives a run up first record
                    // first, and no reader reaches a member before the first record is
                    // resolved): none of it may be read. Acquire: pairs with the commit it may
                    // undo (SYNC R, C), for symmetry with readers; the CAS decides.
                    let seen = self.slot_tag(next).load(Ordering::Acquire);
                    if tag_offset(seen) > next {
                        return None;
                    }
                    // Every CAS that fails saw the word change, and every round that does not
                    // fail moves on, so damaged bytes that never change cannot hold us here.
                    if seen != tag(next, ABORTED) && !self.abort(next, seen) {
                        continue;
                    }
                    next += 1;
                }
            }
        }
    }

    /// The oldest record whose claim lies wholly in the last capacity of bytes:
    /// `(offset, position)`.
    pub(crate) fn oldest(&self) -> (u64, u64) {
        let (t_off, t_pos) = self.tail();
        let floor = t_pos.saturating_sub(self.layout.capacity);
        let retained = |x: u64| self.resolve(x).filter(|&p| p >= floor);
        // Recovery after a machine restart may have found older records damaged.
        // Relaxed: written once by recovery, before anyone else uses the file.
        let (floor_offset, _) = unpack(self.region.u128(layout::FLOOR).load(Ordering::Relaxed));
        let mut lo = t_off
            .saturating_sub(self.layout.index_entries - 1)
            .max(floor_offset.min(t_off));
        let mut hi = t_off;
        // Positions grow with offsets, so "retained" is false then true: find the first true.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if retained(mid).is_some() {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        // `None` only if the tail moved meanwhile; the tail itself is always a valid cursor.
        retained(lo).map_or_else(|| self.tail(), |p| (lo, p))
    }

    /// The first retained record whose timestamp is at or after `ns`, or the tail: found by
    /// binary search over `[oldest, tail)`, since timestamps grow with offsets (up to the
    /// skew between concurrent producers, see [`SeekTo::Time`]). A record that cannot be read
    /// (pending, aborted or damaged) counts as "at or after", so around it the search errs
    /// towards the earlier record.
    ///
    /// [`SeekTo::Time`]: crate::SeekTo::Time
    #[cfg(not(loom))]
    pub(crate) fn first_at_or_after(&self, ns: u64) -> (u64, u64) {
        let (mut lo, _) = self.oldest();
        let (mut hi, _) = self.tail();
        let at_or_after = |x: u64| match self.resolve(x).map(|p| self.read(x, p)) {
            // Overwritten while we looked: an old record, before `ns` by any measure.
            Some(Found::Ready(Ready { start, .. })) if self.overrun(start) => false,
            Some(Found::Ready(Ready { timestamp, .. })) => timestamp >= ns,
            None | Some(Found::Overtaken) => false,
            Some(_) => true,
        };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if at_or_after(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        // `None` only if the ring moved past `lo` meanwhile: start at the oldest record then.
        self.resolve(lo).map_or_else(|| self.oldest(), |p| (lo, p))
    }

    /// Wakes sleeping consumers if there are any (SYNC W).
    #[inline]
    pub(crate) fn notify_data(&self) {
        wake_on(&self.region, layout::DATA_WAITERS, layout::DATA_SEQ);
    }

    /// Wakes producers sleeping for room if there are any (SYNC W): a group committed, moved
    /// or went away, or the durable cursor advanced.
    pub(crate) fn notify_space(&self) {
        wake_on(&self.region, layout::SPACE_WAITERS, layout::SPACE_SEQ);
    }

    /// Sleeps until data may have been committed, `ready` turned true, or `timeout` passed.
    /// `bit` is the caller's bit in the sleeper bitmap (one per group slot). The bit belongs to
    /// the slot, not to its holder: a member whose group was taken over while it slept must not
    /// clear the bit its successor set, so `owned` says whether the slot is still the caller's.
    pub(crate) fn wait_data(
        &self,
        bit: u64,
        ready: impl Fn() -> bool,
        timeout: Option<std::time::Duration>,
        owned: impl Fn() -> bool,
    ) {
        let region = &self.region;
        flag_and_sleep(
            region,
            layout::DATA_WAITERS,
            layout::DATA_SEQ,
            bit,
            ready,
            timeout,
        );
        self.unflag_data(bit, owned);
    }

    /// Flags `bit` as a consumer about to sleep for data and returns the `DATA_SEQ` value to
    /// sleep on: the first half of [`wait_data`](Self::wait_data), for a caller that re-checks
    /// its condition and then waits elsewhere (the async waker thread).
    #[cfg(feature = "tokio")]
    pub(crate) fn flag_data(&self, bit: u64) -> u32 {
        flag(&self.region, layout::DATA_WAITERS, layout::DATA_SEQ, bit)
    }

    /// The end of a data sleep: clears `bit` if `owned` says the group slot is still the
    /// caller's (see [`wait_data`](Self::wait_data)).
    pub(crate) fn unflag_data(&self, bit: u64, owned: impl Fn() -> bool) {
        if owned() {
            // Between `owned` and this clear a successor can still set the bit and lose it;
            // sleepers cap their sleeps, so that costs at most one cap of latency, never a hang.
            unflag(&self.region, layout::DATA_WAITERS, bit);
        }
    }
}

/// The sleeping half of SYNC W: flag `bit` in the bitmap at `waiters`, re-check `ready`, sleep
/// on the futex `seq`, unflag. A SIGKILLed sleeper leaves its bit set until its slot is taken
/// over (which clears it); meanwhile notifiers only pay a spurious wake.
pub(crate) fn sleep_on(
    region: &Region,
    waiters: u64,
    seq: u64,
    bit: u64,
    ready: impl Fn() -> bool,
    timeout: Option<std::time::Duration>,
) {
    flag_and_sleep(region, waiters, seq, bit, ready, timeout);
    unflag(region, waiters, bit);
}

/// Clears `bit` in the sleeper bitmap at `waiters`: the end of a [`sleep_on`] or of a sleep
/// that [`flag`] began.
pub(crate) fn unflag(region: &Region, waiters: u64, bit: u64) {
    // SeqCst for symmetry with the flagging; a late clear only costs a notifier a spurious wake.
    region.u64(waiters).fetch_and(!bit, Ordering::SeqCst);
}

/// [`sleep_on`] but for the unflagging, which the caller does.
fn flag_and_sleep(
    region: &Region,
    waiters: u64,
    seq: u64,
    bit: u64,
    ready: impl Fn() -> bool,
    timeout: Option<std::time::Duration>,
) {
    let seen = flag(region, waiters, seq, bit);
    if !ready() {
        region.wait(seq, seen, timeout);
    }
}

/// The flagging half of a sleep (SYNC W): sets `bit` in the bitmap at `waiters` and returns the
/// futex value at `seq` to sleep on. The caller re-checks its condition after this and sleeps
/// only if it still fails; a notifier that commits after the re-check sees the bit and bumps
/// `seq`, so the sleep returns at once.
pub(crate) fn flag(region: &Region, waiters: u64, seq: u64, bit: u64) -> u32 {
    // SYNC W (SeqCst): flagged before the caller re-checks the condition.
    region.u64(waiters).fetch_or(bit, Ordering::SeqCst);
    // SeqCst: loaded after the flag in the single total order, so a bump by a notifier that
    // missed the re-check's answer is one this value does not include yet.
    region.u32(seq).load(Ordering::SeqCst)
}

/// The waking half of SYNC W: if anyone is flagged in `waiters`, bump `seq` and wake them.
/// The check is inline (every commit makes it); the wake-up, a syscall, is not.
#[inline(always)]
pub(crate) fn wake_on(region: &Region, waiters: u64, seq: u64) {
    if region.u64(waiters).load(Ordering::SeqCst) != 0 {
        wake_all_on(region, seq);
    }
}

/// Bumps `seq` and wakes every sleeper on it (after [`wake_on`]'s check).
#[inline(never)]
fn wake_all_on(region: &Region, seq: u64) {
    // SeqCst: the bump must be ordered after the waiter check for every observer.
    region.u32(seq).fetch_add(1, Ordering::SeqCst);
    region.wake_all(seq);
}

#[cfg(test)]
mod tests {
    use super::{sane_cursor, tag, unresolved, ABORTED, COMMITTED, MAX_POSITION, WRAPPED};

    /// `sane_cursor`'s one-compare position test agrees with the plain predicate (aligned, at
    /// most `MAX_POSITION`, 32 bytes per offset) at the edges.
    #[test]
    fn sane_cursor_edges() {
        let plain = |o: u64, p: u64| {
            p.is_multiple_of(8) && p <= MAX_POSITION && o.checked_mul(32).is_some_and(|b| b <= p)
        };
        let edges = [
            0,
            1,
            4,
            7,
            8,
            31,
            32,
            33,
            40,
            MAX_POSITION - 8,
            MAX_POSITION - 1,
            MAX_POSITION,
            MAX_POSITION + 1,
            MAX_POSITION + 8,
            u64::MAX - 7,
            u64::MAX,
        ];
        for p in edges {
            for o in edges.into_iter().chain([p / 32, p / 32 + 1]) {
                assert_eq!(sane_cursor(o, p), plain(o, p), "({o}, {p})");
            }
        }
    }

    /// A claim of offset 5 (slot reused every 4 offsets) may seal over what earlier records of
    /// its slot left, and over nothing else.
    #[test]
    fn unresolved_tags() {
        for flags in [0, COMMITTED, ABORTED, COMMITTED | WRAPPED] {
            assert!(unresolved(5, tag(1, flags)), "offset 1's record: {flags}");
        }
        assert!(unresolved(5, 0), "a slot cleared by recovery");
        assert!(unresolved(5, tag(5, 0)));
        assert!(unresolved(0, 0), "a new file's slot");
        for flags in [COMMITTED, ABORTED, WRAPPED, COMMITTED | WRAPPED] {
            assert!(!unresolved(5, tag(5, flags)), "offset 5 resolved: {flags}");
            assert!(!unresolved(0, tag(0, flags)), "offset 0 resolved: {flags}");
        }
        for t in [tag(9, 0), tag(9, COMMITTED), tag(9, ABORTED)] {
            assert!(!unresolved(5, t), "{t:#x}: the slot was reused by offset 9");
        }
    }
}
