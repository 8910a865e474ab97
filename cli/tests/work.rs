//! Work groups from the shell: `consume --shared` (two competing processes, ack, nack,
//! reject), `publish --delay/--ttl`, `pending`, `dlq list|replay|purge`, and the work-group
//! figures of `info`, `stat`, `list` and the exporter, each run as a process.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, info, ok, path_in, sample, shmq, wait_for_info, Exporter};
use serde_json::Value;

/// A `shmq` process with its stdout piped; killed and reaped when dropped (also when a test
/// fails while it runs).
struct Running(Option<Child>);

impl Running {
    /// Starts `shmq args`, stdout piped, stderr inherited.
    fn start(args: &[&str]) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_shmq"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shmq");
        Running(Some(child))
    }

    /// Its process id.
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Waits for it to exit (it must succeed) and returns its stdout.
    fn output(mut self) -> String {
        let out = self
            .0
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait for shmq");
        assert!(out.status.success(), "shmq failed: {:?}", out.status);
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The lines of `consume --format json` output.
fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// `info --json`'s figures of work group `group`.
fn work(q: &str, group: &str) -> Value {
    let v = info(q);
    let g = v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == group)
        .unwrap_or_else(|| panic!("no group {group} in {v}"))
        .clone();
    g["work"].clone()
}

/// `pending --json` of work group `group`.
fn pending(q: &str, group: &str) -> Vec<Value> {
    let text = ok(&["pending", q, group, "--json"]);
    serde_json::from_str::<Value>(&text)
        .expect("pending prints JSON")
        .as_array()
        .expect("an array")
        .clone()
}

/// Waits (at most 20 s) until `done` holds for `pending --json`; returns that list.
fn wait_for_pending(q: &str, group: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = pending(q, group);
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "pending never got there: {p:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_shared_consumers_get_disjoint_records_covering_all() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "jobs.q");
    ok(&["create", &q, "--capacity", "4MiB"]);
    ok(&["consume", &q, "--shared", "w", "--create", "--count", "0"]);
    let n = 20_000u64;
    // Both workers wait for records before the first is published, so both compete for them.
    let worker = || {
        Running::start(&[
            "consume",
            &q,
            "--shared",
            "w",
            "--format",
            "hex",
            "--timeout",
            "5s",
        ])
    };
    let (a, b) = (worker(), worker());
    wait_for_info(&q, "two live workers", |v| {
        v["groups"][0]["work"]["workers"] == 2
    });
    let summary = ok(&["publish", &q, "--count", &n.to_string(), "--size", "16"]);
    assert!(summary.contains("published 20,000 messages"), "{summary}");
    let (a, b) = (a.output(), b.output());
    // `OFFSET#DELIVERY HEX`; the payload's first 8 bytes are its sequence number.
    let parse = |out: &str| -> BTreeSet<u64> {
        out.lines()
            .map(|l| {
                let (at, payload) = l.split_once(' ').expect("offset and payload");
                let (offset, delivery) = at.split_once('#').expect("OFFSET#DELIVERY");
                assert_eq!(delivery, "1", "{l}");
                let seq = u64::from_str_radix(&payload[..16], 16)
                    .unwrap()
                    .swap_bytes();
                let offset: u64 = offset.parse().unwrap();
                assert_eq!(seq, offset, "{l}");
                offset
            })
            .collect()
    };
    let (got_a, got_b) = (parse(&a), parse(&b));
    assert_eq!(
        got_a.len(),
        a.lines().count(),
        "a record twice in one worker"
    );
    assert_eq!(
        got_b.len(),
        b.lines().count(),
        "a record twice in one worker"
    );
    assert!(got_a.is_disjoint(&got_b), "a record went to both workers");
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "one worker got nothing: {} / {}",
        got_a.len(),
        got_b.len()
    );
    let all: BTreeSet<u64> = got_a.union(&got_b).copied().collect();
    assert_eq!(all, (0..n).collect::<BTreeSet<u64>>());
    // Every record acked: the group's committed offset is the tail.
    let w = work(&q, "w");
    assert_eq!(
        (w["acked"].as_u64(), w["in_flight"].as_u64()),
        (Some(n), Some(0))
    );
    assert_eq!(info(&q)["groups"][0]["committed"], n);
}

