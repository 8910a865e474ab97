//! Work groups in one process: competing workers receive disjoint records; acks, nacks,
//! rejects, extensions, visibility timeouts, dead letters, expiry, delays, the window, the
//! retention of un-acked records, deletion, damaged work files, reopening and recovery.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::format::{
    work_file, BOOT_ID_AT, DATA_WAITERS_AT, WORK_BOOT_ID_AT, WORK_ENTRIES_AT, WORK_ENTRY,
    WORK_SLEEPERS_AT,
};
use shmq::{
    Backoff, Corruption, DeadLetter, DeadReason, Error, FullPolicy, GroupKind, Options,
    PendingState, Queue, Schedule, Start, WorkFault, WorkOptions,
};

/// Generous: the test machine is loaded.
const LONG: Option<Duration> = Some(Duration::from_secs(10));
const SHORT: Option<Duration> = Some(Duration::from_millis(100));

fn queue(opts: &Options) -> (tempfile::TempDir, PathBuf, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.q");
    let q = Queue::create(&path, opts).unwrap();
    (dir, path, q)
}

fn small() -> Options {
    Options {
        capacity: 1 << 16,
        max_message: 1024,
        claim_timeout: Duration::from_millis(200),
        ..Options::default()
    }
}

fn opts() -> WorkOptions {
    WorkOptions {
        window: 64,
        ..WorkOptions::default()
    }
}

fn publish(q: &Queue, n: u64) {
    let mut p = q.producer().unwrap();
    for i in 0..n {
        p.publish(&i.to_le_bytes()).unwrap();
    }
}

#[test]
fn workers_receive_disjoint_records_and_every_one_once() {
    let (_dir, _path, q) = queue(&Options {
        capacity: 1 << 20,
        ..small()
    });
    const N: u64 = 3000;
    let seen = Arc::new(Mutex::new(BTreeMap::<u64, u32>::new()));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let mut w = q
                .worker(
                    "jobs",
                    &WorkOptions {
                        window: 64,
                        ..opts()
                    },
                )
                .unwrap();
            let seen = seen.clone();
            std::thread::spawn(move || loop {
                let Some(job) = w.poll(Some(Duration::from_secs(2))).unwrap() else {
                    return;
                };
                assert_eq!(job.payload, job.offset.to_le_bytes());
                assert_eq!(job.deliveries, 1);
                *seen.lock().unwrap().entry(job.offset).or_default() += 1;
                let t = job.ticket;
                w.ack(t).unwrap();
            })
        })
        .collect();
    publish(&q, N);
    for w in workers {
        w.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len() as u64, N, "every offset delivered");
    assert!(seen.values().all(|&c| c == 1), "no offset twice");
    let info = q.work_info("jobs").unwrap();
    assert_eq!((info.delivered, info.acked, info.base), (N, N, N));
    assert_eq!(info.redelivered, 0);
}

