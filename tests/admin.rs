//! Operators' view and controls: group lag and fill, live producers, resetting a group's
//! committed offset (to an offset, a time, the earliest or the latest record), seeking by time.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::format;
use shmq::{Consumer, Error, FullPolicy, Options, Queue, SeekTo, Subscribe};

const SHORT: Option<Duration> = Some(Duration::from_millis(50));

fn new_queue(opts: &Options) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::create(dir.path().join("q"), opts).unwrap();
    (dir, q)
}

fn small() -> Options {
    Options {
        capacity: 4096,
        max_message: 256,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Reads everything up to the tail, committing as it goes; returns the offsets seen.
fn drain(q: &Queue, group: &str) -> Vec<u64> {
    let mut c = q.consumer(group).unwrap();
    let mut seen = Vec::new();
    while let Some(m) = c.poll(Some(Duration::ZERO)).unwrap() {
        seen.push(m.offset);
        let o = m.offset;
        c.commit(o).unwrap();
    }
    seen
}

#[test]
fn group_info_reports_lag_in_records_and_bytes() {
    let (_d, q) = new_queue(&Options::default());
    drop(q.consumer("a").unwrap());
    let mut p = q.producer().unwrap();
    for _ in 0..10 {
        p.publish(&[7u8; 24]).unwrap(); // 32-byte header + 24 bytes: 56 bytes a record
    }
    let mut c = q.consumer("a").unwrap();
    for _ in 0..4 {
        let o = c.poll(SHORT).unwrap().unwrap().offset;
        c.commit(o).unwrap();
    }
    let g = &q.groups()[0];
    assert_eq!((g.committed, g.lag, g.lag_bytes), (4, 6, 6 * 56));
    assert_eq!(g.holder, Some(std::process::id()));
    assert!(g.holder_alive);
    assert_eq!(
        q.protected_bytes(),
        6 * 56,
        "the gating group holds back what it has not committed"
    );
    assert_eq!(q.live_producers(), 1);
    drop(p);
    assert_eq!(q.live_producers(), 0);
}

#[test]
fn fill_is_zero_without_gating_groups() {
    let (_d, q) = new_queue(&Options::default());
    let mut p = q.producer().unwrap();
    p.publish(b"x").unwrap();
    assert_eq!(q.protected_bytes(), 0);
    assert_eq!(q.oldest_offset(), 0);
}

#[test]
fn reset_moves_the_committed_offset_both_ways() {
    let (_d, q) = new_queue(&Options::default());
    drop(q.consumer("g").unwrap());
    let mut p = q.producer().unwrap();
    for i in 0..20u8 {
        p.publish(&[i]).unwrap();
    }
    assert_eq!(drain(&q, "g").len(), 20);

    assert_eq!(q.reset_group("g", SeekTo::Offset(5)).unwrap(), 5);
    assert_eq!(q.groups()[0].committed, 5);
    assert_eq!(
        drain(&q, "g"),
        (5..20).collect::<Vec<_>>(),
        "replayed from 5"
    );

    assert_eq!(q.reset_group("g", SeekTo::Earliest).unwrap(), 0);
    assert_eq!(drain(&q, "g").len(), 20, "replayed from the start");

    q.reset_group("g", SeekTo::Offset(3)).unwrap();
    assert_eq!(q.reset_group("g", SeekTo::Latest).unwrap(), 20);
    assert_eq!(drain(&q, "g"), Vec::<u64>::new(), "backlog skipped");
    p.publish(b"new").unwrap();
    assert_eq!(drain(&q, "g"), vec![20]);
}

#[test]
fn reset_refuses_a_held_group_an_unknown_one_and_offsets_outside_the_ring() {
    let (_d, q) = new_queue(&Options::default());
    let c = q.consumer("g").unwrap();
    match q.reset_group("g", SeekTo::Earliest) {
        Err(Error::GroupBusy { group, pid }) => {
            assert_eq!((group.as_str(), pid), ("g", std::process::id()));
        }
        other => panic!("expected GroupBusy, got {other:?}"),
    }
    drop(c);
    assert!(matches!(
        q.reset_group("nope", SeekTo::Earliest),
        Err(Error::UnknownGroup(g)) if g == "nope"
    ));
    match q.reset_group("g", SeekTo::Offset(1)) {
        Err(Error::OffsetOutOfRange {
            requested: 1,
            earliest: 0,
            latest: 0,
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    // The failed resets left the group as it was, and free to join.
    assert_eq!(q.groups()[0].committed, 0);
    q.consumer("g").unwrap();
}

#[test]
fn reset_and_seek_by_time() {
    let (_d, q) = new_queue(&Options::default());
    drop(q.consumer("g").unwrap());
    let mut p = q.producer().unwrap();
    for i in 0..10u8 {
        p.publish(&[i]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    let between = now_ns();
    std::thread::sleep(Duration::from_millis(5));
    for i in 10..20u8 {
        p.publish(&[i]).unwrap();
    }
    assert_eq!(q.reset_group("g", SeekTo::Time(between)).unwrap(), 10);
    assert_eq!(q.reset_group("g", SeekTo::Time(0)).unwrap(), 0);
    assert_eq!(q.reset_group("g", SeekTo::Time(u64::MAX)).unwrap(), 20);

    let mut c = q.consumer("g").unwrap();
    c.seek(SeekTo::Time(between)).unwrap();
    let m = c.poll(SHORT).unwrap().unwrap();
    assert_eq!((m.offset, m.payload), (10, &[10u8][..]));
    assert!(m.timestamp_ns >= between);
}

#[test]
fn time_search_over_a_lapped_ring_starts_at_the_oldest_retained_record() {
    let (_d, q) = new_queue(&Options {
        full_policy: FullPolicy::Overwrite,
        ..small()
    });
    let mut p = q.producer().unwrap();
    for i in 0..1000u32 {
        p.publish(&i.to_le_bytes()).unwrap();
    }
    let mut c = q.consumer("late").unwrap();
    c.seek(SeekTo::Time(0)).unwrap();
    assert_eq!(c.position(), q.oldest_offset());
    assert!(q.oldest_offset() > 0, "the ring has lapped");
}

/// Payload of record `o` in the tests under a lapping producer: 256 bytes that differ from one
/// record to the next, so a record torn by a later one never passes for itself.
fn lapping_record(o: u64) -> Vec<u8> {
    (0..256u64).map(|k| (o * 31 + k) as u8).collect()
}

/// A queue whose ring holds about 28 records of [`lapping_record`].
fn lapping_queue() -> (tempfile::TempDir, Queue) {
    new_queue(&Options {
        capacity: 8192,
        max_message: 512,
        ..Options::default()
    })
}

/// Runs `read` while a thread publishes [`lapping_record`]s to `q` as fast as it can, lapping
/// the ring whenever no gating group holds it back. Returns how many it published.
fn with_lapping_producer(q: &Queue, read: impl FnOnce()) -> u64 {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Stops the producer however the reading side ends, a failed assertion included.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            let mut p = q.producer().unwrap();
            p.set_timeout(Some(Duration::from_millis(20)));
            let mut next = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match p.publish(&lapping_record(next)) {
                    Ok(o) => {
                        assert_eq!(o, next);
                        next += 1;
                    }
                    Err(Error::Timeout { .. }) => {}
                    Err(e) => panic!("publish: {e}"),
                }
            }
            next
        });
        let stopper = StopOnDrop(&stop);
        read();
        drop(stopper);
        producer.join().unwrap()
    })
}

/// Polls `c` 64 times, checking every record against [`lapping_record`] and committing it.
/// Returns the records checked and the `Lagged` errors seen.
fn check_lapping_records(c: &mut Consumer) -> (u64, u64) {
    let (mut checked, mut lagged) = (0, 0);
    for _ in 0..64 {
        match c.poll(SHORT) {
            Ok(Some(m)) => {
                assert_eq!(
                    m.payload,
                    &lapping_record(m.offset)[..],
                    "record {}",
                    m.offset
                );
                checked += 1;
                let o = m.offset;
                c.commit(o).unwrap();
            }
            Ok(None) => {}
            Err(Error::Lagged { .. }) => lagged += 1,
            Err(e) => panic!("poll: {e}"),
        }
    }
    (checked, lagged)
}

/// A gating group reset backwards must not read records in place that a producer with a
/// claim limit from before the reset may be overwriting: every record it is given must be
/// whole (or reported lost with `Lagged`), never torn.
#[test]
fn a_group_reset_backwards_never_reads_a_torn_record() {
    let (_d, q) = lapping_queue();
    drop(q.consumer("g").unwrap());
    let (mut checked, mut lagged) = (0u64, 0u64);
    let published = with_lapping_producer(&q, || {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            let mut c = q.consumer("g").unwrap();
            let (c_checked, c_lagged) = check_lapping_records(&mut c);
            (checked, lagged) = (checked + c_checked, lagged + c_lagged);
            drop(c);
            q.reset_group("g", SeekTo::Earliest).unwrap();
        }
    });
    assert!(
        published > 1000,
        "the producer kept lapping the ring: {published}"
    );
    assert!(
        checked > 1000,
        "records read after resets: {checked} ({lagged} lags)"
    );
}

/// A gating group created through one handle that leaves at once (as `shmq group create`
/// does) and then joined through another handle: producers whose claim limit predates the
/// creation may still overwrite the group's first records, so the joining member must
/// validate them as their creator would have. Every record it is given must be whole (or
/// reported lost with `Lagged`), never torn.
#[test]
fn a_group_created_then_left_then_joined_never_reads_a_torn_record() {
    let (dir, q) = lapping_queue();
    let other = Queue::open(dir.path().join("q")).unwrap();
    let (mut checked, mut lagged, mut groups) = (0u64, 0u64, 0u64);
    let published = with_lapping_producer(&q, || {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            drop(q.subscribe("g", &Subscribe::default()).unwrap());
            let mut c = other.consumer("g").unwrap();
            let (c_checked, c_lagged) = check_lapping_records(&mut c);
            (checked, lagged) = (checked + c_checked, lagged + c_lagged);
            drop(c);
            // Gone again, the group stops holding the producer back, so it laps the ring
            // with a claim limit from before the next creation.
            other.delete_group("g").unwrap();
            groups += 1;
        }
    });
    assert!(
        published > 1000,
        "the producer kept lapping the ring: {published}"
    );
    assert!(
        checked > 1000,
        "records read from {groups} new groups: {checked} ({lagged} lags)"
    );
}

