//! Transactions across a topic's partitions (`Topic::transactional_producer`): all of a
//! transaction's records become visible at once or never, also when its producer is killed
//! at any point of its commit (named crash points, and at random), and a restarted holder of
//! the id settles what the dead one left.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use std::os::unix::fs::FileExt;

use common::format::Layout;
use shmq::{Error, MemberOptions, Options, Queue, Start, Subscribe, Topic, TopicOptions};

const PARTITIONS: u32 = 4;
const CLAIM_TIMEOUT: Duration = Duration::from_millis(200);
/// Longest wait for any phase; a stuck process fails the test instead of hanging it.
const PHASE: Duration = Duration::from_secs(60);

fn main() {
    match common::role().as_deref() {
        Some("committer") => committer(),
        Some("transformer") => transformer(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            ("commit_abort_and_busy_id", commit_abort_and_busy_id),
            ("killed_at_each_crash_point", killed_at_each_crash_point),
            ("random_kills_never_show_part", random_kills),
            (
                "a_damaged_transaction_file_is_an_error",
                damaged_transaction_file,
            ),
            (
                "consume_transform_produce_exactly_once_under_kills",
                consume_transform_produce,
            ),
            (
                "a_damaged_participant_list_is_an_error",
                damaged_participant_list,
            ),
            (
                "a_transactional_producer_inherited_across_fork_is_refused",
                forked_holder,
            ),
        ]),
    }
}

fn create(dir: &Path) -> Topic {
    let queue = Options {
        capacity: 1 << 20,
        max_message: 256,
        claim_timeout: CLAIM_TIMEOUT,
        ..Options::default()
    };
    Topic::create(
        dir.join("t.topic"),
        &TopicOptions {
            partitions: PARTITIONS,
            queue,
        },
    )
    .unwrap()
}

/// A member of group "check" that reads every record from the start.
fn checker(topic: &Topic) -> shmq::TopicConsumer {
    topic
        .subscribe(
            "check",
            &MemberOptions {
                subscribe: Subscribe {
                    start: Start::Earliest,
                    ..Subscribe::default()
                },
                ..MemberOptions::default()
            },
        )
        .unwrap()
}

/// A record of transaction `txn` (an incarnation-unique number) of producer `id`: its index
/// and the transaction's size.
fn value(id: u64, txn: u64, index: u64, size: u64) -> Vec<u8> {
    [id, txn, index, size]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect()
}

fn parse(v: &[u8]) -> [u64; 4] {
    assert_eq!(v.len(), 32, "a record of another shape: {v:?}");
    std::array::from_fn(|i| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap()))
}

/// Reads everything until nothing arrived for `quiet`: `(id, txn) -> indexes seen`.
fn read_all(c: &mut shmq::TopicConsumer, quiet: Duration) -> BTreeMap<(u64, u64), Vec<u64>> {
    let mut seen: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    let start = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        assert!(
            start.elapsed() < PHASE,
            "reading took longer than {PHASE:?}"
        );
        if let Some(m) = c.poll(Some(Duration::from_millis(20))).unwrap() {
            let [id, txn, index, size] = parse(m.value);
            let entry = seen.entry((id, txn)).or_default();
            assert!(
                !entry.contains(&index),
                "({id}, {txn}) record {index} twice"
            );
            entry.push(index);
            assert!(entry.len() as u64 <= size);
            last = Instant::now();
        }
    }
    seen
}

/// Every transaction seen whole: `size` records.
fn assert_whole(seen: &BTreeMap<(u64, u64), Vec<u64>>, size_of: impl Fn(u64) -> u64) {
    for (&(id, txn), indexes) in seen {
        assert_eq!(
            indexes.len() as u64,
            size_of(txn),
            "transaction ({id}, {txn}) seen in part: {indexes:?}"
        );
    }
}

/// The size of transaction `txn` in these tests: 1 to 8 records.
fn size(txn: u64) -> u64 {
    1 + txn % 8
}

