//! Idempotent producers in one process (and forked children): new records and duplicates, the
//! de-duplication window, a busy id, fork, removal, options, and the producer-id file
//! truncated or removed under its holder.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shmq::{Corruption, Error, IdOptions, Options, PublishOutcome, Queue};

fn setup() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::create(
        common::queue_path(&dir),
        &Options {
            capacity: 1 << 20,
            max_message: 4096,
            ..Options::default()
        },
    )
    .unwrap();
    (dir, q)
}

fn ids_path(q: &Queue) -> PathBuf {
    let mut s = q.path().as_os_str().to_owned();
    s.push(".ids");
    PathBuf::from(s)
}

/// Every payload in the queue, in offset order, with its offset.
fn records(q: &Queue) -> Vec<(u64, Vec<u8>)> {
    let mut r = q.tail_reader(shmq::SeekTo::Earliest).unwrap();
    let mut out = Vec::new();
    while let Some(m) = r.poll(Some(Duration::ZERO)).unwrap() {
        out.push((m.offset, m.payload.to_vec()));
    }
    out
}

fn small_window() -> IdOptions {
    IdOptions {
        slots: 4,
        window: 16,
    }
}

#[test]
fn a_retry_returns_the_original_offset_and_publishes_nothing() {
    let (_dir, q) = setup();
    let mut plain = q.producer().unwrap();
    plain.publish(b"before").unwrap();
    let mut p = q
        .idempotent_producer("orders", &IdOptions::default())
        .unwrap();
    assert_eq!(p.id(), "orders");
    assert_eq!(p.next_sequence(), 0);
    let a = p.publish(0, b"a").unwrap();
    let b = p.publish(1, b"b").unwrap();
    assert_eq!((a, b), (PublishOutcome::New(1), PublishOutcome::New(2)));
    plain.publish(b"between").unwrap();
    assert_eq!(
        p.publish(0, b"a again").unwrap(),
        PublishOutcome::Duplicate(1)
    );
    assert_eq!(
        p.publish(1, b"b again").unwrap(),
        PublishOutcome::Duplicate(2)
    );
    assert!(p.publish(1, b"b").unwrap().is_duplicate());
    assert_eq!(p.publish(2, b"c").unwrap().offset(), 4);
    assert_eq!(p.next_sequence(), 3);
    let got: Vec<Vec<u8>> = records(&q).into_iter().map(|(_, p)| p).collect();
    let want: Vec<&[u8]> = vec![b"before", b"a", b"b", b"between", b"c"];
    assert_eq!(got, want);

    let info = q.producer_ids().unwrap();
    assert_eq!(info.len(), 1);
    let i = &info[0];
    assert_eq!(i.id, "orders");
    assert_eq!(i.holder, Some(std::process::id()));
    assert!(i.holder_alive);
    assert_eq!((i.next_sequence, i.remembered, i.window), (3, 3, 1024));
    assert_eq!((i.published, i.duplicates, i.unknown), (3, 3, 0));

    // Reopened (as after a restart), the id remembers.
    drop(p);
    let info = q.producer_ids().unwrap();
    assert!(!info[0].holder_alive || info[0].holder.is_none());
    let mut p = q
        .idempotent_producer("orders", &IdOptions::default())
        .unwrap();
    assert_eq!(p.next_sequence(), 3);
    assert_eq!(p.publish(1, b"b").unwrap(), PublishOutcome::Duplicate(2));
    assert_eq!(p.publish(3, b"d").unwrap(), PublishOutcome::New(5));
    // Two ids are independent.
    let mut other = q
        .idempotent_producer("refunds", &IdOptions::default())
        .unwrap();
    assert_eq!(other.publish(1, b"x").unwrap(), PublishOutcome::New(6));
    assert_eq!(q.producer_ids().unwrap().len(), 2);
}

