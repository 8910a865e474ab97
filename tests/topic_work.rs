//! Work groups on a topic in one process: competing topic workers share every partition's
//! records, nacks redeliver, dead letters from every partition reach one dead-letter queue, a
//! sleeping worker is woken by a publish to any partition, growth gives the new partitions the
//! work group, and records keep their keys.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shmq::{
    Backoff, Corruption, DeadLetter, DeadReason, Error, Options, PendingState, Queue, Ticket,
    Topic, TopicOptions, TopicTicket, WorkOptions,
};

/// Generous: the test machine is loaded.
const LONG: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(100));

fn queue_options() -> Options {
    Options {
        capacity: 1 << 18,
        max_message: 512,
        claim_timeout: Duration::from_millis(200),
        ..Options::default()
    }
}

fn new_topic(dir: &tempfile::TempDir, partitions: u32) -> Topic {
    let options = TopicOptions {
        partitions,
        queue: queue_options(),
    };
    Topic::create(dir.path().join("jobs.topic"), &options).unwrap()
}

fn opts() -> WorkOptions {
    WorkOptions {
        window: 256,
        ..WorkOptions::default()
    }
}

#[test]
fn two_workers_share_every_record_of_four_partitions_once() {
    let dir = tempfile::tempdir().unwrap();
    let topic = new_topic(&dir, 4);
    const N: u32 = 2000;
    let mut producer = topic.producer().unwrap();
    let mut per_partition = [0u32; 4];
    for i in 0..N {
        let sent = producer
            .publish_keyed(format!("key-{i}").as_bytes(), &i.to_le_bytes())
            .unwrap();
        per_partition[sent.partition as usize] += 1;
    }
    assert!(per_partition.iter().all(|&n| n > 0), "{per_partition:?}");
    // Both workers exist before either polls, so both compete for every partition.
    let workers: Vec<_> = (0..2)
        .map(|_| topic.worker("jobs", &opts()).unwrap())
        .collect();
    let seen = Arc::new(Mutex::new(BTreeMap::<u32, (u32, u64, usize)>::new()));
    let threads: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(me, mut w)| {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut mine = 0u32;
                while seen.lock().unwrap().len() < N as usize {
                    assert!(Instant::now() < deadline, "the records did not all arrive");
                    let Some(job) = w.poll(SHORT).unwrap() else {
                        continue;
                    };
                    let i = u32::from_le_bytes(job.value.try_into().unwrap());
                    assert_eq!(job.key, Some(format!("key-{i}").as_bytes()));
                    assert_eq!(job.deliveries, 1);
                    assert_eq!(job.ticket.partition, job.partition);
                    let first = seen
                        .lock()
                        .unwrap()
                        .insert(i, (job.partition, job.offset, me));
                    assert_eq!(first, None, "record {i} delivered twice");
                    let ticket = job.ticket;
                    w.ack(ticket).unwrap();
                    mine += 1;
                }
                mine
            })
        })
        .collect();
    let counts: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    println!("records per worker: {counts:?}");
    assert_eq!(counts.iter().sum::<u32>(), N);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), N as usize);
    for p in 0..4u32 {
        let offsets: Vec<u64> = seen.values().filter(|v| v.0 == p).map(|v| v.1).collect();
        assert_eq!(offsets.len(), per_partition[p as usize] as usize);
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        let expected: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(sorted, expected, "partition {p}: every offset once");
    }
    let info = topic.work_info("jobs").unwrap();
    assert_eq!((info.delivered, info.acked), (u64::from(N), u64::from(N)));
    assert_eq!((info.in_flight, info.waiting, info.redelivered), (0, 0, 0));
    for (p, part) in info.partitions.iter().enumerate() {
        let part = part.as_ref().expect("the group is in every partition");
        assert_eq!(part.base, u64::from(per_partition[p]), "partition {p}");
    }
    assert!(topic.pending("jobs").unwrap().is_empty());
}

