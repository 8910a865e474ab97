//! Recovery after a machine restart (power loss, kernel panic, or a clean reboot).
//!
//! A process crash loses nothing: the page cache survives it. A machine restart loses every page
//! not yet written back, in any order. A file whose recorded boot id differs from the running
//! kernel's was last used before a restart, and the first opener recovers it, under the admin
//! lock, before anyone uses it:
//!
//! 1. Everything before the `FLUSHED` cursor is kept: it was on disk before the cursor was
//!    stored.
//! 2. From there, records are accepted only while each one's slot tag says it was committed
//!    and its header carries the next offset, fits the ring and matches its CRC32C (or its slot
//!    says aborted and its successor's position is sane). A torn or stale record, or one whose
//!    commit did not reach the disk, ends the valid prefix. The tag keeps out a record that a
//!    reader aborted while its producer was writing the header: that producer was told
//!    `Aborted` (see `valid_record`). Without checksums nothing past `FLUSHED` can be trusted.
//! 3. The tail is set to the end of that prefix, and so are the flushed, synced and durable
//!    cursors (step 7 puts them on disk before anyone uses the file). Slots that speak of later
//!    offsets are cleared. Every record from `FLUSHED` to the durable cursor of before the
//!    restart is in that prefix: producers never overwrite them (`durable.rs`).
//! 4. Records that did not survive may still have written ring bytes and slots, one lap
//!    behind the recovered tail, over older records. So recovery walks back from `FLUSHED`
//!    over records whose slot, header and CRC agree, and stores the oldest one as the `FLOOR`.
//!    Nothing older is readable. Without checksums nothing can be verified, and the floor is
//!    the tail.
//! 5. Group offsets past the tail are clamped, and those behind the floor are moved up to it;
//!    both are reported. Leases and producer slots are cleared: no process from before the
//!    restart runs.
//! 6. The poison mark of a failed flush is cleared. `FLUSHED` never moved past the records
//!    whose flush failed, and steps 2 and 3 kept only what the disk holds intact, so nothing
//!    that was lost is vouched for.
//! 7. The result is flushed, then the new boot id is stored and flushed.

use std::os::fd::AsRawFd;

use crate::error::{Corruption, Error, Malformed, Result};
use crate::protocol::crc;
use crate::protocol::layout::{
    footprint, BOOT_ID, DATA_WAITERS, DURABLE_WAITERS, FLOOR, RECORD_ALIGN, RECORD_HEADER,
    SPACE_WAITERS, TAIL,
};
use crate::protocol::ring::{
    claim_start, sane_cursor, tag, tag_offset, ABORTED, COMMITTED, WRAPPED,
};
use crate::protocol::sync::{pack, unpack, Ordering};
use crate::queue::group::AdminLock;
use crate::queue::mapped::MappedQueue;
use crate::runtime::boot;

/// What recovery after a machine restart did to a queue file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The recovered tail: records `0..tail` were kept (those still in the ring are readable).
    pub tail: u64,
    /// The flushed cursor recovery started from; everything before it was on disk.
    pub flushed: u64,
    /// Records past the flushed cursor that checked out (committed slot, offset, length and
    /// CRC) and were kept.
    pub replayed: u64,
    /// Groups whose committed offset was past the recovered tail: `(name, old offset)`. They
    /// now resume at `tail`.
    pub clamped: Vec<(String, u64)>,
    /// The oldest record recovery could verify; older ones are no longer readable.
    pub floor: u64,
    /// Groups whose committed offset was behind the floor: `(name, old offset)`. They now
    /// resume at `floor`; the records between were lost to them.
    pub skipped: Vec<(String, u64)>,
}

impl MappedQueue {
    /// Recovers the file if it was last used before a machine restart; `None` if not.
    pub(crate) fn recover_if_restarted(&self) -> Result<Option<Recovery>> {
        let boot = boot::boot_id().map_err(|e| self.io("read boot id", e))?;
        if self.stored_boot_id() == boot {
            return Ok(None);
        }
        let _lock = AdminLock::take(self)?;
        // Another opener may have recovered it while we waited for the lock.
        if self.stored_boot_id() == boot {
            return Ok(None);
        }
        let report = self.recover()?;
        self.sync("fdatasync after recovery")?;
        self.ring.region.write_bytes(BOOT_ID, &boot);
        self.sync("fdatasync of the boot id")?;
        Ok(Some(report))
    }

