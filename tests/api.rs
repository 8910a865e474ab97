//! Single-process behaviour of the public API.

use std::time::Duration;

use shmq::{Error, FullPolicy, Options, Queue, SeekTo, Start, Subscribe, Timestamps};

const SHORT: Option<Duration> = Some(Duration::from_millis(50));

fn small(policy: FullPolicy) -> Options {
    Options {
        capacity: 4096,
        max_message: 256,
        full_policy: policy,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    }
}

fn new_queue(opts: &Options) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::create(dir.path().join("q"), opts).unwrap();
    (dir, q)
}

#[test]
fn publish_then_poll_in_order_with_dense_offsets() {
    let (_d, q) = new_queue(&Options::default());
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..100u32 {
        assert_eq!(p.publish(&i.to_le_bytes()).unwrap(), i as u64);
    }
    for i in 0..100u32 {
        let m = c.poll(SHORT).unwrap().unwrap();
        assert_eq!(m.offset, i as u64);
        assert_eq!(m.payload, i.to_le_bytes());
        assert!(m.timestamp_ns > 0);
    }
    assert!(c.poll(Some(Duration::ZERO)).unwrap().is_none());
}

/// Nanoseconds since the Unix epoch, as `SystemTime` says.
fn wall_ns() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_nanos() as u64
}

/// The timestamps of `n` records published at once by a producer on `timestamps`, with the
/// wall clock read before and after.
fn stamps(timestamps: Timestamps, n: u32) -> (u64, Vec<u64>, u64) {
    let (_d, q) = new_queue(&Options::default());
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    p.set_timestamps(timestamps);
    let before = wall_ns();
    for i in 0..n {
        p.publish(&i.to_le_bytes()).unwrap();
    }
    let after = wall_ns();
    let stamps = (0..n)
        .map(|_| c.poll(SHORT).unwrap().unwrap().timestamp_ns)
        .collect();
    (before, stamps, after)
}

#[test]
fn precise_timestamps_are_within_the_publish_and_distinct() {
    let (before, stamps, after) = stamps(Timestamps::Precise, 1000);
    assert!(stamps.iter().all(|&t| (before..=after).contains(&t)));
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "in publish order");
    let mut distinct = stamps.clone();
    distinct.dedup();
    assert!(distinct.len() > 500, "{} distinct of 1000", distinct.len());
}

/// Past the precise clock's calibration and a few of its re-anchors (where it extrapolates
/// from the time-stamp counter), every record's timestamp stays within 50 µs of the wall
/// clock read around its publish, and they never decrease.
#[test]
fn precise_timestamps_stay_on_the_wall_clock_past_calibration() {
    let (_d, q) = new_queue(&Options::default());
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let start = std::time::Instant::now();
    let (mut last, mut n) = (0, 0u64);
    while start.elapsed() < Duration::from_millis(350) {
        let before = wall_ns();
        p.publish(b"x").unwrap();
        let after = wall_ns();
        let (offset, t) = c
            .poll(SHORT)
            .unwrap()
            .map(|m| (m.offset, m.timestamp_ns))
            .unwrap();
        assert!(
            before - 50_000 <= t && t <= after + 50_000,
            "record {offset}: {t} not within 50 us of [{before}, {after}]"
        );
        assert!(t >= last, "record {offset}: {t} before {last}");
        c.commit(offset).unwrap();
        (last, n) = (t, n + 1);
    }
    assert!(n > 1000, "only {n} records");
}

#[test]
fn coarse_timestamps_are_at_most_a_tick_early_and_shared_within_a_tick() {
    // 1000 publishes take well under a millisecond, below one tick (CONFIG_HZ <= 1000).
    let (before, stamps, after) = stamps(Timestamps::Coarse, 1000);
    let tick = 10_000_000; // the longest tick: CONFIG_HZ = 100
    assert!(
        stamps.iter().all(|&t| before - tick <= t && t <= after),
        "between {before} - 10 ms and {after}: {:?}",
        (stamps.first(), stamps.last())
    );
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "in publish order");
    let mut distinct = stamps.clone();
    distinct.dedup();
    // One tick or a few, if the publishes were preempted: never one per record.
    assert!(distinct.len() < 100, "{} distinct of 1000", distinct.len());
}

#[test]
fn wraps_many_laps_with_variable_sizes() {
    let (_d, q) = new_queue(&small(FullPolicy::Block));
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..5000u64 {
        let len = (i * 37 % 200) as usize;
        let payload: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
        assert_eq!(p.publish(&payload).unwrap(), i);
        let m = c.poll(SHORT).unwrap().unwrap();
        assert_eq!((m.offset, m.payload), (i, &payload[..]));
        c.commit(i).unwrap();
    }
}

#[test]
fn every_group_sees_every_record() {
    let (_d, q) = new_queue(&Options::default());
    let mut a = q.consumer("a").unwrap();
    let mut b = q.consumer("b").unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..10u8 {
        p.publish(&[i]).unwrap();
    }
    for c in [&mut a, &mut b] {
        for i in 0..10u8 {
            assert_eq!(c.poll(SHORT).unwrap().unwrap().payload, [i]);
        }
    }
}

