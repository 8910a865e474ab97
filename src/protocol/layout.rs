//! The byte layout of a queue file (see FORMAT.md): the immutable header, where every shared
//! word lives, and validation of a header read from an untrusted file.
//!
//! All integers are little-endian. Every region starts on a 4096-byte boundary; every word that
//! a different party writes sits on its own 128-byte line (two 64-byte lines, because x86
//! prefetches pairs of lines).

use std::time::Duration;

use crate::error::{Corruption, OutOfRange};
use crate::protocol::crc;

/// File magic, the first 8 bytes of every queue file.
pub const MAGIC: [u8; 8] = *b"SHMQRING";
/// The format version this build reads and writes. Version 2: lease words are kernel-held
/// liveness ids (not pid and start time), the poison word, and group sessions. Version 3: the
/// offset index keeps the slots' positions and tags in two tables, not side by side.
pub const VERSION: u32 = 3;
/// Size of the header page.
pub const HEADER_SIZE: u64 = 4096;
/// Size of one record header in the ring.
pub const RECORD_HEADER: u64 = 32;
/// Records start on multiples of this many bytes.
pub const RECORD_ALIGN: u64 = 8;
/// Size of one consumer-group slot.
pub const GROUP_SLOT: u64 = 256;
/// Bytes of the offset index per offset slot: its `pos` word in the first table and its `tag`
/// word in the second.
pub const INDEX_SLOT: u64 = 16;
/// Size of one producer slot.
pub const PRODUCER_SLOT: u64 = 128;
/// Longest consumer-group name, in bytes.
pub const MAX_GROUP_NAME: usize = 64;
/// Smallest and largest data-ring capacity.
pub const MIN_CAPACITY: u64 = 4096;
/// Largest data-ring capacity (1 TiB).
pub const MAX_CAPACITY: u64 = 1 << 40;
/// Upper bound on group and producer slots: each has one bit in a 64-bit sleeper bitmap.
pub const MAX_SLOTS: u32 = 64;

// Offsets of the mutable header words, each on its own 128-byte line.
/// `(next offset, next position)` of the ring, claimed with one 128-bit CAS.
pub(crate) const TAIL: u64 = 128;
/// Futex word bumped when data is committed and someone sleeps; waiter count beside it.
pub(crate) const DATA_SEQ: u64 = 384;
/// Bitmap of group slots whose consumer sleeps (or is about to) on `DATA_SEQ`.
pub(crate) const DATA_WAITERS: u64 = 392;
/// Futex word bumped when a group commit frees space and a producer sleeps.
pub(crate) const SPACE_SEQ: u64 = 512;
/// Bitmap of producer slots whose producer sleeps (or is about to) on `SPACE_SEQ`.
pub(crate) const SPACE_WAITERS: u64 = 520;
/// `(offset, position)` of the oldest record recovery vouched for after a machine restart;
/// older records are not readable (0 in a file never recovered).
pub(crate) const FLOOR: u64 = 304;
/// Futex word bumped when the durable cursor (`DurableState`) advances and someone waits for it.
pub(crate) const DURABLE_SEQ: u64 = 640;
/// Bitmap of producer slots waiting on `DURABLE_SEQ`.
pub(crate) const DURABLE_WAITERS: u64 = 648;
/// Boot id (16 bytes) of the machine that last opened the file; a different one means the
/// machine restarted and the file must be recovered.
pub(crate) const BOOT_ID: u64 = 768;
/// Byte ranges locked with `F_OFD_SETLK` on the file: the flush leader's lock.
pub(crate) const FLUSH_LOCK: u64 = 1;

// Offsets inside the immutable part (first 128 bytes of the header).
const OFF_VERSION: usize = 8;
const OFF_HEADER_SIZE: usize = 12;
const OFF_CAPACITY: usize = 16;
const OFF_MAX_MESSAGE: usize = 24;
const OFF_FULL_POLICY: usize = 28;
const OFF_GROUP_SLOTS: usize = 32;
const OFF_PRODUCER_SLOTS: usize = 36;
const OFF_CLAIM_TIMEOUT: usize = 40;
const OFF_CREATED: usize = 48;
const OFF_FILE_SIZE: usize = 56;
const OFF_DURABILITY: usize = 64;
const OFF_FLAGS: usize = 68;
const OFF_BATCH_DELAY: usize = 72;
const OFF_BATCH_BYTES: usize = 80;
/// Header flag: every record carries a CRC32C of its payload.
const FLAG_CHECKSUMS: u32 = 1;
/// Bytes covered by the header checksum.
const CHECKSUMMED: usize = 124;
const OFF_CHECKSUM: usize = 124;
/// Size of the immutable part of the header.
pub(crate) const IMMUTABLE_SIZE: usize = 128;

