//! Editing a queue file's bytes: the header fields and words these tests damage, a valid
//! header to start from, and an edit of a file in place.

use std::path::Path;

use crate::common::format::*;

/// Mutable header words: the tail (offset, position), the data and space futex words and
/// their sleeper bitmaps, the durability cursors (flushed, durable, flush count, recovery
/// floor), the poison word (offset, errno), the durability futex word and bitmap, and the
/// boot id that decides whether open runs recovery.
pub(crate) const HEADER_WORDS: [u64; 21] = [
    128, 136, 256, 264, 272, 280, 288, 304, 312, 320, 328, 384, 388, 392, 512, 516, 520, 640, 648,
    768, 776,
];
/// Durability policy code of `Sync` in the header field `durability`.
pub(crate) const DURABILITY_SYNC: u32 = 2;
/// Immutable header fields: (byte offset, width).
pub(crate) const HEADER_FIELDS: [(usize, usize); 11] = [
    (OFF_VERSION, 4),
    (OFF_HEADER_SIZE, 4),
    (OFF_CAPACITY, 8),
    (OFF_MAX_MESSAGE, 4),
    (OFF_FULL_POLICY, 4),
    (OFF_GROUP_SLOTS, 4),
    (OFF_PRODUCER_SLOTS, 4),
    (OFF_CLAIM_TIMEOUT, 8),
    (OFF_CREATED, 8),
    (OFF_FILE_SIZE, 8),
    (OFF_DURABILITY, 4),
];

/// The layout a (possibly edited) header implies, if its sizes are sane enough to compute.
pub(crate) fn layout_of_header(b: &[u8]) -> Option<Layout> {
    let cap = get64(b, OFF_CAPACITY);
    let (g, p) = (get32(b, OFF_GROUP_SLOTS), get32(b, OFF_PRODUCER_SLOTS));
    (cap.is_power_of_two() && (32..=1 << 24).contains(&cap) && g <= 4096 && p <= 4096)
        .then(|| Layout::new(cap, g as u64, p as u64))
}

pub(crate) fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub(crate) fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header checksum (CRC32C of bytes 0..124, little-endian at 124).
pub(crate) fn reseal(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[..CHECKSUMMED]);
    put32(b, CHECKSUMMED, crc);
}

/// A valid immutable header for these parameters.
pub(crate) fn header(
    l: &Layout,
    max_message: u32,
    policy: u32,
    claim_timeout_ns: u64,
    created: u64,
) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..8].copy_from_slice(b"SHMQRING");
    put32(&mut b, OFF_VERSION, shmq::FORMAT_VERSION);
    put32(&mut b, OFF_HEADER_SIZE, HEADER_SIZE as u32);
    put64(&mut b, OFF_CAPACITY, l.capacity);
    put32(&mut b, OFF_MAX_MESSAGE, max_message);
    put32(&mut b, OFF_FULL_POLICY, policy);
    put32(&mut b, OFF_GROUP_SLOTS, l.group_slots as u32);
    put32(&mut b, OFF_PRODUCER_SLOTS, l.producer_slots as u32);
    put64(&mut b, OFF_CLAIM_TIMEOUT, claim_timeout_ns);
    put64(&mut b, OFF_CREATED, created);
    put64(&mut b, OFF_FILE_SIZE, l.file_size);
    reseal(&mut b);
    b
}

/// Applies `f` to the bytes of the file at `path`: in place when the length stays, else by
/// rewriting the file.
pub(crate) fn edit_file(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    let len = b.len();
    f(&mut b);
    if b.len() == len {
        // In place: truncating a file that is open would be a truncation (`Error::Truncated`).
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&b, 0).unwrap();
    } else {
        std::fs::write(path, b).unwrap();
    }
}