#[test]
fn nacks_redeliver_and_dead_letters_from_every_partition_reach_one_queue() {
    let dir = tempfile::tempdir().unwrap();
    let topic = new_topic(&dir, 2);
    let dlq_path = dir.path().join("dead.q");
    let dlq = Queue::create(&dlq_path, &queue_options()).unwrap();
    let mut audit = dlq.consumer("audit").unwrap();
    let options = WorkOptions {
        max_deliveries: 2,
        backoff: Backoff::Fixed(Duration::from_millis(20)),
        dead_letter: Some(dlq_path),
        ..opts()
    };
    let mut w = topic.worker("jobs", &options).unwrap();
    let mut producer = topic.producer().unwrap();
    producer.publish_to(0, Some(b"k0"), b"poison").unwrap();
    producer.publish_to(1, Some(b"k1"), b"refused").unwrap();

    // Partition 0's record: nacked (the group's back-off), delivered again, nacked: dead.
    // Partition 1's record: rejected at once.
    let mut deliveries = BTreeMap::<u32, Vec<u32>>::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while deliveries.get(&0).map_or(0, Vec::len) < 2 || !deliveries.contains_key(&1) {
        assert!(
            Instant::now() < deadline,
            "deliveries so far: {deliveries:?}"
        );
        let Some(job) = w.poll(SHORT).unwrap() else {
            continue;
        };
        deliveries
            .entry(job.partition)
            .or_default()
            .push(job.deliveries);
        let (partition, ticket) = (job.partition, job.ticket);
        if partition == 0 {
            assert_eq!(job.value, b"poison");
            if job.deliveries == 1 {
                let pending = topic.pending("jobs").unwrap();
                assert!(pending.iter().any(|p| p.partition == 0
                    && p.info.offset == 0
                    && p.info.state == PendingState::InFlight
                    && p.info.holder == Some(std::process::id())));
            }
            w.nack(ticket, None).unwrap();
        } else {
            assert_eq!(job.value, b"refused");
            w.reject(ticket).unwrap();
        }
    }
    assert_eq!(deliveries[&0], vec![1, 2]);
    assert_eq!(deliveries[&1], vec![1]);
    assert!(
        w.poll(SHORT).unwrap().is_none(),
        "both dead, none redelivered"
    );

    let mut dead = BTreeMap::new();
    for _ in 0..2 {
        let m = audit.poll(LONG).unwrap().expect("a dead letter");
        let d = DeadLetter::parse(m.payload).unwrap();
        // The dead letter carries the partition's record as it is stored: framed with its key
        // (FORMAT.md, "Keyed-record framing": key length, key, value).
        let (len, rest) = d.payload.split_at(2);
        let key = rest[..usize::from(u16::from_le_bytes([len[0], len[1]]))].to_vec();
        dead.insert(
            d.source.to_string(),
            (d.offset, d.deliveries, d.reason, key),
        );
        let offset = m.offset;
        audit.commit(offset).unwrap();
    }
    let source = |p: usize| topic.partitions()[p].path().to_str().unwrap().to_string();
    assert_eq!(
        dead[&source(0)],
        (0, 2, DeadReason::MaxDeliveries, b"k0".to_vec())
    );
    assert_eq!(
        dead[&source(1)],
        (0, 1, DeadReason::Rejected, b"k1".to_vec())
    );
    let info = topic.work_info("jobs").unwrap();
    assert_eq!(
        (info.delivered, info.redelivered, info.dead_lettered),
        (2, 1, 2)
    );
}

#[test]
fn a_sleeping_worker_is_woken_by_a_publish_to_any_partition() {
    let dir = tempfile::tempdir().unwrap();
    let topic = new_topic(&dir, 4);
    let mut w = topic.worker("jobs", &opts()).unwrap();
    let cpu = common::thread_cpu();
    let start = Instant::now();
    assert!(w.poll(Some(Duration::from_millis(1500))).unwrap().is_none());
    let (idle, used) = (start.elapsed(), common::thread_cpu() - cpu);
    assert!(idle >= Duration::from_millis(1500));
    println!("idle poll of {idle:.1?} over 4 partitions used {used:.1?} of CPU");
    assert!(
        used < idle / 50,
        "an idle worker must sleep: {used:?} of CPU in {idle:?}"
    );

    // A worker's sleep lasts at most the redelivery scan's 50 ms: a wake-up that waited for
    // it would take 25 ms on median.
    let mut latencies = Vec::new();
    for round in 0..8u32 {
        let partition = round % 4;
        let producer_topic = topic.clone();
        let publisher = std::thread::spawn(move || {
            let mut p = producer_topic.producer().unwrap();
            std::thread::sleep(Duration::from_millis(60));
            p.publish_to(partition, None, b"wake").unwrap();
            Instant::now()
        });
        let job = w.poll(LONG).unwrap().expect("woken");
        let received = Instant::now();
        assert_eq!((job.partition, job.value), (partition, &b"wake"[..]));
        let ticket = job.ticket;
        w.ack(ticket).unwrap();
        let sent = publisher.join().unwrap();
        latencies.push(received.saturating_duration_since(sent));
    }
    latencies.sort();
    println!("publish to a sleeping topic worker, woken after: {latencies:.1?}");
    assert!(
        latencies[4] < Duration::from_millis(10),
        "the median wake-up must not wait for the 50 ms scan: {latencies:?}"
    );
}

