//! Crash safety: producers and consumers SIGKILLed at random moments and at every named crash
//! point of publish and commit. The survivors must never stall past the claim timeout (plus
//! scheduling slack), every publish that returned `Ok` must be delivered intact, nothing may be
//! delivered twice within one consumer run, and a restarted consumer resumes at its group's
//! committed offset.
//!
//! Children are this test binary re-run in a role (`harness = false`, see `common`). Producers
//! log each acknowledged sequence number with one `write(2)` after `publish` returned, so the log
//! is the set of promises a killed producer made. A kill in the middle of that `write(2)` can
//! tear the last line, which `common::read_log` drops: that record then counts as the one in
//! flight at the kill, delivered without its acknowledgement. Consumers log each offset before
//! committing it, so a dropped torn line is an offset the next run processes again.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use shmq::{Options, Queue};

const MAX: usize = 200;
const CLAIM_TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack on top of the claim timeout for "never stalls past the bound" on a loaded
/// 2-core machine.
const SLACK: Duration = Duration::from_secs(2);

fn main() {
    match common::role().as_deref() {
        Some("producer") => producer(),
        Some("consumer") => consumer(),
        Some("committer") => committer(),
        Some("joiner") => joiner(),
        Some("join_reporter") => join_reporter(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            ("random_producer_kills", random_producer_kills),
            ("random_batch_producer_kills", random_batch_producer_kills),
            ("crash_points_in_publish", crash_points_in_publish),
            ("crash_points_in_commit", crash_points_in_commit),
            ("crash_points_in_join", crash_points_in_join),
            (
                "a_join_stopped_while_its_group_is_deleted",
                a_join_stopped_while_its_group_is_deleted,
            ),
            ("random_consumer_kills_resume", random_consumer_kills_resume),
        ]),
    }
}

fn options(capacity: u64) -> Options {
    Options {
        capacity,
        max_message: MAX as u32,
        claim_timeout: CLAIM_TIMEOUT,
        ..Options::default()
    }
}

/// Child: publishes `SHMQ_COUNT` records (0: until killed, or until the file `SHMQ_DONE` exists
/// if that is set) as producer `SHMQ_ID`, logging each acknowledged sequence number to
/// `SHMQ_LOG`; in batches of `SHMQ_BATCH` records if that is set (`publish_batch`, its
/// sequence numbers logged once the batch is acknowledged).
fn producer() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let id: u32 = common::arg("SHMQ_ID");
    let count: u32 = common::arg("SHMQ_COUNT");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(common::arg::<String>("SHMQ_LOG"))
        .unwrap();
    let done = std::env::var("SHMQ_DONE").ok().map(PathBuf::from);
    let batch: u32 = std::env::var("SHMQ_BATCH").map_or(1, |b| b.parse().unwrap());
    let mut p = q.producer().unwrap();
    let mut seq = 0;
    while count == 0 || seq < count {
        if seq % 256 < batch && done.as_ref().is_some_and(|d| d.exists()) {
            break;
        }
        if batch == 1 {
            p.publish(&common::payload(id, seq, MAX)).unwrap();
        } else {
            let records: Vec<Vec<u8>> = (seq..seq + batch)
                .map(|s| common::payload(id, s, MAX))
                .collect();
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            p.publish_batch(&slices).unwrap();
        }
        // One write for the whole batch, so a kill never logs part of it.
        let lines: Vec<String> = (seq..seq + batch).map(|s| s.to_string()).collect();
        common::log_line(&mut log, &lines.join("\n"));
        seq += batch;
    }
}