/// What a producer does when the ring has no room for its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FullPolicy {
    /// Wait (up to the publish timeout) for the slowest gating group to commit.
    Block,
    /// Fail at once with [`Error::Full`](crate::Error::Full).
    Reject,
    /// Overwrite the oldest records; every group may be lapped and is told how many it lost.
    Overwrite,
}

impl FullPolicy {
    /// The policy's name, as the CLI and the Python package spell it: `block`, `reject` or
    /// `overwrite`.
    pub fn name(self) -> &'static str {
        match self {
            FullPolicy::Block => "block",
            FullPolicy::Reject => "reject",
            FullPolicy::Overwrite => "overwrite",
        }
    }

    fn code(self) -> u32 {
        match self {
            FullPolicy::Block => 0,
            FullPolicy::Reject => 1,
            FullPolicy::Overwrite => 2,
        }
    }
    fn from_code(c: u32) -> Option<Self> {
        match c {
            0 => Some(FullPolicy::Block),
            1 => Some(FullPolicy::Reject),
            2 => Some(FullPolicy::Overwrite),
            _ => None,
        }
    }
}

/// What a publish promises about surviving a machine crash or power loss. Every policy
/// survives the crash of any process: the data is in the shared page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Page cache only: records reach the disk when the kernel writes them back.
    None,
    /// Group commit: a background flusher in each publishing process flushes at least every
    /// `max_delay`, and at once when a publish finds `max_bytes` unflushed.
    Batch {
        /// Longest time a committed record waits for its flush.
        max_delay: Duration,
        /// Unflushed bytes that trigger a flush.
        max_bytes: u64,
    },
    /// `publish` returns only once its record is on disk, and `commit` only once the group's
    /// offset is. Concurrent producers share flushes.
    Sync,
}

impl Durability {
    /// The policy's name, as the CLI and the Python package spell it: `none`, `batch` or
    /// `sync` (a `Batch` policy's parameters are not part of it).
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Batch { .. } => "batch",
            Durability::Sync => "sync",
        }
    }

    fn code(self) -> u32 {
        match self {
            Durability::None => 0,
            Durability::Batch { .. } => 1,
            Durability::Sync => 2,
        }
    }
}

/// The immutable parameters of a queue file, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Data-ring size in bytes (a power of two).
    pub capacity: u64,
    /// Largest payload a record may carry.
    pub max_message: u32,
    /// What producers do when the ring is full.
    pub full_policy: FullPolicy,
    /// Consumer-group slots in the group table.
    pub group_slots: u32,
    /// Producer slots in the producer table (concurrent producers at most).
    pub producer_slots: u32,
    /// How long a claimed-but-unwritten record may stall readers before they abort it.
    pub claim_timeout: Duration,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// What a publish promises about machine crashes.
    pub durability: Durability,
    /// Whether records carry a CRC32C of their payload (always, under `Batch` and `Sync`).
    pub checksums: bool,
}

/// Where every region of a file starts, derived from a [`Geometry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offsets {
    pub groups: u64,
    pub producers: u64,
    pub index: u64,
    pub index_entries: u64,
    pub ring: u64,
    pub file_size: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Footprint of a record with a `len`-byte payload: header plus payload, 8-byte aligned.
pub(crate) fn footprint(len: u64) -> u64 {
    align_up(RECORD_HEADER + len, RECORD_ALIGN)
}

