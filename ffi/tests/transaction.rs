//! Transactions through the C ABI: a C program (`tests/c/transaction.c`) aborts one
//! transaction, commits one over every partition of a topic and drops a third; a Rust reader
//! finds every record of the committed one where the C program was told they went, and none
//! of the others. Then the id busy while a Rust handle holds it, consume-transform-produce
//! through `shmq_txn_commit_consumed`, and the argument checks; the C program again under
//! valgrind.

mod build;
mod common;
#[path = "../../tests/common/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::ptr::null_mut;
use std::time::{Duration, Instant};

use build::c_program;
use common::{cpath, last_error};
use shmq::*;
use shmq_core::{
    MemberOptions, Options, Queue, Start, Subscribe, Topic, TopicOptions, TransactionState,
};
use shmq_status::*;

/// Generous: the VM is loaded and other builds run at the same time.
const DEADLINE: Duration = Duration::from_secs(30);

fn create(dir: &Path, partitions: u32) -> Topic {
    let queue = Options {
        capacity: 1 << 16,
        max_message: 256,
        ..Options::default()
    };
    Topic::create(dir.join("t.topic"), &TopicOptions { partitions, queue }).unwrap()
}

/// Longest the C program may run (valgrind included) before the test fails.
const LIMIT: Duration = Duration::from_secs(240);

const VALGRIND: &[&str] = &[
    "valgrind",
    "--quiet",
    "--error-exitcode=1",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect,possible",
];