#[test]
fn the_window_is_bounded_and_older_retries_are_refused() {
    let (_dir, q) = setup();
    let mut p = q.idempotent_producer("w", &small_window()).unwrap();
    let mut offsets = Vec::new();
    for seq in 0..40u64 {
        offsets.push(p.publish(seq, &seq.to_le_bytes()).unwrap().offset());
    }
    // last = 40, window 16: 24..40 are remembered, 0..24 refused.
    for seq in 24..40u64 {
        assert_eq!(
            p.publish(seq, b"retry").unwrap(),
            PublishOutcome::Duplicate(offsets[seq as usize])
        );
    }
    match p.publish(23, b"too old") {
        Err(Error::SequenceOutsideWindow {
            path,
            id,
            seq,
            oldest,
        }) => {
            assert_eq!(
                (path.as_path(), id.as_str(), seq, oldest),
                (q.path(), "w", 23, 24)
            );
        }
        other => panic!("expected SequenceOutsideWindow, got {other:?}"),
    }
    let e = p.publish(0, b"too old").unwrap_err();
    assert!(
        e.to_string().contains(&q.path().display().to_string()),
        "{e}"
    );
    // Gaps: sequence numbers need not be dense; a gap inside the window can be filled once.
    assert_eq!(p.publish(42, b"42").unwrap(), PublishOutcome::New(40));
    assert_eq!(p.publish(41, b"41").unwrap(), PublishOutcome::New(41));
    assert_eq!(p.publish(41, b"41").unwrap(), PublishOutcome::Duplicate(41));
    assert_eq!(p.next_sequence(), 43);
    assert!(matches!(
        p.publish(u64::MAX, b"x"),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(records(&q).len(), 42);
    let info = &q.producer_ids().unwrap()[0];
    assert_eq!((info.window, info.remembered), (16, 16));
}

#[test]
fn a_held_id_is_busy_in_this_process_and_in_another() {
    let (_dir, q) = setup();
    let mut p = q
        .idempotent_producer("solo", &IdOptions::default())
        .unwrap();
    p.publish(0, b"mine").unwrap();
    match q.idempotent_producer("solo", &IdOptions::default()) {
        Err(Error::ProducerIdBusy { path, id, pid }) => {
            assert_eq!(
                (path.as_path(), id.as_str(), pid),
                (q.path(), "solo", std::process::id())
            );
        }
        other => panic!("expected ProducerIdBusy, got {other:?}"),
    }
    let path = q.path().to_path_buf();
    // SAFETY: the child only opens the queue, tries the id and exits through `in_child`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        common::in_child(|| {
            let q = Queue::open(&path).unwrap();
            match q.idempotent_producer("solo", &IdOptions::default()) {
                Err(Error::ProducerIdBusy { pid, .. }) if pid != std::process::id() => 0,
                other => {
                    eprintln!("child: {other:?}");
                    1
                }
            }
        });
    }
    assert_eq!(common::reap(pid, Duration::from_secs(60)), Some(0));
    // Once the holder is gone, the id is free.
    drop(p);
    let mut p = q
        .idempotent_producer("solo", &IdOptions::default())
        .unwrap();
    assert_eq!(p.publish(0, b"mine").unwrap(), PublishOutcome::Duplicate(0));
}

#[test]
fn a_handle_inherited_across_fork_is_refused() {
    let (_dir, q) = setup();
    let mut p = q
        .idempotent_producer("forked", &IdOptions::default())
        .unwrap();
    p.publish(0, b"parent").unwrap();
    // SAFETY: the child only uses the inherited handle and exits through `in_child`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        common::in_child(|| {
            let refused = matches!(p.publish(1, b"child"), Err(Error::Forked { .. }));
            drop(p);
            i32::from(!refused)
        });
    }
    assert_eq!(common::reap(pid, Duration::from_secs(60)), Some(0));
    // The child's drop left the parent's id alone.
    assert_eq!(p.publish(1, b"parent").unwrap(), PublishOutcome::New(1));
    assert!(matches!(
        q.idempotent_producer("forked", &IdOptions::default()),
        Err(Error::ProducerIdBusy { .. })
    ));
    assert_eq!(records(&q).len(), 2);
}

#[test]
fn removing_an_id_forgets_it() {
    let (_dir, q) = setup();
    assert!(matches!(
        q.remove_producer_id("nobody"),
        Err(Error::UnknownProducerId { .. })
    ));
    assert!(q.producer_ids().unwrap().is_empty());
    let mut p = q.idempotent_producer("gone", &small_window()).unwrap();
    p.publish(0, b"x").unwrap();
    match q.remove_producer_id("gone") {
        Err(Error::ProducerIdBusy { path, .. }) => assert_eq!(path, q.path()),
        other => panic!("expected ProducerIdBusy, got {other:?}"),
    }
    drop(p);
    q.remove_producer_id("gone").unwrap();
    assert!(q.producer_ids().unwrap().is_empty());
    assert!(matches!(
        q.remove_producer_id("gone"),
        Err(Error::UnknownProducerId { .. })
    ));
    let mut p = q.idempotent_producer("gone", &small_window()).unwrap();
    assert_eq!(p.next_sequence(), 0);
    assert_eq!(p.publish(0, b"x").unwrap(), PublishOutcome::New(1));
}

