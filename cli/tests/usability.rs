//! End-to-end tests of what a first-time user meets: reading without a group (`tail`), one
//! command set for queue files and topics, and the wording of refusals. Each refused command
//! is checked for its exact message, its exit status, and that it changed nothing.

mod common;

use std::time::Duration;

use common::{info, ok, path_in, shmq, Background};

/// Runs `shmq args` expecting a failure with exit status `code` and exactly the stderr line
/// `shmq: {text}`.
fn refused(args: &[&str], code: i32, text: &str) {
    let out = shmq(args, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "shmq {args:?}: {stderr}");
    assert_eq!(stderr, format!("shmq: {text}\n"), "shmq {args:?}");
}

/// A queue file in a fresh directory holding the messages `m0` … `m{n-1}`.
fn queue_with(n: usize, capacity: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", capacity]);
    let lines: String = (0..n).map(|i| format!("m{i}\n")).collect();
    assert!(shmq(&["publish", &q], lines.as_bytes()).status.success());
    (dir, q)
}

#[test]
fn tail_prints_without_creating_a_group() {
    let (_d, q) = queue_with(3, "64KiB");
    let before = info(&q);
    assert_eq!(ok(&["tail", &q]), "m0\nm1\nm2\n");
    assert_eq!(ok(&["tail", &q, "--from", "1", "--count", "1"]), "m1\n");
    assert_eq!(ok(&["tail", &q, "--from", "latest"]), "");
    let json = ok(&["tail", &q, "--from", "2", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(
        (v["offset"].as_u64(), v["payload"].as_str()),
        (Some(2), Some("m2"))
    );
    assert_eq!(info(&q), before, "a tail changes nothing in the file");
    assert_eq!(before["groups"].as_array().unwrap().len(), 0);
}

#[test]
fn a_following_tail_never_holds_producers_back() {
    // A 4 KiB ring holds about 60 of these messages: 1,000 lap it many times.
    let (_d, q) = queue_with(0, "4KiB");
    let mut tail = Background::start(&["tail", &q, "--follow", "--from", "earliest"]);
    std::thread::sleep(Duration::from_millis(200));
    let out = shmq(
        &[
            "publish",
            &q,
            "--count",
            "1000",
            "--size",
            "48",
            "--timeout",
            "10s",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = info(&q);
    assert_eq!(v["tail_offset"], 1000);
    assert_eq!(v["groups"].as_array().unwrap().len(), 0, "{v}");
    assert!(
        tail.0.try_wait().unwrap().is_none(),
        "the lapped tail goes on"
    );
}

#[test]
fn tail_of_a_topic_prints_keys_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let t = path_in(dir.path(), "t");
    ok(&["create", &t, "--partitions", "2", "--capacity", "64KiB"]);
    let out = shmq(
        &["publish", &t, "--key-separator", " ", "--partition", "1"],
        b"k v\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = info(&t);
    assert_eq!(ok(&["tail", &t, "--format", "hex"]), "1:0 6b=76\n");
    assert_eq!(ok(&["tail", &t, "--partition", "1", "--from", "0"]), "v\n");
    assert_eq!(info(&t), before, "a tail of a topic changes nothing");
    refused(
        &["tail", &t, "--from", "0"],
        1,
        &format!("--from: {t} is a topic: an offset names a message of one partition (add --partition N)"),
    );
    refused(
        &["tail", &t, "--partition", "2"],
        1,
        &format!("--partition: {t} has partitions 0 to 1, not 2"),
    );
}

#[test]
fn tail_refusals_name_what_to_do() {
    let (_d, q) = queue_with(1, "64KiB");
    let before = info(&q);
    refused(
        &["tail", &q, "--from", "committed"],
        1,
        "--from committed: shmq tail reads without a consumer group, so there is no committed \
         offset (use `shmq consume --group GROUP` to read from a group's committed offset)",
    );
    refused(
        &["tail", &q, "--partition", "0"],
        1,
        &format!("--partition: {q} is a queue file, not a topic: it has no partitions"),
    );
    refused(
        &["tail", &q, "--from", "5"],
        1,
        &format!("{q}: offset 5 is outside the retained range 0..=1"),
    );
    assert_eq!(info(&q), before);
}

#[test]
fn consume_create_non_gating_makes_a_group_that_never_holds_producers_back() {
    let (_d, q) = queue_with(2, "4KiB");
    assert_eq!(
        ok(&[
            "consume",
            &q,
            "-g",
            "peek",
            "--create",
            "--non-gating",
            "--count",
            "1"
        ]),
        "m0\n"
    );
    let v = info(&q);
    let g = &v["groups"][0];
    assert_eq!(
        (g["name"].as_str(), g["gating"].as_bool()),
        (Some("peek"), Some(false)),
        "{v}"
    );
    let out = shmq(
        &[
            "publish",
            &q,
            "--count",
            "1000",
            "--size",
            "48",
            "--timeout",
            "10s",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn queue_commands_and_topic_commands_name_the_other_kind() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    let t = path_in(dir.path(), "t");
    ok(&["create", &q, "--capacity", "64KiB"]);
    ok(&["create", &t, "--partitions", "2", "--capacity", "64KiB"]);
    let (q_before, t_before) = (info(&q), info(&t));
    refused(
        &["stat", &t, "--count", "1"],
        1,
        &format!(
            "{t}: is a topic directory, not a queue file (this command reads one queue file: \
             give it a partition, such as {t}/partition-0000.q)"
        ),
    );
    let as_topic = format!(
        "{q}: is a queue file, not a topic directory (a topic is a directory of partitions: \
         `shmq create PATH --partitions N`)"
    );
    refused(&["topic", "grow", &q, "--partitions", "4"], 1, &as_topic);
    refused(&["topic", "route", &q, "k"], 1, &as_topic);
    let wide = path_in(dir.path(), "wide");
    refused(
        &["topic", "fan-out", &q, &wide, "--group", "g"],
        1,
        &as_topic,
    );
    assert!(
        !std::path::Path::new(&wide).exists(),
        "fan-out made nothing"
    );
    let empty = path_in(dir.path(), "empty.q");
    std::fs::write(&empty, b"").unwrap();
    refused(
        &["info", &empty],
        1,
        &format!(
            "{empty}: file is empty: not a shmq queue file (one starts with a 4096-byte header)"
        ),
    );
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert_eq!((info(&q), info(&t)), (q_before, t_before));
}

/// `info --json`'s tail offset.
fn tail_offset(q: &str) -> u64 {
    info(q)["tail_offset"].as_u64().unwrap()
}

#[test]
fn a_full_queue_names_its_path_the_blocking_group_and_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "4KiB"]);
    ok(&["group", "create", &q, "slow"]);
    // 40-byte messages take 64 ring bytes each, and a 4 KiB ring takes 56 of them.
    refused(
        &[
            "publish",
            &q,
            "--count",
            "100",
            "--size",
            "40",
            "--timeout",
            "300ms",
        ],
        1,
        &format!(
            "{q}: timed out after 300ms waiting for room in the queue; the slowest gating group \
             \"slow\" is 56 messages behind (no member holds it); published 56 messages (0 to \
             55) before it"
        ),
    );
    assert_eq!(tail_offset(&q), 56, "what the error said got in");

    let r = path_in(dir.path(), "r");
    ok(&["create", &r, "--capacity", "4KiB", "--full", "reject"]);
    ok(&["group", "create", &r, "g"]);
    refused(
        &["publish", &r, "--count", "100", "--size", "40"],
        1,
        &format!(
            "{r}: queue is full; the slowest gating group \"g\" is 56 messages behind (no member \
             holds it); published 56 messages (0 to 55) before it"
        ),
    );
    assert_eq!(tail_offset(&r), 56);
}

#[test]
fn publish_says_what_got_in_before_a_bad_line_and_can_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "4KiB", "--max-message", "64"]);
    let long = "x".repeat(100);
    let input = format!("a\nb\n{long}\nc\n");
    let out = shmq(&["publish", &q], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "shmq: {q}: stdin line 3: message of 100 bytes exceeds the queue's maximum of 64; \
             published 2 messages (0 to 1) before it; nothing after it was published \
             (--skip-invalid skips such lines)\n"
        )
    );
    assert_eq!(tail_offset(&q), 2);

    let out = shmq(&["publish", &q, "--skip-invalid"], input.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n3\n4\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "shmq: {q}: stdin line 3: message of 100 bytes exceeds the queue's maximum of 64 \
             (skipped)\nshmq: {q}: skipped 1 invalid lines of stdin; published 3 messages (2 \
             to 4)\n"
        )
    );
    assert_eq!(ok(&["tail", &q, "--from", "2"]), "a\nb\nc\n");
}

