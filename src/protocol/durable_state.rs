//! The durability words of the header page: [`DurableState`], each cursor at the one offset
//! defined here (FORMAT.md, "Mutable words").
//!
//! The view hands out the atomics; what they mean and how they are ordered is the flush
//! policy's (`queue/durable.rs`) and recovery's (`queue/recovery.rs`), which state the ordering
//! of every access. The futex words of durability waits (`DURABLE_SEQ`, `DURABLE_WAITERS`) are
//! the wait protocol's and stay with the other futex words in `layout.rs`.

use crate::protocol::sync::{AtomicU128, AtomicU64, Region};

/// `(offset, position)` recorded in the file for recovery: every record before it was on disk
/// when it was stored. It reaches the disk itself only with a later `fdatasync`.
const FLUSHED: u64 = 256;
/// `(offset, position)` acknowledged durable: every record before it is on disk.
const DURABLE: u64 = 272;
/// Number of flushes (`fdatasync`) done on this file, for statistics.
const FLUSHES: u64 = 288;
/// `(offset, errno)` once a flush of the file failed: records from `offset` on are never
/// reported durable, and `errno` (never 0) is the failure. 0 while the file is healthy.
const POISON: u64 = 320;
/// `(offset, position)` the flushed cursor on disk has reached for certain: the value `FLUSHED`
/// held when the latest successful flush `fdatasync` began. Under Batch and Sync producers
/// never overwrite a record from it on.
const SYNCED: u64 = 336;

/// The durability words of one mapping's header page. A view, made on demand; every access is
/// bounds-checked by the region.
pub(crate) struct DurableState<'a> {
    region: &'a Region,
}

impl<'a> DurableState<'a> {
    /// The durability words of the mapping `region` (a whole queue file from byte 0).
    pub(crate) fn new(region: &'a Region) -> Self {
        DurableState { region }
    }

    /// The flushed cursor, packed `(offset, position)`.
    pub(crate) fn flushed(&self) -> &'a AtomicU128 {
        self.region.u128(FLUSHED)
    }

    /// The durable cursor, packed `(offset, position)`.
    pub(crate) fn durable(&self) -> &'a AtomicU128 {
        self.region.u128(DURABLE)
    }

    /// The synced cursor, packed `(offset, position)`.
    pub(crate) fn synced(&self) -> &'a AtomicU128 {
        self.region.u128(SYNCED)
    }

    /// The poison mark, packed `(first offset not durable, errno)`.
    pub(crate) fn poison(&self) -> &'a AtomicU128 {
        self.region.u128(POISON)
    }

    /// The count of flushes.
    pub(crate) fn flushes(&self) -> &'a AtomicU64 {
        self.region.u64(FLUSHES)
    }
}
