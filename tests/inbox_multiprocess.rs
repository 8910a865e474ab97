//! An inbox shared by processes: three processes apply a stream of keys with duplicates through
//! one inbox while they are SIGKILLed at random and restarted, and a process is killed at each
//! named crash point of the inbox (`inbox.*`) before a fresh one finishes the stream.
//!
//! Processes are this test binary re-run in the role `applier` (`harness = false`, see
//! `common`). Each one walks the keys `0..KEYS`, every key twice, in an order of its own, and
//! applies a key's effect by appending one line to its own log with a single `write(2)`
//! (`O_APPEND`), between `begin` and `done`. The checks: every key's effect is in the logs, and
//! a key's effect appears more than once only in the documented window (an earlier effect is
//! the last line of a process that was killed, so it died between the effect and `done`);
//! every key ends done, and no key is held.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use shmq::{Admit, InboxOptions, Options, Queue};

/// The inbox of every test.
const INBOX: &str = "effects";
/// Keys in the stream (fewer than the window: no key is evicted, so each is applied once).
const KEYS: u64 = 5000;
/// The window.
const WINDOW: u32 = 8192;
/// The longest a child or a phase of a test may take before the test fails.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    match common::role().as_deref() {
        Some("applier") => applier(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            (
                "three_appliers_sigkilled_at_random",
                three_appliers_sigkilled_at_random,
            ),
            ("crash_points_of_the_inbox", crash_points_of_the_inbox),
        ]),
    }
}

