//! A topic's transaction file (`<topic>/transactions`): [`TxnTable`], each field at the one
//! offset defined here, the header's encoding and validation, the state word and the link a
//! prepared record carries (FORMAT.md, "Transaction file"; ARCHITECTURE.md, "Transactions").
//!
//! # Protocol
//!
//! A slot belongs to one transactional id (a name). Its state word is `epoch << 2 | S`, S one
//! of [`PREPARING`], [`COMMITTED`], [`ABORTED`] (the word is 0 before the first epoch); each
//! transaction of the slot has the next epoch. Its holder (the slot's owner lease) writes its
//! records into each partition as one claimed run whose records it *prepares*: header and
//! payload written, the tag CASed to `PREPARED`, the link `(slot, epoch)` in the header's
//! schedule word (`protocol/ring.rs`). It lists each run in the slot's participants before
//! preparing its records.
//! Then one CAS of the state word, `PREPARING → COMMITTED`, is the commit point of every
//! record of every partition; after it the holder commits each record's tag.
//!
//! * (X1) The state word of an epoch changes once: `PREPARING → COMMITTED` by the holder, or
//!   `PREPARING → ABORTED` by anyone (a reader whose claim timeout ran out on a prepared
//!   record, the holder giving up, the id's next holder). Exactly one of them wins.
//! * (X2) A prepared record is committed only after its epoch's state read COMMITTED, and
//!   aborted only after it read ABORTED (or the link does not name a live epoch: a damaged
//!   file). So every record of an epoch ends the same way.
//! * (X3) An epoch starts only once every record of the previous one is settled (its holder
//!   settles its runs before it returns, and a next holder settles the participants listed in
//!   the slot before anything else): a prepared record's epoch is always the slot's current
//!   one, whose state tells its fate.
//!
//! The state CASes are SeqCst (SYNC X in ARCHITECTURE.md's table).

use crate::protocol::layout::{get32, put32};
use crate::protocol::ring::{self, Ring};
use crate::protocol::sync::{AtomicU128, AtomicU64, Ordering, Region};

/// The magic at byte 0 of a transaction file.
pub(crate) const MAGIC: [u8; 8] = *b"SHMQTXNS";
/// The transaction file format version.
pub(crate) const VERSION: u32 = 1;
/// Transactional ids (slots) per file.
pub(crate) const SLOTS: u32 = 64;
/// Partitions one transaction may write to.
pub(crate) const MAX_PARTICIPANTS: u32 = 64;
/// Longest transactional id (bytes).
pub(crate) const MAX_NAME: usize = 64;

const H_VERSION: usize = 8;
const H_SLOTS: usize = 12;
const H_PARTICIPANTS: usize = 16;
const H_CRC: usize = 124;
/// Bytes of the immutable header, checksum included.
pub(crate) const HEADER_LEN: usize = 128;

const SLOT_BASE: u64 = 4096;
const SLOT_SIZE: u64 = 2048;
const S_OWNER: u64 = 0;
const S_STATE: u64 = 16;
const S_SETTLED: u64 = 24;
const S_NAME_LEN: u64 = 32;
const S_NAME: u64 = 40;
const S_COUNT: u64 = 128;
const S_PARTICIPANTS: u64 = 136;
const PARTICIPANT: u64 = 16;
const _: () = assert!(S_PARTICIPANTS + MAX_PARTICIPANTS as u64 * PARTICIPANT <= SLOT_SIZE);
const _: () = assert!(S_NAME + MAX_NAME as u64 <= S_COUNT);

/// The file's size.
pub(crate) const FILE_SIZE: u64 = SLOT_BASE + SLOTS as u64 * SLOT_SIZE;

/// The epoch's records are being claimed and prepared.
pub(crate) const PREPARING: u64 = 1;
/// The epoch committed: its prepared records are committed.
pub(crate) const COMMITTED: u64 = 2;
/// The epoch aborted: its prepared records are aborted.
pub(crate) const ABORTED: u64 = 3;

/// Largest epoch (the link keeps 48 bits of it).
pub(crate) const MAX_EPOCH: u64 = (1 << 48) - 1;

/// A state word.
pub(crate) fn state(epoch: u64, s: u64) -> u64 {
    epoch << 2 | s
}

/// A state word's `(epoch, S)`.
pub(crate) fn unpack_state(word: u64) -> (u64, u64) {
    (word >> 2, word & 3)
}

