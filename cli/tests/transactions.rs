//! Transactions from the shell: `publish TOPIC --transaction ID` commits the lines of its
//! input as one transaction at its end (or every `--transaction-size N` lines) and prints
//! where each went; a run refused or killed before its end publishes nothing of the open
//! transaction; `info` lists the topic's transactional ids with their state and holder. Each
//! run is a process.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{fails, info, ok, ok_with, path_in, shmq, wait_for_info, Background};

/// `shmq publish TOPIC --transaction ID [extra]` with `lines` on stdin: its stdout (it must
/// succeed).
fn publish(topic: &str, id: &str, extra: &[&str], lines: &str) -> String {
    let mut args = vec!["publish", topic, "--transaction", id];
    args.extend_from_slice(extra);
    ok_with(&args, lines.as_bytes())
}

/// Every value of `topic` from the start (stops once none arrives for 200 ms).
fn values(topic: &str) -> BTreeSet<String> {
    let out = ok(&["tail", topic, "--from", "earliest", "--timeout", "200ms"]);
    out.lines().map(String::from).collect()
}

/// The JSON of transactional id `id` in `info`.
fn transaction(topic: &str, id: &str) -> serde_json::Value {
    let all = info(topic)["transactions"].clone();
    let found = all
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == id));
    found.cloned().unwrap_or_else(|| panic!("no {id} in {all}"))
}

#[test]
fn lines_are_committed_as_one_transaction_or_in_transactions_of_n() {
    let dir = tempfile::tempdir().unwrap();
    let t = path_in(dir.path(), "t.topic");
    ok(&["create", &t, "--partitions", "3"]);
    // Round robin over the 3 partitions: one line each, then the first again.
    let out = publish(&t, "feed", &[], "a\nb\nc\nd\n");
    let places: Vec<&str> = out.lines().collect();
    assert_eq!(places.len(), 4, "{out}");
    let partitions: BTreeSet<&str> = places.iter().map(|p| &p[..p.find(':').unwrap()]).collect();
    assert_eq!(partitions.len(), 3, "{out}");
    assert_eq!(values(&t), ["a", "b", "c", "d"].map(String::from).into());
    let feed = transaction(&t, "feed");
    assert_eq!(
        (&feed["state"], &feed["epoch"], &feed["settled"]),
        (&"committed".into(), &1.into(), &1.into())
    );
    assert_eq!(feed["holder_alive"], false);

    // Keyed lines, two per transaction: 5 lines are 3 transactions (epochs 2 to 4).
    let out = publish(
        &t,
        "feed",
        &["--key-separator", "=", "--transaction-size", "2"],
        "k1=e\nk2=f\nk1=g\nk2=h\nk1=i\n",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    let route = |key: &str| ok(&["topic", "route", &t, key]).trim().to_string();
    for (i, key) in ["k1", "k2", "k1", "k2", "k1"].iter().enumerate() {
        assert!(lines[i].starts_with(&format!("{}:", route(key))), "{out}");
    }
    assert_eq!(transaction(&t, "feed")["epoch"], 4);
    assert_eq!(values(&t).len(), 9);

    let table = ok(&["info", &t]);
    assert!(table.contains("TRANSACTIONAL ID"), "{table}");
    let row = table.lines().find(|l| l.starts_with("feed")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["feed", "committed", "4", "4", "-"],
        "{table}"
    );
}

#[test]
fn a_refused_line_publishes_nothing_of_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let t = path_in(dir.path(), "t.topic");
    ok(&["create", &t, "--partitions", "2", "--max-message", "1KiB"]);
    let big = "x".repeat(2000);
    let input = format!("a\nb\n{big}\nc\n");
    let out = shmq(&["publish", &t, "--transaction", "feed"], input.as_bytes());
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing committed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&t), "the path: {stderr}");
    assert!(stderr.contains("stdin line 3"), "{stderr}");
    assert!(
        stderr.contains("nothing of the open transaction was published"),
        "{stderr}"
    );
    assert!(values(&t).is_empty());
    // With --skip-invalid the line is left out and the others committed.
    let out = shmq(
        &["publish", &t, "--transaction", "feed", "--skip-invalid"],
        input.as_bytes(),
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    assert_eq!(values(&t), ["a", "b", "c"].map(String::from).into());
}

#[test]
fn a_held_id_is_refused_and_a_killed_run_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = path_in(dir.path(), "t.topic");
    ok(&["create", &t, "--partitions", "2"]);
    // A run whose input is still open holds the id with lines sent, none committed.
    // Killed and reaped when dropped, also if the test fails first.
    let mut holder = Background(
        Command::new(env!("CARGO_BIN_EXE_shmq"))
            .args(["publish", &t, "--transaction", "feed"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shmq"),
    );
    let mut input = holder.0.stdin.take().unwrap();
    input.write_all(b"a\nb\n").unwrap();
    input.flush().unwrap();
    let pid = holder.pid();
    wait_for_info(&t, "the holder takes the id", |v| {
        v["transactions"][0]["holder_alive"] == true
    });
    let held = transaction(&t, "feed");
    assert_eq!(held["holder_pid"], pid);
    fails(
        &["publish", &t, "--transaction", "feed"],
        &[&t, "feed", "held by live process"],
    );
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    drop(input);
    let dead = transaction(&t, "feed");
    assert_eq!(
        (&dead["holder_pid"], &dead["holder_alive"]),
        (&pid.into(), &false.into())
    );
    assert_eq!(dead["state"], "none", "no transaction began: {dead}");
    assert!(ok(&["info", &t]).contains(&format!("pid {pid} (dead)")));
    assert!(values(&t).is_empty(), "the killed run's lines");
    // The id is free again.
    assert_eq!(publish(&t, "feed", &[], "c\n").lines().count(), 1);
    assert_eq!(values(&t), ["c"].map(String::from).into());
}

#[test]
fn transaction_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q.q");
    ok(&["create", &q]);
    fails(
        &["publish", &q, "--transaction", "x"],
        &["--transaction", "not a topic"],
    );
    let t = path_in(dir.path(), "t.topic");
    ok(&["create", &t, "--partitions", "2"]);
    fails(
        &["publish", &t, "--transaction-size", "2"],
        &["--transaction"],
    );
    fails(
        &[
            "publish",
            &t,
            "--transaction",
            "x",
            "--transaction-size",
            "0",
        ],
        &["--transaction-size"],
    );
    fails(
        &["publish", &t, "--transaction", "x", "--count", "3"],
        &["--transaction", "--count"],
    );
    let long = "x".repeat(65);
    let out = shmq(&["publish", &t, "--transaction", &long], b"a\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("transactional id") && stderr.contains(&t),
        "{stderr}"
    );
    // A topic without transactions lists none.
    assert!(info(&t).get("transactions").is_none());
    assert!(!ok(&["info", &t]).contains("TRANSACTIONAL ID"));
}
