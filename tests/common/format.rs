//! The layouts of the queue file and of a work group's file as FORMAT.md states them, in one
//! place for every test that reads or edits a file by hand. Duplicated from
//! `src/protocol/layout.rs` (and the group-slot fields from `src/protocol/groups.rs`, the work
//! file from `src/protocol/work.rs`) on purpose: the tests pin the format, so a change to it
//! must change FORMAT.md and these constants too.

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

/// Bytes of the offset index per slot (its `pos` in the first table, its `tag` in the second).
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

    /// File offset of record `offset`'s index slot's `pos` word (the first table).
    pub fn pos_at(&self, offset: u64) -> u64 {
        self.index + 8 * (offset % self.entries)
    }

    /// File offset of record `offset`'s index slot's `tag` word (the second table).
    pub fn tag_at(&self, offset: u64) -> u64 {
        self.index + 8 * self.entries + 8 * (offset % self.entries)
    }

    /// File offset of the ring byte at position `pos`.
    pub fn data(&self, pos: u64) -> u64 {
        self.ring + pos % self.capacity
    }
}

// ---- FORMAT.md, "Work file, version 1" ----

/// A work file's sleeper bitmap (bit `m` for member slot `m`).
pub const WORK_SLEEPERS_AT: u64 = 1536;
/// A work file's boot id (16 bytes).
pub const WORK_BOOT_ID_AT: u64 = 1664;
/// Where a work file's member slots start.
pub const WORK_MEMBERS_AT: u64 = 4096;
/// Size of one member slot (owner lease word at 0, the pid in its low 8 bytes; joined at 16).
pub const WORK_MEMBER: u64 = 64;
/// Number of member slots.
pub const WORK_MEMBERS: u8 = 64;
/// Where a work file's entries start.
pub const WORK_ENTRIES_AT: u64 = 8192;
/// Size of one work-file entry (state word at 0).
pub const WORK_ENTRY: u64 = 32;
/// Entry state `S` IN_FLIGHT (held by member `holder` until `deadline`).
pub const WORK_IN_FLIGHT: u64 = 1;
/// Entry states `S` DEAD_LETTERING (member `holder` copies it to the dead-letter queue), one
/// per reason: rejected, max deliveries, expired.
pub const WORK_DEAD_LETTERING: std::ops::RangeInclusive<u64> = 5..=7;
/// Entry state `S` ACKED (final; also an aborted offset, count 0).
pub const WORK_ACKED: u64 = 2;
/// Entry state `S` DEAD (final: dead-lettered, rejected or expired).
pub const WORK_DEAD: u64 = 3;

/// The work file of the work group in slot `slot` of queue `queue`: `<queue>.work-<slot>`.
pub fn work_file(queue: &std::path::Path, slot: u32) -> std::path::PathBuf {
    let mut s = queue.as_os_str().to_owned();
    s.push(format!(".work-{slot}"));
    s.into()
}

/// One work-file entry's state word, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkEntry {
    /// The offset the entry belongs to.
    pub offset: u64,
    /// `S` (`WORK_ACKED`, `WORK_DEAD`, ...).
    pub state: u64,
    /// Deliveries so far.
    pub count: u32,
    /// The lease's end or due time, wall-clock ms.
    pub deadline_ms: u64,
    /// The member slot holding it (255: none).
    pub holder: u8,
}

/// Member slot `member` of the work file `bytes`: the process id in its owner word (0: a free
/// slot) and when that owner joined (wall-clock ms).
pub fn work_member(bytes: &[u8], member: u8) -> (u32, u64) {
    let at = (WORK_MEMBERS_AT + u64::from(member) * WORK_MEMBER) as usize;
    let word = |k: usize| u64::from_le_bytes(bytes[at + k..at + k + 8].try_into().unwrap());
    (word(0) as u32, word(16))
}

/// Entry `index` of the work file `bytes` (its whole contents); a file too short for it
/// panics.
pub fn work_entry(bytes: &[u8], index: u64) -> WorkEntry {
    let at = (WORK_ENTRIES_AT + index * WORK_ENTRY) as usize;
    let word = |k: usize| u64::from_le_bytes(bytes[at + k..at + k + 8].try_into().unwrap());
    let (low, high) = (word(0), word(8));
    WorkEntry {
        offset: low >> 3,
        state: low & 7,
        count: ((high >> 8) & 0xfff) as u32,
        deadline_ms: high >> 20,
        holder: high as u8,
    }
}
