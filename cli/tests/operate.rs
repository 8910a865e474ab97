//! End-to-end tests of the operator subcommands: `group`, `stat`, `completions`, durability
//! at creation, and reading from a time.

mod common;

use std::time::Duration;

use common::{fails, info, ok, path_in, shmq, wait_for_info, Background};

/// A queue in a fresh directory with `n` messages `m0`, `m1`, … and group `g` that has
/// committed the first `committed` of them.
fn queue_with(n: usize, committed: usize) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    ok(&["group", "create", &q, "g"]);
    let lines: String = (0..n).map(|i| format!("m{i}\n")).collect();
    assert!(shmq(&["publish", &q], lines.as_bytes()).status.success());
    if committed > 0 {
        let count = committed.to_string();
        ok(&["consume", &q, "-g", "g", "--count", &count, "--commit"]);
    }
    (dir, q)
}

/// The committed offset of group `name` according to `info --json`.
fn committed(q: &str, name: &str) -> u64 {
    info(q)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name}"))["committed"]
        .as_u64()
        .unwrap()
}

#[test]
fn group_list_shows_lag_and_holders() {
    let (_d, q) = queue_with(10, 4);
    ok(&["group", "create", &q, "tap", "--non-gating", "--latest"]);
    let table = ok(&["group", "list", &q]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "GROUP",
            "COMMITTED",
            "LAG",
            "LAG",
            "BYTES",
            "GATING",
            "HOLDER"
        ]
    );
    // m4..m9 are 2 bytes each: 40 ring bytes a record.
    assert_eq!(rows[1], ["g", "4", "6", "240", "B", "yes", "-"], "{table}");
    assert_eq!(rows[2], ["tap", "10", "0", "0", "B", "no", "-"], "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&["group", "list", &q, "--json"])).unwrap();
    assert_eq!(json[0]["name"], "g");
    assert_eq!(json[0]["lag_bytes"], 240);
    assert_eq!(json[1]["gating"], false);

    fails(
        &["group", "create", &q, "g"],
        &[&q, "\"g\"", "already exists"],
    );
    let empty = tempfile::tempdir().unwrap();
    let bare = path_in(empty.path(), "bare");
    ok(&["create", &bare, "--capacity", "64KiB"]);
    assert_eq!(ok(&["group", "list", &bare]), "no consumer groups\n");
}

#[test]
fn group_reset_replays_and_skips() {
    let (_d, q) = queue_with(10, 10);
    assert!(ok(&["group", "reset", &q, "g", "--to", "3"]).contains("10 -> 3 (lag 7)"));
    assert_eq!(
        ok(&["consume", &q, "-g", "g", "--count", "2", "--commit"]),
        "m3\nm4\n"
    );
    ok(&["group", "reset", &q, "g", "--to", "earliest"]);
    assert_eq!(committed(&q, "g"), 0);
    ok(&["group", "reset", &q, "g", "--to", "latest"]);
    assert_eq!(committed(&q, "g"), 10);
    // Every message was published within the last hour, and none in the future.
    ok(&["group", "reset", &q, "g", "--to", "now-1h"]);
    assert_eq!(committed(&q, "g"), 0);
    ok(&["group", "reset", &q, "g", "--to", "2999-01-01T00:00:00Z"]);
    assert_eq!(committed(&q, "g"), 10);

    fails(
        &["group", "reset", &q, "nope", "--to", "1"],
        &[&q, "\"nope\"", "does not exist"],
    );
    fails(
        &["group", "reset", &q, "g", "--to", "11"],
        &[&q, "offset 11", "0..=10"],
    );
    fails(
        &["group", "reset", &q, "g", "--to", "Tuesday"],
        &["'Tuesday'", "--to", "RFC 3339"],
    );
    fails(&["group", "reset", &q, "g"], &["--to"]);
}