/// The child: applies every key of the stream once through the inbox, then exits 0.
fn applier() {
    let queue: PathBuf = common::arg("SHMQ_QUEUE");
    let log: PathBuf = common::arg("SHMQ_LOG");
    let seed: u64 = common::arg("SHMQ_ORDER");
    let q = Queue::open(&queue).unwrap();
    let mut inbox = q.inbox(INBOX, &InboxOptions { window: WINDOW }).unwrap();
    let mut log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap();
    // Every key twice, rotated and strided by the seed: each process meets the keys in
    // another order, and its second pass meets its own duplicates.
    let stride = [7, 11, 13, 17][seed as usize % 4];
    let mut todo: VecDeque<u64> = (0..2 * KEYS)
        .map(|i| (i * stride + seed * 101) % KEYS)
        .collect();
    while let Some(k) = todo.pop_front() {
        match inbox.begin(&k.to_le_bytes()).unwrap() {
            Admit::Fresh(mark) => {
                std::thread::sleep(Duration::from_micros(300));
                common::log_line(&mut log, &k.to_string());
                std::thread::sleep(Duration::from_micros(300));
                mark.done().unwrap();
            }
            Admit::Done => {}
            Admit::Busy => {
                todo.push_back(k);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    std::process::exit(0);
}

/// A queue with its inbox, and the logs of every process run against it.
struct Setup {
    _dir: tempfile::TempDir,
    queue: PathBuf,
    logs: PathBuf,
    runs: u64,
}

/// One applier process: its log and whether it was killed.
struct Run {
    log: PathBuf,
    killed: bool,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("events.q");
        Queue::create(&queue, &Options::default()).unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        Setup {
            queue,
            logs,
            _dir: dir,
            runs: 0,
        }
    }

    fn spawn(&mut self, env: &[(&str, String)]) -> (Child, PathBuf) {
        self.runs += 1;
        let log = self.logs.join(format!("run-{}", self.runs));
        let mut all = vec![
            ("SHMQ_QUEUE", self.queue.display().to_string()),
            ("SHMQ_LOG", log.display().to_string()),
            ("SHMQ_ORDER", self.runs.to_string()),
        ];
        all.extend(env.iter().cloned());
        (common::spawn("applier", &all), log)
    }

    /// Every key applied, duplicates only in the documented window, every key done and none
    /// held.
    fn check(&self, runs: &[Run], what: &str) {
        // key -> the effects, as (run, line index, last line of that run?).
        let mut effects: BTreeMap<u64, Vec<(usize, bool)>> = BTreeMap::new();
        for (r, run) in runs.iter().enumerate() {
            let lines = common::read_log(&run.log);
            let n = lines.len();
            for (i, line) in lines.iter().enumerate() {
                effects.entry(line[0]).or_default().push((r, i + 1 == n));
            }
        }
        let mut repeated = 0;
        for k in 0..KEYS {
            let Some(e) = effects.get(&k) else {
                panic!("{what}: key {k} was never applied");
            };
            // Every effect but the last must be a killed run's last line: it died between
            // the effect and `done`.
            for &(r, last) in &e[..e.len() - 1] {
                assert!(
                    runs[r].killed && last,
                    "{what}: key {k} applied {} times: {e:?}, run {r} was not killed in the \
                     window between the effect and done",
                    e.len()
                );
                repeated += 1;
            }
        }
        let q = Queue::open(&self.queue).unwrap();
        let mut inbox = q.inbox(INBOX, &InboxOptions { window: WINDOW }).unwrap();
        for k in 0..KEYS {
            assert!(
                matches!(inbox.begin(&k.to_le_bytes()).unwrap(), Admit::Done),
                "{what}: key {k} is not done"
            );
        }
        let info = q.inbox_info(INBOX).unwrap();
        assert_eq!(info.held, 0, "{what}: {info:?}");
        assert_eq!((info.fill, info.done), (KEYS, KEYS), "{what}: {info:?}");
        println!(
            "  {what}: {} runs, {} killed, {repeated} effects applied again (each by a run \
             killed between its effect and done), {} keys taken again, {} admissions",
            runs.len(),
            runs.iter().filter(|r| r.killed).count(),
            info.retaken,
            info.admitted
        );
    }
}

/// Waits for `child` and records its run.
fn finish(child: Child, log: PathBuf, what: &str) -> Run {
    let (_, status) = common::wait(child, LIMIT, what);
    let killed = common::killed(status);
    assert!(killed || status.success(), "{what}: {status}");
    Run { log, killed }
}

fn three_appliers_sigkilled_at_random() {
    const KILLS: u32 = 40;
    let mut s = Setup::new();
    let mut rng = common::Rng::new();
    let mut live: Vec<(Child, PathBuf)> = (0..3).map(|_| s.spawn(&[])).collect();
    let mut runs = Vec::new();
    let start = Instant::now();
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.range(15, 60)));
        let victim = rng.range(0, live.len() as u64) as usize;
        let (mut child, log) = live.swap_remove(victim);
        // An applier that finished already is reaped as it is (not counted as killed).
        let _ = child.kill();
        runs.push(finish(child, log, "a killed applier"));
        live.push(s.spawn(&[]));
        assert!(start.elapsed() < LIMIT, "the kills took too long");
    }
    for (child, log) in live {
        runs.push(finish(child, log, "an applier"));
    }
    let killed = runs.iter().filter(|r| r.killed).count();
    assert!(
        killed >= KILLS as usize / 2,
        "only {killed} of {KILLS} kills landed before their applier finished"
    );
    s.check(&runs, "random kills");
}

fn crash_points_of_the_inbox() {
    let points: Vec<&str> = shmq::crash::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("inbox."))
        .collect();
    assert!(points.len() >= 4, "the inbox's crash points: {points:?}");
    for point in points {
        let mut s = Setup::new();
        let (child, log) = s.spawn(&[("SHMQ_CRASH_AT", format!("{point}:25"))]);
        let crashed = finish(child, log, point);
        assert!(crashed.killed, "{point}: the applier was not killed there");
        // A fresh applier finishes the stream without waiting for anything.
        let started = Instant::now();
        let (child, log) = s.spawn(&[]);
        let fresh = finish(child, log, point);
        assert!(!fresh.killed);
        assert!(started.elapsed() < LIMIT);
        s.check(&[crashed, fresh], point);
    }
}
