//! Damaged producer-id files (the idempotent producers' state next to the queue file): random
//! byte edits, hostile slot and entry words, a hostile header with a valid checksum, and
//! truncation give typed errors, never a panic or a hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use shmq::{Corruption, Error, IdOptions, Options, Queue};

use crate::exercise::{fresh_path, watchdog};
use crate::strategies::config;

/// The template's settings: 4 slots of 16 entries (FORMAT.md, "Producer-id file").
const SLOTS: usize = 4;
const WINDOW: usize = 16;
/// Where slots start, a slot header's size, and an entry's.
const SLOT_BASE: usize = 4096;
const SLOT_HEADER: usize = 384;
const ENTRY: usize = 16;
/// The 8-byte words of a slot header: state, name length, owner (two), last, in-flight
/// (two), counters (three).
const SLOT_WORDS: [usize; 10] = [0, 8, 128, 136, 256, 264, 272, 280, 288, 296];

fn ids_path(queue: &Path) -> PathBuf {
    let mut s = queue.as_os_str().to_owned();
    s.push(".ids");
    PathBuf::from(s)
}

fn slot_at(slot: usize) -> usize {
    SLOT_BASE + slot * (SLOT_HEADER + ENTRY * WINDOW)
}

fn options() -> IdOptions {
    IdOptions {
        slots: SLOTS as u32,
        window: WINDOW as u32,
    }
}

/// A valid queue file with two producer ids (one with more sequence numbers than its
/// window), and its producer-id file: both files' bytes.
struct IdsTemplate {
    queue: Vec<u8>,
    ids: Vec<u8>,
}

fn template() -> &'static IdsTemplate {
    static T: OnceLock<IdsTemplate> = OnceLock::new();
    T.get_or_init(|| {
        let path = fresh_path();
        let q = Queue::create(
            &path,
            &Options {
                capacity: 1 << 14,
                max_message: 256,
                ..Options::default()
            },
        )
        .unwrap();
        let mut a = q.idempotent_producer("a", &options()).unwrap();
        let mut b = q.idempotent_producer("b", &options()).unwrap();
        for s in 0..20u64 {
            a.publish(s, &s.to_le_bytes()).unwrap();
        }
        for s in [0u64, 1, 5] {
            b.publish(s, &s.to_le_bytes()).unwrap();
        }
        drop((a, b, q));
        let t = IdsTemplate {
            queue: std::fs::read(&path).unwrap(),
            ids: std::fs::read(ids_path(&path)).unwrap(),
        };
        let _ = std::fs::remove_file(ids_path(&path));
        let _ = std::fs::remove_file(&path);
        t
    })
}

/// An error from a damaged file must name a file and say something.
fn judge(e: &Error) {
    assert!(!e.to_string().is_empty());
}

/// List, open both ids, publish new and retried sequence numbers, remove one: every call may
/// fail, none may panic or hang.
fn exercise(path: &Path) {
    let Ok(q) = Queue::open(path) else { return };
    if let Err(e) = q.producer_ids() {
        judge(&e);
    }
    for id in ["a", "b", "c"] {
        let mut p = match q.idempotent_producer(id, &options()) {
            Ok(p) => p,
            Err(e) => {
                judge(&e);
                continue;
            }
        };
        let next = p.next_sequence();
        for s in [0, 3, 5, 19, 20, next, next.saturating_add(1), u64::MAX - 1] {
            if let Err(e) = p.publish(s, b"x") {
                judge(&e);
            }
        }
    }
    if let Err(e) = q.remove_producer_id("b") {
        judge(&e);
    }
}

/// Writes the template queue and `ids` as the producer-id file, exercises them in a watchdog
/// thread: fails on a panic or a hang.
fn check(ids: &[u8]) -> Result<(), TestCaseError> {
    let path = fresh_path();
    std::fs::write(&path, &template().queue).unwrap();
    std::fs::write(ids_path(&path), ids).unwrap();
    let outcome = watchdog(&path, "the idempotent-producer API", exercise);
    let _ = std::fs::remove_file(ids_path(&path));
    let _ = std::fs::remove_file(&path);
    outcome
}

/// An extreme or near-miss 64-bit value.
fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(2u64),
        Just(u64::MAX),
        Just(1u64 << 63),
        any::<u64>(),
        0u64..64,
    ]
}

/// The error that opening id `a` with `ids` as the template queue's producer-id file, then
/// retrying its sequence number 19, gives.
fn open_error(ids: &[u8]) -> Error {
    let path = fresh_path();
    std::fs::write(&path, &template().queue).unwrap();
    std::fs::write(ids_path(&path), ids).unwrap();
    let q = Queue::open(&path).unwrap();
    let e = q
        .idempotent_producer("a", &options())
        .and_then(|mut p| p.publish(19, b"x"))
        .unwrap_err();
    let _ = std::fs::remove_file(ids_path(&path));
    let _ = std::fs::remove_file(&path);
    e
}