#[test]
fn ack_nack_reject_and_extend() {
    let (_dir, _path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    publish(&q, 3);
    let a = w.poll(LONG).unwrap().unwrap().ticket;
    let b = w.poll(LONG).unwrap().unwrap().ticket;
    let mut c = w.poll(LONG).unwrap().unwrap().ticket;
    assert_eq!((a.offset(), b.offset(), c.offset()), (0, 1, 2));
    assert!(w.poll(SHORT).unwrap().is_none(), "all three are in flight");
    w.ack(a).unwrap();
    assert!(
        matches!(w.ack(a), Err(Error::LeaseExpired { offset: 0, .. })),
        "a second ack is refused"
    );
    w.nack(b, Some(Duration::ZERO)).unwrap();
    let again = w.poll(LONG).unwrap().unwrap();
    assert_eq!((again.offset, again.deliveries), (1, 2));
    let b2 = again.ticket;
    let before = c.deadline_ms();
    w.extend(&mut c, Duration::from_secs(60)).unwrap();
    assert!(c.deadline_ms() > before + 20_000);
    w.reject(b2).unwrap();
    w.ack(c).unwrap();
    let info = q.work_info("jobs").unwrap();
    assert_eq!(
        (
            info.delivered,
            info.redelivered,
            info.acked,
            info.dead_lettered
        ),
        (3, 1, 2, 1)
    );
    assert_eq!(info.base, 3, "everything settled");
    assert!(q.pending("jobs").unwrap().is_empty());
}

#[test]
fn an_expired_lease_redelivers_and_refuses_the_late_ack() {
    let (_dir, _path, q) = queue(&small());
    let o = WorkOptions {
        visibility_timeout: Duration::from_millis(300),
        ..opts()
    };
    let mut w1 = q.worker("jobs", &o).unwrap();
    let mut w2 = q.worker("jobs", &o).unwrap();
    publish(&q, 1);
    let first = w1.poll(LONG).unwrap().unwrap().ticket;
    let pending = q.pending("jobs").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, PendingState::InFlight);
    assert_eq!(pending[0].holder, Some(std::process::id()));
    assert!(pending[0].holder_alive);
    let started = Instant::now();
    let again = w2.poll(LONG).unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((again.offset, again.deliveries), (0, 2));
    let second = again.ticket;
    let before = q.work_info("jobs").unwrap();
    assert!(matches!(
        w1.ack(first),
        Err(Error::LeaseExpired { offset: 0, .. })
    ));
    assert!(matches!(
        w1.nack(first, None),
        Err(Error::LeaseExpired { .. })
    ));
    assert_eq!(
        q.work_info("jobs").unwrap(),
        before,
        "the late ack changed nothing"
    );
    w2.ack(second).unwrap();
    assert_eq!(q.work_info("jobs").unwrap().acked, 1);
}

#[test]
fn a_poison_record_goes_to_the_dead_letter_queue() {
    let (dir, path, q) = queue(&small());
    let dlq_path = dir.path().join("dead.q");
    let dlq = Queue::create(&dlq_path, &small()).unwrap();
    let mut audit = dlq.consumer("audit").unwrap();
    let o = WorkOptions {
        max_deliveries: 2,
        dead_letter: Some(dlq_path.clone()),
        ..opts()
    };
    let mut w = q.worker("jobs", &o).unwrap();
    q.producer().unwrap().publish(b"poison").unwrap();
    for n in 1..=2 {
        let job = w.poll(LONG).unwrap().unwrap();
        assert_eq!(job.deliveries, n);
        let t = job.ticket;
        w.nack(t, Some(Duration::ZERO)).unwrap();
    }
    assert!(
        w.poll(SHORT).unwrap().is_none(),
        "dead-lettered, not redelivered"
    );
    let m = audit.poll(LONG).unwrap().unwrap();
    let dead = DeadLetter::parse(m.payload).unwrap();
    assert_eq!(dead.offset, 0);
    assert_eq!(dead.deliveries, 2);
    assert_eq!(dead.reason, DeadReason::MaxDeliveries);
    assert_eq!(dead.payload, b"poison");
    assert_eq!(Path::new(dead.source), path);
    assert!(dead.dead_at_ns >= dead.timestamp_ns);
    let info = q.work_info("jobs").unwrap();
    assert_eq!((info.dead_lettered, info.base), (1, 1));
    for bad in [&m.payload[..10], b"SHMQDLQ1 and then not much"] {
        assert!(matches!(
            DeadLetter::parse(bad),
            Err(Error::Corrupt {
                kind: Corruption::Shared(_),
                ..
            })
        ));
    }
}