#[test]
fn group_reset_and_delete_refuse_a_live_member() {
    let (_d, q) = queue_with(3, 0);
    let member = Background::start(&["consume", &q, "-g", "g", "--follow"]);
    let pid = member.pid().to_string();
    // The member has joined once info shows it as the holder.
    wait_for_info(&q, "member never joined", |v| {
        v["groups"][0]["holder_pid"] == member.pid()
    });
    fails(
        &["group", "reset", &q, "g", "--to", "latest"],
        &[&q, "\"g\"", "held by live process", &pid],
    );
    fails(
        &["group", "delete", &q, "g"],
        &[&q, "\"g\"", "held by live process", &pid],
    );
    drop(member);
    // A dead holder no longer protects the group.
    ok(&["group", "reset", &q, "g", "--to", "latest"]);
    assert!(ok(&["group", "delete", &q, "g"]).contains("deleted group \"g\""));
    assert!(info(&q)["groups"].as_array().unwrap().is_empty());
    fails(
        &["group", "delete", &q, "g"],
        &[&q, "\"g\"", "does not exist"],
    );
}

#[test]
fn consume_from_a_time() {
    let (_d, q) = queue_with(3, 0);
    std::thread::sleep(Duration::from_millis(1100));
    let later = "now-1s";
    assert!(shmq(&["publish", &q], b"new\n").status.success());
    assert_eq!(
        ok(&["consume", &q, "-g", "g", "--from", later]),
        "new\n",
        "only the message published in the last second"
    );
    assert_eq!(
        ok(&["consume", &q, "-g", "g", "--from", "1970-01-01T00:00:00Z"]),
        "m0\nm1\nm2\nnew\n"
    );
}

#[test]
fn stat_prints_rates_per_interval() {
    let (_d, q) = queue_with(5, 2);
    let text = ok(&["stat", &q, "--interval", "50ms", "--count", "2"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for pair in lines.chunks(2) {
        assert!(pair[0].contains("tail 5  published 0/s"), "{text}");
        assert!(
            pair[1].contains("g  committed 0/s  lag 3  (steady)"),
            "{text}"
        );
    }
    let json = ok(&["stat", &q, "--interval", "20ms", "--count", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["tail_offset"], 5);
    assert_eq!(v["groups"][0]["lag"], 3);
    assert_eq!(v["groups"][0]["lag_change"], 0);
    assert!(v["seconds"].as_f64().unwrap() >= 0.019);

    fails(
        &["stat", &q, "--interval", "1ms"],
        &["'1ms'", "at least 10ms"],
    );
    fails(&["stat", &q, "--count", "0"], &["'0'", "--count"]);
    let missing = q.replace("/q", "/missing");
    fails(
        &["stat", &missing, "--count", "1"],
        &[&missing, "no such queue file"],
    );
}

#[test]
fn stat_sees_a_producer_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    // Non-gating, so it never fills the ring and holds the producer back.
    ok(&["group", "create", &q, "tap", "--non-gating"]);
    let producer = Background::start(&["publish", &q, "--count", "100000000", "--size", "16"]);
    let json = ok(&["stat", &q, "--interval", "200ms", "--count", "3", "--json"]);
    drop(producer);
    let samples: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = &samples[2];
    assert_eq!(last["producers_alive"], 1, "{json}");
    assert!(last["published_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    // The group commits nothing, so its lag grows by what was published.
    assert!(
        last["groups"][0]["lag_change"].as_i64().unwrap() > 0,
        "{json}"
    );
}

#[test]
fn create_with_durability() {
    let dir = tempfile::tempdir().unwrap();
    let batch = path_in(dir.path(), "batch");
    let out = ok(&[
        "create",
        &batch,
        "--capacity",
        "64KiB",
        "--durability",
        "batch",
        "--batch-delay",
        "5ms",
        "--batch-bytes",
        "8KiB",
    ]);
    assert!(out.contains("durability batch"), "{out}");
    let v = info(&batch);
    assert_eq!(v["durability"], "batch");
    assert_eq!(v["batch_max_delay_ns"], 5_000_000);
    assert_eq!(v["batch_max_bytes"], 8192);
    assert!(ok(&["info", &batch]).contains("batch (flush within 5.00 ms or every 8 KiB)"));

    let sync = path_in(dir.path(), "sync");
    ok(&[
        "create",
        &sync,
        "--capacity",
        "64KiB",
        "--durability",
        "sync",
    ]);
    assert!(shmq(&["publish", &sync], b"kept\n").status.success());
    let v = info(&sync);
    assert_eq!(v["durability"], "sync");
    assert_eq!(
        v["durable_offset"], 1,
        "a sync publish is on disk when it returns"
    );

    fails(
        &["create", &path_in(dir.path(), "x"), "--durability", "maybe"],
        &["'maybe'", "--durability"],
    );
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = ok(&["completions", shell]);
        for sub in ["create", "consume", "group", "stat"] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
    }
    fails(&["completions", "tcsh"], &["'tcsh'"]);
}

#[test]
fn info_shows_a_producer_held_back_by_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "4KiB"]);
    ok(&["group", "create", &q, "slow"]);
    let _producer = Background::start(&["publish", &q, "--count", "1000", "--size", "100"]);
    let v = wait_for_info(&q, "never waited", |v| v["producers_waiting"] == 1);
    assert_eq!(v["producers_alive"], 1);
    // 136-byte records: 30 fill the 4 KiB ring, and the 31st waits for "slow".
    assert_eq!(v["fill_bytes"], 30 * 136, "{v}");
    assert_eq!(v["groups"][0]["lag"], 30);
    ok(&["group", "reset", &q, "slow", "--to", "latest"]);
    // The reset made room: the producer wakes and goes on.
    wait_for_info(&q, "producer never woke", |v| {
        v["tail_offset"].as_u64() > Some(30)
    });
}

