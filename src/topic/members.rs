//! The membership file of a topic: who is in which consumer group, alive and heartbeating.
//!
//! A 4 KiB header then [`SLOTS`] slots of 128 bytes, mapped `MAP_SHARED` by every member
//! (FORMAT.md, "Membership file"). A member owns a slot through the word of its [`Lease`] on
//! this file (`lease.rs`: a kernel lock that dies with the holder), taken by CAS from nobody or
//! from a dead holder, and stamps a heartbeat (`CLOCK_MONOTONIC`, shared by every process on
//! the host) into it. A member is *live* while it holds its lease and its heartbeat is younger than the session timeout it
//! declared. Every member computes the same assignment from the sorted list of live members of
//! its group ([`assigned`]), so no leader is needed.
//!
//! # Sync points
//!
//! SYNC J (a slot's fields, a seqlock keyed by the lease) and W (the header's `wake waiters`
//! bitmap and `wake seq` futex word, the wake-up protocol of the ring): see the table "Sync
//! points" in `ARCHITECTURE.md`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Corruption, Error, MembersFault, Result};
use crate::mapping::file::io_err;
use crate::mapping::lease::{self, Lease, OwnFd};
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::Trust;
use crate::protocol::crc;
use crate::protocol::layout::MAX_GROUP_NAME;
use crate::protocol::sync::{fence, Ordering, Region};
use crate::runtime::clock::{monotonic_ns, saturating_ns};

/// The membership file's name inside the topic directory.
pub(crate) const FILE: &str = "members";
const MAGIC: [u8; 8] = *b"SHMQMEMB";
/// Version 2: lease words are kernel-held liveness ids (not pid and start time).
const VERSION: u32 = 2;
/// Member slots: at most this many members (of all groups) at once. One bit each in the
/// 64-bit sleeper bitmap.
pub(crate) const SLOTS: u32 = 64;
const HEADER: u64 = 4096;
const SLOT: u64 = 128;
const SIZE: u64 = HEADER + SLOTS as u64 * SLOT;
const IMMUTABLE: usize = 32;

/// Header words.
const GENERATION: u64 = 128;
pub(crate) const WAKE_SEQ: u64 = 256;
pub(crate) const WAKE_WAITERS: u64 = 264;

/// Slot fields.
const LEASE: u64 = 0;
const READY: u64 = 16;
const HEARTBEAT: u64 = 24;
const SESSION: u64 = 32;
const NAME_LEN: u64 = 40;
const NAME: u64 = 48;
// The name is copied as whole atomic words and fits the slot before its reserved bytes.
const _: () =
    assert!(MAX_GROUP_NAME.is_multiple_of(8) && NAME + MAX_GROUP_NAME as u64 <= SLOT - 16);

/// One member of a topic's consumer group, as read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The consumer group.
    pub group: String,
    /// The member's process id.
    pub pid: u32,
    /// Whether it still holds its lease (its process runs and has not left).
    pub alive: bool,
    /// Time since its last heartbeat.
    pub heartbeat_age: Duration,
    /// How old its heartbeat may get before the others take its partitions.
    pub session_timeout: Duration,
    /// Alive with a fresh heartbeat: it counts in the assignment.
    pub live: bool,
}

/// A slot this process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub index: u32,
    pub word: u128,
}

/// What a reader found in a slot.
struct Seen {
    word: u128,
    name: String,
    heartbeat: u64,
    session: u64,
}

/// The mapped membership file.
pub(crate) struct Members {
    // Field order: the region points into `map`, dropped after it.
    region: Region,
    file: File,
    path: PathBuf,
    map: Protected,
}

fn corrupt(path: &Path, why: MembersFault) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        kind: Corruption::Members(why),
    }
}

fn immutable_header() -> [u8; IMMUTABLE] {
    let mut b = [0u8; IMMUTABLE];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&SLOTS.to_le_bytes());
    let crc = crc::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

