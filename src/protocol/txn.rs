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

use crate::error::TxnFault;
use crate::protocol::crc;
use crate::protocol::layout::{get32, put32};
use crate::protocol::ring::{self, Ring, LINK_MARK};
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
/// The boot id of the machine that last opened the file as a holder (16 bytes): a different
/// one means the machine restarted, and the file's recovery runs (`queue/txn.rs`).
pub(crate) const BOOT_ID: u64 = 256;

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
const S_INPUT_OLD: u64 = 1168;
const S_INPUT_NEW: u64 = 1184;
const S_INPUT_GROUP_LEN: u64 = 1200;
const S_INPUT_GROUP: u64 = 1208;
const S_INPUT_PATH_LEN: u64 = 1272;
const S_INPUT_PATH: u64 = 1280;
/// Longest input queue path (bytes) of a consume-transform-produce transaction.
pub(crate) const MAX_INPUT_PATH: usize = 768;
const _: () = assert!(S_PARTICIPANTS + MAX_PARTICIPANTS as u64 * PARTICIPANT <= S_INPUT_OLD);
const _: () = assert!(S_INPUT_PATH + MAX_INPUT_PATH as u64 <= SLOT_SIZE);
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
/// ([`decide`] over the slot's state word), and sleeping readers are woken. Nothing happens
/// if the tag changed meanwhile (the caller reads it again). `Ok(false)`: the record's bytes
/// may have been overwritten (the ring lapped it: only a reader that may be overrun sees
/// this), so its link cannot be read; nothing was done. A header that does not repeat the
/// offset, or a schedule word that is no link, is damage: the record is aborted. An error of
/// `outcome` leaves the record as it is.
pub(crate) fn give_up_stalled<E>(
    ring: &Ring,
    offset: u64,
    pos: u64,
    seen: u64,
    outcome: impl FnOnce(u32, u64) -> Result<bool, E>,
) -> Result<bool, E> {
    if !ring::is_prepared(offset, seen) {
        ring.abort(offset, seen);
        return Ok(true);
    }
    let Some((stored, link)) = ring.prepared_header(offset, pos, seen) else {
        return Ok(true);
    };
    // SYNC L: after the header's loads (and the fence in `prepared_header`).
    if ring.overrun(pos) {
        return Ok(false);
    }
    let commit = match unlink(link).filter(|_| stored == offset) {
        Some((slot, epoch)) => outcome(slot, epoch)?,
        None => false,
    };
    if ring.settle_prepared(offset, seen, commit) {
        ring.notify_data();
    }
    Ok(true)
}

/// One partition a transaction wrote to: its records are offsets `first .. first + count` of
/// `partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Participant {
    pub partition: u32,
    pub count: u32,
    pub first: u64,
}

/// The immutable header.
pub(crate) fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    put32(&mut h, H_VERSION, VERSION);
    put32(&mut h, H_SLOTS, SLOTS);
    put32(&mut h, H_PARTICIPANTS, MAX_PARTICIPANTS);
    let crc = crc::crc32c(&h[..H_CRC]);
    put32(&mut h, H_CRC, crc);
    h
}

