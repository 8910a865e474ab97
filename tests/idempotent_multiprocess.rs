//! Idempotent producers across processes: four producer processes, each with its own producer
//! id, SIGKILLed at random and restarted with the same id, publish every sequence number
//! exactly once; and a producer killed at each crash point of the idempotent publish.
//!
//! Producers are this test binary re-run in the role `producer` (`harness = false`, see
//! `common`). A producer logs each answer it got, one line per publish with a single
//! `write(2)` ([`common::log_line`]): `seq offset duplicate` (`duplicate` 0 or 1).

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use shmq::{Error, IdOptions, Options, PublishOutcome, Queue, SeekTo};

/// Producer processes in the random-kill test.
const PRODUCERS: u32 = 4;
/// Sequence numbers each of them publishes (0..N).
const N: u64 = 3000;
/// The de-duplication window: every retry the test makes stays inside it.
const WINDOW: u32 = 1024;
/// How far back a producer retries an earlier sequence number, and how far before
/// `next_sequence` a restarted one resumes (at most).
const RETRY_BACK: u64 = 200;
const RESUME_BACK: u64 = 8;
/// The pause after each publish of the random-kill test's producers (µs): four processes
/// that mostly sleep, and a run long enough for many kills.
const PACE_US: u64 = 1000;
/// Largest payload (`common::payload`).
const MAX_PAYLOAD: usize = 96;
/// The longest a test may take before it fails.
const LIMIT: Duration = Duration::from_secs(180);
/// The claim timeout of the test queues: a claim left by a kill is aborted after it.
const CLAIM_TIMEOUT: Duration = Duration::from_millis(200);

fn main() {
    match common::role().as_deref() {
        Some("producer") => producer(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            (
                "four_producers_sigkilled_at_random_publish_each_id_once",
                four_producers_sigkilled_at_random_publish_each_id_once,
            ),
            (
                "a_producer_killed_at_each_crash_point",
                a_producer_killed_at_each_crash_point,
            ),
        ]),
    }
}

fn options() -> Options {
    Options {
        // Room for every record of the test without a lap: no entry's record is overwritten.
        capacity: 8 << 20,
        max_message: 4096,
        claim_timeout: CLAIM_TIMEOUT,
        ..Options::default()
    }
}

fn id_options() -> IdOptions {
    IdOptions {
        slots: 8,
        window: WINDOW,
    }
}

fn log_path(queue: &Path, producer: u32) -> PathBuf {
    queue.with_extension(format!("log-{producer}"))
}

/// Opens id `p<producer>` and publishes sequence numbers up to `SHMQ_END` (exclusive), from a
/// little before where the id left off, retrying an earlier one now and then; logs every
/// answer. Paced (a short sleep per publish) so four of them do not keep four cores busy.
fn producer() {
    let path: PathBuf = common::arg::<String>("SHMQ_QUEUE").into();
    let me: u32 = common::arg("SHMQ_PRODUCER");
    let end: u64 = common::arg("SHMQ_END");
    let pace: u64 = common::arg("SHMQ_PACE_US");
    let q = Queue::open(&path).unwrap();
    let id = format!("p{me}");
    let started = Instant::now();
    let mut p = loop {
        match q.idempotent_producer(&id, &id_options()) {
            Ok(p) => break p,
            // The killed predecessor was reaped, so its lock is gone; allow for a slow kernel.
            Err(Error::ProducerIdBusy { .. }) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {id}: {e}"),
        }
    };
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(&path, me))
        .unwrap();
    let mut rng = common::Rng::new();
    let next = p.next_sequence();
    let mut seq = next.saturating_sub(rng.range(0, RESUME_BACK + 1));
    while seq < end {
        let s = if seq > 0 && rng.range(0, 8) == 0 {
            seq - 1 - rng.range(0, seq.min(RETRY_BACK))
        } else {
            seq
        };
        let answer = p
            .publish(s, &common::payload(me, s as u32, MAX_PAYLOAD))
            .unwrap_or_else(|e| panic!("{id} seq {s}: {e}"));
        if s < seq || s < next {
            assert!(
                answer.is_duplicate(),
                "{id}: seq {s} was published before (resumed at {next}), got {answer:?}"
            );
        }
        common::log_line(
            &mut log,
            &format!(
                "{s} {} {}",
                answer.offset(),
                u8::from(answer.is_duplicate())
            ),
        );
        if s == seq {
            seq += 1;
        }
        if pace > 0 {
            std::thread::sleep(Duration::from_micros(pace));
        }
    }
    assert_eq!(p.next_sequence(), end);
    println!("DONE");
}

