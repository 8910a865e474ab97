//! Full-queue policies (Block, Reject, Overwrite), lag reporting, deleting a dead gating group,
//! and the CPU cost of blocked waits.
//!
//! Every scenario is single-writer and deterministic, so the tests also predict exactly which
//! records fit and which are retained by replaying the ring's placement rule (`Model`).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use shmq::{Error, FullPolicy, Options, Queue, Start, Subscribe};

const CAPACITY: u64 = 4096;
const MAX_MESSAGE: u32 = 256;
const SHORT: Option<Duration> = Some(Duration::from_millis(100));
/// Generous upper bound for anything that should happen "at once" or "promptly".
const PROMPT: Duration = Duration::from_secs(2);
/// Bound for "at once" (no waiting at all), with room for a preempted thread on a busy host.
const TINY: Duration = Duration::from_millis(250);

fn options(policy: FullPolicy, capacity: u64) -> Options {
    Options {
        capacity,
        max_message: MAX_MESSAGE,
        full_policy: policy,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    }
}

fn new_queue(policy: FullPolicy, capacity: u64) -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::create(dir.path().join("q"), &options(policy, capacity)).unwrap();
    (dir, q)
}

const NON_GATING: Subscribe = Subscribe {
    gating: false,
    start: Start::Earliest,
    session_timeout: None,
};

/// Payload of record `i`: 8..128 bytes, self-describing (first 8 bytes are `i`).
fn payload(i: u64) -> Vec<u8> {
    let len = 8 + (i * 37 % 120) as usize;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((8..len).map(|k| (i as usize * 31 + k * 7) as u8));
    v
}

/// The ring's placement rule (ring.rs): a record of footprint `f` claimed at position `at`
/// starts at `at`, or at the next lap if it does not fit in the rest of this one; its claim
/// covers `[at, start + f)`.
struct Model {
    capacity: u64,
    tail: u64,
    /// Claim start position of every record, by offset.
    ats: Vec<u64>,
}

impl Model {
    fn new(capacity: u64) -> Self {
        Model {
            capacity,
            tail: 0,
            ats: Vec::new(),
        }
    }

    fn footprint(len: usize) -> u64 {
        (32 + len as u64).div_ceil(8) * 8
    }

    /// Where the claim of a `len`-byte record would end.
    fn end_of_next(&self, len: usize) -> u64 {
        let size = Self::footprint(len);
        let rest = self.capacity - self.tail % self.capacity;
        let start = if rest >= size {
            self.tail
        } else {
            self.tail + rest
        };
        start + size
    }

    fn push(&mut self, len: usize) {
        let end = self.end_of_next(len);
        self.ats.push(self.tail);
        self.tail = end;
    }

    /// The oldest offset whose claim lies wholly in the last `capacity` bytes.
    fn oldest(&self) -> u64 {
        let floor = self.tail.saturating_sub(self.capacity);
        self.ats
            .iter()
            .position(|&at| at >= floor)
            .unwrap_or(self.ats.len()) as u64
    }
}

/// Polls records `range` in order and checks every payload.
fn expect_records(c: &mut shmq::Consumer, range: std::ops::Range<u64>) {
    for i in range {
        let m = c
            .poll(SHORT)
            .unwrap_or_else(|e| panic!("poll for record {i}: {e}"))
            .unwrap_or_else(|| panic!("record {i} not delivered"));
        assert_eq!(m.offset, i, "records out of order");
        assert_eq!(m.payload, &payload(i)[..], "record {i} damaged");
    }
}

fn assert_empty(c: &mut shmq::Consumer) {
    let next = c.poll(Some(Duration::ZERO)).unwrap().map(|m| m.offset);
    assert_eq!(next, None, "unexpected record");
}