/// Child: reads group `SHMQ_GROUP` from its committed offset until `SHMQ_DONE` exists and the
/// queue is drained. Checks payloads, per-producer order and no duplicates; logs every offset
/// it processed to `SHMQ_LOG` (if set) and commits every 16 records. Prints
/// `start <committed offset at start>`, `gap_ms <longest wait between records>`, then
/// `<producer> <count>` lines.
fn consumer() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let group: String = common::arg("SHMQ_GROUP");
    let done = PathBuf::from(common::arg::<String>("SHMQ_DONE"));
    let mut log = std::env::var("SHMQ_LOG").ok().map(|p| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    });
    let mut c = q.consumer(&group).unwrap();
    let start = c.committed();
    println!("start {start}");
    let mut next_seq: BTreeMap<u32, u32> = BTreeMap::new();
    let mut last_offset = None;
    let mut last_record = Instant::now();
    let mut max_gap = Duration::ZERO;
    loop {
        let finished = done.exists();
        let Some(m) = c.poll(Some(Duration::from_millis(500))).unwrap() else {
            if finished {
                break;
            }
            continue;
        };
        max_gap = max_gap.max(last_record.elapsed());
        last_record = Instant::now();
        // Every hole is explained: offsets skip only over aborted records (killed producers'
        // claims), which the message counts.
        match last_offset {
            None => assert_eq!(
                m.offset,
                start + m.aborted_before,
                "first record must be the committed offset (after aborted ones)"
            ),
            Some(o) => assert_eq!(
                m.offset,
                o + 1 + m.aborted_before,
                "offset {} after {o} with {} aborted before it: a hole or a duplicate",
                m.offset,
                m.aborted_before
            ),
        }
        last_offset = Some(m.offset);
        let (p, seq) =
            common::check(m.payload).unwrap_or_else(|e| panic!("offset {}: {e}", m.offset));
        let expected = next_seq.entry(p).or_insert(seq);
        assert_eq!(
            seq, *expected,
            "producer {p}: seq {seq} out of order or lost (offset {})",
            m.offset
        );
        *expected += 1;
        let offset = m.offset;
        if let Some(log) = log.as_mut() {
            common::log_line(log, &offset.to_string());
        }
        if offset % 16 == 15 {
            c.commit(offset).unwrap();
        }
    }
    if let Some(o) = last_offset {
        c.commit(o).unwrap();
    }
    println!("gap_ms {}", max_gap.as_millis());
    for (p, next) in next_seq {
        println!("{p} {next}");
    }
}

/// Child: reads group `g` and commits every record; a crash point in commit kills it.
fn committer() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut c = q.consumer("g").unwrap();
    while let Some(m) = c.poll(Some(Duration::from_secs(5))).unwrap() {
        let o = m.offset;
        c.commit(o).unwrap();
    }
}

/// Child: joins group "g" with a short session timeout and reads until killed.
fn joiner() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let mut c = q.subscribe("g", &session(SESSION)).unwrap();
    while c.poll(Some(Duration::from_secs(5))).unwrap().is_some() {}
}

/// Child: joins group "g" (stopped by the parent before it takes the lease), then says whether
/// the slot it holds is "g" and no other group's.
fn join_reporter() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let c = q.consumer("g").unwrap();
    let me = std::process::id();
    let groups = q.groups();
    let holds = |name: &str| {
        groups
            .iter()
            .any(|g| g.name == name && g.holder == Some(me) && g.holder_alive)
    };
    println!("holds g {} holds h {}", holds("g"), holds("h"));
    drop(c);
}

const SESSION: Duration = Duration::from_millis(200);

fn session(t: Duration) -> shmq::Subscribe {
    shmq::Subscribe {
        session_timeout: Some(t),
        ..shmq::Subscribe::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    path: String,
    logs: PathBuf,
    done: String,
}

fn setup(capacity: u64) -> (Setup, Queue) {
    let dir = tempfile::tempdir().unwrap();
    let path = common::queue_path(&dir);
    let q = Queue::create(&path, &options(capacity)).unwrap();
    drop(q.consumer("g").unwrap()); // the gating group exists from offset 0
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let s = Setup {
        path: path.display().to_string(),
        done: dir.path().join("done").display().to_string(),
        logs,
        _dir: dir,
    };
    (s, q)
}

impl Setup {
    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    fn spawn_producer(&self, id: u32, count: u32, crash_at: Option<&str>) -> Child {
        self.spawn_producer_env(id, count, crash_at, &[])
    }

    fn spawn_producer_env(
        &self,
        id: u32,
        count: u32,
        crash_at: Option<&str>,
        extra: &[(&'static str, String)],
    ) -> Child {
        let mut env = vec![
            ("SHMQ_PATH", self.path.clone()),
            ("SHMQ_ID", id.to_string()),
            ("SHMQ_COUNT", count.to_string()),
            (
                "SHMQ_LOG",
                self.log(&format!("p{id}")).display().to_string(),
            ),
        ];
        if let Some(point) = crash_at {
            env.push(("SHMQ_CRASH_AT", point.to_string()));
        }
        env.extend(extra.iter().cloned());
        common::spawn("producer", &env)
    }

    fn spawn_consumer(&self, log: Option<&Path>) -> Child {
        let mut env = vec![
            ("SHMQ_PATH", self.path.clone()),
            ("SHMQ_GROUP", "g".to_string()),
            ("SHMQ_DONE", self.done.clone()),
        ];
        if let Some(l) = log {
            env.push(("SHMQ_LOG", l.display().to_string()));
        }
        common::spawn("consumer", &env)
    }

    fn acked(&self, id: u32) -> u32 {
        common::read_log(&self.log(&format!("p{id}"))).len() as u32
    }

    fn finish(&self) {
        std::fs::write(&self.done, b"").unwrap();
    }
}

/// Parses a consumer's report: (start offset, longest gap, delivered count per producer).
fn report(out: &str) -> (u64, Duration, BTreeMap<u32, u32>) {
    let mut start = 0;
    let mut gap = Duration::ZERO;
    let mut counts = BTreeMap::new();
    for line in out.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("start"), Some(v)) => start = v.parse().unwrap(),
            (Some("gap_ms"), Some(v)) => gap = Duration::from_millis(v.parse().unwrap()),
            (Some(p), Some(n)) => {
                counts.insert(p.parse().unwrap(), n.parse().unwrap());
            }
            _ => panic!("bad consumer report line {line:?}"),
        }
    }
    (start, gap, counts)
}