/// Child: opens transactional id `SHMQ_ID` and commits `SHMQ_COUNT` transactions (0: until
/// killed), numbered from `SHMQ_BASE`, each of `size(n)` records spread over the partitions,
/// logging each committed number to `SHMQ_LOG`.
fn committer() {
    let topic = Topic::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let id: u64 = common::arg("SHMQ_ID");
    let base: u64 = common::arg("SHMQ_BASE");
    let count: u64 = common::arg("SHMQ_COUNT");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(common::arg::<String>("SHMQ_LOG"))
        .unwrap();
    let mut p = topic.transactional_producer(&format!("p{id}")).unwrap();
    let mut n = base;
    while count == 0 || n < base + count {
        let k = size(n);
        for i in 0..k {
            p.send_to(
                ((n + i) % PARTITIONS as u64) as u32,
                None,
                &value(id, n, i, k),
            )
            .unwrap();
        }
        let placed = p.commit().unwrap();
        assert_eq!(placed.len() as u64, k);
        common::log_line(&mut log, &n.to_string());
        n += 1;
    }
}

fn spawn(topic: &Topic, id: u64, base: u64, count: u64, log: &Path, crash: Option<&str>) -> Child {
    let mut env = vec![
        ("SHMQ_PATH", topic.path().display().to_string()),
        ("SHMQ_ID", id.to_string()),
        ("SHMQ_BASE", base.to_string()),
        ("SHMQ_COUNT", count.to_string()),
        ("SHMQ_LOG", log.display().to_string()),
    ];
    if let Some(point) = crash {
        env.push(("SHMQ_CRASH_AT", point.to_string()));
    }
    common::spawn("committer", &env)
}

/// In one process: a committed transaction is seen whole in every partition, in send order
/// per partition, at the offsets `commit` returned; nothing is seen before the commit; an
/// aborted one is never seen; a second holder of the id is refused while the first lives and
/// admitted after it is dropped.
fn commit_abort_and_busy_id() {
    let dir = tempfile::tempdir().unwrap();
    let topic = create(dir.path());
    let mut c = checker(&topic);
    let mut p = topic.transactional_producer("orders").unwrap();
    for i in 0..8 {
        p.send_to(i % PARTITIONS, Some(b"k"), &value(0, 1, i as u64, 8))
            .unwrap();
    }
    assert_eq!(p.pending(), 8);
    assert!(c.poll(Some(Duration::from_millis(50))).unwrap().is_none());
    let placed = p.commit().unwrap();
    assert_eq!(placed.len(), 8);
    for (i, at) in placed.iter().enumerate() {
        assert_eq!(at.partition, i as u32 % PARTITIONS);
        assert_eq!(at.offset, i as u64 / PARTITIONS as u64);
    }
    let seen = read_all(&mut c, Duration::from_millis(200));
    assert_eq!(seen.get(&(0, 1)).map(Vec::len), Some(8));

    p.send(&value(0, 2, 0, 1)).unwrap();
    p.abort();
    assert_eq!(p.pending(), 0);
    assert!(p.commit().unwrap().is_empty(), "an empty transaction");
    assert!(read_all(&mut c, Duration::from_millis(100)).is_empty());

    match topic.transactional_producer("orders") {
        Err(Error::TransactionalIdBusy { id, pid, .. }) => {
            assert_eq!((id.as_str(), pid), ("orders", std::process::id()))
        }
        other => panic!("a second holder of a live id: {other:?}"),
    }
    assert!(matches!(
        topic.transactional_producer(""),
        Err(Error::InvalidArgument { .. })
    ));
    drop(p);
    let mut again = topic.transactional_producer("orders").unwrap();
    again.send_to(3, None, &value(0, 3, 0, 1)).unwrap();
    assert_eq!(again.commit().unwrap()[0].partition, 3);
    let seen = read_all(&mut c, Duration::from_millis(200));
    assert_eq!(seen.get(&(0, 3)).map(Vec::len), Some(1));
    // A growth made through another handle is picked up at the next send.
    Topic::open(topic.path()).unwrap().grow(6).unwrap();
    again.send_to(5, None, &value(0, 4, 0, 1)).unwrap();
    assert_eq!(again.commit().unwrap()[0].partition, 5);
    println!("  8 records over 4 partitions committed whole; abort, busy id, reopen as documented");
}