/// Fills a Block/Reject queue gated by a group at position 0 and returns how many records went
/// in; checks the count against the model (the claim limit is the gate's position + capacity).
fn fill(p: &mut shmq::Producer, full: impl Fn(&Error) -> bool) -> (u64, Error, Duration) {
    let mut model = Model::new(CAPACITY);
    for i in 0..10_000u64 {
        let data = payload(i);
        let t = Instant::now();
        match p.publish(&data) {
            Ok(offset) => {
                assert_eq!(offset, i);
                assert!(
                    model.end_of_next(data.len()) <= CAPACITY,
                    "record {i} was accepted past the gate's limit"
                );
                model.push(data.len());
            }
            Err(e) => {
                let elapsed = t.elapsed();
                assert!(full(&e), "unexpected error {e:?}");
                assert!(
                    model.end_of_next(data.len()) > CAPACITY,
                    "record {i} was refused though it fits"
                );
                return (i, e, elapsed);
            }
        }
    }
    panic!("a gated 4 KiB ring accepted 10000 records");
}

#[test]
fn block_times_out_when_gating_group_never_commits_then_resumes_after_commit() {
    let (_d, q) = new_queue(FullPolicy::Block, CAPACITY);
    let mut gate = q.consumer("gate").unwrap();
    let mut p = q.producer().unwrap();
    let timeout = Duration::from_millis(200);
    p.set_timeout(Some(timeout));

    let (n, err, elapsed) = fill(&mut p, |e| matches!(e, Error::Timeout { .. }));
    assert!(n > 10, "only {n} records fit in 4 KiB");
    assert!(matches!(err, Error::Timeout { .. }));
    assert!(
        elapsed >= timeout,
        "timed out after {elapsed:?} < {timeout:?}"
    );
    assert!(
        elapsed < timeout + PROMPT,
        "timed out only after {elapsed:?}"
    );

    // Everything published before the timeout is delivered intact and in order; the timed-out
    // publish left nothing behind.
    expect_records(&mut gate, 0..n);
    assert_empty(&mut gate);

    // Reading without committing frees nothing.
    let t = Instant::now();
    assert!(matches!(p.publish(&payload(n)), Err(Error::Timeout { .. })));
    assert!(t.elapsed() >= timeout);

    // A commit from another thread wakes a producer blocked with a long timeout promptly.
    p.set_timeout(Some(Duration::from_secs(20)));
    let (tx, rx) = mpsc::channel();
    let publisher = thread::spawn(move || {
        let r = p.publish(&payload(n)).map_err(|e| e.to_string());
        tx.send(Instant::now()).unwrap();
        (r, p)
    });
    thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "publish did not block on a full ring"
    );
    let committed_at = Instant::now();
    gate.commit(n - 1).unwrap();
    let returned_at = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let (r, mut p) = publisher.join().unwrap();
    assert_eq!(r, Ok(n));
    assert!(
        returned_at - committed_at < PROMPT,
        "blocked publish returned {:?} after the commit",
        returned_at - committed_at
    );

    // And publishing keeps working while the gate keeps up.
    for i in n + 1..n + 200 {
        assert_eq!(p.publish(&payload(i)).unwrap(), i);
        expect_records(&mut gate, i - 1..i);
        gate.commit(i - 1).unwrap();
    }
    expect_records(&mut gate, n + 199..n + 200);
    assert_empty(&mut gate);
}