/// 100+ SIGKILLs of producers at random moments while a consumer runs. Two producers are
/// alive at all times, so the consumer's longest wait between records is the stall a dead
/// producer causes.
fn random_producer_kills() {
    random_kills(1);
}

/// [`random_producer_kills`] with producers that publish batches of 8: a killed producer's
/// last batch is delivered whole or not at all (the consumer also checks that each producer's
/// records arrive without a gap, so a batch cut short and followed by nothing is the only
/// partial delivery it could miss, and the delivered count rules that out).
fn random_batch_producer_kills() {
    random_kills(8);
}

/// The random-kill run of producers publishing batches of `batch` records (1: single
/// publishes): every acknowledged record is delivered, and of the batch in flight at the kill
/// either all or none.
fn random_kills(batch: u32) {
    let (s, _q) = setup(1 << 16);
    let consumer = s.spawn_consumer(None);
    let mut rng = common::Rng::new();
    let mut next_id = 0;
    let mut alive: Vec<(u32, Child)> = Vec::new();
    let env = [("SHMQ_BATCH", batch.to_string())];
    for _ in 0..2 {
        alive.push((next_id, s.spawn_producer_env(next_id, 0, None, &env)));
        next_id += 1;
    }
    const KILLS: u32 = 100;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(2, 25)));
        let victim = rng.range(0, alive.len() as u64) as usize;
        let (_, child) = alive.swap_remove(victim);
        common::kill(child);
        alive.push((next_id, s.spawn_producer_env(next_id, 0, None, &env)));
        next_id += 1;
    }
    for (_, child) in alive.drain(..) {
        common::kill(child);
    }
    s.finish();
    let (out, status) = common::wait(consumer, Duration::from_secs(120), "consumer");
    assert!(status.success(), "consumer failed: {out}");
    let (_, gap, delivered) = report(&out);
    let mut total_acked = 0;
    let mut whole_unacked = 0;
    for id in 0..next_id {
        let acked = s.acked(id);
        total_acked += acked;
        let got = delivered.get(&id).copied().unwrap_or(0);
        // At most the one publish (or batch) in flight at the kill can be delivered without
        // its ack, and only whole.
        assert!(
            got == acked || got == acked + batch,
            "producer {id}: {acked} records acknowledged, {got} delivered (batches of {batch})"
        );
        whole_unacked += u32::from(got == acked + batch);
    }
    println!(
        "  {} producers killed, {total_acked} acknowledged records all delivered, \
         {whole_unacked} unacknowledged publishes (of {batch}) delivered whole, longest wait {gap:?}",
        next_id
    );
    assert!(
        total_acked > 1000,
        "too little traffic to mean anything: {total_acked}"
    );
    assert!(gap < CLAIM_TIMEOUT + SLACK, "consumer stalled for {gap:?}");
}

