//! The queue file's layout as FORMAT.md states it, in one place for every test that reads or
//! edits a file by hand. Duplicated from `src/protocol/layout.rs` (and the group-slot fields
//! from `src/protocol/groups.rs`) on purpose: the tests pin the format, so a change to it must
//! change FORMAT.md and these constants too.

// ---- FORMAT.md, "Header page (bytes 0–4095)" ----

/// Size of the header page; the consumer-group table starts right after it.
pub const HEADER_SIZE: u64 = 4096;

// "Immutable part (bytes 0–127, written once at creation, checksummed)": byte offsets.

/// `version` (4 bytes).
pub const OFF_VERSION: usize = 8;
/// `header size` (4 bytes).
pub const OFF_HEADER_SIZE: usize = 12;
/// `capacity` (8 bytes).
pub const OFF_CAPACITY: usize = 16;
/// `max message` (4 bytes).
pub const OFF_MAX_MESSAGE: usize = 24;
/// `full policy` (4 bytes).
pub const OFF_FULL_POLICY: usize = 28;
/// `group slots` (4 bytes).
pub const OFF_GROUP_SLOTS: usize = 32;
/// `producer slots` (4 bytes).
pub const OFF_PRODUCER_SLOTS: usize = 36;
/// `claim timeout` in nanoseconds (8 bytes).
pub const OFF_CLAIM_TIMEOUT: usize = 40;
/// `created` (8 bytes).
pub const OFF_CREATED: usize = 48;
/// `file size` (8 bytes).
pub const OFF_FILE_SIZE: usize = 56;
/// `durability` (4 bytes).
pub const OFF_DURABILITY: usize = 64;
/// The checksum covers bytes `0..CHECKSUMMED` and is stored at `CHECKSUMMED` (4 bytes).
pub const CHECKSUMMED: usize = 124;

// "Mutable words": byte offsets.

/// `tail`, low 8 bytes: the next offset.
pub const TAIL_OFFSET_AT: usize = 128;
/// `tail`, high 8 bytes: the next position.
pub const TAIL_POSITION_AT: usize = 136;
/// `flushed` (16 bytes).
pub const FLUSHED_AT: usize = 256;
/// `data waiters` (8 bytes): bit `g` is set while a member of group slot `g` sleeps.
pub const DATA_WAITERS_AT: u64 = 392;
/// `boot id` (16 bytes).
pub const BOOT_ID_AT: usize = 768;

// ---- FORMAT.md, "Consumer-group table (`G` slots of 256 bytes, from byte 4096)" ----

/// Size of one group slot.
pub const GROUP_SLOT: u64 = 256;
/// A group slot's `lease` (16 bytes), from the start of the slot.
pub const GROUP_LEASE: u64 = 144;

// ---- FORMAT.md, "Producer table (`P` slots of 128 bytes)" ----

/// Size of one producer slot.
pub const PRODUCER_SLOT: u64 = 128;

// ---- FORMAT.md, "Offset index (`N` slots of 16 bytes)" ----

/// Size of one index slot (`pos` at 0, `tag` at 8).
pub const INDEX_SLOT: u64 = 16;
/// The smallest record (a bare record header): `N` is `capacity / MIN_RECORD`.
pub const MIN_RECORD: u64 = 32;
/// The offset index and the data ring start on a multiple of this.
pub const REGION_ALIGN: u64 = 4096;

// ---- FORMAT.md, "Membership file (`members`, 12,288 bytes)" of a topic directory ----

/// `generation` (8 bytes); the header's mutable words run from here to the member slots.
pub const MEMBERS_GENERATION_AT: u64 = 128;
/// Where the member slots (64 × 128 bytes) start.
pub const MEMBERS_SLOTS_AT: u64 = 4096;

/// Region offsets of a queue file with these parameters (FORMAT.md, one section each).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Data-ring bytes.
    pub capacity: u64,
    /// Number of group slots.
    pub group_slots: u64,
    /// Number of producer slots.
    pub producer_slots: u64,
    /// File offset of the consumer-group table.
    pub groups: u64,
    /// File offset of the producer table.
    pub producers: u64,
    /// File offset of the offset index.
    pub index: u64,
    /// Number of index slots (`N`).
    pub entries: u64,
    /// File offset of the data ring.
    pub ring: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

impl Layout {
    /// The layout of a file with these parameters.
    pub fn new(capacity: u64, group_slots: u64, producer_slots: u64) -> Layout {
        let groups = HEADER_SIZE;
        let producers = groups + group_slots * GROUP_SLOT;
        let index = (producers + producer_slots * PRODUCER_SLOT).next_multiple_of(REGION_ALIGN);
        let entries = capacity / MIN_RECORD;
        let ring = (index + entries * INDEX_SLOT).next_multiple_of(REGION_ALIGN);
        Layout {
            capacity,
            group_slots,
            producer_slots,
            groups,
            producers,
            index,
            entries,
            ring,
            file_size: ring + capacity,
        }
    }

    /// The layout of `queue`'s file.
    pub fn of(queue: &shmq::Queue) -> Layout {
        let g = queue.geometry();
        Layout::new(
            g.capacity,
            u64::from(g.group_slots),
            u64::from(g.producer_slots),
        )
    }

    /// File offset of group slot `slot`.
    pub fn group(&self, slot: u64) -> u64 {
        self.groups + slot * GROUP_SLOT
    }

    /// File offset of record `offset`'s index slot (`pos` at 0, `tag` at 8).
    pub fn slot(&self, offset: u64) -> u64 {
        self.index + INDEX_SLOT * (offset % self.entries)
    }

    /// File offset of the ring byte at position `pos`.
    pub fn data(&self, pos: u64) -> u64 {
        self.ring + pos % self.capacity
    }
}
