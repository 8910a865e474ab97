//! Damaged inbox files (an inbox's keys and states next to its queue file): random byte
//! edits, extreme slot, index and counter words, and truncation give errors, never a panic or
//! a hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use shmq::{Admit, Corruption, Error, InboxFault, InboxOptions, Options, Queue};

use crate::exercise::{fresh_path, watchdog};
use crate::strategies::config;

/// The window of the template inbox (keys).
const WINDOW: usize = 64;
/// Where the index's `2W` buckets start, and the slots (FORMAT.md, "Inbox file").
const INDEX: usize = 4096;
const SLOTS: usize = 8192;
/// The mutable words: `admitted`, `pending`, the counters, `version`.
const WORDS: [usize; 7] = [128, 256, 512, 520, 528, 536, 640];

/// A valid queue file and an inbox with evicted, done, released and held keys: both files'
/// bytes.
struct InboxTemplate {
    queue: Vec<u8>,
    inbox: Vec<u8>,
}

fn inbox_path(queue: &Path) -> PathBuf {
    let mut s = queue.as_os_str().to_owned();
    s.push(".inbox-effects");
    PathBuf::from(s)
}

fn options() -> InboxOptions {
    InboxOptions {
        window: WINDOW as u32,
    }
}

fn template() -> &'static InboxTemplate {
    static T: OnceLock<InboxTemplate> = OnceLock::new();
    T.get_or_init(|| {
        let path = fresh_path();
        let q = Queue::create(&path, &Options::default()).unwrap();
        let mut inbox = q.inbox("effects", &options()).unwrap();
        let mut held = Vec::new();
        for k in 0..100u64 {
            if let Admit::Fresh(mark) = inbox.begin(&k.to_le_bytes()).unwrap() {
                match k % 4 {
                    0 => drop(mark),
                    // Only late keys: a held key is never evicted.
                    1 if k > 90 => held.push(mark),
                    _ => mark.done().unwrap(),
                }
            }
        }
        // The held keys' holder is gone once the template is taken: as if it had died.
        std::mem::forget(held);
        drop((inbox, q));
        let t = InboxTemplate {
            queue: std::fs::read(&path).unwrap(),
            inbox: std::fs::read(inbox_path(&path)).unwrap(),
        };
        let _ = std::fs::remove_file(inbox_path(&path));
        let _ = std::fs::remove_file(&path);
        t
    })
}

/// Open the queue, list the inboxes, open the inbox, begin keys old and new, record some
/// done and release others, delete it: every call may fail, none may panic or hang.
fn exercise(path: &Path) {
    let Ok(q) = Queue::open(path) else { return };
    for r in [q.inboxes().map(drop), q.inbox_info("effects").map(drop)] {
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
    }
    let mut inbox = match q.inbox("effects", &options()) {
        Ok(i) => i,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for k in 0..200u64 {
        match inbox.begin(&(k * 7 % 150).to_le_bytes()) {
            Ok(Admit::Fresh(mark)) if k % 2 == 0 => {
                if let Err(e) = mark.done() {
                    assert!(!e.to_string().is_empty());
                }
            }
            Ok(_) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    drop(inbox);
    let _ = q.delete_inbox("effects");
}

/// Writes the template queue and `inbox` as the inbox file, exercises them in a watchdog
/// thread: fails on a panic or a hang.
fn check(inbox: &[u8]) -> Result<(), TestCaseError> {
    let path = fresh_path();
    std::fs::write(&path, &template().queue).unwrap();
    std::fs::write(inbox_path(&path), inbox).unwrap();
    let outcome = watchdog(&path, "the inbox API", exercise);
    let _ = std::fs::remove_file(inbox_path(&path));
    let _ = std::fs::remove_file(&path);
    outcome
}

/// An extreme or near-miss 64-bit value.
fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1u64 << 63),
        Just((1u64 << 62) - 1),
        any::<u64>(),
        0u64..256,
    ]
}

/// The template with the 8-byte words of `edits` replaced: each a slot's state, length or
/// key word, an index bucket, or a mutable word.
fn with_words(edits: &[(usize, u64)]) -> Vec<u8> {
    let mut b = template().inbox.clone();
    for &(target, v) in edits {
        let slots = WINDOW * 4;
        let at = if target < slots {
            // State low and high, length and hash, the key's first word.
            SLOTS + (target / 4) * 128 + [0, 8, 16, 24][target % 4]
        } else if target < slots + 2 * WINDOW {
            INDEX + (target - slots) * 8
        } else {
            WORDS[(target - slots - 2 * WINDOW) % WORDS.len()]
        };
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

proptest! {
    #![proptest_config(config(300))]

    /// Random byte flips anywhere in the inbox file.
    #[test]
    fn damaged_inbox_files_never_panic_or_hang(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut b = template().inbox.clone();
        for (at, v) in &edits {
            let i = at.index(b.len());
            b[i] ^= (*v).max(1);
        }
        check(&b)?;
    }

    /// Extreme values in slot words, index buckets, `admitted`, `pending` and the counters.
    #[test]
    fn hostile_inbox_words_never_panic_or_hang(
        edits in prop::collection::vec((0usize..(WINDOW * 6 + 7), extreme()), 1..8),
    ) {
        check(&with_words(&edits))?;
    }

    /// Truncation and extension to random lengths.
    #[test]
    fn truncated_or_extended_inbox_files_are_refused(len in 0usize..(20 << 10)) {
        let mut b = template().inbox.clone();
        b.resize(len, 0);
        check(&b)?;
    }
}

/// Every index bucket full (no empty one to end a probe) and pending pointing at a slot whose
/// key is garbage: a typed error or a repair, never a hang.
#[test]
fn a_full_index_and_a_torn_admission_give_errors() {
    let buckets: Vec<(usize, u64)> = (0..2 * WINDOW)
        .map(|i| (WINDOW * 4 + i, (i as u64 % 64 + 1) | 0xdead_0000_0000))
        .collect();
    let full = with_words(&buckets);
    check(&full).unwrap();
    let path = fresh_path();
    std::fs::write(&path, &template().queue).unwrap();
    std::fs::write(inbox_path(&path), &full).unwrap();
    let q = Queue::open(&path).unwrap();
    let mut inbox = q.inbox("effects", &options()).unwrap();
    match inbox.begin(b"new key") {
        Err(Error::Corrupt {
            path: p,
            kind: Corruption::Inbox(InboxFault::Index { .. }),
        }) => assert_eq!(p, inbox_path(&path)),
        other => panic!("expected a damaged index, got {other:?}"),
    }
    // An admission that died mid-way (pending set) over a slot whose key is damaged: the
    // next admission repairs the file (empties that slot) and goes on.
    let admitted = u64::from_le_bytes(template().inbox[128..136].try_into().unwrap());
    let torn = with_words(&[(WINDOW * 6 + 1, admitted + 1), (4 * 5 + 2, u64::MAX)]);
    check(&torn).unwrap();
    std::fs::write(inbox_path(&path), &torn).unwrap();
    let mut inbox = q.inbox("effects", &options()).unwrap();
    assert!(matches!(inbox.begin(b"new key"), Ok(Admit::Fresh(_))));
    let _ = std::fs::remove_file(inbox_path(&path));
    let _ = std::fs::remove_file(&path);
}