impl Members {
    /// Writes a new, empty membership file at `path` (inside a topic directory not yet
    /// visible to anyone).
    pub(crate) fn create(path: &Path, mode: u32) -> Result<()> {
        let file = crate::mapping::file::create_allocated(path, mode, SIZE)?;
        file.write_all_at(&immutable_header(), 0)
            .map_err(io_err(path, "write membership header"))?;
        file.sync_all().map_err(io_err(path, "fsync"))
    }

    /// Opens and validates the membership file at `path`, which `trust` must accept.
    pub(crate) fn open(path: &Path, trust: &Trust) -> Result<Members> {
        let file = crate::mapping::trust::open_shared(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => corrupt(path, MembersFault::Missing),
            _ => io_err(path, "open membership file")(e),
        })?;
        let meta = file.metadata().map_err(io_err(path, "stat"))?;
        trust.check(path, &meta)?;
        let len = meta.len();
        if len != SIZE {
            return Err(corrupt(
                path,
                MembersFault::Size {
                    len,
                    expected: SIZE,
                },
            ));
        }
        let mut head = [0u8; IMMUTABLE];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(path, "read membership header"))?;
        if head != immutable_header() {
            return Err(corrupt(path, MembersFault::Header));
        }
        let map = Protected::map(&file, SIZE as usize).map_err(io_err(path, "mmap"))?;
        // SAFETY: the mapping is page-aligned, exactly SIZE bytes, readable and writable, and
        // lives in `map` for as long as the region (same struct).
        let region = unsafe { Region::new(map.as_mut_ptr(), SIZE as usize) };
        Ok(Members {
            region,
            file,
            path: path.to_path_buf(),
            map,
        })
    }

    /// `Err(Truncated)` once the file shrank under this process's mapping (`sigbus.rs`).
    pub(crate) fn check_damage(&self) -> Result<()> {
        match self.map.damage() {
            None => Ok(()),
            Some(_) => Err(Error::Truncated {
                path: self.path.clone(),
            }),
        }
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    fn slot_off(index: u32) -> u64 {
        HEADER + index as u64 * SLOT
    }

    /// The topic generation last published by a growth (see [`Members::publish_generation`]).
    pub(crate) fn generation(&self) -> u64 {
        // Acquire: pairs with the Release of `publish_generation`, which follows the rename of
        // the new descriptor, so whoever sees the new value reads the new descriptor.
        self.region.u64(GENERATION).load(Ordering::Acquire)
    }

    /// Tells every producer and member that the descriptor changed (after it was renamed into
    /// place).
    pub(crate) fn publish_generation(&self, generation: u64) {
        // Release: see `generation`.
        self.region
            .u64(GENERATION)
            .fetch_max(generation, Ordering::Release);
    }

    /// A new lease on the membership file: a member's identity while it lives.
    pub(crate) fn new_lease(&self) -> Result<Lease> {
        Lease::new(&self.file, &self.path).map_err(io_err(&self.path, "take a lease"))
    }

    /// Joins `group` as the holder of lease word `word` (see [`Members::new_lease`]): takes a
    /// free slot (or one a dead holder left) and stamps it.
    pub(crate) fn join(&self, group: &str, session: Duration, word: u128) -> Result<Slot> {
        crate::queue::group::check_name(group)?;
        for index in 0..SLOTS {
            let base = Self::slot_off(index);
            let lease = self.region.u128(base + LEASE);
            // Acquire: see the previous owner's last writes before judging it.
            let held = lease.load(Ordering::Acquire);
            if lease::alive(&self.file, held) {
                continue;
            }
            // SYNC J (AcqRel): Acquire as above; Release orders the claim before our fields.
            if lease
                .compare_exchange(held, word, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SYNC J (Release fence): a reader whose field loads see any store below also sees
            // the CAS above on its second lease load, and discards what it read.
            fence(Ordering::Release);
            crate::crash::point("member.join.after_lease");
            let r = &self.region;
            // Relaxed: the fields are published by the Release store of `ready` below.
            r.u64(base + HEARTBEAT)
                .store(monotonic_ns(), Ordering::Relaxed);
            r.u64(base + SESSION)
                .store(saturating_ns(session), Ordering::Relaxed);
            r.u64(base + NAME_LEN)
                .store(group.len() as u64, Ordering::Relaxed);
            let mut padded = [0u8; MAX_GROUP_NAME];
            padded[..group.len()].copy_from_slice(group.as_bytes());
            for (i, chunk) in padded.chunks_exact(8).enumerate() {
                let bytes = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                // Relaxed: as above.
                r.u64(base + NAME + 8 * i as u64)
                    .store(bytes, Ordering::Relaxed);
            }
            // SYNC J (Release): the fields above are visible to whoever sees `ready` match.
            r.u64(base + READY)
                .store(lease::tag(word), Ordering::Release);
            crate::crash::point("member.join.after_ready");
            // A dead predecessor may have died asleep. SeqCst like every sleeper-bitmap change.
            r.u64(WAKE_WAITERS)
                .fetch_and(!(1u64 << index), Ordering::SeqCst);
            return Ok(Slot { index, word });
        }
        Err(Error::TooManyMembers {
            path: self.path.clone(),
            slots: SLOTS,
        })
    }

    /// Stamps a fresh heartbeat; false if the slot is no longer ours (only a hostile or
    /// damaged file takes a live member's slot).
    pub(crate) fn heartbeat(&self, slot: Slot) -> bool {
        let base = Self::slot_off(slot.index);
        // Acquire: pairs with any CAS that took the slot. Checked first, so a member whose
        // slot was taken does not keep its new owner's heartbeat fresh.
        if self.region.u128(base + LEASE).load(Ordering::Acquire) != slot.word {
            return false;
        }
        // Relaxed: a timestamp; readers only compare it with the clock.
        self.region
            .u64(base + HEARTBEAT)
            .store(monotonic_ns(), Ordering::Relaxed);
        true
    }

    /// Leaves: the slot is free for the next joiner.
    pub(crate) fn leave(&self, slot: Slot) {
        let base = Self::slot_off(slot.index);
        // Acquire: as in `heartbeat`. A slot someone else took is theirs: clearing its `ready`
        // would hide a live member from every assignment.
        if self.region.u128(base + LEASE).load(Ordering::Acquire) != slot.word {
            return;
        }
        // Release: the next owner's CAS (Acquire) sees the slot not ready.
        self.region.u64(base + READY).store(0, Ordering::Release);
        crate::crash::point("member.leave.before_lease");
        // Release: as above.
        let _ = self.region.u128(base + LEASE).compare_exchange(
            slot.word,
            0,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Reads slot `index` consistently (SYNC J), or `None` if it is free, being joined, or
    /// malformed.
    fn seen(&self, index: u32) -> Option<Seen> {
        let base = Self::slot_off(index);
        let r = &self.region;
        // SYNC J (Acquire): see the fields of the owner that took the slot.
        let word = r.u128(base + LEASE).load(Ordering::Acquire);
        // SYNC J (Acquire): pairs with the Release store of `ready`.
        if word == 0 || r.u64(base + READY).load(Ordering::Acquire) != lease::tag(word) {
            return None;
        }
        // Relaxed: ordered by the Acquire load of `ready`.
        let len = r.u64(base + NAME_LEN).load(Ordering::Relaxed);
        if len == 0 || len > MAX_GROUP_NAME as u64 {
            return None;
        }
        let mut name: Vec<u8> = (0..MAX_GROUP_NAME as u64 / 8)
            // Relaxed: as for the length.
            .flat_map(|i| {
                r.u64(base + NAME + 8 * i)
                    .load(Ordering::Relaxed)
                    .to_le_bytes()
            })
            .collect();
        name.truncate(len as usize);
        // Relaxed: as for the length.
        let heartbeat = r.u64(base + HEARTBEAT).load(Ordering::Relaxed);
        let session = r.u64(base + SESSION).load(Ordering::Relaxed);
        // SYNC J (Acquire fence, then Relaxed): if the slot changed hands while we read, the
        // new owner's CAS is visible here and what we read is discarded. An Acquire load alone
        // would not do: it orders the loads after it, not the field loads before it.
        fence(Ordering::Acquire);
        if r.u128(base + LEASE).load(Ordering::Relaxed) != word {
            return None;
        }
        Some(Seen {
            word,
            name: String::from_utf8(name).ok()?,
            heartbeat,
            session,
        })
    }

    /// The lease words of the live members of `group`, sorted: the order [`assigned`] uses.
    pub(crate) fn live(&self, group: &str) -> Vec<u128> {
        let now = monotonic_ns();
        let mut live: Vec<u128> = (0..SLOTS)
            .filter_map(|i| self.seen(i))
            .filter(|s| s.name == group && self.is_live(s, now))
            .map(|s| s.word)
            .collect();
        live.sort_unstable();
        live
    }

    /// The lease words of members of `group` that are counted out although their process may
    /// run: their heartbeat is older than their session timeout (a hung or stopped process).
    /// Their partitions may be taken from them; their commits are fenced off afterwards.
    pub(crate) fn stale(&self, group: &str) -> Vec<u128> {
        let now = monotonic_ns();
        (0..SLOTS)
            .filter_map(|i| self.seen(i))
            .filter(|s| s.name == group && !self.is_live(s, now))
            .map(|s| s.word)
            .collect()
    }

    /// Every member of every group.
    pub(crate) fn infos(&self) -> Vec<MemberInfo> {
        let now = monotonic_ns();
        (0..SLOTS)
            .filter_map(|i| self.seen(i))
            .map(|s| MemberInfo {
                pid: lease::pid(s.word),
                alive: lease::alive(&self.file, s.word),
                heartbeat_age: Duration::from_nanos(now.saturating_sub(s.heartbeat)),
                session_timeout: Duration::from_nanos(s.session),
                live: self.is_live(&s, now),
                group: s.name,
            })
            .collect()
    }

    /// Whether a member is live: it holds its lease and its heartbeat is younger than its
    /// session timeout.
    fn is_live(&self, s: &Seen, now: u64) -> bool {
        now.saturating_sub(s.heartbeat) <= s.session && lease::alive(&self.file, s.word)
    }

    /// Holds the membership file's administration lock (topic growth): an exclusive `flock`
    /// through a description of its own, so threads of this process exclude each other too.
    /// Released on drop.
    pub(crate) fn lock(&self) -> Result<FileLock> {
        OwnFd::flock_exclusive(&self.file, &self.path)
            .map(|fd| FileLock { _fd: fd })
            .map_err(io_err(&self.path, "flock"))
    }
}

/// The membership file's administration lock (see [`Members::lock`]).
pub(crate) struct FileLock {
    _fd: OwnFd,
}

/// The partitions of `partitions` assigned to member `me` among the sorted `live` members:
/// partition `p` goes to the member at index `p mod live.len()`, so each member gets
/// `partitions / live.len()` of them, rounded up or down. None if `me` is not live.
pub(crate) fn assigned(live: &[u128], me: u128, partitions: u32) -> Vec<bool> {
    let index = live.iter().position(|&w| w == me);
    (0..partitions as usize)
        .map(|p| index == Some(p % live.len().max(1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new membership file in a temporary directory (kept alive by the first value).
    fn scratch() -> (tempfile::TempDir, Members) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        Members::create(&path, 0o600).unwrap();
        let m = Members::open(&path, &Trust::default()).unwrap();
        (dir, m)
    }

    #[test]
    fn a_member_whose_slot_was_taken_stamps_no_heartbeat_into_it() {
        let (_dir, m) = scratch();
        let (mine, other) = (m.new_lease().unwrap(), m.new_lease().unwrap());
        let slot = m.join("g", Duration::from_secs(1), mine.word()).unwrap();
        assert!(m.heartbeat(slot));
        let base = Members::slot_off(slot.index);
        m.region()
            .u128(base + LEASE)
            .store(other.word(), Ordering::SeqCst);
        m.region().u64(base + HEARTBEAT).store(7, Ordering::SeqCst);
        assert!(!m.heartbeat(slot));
        assert_eq!(m.region().u64(base + HEARTBEAT).load(Ordering::SeqCst), 7);
    }

    #[test]
    fn a_member_whose_slot_was_taken_leaves_the_new_owner_ready() {
        let (_dir, m) = scratch();
        let (first, second) = (m.new_lease().unwrap(), m.new_lease().unwrap());
        let stale = m.join("g", Duration::from_secs(1), first.word()).unwrap();
        // Another member (a live holder's word) took the slot, as only a damaged file allows.
        let base = Members::slot_off(stale.index);
        m.region().u128(base + LEASE).store(0, Ordering::SeqCst);
        let owner = m.join("g", Duration::from_secs(1), second.word()).unwrap();
        assert_eq!(owner.index, stale.index);
        m.leave(stale);
        assert_eq!(m.live("g"), vec![owner.word], "the new owner still counts");
    }

    #[test]
    fn a_new_owner_with_a_recycled_pid_is_not_ready_with_its_predecessors_fields() {
        let (_dir, m) = scratch();
        let owner = m.new_lease().unwrap();
        let live = owner.word();
        // The dead predecessor: the same pid, another id, no longer held.
        let dead = m.new_lease().unwrap().word();
        assert_eq!(dead as u64, live as u64, "same pid half");
        assert!(lease::alive(&m.file, live) && lease::tests::dies(&m.file, dead));
        let base = Members::slot_off(0);
        let r = m.region();
        r.u128(base + LEASE).store(dead, Ordering::SeqCst);
        r.u64(base + HEARTBEAT)
            .store(monotonic_ns(), Ordering::SeqCst);
        r.u64(base + SESSION).store(u64::MAX, Ordering::SeqCst);
        r.u64(base + NAME_LEN).store(1, Ordering::SeqCst);
        r.u64(base + NAME).store(u64::from(b'g'), Ordering::SeqCst);
        r.u64(base + READY)
            .store(lease::tag(dead), Ordering::SeqCst);
        assert!(m.seen(0).is_some(), "the predecessor's complete slot reads");
        // Its heartbeat looks fresh (as one from before a machine restart can, since the
        // monotonic clock restarts at boot), but nobody holds its lease: not a member.
        assert!(
            m.live("g").is_empty(),
            "a dead holder's fresh heartbeat does not count"
        );
        assert_eq!(m.stale("g"), vec![dead]);
        // The new owner has taken the lease and not yet written its fields nor `ready`.
        r.u128(base + LEASE).store(live, Ordering::SeqCst);
        assert!(m.seen(0).is_none(), "half-joined: not a member yet");
        assert!(m.live("g").is_empty());
    }

    #[test]
    fn assignment_is_a_fair_partition_of_the_partitions() {
        for members in 1..=9u128 {
            let live: Vec<u128> = (1..=members).collect();
            let shares: Vec<Vec<bool>> = live.iter().map(|&m| assigned(&live, m, 8)).collect();
            for p in 0..8 {
                assert_eq!(shares.iter().filter(|s| s[p]).count(), 1, "one holder each");
            }
            let counts: Vec<usize> = shares
                .iter()
                .map(|s| s.iter().filter(|&&x| x).count())
                .collect();
            assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
        }
        assert!(assigned(&[1, 2], 3, 4).iter().all(|&x| !x));
    }
}