/// Clears group slot 0's lease in the file, as if its holder had been judged dead (a pid
/// namespace boundary, a hidden /proc, a hostile write).
fn forget_holder(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let lease = format::HEADER_SIZE + format::GROUP_LEASE; // group slot 0
    file.write_all_at(&[0u8; 16], lease).unwrap();
}

#[test]
fn a_second_holder_fences_the_first_instead_of_moving_its_offset_back() {
    let (dir, q) = new_queue(&Options::default());
    let mut p = q.producer().unwrap();
    let mut a = q.consumer("g").unwrap();
    for i in 0..10u8 {
        p.publish(&[i]).unwrap();
    }
    for _ in 0..6 {
        a.poll(SHORT).unwrap().unwrap();
    }
    forget_holder(&dir.path().join("q"));
    let mut b = q.consumer("g").expect("the lease looks free");
    for _ in 0..3 {
        b.poll(SHORT).unwrap().unwrap();
    }
    b.commit(2).unwrap(); // b commits first: it now owns the cursor
    match a.commit(5) {
        Err(Error::TakenOver { group, found: 3 }) => assert_eq!(group, "g"),
        other => panic!("expected TakenOver, got {other:?}"),
    }
    assert_eq!(
        q.groups()[0].committed,
        3,
        "the fenced commit changed nothing"
    );
    b.commit(1).unwrap(); // at or below the committed offset: a no-op, not a fence
    for _ in 3..10 {
        b.poll(SHORT).unwrap().unwrap();
    }
    b.commit(9).unwrap();
    assert_eq!(q.groups()[0].committed, 10);
}