#[test]
fn durations_need_a_unit_and_may_be_compound() {
    let (_d, q) = queue_with(1, "4KiB");
    refused(
        &["consume", &q, "-g", "g", "--create", "--timeout", "500"],
        2,
        "invalid value '500' for '--timeout <DURATION>': a duration needs a unit: 500s, 500ms, \
         500m (units: ns, us, ms, s, m, h)",
    );
    assert_eq!(
        info(&q)["groups"].as_array().unwrap().len(),
        0,
        "no group made"
    );
    refused(
        &["stat", &q, "--interval", "1h30"],
        2,
        "invalid value '1h30' for '--interval <DURATION>': expected a number and a unit, like \
         1s, 500ms or 1h30m",
    );
    // Compound durations are accepted wherever a duration is.
    assert_eq!(
        ok(&["tail", &q, "--timeout", "1s500ms", "--count", "1"]),
        "m0\n"
    );
    assert_eq!(ok(&["tail", &q, "--from", "now-1h30m"]), "m0\n");
}

#[test]
fn a_decimal_capacity_hints_at_the_binary_unit() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    refused(
        &["create", &q, "--capacity", "64mb"],
        2,
        "invalid value '64mb' for '--capacity <SIZE>': mb is decimal, so this is 64000000 \
         bytes, not a power of two: use 64MiB",
    );
    refused(
        &["create", &q, "--capacity", "3000"],
        2,
        "invalid value '3000' for '--capacity <SIZE>': 3000 bytes is not a power of two (like \
         4KiB, 64KiB, 1MiB, 64MiB)",
    );
    assert!(!std::path::Path::new(&q).exists(), "nothing was created");
}

