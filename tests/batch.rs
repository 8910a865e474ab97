//! Batches: `Producer::publish_batch` (one claim for a run of records) and
//! `Consumer::poll_batch`. Dense offsets and order, batches mixed with single publishes from
//! other threads and processes, runs across the ring's end, the full policies, durability, and
//! a producer killed mid-batch at named crash points (the rest of the queue stays readable
//! after the claim timeout).
//!
//! Children are this test binary re-run in a role (`harness = false`, see `common`).

mod common;

use std::time::{Duration, Instant};

use shmq::{Durability, Error, FullPolicy, Options, Queue, Subscribe};

const MAX: usize = 200;
const CLAIM_TIMEOUT: Duration = Duration::from_millis(200);
/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
const SOON: Option<Duration> = Some(Duration::from_secs(10));

fn main() {
    match common::role().as_deref() {
        Some("batcher") => batcher(),
        Some("killed_batcher") => killed_batcher(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            ("dense_offsets_in_order", dense_offsets_in_order),
            ("runs_across_the_ring_end", runs_across_the_ring_end),
            ("poll_batch_limits", poll_batch_limits),
            ("mixed_with_single_publishes_from_threads", mixed_threads),
            (
                "mixed_with_single_publishes_from_processes",
                mixed_processes,
            ),
            ("reject_policy_and_sizes", reject_policy_and_sizes),
            ("block_policy_waits_for_the_whole_run", block_policy),
            ("sync_durability_one_flush", sync_durability_one_flush),
            ("killed_mid_batch", killed_mid_batch),
            ("lappable_reader_reads_batches", lappable_reader),
        ]),
    }
}

fn options(capacity: u64, policy: FullPolicy) -> Options {
    Options {
        capacity,
        max_message: MAX as u32,
        full_policy: policy,
        claim_timeout: CLAIM_TIMEOUT,
        ..Options::default()
    }
}

fn new_queue(opts: &Options) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::create(common::queue_path(&dir), opts).unwrap();
    (dir, q)
}

/// Publishes `payloads` as one batch.
fn publish(p: &mut shmq::Producer, payloads: &[Vec<u8>]) -> shmq::Result<u64> {
    let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    p.publish_batch(&slices)
}

/// Reads `n` records with `poll_batch` (batches of up to `max`): `(offset, payload,
/// aborted_before)` each.
fn read(c: &mut shmq::Consumer, n: usize, max: usize) -> Vec<(u64, Vec<u8>, u64)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records",
            got.len()
        );
        let handed = c
            .poll_batch(max.min(n - got.len()), SOON, |m| {
                got.push((m.offset, m.payload.to_vec(), m.aborted_before))
            })
            .unwrap();
        assert!(handed <= max, "{handed} records for a max of {max}");
    }
    got
}

fn dense_offsets_in_order() {
    let (_d, q) = new_queue(&options(1 << 16, FullPolicy::Block));
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let mut expected = Vec::new();
    let mut next = 0;
    for round in 0..50u32 {
        let n = 1 + (round as usize * 7) % 20;
        let batch: Vec<Vec<u8>> = (0..n as u32)
            .map(|i| common::payload(0, round * 100 + i, MAX))
            .collect();
        assert_eq!(publish(&mut p, &batch).unwrap(), next, "round {round}");
        next += n as u64;
        expected.extend(batch);
        // A single publish between batches takes the next offset.
        let single = common::payload(1, round, MAX);
        assert_eq!(p.publish(&single).unwrap(), next);
        next += 1;
        expected.push(single);
        let got = read(&mut c, n + 1, 16);
        let base = next - got.len() as u64;
        for (k, (offset, payload, aborted)) in got.into_iter().enumerate() {
            assert_eq!(offset, base + k as u64);
            assert_eq!(payload, expected[offset as usize]);
            assert_eq!(aborted, 0);
        }
        c.commit(next - 1).unwrap();
    }
    assert_eq!(
        c.poll_batch(8, Some(Duration::ZERO), |_| panic!("no record"))
            .unwrap(),
        0
    );
}

