//! The producer table's bytes: [`ProducerTable`], one slot of [`PRODUCER_SLOT`] bytes per
//! producer, each field at the one offset defined here (FORMAT.md, "Producer table").
//!
//! Slot layout: `owner` u128 at 0 (the owning producer's lease word; 0: free), `intent` u64 at
//! 16 (`offset + 1` while the owner claims or writes record `offset`, 0 when idle), `intent
//! position` u64 at 24 (the position that claim begins at).
//!
//! The table hands out the atomics; what they mean and how they are ordered is the producer
//! policy's (`queue/producer.rs`) and recovery's (`queue/recovery.rs`). The ring protocol's
//! claim, commit and abort (`protocol/ring.rs`) write a slot's intent words themselves, from
//! the slot's offset ([`ProducerTable::slot_off`]) and [`INTENT`], [`INTENT_POS`]: the hot
//! path keeps one addition per access.

use crate::protocol::layout::PRODUCER_SLOT;
use crate::protocol::sync::{AtomicU128, AtomicU64, Region};

const OWNER: u64 = 0;
/// Byte offset of the intent word inside a producer slot.
pub(crate) const INTENT: u64 = 16;
/// Byte offset of the intent position inside a producer slot.
pub(crate) const INTENT_POS: u64 = 24;

/// The producer slots of one mapping: `slots` slots of [`PRODUCER_SLOT`] bytes from byte `base`
/// of `region` (both from the validated layout). A view, made on demand; every access is
/// bounds-checked by the region.
pub(crate) struct ProducerTable<'a> {
    region: &'a Region,
    base: u64,
    slots: u32,
}

impl<'a> ProducerTable<'a> {
    /// The table of `slots` slots at byte `base` of `region`.
    pub(crate) fn new(region: &'a Region, base: u64, slots: u32) -> Self {
        ProducerTable {
            region,
            base,
            slots,
        }
    }

    /// The number of slots.
    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// The region offset of slot `slot`, which the ring protocol's claim, commit and abort take
    /// to write the slot's intent words.
    pub(crate) fn slot_off(&self, slot: u32) -> u64 {
        debug_assert!(slot < self.slots, "producer slot {slot} of {}", self.slots);
        self.base + u64::from(slot) * PRODUCER_SLOT
    }

    /// The owner's lease word (0: free).
    pub(crate) fn owner(&self, slot: u32) -> &'a AtomicU128 {
        self.region.u128(self.slot_off(slot) + OWNER)
    }

    /// The intent: `offset + 1` of the record the owner claims or writes, 0 when idle.
    pub(crate) fn intent(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.slot_off(slot) + INTENT)
    }

    /// The position the intent's claim begins at.
    pub(crate) fn intent_pos(&self, slot: u32) -> &'a AtomicU64 {
        self.region.u64(self.slot_off(slot) + INTENT_POS)
    }
}
