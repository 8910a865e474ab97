//! End-to-end tests of the `shmq` binary: each runs it as a separate process.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, info, ok, path_in, shmq};

#[test]
fn demo_runs_and_proves_exactly_once_in_order() {
    let start = Instant::now();
    let out = ok(&["demo", "--messages", "3000", "--no-progress"]);
    assert!(out.contains("summary"), "{out}");
    for group in ["coupons", "points", "sms"] {
        let row = out
            .lines()
            .find(|l| l.trim_start().starts_with(group) && l.contains("3,000"))
            .unwrap_or_else(|| panic!("no summary row for {group}: {out}"));
        assert!(row.contains("yes"), "{row}");
    }
    assert!(out.contains("P99.9"), "{out}");
    assert!(
        out.contains("received all 3,000 orders exactly once and in order"),
        "{out}"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn demo_keeps_its_queue_with_dir() {
    let dir = tempfile::tempdir().unwrap();
    let keep = path_in(dir.path(), "demo");
    ok(&[
        "demo",
        "--messages",
        "1000",
        "--no-progress",
        "--dir",
        &keep,
    ]);
    let queue = path_in(&dir.path().join("demo"), "orders.q");
    let v = info(&queue);
    assert_eq!(v["tail_offset"], 1000);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3);
    for g in groups {
        assert_eq!(g["committed"], 1000, "{g}");
        assert_eq!(g["lag"], 0, "{g}");
        assert_eq!(g["gating"], true, "{g}");
    }
    // A second run into the same directory refuses to reuse the queue.
    fails(
        &["demo", "--messages", "10", "--no-progress", "--dir", &keep],
        &[&queue, "already exists"],
    );
}

#[test]
fn demo_with_a_tiny_ring_is_held_back_but_completes() {
    let out = ok(&[
        "demo",
        "--messages",
        "3000",
        "--no-progress",
        "--capacity",
        "16KiB",
        "--rate",
        "0",
    ]);
    assert!(out.contains("exactly once and in order"), "{out}");
}

#[test]
fn create_then_info_reports_a_known_state() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    let created = ok(&[
        "create",
        &q,
        "--capacity",
        "1MiB",
        "--max-message",
        "4KiB",
        "--full",
        "reject",
        "--mode",
        "0640",
    ]);
    assert!(created.contains("1 MiB"), "{created}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&q).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    let out = shmq(&["publish", &q], b"one\ntwo\nthree\n");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n");
    let read = ok(&[
        "consume", &q, "--group", "g", "--create", "--count", "2", "--commit",
    ]);
    assert_eq!(read, "one\ntwo\n");

    let v = info(&q);
    assert_eq!(v["capacity"], 1 << 20);
    assert_eq!(v["max_message"], 4096);
    assert_eq!(v["full_policy"], "reject");
    assert_eq!(v["tail_offset"], 3);
    assert_eq!(v["format_version"], 3);
    assert_eq!(v["oldest_offset"], 0);
    assert_eq!(v["durability"], "none");
    assert_eq!(v["durable_offset"], 0);
    assert_eq!(v["checksums"], true);
    assert_eq!(v["producers_alive"], 0);
    assert_eq!(v["producers_waiting"], 0);
    // "three" takes 40 ring bytes (32-byte header, 5 bytes, padding to 8): g holds them back.
    assert_eq!(v["fill_bytes"], 40);
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g["name"], "g");
    assert_eq!(g["committed"], 2);
    assert_eq!(g["lag"], 1);
    assert_eq!(g["lag_bytes"], 40);
    assert_eq!(g["gating"], true);
    assert_eq!(g["holder_pid"], serde_json::Value::Null);
    assert_eq!(g["holder_alive"], false);

    let table = ok(&["info", &q]);
    assert!(
        table.contains("offsets      oldest 0, tail 3, durable 0"),
        "{table}"
    );
    assert!(table.contains("durability   none, checksums"), "{table}");
    assert!(table.contains("(format version 3)"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["g", "2", "1", "40", "B", "yes", "-"]),
        "{table}"
    );
}

#[test]
fn publish_and_consume_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    ok(&["consume", &q, "-g", "g", "--create", "--count", "0"]);
    let input = "alpha\n\nünïcødé\r\nlast line without newline";
    let out = shmq(&["publish", &q], input.as_bytes());
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n3\n");

    // Without --commit nothing moves: the same messages come back each time.
    let text = ok(&["consume", &q, "-g", "g"]);
    assert_eq!(text, "alpha\n\nünïcødé\nlast line without newline\n");
    let hex = ok(&["consume", &q, "-g", "g", "--format", "hex", "--count", "1"]);
    assert_eq!(hex, "0 616c706861\n");
    let json = ok(&[
        "consume", &q, "-g", "g", "--format", "json", "--from", "2", "--commit",
    ]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["offset"], 2);
    assert_eq!(lines[0]["payload"], "ünïcødé");
    assert!(lines[0]["timestamp_ns"].as_u64().unwrap() > 0);
    assert_eq!(info(&q)["groups"][0]["committed"], 4);
    // Caught up: nothing more to read.
    assert_eq!(ok(&["consume", &q, "-g", "g"]), "");
    assert_eq!(
        ok(&["consume", &q, "-g", "g", "--from", "earliest", "--count", "1"]),
        "alpha\n"
    );

    // Synthetic load through a small ring, drained by a concurrent consumer.
    let summary = ok(&["publish", &q, "--count", "300", "--size", "100"]);
    assert!(summary.contains("published 300 messages"), "{summary}");
    let hex = ok(&["consume", &q, "-g", "g", "--format", "hex", "--commit"]);
    assert_eq!(hex.lines().count(), 300);
    assert!(hex
        .lines()
        .next()
        .unwrap()
        .starts_with("4 0000000000000000"));
    assert_eq!(info(&q)["groups"][0]["lag"], 0);
}