/// A 4 KiB ring and batches of records of many sizes: runs cross the ring's end on almost
/// every lap, and records that do not fit before it start at the next lap.
fn runs_across_the_ring_end() {
    let (_d, q) = new_queue(&options(4096, FullPolicy::Block));
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let mut offset = 0u64;
    for round in 0..2000u64 {
        let n = 1 + (round % 9) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let len = ((round * 31 + i as u64 * 57) % MAX as u64) as usize;
                (0..len).map(|k| (round as usize + i + k) as u8).collect()
            })
            .collect();
        assert_eq!(publish(&mut p, &batch).unwrap(), offset);
        let got = read(&mut c, n, 64);
        for (i, (o, payload, _)) in got.into_iter().enumerate() {
            assert_eq!(
                (o, &payload),
                (offset + i as u64, &batch[i]),
                "round {round}"
            );
        }
        offset += n as u64;
        c.commit(offset - 1).unwrap();
    }
}

fn poll_batch_limits() {
    let (_d, q) = new_queue(&options(1 << 16, FullPolicy::Block));
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let start = Instant::now();
    let none = c
        .poll_batch(4, Some(Duration::from_millis(100)), |_| panic!("no record"))
        .unwrap();
    assert_eq!(none, 0);
    assert!(start.elapsed() >= Duration::from_millis(100));
    let batch: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 8]).collect();
    publish(&mut p, &batch).unwrap();
    assert_eq!(c.poll_batch(0, SOON, |_| panic!("max 0")).unwrap(), 0);
    let mut seen = Vec::new();
    assert_eq!(c.poll_batch(4, SOON, |m| seen.push(m.offset)).unwrap(), 4);
    assert_eq!(c.poll_batch(100, SOON, |m| seen.push(m.offset)).unwrap(), 6);
    assert_eq!(seen, (0..10).collect::<Vec<u64>>());
}

/// Checks what one consumer read from producers that each publish `common::payload(id, seq)`
/// with growing `seq`: every producer's records arrive in order without gaps, and each batch
/// of producer `batcher` (`batch` records whose first `seq` is a multiple of `batch`) has dense
/// offsets.
fn check_mixed(got: &[(u64, Vec<u8>, u64)], producers: u32, batcher: u32, batch: u32) {
    let mut next_seq = vec![0u32; producers as usize];
    let mut batch_first = 0u64;
    for (k, (offset, payload, aborted)) in got.iter().enumerate() {
        assert_eq!((*offset, *aborted), (k as u64, 0));
        let (id, seq) = common::check(payload).unwrap();
        assert_eq!(seq, next_seq[id as usize], "producer {id} out of order");
        next_seq[id as usize] += 1;
        if id == batcher {
            if seq % batch == 0 {
                batch_first = *offset;
            }
            assert_eq!(
                *offset,
                batch_first + (seq % batch) as u64,
                "a batch's offsets are not dense"
            );
        }
    }
}

fn mixed_threads() {
    const BATCHES: u32 = 400;
    const BATCH: u32 = 8;
    const SINGLES: u32 = 2000;
    let (_d, q) = new_queue(&options(1 << 14, FullPolicy::Block));
    let mut c = q.consumer("g").unwrap();
    let total = (BATCHES * BATCH + SINGLES) as usize;
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            let mut p = q.producer().unwrap();
            for b in 0..BATCHES {
                let batch: Vec<Vec<u8>> = (0..BATCH)
                    .map(|i| common::payload(0, b * BATCH + i, MAX))
                    .collect();
                publish(&mut p, &batch).unwrap();
            }
        });
        s.spawn(|| {
            let mut p = q.producer().unwrap();
            for seq in 0..SINGLES {
                p.publish(&common::payload(1, seq, MAX)).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < total {
            let before = got.len();
            got.extend(read(&mut c, (total - before).min(32), 32));
            c.commit(got.len() as u64 - 1).unwrap();
        }
        got
    });
    check_mixed(&got, 2, 0, BATCH);
}

/// A child publishing batches of `SHMQ_BATCH` records `SHMQ_BATCHES` times as producer 0.
fn batcher() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut p = q.producer().unwrap();
    let (batches, batch): (u32, u32) = (common::arg("SHMQ_BATCHES"), common::arg("SHMQ_BATCH"));
    for b in 0..batches {
        let payloads: Vec<Vec<u8>> = (0..batch)
            .map(|i| common::payload(0, b * batch + i, MAX))
            .collect();
        publish(&mut p, &payloads).unwrap();
    }
}

