//! Property tests: a damaged template file, a truncated or extended one, one with edited
//! header fields under a valid checksum, or a wholly random one gives errors, never a panic or
//! a hang.

use proptest::prelude::*;
use shmq::{Corruption, Error, Queue};

use crate::common::format::*;
use crate::exercise::*;
use crate::file::*;
use crate::strategies::*;
use crate::template::*;

fn random_byte_edits(edits: &[(prop::sample::Index, u8, bool)]) -> Result<(), TestCaseError> {
    let mut b = template().bytes.clone();
    for (at, v, xor) in edits {
        let i = at.index(b.len());
        b[i] = if *xor { b[i] ^ (*v).max(1) } else { *v };
    }
    check_file(&b)
}

fn extreme_words(edits: &[(Target, WordValue, u8)]) -> Result<(), TestCaseError> {
    let t = template();
    let mut b = t.bytes.clone();
    apply_targeted(&mut b, t, edits);
    check_file(&b)
}

fn byte_edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, bool)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
        1..24,
    )
}

proptest! {
    #![proptest_config(config(2000))]

    /// (a) Random byte flips and overwrites anywhere in the file.
    #[test]
    fn random_byte_edits_never_panic_or_hang(edits in byte_edits()) {
        random_byte_edits(&edits)?;
    }
}

proptest! {
    #![proptest_config(config(3000))]

    /// (c) Extreme and near-miss values in the group table, producer table, offset index,
    /// record headers, ring bytes and mutable header words.
    #[test]
    fn extreme_words_in_shared_state_never_panic_or_hang(
        edits in prop::collection::vec(targeted_edit(), 1..8),
    ) {
        extreme_words(&edits)?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// (b) Truncation and extension to random lengths (zero or random fill).
    #[test]
    fn truncated_or_extended_files_are_refused(
        len in prop_oneof![
            0usize..200,
            0usize..(4 * T_CAPACITY as usize),
            (0usize..64).prop_map(|d| template().bytes.len() - 32 + d),
            0usize..(64 << 10),
        ],
        fill in any::<u8>(),
    ) {
        let t = template();
        let mut b = t.bytes.clone();
        b.resize(len, fill);
        let path = fresh_path();
        std::fs::write(&path, &b).unwrap();
        let r = Queue::open(&path);
        let _ = std::fs::remove_file(&path);
        if len == t.bytes.len() {
            prop_assert!(r.is_ok());
        } else {
            let need = if len < HEADER_SIZE as usize { HEADER_SIZE } else { t.layout.file_size };
            match r {
                Err(Error::Corrupt { kind: Corruption::Truncated { len: l, need: n, .. }, .. }) => {
                    prop_assert_eq!((l, n), (len as u64, need));
                }
                Err(e) => prop_assert!(false, "wrong error {e}"),
                Ok(_) => prop_assert!(false, "opened a {len}-byte file"),
            }
        }
        // Either way the rest of the API must cope.
        check_file(&b)?;
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// (d) Header-field edits with the checksum recomputed, so validation goes past it
    /// (durability policies included); the file length and file-size field optionally follow
    /// the edited geometry.
    #[test]
    fn header_edits_with_valid_checksum_never_panic_or_hang(
        edits in prop::collection::vec(field_edit(), 1..4),
        resize in resize(),
        deep in prop::collection::vec(targeted_edit(), 0..3),
    ) {
        header_edits(&edits, resize, &deep)?;
    }

    /// (e) Wholly random files: raw bytes, a valid magic and version over random bytes, and
    /// a valid header of random geometry over random or sparsely poisoned tables.
    #[test]
    fn random_files_never_panic_or_hang(
        kind in 0u8..4,
        raw in prop::collection::vec(any::<u8>(), 0..20_000),
        cap_log in 12u32..15,
        max_message in any::<u32>(),
        policy in 0u32..3,
        slots in (1u64..=64, 1u64..=64),
        claim_ns in prop_oneof![Just(1u64), 1u64..2_000_000, Just(u64::MAX)],
        words in prop::collection::vec((any::<prop::sample::Index>(), word_value()), 0..64),
    ) {
        let b = match kind {
            0 => raw,
            1 => {
                let mut b = raw;
                b.resize(b.len().max(HEADER_SIZE as usize), 0);
                b[..8].copy_from_slice(b"SHMQRING");
                put32(&mut b, OFF_VERSION, shmq::FORMAT_VERSION);
                b
            }
            _ => {
                let l = Layout::new(1 << cap_log, slots.0, slots.1);
                let max = 1 + max_message % ((l.capacity / 2 - 32) as u32);
                let mut b = vec![0u8; l.file_size as usize];
                if kind == 2 {
                    // Random bytes after the header, cycled.
                    for (dst, src) in b[HEADER_SIZE as usize..].iter_mut().zip(raw.iter().cycle()) {
                        *dst = *src;
                    }
                }
                b[..128].copy_from_slice(&header(&l, max, policy, claim_ns, 1));
                for (at, v) in &words {
                    let at = (HEADER_SIZE as usize + at.index(b.len() - HEADER_SIZE as usize)) & !7;
                    if at + 8 <= b.len() {
                        let orig = get64(&b, at);
                        put64(&mut b, at, v.apply(orig));
                    }
                }
                b
            }
        };
        check_file(&b)?;
    }
}