#[test]
fn committed_offset_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    {
        let q = Queue::create(&path, &Options::default()).unwrap();
        let mut p = q.producer().unwrap();
        let mut c = q.consumer("g").unwrap();
        for i in 0..10u8 {
            p.publish(&[i]).unwrap();
        }
        for _ in 0..4 {
            let m = c.poll(SHORT).unwrap().unwrap().offset;
            c.commit(m).unwrap();
        }
        // Read one more without committing: it must be redelivered (at-least-once).
        c.poll(SHORT).unwrap().unwrap();
    }
    let q = Queue::open(&path).unwrap();
    let mut c = q.consumer("g").unwrap();
    assert_eq!(c.committed(), 4);
    assert_eq!(c.poll(SHORT).unwrap().unwrap().payload, [4]);
}

#[test]
fn one_member_per_group() {
    let (_d, q) = new_queue(&Options::default());
    let c = q.consumer("g").unwrap();
    assert!(matches!(q.consumer("g"), Err(Error::GroupBusy { .. })));
    drop(c);
    q.consumer("g").unwrap();
}

#[test]
fn zero_copy_claim_and_abandon() {
    let (_d, q) = new_queue(&Options::default());
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let mut claim = p.claim(5).unwrap();
    claim.as_mut_slice().copy_from_slice(b"hello");
    assert_eq!(claim.commit().unwrap(), 0);
    drop(p.claim(3).unwrap()); // abandoned: offset 1 is skipped at once
    p.publish(b"after").unwrap();
    let first = c.poll(SHORT).unwrap().unwrap();
    assert_eq!((first.payload, first.aborted_before), (&b"hello"[..], 0));
    let m = c.poll(SHORT).unwrap().unwrap();
    assert_eq!((m.offset, m.payload), (2, &b"after"[..]));
    assert_eq!(
        m.aborted_before, 1,
        "the hole at offset 1 is reported as aborted"
    );
    // Three abandoned claims in a row, then a record: one message explains the whole hole.
    for _ in 0..3 {
        drop(p.claim(1).unwrap());
    }
    p.publish(b"later").unwrap();
    let m = c.poll(SHORT).unwrap().unwrap();
    assert_eq!((m.offset, m.aborted_before), (6, 3));
}

#[test]
fn too_big_is_refused() {
    let (_d, q) = new_queue(&small(FullPolicy::Block));
    let mut p = q.producer().unwrap();
    assert!(matches!(
        p.publish(&[0; 257]),
        Err(Error::TooBig { len: 257, max: 256 })
    ));
}

#[test]
fn seek_and_commit_rules() {
    let (_d, q) = new_queue(&Options::default());
    let mut p = q.producer().unwrap();
    for i in 0..10u8 {
        p.publish(&[i]).unwrap();
    }
    let mut c = q.consumer("g").unwrap();
    assert!(matches!(
        c.commit(0),
        Err(Error::InvalidArgument {
            argument: "offset",
            ..
        })
    ));
    c.seek(SeekTo::Offset(7)).unwrap();
    assert_eq!(c.poll(SHORT).unwrap().unwrap().payload, [7]);
    c.commit(7).unwrap();
    c.seek(SeekTo::Earliest).unwrap();
    assert_eq!(c.poll(SHORT).unwrap().unwrap().offset, 0);
    c.seek(SeekTo::Latest).unwrap();
    assert!(c.poll(Some(Duration::ZERO)).unwrap().is_none());
    c.seek(SeekTo::Committed).unwrap();
    assert_eq!(c.poll(SHORT).unwrap().unwrap().offset, 8);
    assert!(matches!(
        c.seek(SeekTo::Offset(11)),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn latest_start_skips_history() {
    let (_d, q) = new_queue(&Options::default());
    let mut p = q.producer().unwrap();
    p.publish(b"old").unwrap();
    let sub = Subscribe {
        gating: true,
        start: Start::Latest,
        ..Subscribe::default()
    };
    let mut c = q.subscribe("late", &sub).unwrap();
    p.publish(b"new").unwrap();
    assert_eq!(c.poll(SHORT).unwrap().unwrap().payload, b"new");
}

/// Minor page faults the calling thread has taken so far.
fn thread_minor_faults() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a writable rusage that outlives the call, which writes only it.
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    assert_eq!(r, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: getrusage succeeded, so it filled the struct (zeroed before, valid either way).
    unsafe { usage.assume_init() }.ru_minflt
}

/// The minor faults of one lap of 64-byte records through `q`, published and polled by this
/// thread, with `Queue::prefault` called first or not.
fn faults_of_a_lap(q: &Queue, prefault: bool) -> i64 {
    if prefault {
        q.prefault().unwrap();
    }
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let records = (1 << 20) / 96;
    let before = thread_minor_faults();
    for i in 0..records {
        p.publish(&[i as u8; 64]).unwrap();
        let m = c.poll(SHORT).unwrap().expect("the record just published");
        assert_eq!((m.offset, m.payload[0]), (i, i as u8));
        let offset = m.offset;
        c.commit(offset).unwrap();
    }
    thread_minor_faults() - before
}

/// A fresh mapping takes a page fault on the first touch of every ring and index page: about
/// 300 for a lap of a 1 MiB ring. After `Queue::prefault`, none of them.
#[test]
fn prefault_spares_the_first_lap_its_page_faults() {
    let opts = Options {
        capacity: 1 << 20,
        max_message: 256,
        ..Options::default()
    };
    let (_d, plain) = new_queue(&opts);
    let (_e, prefaulted) = new_queue(&opts);
    let without = faults_of_a_lap(&plain, false);
    let with = faults_of_a_lap(&prefaulted, true);
    println!("first-lap minor faults: {without} without prefault, {with} with it");
    assert!(without >= 200, "a fresh lap took only {without} faults");
    assert!(
        with <= 16,
        "a prefaulted lap took {with} faults (without: {without})"
    );
}