#[test]
fn a_reset_fences_a_member_that_was_judged_dead() {
    let (dir, q) = new_queue(&Options::default());
    let mut p = q.producer().unwrap();
    let mut a = q.consumer("g").unwrap();
    for i in 0..4u8 {
        p.publish(&[i]).unwrap();
    }
    let o = a.poll(SHORT).unwrap().unwrap().offset;
    a.commit(o).unwrap();
    a.poll(SHORT).unwrap().unwrap();
    forget_holder(&dir.path().join("q"));
    assert_eq!(q.reset_group("g", SeekTo::Latest).unwrap(), 4);
    assert!(matches!(
        a.commit(1),
        Err(Error::TakenOver { found: 4, .. })
    ));
    assert_eq!(q.groups()[0].committed, 4, "the operator's reset stands");
}

fn with_session(t: Duration) -> Subscribe {
    Subscribe {
        session_timeout: Some(t),
        ..Subscribe::default()
    }
}

#[test]
fn a_member_that_stops_polling_past_its_session_loses_the_group_and_is_fenced() {
    let (dir, q) = new_queue(&small());
    let mut p = q.producer().unwrap();
    for i in 0..4u8 {
        p.publish(&[i]).unwrap();
    }
    // Long enough that a loaded machine's scheduling delays alone do not expire it.
    let session = Duration::from_secs(1);
    let mut hung = q.subscribe("g", &with_session(session)).unwrap();
    assert_eq!(hung.poll(SHORT).unwrap().unwrap().offset, 0);
    hung.commit(0).unwrap();
    assert_eq!(hung.poll(SHORT).unwrap().unwrap().offset, 1);
    // Another process (another handle of the file) cannot take a member inside its session.
    let other = Queue::open(dir.path().join("q")).unwrap();
    assert!(matches!(other.consumer("g"), Err(Error::GroupBusy { .. })));
    // `hung` now stops polling for longer than its session: it is counted out.
    std::thread::sleep(session * 5 / 2);
    let mut taker = other.consumer("g").unwrap();
    assert_eq!(
        taker.poll(SHORT).unwrap().unwrap().offset,
        1,
        "resumes at the commit"
    );
    // The counted-out member learns it at its next commit or poll, and changes nothing.
    assert!(matches!(hung.commit(1), Err(Error::TakenOver { .. })));
    assert!(matches!(hung.poll(SHORT), Err(Error::TakenOver { .. })));
    taker.commit(1).unwrap();
    assert_eq!(q.groups()[0].committed, 2);
}

