//! Regressions: damaged cursors that once made the library panic or spin (found by the
//! property tests; fixed in src/protocol/ring.rs `sane_cursor` and src/queue/durable.rs).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use shmq::{Consumer, Corruption, Error, Malformed, Options, Producer, Queue};

use crate::common::format::*;
use crate::file::*;

/// Runs `f`, failing the test with `what` if it panics.
fn must_not_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked on a damaged file: {msg}");
        }
    }
}

/// A 4 KiB queue holding `records` records of `len` bytes, no groups.
fn small_queue(dir: &tempfile::TempDir, records: u64, len: usize) -> PathBuf {
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    let q = Queue::create(&path, &opts).unwrap();
    let mut p = q.producer().unwrap();
    for _ in 0..records {
        p.publish(&vec![1; len]).unwrap();
    }
    path
}

/// `publish` on a file whose tail word was damaged: a `Corrupt` error naming the file.
fn publish_on_damaged_tail(edit: impl FnOnce(&mut Vec<u8>)) {
    let dir = tempfile::tempdir().unwrap();
    let path = small_queue(&dir, 3, 10);
    edit_file(&path, edit);
    let q = Queue::open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(10)));
    expect_corrupt_tail(&path, &mut p);
}

/// The next `publish` of `p` fails with a damaged tail, naming `path`, without a panic.
fn expect_corrupt_tail(path: &Path, p: &mut Producer) {
    match must_not_panic("Producer::publish", || p.publish(b"x")) {
        Err(Error::Corrupt {
            path: named,
            kind: Corruption::Shared(Malformed::Cursor { which: "tail", .. }),
        }) => assert_eq!(named, path),
        other => panic!("expected Corrupt(Shared), got {other:?}"),
    }
}

/// A tail position that is not 8-aligned once reached `Ring::seal`'s alignment assert.
#[test]
fn unaligned_tail_position_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| {
        let pos = get64(b, TAIL_POSITION_AT);
        put64(b, TAIL_POSITION_AT, pos + 1);
    });
}

/// A tail position near `u64::MAX` once overflowed `at + rest` in `Ring::try_claim`.
#[test]
fn tail_position_near_u64_max_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| put64(b, TAIL_POSITION_AT, u64::MAX - 7));
}

/// A tail offset of `u64::MAX` once overflowed `offset + 1` in `Ring::try_claim`.
#[test]
fn tail_offset_u64_max_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| put64(b, TAIL_OFFSET_AT, u64::MAX));
}

/// A tail just below the largest sane position (2^62): no record fits below it, and no room
/// ever comes, so `publish` fails with the damaged tail instead of waiting (the claim limit is
/// capped at 2^62, which keeps every tail a producer stores sane).
#[test]
fn tail_position_at_the_largest_position_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| put64(b, TAIL_POSITION_AT, (1u64 << 62) - 8));
}

/// A tail damaged under a producer that has published: its cached tail, which its own claims
/// keep and which it does not test again, no longer matches the file, so its next claim's CAS
/// fails and hands it the damaged word, which it must test before using (a misaligned
/// position once reached `Ring::seal`'s alignment assert).
#[test]
fn tail_damaged_under_a_running_producer_fails_publish_cleanly() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let path = small_queue(&dir, 3, 10);
    let q = Queue::open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(10)));
    assert_eq!(p.publish(b"x").unwrap(), 3);
    // Written through the file: the queue's shared mapping sees it at once.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut word = [0u8; 8];
    file.read_exact_at(&mut word, TAIL_POSITION_AT as u64)
        .unwrap();
    let pos = u64::from_le_bytes(word);
    file.write_all_at(&(pos + 1).to_le_bytes(), TAIL_POSITION_AT as u64)
        .unwrap();
    expect_corrupt_tail(&path, &mut p);
}