#[test]
fn nack_and_reject_go_to_the_dead_letter_queue_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "jobs.q");
    let dead = path_in(dir.path(), "dead.q");
    let copy = path_in(dir.path(), "copy.q");
    for path in [&q, &dead, &copy] {
        ok(&["create", path, "--capacity", "1MiB"]);
    }
    let out = shmq(&["publish", &q], b"alpha\nbeta\n");
    assert!(out.status.success());
    let shared = |extra: &[&str]| {
        let mut args = vec![
            "consume", &q, "--shared", "w", "--format", "json", "--count", "1",
        ];
        args.extend_from_slice(extra);
        json_lines(&ok(&args))
    };
    // Reject: dead-lettered at once.
    let first = shared(&[
        "--create",
        "--dead-letter",
        &dead,
        "--max-deliveries",
        "2",
        "--backoff",
        "exp:50ms..1s",
        "--reject",
    ]);
    assert_eq!(
        (
            first[0]["payload"].as_str(),
            first[0]["deliveries"].as_u64()
        ),
        (Some("alpha"), Some(1))
    );
    // Nack: delivered again after the back-off, then dead-lettered after its second delivery.
    let second = shared(&["--nack"]);
    assert_eq!(
        (
            second[0]["offset"].as_u64(),
            second[0]["deliveries"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let again = shared(&["--nack", "--timeout", "10s"]);
    assert_eq!(
        (again[0]["offset"].as_u64(), again[0]["deliveries"].as_u64()),
        (Some(1), Some(2))
    );
    // The next one is acked; nothing is delivered after it.
    assert!(shmq(&["publish", &q], b"gamma\n").status.success());
    let last = shared(&["--timeout", "10s"]);
    assert_eq!(last[0]["payload"], "gamma");
    assert_eq!(
        ok(&["consume", &q, "--shared", "w", "--timeout", "300ms"]),
        ""
    );
    let w = work(&q, "w");
    for (key, want) in [
        ("acked", 1),
        ("dead_lettered", 2),
        ("redelivered", 1),
        ("delivered", 3),
        ("in_flight", 0),
        ("waiting", 0),
    ] {
        assert_eq!(w[key], want, "{key} in {w}");
    }

    // A record that is not a dead letter is listed as such, and skipped by a replay.
    assert!(shmq(&["publish", &dead], b"not a dead letter\n")
        .status
        .success());
    let list = ok(&["dlq", "list", &dead]);
    let rows: Vec<&str> = list.lines().collect();
    assert_eq!(rows.len(), 4, "{list}");
    assert!(rows[0].starts_with("OFFSET  SOURCE"), "{list}");
    let q_abs = std::fs::canonicalize(&q).unwrap().display().to_string();
    assert!(
        rows[1].contains(&q_abs) && rows[1].contains("rejected") && rows[1].ends_with("alpha"),
        "{list}"
    );
    assert!(
        rows[2].contains("max deliveries") && rows[2].ends_with("beta"),
        "{list}"
    );
    assert!(rows[3].contains("not a dead letter"), "{list}");
    let letters: Vec<Value> = serde_json::from_str(&ok(&["dlq", "list", &dead, "--json"])).unwrap();
    assert_eq!(letters[0]["source"], q_abs.as_str());
    assert_eq!(letters[0]["source_offset"], 0);
    assert_eq!(letters[0]["reason"], "rejected");
    assert_eq!(letters[0]["deliveries"], 1);
    assert_eq!(letters[1]["reason"], "max_deliveries");
    assert_eq!(letters[1]["deliveries"], 2);
    assert_eq!(letters[1]["payload"], "beta");
    assert!(letters[1]["dead_at_ns"].as_u64() > letters[1]["timestamp_ns"].as_u64());
    assert!(letters[2]["error"].as_str().unwrap().contains("too short"));

    // Replay: the original payloads into another queue; the malformed record is skipped.
    let replay = shmq(&["dlq", "replay", &dead, "--to", &copy], b"");
    assert!(replay.status.success());
    let said = String::from_utf8_lossy(&replay.stdout);
    assert!(
        said.contains("replayed 2 dead letters (offsets 0 to 2 of"),
        "{said}"
    );
    assert!(
        said.contains("skipped 1 records that are not dead letters"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&replay.stderr).contains("offset 2 is not a dead letter"));
    let tail = ok(&["tail", &copy]);
    assert_eq!(tail, "alpha\nbeta\n");
    // Resumable: a second replay publishes only what came after the first.
    assert!(ok(&["dlq", "replay", &dead, "--to", &copy]).contains("nothing to replay"));
    assert!(ok(&["dlq", "list", &dead]).contains("no dead letters"));
    assert_eq!(ok(&["dlq", "list", &dead, "--all"]).lines().count(), 4);
    assert!(shmq(&["publish", &q], b"delta\n").status.success());
    shared(&["--reject", "--timeout", "10s"]);
    assert!(ok(&["dlq", "replay", &dead, "--to", &copy])
        .contains("replayed 1 dead letters (offsets 3 to 3"));
    assert_eq!(ok(&["tail", &copy]), "alpha\nbeta\ndelta\n");

    // Purge: what is there now is handled; list and replay start after it.
    assert!(shmq(&["publish", &q], b"epsilon\nzeta\n").status.success());
    shared(&["--reject", "--timeout", "10s"]);
    shared(&["--reject", "--timeout", "10s"]);
    assert_eq!(ok(&["dlq", "list", &dead]).lines().count(), 3);
    let purged = ok(&["dlq", "purge", &dead]);
    assert!(
        purged.contains("purged 2 dead letters (offsets 4 to 5)"),
        "{purged}"
    );
    assert!(ok(&["dlq", "list", &dead]).contains("no dead letters"));
    assert!(ok(&["dlq", "replay", &dead, "--to", &copy]).contains("nothing to replay"));
    assert!(ok(&["dlq", "purge", &dead]).contains("nothing to purge"));
    assert_eq!(ok(&["tail", &copy]), "alpha\nbeta\ndelta\n");
    fails(
        &["dlq", "replay", &dead, "--to", &dead],
        &["is the dead-letter queue itself"],
    );
}

#[test]
fn pending_shows_in_flight_and_waiting_records() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "jobs.q");
    ok(&["create", &q, "--capacity", "1MiB", "--max-message", "8KiB"]);
    // 40 records of 4,000 bytes: more than a pipe holds, so a worker whose stdout nobody
    // reads blocks while it holds records it has not settled.
    let line = "x".repeat(4000) + "\n";
    assert!(shmq(&["publish", &q], line.repeat(40).as_bytes())
        .status
        .success());
    ok(&[
        "consume",
        &q,
        "--shared",
        "p",
        "--create",
        "--visibility-timeout",
        "1h",
        "--count",
        "0",
    ]);
    assert_eq!(
        ok(&["pending", &q, "p"]),
        "work group \"p\": nothing pending\n"
    );
    assert_eq!(ok(&["pending", &q, "p", "--json"]), "[]\n");
    let stuck = Running::start(&["consume", &q, "--shared", "p", "--follow"]);
    let pid = stuck.pid();
    let held = wait_for_pending(&q, "p", |p| !p.is_empty());
    let e = &held[0];
    assert_eq!(
        (e["offset"].as_u64(), e["state"].as_str()),
        (Some(0), Some("in_flight"))
    );
    assert_eq!(
        (e["holder_pid"].as_u64(), e["holder_alive"].as_bool()),
        (Some(pid.into()), Some(true))
    );
    assert_eq!(e["deliveries"], 1);
    let left = e["deadline_in_ms"].as_i64().unwrap();
    assert!((3_500_000..=3_600_000).contains(&left), "{e}");
    let text = ok(&["pending", &q, "p"]);
    assert!(text.starts_with("work group \"p\": "), "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with("OFFSET  STATE"),
        "{text}"
    );
    let row = text.lines().nth(2).unwrap();
    assert!(
        row.starts_with("0 ")
            && row.contains("in flight")
            && row.contains(&format!("pid {pid} (alive)"))
            && row.contains("lease ends in"),
        "{text}"
    );
    // The worker dies: its records stay in flight, held by a dead process, until the lease ends.
    drop(stuck);
    let text = ok(&["pending", &q, "p"]);
    assert!(text.contains(&format!("pid {pid} (dead)")), "{text}");

    // A nacked record waits for its back-off.
    let other = path_in(dir.path(), "other.q");
    ok(&["create", &other, "--capacity", "1MiB"]);
    assert!(shmq(&["publish", &other], b"again\n").status.success());
    ok(&[
        "consume",
        &other,
        "--shared",
        "n",
        "--create",
        "--backoff",
        "1h",
        "--nack",
        "--count",
        "1",
    ]);
    let p = pending(&other, "n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0]["state"].as_str(), p[0]["holder_pid"].as_u64()),
        (Some("waiting"), None)
    );
    assert_eq!(p[0]["deliveries"], 1);
    assert!(p[0]["deadline_in_ms"].as_i64().unwrap() > 3_500_000);
    let text = ok(&["pending", &other, "n"]);
    assert!(
        text.contains("1 pending (0 in flight, 1 waiting, 0 dead-lettering)"),
        "{text}"
    );
    assert!(text.lines().nth(2).unwrap().contains("due in"), "{text}");
}