/// Each header check fails with its own variant, naming the producer-id file.
#[test]
fn each_damaged_header_field_has_its_own_error() {
    let t = &template().ids;
    let fault = |b: &[u8]| match open_error(b) {
        Error::Corrupt {
            path,
            kind: Corruption::Ids(f),
        } => {
            assert!(path.to_string_lossy().ends_with(".ids"), "{path:?}");
            f
        }
        e => panic!("expected Corruption::Ids, got {e:?}"),
    };
    let with = |at: usize, v: &[u8]| {
        let mut b = t.clone();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    let resum = |mut b: Vec<u8>| {
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    };
    use shmq::IdsFault as F;
    assert!(matches!(fault(&t[..100]), F::Size { len: 100, .. }));
    assert!(matches!(fault(&with(0, b"SHMQWORK")), F::BadMagic));
    assert!(matches!(
        fault(&with(8, &2u32.to_le_bytes())),
        F::Version { found: 2 }
    ));
    assert!(matches!(fault(&with(12, &5u32.to_le_bytes())), F::Checksum));
    assert!(matches!(
        fault(&resum(with(16, &24u32.to_le_bytes()))),
        F::Field {
            field: "window",
            value: 24
        }
    ));
    assert!(matches!(
        fault(&resum(with(12, &0u32.to_le_bytes()))),
        F::Field {
            field: "slots",
            value: 0
        }
    ));
    assert!(matches!(
        fault(&resum(with(12, &5u32.to_le_bytes()))),
        F::Size { .. }
    ));
    assert!(matches!(
        fault(&with(slot_at(0), &7u64.to_le_bytes())),
        F::Slot {
            slot: 0,
            field: "state",
            value: 7
        }
    ));
    assert!(matches!(
        fault(&with(slot_at(0) + 8, &65u64.to_le_bytes())),
        F::Slot {
            slot: 0,
            field: "name length",
            value: 65
        }
    ));
    // Entry 3 of slot 0 holds seq 19 + 1 = 20 (19 mod 16 = 3): 21 maps to entry 4.
    let entry3 = slot_at(0) + SLOT_HEADER + 3 * ENTRY;
    assert!(matches!(
        fault(&with(entry3, &21u64.to_le_bytes())),
        F::Entry {
            slot: 0,
            index: 3,
            stored: 21
        }
    ));
    // An in-flight claim of an offset never claimed.
    let b = with(slot_at(0) + 264, &1u64.to_le_bytes());
    assert!(matches!(
        fault(&with_from(b, slot_at(0) + 272, &(1u64 << 40).to_le_bytes())),
        F::InFlight { slot: 0, .. }
    ));
}

fn with_from(mut b: Vec<u8>, at: usize, v: &[u8]) -> Vec<u8> {
    b[at..at + v.len()].copy_from_slice(v);
    b
}

proptest! {
    #![proptest_config(config(200))]

    /// Random byte flips and overwrites anywhere in the producer-id file.
    #[test]
    fn damaged_ids_files_never_panic_or_hang(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut b = template().ids.clone();
        for (at, v) in &edits {
            let i = at.index(b.len());
            b[i] ^= (*v).max(1);
        }
        check(&b)?;
    }

    /// Extreme values in the slot headers' words and in the entries.
    #[test]
    fn hostile_slot_and_entry_words_never_panic_or_hang(
        edits in prop::collection::vec(
            (0..SLOTS, 0usize..(SLOT_WORDS.len() + 2 * WINDOW), extreme()),
            1..8,
        ),
    ) {
        let mut b = template().ids.clone();
        for (slot, word, v) in &edits {
            let at = slot_at(*slot) + if *word < SLOT_WORDS.len() {
                SLOT_WORDS[*word]
            } else {
                SLOT_HEADER + (word - SLOT_WORDS.len()) * 8
            };
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        check(&b)?;
    }

    /// Header fields with a recomputed checksum.
    #[test]
    fn hostile_headers_never_panic_or_hang(slots in extreme(), window in extreme()) {
        let mut b = template().ids.clone();
        b[12..16].copy_from_slice(&(slots as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(window as u32).to_le_bytes());
        let crc = crc32c::crc32c(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        check(&b)?;
    }

    /// Truncation and extension to random lengths.
    #[test]
    fn truncated_or_extended_ids_files_are_refused(len in 0usize..(16 << 10)) {
        let mut b = template().ids.clone();
        b.resize(len, 0);
        check(&b)?;
    }
}