fn spawn(queue: &Path, producer: u32, end: u64, pace_us: u64, crash: Option<&str>) -> Child {
    let mut env = vec![
        ("SHMQ_QUEUE", queue.display().to_string()),
        ("SHMQ_PRODUCER", producer.to_string()),
        ("SHMQ_END", end.to_string()),
        ("SHMQ_PACE_US", pace_us.to_string()),
    ];
    if let Some(point) = crash {
        env.push(("SHMQ_CRASH_AT", point.to_string()));
    }
    common::spawn("producer", &env)
}

/// Every record of the queue: `(producer, seq) -> offsets`, checking each payload.
fn records(q: &Queue) -> BTreeMap<(u32, u64), Vec<u64>> {
    let mut r = q.tail_reader(SeekTo::Earliest).unwrap();
    let mut out: BTreeMap<(u32, u64), Vec<u64>> = BTreeMap::new();
    let start = Instant::now();
    // Waits out claims left by kills (aborted after the claim timeout).
    while let Some(m) = r.poll(Some(CLAIM_TIMEOUT * 5)).unwrap() {
        let (p, s) = common::check(m.payload).unwrap();
        out.entry((p, u64::from(s))).or_default().push(m.offset);
        assert!(start.elapsed() < LIMIT, "reading the queue took too long");
    }
    out
}

/// The log of producer `producer`: `(seq, offset, duplicate)` per line.
fn log(queue: &Path, producer: u32) -> Vec<(u64, u64, bool)> {
    common::read_log(&log_path(queue, producer))
        .into_iter()
        .map(|l| (l[0], l[1], l[2] == 1))
        .collect()
}

/// Checks that every sequence number `0..end` of every producer in `producers` is in the
/// queue exactly once, and that every answer a producer logged for it names that offset.
fn check_exactly_once(q: &Queue, producers: u32, end: u64) -> usize {
    let found = records(q);
    for p in 0..producers {
        for s in 0..end {
            let offsets = found.get(&(p, s)).map_or(&[][..], Vec::as_slice);
            assert_eq!(
                offsets.len(),
                1,
                "producer {p} seq {s}: copies at {offsets:?}"
            );
        }
    }
    assert_eq!(
        found.len(),
        (producers as usize) * end as usize,
        "stray records"
    );
    let mut answers = 0;
    for p in 0..producers {
        for (s, offset, _) in log(q.path(), p) {
            assert_eq!(
                found[&(p, s)],
                [offset],
                "producer {p} seq {s}: an answer named offset {offset}"
            );
            answers += 1;
        }
    }
    answers
}