#[test]
fn a_member_waiting_in_a_long_poll_keeps_its_session_alive() {
    let (dir, q) = new_queue(&small());
    // Long enough that a loaded machine's scheduling delays do not expire it by themselves.
    let session = Duration::from_secs(1);
    let mut idle = q.subscribe("g", &with_session(session)).unwrap();
    let path = dir.path().join("q");
    let prober = std::thread::spawn(move || {
        let other = Queue::open(path).unwrap();
        // Three sessions' worth of tries while the member waits for data in one poll.
        let until = std::time::Instant::now() + session * 3;
        let mut tries = 0;
        while std::time::Instant::now() < until {
            match other.consumer("g") {
                Err(Error::GroupBusy { .. }) => tries += 1,
                Ok(_) => panic!("took the group from a member waiting in poll"),
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tries
    });
    // Nothing is published: the poll waits its whole timeout, heartbeating as it sleeps.
    assert!(idle.poll(Some(session * 4)).unwrap().is_none());
    assert!(prober.join().unwrap() > 10);
}

#[test]
fn a_session_timeout_below_the_minimum_is_refused() {
    let (_dir, q) = new_queue(&small());
    let e = q
        .subscribe("g", &with_session(Duration::from_millis(1)))
        .expect_err("refused");
    assert!(e.to_string().contains("session timeout"), "{e}");
}