/// Runs `wrap... transaction TOPIC ID COUNT` (killed and reaped past [`LIMIT`]): its exit
/// code and standard output. Its output is a few lines, well within a pipe's buffer.
fn run_c(wrap: &[&str], topic: &Path, id: &str, count: u64) -> (i32, String) {
    let program = c_program("tests/c", "transaction");
    let mut command = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    let mut child = command
        .arg(topic)
        .args([id, &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the transaction program");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the transaction program ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.is_empty(), "the C program reported: {stderr}");
    (status.code().expect("exited"), stdout)
}

/// Every record of `topic` from the start, `(partition, offset) -> value`, read until `want`
/// arrived and then 200 ms more passed quietly.
fn read_all(topic: &Topic, want: usize) -> BTreeMap<(u32, u64), String> {
    let options = MemberOptions {
        subscribe: Subscribe {
            start: Start::Earliest,
            ..Subscribe::default()
        },
        ..MemberOptions::default()
    };
    let mut c = topic.subscribe("check", &options).unwrap();
    let mut seen = BTreeMap::new();
    let start = Instant::now();
    let mut quiet = Instant::now();
    while seen.len() < want || quiet.elapsed() < Duration::from_millis(200) {
        assert!(start.elapsed() < DEADLINE, "read {} of {want}", seen.len());
        if let Some(m) = c.poll(Some(Duration::from_millis(20))).unwrap() {
            let value = String::from_utf8(m.value.to_vec()).unwrap();
            assert!(seen.insert((m.partition, m.offset), value).is_none());
            quiet = Instant::now();
        }
    }
    seen
}

#[test]
fn a_c_transaction_over_every_partition_arrives_whole_and_an_aborted_one_never() {
    let dir = tempfile::tempdir().unwrap();
    let topic = create(dir.path(), 3);
    committed_whole(&topic, &[]);
    // While a Rust handle holds the id, the C program is refused with SHMQ_EBUSY.
    let held = topic.transactional_producer("c-txn").unwrap();
    let (code, out) = run_c(&[], topic.path(), "c-txn", 1);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("held by live process"), "{out}");
    let t = &topic.transactions().unwrap()[0];
    assert_eq!((t.holder, t.holder_alive), (Some(std::process::id()), true));
    drop(held);
}

#[test]
fn the_c_transaction_under_valgrind() {
    if !tools::require_valgrind("the C transaction program") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    committed_whole(&create(dir.path(), 3), VALGRIND);
}

/// Runs the C program (under `wrap`) with 9 records on a fresh 3-partition `topic` and checks
/// that exactly its committed transaction arrived, where it was told, and the id's state.
fn committed_whole(topic: &Topic, wrap: &[&str]) {
    let (code, out) = run_c(wrap, topic.path(), "c-txn", 9);
    assert_eq!(code, 0, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("partitions 3 committed 9"));
    let told: Vec<(u32, u64)> = lines
        .map(|l| {
            let (p, o) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect();
    assert_eq!(told.len(), 9);
    let seen = read_all(topic, 9);
    assert_eq!(seen.len(), 9, "only the committed transaction: {seen:?}");
    for (i, place) in told.iter().enumerate() {
        assert_eq!(seen.get(place), Some(&format!("txn {i}")), "record {i}");
    }
    let partitions: std::collections::BTreeSet<u32> = told.iter().map(|(p, _)| *p).collect();
    assert!(partitions.len() >= 2, "one transaction over {partitions:?}");
    // One epoch: the abort and the empty commit start none.
    let txns = topic.transactions().unwrap();
    assert_eq!(txns.len(), 1);
    let t = &txns[0];
    assert_eq!(t.id.as_deref(), Some("c-txn"));
    assert_eq!(
        (t.epoch, t.state, t.settled),
        (1, TransactionState::Committed, 1)
    );
    assert!(!t.holder_alive, "the C program exited: {t:?}");
}

#[test]
fn commit_consumed_moves_the_input_group_with_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.q");
    let input = Queue::create(&input_path, &Options::default()).unwrap();
    let mut p = input.producer().unwrap();
    for i in 0..3u8 {
        p.publish(&[i]).unwrap();
    }
    let topic = create(dir.path(), 2);
    let (mut tq, mut q, mut txn, mut c) = (null_mut(), null_mut(), null_mut(), null_mut());
    let mut places = [shmq_txn_place {
        partition: u32::MAX,
        offset: u64::MAX,
    }; 2];
    let mut n = 0usize;
    // SAFETY: valid C strings and out-pointers; every handle made here is freed below.
    unsafe {
        assert_eq!(
            shmq_topic_open(cpath(topic.path()).as_ptr(), &mut tq),
            SHMQ_OK
        );
        assert_eq!(shmq_open(cpath(&input_path).as_ptr(), &mut q), SHMQ_OK);
        // The transactional producer first, then the consumer (as documented).
        let st = shmq_transactional_producer_new(tq, c"xform".as_ptr(), &mut txn);
        assert_eq!(st, SHMQ_OK, "{}", last_error());
        assert_eq!(shmq_consumer_new(q, c"xform".as_ptr(), &mut c), SHMQ_OK);
        let mut m = std::mem::zeroed::<shmq_message>();
        for _ in 0..2 {
            assert_eq!(shmq_poll(c, 1_000_000_000, &mut m), SHMQ_OK);
            let out = [b'o', *m.data];
            assert_eq!(shmq_txn_send(txn, out.as_ptr(), 2, null_mut()), SHMQ_OK);
        }
        let st = shmq_txn_commit_consumed(txn, c, m.offset, places.as_mut_ptr(), 2, &mut n);
        assert_eq!(st, SHMQ_OK, "{}", last_error());
        assert_eq!(n, 2);
        shmq_consumer_free(c);
        shmq_transactional_producer_free(txn);
        shmq_close(q);
        shmq_topic_close(tq);
    }
    let seen = read_all(&topic, 2);
    let values: Vec<&String> = places
        .iter()
        .map(|p| &seen[&(p.partition, p.offset)])
        .collect();
    assert_eq!(values, ["o\u{0}", "o\u{1}"]);
    // The group resumes after the two inputs the transaction consumed.
    let mut again = input.consumer("xform").unwrap();
    let next = again.poll(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!((next.offset, next.payload), (2, &[2u8][..]));
}

#[test]
fn argument_checks() {
    let dir = tempfile::tempdir().unwrap();
    let topic = create(dir.path(), 2);
    let mut t = null_mut();
    // SAFETY: valid arguments where not NULL on purpose; every handle made is freed below.
    unsafe {
        assert_eq!(
            shmq_topic_open(cpath(topic.path()).as_ptr(), &mut t),
            SHMQ_OK
        );
        let mut txn = null_mut();
        assert_eq!(
            shmq_transactional_producer_new(t, std::ptr::null(), &mut txn),
            SHMQ_EINVAL
        );
        assert_eq!(
            shmq_transactional_producer_new(t, c"".as_ptr(), &mut txn),
            SHMQ_EINVAL
        );
        assert!(txn.is_null(), "out written on failure");
        assert_eq!(
            shmq_transactional_producer_new(t, c"ids".as_ptr(), &mut txn),
            SHMQ_OK
        );
        let mut busy = null_mut();
        assert_eq!(
            shmq_transactional_producer_new(t, c"ids".as_ptr(), &mut busy),
            SHMQ_EBUSY
        );
        assert!(busy.is_null(), "out written on failure");
        assert_eq!(
            shmq_txn_send_to(txn, 2, std::ptr::null(), 0, b"x".as_ptr(), 1),
            SHMQ_EINVAL
        );
        assert!(last_error().contains("partition"), "{}", last_error());
        let big = vec![0u8; 300];
        assert_eq!(
            shmq_txn_send(txn, big.as_ptr(), big.len(), null_mut()),
            SHMQ_ETOOBIG
        );
        assert_eq!(
            shmq_txn_send(null_mut(), b"x".as_ptr(), 1, null_mut()),
            SHMQ_EINVAL
        );
        let mut partition = u32::MAX;
        assert_eq!(
            shmq_txn_send_keyed(txn, b"k".as_ptr(), 1, b"v".as_ptr(), 1, &mut partition),
            SHMQ_OK
        );
        assert_eq!(partition, shmq_core::partition_for_key(b"k", 2));
        let mut pending = 0;
        assert_eq!(shmq_txn_pending(txn, &mut pending), SHMQ_OK);
        assert_eq!(pending, 1);
        assert_eq!(shmq_txn_pending(txn, null_mut()), SHMQ_EINVAL);
        // A NULL array with a capacity: refused before anything is committed.
        assert_eq!(shmq_txn_commit(txn, null_mut(), 1, null_mut()), SHMQ_EINVAL);
        assert_eq!(shmq_txn_pending(txn, &mut pending), SHMQ_OK);
        assert_eq!(pending, 1);
        // A list cut short: the count says how many were committed.
        let mut n = 0;
        assert_eq!(shmq_txn_send(txn, b"w".as_ptr(), 1, null_mut()), SHMQ_OK);
        assert_eq!(shmq_txn_commit(txn, null_mut(), 0, &mut n), SHMQ_OK);
        assert_eq!(n, 2);
        assert_eq!(shmq_txn_abort(null_mut()), SHMQ_EINVAL);
        assert_eq!(
            shmq_txn_commit_consumed(txn, null_mut(), 0, null_mut(), 0, null_mut()),
            SHMQ_EINVAL
        );
        shmq_transactional_producer_free(txn);
        shmq_transactional_producer_free(null_mut());
        shmq_topic_close(t);
    }
    assert_eq!(read_all(&topic, 2).len(), 2);
}