/// Four producer processes, each its own id, publish sequence numbers 0..N with retries of
/// random earlier ones; one of them is SIGKILLed every 20 to 80 ms and restarted with the same
/// id (resuming a few before `next_sequence`). Every sequence number of every producer is in
/// the queue exactly once, every answer (new or duplicate) named that record's offset, and
/// the ids' counters agree.
fn four_producers_sigkilled_at_random_publish_each_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options()).unwrap();
    let mut rng = common::Rng::new();
    let start = Instant::now();
    let mut children: Vec<Option<Child>> = (0..PRODUCERS)
        .map(|p| Some(spawn(&path, p, N, PACE_US, None)))
        .collect();
    let mut kills = 0;
    while children.iter().any(Option::is_some) {
        assert!(start.elapsed() < LIMIT, "the producers did not finish");
        std::thread::sleep(Duration::from_millis(rng.range(20, 81)));
        // Reap the finished ones.
        for c in children.iter_mut() {
            if let Some(child) = c {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "a producer failed: {status}");
                    *c = None;
                }
            }
        }
        let running: Vec<usize> = (0..children.len())
            .filter(|&i| children[i].is_some())
            .collect();
        if running.is_empty() {
            break;
        }
        let victim = running[rng.range(0, running.len() as u64) as usize];
        let mut child = children[victim].take().unwrap();
        let _ = child.kill();
        let status = child.wait().unwrap();
        if common::killed(status) {
            kills += 1;
            children[victim] = Some(spawn(&path, victim as u32, N, PACE_US, None));
        } else {
            assert!(status.success(), "a producer failed: {status}");
        }
    }
    let answers = check_exactly_once(&q, PRODUCERS, N);
    let infos = q.producer_ids().unwrap();
    assert_eq!(infos.len(), PRODUCERS as usize);
    for i in &infos {
        assert_eq!(i.next_sequence, N, "{i:?}");
        // The counter is bumped after the entry is stored: a kill between the two loses one
        // count (ARCHITECTURE.md, "Known limits"), never adds one.
        assert!(
            i.published <= N && i.published + kills >= N,
            "{i:?}: published counter after {kills} kills"
        );
        assert_eq!(i.unknown, 0, "{i:?}");
        assert!(!i.holder_alive, "{i:?}");
    }
    let duplicates: u64 = infos.iter().map(|i| i.duplicates).sum();
    assert!(kills >= 10, "only {kills} kills");
    println!(
        "  {PRODUCERS} × {N} sequence numbers exactly once in {:.1?}: {kills} kills, \
         {answers} answers logged, {duplicates} duplicates answered",
        start.elapsed()
    );
}

/// A producer killed at each crash point of the idempotent publish (`ids.*` in
/// `shmq::crash::POINTS`), at its publish of sequence number 4: a new holder of the id
/// retries 4 and gets `Duplicate` with the record's offset if the record is in the queue, and
/// `New` otherwise, and every sequence number 0..10 is then in the queue exactly once.
fn a_producer_killed_at_each_crash_point() {
    let points: Vec<&str> = shmq::crash::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("ids."))
        .collect();
    assert_eq!(
        points.len(),
        4,
        "the idempotent publish's crash points: {points:?}"
    );
    for point in points {
        let dir = tempfile::tempdir().unwrap();
        let path = common::queue_path(&dir);
        let q = Queue::create(&path, &options()).unwrap();
        let child = spawn(&path, 0, 10, 0, Some(&format!("{point}:5")));
        let (_, status) = common::wait(child, LIMIT, point);
        assert!(
            common::killed(status),
            "{point}: not killed there ({status})"
        );
        // The record of seq 4 is in the queue if the kill came after its commit.
        let committed = matches!(point, "ids.after_publish" | "ids.after_entry");
        let mut p = q.idempotent_producer("p0", &id_options()).unwrap();
        assert_eq!(
            p.next_sequence(),
            if committed { 5 } else { 4 },
            "{point}: next sequence"
        );
        let retry = p.publish(4, &common::payload(0, 4, MAX_PAYLOAD)).unwrap();
        assert_eq!(retry.is_duplicate(), committed, "{point}: {retry:?}");
        for s in 5..10u64 {
            let got = p
                .publish(s, &common::payload(0, s as u32, MAX_PAYLOAD))
                .unwrap();
            assert!(matches!(got, PublishOutcome::New(_)), "{point}: {got:?}");
        }
        drop(p);
        let found = records(&q);
        for s in 0..10u64 {
            assert_eq!(
                found[&(0, s)].len(),
                1,
                "{point}: seq {s}: {:?}",
                found[&(0, s)]
            );
        }
        assert_eq!(
            found[&(0, 4)],
            [retry.offset()],
            "{point}: the retry's offset"
        );
        let info = &q.producer_ids().unwrap()[0];
        assert_eq!(
            (info.published, info.next_sequence),
            (10, 10),
            "{point}: {info:?}"
        );
        println!("  {point}: retry of the killed publish answered {retry:?}");
    }
}
