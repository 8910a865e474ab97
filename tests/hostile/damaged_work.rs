//! Damaged work files (a work group's per-record state next to its queue file): random byte
//! edits, extreme entry and hint words, and truncation give errors, never a panic or a hang.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use proptest::prelude::*;
use shmq::{Options, Queue, WorkOptions};

use crate::exercise::{fresh_path, watchdog};
use crate::strategies::config;

/// The window of the template group (entries).
const WINDOW: u64 = 64;
/// Where entries start (FORMAT.md, "Work file").
const ENTRIES: usize = 8192;
/// The mutable words: `next`, `earliest`, sleepers, counters.
const WORDS: [usize; 4] = [1280, 1408, 1536, 1792];
/// The queue file's group slot 0 committed cursor, the work group's base: offset, then
/// position (FORMAT.md, "Group slot").
const BASE: usize = 4096 + 128;

/// A valid queue file with a work group holding acked, in-flight and waiting records, and
/// its work file: both files' bytes.
struct WorkTemplate {
    queue: Vec<u8>,
    work: Vec<u8>,
}

fn work_path(queue: &Path) -> PathBuf {
    let mut s = queue.as_os_str().to_owned();
    s.push(".work-0");
    PathBuf::from(s)
}

fn template() -> &'static WorkTemplate {
    static T: OnceLock<WorkTemplate> = OnceLock::new();
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
        let options = WorkOptions {
            window: WINDOW as u32,
            ..WorkOptions::default()
        };
        let mut w = q.worker("jobs", &options).unwrap();
        let mut p = q.producer().unwrap();
        for i in 0..20u64 {
            p.publish(&i.to_le_bytes()).unwrap();
        }
        let some = Some(Duration::from_secs(5));
        for i in 0..12 {
            let t = w.poll(some).unwrap().unwrap().ticket;
            match i % 3 {
                0 => w.ack(t).unwrap(),
                1 => w.nack(t, Some(Duration::from_secs(3600))).unwrap(),
                _ => {}
            }
        }
        drop((w, p, q));
        let t = WorkTemplate {
            queue: std::fs::read(&path).unwrap(),
            work: std::fs::read(work_path(&path)).unwrap(),
        };
        let _ = std::fs::remove_file(work_path(&path));
        let _ = std::fs::remove_file(&path);
        t
    })
}

/// Open the queue, join the group, poll and settle, list: every call may fail, none may
/// panic or hang.
fn exercise(path: &Path) {
    let Ok(q) = Queue::open(path) else { return };
    for r in [q.pending("jobs").map(drop), q.work_info("jobs").map(drop)] {
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
    }
    let mut w = match q.worker("jobs", &WorkOptions::default()) {
        Ok(w) => w,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    for i in 0..30 {
        match w.poll(Some(Duration::from_millis(1))) {
            Ok(Some(job)) => {
                let t = job.ticket;
                let _ = match i % 3 {
                    0 => w.ack(t),
                    1 => w.nack(t, Some(Duration::ZERO)),
                    _ => w.reject(t),
                };
            }
            Ok(None) => {}
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    let _ = q.pending("jobs");
    drop(w);
    let _ = q.delete_group("jobs");
}

/// Writes the template queue and `work` as the work file, exercises them in a watchdog
/// thread: fails on a panic or a hang.
fn check(work: &[u8]) -> Result<(), TestCaseError> {
    check_files(&template().queue, work)
}

/// [`check`] with `queue` as the queue file.
fn check_files(queue: &[u8], work: &[u8]) -> Result<(), TestCaseError> {
    let path = fresh_path();
    std::fs::write(&path, queue).unwrap();
    std::fs::write(work_path(&path), work).unwrap();
    let outcome = watchdog(&path, "the work API", exercise);
    let _ = std::fs::remove_file(work_path(&path));
    let _ = std::fs::remove_file(&path);
    outcome
}

/// An extreme or near-miss 64-bit value.
fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1u64 << 63),
        Just((1u64 << 61) - 1),
        any::<u64>(),
        0u64..64,
    ]
}

proptest! {
    #![proptest_config(config(300))]

    /// Random byte flips and overwrites anywhere in the work file.
    #[test]
    fn damaged_work_files_never_panic_or_hang(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut b = template().work.clone();
        for (at, v) in &edits {
            let i = at.index(b.len());
            b[i] ^= (*v).max(1);
        }
        check(&b)?;
    }

    /// Extreme values in entry state words, positions and reasons, and in the hint words.
    #[test]
    fn hostile_entry_and_hint_words_never_panic_or_hang(
        edits in prop::collection::vec((0usize..(WINDOW as usize * 4 + 4), extreme()), 1..8),
    ) {
        let mut b = template().work.clone();
        for (target, v) in &edits {
            let at = if *target < WINDOW as usize * 4 {
                ENTRIES + target * 8
            } else {
                WORDS[target - WINDOW as usize * 4]
            };
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        check(&b)?;
    }

    /// Extreme values in the group's committed cursor in the queue file (the work group's
    /// base, which every scan and dispatch computes with).
    #[test]
    fn hostile_group_base_never_panics_or_hangs(offset in extreme(), pos in extreme()) {
        let mut q = template().queue.clone();
        q[BASE..BASE + 8].copy_from_slice(&offset.to_le_bytes());
        q[BASE + 8..BASE + 16].copy_from_slice(&pos.to_le_bytes());
        check_files(&q, &template().work)?;
    }

    /// Truncation and extension to random lengths.
    #[test]
    fn truncated_or_extended_work_files_are_refused(len in 0usize..(16 << 10)) {
        let mut b = template().work.clone();
        b.resize(len, 0);
        check(&b)?;
    }
}