#[test]
fn expired_records_are_not_delivered() {
    let (_dir, _path, q) = queue(&small());
    let mut p = q.producer().unwrap();
    let ttl = Schedule {
        delay: Duration::ZERO,
        ttl: Some(Duration::from_millis(1)),
    };
    p.publish_scheduled(b"stale", &ttl).unwrap();
    p.publish(b"fresh").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let mut w = q.worker("ttl", &opts()).unwrap();
    let job = w.poll(LONG).unwrap().unwrap();
    assert_eq!(job.payload, b"fresh");
    let t = job.ticket;
    w.ack(t).unwrap();
    assert_eq!(q.work_info("ttl").unwrap().expired, 1);

    let aged = WorkOptions {
        max_age: Some(Duration::from_millis(5)),
        ..opts()
    };
    let mut old = q.worker("aged", &aged).unwrap();
    assert!(
        old.poll(SHORT).unwrap().is_none(),
        "both are older than 5 ms"
    );
    let info = q.work_info("aged").unwrap();
    assert_eq!((info.expired, info.base), (2, 2));

    let too_long = Schedule {
        delay: Duration::from_millis(1 << 32),
        ttl: None,
    };
    assert!(matches!(
        p.publish_scheduled(b"x", &too_long),
        Err(Error::InvalidArgument { .. })
    ));
    // A time to live stays below 2^31 ms (24.8 days): a schedule word's top bit marks a
    // transaction's link (FORMAT.md, "Data ring").
    let ttl = |ms| Schedule {
        delay: Duration::ZERO,
        ttl: Some(Duration::from_millis(ms)),
    };
    assert!(matches!(
        p.publish_scheduled(b"x", &ttl(1 << 31)),
        Err(Error::InvalidArgument { .. })
    ));
    p.publish_scheduled(b"x", &ttl((1 << 31) - 1)).unwrap();
}

#[test]
fn delayed_records_come_out_by_due_time() {
    let (_dir, _path, q) = queue(&small());
    let mut w = q.worker("later", &opts()).unwrap();
    let mut p = q.producer().unwrap();
    let delay = |ms| Schedule {
        delay: Duration::from_millis(ms),
        ttl: None,
    };
    let start = Instant::now();
    p.publish_scheduled(b"a", &delay(900)).unwrap();
    p.publish_scheduled(b"b", &delay(400)).unwrap();
    p.publish(b"c").unwrap();
    let mut order = Vec::new();
    while order.len() < 3 {
        let job = w.poll(LONG).unwrap().unwrap();
        order.push((job.payload.to_vec(), start.elapsed()));
        let t = job.ticket;
        w.ack(t).unwrap();
    }
    let names: Vec<&[u8]> = order.iter().map(|(n, _)| &n[..]).collect();
    assert_eq!(names, [&b"c"[..], b"b", b"a"]);
    assert!(order[1].1 >= Duration::from_millis(390), "{order:?}");
    assert!(order[2].1 >= Duration::from_millis(890), "{order:?}");
}

#[test]
fn a_full_window_waits_for_an_ack() {
    let (_dir, _path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    publish(&q, 70);
    let tickets: Vec<_> = (0..64)
        .map(|_| w.poll(LONG).unwrap().unwrap().ticket)
        .collect();
    assert!(w.poll(SHORT).unwrap().is_none(), "window of 64 full");
    w.ack(tickets[1]).unwrap();
    assert!(
        w.poll(SHORT).unwrap().is_none(),
        "offset 0 still holds base"
    );
    w.ack(tickets[0]).unwrap();
    let job = w.poll(LONG).unwrap().unwrap();
    assert_eq!(job.offset, 64);
    let t = job.ticket;
    w.ack(t).unwrap();
    assert_eq!(q.work_info("jobs").unwrap().base, 2);
}

#[test]
fn unacked_records_hold_a_block_queue_back() {
    let (_dir, _path, q) = queue(&Options {
        capacity: 4096,
        max_message: 64,
        full_policy: FullPolicy::Block,
        ..small()
    });
    let mut w = q.worker("jobs", &opts()).unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(200)));
    let mut n = 0;
    while p.publish(&[0u8; 32]).is_ok() {
        n += 1;
        assert!(n < 1000, "the ring never filled");
    }
    let job = w.poll(LONG).unwrap().unwrap();
    let first = job.ticket;
    let second = w.poll(LONG).unwrap().unwrap().ticket;
    assert!(
        matches!(p.publish(&[0u8; 32]), Err(Error::Timeout { .. })),
        "delivered but un-acked records are retained"
    );
    w.ack(second).unwrap();
    assert!(p.publish(&[0u8; 32]).is_err(), "offset 0 is still held");
    w.ack(first).unwrap();
    p.set_timeout(LONG);
    p.publish(&[0u8; 32]).unwrap();
}