#[test]
fn reject_fails_at_once_when_full_then_resumes_after_commit() {
    let (_d, q) = new_queue(FullPolicy::Reject, CAPACITY);
    let mut gate = q.consumer("gate").unwrap();
    let mut p = q.producer().unwrap();
    // Reject ignores the publish timeout.
    p.set_timeout(Some(Duration::from_secs(10)));

    let (n, err, elapsed) = fill(&mut p, |e| matches!(e, Error::Full { .. }));
    assert!(n > 10, "only {n} records fit in 4 KiB");
    assert!(matches!(err, Error::Full { .. }));
    assert!(elapsed < TINY, "Full took {elapsed:?}");
    // Still full on retry, still at once.
    let t = Instant::now();
    assert!(matches!(p.publish(&payload(n)), Err(Error::Full { .. })));
    assert!(t.elapsed() < TINY);

    expect_records(&mut gate, 0..n);
    assert_empty(&mut gate);
    assert!(matches!(p.publish(&payload(n)), Err(Error::Full { .. })));

    // A partial commit frees exactly the committed records' room: the gate is now at record
    // `half`, so the limit is pos(half) + capacity.
    let half = n / 2;
    gate.commit(half - 1).unwrap();
    let mut model = Model::new(CAPACITY);
    (0..n).for_each(|i| model.push(payload(i).len()));
    let limit = model.ats[half as usize] + CAPACITY;
    let mut i = n;
    while model.end_of_next(payload(i).len()) <= limit {
        assert_eq!(p.publish(&payload(i)).unwrap(), i);
        model.push(payload(i).len());
        i += 1;
    }
    assert!(i > n, "the commit freed no room");
    assert!(matches!(p.publish(&payload(i)), Err(Error::Full { .. })));

    expect_records(&mut gate, n..i);
    gate.commit(i - 1).unwrap();
    assert_eq!(p.publish(&payload(i)).unwrap(), i);
    expect_records(&mut gate, i..i + 1);
    assert_empty(&mut gate);
}

/// Publishes records `range` and mirrors them into `model`.
fn publish_all(p: &mut shmq::Producer, model: &mut Model, range: std::ops::Range<u64>) {
    for i in range {
        let data = payload(i);
        assert_eq!(p.publish(&data).unwrap(), i);
        model.push(data.len());
    }
}

/// Expects `Lagged`, then checks the loss against the offset the consumer reads next, and that
/// reading continues at the model's oldest retained record, in order, up to `end`.
fn expect_lag_then_rest(c: &mut shmq::Consumer, expected: u64, model: &Model, end: u64) -> u64 {
    let lost = match c.poll(SHORT) {
        Err(Error::Lagged { lost }) => lost,
        other => panic!(
            "expected Lagged, got {:?}",
            other.map(|m| m.map(|m| m.offset))
        ),
    };
    let m = c.poll(SHORT).unwrap().expect("a record after Lagged");
    let next = m.offset;
    assert_eq!(m.payload, &payload(next)[..], "record {next} damaged");
    assert_eq!(
        lost,
        next - expected,
        "expected {expected}, resumed at {next}"
    );
    assert_eq!(next, model.oldest(), "did not resume at the oldest record");
    expect_records(c, next + 1..end);
    assert_empty(c);
    lost
}

#[test]
fn overwrite_lagging_groups_report_exact_loss_and_resume_at_oldest() {
    let (_d, q) = new_queue(FullPolicy::Overwrite, CAPACITY);
    let mut slow = q.subscribe("slow", &NON_GATING).unwrap();
    // Under Overwrite even a gating group can be lapped, and does not hold producers back.
    let mut gate = q.consumer("gate").unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_secs(5)));
    let mut model = Model::new(CAPACITY);

    publish_all(&mut p, &mut model, 0..20);
    expect_records(&mut slow, 0..5);
    publish_all(&mut p, &mut model, 20..300);
    let lost = expect_lag_then_rest(&mut slow, 5, &model, 300);
    assert!(lost > 200, "lost only {lost}");

    // The never-committing gating group lost everything before the oldest record too.
    expect_lag_then_rest(&mut gate, 0, &model, 300);
    gate.commit(299).unwrap();

    // A second lap of loss is counted from where the consumer left off.
    publish_all(&mut p, &mut model, 300..500);
    expect_lag_then_rest(&mut slow, 300, &model, 500);
    expect_lag_then_rest(&mut gate, 300, &model, 500);
    assert_eq!(gate.committed(), 300);

    // Lapped by a hair: only the first record or two overwritten.
    let mut model2 = Model::new(CAPACITY);
    let (_d2, q2) = new_queue(FullPolicy::Overwrite, CAPACITY);
    let mut c = q2.subscribe("slow", &NON_GATING).unwrap();
    let mut p2 = q2.producer().unwrap();
    let mut i = 0;
    while model2.oldest() == 0 {
        assert_eq!(p2.publish(&payload(i)).unwrap(), i);
        model2.push(payload(i).len());
        i += 1;
    }
    let oldest = model2.oldest();
    assert!((1..=2).contains(&oldest), "model: oldest {oldest}");
    assert_eq!(expect_lag_then_rest(&mut c, 0, &model2, i), oldest);
}