#[test]
fn publish_the_lines_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB", "--max-message", "8"]);
    ok(&["group", "create", &q, "g"]);
    let lines = path_in(dir.path(), "lines.txt");
    std::fs::write(&lines, "one\ntwo\r\nthree").unwrap();
    assert_eq!(ok(&["publish", &q, "--file", &lines]), "0\n1\n2\n");
    assert_eq!(ok(&["consume", &q, "-g", "g"]), "one\ntwo\nthree\n");

    let missing = path_in(dir.path(), "missing.txt");
    fails(
        &["publish", &q, "--file", &missing],
        &[&missing, "open", "No such file"],
    );
    std::fs::write(&lines, "fits\nthis line is too long\n").unwrap();
    fails(
        &["publish", &q, "--file", &lines],
        &[
            &q,
            &format!("{lines} line 2"),
            "exceeds the queue's maximum of 8",
        ],
    );
    fails(
        &["publish", &q, "--file", &lines, "--count", "3"],
        &["--file", "--count"],
    );
}

#[test]
fn a_stopped_consumer_with_a_session_timeout_loses_its_group_and_says_so() {
    let (_d, q) = queue_with(3, 0);
    let mut member = std::process::Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args([
            "consume",
            &q,
            "-g",
            "g",
            "--follow",
            "--session-timeout",
            "1s",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start shmq consume");
    let pid = member.id().to_string();
    wait_for_info(&q, "member never joined", |v| {
        v["groups"][0]["holder_pid"] == member.id()
    });
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    // Within its session the stopped member still holds the group...
    fails(
        &["group", "reset", &q, "g", "--to", "latest"],
        &["held by live process", &pid],
    );
    // ...and once the session has passed, another consumer takes it and reads on.
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let out = ok(&["consume", &q, "-g", "g", "--count", "3", "--commit"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    signal("-CONT");
    let status = member.wait().expect("wait for the member");
    let mut err = String::new();
    std::io::Read::read_to_string(member.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        !status.success(),
        "the fenced member must fail, not go on reading"
    );
    assert!(err.contains("taken over"), "{err}");
    assert_eq!(info(&q)["groups"][0]["committed"], 3);
}