#[test]
fn group_kinds_are_kept_apart() {
    let (_dir, path, q) = queue(&small());
    q.consumer("plain").unwrap();
    assert!(matches!(
        q.worker("plain", &opts()),
        Err(Error::WrongGroupKind {
            expected: GroupKind::Work,
            ..
        })
    ));
    let _w = q.worker("work", &opts()).unwrap();
    assert!(matches!(
        q.consumer("work"),
        Err(Error::WrongGroupKind {
            expected: GroupKind::Plain,
            ..
        })
    ));
    assert!(matches!(
        q.reset_group("work", shmq::SeekTo::Earliest),
        Err(Error::WrongGroupKind { .. })
    ));
    let groups = q.groups();
    assert!(groups.iter().any(|g| g.name == "work" && g.work));
    assert!(groups.iter().any(|g| g.name == "plain" && !g.work));
    let _ = path;
    let (_d2, _p2, over) = queue(&Options {
        full_policy: FullPolicy::Overwrite,
        ..small()
    });
    assert!(matches!(
        over.worker("w", &opts()),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        q.worker(
            "odd",
            &WorkOptions {
                window: 100,
                ..opts()
            }
        ),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(
        q.groups().iter().all(|g| g.name != "odd"),
        "nothing created"
    );
}

#[test]
fn deleting_a_group_removes_its_file() {
    let (_dir, path, q) = queue(&small());
    let w = q.worker("jobs", &opts()).unwrap();
    let file = work_file(&path, 0);
    assert!(file.exists());
    assert!(matches!(
        q.delete_group("jobs"),
        Err(Error::GroupBusy { .. })
    ));
    drop(w);
    q.delete_group("jobs").unwrap();
    assert!(!file.exists());
    assert!(matches!(q.work_info("jobs"), Err(Error::UnknownGroup(_))));
}

#[test]
fn state_survives_reopening() {
    let (_dir, path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    publish(&q, 3);
    let a = w.poll(LONG).unwrap().unwrap().ticket;
    let _b = w.poll(LONG).unwrap().unwrap().ticket;
    w.ack(a).unwrap();
    drop(w);
    drop(q);
    let q = Queue::open(&path).unwrap();
    let pending = q.pending("jobs").unwrap();
    assert_eq!(
        pending.len(),
        1,
        "offset 1, given back by the dropped worker"
    );
    assert_eq!(pending[0].offset, 1);
    assert_eq!(pending[0].state, PendingState::Waiting);
    assert_eq!(pending[0].deliveries, 1);
    let mut w = q.worker("jobs", &opts()).unwrap();
    let job = w.poll(LONG).unwrap().unwrap();
    assert_eq!(
        (job.offset, job.deliveries),
        (1, 2),
        "acked 0 is not delivered"
    );
    let job = w.poll(LONG).unwrap().unwrap();
    assert_eq!((job.offset, job.deliveries), (2, 1));
}

#[test]
fn recovery_after_a_restart_makes_in_flight_records_due() {
    let (_dir, path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    publish(&q, 2);
    let a = w.poll(LONG).unwrap().unwrap().ticket;
    let _b = w.poll(LONG).unwrap().unwrap().ticket;
    w.ack(a).unwrap();
    drop(w);
    drop(q);
    for (file, at) in [
        (path.clone(), BOOT_ID_AT as u64),
        (work_file(&path, 0), WORK_BOOT_ID_AT),
    ] {
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.write_all_at(&[0x5a; 16], at).unwrap();
    }
    let q = Queue::open(&path).unwrap();
    let pending = q.pending("jobs").unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, PendingState::Waiting);
    let mut w = q.worker("jobs", &opts()).unwrap();
    let job = w.poll(LONG).unwrap().unwrap();
    assert_eq!(
        (job.offset, job.deliveries),
        (1, 2),
        "in flight at the crash: due now"
    );
}

#[test]
fn a_damaged_work_file_is_a_typed_error() {
    let (_dir, path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    publish(&q, 1);
    let t = w.poll(LONG).unwrap().unwrap().ticket;
    w.ack(t).unwrap();
    drop(w);
    let file = work_file(&path, 0);
    let good = std::fs::read(&file).unwrap();
    let fault = |q: &Queue| match q.worker("jobs", &opts()) {
        Err(Error::Corrupt {
            kind: Corruption::Work(f),
            ..
        }) => f,
        other => panic!("expected a damaged work file, got {other:?}"),
    };

    std::fs::write(&file, &good[..5000]).unwrap();
    assert!(matches!(fault(&q), WorkFault::Size { .. }));

    let mut bad = good.clone();
    bad[12] ^= 0x40;
    std::fs::write(&file, &bad).unwrap();
    assert_eq!(fault(&q), WorkFault::Checksum);

    let mut bad = good.clone();
    bad[0] = b'X';
    std::fs::write(&file, &bad).unwrap();
    assert_eq!(fault(&q), WorkFault::BadMagic);

    std::fs::remove_file(&file).unwrap();
    assert_eq!(fault(&q), WorkFault::Missing);

    // A hostile entry: offset 2 in offset 1's entry (an offset that does not map to the
    // entry holding it); the group's base is 1, so offset 1's entry is read at once.
    let mut bad = good.clone();
    let at = (WORK_ENTRIES_AT + WORK_ENTRY) as usize;
    bad[at..at + 16].copy_from_slice(&((2u128 << 3) | 1).to_le_bytes());
    std::fs::write(&file, &bad).unwrap();
    publish(&q, 1);
    // Joining reads the entry at the base already (to move the base over settled entries).
    let r = q
        .worker("jobs", &opts())
        .and_then(|mut w| w.poll(SHORT).map(|j| j.map(|j| j.offset)));
    match r {
        Err(Error::Corrupt {
            kind: Corruption::Work(WorkFault::Entry { offset: 1, .. }),
            ..
        }) => {}
        other => panic!("expected a damaged entry, got {other:?}"),
    }
}

#[test]
fn backoff_and_start_latest() {
    let (_dir, _path, q) = queue(&small());
    publish(&q, 5);
    let o = WorkOptions {
        start: Start::Latest,
        backoff: Backoff::Exponential {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(150),
        },
        ..opts()
    };
    let mut w = q.worker("late", &o).unwrap();
    assert!(w.poll(SHORT).unwrap().is_none(), "starts at the tail");
    publish(&q, 1);
    let job = w.poll(LONG).unwrap().unwrap();
    assert_eq!(job.offset, 5);
    let t = job.ticket;
    w.nack(t, None).unwrap();
    let pending = q.pending("late").unwrap();
    assert_eq!(pending[0].state, PendingState::Waiting);
    let started = Instant::now();
    let job = w.poll(LONG).unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(job.deliveries, 2);
}

#[test]
fn rejected_and_expired_records_carry_their_reason() {
    let (dir, _path, q) = queue(&small());
    let dlq_path = dir.path().join("dead.q");
    let dlq = Queue::create(&dlq_path, &small()).unwrap();
    let mut audit = dlq.consumer("audit").unwrap();
    let o = WorkOptions {
        dead_letter: Some(dlq_path),
        dead_letter_expired: true,
        ..opts()
    };
    let mut w = q.worker("jobs", &o).unwrap();
    let mut p = q.producer().unwrap();
    p.publish(b"bad").unwrap();
    let ttl = Schedule {
        delay: Duration::ZERO,
        ttl: Some(Duration::from_millis(1)),
    };
    p.publish_scheduled(b"late", &ttl).unwrap();
    let t = w.poll(LONG).unwrap().unwrap().ticket;
    w.reject(t).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(w.poll(SHORT).unwrap().is_none(), "expired, not delivered");
    let mut reasons = Vec::new();
    while let Some(m) = audit.poll(SHORT).unwrap() {
        let d = DeadLetter::parse(m.payload).unwrap();
        reasons.push((d.offset, d.reason, d.payload.to_vec()));
    }
    assert_eq!(
        reasons,
        [
            (0, DeadReason::Rejected, b"bad".to_vec()),
            (1, DeadReason::Expired, b"late".to_vec())
        ]
    );
    let info = q.work_info("jobs").unwrap();
    assert_eq!((info.dead_lettered, info.expired, info.base), (1, 1, 2));
}

#[test]
fn settlements_under_sync_and_batch_durability() {
    for durability in [
        shmq::Durability::Sync,
        shmq::Durability::Batch {
            max_delay: Duration::from_millis(5),
            max_bytes: 1 << 20,
        },
    ] {
        let (_dir, path, q) = queue(&Options {
            durability,
            ..small()
        });
        let mut w = q.worker("jobs", &opts()).unwrap();
        publish(&q, 3);
        for _ in 0..3 {
            let t = w.poll(LONG).unwrap().unwrap().ticket;
            std::thread::sleep(Duration::from_millis(6));
            w.ack(t).unwrap();
        }
        drop(w);
        drop(q);
        let q = Queue::open(&path).unwrap();
        let info = q.work_info("jobs").unwrap();
        assert_eq!((info.acked, info.base), (3, 3), "{durability:?}");
    }
}

/// A window's worth of aborted claims at the base: the worker that settles them (ACKED, no
/// record) moves the base over them, so the record after them is delivered; a group whose
/// settled entries fill the window is never stalled by them.
#[test]
fn a_window_of_aborted_claims_does_not_stall_the_group() {
    for aborted in [63, 64, 200] {
        let (_dir, _path, q) = queue(&small());
        let mut w = q.worker("jobs", &opts()).unwrap();
        let mut p = q.producer().unwrap();
        for _ in 0..aborted {
            drop(p.claim(8).unwrap()); // dropped uncommitted: aborted at once
        }
        p.publish(b"real").unwrap();
        let job = w
            .poll(LONG)
            .unwrap()
            .expect("the record after the aborted claims");
        assert_eq!((job.offset, job.payload), (aborted, &b"real"[..]));
        let t = job.ticket;
        w.ack(t).unwrap();
        assert_eq!(q.work_info("jobs").unwrap().base, aborted + 1);
    }
}

/// A worker killed asleep left its mark in the group's sleeper bitmap (and the group's bit
/// in the queue's sleeper word): the next owner of its member slot takes it out, so
/// producers stop paying a wake-up per commit for a sleeper that is gone.
#[test]
fn a_dead_sleepers_mark_is_cleared_by_the_next_owner_of_its_slot() {
    let (_dir, path, q) = queue(&small());
    drop(q.worker("jobs", &opts()).unwrap());
    let word = |file: &Path, at: u64| {
        let mut b = [0u8; 8];
        std::fs::File::open(file)
            .unwrap()
            .read_exact_at(&mut b, at)
            .unwrap();
        u64::from_le_bytes(b)
    };
    let put = |file: &Path, at: u64, v: u64| {
        let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
        f.write_all_at(&v.to_le_bytes(), at).unwrap();
    };
    // What a worker in member slot 0 killed in its sleep leaves: its mark, the group's bit.
    let work = work_file(&path, 0);
    put(&work, WORK_SLEEPERS_AT, 1);
    put(&path, DATA_WAITERS_AT, word(&path, DATA_WAITERS_AT) | 1);
    let w = q.worker("jobs", &opts()).unwrap();
    assert_eq!(word(&work, WORK_SLEEPERS_AT), 0, "the dead sleeper's mark");
    assert_eq!(
        word(&path, DATA_WAITERS_AT) & 1,
        0,
        "the group's sleeper bit"
    );
    drop(w);
}

/// A worker that takes over the member slot of a dropped (or dead) one takes that worker's
/// deliveries out of its hands: its tickets settle nothing, and the records are delivered
/// again at once, to anyone, their delivery count kept.
#[test]
fn a_new_owner_of_a_member_slot_does_not_inherit_its_deliveries() {
    let (_dir, _path, q) = queue(&small());
    let mut w1 = q.worker("jobs", &opts()).unwrap();
    publish(&q, 1);
    let t1 = w1.poll(LONG).unwrap().unwrap().ticket;
    drop(w1);
    let mut w2 = q.worker("jobs", &opts()).unwrap();
    assert!(
        matches!(w2.ack(t1), Err(Error::LeaseExpired { offset: 0, .. })),
        "a predecessor's ticket settled"
    );
    let started = Instant::now();
    let job = w2.poll(LONG).unwrap().expect("the released record");
    assert_eq!((job.offset, job.deliveries), (0, 2));
    assert!(started.elapsed() < Duration::from_secs(5), "not at once");
    let t = job.ticket;
    w2.ack(t).unwrap();
    assert_eq!(q.work_info("jobs").unwrap().acked, 1);
}

/// A record published without a delay is never held back: one worker taking records while a
/// producer publishes them gets every one at its first delivery, in offset order. (A worker
/// that read the clock before the record's commit once saw its timestamp in the future and
/// parked it as delayed, so the redelivery scan delivered it later, out of order. That took
/// the record's commit to fall between the worker's clock read and its read of the record
/// across a millisecond boundary: rare, so this checks the property more than it reproduces
/// the bug.)
#[test]
fn records_without_a_delay_come_in_order_to_a_lone_worker() {
    const N: u64 = 100_000;
    let (_dir, _path, q) = queue(&Options {
        capacity: 1 << 20,
        ..small()
    });
    let mut w = q.worker("jobs", &opts()).unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_secs(30)));
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            p.publish(&i.to_le_bytes()).unwrap();
        }
    });
    for expected in 0..N {
        let job = w.poll(LONG).unwrap().expect("a record within the timeout");
        assert_eq!(
            (job.offset, job.deliveries),
            (expected, 1),
            "out of order or delivered again"
        );
        let t = job.ticket;
        w.ack(t).unwrap();
    }
    producer.join().unwrap();
}