#[test]
fn non_gating_group_on_block_queue_is_lapped_while_gating_group_keeps_up() {
    let (_d, q) = new_queue(FullPolicy::Block, CAPACITY);
    let mut slow = q.subscribe("slow", &NON_GATING).unwrap();
    let mut fast = q.consumer("fast").unwrap();
    let mut p = q.producer().unwrap();
    // A bug that made the non-gating group gate would show up as a timeout, not a hang.
    p.set_timeout(Some(Duration::from_secs(5)));
    let mut model = Model::new(CAPACITY);
    for i in 0..400 {
        publish_all(&mut p, &mut model, i..i + 1);
        expect_records(&mut fast, i..i + 1);
        fast.commit(i).unwrap();
    }
    let info = q.groups();
    let slow_info = info.iter().find(|g| g.name == "slow").unwrap();
    assert!(!slow_info.gating);
    assert_eq!(slow_info.committed, 0);

    let lost = expect_lag_then_rest(&mut slow, 0, &model, 400);
    assert!(lost > 300, "lost only {lost}");
    // The lagging group's committed offset is untouched until it commits.
    assert_eq!(slow.committed(), 0);
    slow.commit(399).unwrap();
    assert_eq!(slow.committed(), 400);
    assert_empty(&mut fast);
}

const CHILD_ENV: &str = "SHMQ_POLICIES_DEAD_GROUP_QUEUE";

#[test]
fn delete_group_of_dead_gating_group_lets_block_producer_through() {
    // Child role: join a gating group and die holding its lease.
    if let Ok(path) = std::env::var(CHILD_ENV) {
        let q = Queue::open(&path).unwrap();
        let c = q.consumer("dead").unwrap();
        std::mem::forget(c);
        // SAFETY: kill(2) on our own pid; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL returned");
    }

    let (_d, q) = new_queue(FullPolicy::Block, CAPACITY);
    spawn_dead_member(&q);
    let info = q.groups();
    let dead = info
        .iter()
        .find(|g| g.name == "dead")
        .expect("group exists");
    assert!(dead.gating && dead.holder.is_some() && !dead.holder_alive);

    // A live holder's group cannot be deleted.
    let live = q.consumer("live").unwrap();
    assert!(matches!(
        q.delete_group("live"),
        Err(Error::GroupBusy { .. })
    ));
    drop(live);
    q.delete_group("live").unwrap();

    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(50)));
    let (n, _, _) = fill(&mut p, |e| matches!(e, Error::Timeout { .. }));

    // A producer blocked behind the dead group is woken by the delete and gets through long
    // before its own timeout.
    let timeout = Duration::from_secs(10);
    p.set_timeout(Some(timeout));
    let (tx, rx) = mpsc::channel();
    let publisher = thread::spawn(move || {
        let r = p.publish(&payload(n)).map_err(|e| e.to_string());
        tx.send(Instant::now()).unwrap();
        (r, p)
    });
    thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "publish did not block");
    let deleted_at = Instant::now();
    q.delete_group("dead").unwrap();
    assert!(q.groups().iter().all(|g| g.name != "dead"));
    let returned_at = rx.recv_timeout(timeout + Duration::from_secs(20)).unwrap();
    let (r, mut p) = publisher.join().unwrap();
    assert_eq!(r, Ok(n), "the blocked publish failed");
    let waited = returned_at.saturating_duration_since(deleted_at);
    assert!(
        waited < PROMPT,
        "blocked publish returned {waited:?} after delete_group"
    );
    // With no gating group left nothing holds producers back.
    for i in n + 1..n + 100 {
        assert_eq!(p.publish(&payload(i)).unwrap(), i);
    }
}