/// A 4 KiB ring whose group `g` polled `records` records of `len` bytes and committed all but
/// the last; then the group's committed position, `was` for offset `records - 1`, is set to
/// `pos`. Returns the file, opened again.
fn committed_cursor_moved(
    dir: &tempfile::TempDir,
    len: usize,
    records: u64,
    was: u64,
    pos: u64,
) -> Queue {
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    {
        let q = Queue::create(&path, &opts).unwrap();
        let mut c = q.consumer("g").unwrap();
        let mut p = q.producer().unwrap();
        p.set_timeout(Some(Duration::from_secs(5)));
        for i in 0..records {
            p.publish(&vec![5; len]).unwrap();
            let o = c.poll(Some(Duration::ZERO)).unwrap().unwrap().offset;
            if i + 1 < records {
                c.commit(o).unwrap();
            }
        }
        assert_eq!(c.committed(), records - 1);
    }
    // Slot 0's committed cursor is (offset, position) at +128 in its 256-byte slot.
    let at = (HEADER_SIZE + 128) as usize;
    edit_file(&path, |b| {
        assert_eq!(get64(b, at), records - 1, "group layout drifted");
        assert_eq!(get64(b, at + 8), was, "group layout drifted");
        put64(b, at + 8, pos);
    });
    Queue::open(&path).unwrap()
}

/// One `poll` without waiting: the offset it returned, or its error; a panic fails the test.
fn poll_offset(c: &mut Consumer) -> shmq::Result<Option<u64>> {
    must_not_panic("Consumer::poll", || {
        c.poll(Some(Duration::ZERO)).map(|m| m.map(|m| m.offset))
    })
}

/// Polling a group whose committed position is near `u64::MAX` while its committed offset is a
/// record that wrapped to the next lap (once overflowed `pos + (capacity - idx)` in
/// `Ring::read`).
#[test]
fn huge_committed_position_fails_poll_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Footprint 232: record 17 would start at 3944 and wraps to the next lap.
    let q = committed_cursor_moved(&dir, 200, 18, 3944, u64::MAX - 2);
    let r = poll_offset(&mut q.consumer("g").unwrap());
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "expected Corrupt, got {r:?}"
    );
}

/// A committed cursor just below the largest sane position (2^62), at a record that wraps to
/// the next lap, which starts at 2^62 exactly: the cursor is sane, but the one after the
/// record would not be. Readers test a cursor's sanity where they take it from the file and
/// trust the ones they move to past a record they read, so reading that record must fail
/// cleanly rather than deliver it and leave the reader at an insane position.
#[test]
fn record_ending_past_the_largest_position_fails_poll_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Record 17's claim begins at 3944 (ring index kept), the record at the next lap.
    let pos = (1u64 << 62) - (4096 - 3944);
    let q = committed_cursor_moved(&dir, 200, 18, 3944, pos);
    let r = poll_offset(&mut q.consumer("g").unwrap());
    assert!(
        matches!(
            r,
            Err(Error::Corrupt {
                kind: Corruption::Shared(Malformed::Cursor { .. }),
                ..
            })
        ),
        "expected a corrupt cursor, got {r:?}"
    );
}

/// The boundary of the test above: a committed cursor at a record that ends exactly at the
/// largest sane position, 2^62, is delivered, and the reader then waits at 2^62.
#[test]
fn record_ending_at_the_largest_position_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    // Footprint 256: sixteen records a lap, record 15 at 3840, ending at the lap's end.
    let q = committed_cursor_moved(&dir, 224, 16, 3840, (1u64 << 62) - 256);
    let mut c = q.consumer("g").unwrap();
    assert_eq!(poll_offset(&mut c).unwrap(), Some(15));
    assert_eq!(poll_offset(&mut c).unwrap(), None);
}