#[test]
fn group_names_are_printable_and_dash_names_get_a_hint() {
    let (_d, q) = queue_with(1, "4KiB");
    let before = info(&q);
    refused(
        &["group", "create", &q, "a\tb"],
        1,
        &format!(
            "{q}: invalid group name: \"a\\tb\" contains the control character U+0009: a group \
             name is printable text (no newlines, tabs or other control characters)"
        ),
    );
    refused(
        &["consume", &q, "-g", "line\nbreak", "--create"],
        1,
        &format!(
            "{q}: invalid group name: \"line\\nbreak\" contains the control character U+000A: a \
             group name is printable text (no newlines, tabs or other control characters)"
        ),
    );
    refused(
        &["group", "create", &q, "-dash"],
        2,
        "unexpected argument '-d' found (a value that starts with '-' goes after '--', as in \
         `shmq group create PATH -- -dash`, or after '=', as in `--group=-dash`)",
    );
    assert_eq!(info(&q), before, "no group was made");
    ok(&["group", "create", &q, "--", "-dash"]);
    assert_eq!(
        ok(&["consume", &q, "--group=-dash", "--count", "1"]),
        "m0\n"
    );
}

/// A queue with `n` messages and groups `a` (committed `a_at`) and `b` (committed 0).
fn queue_with_groups(n: usize, a_at: usize) -> (tempfile::TempDir, String) {
    let (d, q) = queue_with(n, "64KiB");
    ok(&["group", "create", &q, "a"]);
    ok(&["group", "create", &q, "b"]);
    ok(&[
        "consume",
        &q,
        "-g",
        "a",
        "--count",
        &a_at.to_string(),
        "--commit",
    ]);
    (d, q)
}