#[test]
fn a_growth_gives_new_partitions_the_work_group_and_workers_pick_them_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut topic = new_topic(&dir, 2);
    let options = WorkOptions {
        window: 128,
        max_deliveries: 3,
        visibility_timeout: Duration::from_secs(20),
        ..WorkOptions::default()
    };
    let mut w = topic.worker("jobs", &options).unwrap();
    // A handle opened before the growth: its producer picks the growth up on its own.
    let mut producer = topic.clone().producer().unwrap();
    topic.grow(4).unwrap();
    for p in 2..4u32 {
        let q = &topic.partitions()[p as usize];
        let g = q.groups();
        assert!(
            g.iter().any(|g| g.name == "jobs" && g.work && g.gating),
            "partition {p}: {g:?}"
        );
        // Partition 0's settings, not the defaults.
        let info = q.work_info("jobs").unwrap();
        assert_eq!((info.window, info.base), (128, 0));
    }
    for p in 0..4u32 {
        producer.publish_to(p, None, &p.to_le_bytes()).unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 4 {
        assert!(Instant::now() < deadline, "got only {got:?}");
        if let Some(job) = w.poll(SHORT).unwrap() {
            assert_eq!(job.value, job.partition.to_le_bytes());
            got.push(job.partition);
            let ticket = job.ticket;
            w.ack(ticket).unwrap();
        }
    }
    got.sort_unstable();
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(w.topic().partition_count(), 4);
    let info = topic.work_info("jobs").unwrap();
    assert_eq!(info.acked, 4);
    assert!(info.partitions.iter().all(Option::is_some));
    let bad = TopicTicket {
        partition: 9,
        ticket: Ticket::from_parts(0, 1, u64::MAX),
    };
    assert!(matches!(
        w.ack(bad),
        Err(Error::NoSuchPartition {
            partition: 9,
            partitions: 4,
            ..
        })
    ));
}

#[test]
fn records_keep_their_keys_and_an_unframed_one_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let topic = new_topic(&dir, 2);
    let mut w = topic.worker("jobs", &opts()).unwrap();
    let mut producer = topic.producer().unwrap();
    producer.publish_to(0, Some(b"order-42"), b"paid").unwrap();
    producer.publish_to(0, Some(b""), b"empty key").unwrap();
    producer.publish_to(0, None, b"no key").unwrap();
    // Published to the partition file directly: no topic framing.
    topic.partitions()[1]
        .producer()
        .unwrap()
        .publish(&[7])
        .unwrap();
    producer.publish_to(1, Some(b"k"), b"after").unwrap();

    let mut got = Vec::new();
    let mut unframed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 4 {
        assert!(Instant::now() < deadline, "got only {got:?}");
        match w.poll(SHORT) {
            Ok(Some(job)) => {
                got.push((
                    job.partition,
                    job.key.map(<[u8]>::to_vec),
                    job.value.to_vec(),
                ));
                let ticket = job.ticket;
                w.ack(ticket).unwrap();
            }
            Ok(None) => {}
            Err(Error::Corrupt {
                path,
                kind: Corruption::Shared(_),
            }) => {
                assert_eq!(path, topic.partitions()[1].path());
                unframed += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(unframed, 1, "reported once, then dead");
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, None, b"no key".to_vec()),
            (0, Some(Vec::new()), b"empty key".to_vec()),
            (0, Some(b"order-42".to_vec()), b"paid".to_vec()),
            (1, Some(b"k".to_vec()), b"after".to_vec()),
        ]
    );
    let info = topic.work_info("jobs").unwrap();
    assert_eq!((info.acked, info.dead_lettered), (4, 1));
}
