//! Cross-language tests: the C and Python examples against Rust peers, through the freshly
//! built `libshmq.so`, and the C examples under valgrind. `topic.c` publishes keyed records
//! to a topic and reads them as a group member. The fork tests run a C program
//! (`tests/c/fork_after_open.c`) and a Python `multiprocessing` script
//! (`tests/python/fork_workers.py`) that open a queue once and fork hundreds of producers from
//! it, most killed with SIGKILL; the test then reads back every acknowledged record.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod build;
#[path = "../../tests/common/tools.rs"]
mod tools;

use build::{c_program, crate_dir, lib_dir};
use shmq_core::{partition_for_key, FullPolicy, Options, Queue, Topic, TopicOptions};

const COUNT: u64 = 100_000;
/// Each poll waits at most this long; a stuck peer fails the test instead of hanging it.
const POLL: Duration = Duration::from_secs(20);

/// The tests spawn busy peers; one at a time keeps them reliable on small machines.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Compiles `examples/<name>.c` against the header and `libshmq.so` (once per test run).
fn c_example(name: &'static str) -> PathBuf {
    c_program("examples", name)
}

fn new_queue(dir: &Path) -> (PathBuf, Queue) {
    let path = dir.join("interop.q");
    let options = Options {
        capacity: 1 << 20,
        max_message: 4096,
        full_policy: FullPolicy::Block,
        ..Options::default()
    };
    let queue = Queue::create(&path, &options).expect("create queue");
    (path, queue)
}

fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().expect("wait for child");
    assert!(status.success(), "{what} failed: {status}");
}

/// Reads `count` messages "message <i>" with offsets 0.. in order, committing as it goes.
fn rust_consume(queue: &Queue, group: &str, count: u64, child: &mut Child) {
    let mut consumer = queue.consumer(group).expect("consumer");
    for i in 0..count {
        let msg = match consumer.poll(Some(POLL)).expect("poll") {
            Some(m) => m,
            None => {
                let _ = child.kill();
                panic!(
                    "no message {i} within {POLL:?} (peer exited: {:?})",
                    child.try_wait()
                );
            }
        };
        assert_eq!(msg.offset, i, "offsets are dense and in order");
        assert_eq!(
            msg.payload,
            format!("message {i}").as_bytes(),
            "payload of {i}"
        );
        if i % 256 == 255 || i + 1 == count {
            consumer.commit(i).expect("commit");
        }
    }
    assert!(
        consumer.poll(Some(Duration::ZERO)).unwrap().is_none(),
        "nothing extra"
    );
}

fn rust_publish(queue: &Queue, count: u64) {
    let mut producer = queue.producer().expect("producer");
    producer.set_timeout(Some(Duration::from_secs(30)));
    for i in 0..count {
        let offset = producer
            .publish(format!("message {i}").as_bytes())
            .expect("publish");
        assert_eq!(offset, i);
    }
}