/// A committer killed at each crash point of a transaction of 7 records over 4 partitions:
/// readers see all of it (killed after the commit point) or none of it, within the claim
/// timeout plus slack, without a restart; a restarted holder of the id then commits its next
/// transaction normally. The n-th `publish.before_header` is the n-th record prepared.
fn killed_at_each_crash_point() {
    let dir = tempfile::tempdir().unwrap();
    for (point, visible) in [
        ("publish.after_claim:2", false),
        ("publish.before_header:3", false),
        ("publish.before_commit:7", false),
        ("txn.after_list:2", false),
        ("txn.after_prepare", false),
        ("txn.after_commit_point", true),
    ] {
        let sub = dir.path().join(point.replace([':', '.'], "_"));
        std::fs::create_dir(&sub).unwrap();
        let topic = create(&sub);
        let mut c = checker(&topic);
        let log = sub.join("log");
        // Transaction 6 has 7 records.
        let child = spawn(&topic, 1, 6, 1, &log, Some(point));
        let (_, status) = common::wait(child, PHASE, "committer");
        assert!(common::killed(status), "{point}: not killed there");
        let start = Instant::now();
        let seen = read_all(&mut c, CLAIM_TIMEOUT * 3);
        let took = start.elapsed();
        assert_whole(&seen, size);
        assert_eq!(
            seen.contains_key(&(1, 6)),
            visible,
            "{point}: visibility of the killed transaction"
        );
        assert!(
            took < CLAIM_TIMEOUT * 3 + Duration::from_secs(10),
            "{point}: readers took {took:?}"
        );
        // The id's next holder settles what is left and goes on.
        let child = spawn(&topic, 1, 100, 1, &log, None);
        let (out, status) = common::wait(child, PHASE, "committer");
        assert!(
            status.success(),
            "{point}: restarted committer failed: {out}"
        );
        let seen = read_all(&mut c, CLAIM_TIMEOUT);
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&(1, 100)], "{point}");
        assert_whole(&seen, size);
        println!(
            "  {point}: {} in {took:?}",
            if visible { "seen whole" } else { "never seen" }
        );
    }
}

/// Two committers, each its own transactional id, SIGKILLed at random 60 times in all and
/// restarted with the same id (numbering on from a new base): no transaction is ever seen in
/// part, every acknowledged one is seen whole, and readers are never stalled past the claim
/// timeout plus slack.
fn random_kills() {
    let dir = tempfile::tempdir().unwrap();
    let topic = create(dir.path());
    let mut c = checker(&topic);
    let mut rng = common::Rng::new();
    let logs = [0, 1].map(|id| dir.path().join(format!("log{id}")));
    let mut incarnation = 0u64;
    let mut next_base = || {
        incarnation += 1;
        incarnation << 32
    };
    let mut alive: Vec<(u64, Child)> = (0..2)
        .map(|id| {
            (
                id,
                spawn(&topic, id, next_base(), 0, &logs[id as usize], None),
            )
        })
        .collect();
    let mut seen: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    const KILLS: u32 = 60;
    for _ in 0..KILLS {
        let deadline = Instant::now() + Duration::from_millis(rng.range(5, 40));
        while Instant::now() < deadline {
            if let Some(m) = c.poll(Some(Duration::from_millis(1))).unwrap() {
                let [id, txn, index, _] = parse(m.value);
                seen.entry((id, txn)).or_default().push(index);
            }
        }
        let victim = rng.range(0, alive.len() as u64) as usize;
        let (id, child) = alive.swap_remove(victim);
        common::kill(child);
        alive.push((
            id,
            spawn(&topic, id, next_base(), 0, &logs[id as usize], None),
        ));
    }
    for (_, child) in alive.drain(..) {
        common::kill(child);
    }
    let start = Instant::now();
    for (key, indexes) in read_all(&mut c, CLAIM_TIMEOUT * 3) {
        seen.entry(key).or_default().extend(indexes);
    }
    let drained = start.elapsed();
    assert_whole(&seen, size);
    let mut acked = 0;
    for id in 0..2u64 {
        for line in common::read_log(&logs[id as usize]) {
            let n = line[0];
            assert!(
                seen.contains_key(&(id, n)),
                "acknowledged transaction ({id}, {n}) not seen"
            );
            acked += 1;
        }
    }
    let records: usize = seen.values().map(Vec::len).sum();
    println!(
        "  {KILLS} kills: {} transactions ({records} records) seen whole, {acked} acknowledged, \
         none in part; drained in {drained:?}",
        seen.len()
    );
    assert!(acked > 100, "too little traffic to mean anything: {acked}");
}

/// Where the transaction file keeps slot 0's state word (FORMAT.md, "Transaction file").
const SLOT0_STATE: u64 = 4096 + 16;