/// A producer killed at each named step of publish: the record in flight is delivered only if
/// it was committed, the others are not held up past the claim timeout, and a new producer
/// publishes normally after it.
fn crash_points_in_publish() {
    for point in shmq::crash::POINTS
        .iter()
        .filter(|p| p.starts_with("publish."))
    {
        // A small ring, so the crashed claim is soon in the way of the next lap.
        let (s, q) = setup(4096);
        let (_, status) = common::wait(
            s.spawn_producer(0, 20, Some(&format!("{point}:5"))),
            Duration::from_secs(60),
            "crashing producer",
        );
        assert!(
            common::killed(status),
            "{point}: producer was not killed there ({status})"
        );
        assert_eq!(
            s.acked(0),
            4,
            "{point}: four publishes returned before the crash"
        );
        let started = Instant::now();
        // The survivor publishes more than a lap while the dead claim sits in the ring.
        let survivor = s.spawn_producer(1, 100, None);
        let mut c = q.consumer("g").unwrap();
        let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut longest = Duration::ZERO;
        while seen.get(&1).map_or(0, Vec::len) < 100 {
            let waited = Instant::now();
            let m = c
                .poll(Some(Duration::from_secs(10)))
                .unwrap()
                .unwrap_or_else(|| panic!("{point}: stalled, seen {seen:?}"));
            longest = longest.max(waited.elapsed());
            let (p, seq) = common::check(m.payload).unwrap();
            seen.entry(p).or_default().push(seq);
            let o = m.offset;
            c.commit(o).unwrap();
        }
        let (_, status) = common::wait(survivor, Duration::from_secs(60), "survivor");
        assert!(status.success(), "{point}: the surviving producer failed");
        let committed_before_crash = *point == "publish.after_commit";
        let expect0: Vec<u32> = (0..if committed_before_crash { 5 } else { 4 }).collect();
        assert_eq!(seen[&0], expect0, "{point}: crashed producer's records");
        assert_eq!(
            seen[&1],
            (0..100).collect::<Vec<_>>(),
            "{point}: survivor's records"
        );
        assert!(
            longest < CLAIM_TIMEOUT + SLACK,
            "{point}: consumer waited {longest:?} for one record"
        );
        assert!(
            c.poll(Some(Duration::ZERO)).unwrap().is_none(),
            "{point}: extra record"
        );
        println!(
            "  {point}: recovered, longest wait {longest:?}, total {:?}",
            started.elapsed()
        );
    }
}

/// A queue holding records 0..50 of producer 0, after a child in `role` was killed at crash
/// point `at` (`name` or `name:n`).
fn killed_at(role: &str, at: &str) -> (Setup, Queue) {
    let (s, q) = setup(1 << 16);
    let mut p = q.producer().unwrap();
    for seq in 0..50 {
        p.publish(&common::payload(0, seq, MAX)).unwrap();
    }
    let env = [
        ("SHMQ_PATH", s.path.clone()),
        ("SHMQ_CRASH_AT", at.to_string()),
    ];
    let (_, status) = common::wait(common::spawn(role, &env), Duration::from_secs(60), role);
    assert!(common::killed(status), "{at}: {role} was not killed there");
    (s, q)
}

/// Reads records `from..50` in order and intact, committing each if `commit`.
fn read_rest(c: &mut shmq::Consumer, from: u64, commit: bool, point: &str) {
    for expected in from..50 {
        let m = c
            .poll(Some(Duration::from_secs(5)))
            .unwrap()
            .expect("record");
        assert_eq!(m.offset, expected, "{point}: resumed out of order");
        assert_eq!(common::check(m.payload).unwrap(), (0, expected as u32));
        if commit {
            let o = m.offset;
            c.commit(o).unwrap();
        }
    }
}

/// A consumer killed at each step of commit: the restarted member resumes at the offset the
/// group's cursor holds (the last commit that reached the file) and nothing is lost.
fn crash_points_in_commit() {
    for (point, committed) in [("commit.before_store", 2), ("commit.after_store", 3)] {
        let (_s, q) = killed_at("committer", &format!("{point}:3"));
        // The dead member's lease is taken over; it resumes at the committed offset.
        let mut c = q.consumer("g").unwrap();
        assert_eq!(
            c.committed(),
            committed,
            "{point}: committed offset after the crash"
        );
        read_rest(&mut c, committed, false, point);
        println!("  {point}: resumed at {committed}");
    }
}

