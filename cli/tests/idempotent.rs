//! Idempotent publishing from the shell: `publish --id NAME [--seq N]` numbers each line and
//! prints whether it was new or a duplicate, a rerun of the same input publishes nothing
//! twice, and `info` lists the producer ids; each run as a process.

mod common;

use common::{fails, info, ok, ok_with, path_in, shmq};

/// `shmq publish QUEUE --id ID [extra]` with `lines` on stdin: its stdout (it must succeed).
fn publish(queue: &str, id: &str, extra: &[&str], lines: &str) -> String {
    let mut args = vec!["publish", queue, "--id", id];
    args.extend_from_slice(extra);
    ok_with(&args, lines.as_bytes())
}

#[test]
fn a_rerun_of_the_same_input_publishes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "orders.q");
    ok(&["create", &q]);
    assert_eq!(
        publish(&q, "feed", &[], "a\nb\nc\n"),
        "0 new\n1 new\n2 new\n"
    );
    // The same input again from its first sequence number: all duplicates, then one new line.
    assert_eq!(
        publish(&q, "feed", &["--seq", "0"], "a\nb\nc\nd\n"),
        "0 duplicate\n1 duplicate\n2 duplicate\n3 new\n"
    );
    // Without --seq it resumes where the id left off.
    assert_eq!(publish(&q, "feed", &[], "e\n"), "4 new\n");
    // Another id numbers its own lines.
    assert_eq!(publish(&q, "other", &["--seq", "0"], "z\n"), "5 new\n");
    let tail = ok(&["tail", &q, "--from", "earliest", "--count", "6"]);
    assert_eq!(tail.lines().count(), 6, "{tail}");

    let ids = info(&q)["producer_ids"].clone();
    let feed = &ids[0];
    assert_eq!(feed["id"], "feed");
    assert_eq!(feed["next_sequence"], 5);
    assert_eq!(feed["remembered"], 5);
    assert_eq!(feed["window"], 1024);
    assert_eq!(feed["published"], 5);
    assert_eq!(feed["duplicates"], 3);
    assert_eq!(feed["holder_alive"], false);
    assert_eq!(ids[1]["id"], "other");
    let table = ok(&["info", &q]);
    assert!(table.contains("PRODUCER ID"), "{table}");
    assert!(table.contains("5 of 1,024"), "{table}");
}

#[test]
fn id_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q.q");
    ok(&["create", &q]);
    fails(&["publish", &q, "--seq", "1"], &["--id"]);
    fails(
        &["publish", &q, "--id", "x", "--count", "3"],
        &["--id", "--count"],
    );
    let out = shmq(&["publish", &q, "--id", "bad\tname"], b"a\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("producer id"), "{stderr}");
    // A queue without ids lists none.
    assert!(info(&q).get("producer_ids").is_none());
}