/// A prepared record whose transaction file is damaged, removed or truncated, or whose link
/// is not one: readers give errors or settle it (aborted), never panic or wait past the claim
/// timeout. The prepared record is made by hand from a committed one: its tag's flags set to
/// prepared (3) and its schedule word to the link of slot 0's epoch 1, whose state is
/// PREPARING again, as a producer killed before its commit point leaves them.
fn damaged_transaction_file() {
    for case in [
        "intact",
        "garbage state",
        "not a link",
        "removed",
        "truncated",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let topic = create(dir.path());
        let mut p = topic.transactional_producer("t").unwrap();
        p.send_to(0, None, &value(9, 1, 0, 1)).unwrap();
        let at = p.commit().unwrap()[0];
        drop(p);
        let part = &topic.partitions()[0];
        let layout = Layout::of(part);
        let q = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(part.path())
            .unwrap();
        let mut word = [0u8; 8];
        q.read_exact_at(&mut word, layout.pos_at(at.offset))
            .unwrap();
        let pos = u64::from_le_bytes(word);
        let link: u64 = 1 << 63 | 1;
        let schedule = if case == "not a link" { 12345 } else { link };
        q.write_all_at(&schedule.to_le_bytes(), layout.data(pos) + 24)
            .unwrap();
        q.write_all_at(
            &(at.offset << 3 | 3).to_le_bytes(),
            layout.tag_at(at.offset),
        )
        .unwrap();
        let txns = topic.path().join("transactions");
        let t = std::fs::OpenOptions::new().write(true).open(&txns).unwrap();
        let state: u64 = if case == "garbage state" {
            u64::MAX
        } else {
            1 << 2 | 1
        };
        t.write_all_at(&state.to_le_bytes(), SLOT0_STATE).unwrap();
        match case {
            "removed" => std::fs::remove_file(&txns).unwrap(),
            "truncated" => t.set_len(100).unwrap(),
            _ => {}
        }
        // A fresh open, so no process has the transaction file mapped already.
        let topic = Topic::open(topic.path()).unwrap();
        let mut c = checker(&topic);
        let start = Instant::now();
        let mut outcome = None;
        while start.elapsed() < CLAIM_TIMEOUT * 4 {
            match c.poll(Some(Duration::from_millis(50))) {
                Ok(Some(m)) => panic!("{case}: read a record of an aborted transaction: {m:?}"),
                Ok(None) => {}
                Err(e) => {
                    outcome = Some(e.to_string());
                    break;
                }
            }
        }
        let tag = {
            q.read_exact_at(&mut word, layout.tag_at(at.offset))
                .unwrap();
            u64::from_le_bytes(word) & 7
        };
        match case {
            // Settled as its transaction went: aborted (it was still preparing), or for a
            // state of another epoch or a word that is no link, aborted as damaged.
            "intact" | "garbage state" | "not a link" => {
                assert_eq!(outcome, None, "{case}");
                assert_eq!(tag, 2, "{case}: the prepared record was not aborted");
            }
            // Left prepared (its transaction may have committed), the error naming the file.
            _ => {
                let e = outcome
                    .as_deref()
                    .unwrap_or_else(|| panic!("{case}: no error"));
                assert!(e.contains("transactions"), "{case}: {e}");
                assert_eq!(
                    tag, 3,
                    "{case}: the record was settled without its transaction"
                );
            }
        }
        println!(
            "  {case}: {}",
            if tag == 2 {
                "aborted".into()
            } else {
                format!("error: {}", outcome.unwrap_or_default())
            }
        );
    }
}

/// Input records of the consume-transform-produce test.
const INPUTS: u64 = 30_000;
/// Partitions of its input topic: one transformer (and transactional id) each.
const INPUT_PARTITIONS: u32 = 2;