fn c_publisher_to_rust(count: u64, wrap: &[&str]) {
    let publisher = c_example("publisher");
    let dir = tempfile::tempdir().unwrap();
    let (path, queue) = new_queue(dir.path());
    // The group exists (gating) before the first record, so nothing can be overwritten.
    drop(queue.consumer("rust").unwrap());
    let (prog, args) = command(wrap, &publisher);
    let mut child = Command::new(prog)
        .args(args)
        .arg(&path)
        .arg(count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn publisher");
    rust_consume(&queue, "rust", count, &mut child);
    wait_ok(child, "C publisher");
}

fn rust_to_c_subscriber(count: u64, wrap: &[&str]) {
    let subscriber = c_example("subscriber");
    let dir = tempfile::tempdir().unwrap();
    let (path, queue) = new_queue(dir.path());
    drop(queue.consumer("c").unwrap());
    let (prog, args) = command(wrap, &subscriber);
    let child = Command::new(prog)
        .args(args)
        .arg(&path)
        .arg("c")
        .arg(count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn subscriber");
    rust_publish(&queue, count);
    wait_ok(child, "C subscriber");
    assert_eq!(
        queue
            .groups()
            .iter()
            .find(|g| g.name == "c")
            .unwrap()
            .committed,
        count
    );
}

/// `wrap` (e.g. valgrind and its flags) followed by `program`.
fn command(wrap: &[&str], program: &Path) -> (String, Vec<String>) {
    let mut all: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    all.push(program.display().to_string());
    let first = all.remove(0);
    (first, all)
}

#[test]
fn c_publisher_rust_consumer() {
    let _serial = serial();
    c_publisher_to_rust(COUNT, &[]);
}

#[test]
fn rust_publisher_c_subscriber() {
    let _serial = serial();
    rust_to_c_subscriber(COUNT, &[]);
}

const VALGRIND: &[&str] = &[
    "valgrind",
    "--quiet",
    "--error-exitcode=1",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect,possible",
];

#[test]
fn c_examples_under_valgrind() {
    let _serial = serial();
    if !tools::require_valgrind("the C examples") {
        return;
    }
    // Fewer messages: valgrind runs the library some 50x slower.
    c_publisher_to_rust(2_000, VALGRIND);
    rust_to_c_subscriber(2_000, VALGRIND);
    c_topic_publisher_to_rust(50, 10, VALGRIND);
    rust_topic_publisher_to_c(50, 10, VALGRIND);
    // Forked children run under valgrind too (those that exit are leak-checked, and fail
    // their parent's check if valgrind finds an error); kill times are longer to match.
    c_fork_after_open(30, Duration::from_millis(200), VALGRIND);
}

fn new_topic(dir: &Path) -> (PathBuf, Topic) {
    let path = dir.join("interop.topic");
    let options = TopicOptions {
        partitions: 4,
        queue: Options {
            capacity: 1 << 18,
            max_message: 256,
            ..Options::default()
        },
    };
    (
        path.clone(),
        Topic::create(&path, &options).expect("create topic"),
    )
}

/// The C program publishes `keys` x `seqs` keyed records; a Rust member checks routing and
/// per-key order.
fn c_topic_publisher_to_rust(keys: u32, seqs: u32, wrap: &[&str]) {
    let program = c_example("topic");
    let dir = tempfile::tempdir().unwrap();
    let (path, topic) = new_topic(dir.path());
    let mut member = topic.consumer("rust").unwrap();
    let (prog, args) = command(wrap, &program);
    let child = Command::new(prog)
        .args(args)
        .arg("publish")
        .arg(&path)
        .args([keys.to_string(), seqs.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn C topic publisher");
    let mut next = vec![0u32; keys as usize];
    for i in 0..keys * seqs {
        let m = member
            .poll(Some(POLL))
            .expect("poll")
            .unwrap_or_else(|| panic!("no record {i} within {POLL:?}"));
        let key = std::str::from_utf8(m.key.expect("a key")).unwrap();
        let k: usize = key.strip_prefix("key-").unwrap().parse().unwrap();
        let seq: u32 = std::str::from_utf8(m.value).unwrap().parse().unwrap();
        assert_eq!(m.partition, partition_for_key(key.as_bytes(), 4), "{key}");
        assert_eq!(seq, next[k], "{key} out of order");
        next[k] += 1;
        let (p, o) = (m.partition, m.offset);
        member.commit(p, o).unwrap();
    }
    wait_ok(child, "C topic publisher");
}

/// Rust publishes `keys` x `seqs` keyed records; the C member checks them and commits.
fn rust_topic_publisher_to_c(keys: u32, seqs: u32, wrap: &[&str]) {
    let program = c_example("topic");
    let dir = tempfile::tempdir().unwrap();
    let (path, topic) = new_topic(dir.path());
    drop(topic.consumer("c").unwrap()); // the group exists before the first record
    let (prog, args) = command(wrap, &program);
    let child = Command::new(prog)
        .args(args)
        .arg("consume")
        .arg(&path)
        .args(["c".to_string(), keys.to_string(), seqs.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn C topic member");
    let mut producer = topic.producer().unwrap();
    producer.set_timeout(Some(POLL));
    for seq in 0..seqs {
        for k in 0..keys {
            let key = format!("key-{k}");
            producer
                .publish_keyed(key.as_bytes(), seq.to_string().as_bytes())
                .unwrap();
        }
    }
    wait_ok(child, "C topic member");
    for info in topic.info() {
        let g = info.groups.iter().find(|g| g.name == "c").unwrap();
        assert_eq!(
            g.committed, info.tail_offset,
            "the C member committed everything"
        );
    }
}

#[test]
fn c_topic_publisher_rust_member() {
    let _serial = serial();
    c_topic_publisher_to_rust(500, 40, &[]);
}

#[test]
fn rust_topic_publisher_c_member() {
    let _serial = serial();
    rust_topic_publisher_to_c(500, 40, &[]);
}

/// The interpreter of the Python tests, or `None` (the test skipped) if it cannot be run and
/// `SHMQ_ALLOW_SKIP` names `python3`; without that, a missing python3 fails the test.
fn python3() -> Option<&'static str> {
    tools::require(
        "python3",
        tools::runs("python3", &["--version"]),
        "the Python tests of shmq-ffi",
        "Debian: apt-get install python3, or put it on PATH",
    )
    .then_some("python3")
}

#[test]
fn python_publisher_rust_consumer() {
    let _serial = serial();
    let Some(python) = python3() else {
        return;
    };
    let count = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let (path, queue) = new_queue(dir.path());
    drop(queue.consumer("rust").unwrap());
    let script = crate_dir().join("../examples/python/publisher.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(&path)
        .arg(count.to_string())
        .env("SHMQ_LIB", lib_dir().join("libshmq.so"))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn python3");
    rust_consume(&queue, "rust", count, &mut child);
    wait_ok(child, "Python publisher");
}

// ---- Fork after open: hundreds of producers forked from one open queue, most killed ----

/// Producer slots of the fork tests' queue: few, so a slot leaked per killed child would
/// exhaust them after a handful of kills.
const FORK_SLOTS: u32 = 8;

/// The longest a fork program may run before the test kills it and fails.
const FORK_LIMIT: Duration = Duration::from_secs(300);

/// A queue for the fork tests: [`FORK_SLOTS`] producer slots; room for every record of a run,
/// so no publish waits for the groups; a claim timeout short enough that the records of
/// children killed mid-publish are skipped quickly; the group "verify" (read by the test at
/// the end, it exists before the first record) and the group "g" (held by the programs'
/// children in turn).
fn fork_queue(dir: &Path) -> (PathBuf, Queue) {
    let path = dir.join("fork.q");
    let options = Options {
        capacity: 64 << 20,
        max_message: 256,
        producer_slots: FORK_SLOTS,
        group_slots: 8,
        claim_timeout: Duration::from_millis(50),
        ..Options::default()
    };
    let queue = Queue::create(&path, &options).expect("create queue");
    drop(queue.consumer("verify").unwrap());
    drop(queue.consumer("g").unwrap());
    (path, queue)
}

/// The payload of record `seq` of writer `who`, as the fork programs make it: "WHO SEQ "
/// followed by (SEQ * 7 + sum of WHO's bytes) % 61 letters, letter j being 'a' + (SEQ + j) % 26.
fn fork_payload(who: &str, seq: u64) -> Vec<u8> {
    let sum: u64 = who.bytes().map(u64::from).sum();
    let mut payload = format!("{who} {seq} ").into_bytes();
    let fill = (seq * 7 + sum) % 61;
    payload.extend((0..fill).map(|j| b'a' + ((seq + j) % 26) as u8));
    payload
}

/// The seed of a fork run's random choices (roles, kill times): `SHMQ_FORK_SEED` repeats a
/// run's choices, else they are new.
fn fork_seed() -> u64 {
    let seed = match std::env::var("SHMQ_FORK_SEED") {
        Ok(s) => s.parse().expect("SHMQ_FORK_SEED is a number"),
        Err(_) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        }
    };
    println!("fork run seed {seed} (SHMQ_FORK_SEED={seed} repeats its random choices)");
    seed
}

/// Runs `cmd` to its end, capturing its output; kills it and fails after `limit`.
fn run_bounded(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let collect = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the program") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap();
            panic!(
                "{what} did not finish within {limit:?}; its stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Fails unless `out` is a successful run; prints its output.
fn check_run(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    print!("{stdout}");
    eprint!("{stderr}");
    stdout
}

/// The `name=value` counts on the line of `out` that starts with `prefix`.
fn run_counts(out: &str, prefix: &str) -> HashMap<String, u64> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the output:\n{out}"));
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a count"))
        })
        .collect()
}

/// What group "verify" read after a fork run.
struct Deliveries {
    /// Records delivered.
    records: usize,
    /// Acknowledged records (complete lines of the ack logs), each found delivered.
    acked: usize,
    /// Offsets below the tail that were not delivered: records claimed by a child killed
    /// before it committed them, aborted after the claim timeout.
    skipped: u64,
}

/// Reads the whole queue with group "verify": every record must be some writer's intact
/// payload ([`fork_payload`]), each (writer, seq) delivered at most once, and every record
/// acknowledged in a log of `acks` (lines "<offset> <payload>", one file per writer named
/// after it) delivered at that offset with that payload. A torn last line (a writer killed in
/// the middle of its write) is dropped.
fn verify_deliveries(queue: &Queue, acks: &Path) -> Deliveries {
    let tail = queue.tail_offset();
    let mut consumer = queue.consumer("verify").expect("join verify");
    let mut delivered: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumer.position() < tail {
        assert!(
            Instant::now() < deadline,
            "reading {tail} records took over 120 s (at {})",
            consumer.position()
        );
        // Short polls: the last records may all be aborted ones, skipped after the claim
        // timeout, after which the poll would wait for records that never come.
        let Some(m) = consumer.poll(Some(Duration::from_secs(1))).expect("poll") else {
            continue;
        };
        let text = String::from_utf8_lossy(m.payload);
        let mut fields = text.splitn(3, ' ');
        let who = fields.next().unwrap();
        let seq = fields.next().and_then(|s| s.parse::<u64>().ok());
        let seq = seq.unwrap_or_else(|| panic!("record {} is malformed: {text:?}", m.offset));
        assert_eq!(
            text.as_bytes(),
            fork_payload(who, seq),
            "record {} is torn or mixed",
            m.offset
        );
        assert!(
            seen.insert((who.to_string(), seq)),
            "record {} ({who} {seq}) was delivered twice",
            m.offset
        );
        delivered.insert(m.offset, m.payload.to_vec());
    }
    let mut acked = 0;
    for entry in std::fs::read_dir(acks).unwrap() {
        let path = entry.unwrap().path();
        let who = path.file_stem().unwrap().to_str().unwrap().to_string();
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        for line in complete.lines() {
            let (offset, payload) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: malformed line {line:?}", path.display()));
            let offset: u64 = offset.parse().unwrap();
            assert!(
                payload.starts_with(&format!("{who} ")),
                "{}: a record of another writer: {line:?}",
                path.display()
            );
            match delivered.get(&offset) {
                Some(p) => assert_eq!(
                    p.as_slice(),
                    payload.as_bytes(),
                    "{}: acknowledged offset {offset} was delivered with another payload",
                    path.display()
                ),
                None => panic!(
                    "{}: acknowledged record {offset} ({payload:?}) was not delivered",
                    path.display()
                ),
            }
            acked += 1;
        }
    }
    Deliveries {
        records: delivered.len(),
        acked,
        skipped: tail - delivered.len() as u64,
    }
}

/// After every process of a fork run ended: no producer slot and no hold on "g" is left.
fn check_nothing_held(queue: &Queue) {
    assert_eq!(
        queue.live_producers(),
        0,
        "a producer slot is held after every process of the run ended"
    );
    let g = queue.groups().into_iter().find(|g| g.name == "g").unwrap();
    assert!(!g.holder_alive, "group g is still held: {g:?}");
}

/// Runs a fork program to its end and checks what it left: `program(path, acks, seed)` is
/// its command for the queue at `path` (from [`fork_queue`]), the ack directory `acks` and the
/// seed of its random choices. It forks `n` processes and prints its counts on a line
/// starting with `prefix` (`<unit>=n killed=... finished=... eforked=... takeovers=...
/// parent_publishes=... final_producers=...`).
fn fork_run(prefix: &str, unit: &str, n: u64, program: impl FnOnce(&Path, &Path, u64) -> Command) {
    let dir = tempfile::tempdir().unwrap();
    let (path, queue) = fork_queue(dir.path());
    let acks = dir.path().join("acks");
    std::fs::create_dir(&acks).unwrap();
    let cmd = program(&path, &acks, fork_seed());
    let started = Instant::now();
    let out = run_bounded(cmd, FORK_LIMIT, prefix);
    println!("the program ran {:?}", started.elapsed());
    let counts = run_counts(&check_run(&out, prefix), prefix);
    assert_eq!(counts[unit], n);
    assert_eq!(counts["killed"] + counts["finished"], n);
    assert_eq!(
        counts["final_producers"],
        u64::from(FORK_SLOTS - 1),
        "every slot but P0's is free at the end"
    );
    // The run covered what it is for (the usual values are well above these bounds).
    assert!(counts["killed"] >= n / 3, "few kills: {counts:?}");
    assert!(counts["eforked"] >= n / 5, "few EFORKED checks: {counts:?}");
    let takeovers = (n / 30).max(1);
    assert!(
        counts["takeovers"] >= takeovers,
        "few takeovers: {counts:?}"
    );
    assert!(counts["parent_publishes"] >= n / 2, "{counts:?}");
    let started = Instant::now();
    let deliveries = verify_deliveries(&queue, &acks);
    println!(
        "{} records delivered, {} of them acknowledged, {} skipped (claimed by a process \
         killed before it committed); read in {:?}",
        deliveries.records,
        deliveries.acked,
        deliveries.skipped,
        started.elapsed()
    );
    assert!(deliveries.acked as u64 >= n, "few acknowledged records");
    check_nothing_held(&queue);
}

/// Runs `tests/c/fork_after_open.c` (its header says what it does and checks) under `wrap`:
/// `children` forked from one open queue, most killed within `kill_max` of their start (of
/// their joining "g" for "g" children).
fn c_fork_after_open(children: u64, kill_max: Duration, wrap: &[&str]) {
    let program = c_program("tests/c", "fork_after_open");
    fork_run(
        "fork_after_open:",
        "children",
        children,
        |path, acks, seed| {
            let (prog, args) = command(wrap, &program);
            let mut cmd = Command::new(prog);
            cmd.args(args).arg(path).arg(acks).args([
                children.to_string(),
                FORK_SLOTS.to_string(),
                seed.to_string(),
                kill_max.as_micros().to_string(),
            ]);
            cmd
        },
    );
}

#[test]
fn c_fork_after_open_with_hundreds_of_killed_children() {
    let _serial = serial();
    c_fork_after_open(300, Duration::from_millis(3), &[]);
}

/// Runs `tests/python/fork_workers.py` (its docs say what it does and checks): `workers`
/// `multiprocessing` workers (fork start method) started from one open queue, most killed
/// with SIGKILL within `kill_max` of their start (of their joining "g" for "g" workers).
fn python_fork_workers(workers: u64, kill_max: Duration) {
    let Some(python) = python3() else {
        return;
    };
    fork_run("fork_workers:", "workers", workers, |path, acks, seed| {
        let mut cmd = Command::new(python);
        cmd.arg(crate_dir().join("tests/python/fork_workers.py"))
            .arg(path)
            .arg(acks)
            .args([
                workers.to_string(),
                FORK_SLOTS.to_string(),
                seed.to_string(),
                kill_max.as_millis().to_string(),
            ])
            .env("SHMQ_LIB", lib_dir().join("libshmq.so"));
        cmd
    });
}

#[test]
fn python_fork_workers_with_hundreds_killed() {
    let _serial = serial();
    python_fork_workers(200, Duration::from_millis(10));
}