#[test]
fn options_apply_only_when_the_file_is_created_and_are_checked() {
    let (_dir, q) = setup();
    for bad in [
        IdOptions {
            slots: 0,
            window: 16,
        },
        IdOptions {
            slots: 4,
            window: 100,
        },
        IdOptions {
            slots: 4,
            window: 8,
        },
        IdOptions {
            slots: 1024,
            window: 1 << 20,
        },
    ] {
        assert!(matches!(
            q.idempotent_producer("x", &bad),
            Err(Error::InvalidArgument { .. })
        ));
    }
    for bad in ["", "a\nb", &"x".repeat(65)] {
        assert!(matches!(
            q.idempotent_producer(bad, &IdOptions::default()),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(!ids_path(&q).exists());
    let _a = q
        .idempotent_producer(
            "a",
            &IdOptions {
                slots: 2,
                window: 32,
            },
        )
        .unwrap();
    let _b = q.idempotent_producer("b", &IdOptions::default()).unwrap();
    match q.idempotent_producer("c", &IdOptions::default()) {
        Err(Error::TooManyProducerIds { path, slots }) => {
            assert_eq!((path, slots), (ids_path(&q), 2));
        }
        other => panic!("expected TooManyProducerIds, got {other:?}"),
    }
    let info = q.producer_ids().unwrap();
    assert!(info.iter().all(|i| i.window == 32));
}

/// Waits for `f` to give an error that `ok` accepts (the watcher runs about once a second).
fn until_error(what: &str, mut f: impl FnMut() -> Result<(), Error>, ok: impl Fn(&Error) -> bool) {
    let start = Instant::now();
    loop {
        match f() {
            Err(e) if ok(&e) => return,
            Err(e) => panic!("{what}: unexpected error {e:?}"),
            Ok(()) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: no error"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn named(e: &Error, path: &Path) -> bool {
    match e {
        Error::Truncated { path: p } | Error::Detached { path: p, .. } => p == path,
        _ => false,
    }
}

#[test]
fn the_file_truncated_or_removed_under_its_holder_is_an_error() {
    let (_dir, q) = setup();
    let mut p = q.idempotent_producer("t", &small_window()).unwrap();
    p.publish(0, b"x").unwrap();
    let ids = ids_path(&q);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ids)
        .unwrap()
        .set_len(100)
        .unwrap();
    let mut seq = 1;
    until_error(
        "truncated",
        || {
            seq += 1;
            p.publish(seq, b"y").map(drop)
        },
        |e| matches!(e, Error::Truncated { .. }) && named(e, &ids),
    );
    drop(p);
    // A truncated file is refused by the next opener.
    match q.idempotent_producer("t", &small_window()) {
        Err(Error::Corrupt {
            path,
            kind: Corruption::Ids(shmq::IdsFault::Size { len: 100, .. }),
        }) => assert_eq!(path, ids),
        other => panic!("expected a Size fault, got {other:?}"),
    }
    std::fs::remove_file(&ids).unwrap();

    // A new file, removed under its holder.
    let mut p = q.idempotent_producer("t", &small_window()).unwrap();
    p.publish(0, b"x").unwrap();
    std::fs::remove_file(&ids).unwrap();
    until_error(
        "removed",
        || {
            seq += 1;
            p.publish(seq, b"y").map(drop)
        },
        |e| matches!(e, Error::Detached { .. }) && named(e, &ids),
    );
}

/// Writes the 8-byte little-endian `v` at byte `at` of the file at `path`.
fn poke(path: &Path, at: u64, v: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), at).unwrap();
}

#[test]
fn recovery_after_a_machine_restart_forgets_records_past_the_tail() {
    // FORMAT.md, "Producer-id file": the boot id at 128, slot 0 at 4096 (in-flight words at
    // +264 and +272, entries of 16 bytes from +384).
    const SLOT: u64 = 4096;
    let (_dir, q) = setup();
    let mut p = q.idempotent_producer("r", &small_window()).unwrap();
    for seq in 0..5u64 {
        p.publish(seq, b"x").unwrap();
    }
    drop(p);
    let ids = ids_path(&q);
    let tail = q.tail_offset();
    // As if the machine had crashed: another boot, the record of seq 4 lost with the tail
    // that recovery cut (its entry names an offset at the tail), and a claim in flight past it.
    poke(&ids, 128, 0);
    poke(&ids, 136, 0);
    poke(&ids, SLOT + 384 + 16 * 4 + 8, tail);
    poke(&ids, SLOT + 272, tail + 1);
    poke(&ids, SLOT + 264, 6);
    let q = Queue::open(q.path()).unwrap();
    let mut p = q.idempotent_producer("r", &small_window()).unwrap();
    assert_eq!(p.next_sequence(), 5);
    assert_eq!(p.publish(3, b"x").unwrap(), PublishOutcome::Duplicate(3));
    assert_eq!(p.publish(4, b"x").unwrap(), PublishOutcome::New(tail));
    assert_eq!(p.publish(5, b"x").unwrap(), PublishOutcome::New(tail + 1));
    let info = &q.producer_ids().unwrap()[0];
    assert_eq!((info.next_sequence, info.unknown), (6, 0));
}