/// Child: the transformer of input partition `SHMQ_PART` in the consume-transform-produce
/// test. Opens its transactional id `xform-<p>` on the output topic first (settling what a
/// killed predecessor left), then group "xform" of the input topic's partition `p` (its queue
/// file: one reader per partition, as the id is), and turns each input record `i` into the
/// output record `(7, i, 0, 1)` keyed by `i`, committing 1 to 5 records' outputs with their
/// input offsets in one transaction, until the group has committed `SHMQ_COUNT` records.
fn transformer() {
    let topic = Topic::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let part: u32 = common::arg("SHMQ_PART");
    let count: u64 = common::arg("SHMQ_COUNT");
    let mut tx = topic
        .transactional_producer(&format!("xform-{part}"))
        .unwrap();
    let input = Topic::open(common::arg::<String>("SHMQ_INPUT")).unwrap();
    let mut c = input.partitions()[part as usize].consumer("xform").unwrap();
    while c.committed() < count {
        let mut last = None;
        // 1 to 5 inputs per transaction.
        for _ in 0..1 + c.committed() % 5 {
            let Some(m) = c.poll(Some(Duration::from_millis(100))).unwrap() else {
                break;
            };
            // The topic's framing (FORMAT.md, "Keyed-record framing") ends with the value.
            let input = &m.payload[m.payload.len() - 8..];
            let i = u64::from_le_bytes(input.try_into().unwrap());
            last = Some(m.offset);
            tx.send_keyed(&i.to_le_bytes(), &value(7, i, 0, 1)).unwrap();
        }
        if let Some(offset) = last {
            tx.commit_consumed(&mut c, offset).unwrap();
        }
    }
}

/// Consume-transform-produce between two topics: one transformer per input partition, each
/// killed at the crash points around its commit (before the commit point, after it, between
/// it and the input commit) and then both at random, restarted each time, leave the output
/// topic holding each input's derived record exactly once.
fn consume_transform_produce() {
    let dir = tempfile::tempdir().unwrap();
    let topic = create(dir.path());
    let mut out = checker(&topic);
    let input_dir = dir.path().join("in.topic");
    let input = Topic::create(
        &input_dir,
        &TopicOptions {
            partitions: INPUT_PARTITIONS,
            queue: Options {
                capacity: 4 << 20,
                max_message: 64,
                claim_timeout: CLAIM_TIMEOUT,
                ..Options::default()
            },
        },
    )
    .unwrap();
    for q in input.partitions() {
        drop(q.consumer("xform").unwrap());
    }
    let mut p = input.producer().unwrap();
    for i in 0..INPUTS {
        p.publish(&i.to_le_bytes()).unwrap();
    }
    let counts: Vec<u64> = input.partitions().iter().map(Queue::tail_offset).collect();
    assert_eq!(counts.iter().sum::<u64>(), INPUTS);
    let env = |part: u32, crash: Option<&str>| {
        let mut env = vec![
            ("SHMQ_PATH", topic.path().display().to_string()),
            ("SHMQ_INPUT", input_dir.display().to_string()),
            ("SHMQ_PART", part.to_string()),
            ("SHMQ_COUNT", counts[part as usize].to_string()),
        ];
        if let Some(point) = crash {
            env.push(("SHMQ_CRASH_AT", point.to_string()));
        }
        env
    };
    for point in [
        "publish.before_commit:4",
        "txn.after_prepare:3",
        "txn.after_commit_point:5",
        "txn.before_input_commit:7",
    ] {
        for part in 0..INPUT_PARTITIONS {
            let child = common::spawn("transformer", &env(part, Some(point)));
            let (_, status) = common::wait(child, PHASE, "transformer");
            assert!(common::killed(status), "{point}: not killed there");
        }
    }
    let mut rng = common::Rng::new();
    let mut kills = 0;
    let start = Instant::now();
    let mut running: Vec<(u32, Child)> = (0..INPUT_PARTITIONS)
        .map(|part| (part, common::spawn("transformer", &env(part, None))))
        .collect();
    let mut finished = 0;
    while finished < INPUT_PARTITIONS {
        assert!(
            start.elapsed() < PHASE,
            "the transformers took longer than {PHASE:?}"
        );
        std::thread::sleep(Duration::from_millis(rng.range(2, 10)));
        let mut still = Vec::new();
        for (part, mut child) in running.drain(..) {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "transformer {part} failed: {status}");
                finished += 1;
            } else {
                still.push((part, child));
            }
        }
        if kills < 40 && !still.is_empty() {
            let victim = rng.range(0, still.len() as u64) as usize;
            let (part, child) = still.swap_remove(victim);
            common::kill(child);
            kills += 1;
            still.push((part, common::spawn("transformer", &env(part, None))));
        }
        running = still;
    }
    assert!(
        kills >= 5,
        "the transformers were killed only {kills} times at random"
    );
    let seen = read_all(&mut out, CLAIM_TIMEOUT * 3);
    let inputs: Vec<u64> = seen
        .keys()
        .map(|&(id, i)| {
            assert_eq!(id, 7);
            i
        })
        .collect();
    // `read_all` fails on a record seen twice; every input is here once.
    assert_eq!(
        inputs,
        (0..INPUTS).collect::<Vec<_>>(),
        "an input's output is missing"
    );
    println!(
        "  2 input partitions, 4 crash points each and {kills} random kills in {:?}: {INPUTS} \
         inputs, each output once",
        start.elapsed()
    );
}