/// The same with a gating group that merely has no member (no dead process): `delete_group`
/// wakes producers sleeping for space like a commit does.
#[test]
fn delete_group_wakes_blocked_producer_promptly() {
    let (_d, q) = new_queue(FullPolicy::Block, CAPACITY);
    drop(q.consumer("idle").unwrap()); // a gating group without a live member
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(50)));
    let (n, _, _) = fill(&mut p, |e| matches!(e, Error::Timeout { .. }));
    p.set_timeout(Some(Duration::from_secs(5)));
    let (tx, rx) = mpsc::channel();
    let publisher = thread::spawn(move || {
        let r = p.publish(&payload(n)).map_err(|e| e.to_string());
        tx.send(Instant::now()).unwrap();
        r
    });
    thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "publish did not block");
    let deleted_at = Instant::now();
    q.delete_group("idle").unwrap();
    let returned_at = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(publisher.join().unwrap(), Ok(n));
    let waited = returned_at - deleted_at;
    assert!(
        waited < PROMPT,
        "blocked publish returned {waited:?} after delete_group"
    );
}

/// Runs this test binary again as the child of the dead-group test and waits for it to die.
fn spawn_dead_member(q: &Queue) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "delete_group_of_dead_gating_group_lets_block_producer_through",
            "--exact",
            "--test-threads=1",
            "--quiet",
        ])
        .env(CHILD_ENV, q.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not finish");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGKILL), "child: {status:?}");
}

/// Runs `f` in a fresh thread; returns its result, wall time and the thread's CPU time.
fn measured<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (T, Duration, Duration) {
    thread::spawn(move || {
        let cpu = common::thread_cpu();
        let wall = Instant::now();
        let r = f();
        (r, wall.elapsed(), common::thread_cpu() - cpu)
    })
    .join()
    .unwrap()
}

const CPU_BUDGET: Duration = Duration::from_millis(10);

#[test]
fn idle_blocked_consumer_uses_under_one_percent_cpu() {
    let (_d, q) = new_queue(FullPolicy::Block, CAPACITY);
    let mut c = q.consumer("idle").unwrap();
    let (r, wall, cpu) = measured(move || {
        c.poll(Some(Duration::from_millis(1000)))
            .map(|m| m.map(|m| m.offset))
            .map_err(|e| e.to_string())
    });
    assert_eq!(r, Ok(None));
    assert!(
        wall >= Duration::from_secs(1),
        "poll returned after {wall:?}"
    );
    assert!(wall < Duration::from_secs(1) + PROMPT, "poll took {wall:?}");
    assert!(
        cpu < CPU_BUDGET,
        "idle poll used {cpu:?} of CPU in {wall:?}"
    );
}

#[test]
fn blocked_producer_uses_under_one_percent_cpu() {
    let (_d, q) = new_queue(FullPolicy::Block, CAPACITY);
    let _gate = q.consumer("gate").unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(20)));
    let (n, _, _) = fill(&mut p, |e| matches!(e, Error::Timeout { .. }));
    p.set_timeout(Some(Duration::from_secs(1)));
    let (r, wall, cpu) = measured(move || p.publish(&payload(n)).map_err(|e| e.to_string()));
    assert!(
        matches!(&r, Err(m) if m.contains("timed out after 1")),
        "{r:?}"
    );
    assert!(
        wall >= Duration::from_secs(1),
        "publish returned after {wall:?}"
    );
    assert!(
        wall < Duration::from_secs(1) + PROMPT,
        "publish took {wall:?}"
    );
    assert!(
        cpu < CPU_BUDGET,
        "blocked publish used {cpu:?} of CPU in {wall:?}"
    );
}