#[test]
fn delay_and_ttl_are_observed_by_work_groups_only() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "jobs.q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    ok(&["group", "create", &q, "plain"]);
    ok(&["consume", &q, "--shared", "w", "--create", "--count", "0"]);
    let published = Instant::now();
    assert!(shmq(&["publish", &q, "--delay", "4s"], b"later\n")
        .status
        .success());
    assert!(shmq(&["publish", &q, "--ttl", "100ms"], b"short-lived\n")
        .status
        .success());
    assert!(shmq(&["publish", &q], b"now\n").status.success());
    // A plain group reads every record at once.
    assert_eq!(
        ok(&["consume", &q, "-g", "plain"]),
        "later\nshort-lived\nnow\n"
    );
    std::thread::sleep(Duration::from_millis(300));
    // The worker: the undelayed record first; the expired one never; the delayed one once due.
    let first = json_lines(&ok(&[
        "consume",
        &q,
        "--shared",
        "w",
        "--format",
        "json",
        "--count",
        "1",
        "--timeout",
        "5s",
    ]));
    assert_eq!(first[0]["payload"], "now");
    let p = pending(&q, "w");
    assert_eq!(
        (p.len(), p[0]["state"].as_str()),
        (1, Some("waiting")),
        "{p:?}"
    );
    let later = json_lines(&ok(&[
        "consume",
        &q,
        "--shared",
        "w",
        "--format",
        "json",
        "--count",
        "1",
        "--timeout",
        "10s",
    ]));
    assert_eq!(later[0]["payload"], "later");
    assert!(
        published.elapsed() >= Duration::from_secs(4),
        "delivered before its delay"
    );
    assert_eq!(
        ok(&["consume", &q, "--shared", "w", "--timeout", "300ms"]),
        ""
    );
    let w = work(&q, "w");
    assert_eq!(
        (w["expired"].as_u64(), w["acked"].as_u64()),
        (Some(1), Some(2)),
        "{w}"
    );
}