/// A participant list that names offsets no producer claimed (past the partition's tail), as
/// a damaged file can: the id's next holder refuses it with an error naming the file instead of
/// aborting other producers' records there, and a count no ring can hold is refused too.
fn damaged_participant_list() {
    for (first, count) in [(1000u64, 5u32), (0, u32::MAX)] {
        let dir = tempfile::tempdir().unwrap();
        let topic = create(dir.path());
        let mut p = topic.transactional_producer("t").unwrap();
        p.send_to(0, None, &value(9, 1, 0, 1)).unwrap();
        p.commit().unwrap();
        drop(p);
        let txns = topic.path().join("transactions");
        let t = std::fs::OpenOptions::new().write(true).open(&txns).unwrap();
        // Slot 0 (FORMAT.md, "Transaction file"): epoch 2 preparing, one participant.
        t.write_all_at(&(2u64 << 2 | 1).to_le_bytes(), SLOT0_STATE)
            .unwrap();
        t.write_all_at(&1u64.to_le_bytes(), 4096 + 128).unwrap();
        t.write_all_at(&(u64::from(count) << 32).to_le_bytes(), 4096 + 136)
            .unwrap();
        t.write_all_at(&first.to_le_bytes(), 4096 + 144).unwrap();
        match topic.transactional_producer("t") {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, txns),
            other => panic!("{first}+{count}: expected a damaged transaction file, got {other:?}"),
        }
        // After a machine restart (another boot id in the file) the list speaks of the machine
        // before it: the file's recovery drops it, and the id opens.
        t.write_all_at(&[0x5a; 16], 256).unwrap();
        let mut again = topic.transactional_producer("t").unwrap();
        again.send_to(1, None, &value(9, 3, 0, 1)).unwrap();
        assert_eq!(again.commit().unwrap()[0].partition, 1);
        drop(again);
        // Nothing of partition 0 was touched: its record is still read, and a new publish
        // there gets the next offset.
        let mut c = checker(&topic);
        assert_eq!(read_all(&mut c, Duration::from_millis(100)).len(), 2);
        let mut producer = topic.producer().unwrap();
        assert_eq!(producer.publish_to(0, None, b"x").unwrap(), 1);
    }
    println!("  participants past the tail or beyond a ring: refused, nothing aborted");
}

/// A transactional producer made before `fork` is the parent's: in the child its commit fails
/// with `Forked` naming the parent, nothing of the child's records is written, dropping it
/// there leaves the id to the parent, and the child cannot take the id while the parent
/// holds it. The parent then commits as before.
fn forked_holder() {
    let dir = tempfile::tempdir().unwrap();
    let topic = create(dir.path());
    let mut c = checker(&topic);
    let mut tx = topic.transactional_producer("t").unwrap();
    let parent = std::process::id();
    // SAFETY: the child uses only shmq and its own memory, and ends in `common::in_child`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        common::in_child(|| {
            if tx.send_to(0, None, &value(5, 1, 0, 1)).is_err() {
                return 1;
            }
            match tx.commit() {
                Err(Error::Forked { pid, .. }) if pid == parent => {}
                _ => return 2,
            }
            drop(tx);
            match topic.transactional_producer("t") {
                Err(Error::TransactionalIdBusy { pid, .. }) if pid == parent => 0,
                _ => 3,
            }
        });
    }
    let code = common::reap(pid, PHASE);
    assert_eq!(
        code,
        Some(0),
        "the forked child (1: send, 2: its commit through the parent's producer, 3: the id)"
    );
    assert!(
        read_all(&mut c, Duration::from_millis(100)).is_empty(),
        "the child's record"
    );
    tx.send_to(1, None, &value(5, 2, 0, 1)).unwrap();
    assert_eq!(tx.commit().unwrap()[0].partition, 1);
    let seen = read_all(&mut c, Duration::from_millis(200));
    assert_eq!(seen.keys().collect::<Vec<_>>(), [&(5, 2)]);
    println!("  the child's inherited producer was refused (Forked); the parent kept the id");
}