/// What an outsider does to a work file in use: truncated (`truncate -s 0`) or removed
/// (`rm`) under a worker, it is an error naming the work file at the worker's next calls
/// (found by the `SIGBUS` handler or the process's file watcher within its interval), never a
/// crash, and never a worker going on alone with an unlinked file.
#[test]
fn a_work_file_truncated_or_removed_under_a_worker_is_an_error() {
    let until_error = |w: &mut shmq::Worker| {
        let started = Instant::now();
        loop {
            match w.poll(Some(Duration::from_millis(50))) {
                Err(e) => return e,
                Ok(_) => assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no error 10 s after the damage"
                ),
            }
        }
    };

    let (_dir, path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    publish(&q, 2);
    let t = w.poll(LONG).unwrap().unwrap().ticket;
    w.ack(t).unwrap();
    let file = work_file(&path, 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(0)
        .unwrap();
    match until_error(&mut w) {
        Error::Truncated { path: p } => assert_eq!(p, file),
        e => panic!("expected Truncated, got {e:?}"),
    }
    drop(w);
    drop(q);

    let (_dir, path, q) = queue(&small());
    let mut w = q.worker("jobs", &opts()).unwrap();
    std::fs::remove_file(work_file(&path, 0)).unwrap();
    match until_error(&mut w) {
        Error::Detached {
            path: p,
            why: shmq::Detachment::Removed,
        } => assert_eq!(p, work_file(&path, 0)),
        e => panic!("expected Detached (removed), got {e:?}"),
    }
    // The queue itself is intact: a plain consumer still reads it.
    publish(&q, 1);
    let mut c = q.consumer("plain").unwrap();
    assert!(c.poll(LONG).unwrap().is_some());
}