/// Checks a header read from a file, in FORMAT.md's order.
pub(crate) fn check_header(h: &[u8; HEADER_LEN]) -> Result<(), TxnFault> {
    if h[..8] != MAGIC {
        return Err(TxnFault::BadMagic);
    }
    let version = get32(h, H_VERSION);
    if version != VERSION {
        return Err(TxnFault::Version { found: version });
    }
    if crc::crc32c(&h[..H_CRC]) != get32(h, H_CRC) {
        return Err(TxnFault::Checksum);
    }
    for (field, at, want) in [
        ("slots", H_SLOTS, SLOTS),
        ("participants", H_PARTICIPANTS, MAX_PARTICIPANTS),
    ] {
        let found = get32(h, at);
        if found != want {
            return Err(TxnFault::Field {
                field,
                value: u64::from(found),
            });
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

    /// After a machine restart (no process from before it runs, and the partitions' recovery
    /// kept none of their prepared records, since a prepared record ends the prefix it
    /// replays): ends the slot's epoch as it stood (one still preparing aborted) and settled,
    /// with no participants and no input commit left to make, and no holder. Under the file's
    /// lock, before the boot id is stored.
    pub(crate) fn clear_after_restart(&self, slot: u32) {
        // Relaxed throughout: published by the boot id's Release store, which every holder
        // loads (Acquire) first.
        let (epoch, s) = unpack_state(self.state(slot).load(Ordering::Relaxed));
        if s == PREPARING {
            self.state(slot)
                .store(state(epoch, ABORTED), Ordering::Relaxed);
        }
        self.settled(slot).store(epoch, Ordering::Relaxed);
        self.count(slot).store(0, Ordering::Relaxed);
        self.set_input(slot, None);
        self.owner(slot).store(0, Ordering::Relaxed);
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

/// A consumer group's commit that a transaction makes with its records (consume-transform-
/// produce): group `group` of the queue file at `path` moves from committed word `old` to
/// `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputCommit {
    pub path: String,
    pub group: String,
    pub old: u128,
    pub new: u128,
}

impl TxnTable<'_> {
    /// Records the current epoch's input commit (or none), before its commit point: the
    /// words first, the path's length last (Release).
    pub(crate) fn set_input(&self, slot: u32, input: Option<&InputCommit>) {
        use crate::protocol::sync::Ordering;
        let Some(i) = input else {
            // Relaxed: published by the epoch's PREPARING store, which follows.
            self.region
                .u64(self.at(slot, S_INPUT_PATH_LEN))
                .store(0, Ordering::Relaxed);
            return;
        };
        debug_assert!(i.path.len() <= MAX_INPUT_PATH && i.group.len() <= MAX_NAME);
        // Relaxed: published by the length's Release store below.
        self.region
            .u128(self.at(slot, S_INPUT_OLD))
            .store(i.old, Ordering::Relaxed);
        self.region
            .u128(self.at(slot, S_INPUT_NEW))
            .store(i.new, Ordering::Relaxed);
        self.region
            .write_bytes(self.at(slot, S_INPUT_GROUP), i.group.as_bytes());
        self.region
            .u64(self.at(slot, S_INPUT_GROUP_LEN))
            .store(i.group.len() as u64, Ordering::Relaxed);
        self.region
            .write_bytes(self.at(slot, S_INPUT_PATH), i.path.as_bytes());
        // Release: a next holder that reads the length sees the rest.
        self.region
            .u64(self.at(slot, S_INPUT_PATH_LEN))
            .store(i.path.len() as u64, Ordering::Release);
    }

    /// The current epoch's input commit, if it has one and its words are in range (`Err`
    /// with what is wrong otherwise).
    pub(crate) fn input(&self, slot: u32) -> Result<Option<InputCommit>, String> {
        use crate::protocol::sync::Ordering;
        // Acquire: pairs with the Release store in `set_input`.
        let path_len = self
            .region
            .u64(self.at(slot, S_INPUT_PATH_LEN))
            .load(Ordering::Acquire);
        if path_len == 0 {
            return Ok(None);
        }
        // Relaxed: ordered after the Acquire load above.
        let group_len = self
            .region
            .u64(self.at(slot, S_INPUT_GROUP_LEN))
            .load(Ordering::Relaxed);
        if path_len > MAX_INPUT_PATH as u64 || group_len == 0 || group_len > MAX_NAME as u64 {
            return Err(format!(
                "an input of path length {path_len} and group length {group_len}"
            ));
        }
        let text = |at: u64, len: u64| {
            let mut buf = vec![0u8; len as usize];
            self.region.read_bytes(self.at(slot, at), &mut buf);
            String::from_utf8(buf)
                .map_err(|_| "an input path or group that is not UTF-8".to_string())
        };
        Ok(Some(InputCommit {
            path: text(S_INPUT_PATH, path_len)?,
            group: text(S_INPUT_GROUP, group_len)?,
            old: self
                .region
                .u128(self.at(slot, S_INPUT_OLD))
                .load(Ordering::Relaxed),
            new: self
                .region
                .u128(self.at(slot, S_INPUT_NEW))
                .load(Ordering::Relaxed),
        }))
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
        assert_eq!(check_header(&bad), Err(TxnFault::BadMagic));
        let mut bad = h;
        bad[H_SLOTS] ^= 1;
        assert_eq!(check_header(&bad), Err(TxnFault::Checksum));
    }
}