#[test]
fn group_reset_dry_run_changes_nothing_and_execute_does_what_it_printed() {
    let (_d, q) = queue_with_groups(10, 6);
    let before = info(&q);
    let plan = ok(&[
        "group",
        "reset",
        &q,
        "--all-groups",
        "--shift-by",
        "-3",
        "--dry-run",
    ]);
    assert_eq!(
        plan,
        format!(
            "would reset group \"a\" in {q}: committed offset 6 -> 3 (lag 7): 3 messages to read \
             again\nwould reset group \"b\" in {q}: committed offset 0 -> 0 (lag 10): unchanged\n"
        )
    );
    assert_eq!(info(&q), before, "a dry run changes nothing");
    let done = ok(&[
        "group",
        "reset",
        &q,
        "--all-groups",
        "--shift-by",
        "-3",
        "--execute",
    ]);
    assert_eq!(done, plan.replace("would reset", "reset"));
    let after = info(&q);
    let committed: Vec<u64> = after["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["committed"].as_u64().unwrap())
        .collect();
    assert_eq!(committed, [3, 0]);

    // Forward: --shift-by +N skips, clamped to the tail; --to-offset names an offset.
    assert_eq!(
        ok(&["group", "reset", &q, "b", "--shift-by", "+25"]),
        format!("reset group \"b\" in {q}: committed offset 0 -> 10 (lag 0): skips 10 messages\n")
    );
    assert_eq!(
        ok(&["group", "reset", &q, "b", "--to-offset", "4", "--dry-run"]),
        format!(
            "would reset group \"b\" in {q}: committed offset 10 -> 4 (lag 6): 6 messages to \
             read again\n"
        )
    );
}

#[test]
fn group_reset_refusals_change_nothing() {
    let (_d, q) = queue_with_groups(10, 6);
    let before = info(&q);
    refused(
        &["group", "reset", &q, "a", "--to-offset", "20", "--dry-run"],
        1,
        &format!("{q}: offset 20 is outside the retained range 0..=10"),
    );
    refused(
        &["group", "reset", &q, "--all-groups", "--to-offset", "20"],
        1,
        &format!("{q}: offset 20 is outside the retained range 0..=10"),
    );
    refused(
        &["group", "reset", &q, "a", "--to", "0", "--shift-by", "1"],
        2,
        "the argument '--to <WHERE>' cannot be used with '--shift-by <N>'",
    );
    refused(
        &[
            "group",
            "reset",
            &q,
            "a",
            "--shift-by",
            "1",
            "--dry-run",
            "--execute",
        ],
        2,
        "the argument '--dry-run' cannot be used with '--execute'",
    );
    refused(
        &["group", "reset", &q, "nope", "--shift-by", "1"],
        1,
        &format!("{q}: consumer group \"nope\" does not exist"),
    );
    assert_eq!(info(&q), before);
    let (_e, empty) = queue_with(1, "4KiB");
    refused(
        &["group", "reset", &empty, "--all-groups", "--to", "latest"],
        1,
        &format!("{empty}: has no consumer groups"),
    );
}

#[test]
fn group_describe_shows_lag_and_holder_per_partition() {
    let (_d, q) = queue_with_groups(10, 6);
    assert_eq!(
        ok(&["group", "describe", &q, "a"]),
        "GROUP  COMMITTED  LAG  LAG BYTES  GATING  HOLDER\na      6          4    160 B      yes     -\n"
    );
    let member = Background::start(&["consume", &q, "-g", "b", "--follow"]);
    let pid = member.pid();
    let v = common::wait_for_info(&q, "b held", |v| v["groups"][1]["holder_alive"] == true);
    assert_eq!(v["groups"][1]["holder_pid"], pid);
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["group", "describe", &q, "b", "--json"])).unwrap();
    assert_eq!(json["group"], "b");
    assert_eq!(json["partitions"][0]["holder_pid"], pid);
    assert_eq!(json["partitions"][0]["holder_alive"], true);
    refused(
        &["group", "describe", &q, "nope"],
        1,
        &format!("{q}: consumer group \"nope\" does not exist"),
    );

    let dir = tempfile::tempdir().unwrap();
    let t = path_in(dir.path(), "t");
    ok(&["create", &t, "--partitions", "2", "--capacity", "64KiB"]);
    ok(&["group", "create", &t, "g"]);
    let out = shmq(&["publish", &t, "--partition", "1"], b"x\ny\n");
    assert!(out.status.success());
    assert_eq!(
        ok(&["group", "describe", &t, "g"]),
        "GROUP  PARTITION  COMMITTED  LAG  LAG BYTES  GATING  HOLDER\n\
         g      0          0          0    0 B        yes     -\n\
         g      1          0          2    80 B       yes     -\n\nmembers      none\n"
    );
}