/// A `Sync` publisher waiting behind another producer's unfinished record sleeps (it once spun
/// in `Shared::wait_durable`, and forever on some damaged files).
#[test]
fn sync_publish_behind_pending_record_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        // Nobody gives the pending record up during the test.
        claim_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    drop(Queue::create(&path, &opts).unwrap());
    edit_file(&path, |b| {
        assert_eq!(get32(b, OFF_DURABILITY), 0, "header layout drifted");
        put32(b, OFF_DURABILITY, DURABILITY_SYNC);
        reseal(b);
    });
    let q = Queue::open(&path).unwrap();
    let mut a = q.producer().unwrap();
    let mut claim = a.claim(8).unwrap(); // record 0, not committed yet
    claim.as_mut_slice().fill(1);
    let q2 = q.clone();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut b = q2.producer().unwrap();
        b.set_timeout(Some(Duration::from_millis(100)));
        let cpu = crate::common::thread_cpu();
        let r = b.publish(b"second").map_err(|e| e.to_string());
        let _ = tx.send(());
        (r, crate::common::thread_cpu() - cpu)
    });
    // Let the waiter wait a second, then finish record 0 so it can complete.
    let returned_early = rx.recv_timeout(Duration::from_secs(1)).is_ok();
    assert_eq!(claim.commit().unwrap(), 0);
    let (r, cpu) = waiter.join().unwrap();
    assert!(r.is_ok() || returned_early, "publish failed: {r:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "a waiting Sync publish burned {cpu:?} of CPU (returned early: {returned_early})"
    );
}

/// A producer held back by a durable cursor that cannot advance (a damaged record in the
/// durable prefix of a `Sync` file) must still honour its publish timeout.
#[test]
fn producer_behind_stuck_durable_prefix_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_queue(&dir, 3, 10); // footprint 48: record 1's header at ring + 48
    let ring = Layout::new(4096, 64, 64).ring as usize;
    edit_file(&path, |b| {
        assert_eq!(get32(b, OFF_DURABILITY), 0, "header layout drifted");
        put32(b, OFF_DURABILITY, DURABILITY_SYNC);
        reseal(b);
        assert_eq!(get64(b, ring + 48), 1, "record layout drifted");
        put64(b, ring + 48, 52); // record 1's header names another offset
    });
    let q = Queue::open(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut p = q.producer().unwrap();
        p.set_timeout(Some(Duration::from_millis(20)));
        // Sync publishes time out waiting for durability; once the ring is full up to the
        // stuck durable cursor, they must time out waiting for room.
        let outcomes: Vec<String> = (0..100)
            .map(|_| match p.publish(&[9; 100]) {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        let _ = tx.send(outcomes);
    });
    let outcomes = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("publish hung behind a stuck durable prefix");
    assert!(
        outcomes.iter().all(|o| o != "ok"),
        "a record was acknowledged durable past a damaged one: {outcomes:?}"
    );
}

/// An aborted record followed by an index slot that says "committed" but whose position is
/// still the odd mark of an unpublished run member: `Ring::past_aborted` once re-read that
/// slot for ever, hanging `poll`. Now the poll ends (any result but a hang or a panic).
#[test]
fn aborted_record_before_a_damaged_run_member_does_not_hang_poll() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 64,
        ..Options::default()
    };
    let layout = {
        let q = Queue::create(&path, &opts).unwrap();
        drop(q.consumer("g").unwrap()); // the group starts at record 0
        let mut p = q.producer().unwrap();
        for i in 0..3u64 {
            p.publish(&i.to_le_bytes()).unwrap();
        }
        Layout::of(&q)
    };
    let at = |word: u64| word as usize;
    edit_file(&path, |b| {
        let pos = get64(b, at(layout.pos_at(1)));
        assert!(
            pos > 0 && pos.is_multiple_of(8),
            "index layout drifted: {pos}"
        );
        put64(b, at(layout.tag_at(0)), 2); // record 0's tag: (0, ABORTED)
        put64(b, at(layout.pos_at(1)), 1); // record 1's position: odd, "unpublished"
        put64(b, at(layout.tag_at(1)), 9); // record 1's tag: (1, COMMITTED)
    });
    let q = Queue::open(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut c = q.consumer("g").unwrap();
        let r = must_not_panic("Consumer::poll", || {
            c.poll(Some(Duration::from_millis(100)))
                .map(|m| m.map(|m| m.offset))
        });
        let _ = tx.send(format!("{r:?}"));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("poll hung past an aborted record");
    assert!(
        !r.contains("Ok(Some(0))"),
        "the aborted record was delivered: {r}"
    );
}