/// A member with a session timeout killed at each step of joining (after its lease CAS, after
/// its session fields): the next member takes the group over at once, with its own session
/// (another handle cannot take it from the new member while it polls), and reads everything.
fn crash_points_in_join() {
    for point in shmq::crash::POINTS
        .iter()
        .filter(|p| p.starts_with("group.join."))
    {
        let (s, q) = killed_at("joiner", point);
        let started = Instant::now();
        let mut c = q.subscribe("g", &session(Duration::from_secs(30))).unwrap();
        let took = started.elapsed();
        read_rest(&mut c, 0, true, point);
        let other = Queue::open(&s.path).unwrap();
        assert!(
            matches!(other.consumer("g"), Err(shmq::Error::GroupBusy { .. })),
            "{point}: the new member's group was taken while it polls"
        );
        println!("  {point}: taken over in {took:?}");
    }
}

/// A member stopped between finding group "g" and taking its lease, while "g" is deleted and
/// its slot reused by group "h": once resumed it must not hold "h"'s slot (it would commit into
/// "h"'s cursor); it joins "g" anew, in a slot of its own.
fn a_join_stopped_while_its_group_is_deleted() {
    let (s, q) = setup(1 << 16);
    let env = [
        ("SHMQ_PATH", s.path.clone()),
        ("SHMQ_STOP_AT", "group.join.before_lease".to_string()),
    ];
    let child = common::spawn("join_reporter", &env);
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: waits for our own child to stop (WUNTRACED), into a local.
    let waited = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    assert!(
        waited == pid && libc::WIFSTOPPED(status),
        "the joiner did not stop"
    );
    q.delete_group("g").unwrap();
    drop(q.consumer("h").unwrap()); // takes the freed slot
                                    // SAFETY: kill(2) on our own stopped child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let (out, status) = common::wait(child, Duration::from_secs(60), "join_reporter");
    assert!(status.success(), "join_reporter failed: {out}");
    assert!(
        out.contains("holds g true holds h false"),
        "the resumed member holds the wrong slot: {out}"
    );
    println!("  {}", out.trim());
}

/// A consumer SIGKILLed at random moments 20 times while a producer publishes: each new member
/// starts at the committed offset, and together they process every record.
fn random_consumer_kills_resume() {
    let (s, _q) = setup(1 << 16);
    // The producer runs until the end, so every consumer run has records to process.
    let producer = s.spawn_producer_env(0, 0, None, &[("SHMQ_DONE", s.done.clone())]);
    let mut rng = common::Rng::new();
    let mut runs: Vec<Vec<u64>> = Vec::new();
    let run_log = |i: usize| s.log(&format!("c{i}"));
    for i in 0..20 {
        let child = s.spawn_consumer(Some(&run_log(i)));
        std::thread::sleep(Duration::from_millis(rng.range(5, 40)));
        common::kill(child);
        runs.push(
            common::read_log(&run_log(i))
                .into_iter()
                .map(|l| l[0])
                .collect(),
        );
    }
    s.finish();
    let last = s.spawn_consumer(Some(&run_log(20)));
    let (_, status) = common::wait(producer, Duration::from_secs(120), "producer");
    assert!(status.success(), "producer failed");
    let (out, status) = common::wait(last, Duration::from_secs(120), "last consumer");
    assert!(status.success(), "last consumer failed: {out}");
    runs.push(
        common::read_log(&run_log(20))
            .into_iter()
            .map(|l| l[0])
            .collect(),
    );
    let total = s.acked(0);

    let mut processed = vec![false; total as usize];
    let mut resume_at = 0;
    for (i, offsets) in runs.iter().enumerate() {
        // Each run starts at or before where the previous one got to (at-least-once), at most
        // one commit interval back, and reads densely from there.
        if let Some(&first) = offsets.first() {
            assert!(
                first <= resume_at,
                "run {i} started at {first}, past {resume_at}: records lost"
            );
            assert!(
                resume_at - first <= 16,
                "run {i} started {first}, {resume_at} expected"
            );
            for (k, &o) in offsets.iter().enumerate() {
                assert_eq!(
                    o,
                    first + k as u64,
                    "run {i}: offsets not dense around {:?}",
                    &offsets[k.saturating_sub(3)..(k + 3).min(offsets.len())]
                );
                processed[o as usize] = true;
            }
            resume_at = resume_at.max(offsets.last().unwrap() + 1);
        }
    }
    assert!(
        processed.iter().all(|&p| p),
        "some records were never processed"
    );
    let kills_mid_stream = runs.iter().filter(|o| !o.is_empty()).count();
    println!("  {kills_mid_stream} runs processed records; all {total} processed");
    assert!(
        kills_mid_stream >= 10,
        "too few kills landed mid-stream: {kills_mid_stream}"
    );
}