#[test]
fn follow_waits_for_new_messages() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    ok(&["consume", &q, "-g", "f", "--create", "--count", "0"]);
    let mut follower = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args([
            "consume", &q, "-g", "f", "--follow", "--count", "2", "--commit",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(shmq(&["publish", &q], b"x\ny\nz\n").status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while follower.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            follower.kill().unwrap();
            panic!("consume --follow did not stop after --count 2");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "x\ny\n");
    assert_eq!(info(&q)["groups"][0]["lag"], 1);
}

#[test]
fn a_full_queue_names_the_group_holding_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "4KiB"]);
    ok(&["consume", &q, "-g", "slow", "--create", "--count", "0"]);
    fails(
        &[
            "publish",
            &q,
            "--count",
            "1000",
            "--size",
            "100",
            "--timeout",
            "100ms",
        ],
        &[&q, "timed out", "\"slow\""],
    );
    let r = path_in(dir.path(), "r");
    ok(&["create", &r, "--capacity", "4KiB", "--full", "reject"]);
    ok(&["consume", &r, "-g", "slow", "--create", "--count", "0"]);
    fails(
        &["publish", &r, "--count", "1000", "--size", "100"],
        &[&r, "queue is full", "\"slow\""],
    );
}

#[test]
fn missing_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "missing.q");
    fails(&["info", &q], &[&q, "no such queue file"]);
    fails(
        &["publish", &q, "--count", "1"],
        &[&q, "no such queue file"],
    );
    fails(&["consume", &q, "-g", "g"], &[&q, "no such queue file"]);
    let nested = path_in(&dir.path().join("no/such/dir"), "q");
    fails(&["create", &nested], &[&nested, "does not exist"]);
}

#[test]
fn corrupt_files_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "junk.q");
    // Deterministic pseudo-random bytes (xorshift), a few pages' worth.
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..16_384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&q, bytes).unwrap();
    fails(&["info", &q], &[&q, "not a shmq queue file"]);
    fails(&["consume", &q, "-g", "g"], &[&q, "not a shmq queue file"]);
    fails(
        &["publish", &q, "--count", "1"],
        &[&q, "not a shmq queue file"],
    );
    let empty = path_in(dir.path(), "empty.q");
    std::fs::write(&empty, b"").unwrap();
    fails(
        &["info", &empty],
        &[&empty, "file is empty: not a shmq queue file"],
    );
    fails(
        &["info", dir.path().to_str().unwrap()],
        &["is a directory, not a queue file"],
    );
}

#[test]
fn bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    fails(
        &["create", &q, "--capacity", "64XB"],
        &["'64XB'", "--capacity", "unknown unit"],
    );
    fails(
        &["create", &q, "--capacity", "1.5MiB"],
        &["'1.5MiB'", "fractions"],
    );
    fails(
        &["create", &q, "--max-message", "lots"],
        &["'lots'", "--max-message"],
    );
    fails(
        &["create", &q, "--capacity", "1000"],
        &["'1000'", "--capacity", "1000 bytes is not a power of two"],
    );
    fails(&["create", &q, "--mode", "0999"], &["'0999'", "--mode"]);
    fails(
        &["create", &q, "--full", "sometimes"],
        &["'sometimes'", "--full"],
    );
    fails(&["demo", "--messages", "0"], &["'0'", "--messages"]);
    assert!(!Path::new(&q).exists());

    ok(&["create", &q, "--capacity", "64KiB", "--max-message", "1KiB"]);
    fails(&["create", &q], &[&q, "already exists"]);
    fails(
        &["publish", &q, "--count", "1", "--size", "1ZB"],
        &["'1ZB'", "--size"],
    );
    fails(
        &["publish", &q, "--count", "1", "--size", "2KiB"],
        &["--size 2048", "1024"],
    );
    assert_eq!(ok(&["publish", &q]), ""); // empty stdin publishes nothing
}

#[test]
fn unknown_groups_and_bad_positions_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    fails(
        &["consume", &q, "-g", "nope"],
        &[&q, "\"nope\"", "does not exist", "--create"],
    );
    fails(&["consume", &q], &["--group"]);
    ok(&["consume", &q, "-g", "g", "--create", "--count", "0"]);
    fails(
        &["consume", &q, "-g", "g", "--from", "banana"],
        &["'banana'", "--from"],
    );
    fails(
        &["consume", &q, "-g", "g", "--from", "5"],
        &[&q, "offset 5"],
    );
    fails(
        &["consume", &q, "-g", "g", "--timeout", "soon"],
        &["'soon'", "--timeout"],
    );
    let long = "x".repeat(65);
    fails(
        &["consume", &q, "-g", &long, "--create"],
        &[&q, "group name"],
    );
}