    fn check_record(
        &self,
        offset: u64,
        start: u64,
        wrapped: bool,
        rest: u64,
        buf: &mut Vec<u8>,
    ) -> Option<u64> {
        let ring = &self.ring;
        let capacity = ring.layout.capacity;
        let room = capacity - (start & (capacity - 1));
        if room < RECORD_HEADER {
            return None;
        }
        let (stored, len, crc) = ring.header_at(start);
        let size = footprint(len as u64);
        // A wrapped record is one that did not fit in the rest of the lap (`rest` bytes).
        if stored != offset
            || len > ring.layout.max_message
            || size > room
            || wrapped != (size > rest)
        {
            return None;
        }
        buf.resize(len as usize, 0);
        ring.region
            .read_bytes(ring.data_at(start) + RECORD_HEADER, buf);
        (crc::crc32c(buf) == crc).then_some(start + size)
    }

    fn stored_boot_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        self.ring.region.read_bytes(BOOT_ID, &mut id);
        id
    }

    fn sync(&self, op: &'static str) -> Result<()> {
        crate::fault::check("fdatasync").map_err(|e| self.io(op, e))?;
        nix::unistd::fdatasync(self.file.as_raw_fd())
            .map_err(|e| self.io(op, std::io::Error::from(e)))
    }

    fn recover(&self) -> Result<Recovery> {
        let ring = &self.ring;
        let r = &ring.region;
        let d = self.durable_state();
        // Relaxed loads and stores throughout: nobody else uses the file during recovery (every
        // other opener waits for the admin lock, and no process from before the restart runs).
        let (flushed, flushed_pos) = unpack(d.flushed().load(Ordering::Relaxed));
        if !sane_cursor(flushed, flushed_pos) {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                kind: Corruption::Shared(Malformed::Cursor {
                    which: "flushed cursor",
                    offset: flushed,
                    pos: flushed_pos,
                }),
            });
        }
        let (mut offset, mut pos) = (flushed, flushed_pos);
        let mut replayed = 0;
        if self.geometry.checksums {
            let mut buf = Vec::new();
            let mut dead_member = false;
            // Each step consumes a slot, so a ring's worth of slots bounds the scan.
            for _ in 0..ring.layout.index_entries {
                let Some((next, member)) = self.valid_record(offset, pos, dead_member, &mut buf)
                else {
                    break;
                };
                (pos, dead_member) = (next, member);
                offset += 1;
                replayed += 1;
            }
        }
        r.u128(TAIL).store(pack(offset, pos), Ordering::Relaxed);
        d.flushed().store(pack(offset, pos), Ordering::Relaxed);
        // Relaxed as above. True of the disk once the sync after recovery returned, which is
        // before anyone uses the file.
        d.synced().store(pack(offset, pos), Ordering::Relaxed);
        d.durable().store(pack(offset, pos), Ordering::Relaxed);
        // Slots of offsets past the tail are leftovers of records that did not survive.
        for s in 0..ring.layout.index_entries {
            if tag_offset(ring.slot_tag(s).load(Ordering::Relaxed)) >= offset {
                ring.slot_tag(s).store(0, Ordering::Relaxed);
            }
            if ring.slot_pos(s).load(Ordering::Relaxed) > pos {
                ring.slot_pos(s).store(0, Ordering::Relaxed);
            }
        }
        let floor = if self.geometry.checksums {
            self.verified_floor((flushed, flushed_pos), pos)
        } else {
            (offset, pos)
        };
        r.u128(FLOOR)
            .store(pack(floor.0, floor.1), Ordering::Relaxed);
        let (mut clamped, mut skipped) = (Vec::new(), Vec::new());
        for g in (0..self.geometry.group_slots).filter(|&g| self.group_active(g)) {
            self.clear_lease(g);
            let (committed, _) = self.committed(g);
            let name = || self.group_name(g).unwrap_or_default();
            if committed > offset {
                clamped.push((name(), committed));
                self.set_committed(g, offset, pos);
            } else if committed < floor.0 {
                skipped.push((name(), committed));
                self.set_committed(g, floor.0, floor.1);
            }
        }
        let producers = self.producers();
        for p in 0..producers.slots() {
            producers.owner(p).store(0, Ordering::Relaxed);
            producers.intent(p).store(0, Ordering::Relaxed);
        }
        for bitmap in [DATA_WAITERS, SPACE_WAITERS, DURABLE_WAITERS] {
            r.u64(bitmap).store(0, Ordering::Relaxed);
        }
        // Relaxed like every store of recovery (above).
        d.poison().store(0, Ordering::Relaxed);
        Ok(Recovery {
            tail: offset,
            flushed,
            replayed,
            clamped,
            floor: floor.0,
            skipped,
        })
    }

    /// Walks back from `from` (the flushed cursor) over records whose slot, header and CRC
    /// agree and which lie within one capacity of the tail position `tail_pos`; returns the
    /// oldest such `(offset, position)`.
    fn verified_floor(&self, from: (u64, u64), tail_pos: u64) -> (u64, u64) {
        let ring = &self.ring;
        let capacity = ring.layout.capacity;
        let mut buf = Vec::new();
        let (mut offset, mut next) = from;
        while offset > 0 {
            let x = offset - 1;
            let Some(pos) = claim_start(ring.slot_pos(x).load(Ordering::Relaxed)) else {
                break;
            };
            let t = ring.slot_tag(x).load(Ordering::Relaxed);
            if pos >= next || pos.saturating_add(capacity) < tail_pos {
                break;
            }
            let intact = t == tag(x, ABORTED)
                || ((t == tag(x, COMMITTED) || t == tag(x, COMMITTED | WRAPPED))
                    && self.record_ends_at(x, pos, t & WRAPPED != 0, next, &mut buf));
            if !intact {
                break;
            }
            (offset, next) = (x, pos);
        }
        (offset, next)
    }

    /// Whether record `offset`, whose claim begins at `pos`, has an intact header and payload
    /// and ends exactly at `end`.
    fn record_ends_at(
        &self,
        offset: u64,
        pos: u64,
        wrapped: bool,
        end: u64,
        buf: &mut Vec<u8>,
    ) -> bool {
        let capacity = self.ring.layout.capacity;
        let rest = capacity - (pos & (capacity - 1));
        let start = if wrapped { pos + rest } else { pos };
        self.check_record(offset, start, wrapped, rest, buf) == Some(end)
    }

    /// If record `offset`, whose claim begins at `pos`, was committed and is intact, marks its
    /// slot's position and returns where the next record begins; if it was aborted, returns
    /// where its successor begins, and whether that successor is a later member of the same
    /// batch (its slot holds a member position). Such a member (`dead_member`) is aborted
    /// whatever its tag says: its batch's first record was aborted, so none of the batch was
    /// ever read, and it is not replayed in part.
    ///
    /// A record is replayed only if its slot tag on disk says it was committed. A whole
    /// header with a matching CRC is not enough: a producer can write its header after a
    /// reader aborted the record (between `seal`'s check of the slot and its commit CAS), and
    /// is then told `Aborted` and may publish the record again. That header can reach the disk
    /// while the aborted tag does not. Requiring the tag is sound whichever pages reached the
    /// disk: the 8-byte tag word lies in one page and holds on disk a value it held at some
    /// moment, and `(offset, COMMITTED)` is stored only by the commit CAS that publishes the
    /// record, which an aborted record's producer lost. It costs no promised record: a flush
    /// that covers a record runs its `fdatasync` after the record's commit CAS, so the tag of
    /// every durable record is on disk. A committed record whose tag page was lost ends the
    /// prefix, as a torn one does.
    fn valid_record(
        &self,
        offset: u64,
        pos: u64,
        dead_member: bool,
        buf: &mut Vec<u8>,
    ) -> Option<(u64, bool)> {
        let ring = &self.ring;
        let capacity = ring.layout.capacity;
        let t = ring.slot_tag(offset).load(Ordering::Relaxed);
        // An aborted record (its slot on disk says so): skip to its successor's position, which
        // that successor's contenders wrote before claiming, or which the batch's producer
        // stored right after its claim for a later member of its batch.
        if t == tag(offset, ABORTED) || dead_member {
            ring.slot_tag(offset)
                .store(tag(offset, ABORTED), Ordering::Relaxed);
            let raw = ring.slot_pos(offset + 1).load(Ordering::Relaxed);
            let next = claim_start(raw).filter(|&n| n > pos && n - pos <= capacity)?;
            return Some((next, !raw.is_multiple_of(RECORD_ALIGN)));
        }
        let wrapped = if t == tag(offset, COMMITTED) {
            false
        } else if t == tag(offset, COMMITTED | WRAPPED) {
            true
        } else {
            return None;
        };
        let rest = capacity - (pos & (capacity - 1));
        let start = if wrapped { pos + rest } else { pos };
        let end = self.check_record(offset, start, wrapped, rest, buf)?;
        // Readers resolve the record's cursor through its slot.
        ring.slot_pos(offset).store(pos, Ordering::Relaxed);
        Some((end, false))
    }
}