/// Sends `signal` to `member`, waits (at most 20 s) for it to exit, and returns its status.
fn stop(member: &mut Background, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(member.pid() as i32);
    nix::sys::signal::kill(pid, signal).expect("send the signal");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = member.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "consume ignored {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigint_and_sigterm_end_consume_cleanly_and_release_the_group() {
    use nix::sys::signal::Signal;
    let (_d, q) = queue_with(3, "64KiB");
    ok(&["group", "create", &q, "g"]);
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let mut member = Background::start(&["consume", &q, "-g", "g", "--commit", "--follow"]);
        let pid = member.pid();
        common::wait_for_info(&q, "the member holds the group", |v| {
            v["groups"][0]["holder_pid"] == pid && v["groups"][0]["committed"] == 3
        });
        assert!(
            stop(&mut member, signal).success(),
            "{signal} is a clean stop"
        );
        let v = info(&q);
        assert_eq!(
            v["groups"][0]["holder_pid"],
            serde_json::Value::Null,
            "{signal}: {v}"
        );
        assert_eq!(v["groups"][0]["committed"], 3);
    }
    assert_eq!(
        ok(&["group", "list", &q]),
        "GROUP  COMMITTED  LAG  LAG BYTES  GATING  HOLDER\ng      3          0    0 B        yes     -\n"
    );
}

#[test]
fn list_shows_the_queues_and_topics_of_a_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let q = path_in(dir.path(), "orders.q");
    let t = path_in(dir.path(), "events");
    ok(&["create", &q, "--capacity", "64KiB"]);
    ok(&["create", &t, "--partitions", "2", "--capacity", "64KiB"]);
    assert!(shmq(&["publish", &q], b"a\nb\nc\n").status.success());
    ok(&["group", "create", &q, "audit"]);
    std::fs::write(dir.path().join("notes.txt"), "not a queue").unwrap();
    std::fs::write(dir.path().join("empty"), "").unwrap();
    let shared = path_in(dir.path(), "shared.q");
    ok(&["create", &shared, "--capacity", "4KiB"]);
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
    let member = Background::start(&["consume", &q, "-g", "audit", "--follow"]);
    let pid = member.pid();
    common::wait_for_info(&q, "audit held", |v| v["groups"][0]["holder_pid"] == pid);

    let table = ok(&["list", d]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "PATH".to_string()
            + &" ".repeat(t.len().max(q.len()).max(shared.len()) - 2)
            + "KIND   PARTITIONS  CAPACITY  PUBLISHED  PRODUCERS  CONSUMERS  GROUPS"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[1].starts_with(&t)
            && lines[1]
                .ends_with("topic  2           64 KiB    0          0          0          -"),
        "{table}"
    );
    assert!(
        lines[2].starts_with(&q)
            && lines[2]
                .ends_with("queue  1           64 KiB    3          0          1          audit"),
        "{table}"
    );
    assert!(
        lines[3].starts_with(&shared)
            && lines[3].contains("refused because every user may write it"),
        "{table}"
    );

    let json: serde_json::Value = serde_json::from_str(&ok(&["list", d, "--json"])).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, [t.as_str(), q.as_str(), shared.as_str()]);
    assert_eq!(json[1]["groups"], serde_json::json!(["audit"]));
    assert_eq!(
        (
            json[1]["published"].as_u64(),
            json[1]["consumers_alive"].as_u64()
        ),
        (Some(3), Some(1))
    );
    assert!(json[2]["error"]
        .as_str()
        .unwrap()
        .contains("every user may write it"));

    refused(
        &["list", &q],
        1,
        &format!(
            "{q}: is a file, not a directory (shmq list takes the directory that holds queue \
             files and topics; shmq info shows one)"
        ),
    );
    let missing = path_in(dir.path(), "nope");
    refused(
        &["list", &missing],
        1,
        &format!("{missing}: read directory: No such file or directory (os error 2)"),
    );
}