#[test]
fn info_stat_list_and_the_exporter_show_work_figures() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "jobs.q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    assert!(shmq(&["publish", &q], b"a\nb\nc\nd\n").status.success());
    ok(&[
        "consume",
        &q,
        "--shared",
        "w",
        "--create",
        "--count",
        "2",
        "--backoff",
        "1h",
    ]);
    ok(&["consume", &q, "--shared", "w", "--count", "1", "--nack"]);
    ok(&["consume", &q, "--shared", "w", "--count", "1", "--reject"]);
    let want = [
        ("workers", 0),
        ("in_flight", 0),
        ("waiting", 1),
        ("delivered", 4),
        ("redelivered", 0),
        ("acked", 2),
        ("dead_lettered", 1),
        ("expired", 0),
    ];
    let w = work(&q, "w");
    for (key, n) in want {
        assert_eq!(w[key], n, "{key} in {w}");
    }
    let text = ok(&["info", &q]);
    let header = text
        .lines()
        .find(|l| l.starts_with("WORK GROUP"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        [
            "WORK",
            "GROUP",
            "WORKERS",
            "IN",
            "FLIGHT",
            "WAITING",
            "DELIVERED",
            "REDELIVERED",
            "ACKED",
            "DEAD-LETTERED",
            "EXPIRED"
        ]
    );
    let row = text
        .lines()
        .skip_while(|l| !l.starts_with("WORK GROUP"))
        .nth(1)
        .unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        ["w", "0", "0", "1", "4", "0", "2", "1", "0"]
    );

    // A worker running: counted by info, list and the exporter.
    let worker = Running::start(&["consume", &q, "--shared", "w", "--follow"]);
    wait_for_info(&q, "a live worker", |v| {
        v["groups"][0]["work"]["workers"] == 1
    });
    let list: Vec<Value> =
        serde_json::from_str(&ok(&["list", dir.path().to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(list.len(), 1, "the work file is not a queue: {list:?}");
    assert_eq!(list[0]["consumers_alive"], 1);
    let sample_line = ok(&["stat", &q, "--interval", "100ms", "--count", "1", "--json"]);
    let s: Value = serde_json::from_str(&sample_line).unwrap();
    let sw = &s["groups"][0]["work"];
    assert_eq!(
        (
            sw["workers"].as_u64(),
            sw["acked"].as_u64(),
            sw["dead_lettered"].as_u64()
        ),
        (Some(1), Some(2), Some(1)),
        "{s}"
    );
    assert!(sw["acked_per_sec"].as_f64().is_some(), "{s}");
    let text = ok(&["stat", &q, "--interval", "100ms", "--count", "1"]);
    assert!(
        text.contains("acked 0/s  in flight 0  waiting 1") && text.contains("workers 1"),
        "{text}"
    );
    let exporter = Exporter::start(&[&q]);
    let samples = exporter.scrape();
    let labels = format!("{{path=\"{q}\",group=\"w\"}}");
    for (metric, n) in [
        ("shmq_work_workers", 1.0),
        ("shmq_work_waiting", 1.0),
        ("shmq_work_in_flight", 0.0),
        ("shmq_work_delivered_total", 4.0),
        ("shmq_work_acked_total", 2.0),
        ("shmq_work_dead_lettered_total", 1.0),
        ("shmq_work_redelivered_total", 0.0),
        ("shmq_work_expired_total", 0.0),
    ] {
        assert_eq!(
            sample(&samples, &format!("{metric}{labels}")),
            n,
            "{metric}"
        );
    }
    drop(worker);
}

#[test]
fn work_group_errors_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "jobs.q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    ok(&["group", "create", &q, "plain"]);
    ok(&["consume", &q, "--shared", "w", "--create", "--count", "0"]);
    fails(
        &["consume", &q, "-g", "w"],
        &[&q, "is not a plain consumer group", "--shared"],
    );
    fails(
        &["consume", &q, "--shared", "plain"],
        &[&q, "is not a work group", "--group"],
    );
    fails(&["pending", &q, "plain"], &[&q, "is not a work group"]);
    fails(&["pending", &q, "nope"], &[&q, "\"nope\" does not exist"]);
    fails(
        &["consume", &q, "--shared", "nope"],
        &[&q, "work group \"nope\" does not exist", "--create"],
    );
    fails(
        &["consume", &q, "--shared", "w", "--window", "64"],
        &["--create"],
    );
    fails(
        &[
            "consume", &q, "--shared", "x", "--create", "--window", "100",
        ],
        &[&q, "window", "power of two"],
    );
    fails(
        &[
            "consume",
            &q,
            "--shared",
            "x",
            "--create",
            "--backoff",
            "exp:1s",
        ],
        &["exp:INITIAL..MAX"],
    );
    fails(&["consume", &q, "--shared", "w", "--commit"], &["--commit"]);
    fails(
        &["consume", &q, "--shared", "w", "--from", "earliest"],
        &["--from", "oldest unsettled"],
    );
    fails(&["consume", &q, "--nack", "-g", "plain"], &["--shared"]);
    fails(
        &[
            "consume",
            &q,
            "--shared",
            "x",
            "--create",
            "--dead-letter",
            &path_in(dir.path(), "missing.q"),
        ],
        &["missing.q"],
    );
    let topic = path_in(dir.path(), "t");
    ok(&["create", &topic, "--partitions", "2", "--capacity", "64KiB"]);
    fails(
        &["consume", &topic, "--shared", "w", "--create"],
        &[&topic, "topic directory"],
    );
    fails(
        &["publish", &topic, "--delay", "1s"],
        &["--delay", "is a topic"],
    );
    fails(
        &["dlq", "list", &path_in(dir.path(), "nothing.q")],
        &["nothing.q", "no such queue file"],
    );
}

/// A queue `jobs.q` in `dir` whose six 1,000-byte jobs were rejected into `dead.q`, and a
/// target `copy.q` of 4 KiB (about three of them) with the full policy `full`, whose gating
/// group `hold` keeps what it holds until read. Returns the jobs and the three paths.
fn six_dead_letters(dir: &std::path::Path, full: &str) -> (Vec<String>, String, String) {
    let q = path_in(dir, "jobs.q");
    let dead = path_in(dir, "dead.q");
    let copy = path_in(dir, "copy.q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    ok(&["create", &dead, "--capacity", "1MiB"]);
    ok(&["create", &copy, "--capacity", "4KiB", "--full", full]);
    ok(&["group", "create", &copy, "hold"]);
    let jobs: Vec<String> = (0..6).map(|i| i.to_string().repeat(1000)).collect();
    let input = jobs.join("\n") + "\n";
    assert!(shmq(&["publish", &q], input.as_bytes()).status.success());
    let rejected = ok(&[
        "consume",
        &q,
        "--shared",
        "w",
        "--create",
        "--dead-letter",
        &dead,
        "--reject",
        "--count",
        "6",
        "--timeout",
        "10s",
    ]);
    assert_eq!(rejected.lines().count(), 6);
    (jobs, dead, copy)
}

#[test]
fn an_interrupted_replay_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, dead, copy) = six_dead_letters(dir.path(), "reject");
    let mut copied: Vec<String> = Vec::new();
    let mut stops = 0;
    for _ in 0..10 {
        let out = shmq(&["dlq", "replay", &dead, "--to", &copy], b"");
        let drained = ok(&["consume", &copy, "-g", "hold", "--commit"]);
        copied.extend(drained.lines().map(String::from));
        if out.status.success() {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&copy) && stderr.contains("`shmq dlq replay` resumes after them"),
            "{stderr}"
        );
        stops += 1;
    }
    assert!(stops >= 1, "the target never filled up");
    assert_eq!(copied, jobs, "every job once, in order");
}