impl Geometry {
    /// Checks the parameters against each other; `Err` names what is wrong.
    pub(crate) fn check(&self) -> Result<(), OutOfRange> {
        if !self.capacity.is_power_of_two()
            || self.capacity < MIN_CAPACITY
            || self.capacity > MAX_CAPACITY
        {
            return Err(OutOfRange::Capacity {
                found: self.capacity,
                min: MIN_CAPACITY,
                max: MAX_CAPACITY,
            });
        }
        // A record plus the padding before it must always fit in an empty ring: a footprint of
        // at most half the ring guarantees that (padding < footprint).
        if self.max_message == 0 || footprint(self.max_message as u64) > self.capacity / 2 {
            return Err(OutOfRange::MaxMessage {
                found: self.max_message,
                max: self.capacity / 2 - RECORD_HEADER,
                capacity: self.capacity,
            });
        }
        for (table, n) in [
            ("group", self.group_slots),
            ("producer", self.producer_slots),
        ] {
            if n == 0 || n > MAX_SLOTS {
                return Err(OutOfRange::Slots {
                    table,
                    found: n,
                    max: MAX_SLOTS,
                });
            }
        }
        if self.claim_timeout.is_zero() {
            return Err(OutOfRange::ClaimTimeout);
        }
        match self.durability {
            Durability::Batch {
                max_delay,
                max_bytes,
            } if max_delay.is_zero() || max_bytes == 0 => {
                return Err(OutOfRange::BatchLimits {
                    max_delay,
                    max_bytes,
                });
            }
            Durability::Batch { .. } | Durability::Sync if !self.checksums => {
                return Err(OutOfRange::NoChecksums);
            }
            _ => {}
        }
        Ok(())
    }

    /// The region offsets this geometry implies.
    pub(crate) fn offsets(&self) -> Offsets {
        let groups = HEADER_SIZE;
        let producers = groups + self.group_slots as u64 * GROUP_SLOT;
        let index = align_up(producers + self.producer_slots as u64 * PRODUCER_SLOT, 4096);
        // One slot per possible record in one ring's worth of bytes (the smallest record is
        // one header), so a live record's slot is never reused while it is in the ring.
        let index_entries = self.capacity / RECORD_HEADER;
        let ring = align_up(index + index_entries * INDEX_SLOT, 4096);
        Offsets {
            groups,
            producers,
            index,
            index_entries,
            ring,
            file_size: ring + self.capacity,
        }
    }

    /// Encodes the immutable header (with its checksum).
    pub(crate) fn encode(&self) -> [u8; IMMUTABLE_SIZE] {
        let mut b = [0u8; IMMUTABLE_SIZE];
        b[..8].copy_from_slice(&MAGIC);
        put32(&mut b, OFF_VERSION, VERSION);
        put32(&mut b, OFF_HEADER_SIZE, HEADER_SIZE as u32);
        put64(&mut b, OFF_CAPACITY, self.capacity);
        put32(&mut b, OFF_MAX_MESSAGE, self.max_message);
        put32(&mut b, OFF_FULL_POLICY, self.full_policy.code());
        put32(&mut b, OFF_GROUP_SLOTS, self.group_slots);
        put32(&mut b, OFF_PRODUCER_SLOTS, self.producer_slots);
        put64(&mut b, OFF_CLAIM_TIMEOUT, nanos(self.claim_timeout));
        put64(&mut b, OFF_CREATED, self.created_ns);
        put64(&mut b, OFF_FILE_SIZE, self.offsets().file_size);
        put32(&mut b, OFF_DURABILITY, self.durability.code());
        put32(
            &mut b,
            OFF_FLAGS,
            if self.checksums { FLAG_CHECKSUMS } else { 0 },
        );
        if let Durability::Batch {
            max_delay,
            max_bytes,
        } = self.durability
        {
            put64(&mut b, OFF_BATCH_DELAY, nanos(max_delay));
            put64(&mut b, OFF_BATCH_BYTES, max_bytes);
        }
        let crc = crc::crc32c(&b[..CHECKSUMMED]);
        put32(&mut b, OFF_CHECKSUM, crc);
        b
    }

