//! Cross-language tests: the C and Python examples against Rust peers, through the freshly
//! built `libshmq.so`, and the C examples under valgrind. `topic.c` publishes keyed records
//! to a topic and reads them as a group member.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use shmq_core::{partition_for_key, FullPolicy, Options, Queue, Topic, TopicOptions};

const COUNT: u64 = 100_000;
/// Each poll waits at most this long; a stuck peer fails the test instead of hanging it.
const POLL: Duration = Duration::from_secs(20);

/// The tests spawn busy peers; one at a time keeps them reliable on small machines.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the `libshmq.so` built with this test. Cargo builds every crate type
/// of the library before running its tests, into `target/<profile>/deps` (the test binary's
/// own directory); `cargo build` also copies it to `target/<profile>`.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("deps dir").to_path_buf();
        let profile = deps.parent().expect("profile dir").to_path_buf();
        if deps.join("libshmq.so").exists() {
            return deps;
        }
        if !profile.join("libshmq.so").exists() {
            // Not expected, but be robust: build the cdylib explicitly.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "-p", "shmq-ffi"])
                .status()
                .expect("run cargo build")
                .success();
            assert!(ok, "cargo build -p shmq-ffi failed");
        }
        assert!(
            profile.join("libshmq.so").exists(),
            "no libshmq.so in {} or {}",
            deps.display(),
            profile.display()
        );
        profile
    })
}

/// Compiles `examples/<name>.c` against the header and `libshmq.so` (once per test run).
fn c_example(name: &'static str) -> PathBuf {
    static BUILT: Mutex<Vec<(&'static str, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shmq-ffi-examples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let lib = lib_dir();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("examples").join(format!("{name}.c")))
        .arg("-L")
        .arg(lib)
        .arg("-lshmq")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling {name}.c failed");
    built.push((name, out.clone()));
    out
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
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("NOTE: valgrind is not installed; skipping the valgrind run of the C examples");
        return;
    }
    // Fewer messages: valgrind runs the library some 50x slower.
    c_publisher_to_rust(2_000, VALGRIND);
    rust_to_c_subscriber(2_000, VALGRIND);
    c_topic_publisher_to_rust(50, 10, VALGRIND);
    rust_topic_publisher_to_c(50, 10, VALGRIND);
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

/// The interpreter of the Python tests. They fail, never skip, when it cannot be run: a test
/// that passes because its tool is missing checks nothing.
fn python3() -> &'static str {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => "python3",
        Ok(out) => panic!(
            "`python3 --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "python3 is required by the Python tests of shmq-ffi and could not be run ({e}): \
             install it (Debian: apt-get install python3) or put it on PATH"
        ),
    }
}

#[test]
fn python_publisher_rust_consumer() {
    let _serial = serial();
    let python = python3();
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