/// Marks a schedule word as a link: a sanity check on words read from the file (a link is only
/// ever read from the header of a record whose tag says prepared, which no plain publish
/// writes).
const LINK_MARK: u64 = 1 << 63;

/// The link a prepared record of `slot`'s transaction `epoch` carries in its schedule word.
pub(crate) fn link(slot: u32, epoch: u64) -> u64 {
    LINK_MARK | u64::from(slot) << 48 | (epoch & MAX_EPOCH)
}

/// A link's `(slot, epoch)`, if the word is one and names a slot that exists.
pub(crate) fn unlink(word: u64) -> Option<(u32, u64)> {
    let slot = ((word & !LINK_MARK) >> 48) as u32;
    (word & LINK_MARK != 0 && slot < SLOTS).then_some((slot, word & MAX_EPOCH))
}

/// The outcome of transaction `epoch` whose state word is `word`, for one of its prepared
/// records: true if it committed. A transaction still preparing is aborted here (X1): whoever
/// asks has waited the claim timeout for the record. An epoch that is not the word's current
/// one cannot have a prepared record left (X3): a damaged file, read as aborted.
pub(crate) fn decide(word: &AtomicU64, epoch: u64) -> bool {
    loop {
        // SYNC X (SeqCst): the commit point's CAS and every abort's are one total order.
        let seen = word.load(Ordering::SeqCst);
        let (e, s) = unpack_state(seen);
        if e != epoch {
            return false;
        }
        match s {
            COMMITTED => return true,
            PREPARING => {
                // SYNC X (SeqCst); Relaxed on failure: the loop reloads.
                let abort = state(epoch, ABORTED);
                if word
                    .compare_exchange(seen, abort, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// What a reader does with record `offset` of `ring` (claim at `pos`, tag `seen`) after
/// waiting on it for the claim timeout: a plain claim is aborted; a prepared record is
/// committed or aborted as its transaction went, which `outcome(slot, epoch)` tells
/// ([`decide`] over the slot's state word). Nothing happens if the tag changed meanwhile (the
/// caller reads it again). An error of `outcome` leaves the record as it is.
pub(crate) fn give_up_stalled<E>(
    ring: &Ring,
    offset: u64,
    pos: u64,
    seen: u64,
    outcome: impl FnOnce(u32, u64) -> Result<bool, E>,
) -> Result<(), E> {
    if !ring::is_prepared(offset, seen) {
        ring.abort(offset, seen);
        return Ok(());
    }
    let link = ring.link_of(pos, seen);
    // Acquire: a seqlock check of the link read above. A committer zeroes the link before its
    // tag CAS, so a changed tag means the link may be torn: the caller reads it all again.
    if ring.slot_tag(offset).load(Ordering::Acquire) != seen {
        return Ok(());
    }
    let commit = if link == 0 {
        // Zeroed by a committer, which read the transaction committed (X2).
        true
    } else if let Some((slot, epoch)) = unlink(link) {
        outcome(slot, epoch)?
    } else {
        // Not a link: damaged bytes; the record is not one shmq prepared.
        false
    };
    ring.settle_prepared(offset, pos, seen, commit);
    Ok(())
}

/// One partition a transaction wrote to: its records are offsets `first .. first + count` of
/// `partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Participant {
    pub partition: u32,
    pub count: u32,
    pub first: u64,
}

/// What is wrong with a header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderFault {
    Magic,
    Version(u32),
    Checksum,
    Field(&'static str, u64),
}

/// The immutable header.
pub(crate) fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    put32(&mut h, H_VERSION, VERSION);
    put32(&mut h, H_SLOTS, SLOTS);
    put32(&mut h, H_PARTICIPANTS, MAX_PARTICIPANTS);
    let crc = crc32c::crc32c(&h[..H_CRC]);
    put32(&mut h, H_CRC, crc);
    h
}

/// Checks a header read from a file, in FORMAT.md's order.
pub(crate) fn check_header(h: &[u8; HEADER_LEN]) -> Result<(), HeaderFault> {
    if h[..8] != MAGIC {
        return Err(HeaderFault::Magic);
    }
    let version = get32(h, H_VERSION);
    if version != VERSION {
        return Err(HeaderFault::Version(version));
    }
    if crc32c::crc32c(&h[..H_CRC]) != get32(h, H_CRC) {
        return Err(HeaderFault::Checksum);
    }
    for (field, at, want) in [
        ("slots", H_SLOTS, SLOTS),
        ("participants", H_PARTICIPANTS, MAX_PARTICIPANTS),
    ] {
        let found = get32(h, at);
        if found != want {
            return Err(HeaderFault::Field(field, u64::from(found)));
        }
    }
    Ok(())
}

/// The slots of a mapped transaction file. A view, made on demand; offsets are constants below
/// [`FILE_SIZE`], every access bounds-checked by the region.
pub(crate) struct TxnTable<'a> {
    region: &'a Region,
}

impl<'a> TxnTable<'a> {
    /// The table of a region of at least [`FILE_SIZE`] bytes.
    pub(crate) fn new(region: &'a Region) -> Self {
        TxnTable { region }
    }

    fn at(&self, slot: u32, field: u64) -> u64 {
        debug_assert!(slot < SLOTS);
        SLOT_BASE + u64::from(slot) * SLOT_SIZE + field
    }

    /// The holder's lease word (0: nobody).
    pub(crate) fn owner(&self, slot: u32) -> &'a AtomicU128 {
        self.region.u128(self.at(slot, S_OWNER))
    }

    /// The state word `epoch << 2 | S`.
    pub(crate) fn state(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, S_STATE))
    }

    /// The last epoch whose records are all settled.
    pub(crate) fn settled(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, S_SETTLED))
    }

    /// The length of the slot's name (0: a free slot).
    pub(crate) fn name_len(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, S_NAME_LEN))
    }

    /// The slot's name, if its length word is in range and the bytes are UTF-8.
    pub(crate) fn name(&self, slot: u32) -> Option<String> {
        // Relaxed: names are written under the file's lock before anyone looks them up, which
        // also takes the lock (or reads a name only for people).
        let len = self
            .name_len(slot)
            .load(crate::protocol::sync::Ordering::Relaxed);
        if len == 0 || len > MAX_NAME as u64 {
            return None;
        }
        let mut buf = vec![0u8; len as usize];
        self.region.read_bytes(self.at(slot, S_NAME), &mut buf);
        String::from_utf8(buf).ok()
    }

    /// Writes the slot's name (under the file's lock, before its length).
    pub(crate) fn set_name(&self, slot: u32, name: &str) {
        debug_assert!(!name.is_empty() && name.len() <= MAX_NAME);
        self.region
            .write_bytes(self.at(slot, S_NAME), name.as_bytes());
        // Release: the bytes before the length (readers take the file lock anyway).
        self.name_len(slot)
            .store(name.len() as u64, crate::protocol::sync::Ordering::Release);
    }

    /// The number of participants of the slot's current epoch.
    pub(crate) fn count(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, S_COUNT))
    }

    /// Participant `i`'s two words: `partition | count << 32`, then the first offset.
    pub(crate) fn participant(&self, slot: u32, i: u32) -> &'a [AtomicU64; 2] {
        debug_assert!(i < MAX_PARTICIPANTS);
        self.region
            .u64s(self.at(slot, S_PARTICIPANTS + u64::from(i) * PARTICIPANT))
    }
}