fn mixed_processes() {
    const BATCHES: u32 = 300;
    const BATCH: u32 = 16;
    const SINGLES: u32 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(1 << 14, FullPolicy::Block)).unwrap();
    let mut c = q.consumer("g").unwrap();
    let child = common::spawn(
        "batcher",
        &[
            ("SHMQ_PATH", path.display().to_string()),
            ("SHMQ_BATCHES", BATCHES.to_string()),
            ("SHMQ_BATCH", BATCH.to_string()),
        ],
    );
    let total = (BATCHES * BATCH + SINGLES) as usize;
    let got = std::thread::scope(|s| {
        s.spawn(|| {
            let mut p = q.producer().unwrap();
            for seq in 0..SINGLES {
                p.publish(&common::payload(1, seq, MAX)).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < total {
            let before = got.len();
            got.extend(read(&mut c, (total - before).min(64), 64));
            c.commit(got.len() as u64 - 1).unwrap();
        }
        got
    });
    let (_, status) = common::wait(child, Duration::from_secs(60), "batcher");
    assert!(status.success(), "batcher failed: {status}");
    check_mixed(&got, 2, 0, BATCH);
}

fn reject_policy_and_sizes() {
    let (_d, q) = new_queue(&options(4096, FullPolicy::Reject));
    let _c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    assert!(matches!(
        p.publish_batch(&[]),
        Err(Error::InvalidArgument { .. })
    ));
    // 40 records of 96 bytes (128 with their headers) are more than the 4 KiB ring.
    let big = vec![vec![7u8; 96]; 40];
    match publish(&mut p, &big) {
        Err(Error::BatchTooBig {
            records, capacity, ..
        }) => assert_eq!((records, capacity), (40, 4096)),
        other => panic!("expected BatchTooBig, got {other:?}"),
    }
    let too_long = vec![vec![0u8; 8], vec![0u8; MAX + 1]];
    assert!(matches!(
        publish(&mut p, &too_long),
        Err(Error::TooBig { .. })
    ));
    assert_eq!(q.tail_offset(), 0, "a refused batch claims nothing");
    // Fill the ring with batches until one is refused whole.
    let batch = vec![vec![1u8; 96]; 5];
    let mut published = 0;
    loop {
        match publish(&mut p, &batch) {
            Ok(first) => {
                assert_eq!(first, published);
                published += 5;
            }
            Err(Error::Full { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        q.tail_offset(),
        published,
        "a rejected batch claims nothing"
    );
    assert!(published >= 25, "only {published} records fit");
}

fn block_policy() {
    let (_d, q) = new_queue(&options(4096, FullPolicy::Block));
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let batch = vec![vec![2u8; 96]; 8];
    let mut published = 0u64;
    p.set_timeout(Some(Duration::from_millis(100)));
    loop {
        match publish(&mut p, &batch) {
            Ok(_) => published += 8,
            Err(Error::Timeout { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(q.tail_offset(), published);
    // A blocked batch completes once the consumer frees room for all of it.
    p.set_timeout(SOON);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| publish(&mut p, &batch));
        std::thread::sleep(Duration::from_millis(100));
        let got = read(&mut c, published as usize, 64);
        c.commit(got.last().unwrap().0).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), published);
    });
    let got = read(&mut c, 8, 64);
    assert_eq!(got[0].0, published);
}

fn sync_durability_one_flush() {
    let opts = Options {
        durability: Durability::Sync,
        ..options(1 << 16, FullPolicy::Block)
    };
    let (_d, q) = new_queue(&opts);
    let mut c = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let batch: Vec<Vec<u8>> = (0..64).map(|i| common::payload(0, i, MAX)).collect();
    let before = q.flushes();
    let first = publish(&mut p, &batch).unwrap();
    assert_eq!(q.flushes() - before, 1, "one flush for the batch");
    assert!(q.durable_offset() >= first + 64);
    assert_eq!(read(&mut c, 64, 64).len(), 64);
}

/// A child that publishes one batch of `SHMQ_BATCH` records and is killed at `SHMQ_CRASH_AT`.
fn killed_batcher() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut p = q.producer().unwrap();
    let batch: u32 = common::arg("SHMQ_BATCH");
    let payloads: Vec<Vec<u8>> = (0..batch).map(|i| common::payload(0, i, MAX)).collect();
    publish(&mut p, &payloads).unwrap();
    panic!("the crash point did not fire");
}

/// A producer killed mid-batch at each named crash point: the batch is atomic, so readers
/// see all of it (killed after its first record's commit, the run's last) or none of it, also
/// when every later record was committed already (`publish.after_commit:5`); a dead batch costs
/// readers one claim timeout, and the record published after it is delivered with
/// `aborted_before` counting the whole batch. The producer commits the later records first and
/// the first record last, so the n-th hit of a crash point is the n-th record of the batch for
/// n < 6 and the first record for n = 6. `publish.after_claim` kills it between the claim CAS
/// and its position stores.
fn killed_mid_batch() {
    const BATCH: u32 = 6;
    for (point, committed) in [
        ("publish.after_claim", 0),
        ("publish.before_header:3", 0),
        ("publish.before_commit:4", 0),
        ("publish.after_commit:5", 0),
        ("publish.before_commit:6", 0),
        ("publish.after_commit:6", 6),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = common::queue_path(&dir);
        let q = Queue::create(&path, &options(1 << 14, FullPolicy::Block)).unwrap();
        let mut c = q.consumer("g").unwrap();
        let mut p = q.producer().unwrap();
        p.publish(b"before").unwrap();
        let env = [
            ("SHMQ_PATH", path.display().to_string()),
            ("SHMQ_BATCH", BATCH.to_string()),
            ("SHMQ_CRASH_AT", point.to_string()),
        ];
        let (_, status) = common::wait(
            common::spawn("killed_batcher", &env),
            Duration::from_secs(60),
            "killed_batcher",
        );
        assert!(common::killed(status), "{point}: not killed there");
        assert_eq!(
            q.tail_offset(),
            1 + BATCH as u64,
            "{point}: the run's claim"
        );
        let after = p.publish(b"after").unwrap();
        assert_eq!(after, 1 + BATCH as u64);
        let start = Instant::now();
        let got = read(&mut c, 2 + committed, 8);
        let elapsed = start.elapsed();
        assert_eq!(got[0].1, b"before");
        for (i, (offset, payload, aborted)) in got[1..=committed].iter().enumerate() {
            assert_eq!((*offset, *aborted), (1 + i as u64, 0), "{point}");
            assert_eq!(common::check(payload).unwrap(), (0, i as u32), "{point}");
        }
        let last = got.last().unwrap();
        assert_eq!(
            (last.0, &last.1[..], last.2),
            (after, &b"after"[..], (BATCH - committed as u32) as u64),
            "{point}: the record after the run"
        );
        let stalled = BATCH - committed as u32;
        if stalled > 0 {
            assert!(
                elapsed >= CLAIM_TIMEOUT,
                "{point}: aborted before the timeout"
            );
        }
        // The whole run goes with its first record, after one claim timeout. Generous slack
        // for a loaded machine.
        let bound = CLAIM_TIMEOUT + Duration::from_secs(5);
        assert!(elapsed < bound, "{point}: took {elapsed:?}");
        // The queue goes on: a batch after the dead one is delivered whole.
        let first = publish(&mut p, &[b"x".to_vec(), b"y".to_vec()]).unwrap();
        let got = read(&mut c, 2, 8);
        assert_eq!((got[0].0, got[1].0), (first, first + 1), "{point}");
    }
}

/// A non-gating group copies and validates every record, including those of batches.
fn lappable_reader() {
    let (_d, q) = new_queue(&options(1 << 14, FullPolicy::Block));
    let opts = Subscribe {
        gating: false,
        ..Subscribe::default()
    };
    let mut c = q.subscribe("lappable", &opts).unwrap();
    let mut p = q.producer().unwrap();
    let batch: Vec<Vec<u8>> = (0..32).map(|i| common::payload(0, i, MAX)).collect();
    publish(&mut p, &batch).unwrap();
    let got = read(&mut c, 32, 64);
    for (i, (offset, payload, _)) in got.iter().enumerate() {
        assert_eq!(*offset, i as u64);
        assert_eq!(payload, &batch[i]);
    }
}
