//! Many processes on one queue file: 4 producer processes and 2 consumer-group processes;
//! every group gets every record exactly once, all groups in one offset order, and each
//! producer's records in the order it published them.

mod common;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use shmq::{Options, Queue};

const PRODUCERS: u32 = 4;
const PER_PRODUCER: u32 = 25_000;
const MAX: usize = 300;

fn main() {
    match common::role().as_deref() {
        Some("producer") => producer(),
        Some("consumer") => consumer(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[("four_producers_two_groups", four_producers_two_groups)]),
    }
}

fn producer() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let id: u32 = common::arg("SHMQ_ID");
    let mut p = q.producer().unwrap();
    for seq in 0..PER_PRODUCER {
        p.publish(&common::payload(id, seq, MAX)).unwrap();
    }
}

/// Reads every record, checking order and integrity, and prints `count hash` where the hash
/// covers the sequence of (offset, producer, seq) so groups can be compared.
fn consumer() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let group: String = common::arg("SHMQ_GROUP");
    let mut c = q.consumer(&group).unwrap();
    let total = (PRODUCERS * PER_PRODUCER) as u64;
    let mut next_seq = vec![0u32; PRODUCERS as usize];
    let mut hasher = DefaultHasher::new();
    for expected in 0..total {
        let m = c
            .poll(Some(Duration::from_secs(30)))
            .unwrap()
            .expect("record within 30 s");
        assert_eq!(
            m.offset, expected,
            "{group}: offsets must be dense and in order"
        );
        let (p, seq) = common::check(m.payload).unwrap();
        assert_eq!(
            seq, next_seq[p as usize],
            "{group}: producer {p} out of order"
        );
        next_seq[p as usize] += 1;
        (m.offset, p, seq).hash(&mut hasher);
        if expected % 64 == 63 || expected + 1 == total {
            c.commit(expected).unwrap();
        }
    }
    assert!(
        c.poll(Some(Duration::from_millis(50))).unwrap().is_none(),
        "{group}: extra record"
    );
    println!("{total} {}", hasher.finish());
}

fn four_producers_two_groups() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let opts = Options {
        capacity: 1 << 20,
        max_message: MAX as u32,
        ..Options::default()
    };
    let q = Queue::create(&path, &opts).unwrap();
    // Create both gating groups at offset 0 before any producer starts.
    drop(q.consumer("g0").unwrap());
    drop(q.consumer("g1").unwrap());
    let env = |k: &str, v: String| (k.to_string(), v);
    let p = path.display().to_string();
    let consumers: Vec<_> = ["g0", "g1"]
        .iter()
        .map(|g| {
            let e = [
                env("SHMQ_PATH", p.clone()),
                env("SHMQ_GROUP", g.to_string()),
            ];
            common::spawn(
                "consumer",
                &e.iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            common::spawn(
                "producer",
                &[("SHMQ_PATH", p.clone()), ("SHMQ_ID", id.to_string())],
            )
        })
        .collect();
    for (i, child) in producers.into_iter().enumerate() {
        let (_, status) = common::wait(child, Duration::from_secs(120), &format!("producer {i}"));
        assert!(status.success(), "producer {i} failed");
    }
    let outs: Vec<String> = consumers
        .into_iter()
        .enumerate()
        .map(|(i, child)| {
            let (out, status) =
                common::wait(child, Duration::from_secs(120), &format!("consumer {i}"));
            assert!(status.success(), "consumer {i} failed");
            out
        })
        .collect();
    let expected = (PRODUCERS * PER_PRODUCER).to_string();
    assert!(
        outs[0].starts_with(&expected),
        "group g0 reported {:?}",
        outs[0]
    );
    assert_eq!(
        outs[0], outs[1],
        "both groups must see the same records in the same order"
    );
    let infos = q.groups();
    assert!(infos
        .iter()
        .all(|g| g.committed == (PRODUCERS * PER_PRODUCER) as u64));
}