#[test]
fn a_replay_waiting_for_room_stops_at_sigterm_and_resumes() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let dir = tempfile::tempdir().unwrap();
    let (jobs, dead, copy) = six_dead_letters(dir.path(), "block");
    let replay = Running::start(&["dlq", "replay", &dead, "--to", &copy]);
    wait_for_info(&copy, "the replay waiting for room", |v| {
        v["producers_waiting"] == 1
    });
    let pid = i32::try_from(replay.pid()).unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("signal the replay");
    let said = replay.output();
    assert!(
        said.contains("stopped by a signal: `shmq dlq replay` resumes after them"),
        "{said}"
    );
    let mut copied: Vec<String> = ok(&["consume", &copy, "-g", "hold", "--commit"])
        .lines()
        .map(String::from)
        .collect();
    assert!(copied.len() < jobs.len(), "{copied:?}");
    // The rest in one replay, which waits for room while the target is read.
    let rest = Running::start(&["dlq", "replay", &dead, "--to", &copy]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while copied.len() < jobs.len() {
        let drained = ok(&["consume", &copy, "-g", "hold", "--commit"]);
        copied.extend(drained.lines().map(String::from));
        assert!(
            Instant::now() < deadline,
            "the replay made no progress: {copied:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(rest.output().contains("replayed"));
    assert_eq!(copied, jobs, "every job once, in order");
}
