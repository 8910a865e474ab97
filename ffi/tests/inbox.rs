//! Inboxes through the C ABI (`tests/c/inbox.c`): two C processes and a Rust thread apply the
//! same keys through one inbox, each key exactly once; the checks of the `shmq_inbox_*`
//! functions (fresh, busy, done, a freed mark, counters, deletion, errors); the same under
//! valgrind.

mod build;

#[path = "../../tests/common/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use build::c_program;
use shmq_core::{InboxOptions, Options, Queue};

/// Longest a C program may run (valgrind included) before the test fails.
const LIMIT: Duration = Duration::from_secs(240);

const VALGRIND: &[&str] = &[
    "valgrind",
    "--quiet",
    "--error-exitcode=1",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect,possible",
];

/// Starts `wrap... inbox args...` with its standard output piped.
fn start(wrap: &[&str], args: &[&str]) -> std::process::Child {
    let program = c_program("tests/c", "inbox");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the inbox program")
}

/// Waits for `child` (killing and reaping it after [`LIMIT`]), checks that it succeeded and
/// returns what it printed.
fn finish(mut child: std::process::Child, what: &str) -> String {
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).expect("read the output");
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the inbox program") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the inbox program ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().expect("the output reader");
    assert!(
        status.success(),
        "{what}: the inbox program failed ({status})"
    );
    out
}

/// Two C processes (under `wrap`) and a Rust thread apply keys `0..count` through one inbox:
/// every key is applied exactly once, by one of them.
fn shared(count: u64, wrap: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.q");
    let queue = Queue::create(&path, &Options::default()).unwrap();
    let p = path.to_str().unwrap();
    let n = count.to_string();
    let children: Vec<_> = (0..2).map(|_| start(wrap, &[p, "apply", &n])).collect();
    let mut inbox = queue
        .inbox("effects", &InboxOptions { window: 4096 })
        .unwrap();
    let mut applied = BTreeMap::<u64, Vec<String>>::new();
    for i in (0..count).rev() {
        let key = format!("key {i}");
        loop {
            match inbox.once(key.as_bytes(), || ()) {
                Ok(Some(())) => applied.entry(i).or_default().push("rust".into()),
                Ok(None) => {}
                Err(shmq_core::Error::KeyBusy { .. }) => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("{e}"),
            }
            break;
        }
    }
    for (k, child) in children.into_iter().enumerate() {
        for line in finish(child, &format!("C process {k}")).lines() {
            let i = line.strip_prefix("applied ").expect("an applied line");
            applied
                .entry(i.parse().unwrap())
                .or_default()
                .push(format!("c{k}"));
        }
    }
    for i in 0..count {
        assert_eq!(
            applied.get(&i).map(Vec::len),
            Some(1),
            "key {i}: {applied:?}"
        );
    }
    let info = queue.inbox_info("effects").unwrap();
    assert_eq!((info.admitted, info.done, info.held), (count, count, 0));
}

#[test]
fn c_and_rust_apply_each_key_once() {
    shared(400, &[]);
}

#[test]
fn c_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.q");
    Queue::create(&path, &Options::default()).unwrap();
    finish(start(&[], &[path.to_str().unwrap(), "checks"]), "checks");
}

#[test]
fn c_inbox_under_valgrind() {
    if !tools::require_valgrind("the C inbox program") {
        return;
    }
    shared(40, VALGRIND);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.q");
    Queue::create(&path, &Options::default()).unwrap();
    finish(
        start(VALGRIND, &[path.to_str().unwrap(), "checks"]),
        "checks under valgrind",
    );
}
