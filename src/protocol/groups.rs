//! The consumer-group table's bytes: [`GroupTable`], one slot of [`GROUP_SLOT`] bytes per group,
//! each field at the one offset defined here (FORMAT.md, "Consumer-group table").
//!
//! Slot layout: `state` u64 at 0 (0 free, 1 active), `flags` u64 at 8 (bit 0: gating),
//! `name_len` u64 at 16, `name` at 24 (64 bytes), `committed` u128 at 128 (`next offset,
//! position`), `lease` u128 at 144 (the holder's lease word), `reset mark` u64 at 160 (the
//! tail position seen when the group was created or its committed cursor was last moved
//! backwards), `session` u64 at 168, `heartbeat` u64 at 176, `session tag` u64 at 184.
//!
//! The table hands out the atomics; what they mean and how they are ordered is the group
//! policy's (`queue/group.rs`), which states the ordering of every access.

use crate::protocol::layout::{GROUP_SLOT, MAX_GROUP_NAME};
use crate::protocol::sync::{AtomicU128, AtomicU64, Region};

const STATE: u64 = 0;
const FLAGS: u64 = 8;
const NAME_LEN: u64 = 16;
const NAME: u64 = 24;
const COMMITTED: u64 = 128;
const LEASE: u64 = 144;
const RESET_MARK: u64 = 160;
const SESSION: u64 = 168;
const HEARTBEAT: u64 = 176;
const SESSION_TAG: u64 = 184;

/// The group slots of one mapping: `slots` slots of [`GROUP_SLOT`] bytes from byte `base` of
/// `region` (both from the validated layout). A view, made on demand; every access is
/// bounds-checked by the region.
pub(crate) struct GroupTable<'a> {
    region: &'a Region,
    base: u64,
    slots: u32,
}

impl<'a> GroupTable<'a> {
    /// The table of `slots` slots at byte `base` of `region`.
    pub(crate) fn new(region: &'a Region, base: u64, slots: u32) -> Self {
        GroupTable {
            region,
            base,
            slots,
        }
    }

    /// The byte offset of `field` in slot `slot`.
    fn at(&self, slot: u32, field: u64) -> u64 {
        debug_assert!(slot < self.slots, "group slot {slot} of {}", self.slots);
        self.base + u64::from(slot) * GROUP_SLOT + field
    }

    /// The slot's state: 0 free, 1 active.
    pub(crate) fn state(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, STATE))
    }

    /// The slot's flags (bit 0: gating).
    pub(crate) fn flags(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, FLAGS))
    }

    /// The length of the group's name, as stored (untrusted: check it before use).
    pub(crate) fn name_len(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, NAME_LEN))
    }

    /// Copies the first `out.len()` bytes of the name field (at most [`MAX_GROUP_NAME`]).
    pub(crate) fn read_name(&self, slot: u32, out: &mut [u8]) {
        debug_assert!(out.len() <= MAX_GROUP_NAME);
        self.region.read_bytes(self.at(slot, NAME), out);
    }

    /// Writes the whole name field.
    pub(crate) fn write_name(&self, slot: u32, name: &[u8; MAX_GROUP_NAME]) {
        self.region.write_bytes(self.at(slot, NAME), name);
    }

    /// The committed cursor, packed `(next offset, position)`.
    pub(crate) fn committed(&self, slot: u32) -> &'a AtomicU128 {
        self.region.u128(self.at(slot, COMMITTED))
    }

    /// The byte range of the committed cursor (offset, length), for syncing it to disk.
    pub(crate) fn committed_range(&self, slot: u32) -> (u64, u64) {
        (self.at(slot, COMMITTED), 16)
    }

    /// The lease word of the holder (0: nobody).
    pub(crate) fn lease(&self, slot: u32) -> &'a AtomicU128 {
        self.region.u128(self.at(slot, LEASE))
    }

    /// The reset mark: the tail position below which a new member validates its reads.
    pub(crate) fn reset_mark(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, RESET_MARK))
    }

    /// The holder's session timeout in nanoseconds (0: none).
    pub(crate) fn session(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, SESSION))
    }

    /// The holder's last heartbeat, in `CLOCK_MONOTONIC` nanoseconds.
    pub(crate) fn heartbeat(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, HEARTBEAT))
    }

    /// The tag of the lease word the session fields belong to.
    pub(crate) fn session_tag(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.at(slot, SESSION_TAG))
    }
}