    /// Decodes and validates an immutable header read from an untrusted file of `file_len`
    /// bytes. Every field is checked before anything is derived from it.
    pub(crate) fn decode(b: &[u8], file_len: u64) -> Result<Geometry, Corruption> {
        if file_len < HEADER_SIZE || b.len() < IMMUTABLE_SIZE {
            return Err(Corruption::Truncated {
                len: file_len,
                need: HEADER_SIZE,
                header: HEADER_SIZE,
            });
        }
        if b[..8] != MAGIC {
            return Err(Corruption::BadMagic);
        }
        let version = get32(b, OFF_VERSION);
        if version != VERSION {
            return Err(Corruption::Version {
                found: version,
                supported: VERSION,
            });
        }
        let stored = get32(b, OFF_CHECKSUM);
        let computed = crc::crc32c(&b[..CHECKSUMMED]);
        if stored != computed {
            return Err(Corruption::HeaderChecksum { stored, computed });
        }
        let header_size = get32(b, OFF_HEADER_SIZE);
        if header_size as u64 != HEADER_SIZE {
            return Err(Corruption::HeaderSize {
                found: header_size,
                expected: HEADER_SIZE,
            });
        }
        let policy = get32(b, OFF_FULL_POLICY);
        let full_policy =
            FullPolicy::from_code(policy).ok_or(Corruption::FullPolicy { found: policy })?;
        let durability = match get32(b, OFF_DURABILITY) {
            0 => Durability::None,
            1 => Durability::Batch {
                max_delay: Duration::from_nanos(get64(b, OFF_BATCH_DELAY)),
                max_bytes: get64(b, OFF_BATCH_BYTES),
            },
            2 => Durability::Sync,
            found => return Err(Corruption::Durability { found }),
        };
        let flags = get32(b, OFF_FLAGS);
        if flags & !FLAG_CHECKSUMS != 0 {
            return Err(Corruption::Flags {
                found: flags,
                known: FLAG_CHECKSUMS,
            });
        }
        let g = Geometry {
            capacity: get64(b, OFF_CAPACITY),
            max_message: get32(b, OFF_MAX_MESSAGE),
            full_policy,
            group_slots: get32(b, OFF_GROUP_SLOTS),
            producer_slots: get32(b, OFF_PRODUCER_SLOTS),
            claim_timeout: Duration::from_nanos(get64(b, OFF_CLAIM_TIMEOUT)),
            created_ns: get64(b, OFF_CREATED),
            durability,
            checksums: flags & FLAG_CHECKSUMS != 0,
        };
        g.check().map_err(Corruption::Field)?;
        let want = g.offsets().file_size;
        let stored = get64(b, OFF_FILE_SIZE);
        if stored != want {
            return Err(Corruption::FileSize {
                stored,
                implied: want,
            });
        }
        if file_len != want {
            return Err(Corruption::Truncated {
                len: file_len,
                need: want,
                header: HEADER_SIZE,
            });
        }
        Ok(g)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// Writes `v` little-endian at byte `at` of `b` (file headers).
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
/// Writes `v` little-endian at byte `at` of `b` (file headers).
pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
/// Reads a little-endian u32 at byte `at` of `b`; the caller checked the length.
pub(crate) fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
/// Reads a little-endian u64 at byte `at` of `b`; the caller checked the length.
pub(crate) fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry() -> Geometry {
        Geometry {
            capacity: 1 << 16,
            max_message: 1024,
            full_policy: FullPolicy::Block,
            group_slots: 8,
            producer_slots: 8,
            claim_timeout: Duration::from_secs(1),
            created_ns: 42,
            durability: Durability::Batch {
                max_delay: Duration::from_millis(5),
                max_bytes: 1 << 20,
            },
            checksums: true,
        }
    }

    #[test]
    fn header_round_trips() {
        let g = geometry();
        let size = g.offsets().file_size;
        assert_eq!(Geometry::decode(&g.encode(), size).unwrap(), g);
    }

    #[test]
    fn every_region_is_page_aligned_and_ordered() {
        let o = geometry().offsets();
        assert_eq!(o.index % 4096, 0);
        assert_eq!(o.ring % 4096, 0);
        assert!(o.groups < o.producers && o.producers < o.index && o.index < o.ring);
        assert_eq!(o.file_size, o.ring + (1 << 16));
    }

    #[test]
    fn flipped_bit_fails_checksum() {
        let g = geometry();
        let mut b = g.encode();
        b[OFF_CAPACITY] ^= 1;
        assert!(matches!(
            Geometry::decode(&b, g.offsets().file_size),
            Err(Corruption::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn oversized_message_is_refused() {
        let g = Geometry {
            max_message: 1 << 15,
            ..geometry()
        };
        assert_eq!(
            g.check(),
            Err(OutOfRange::MaxMessage {
                found: 1 << 15,
                max: (1 << 15) - RECORD_HEADER,
                capacity: 1 << 16
            })
        );
    }
}