/// Decodes a participant's words; `None` for a count of 0.
pub(crate) fn unpack_participant(words: [u64; 2]) -> Option<Participant> {
    let count = (words[0] >> 32) as u32;
    (count > 0).then_some(Participant {
        partition: words[0] as u32,
        count,
        first: words[1],
    })
}

/// A participant's first word.
pub(crate) fn pack_participant(p: &Participant) -> u64 {
    u64::from(p.partition) | u64::from(p.count) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_reject_plain_schedules() {
        assert_eq!(unlink(link(63, 5)), Some((63, 5)));
        assert_eq!(unlink(link(0, MAX_EPOCH)), Some((0, MAX_EPOCH)));
        // A plain schedule: delay 10 ms, ttl 1000 ms.
        assert_eq!(unlink(10 | 1000 << 32), None);
        assert_eq!(unlink(0), None);
        // A slot past the table.
        assert_eq!(unlink(LINK_MARK | 64 << 48 | 1), None);
    }

    #[test]
    fn header_checks() {
        let h = encode_header();
        assert_eq!(check_header(&h), Ok(()));
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(check_header(&bad), Err(HeaderFault::Magic));
        let mut bad = h;
        bad[H_SLOTS] ^= 1;
        assert_eq!(check_header(&bad), Err(HeaderFault::Checksum));
    }
}
