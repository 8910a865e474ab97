//! End-to-end tests of topics through the `shmq` binary: create, publish with keys, consume as
//! a group member, info per partition, group operations over partitions, grow, route, fan-out.

mod common;

use common::{fails, info, ok, path_in, shmq};

/// A fresh topic of `partitions` partitions with group `g`.
fn topic(partitions: u32) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let t = path_in(dir.path(), "orders");
    let n = partitions.to_string();
    let out = ok(&["create", &t, "--partitions", &n, "--capacity", "64KiB"]);
    assert!(out.contains(&format!("topic of {n} partitions")), "{out}");
    ok(&["group", "create", &t, "g"]);
    (dir, t)
}

/// Parses `PARTITION:OFFSET` lines.
fn placements(out: &str) -> Vec<(u32, u64)> {
    out.lines()
        .map(|l| {
            let (p, o) = l.split_once(':').expect("PARTITION:OFFSET");
            (p.parse().unwrap(), o.parse().unwrap())
        })
        .collect()
}

#[test]
fn keyed_messages_keep_their_order_per_key() {
    let (_d, t) = topic(4);
    let lines: String = (0..40).map(|i| format!("key{} {i}\n", i % 5)).collect();
    let out = shmq(&["publish", &t, "--key-separator", " "], lines.as_bytes());
    assert!(out.status.success());
    let placed = placements(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(placed.len(), 40);
    // Every key went to the partition `shmq topic route` names for it.
    for (i, &(p, _)) in placed.iter().enumerate() {
        let route = ok(&["topic", "route", &t, &format!("key{}", i % 5)]);
        assert_eq!(route.trim(), p.to_string());
    }
    let json = ok(&["consume", &t, "-g", "g", "--format", "json", "--commit"]);
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let value: u64 = v["payload"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            placed[value as usize].0,
            v["partition"].as_u64().unwrap() as u32
        );
        per_key.entry(key).or_default().push(value);
    }
    assert_eq!(per_key.len(), 5);
    for (key, values) in &per_key {
        let k: u64 = key.trim_start_matches("key").parse().unwrap();
        let expected: Vec<u64> = (0..40).filter(|i| i % 5 == k).collect();
        assert_eq!(values, &expected, "{key} complete and in order");
    }
    // Committed in every partition: nothing is left for the group.
    assert_eq!(ok(&["consume", &t, "-g", "g"]), "");
}

#[test]
fn one_key_a_partition_or_round_robin() {
    let (_d, t) = topic(3);
    let keyed = String::from_utf8(shmq(&["publish", &t, "--key", "order-42"], b"a\nb\nc\n").stdout)
        .unwrap();
    let parts: Vec<u32> = placements(&keyed).iter().map(|p| p.0).collect();
    let route: u32 = ok(&["topic", "route", &t, "order-42"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(parts, [route; 3]);

    let pinned =
        String::from_utf8(shmq(&["publish", &t, "--partition", "2"], b"x\n").stdout).unwrap();
    assert_eq!(placements(&pinned)[0].0, 2);

    let spread = String::from_utf8(shmq(&["publish", &t], b"1\n2\n3\n4\n5\n6\n").stdout).unwrap();
    let mut counts = [0; 3];
    for (p, _) in placements(&spread) {
        counts[p as usize] += 1;
    }
    assert_eq!(counts, [2, 2, 2], "round-robin over 3 partitions");

    let hex = ok(&["consume", &t, "-g", "g", "--format", "hex", "--count", "1"]);
    assert!(
        hex.contains(':'),
        "hex lines start with the partition: {hex}"
    );
}

#[test]
fn info_reports_every_partition_group_and_member() {
    let (_d, t) = topic(2);
    shmq(&["publish", &t, "--partition", "1"], b"one\ntwo\n");
    let table = ok(&["info", &t]);
    assert!(
        table.contains("partitions   2, each: capacity 64 KiB"),
        "{table}"
    );
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["1", "0", "2", "0", "80", "B", "0"]),
        "{table}"
    );
    assert!(
        rows.contains(&vec!["g", "1", "0", "2", "80", "B", "yes", "-"]),
        "{table}"
    );

    let v = info(&t);
    assert_eq!(v["partitions"], 2);
    assert_eq!(v["partition_info"][1]["tail_offset"], 2);
    assert_eq!(v["partition_info"][1]["groups"][0]["lag"], 2);
    assert_eq!(v["partition_info"][0]["groups"][0]["lag"], 0);
    assert_eq!(v["members"].as_array().unwrap().len(), 0);
    let list: serde_json::Value =
        serde_json::from_str(&ok(&["group", "list", &t, "--json"])).unwrap();
    assert_eq!(list[1]["partition"], 1);
    assert_eq!(list[1]["lag"], 2);
}

#[test]
fn group_operations_cover_every_partition() {
    let (_d, t) = topic(2);
    shmq(&["publish", &t], b"a\nb\nc\nd\n");
    ok(&["consume", &t, "-g", "g", "--commit"]);
    let reset = ok(&["group", "reset", &t, "g", "--to", "earliest"]);
    assert_eq!(reset.lines().count(), 2, "{reset}");
    assert!(reset.contains("partition 1 of"), "{reset}");
    assert_eq!(
        ok(&["consume", &t, "-g", "g", "--commit"]).lines().count(),
        4
    );

    fails(
        &["group", "reset", &t, "g", "--to", "1"],
        &["--to", "is a topic", "--partition"],
    );
    assert!(
        ok(&["group", "reset", &t, "g", "--to", "1", "--partition", "0"])
            .contains("partition 0 of")
    );
    assert_eq!(ok(&["consume", &t, "-g", "g"]).lines().count(), 1);
    fails(
        &["group", "reset", &t, "g", "--to", "0", "--partition", "2"],
        &["--partition 2", "partitions 0 to 1"],
    );
    fails(
        &["group", "reset", &t, "nope", "--to", "latest"],
        &["partition 0 of", "\"nope\"", "does not exist"],
    );
    assert_eq!(
        ok(&["group", "delete", &t, "g"]).lines().count(),
        2,
        "deleted from both partitions"
    );
    assert_eq!(ok(&["group", "list", &t]), "no consumer groups\n");
}

#[test]
fn grow_and_fan_out() {
    let (dir, t) = topic(2);
    let lines: String = (0..30).map(|i| format!("k{} {i}\n", i % 7)).collect();
    assert!(
        shmq(&["publish", &t, "--key-separator", " "], lines.as_bytes())
            .status
            .success()
    );
    let wide = path_in(dir.path(), "wide");
    ok(&["create", &wide, "--partitions", "8", "--capacity", "64KiB"]);
    ok(&["group", "create", &wide, "g"]);
    let out = ok(&["topic", "fan-out", &t, &wide, "-g", "g"]);
    assert!(out.starts_with("copied 30 messages"), "{out}");
    assert_eq!(
        ok(&["consume", &t, "-g", "g"]),
        "",
        "the source backlog is committed"
    );
    let json = ok(&["consume", &wide, "-g", "g", "--format", "json"]);
    let mut per_key: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        per_key
            .entry(v["key"].as_str().unwrap().to_string())
            .or_default()
            .push(v["payload"].as_str().unwrap().parse().unwrap());
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), 30);
    for values in per_key.values() {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    }

    assert!(ok(&["topic", "grow", &t, "--partitions", "5"]).contains("2 -> 5 partitions"));
    assert_eq!(info(&t)["partitions"], 5);
    fails(
        &["topic", "grow", &t, "--partitions", "3"],
        &[&t, "cannot shrink"],
    );
}

#[test]
fn topic_errors_are_named() {
    let (dir, t) = topic(2);
    let q = path_in(dir.path(), "plain.q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    fails(
        &["publish", &q, "--key", "k"],
        &["--key", "is a queue file, not a topic"],
    );
    fails(
        &["publish", &t, "--partition", "9"],
        &["--partition 9", "partitions 0 to 1"],
    );
    fails(
        &["publish", &t, "--key", "k", "--key-separator", " "],
        &["--key", "--key-separator"],
    );
    let out = shmq(
        &["publish", &t, "--key-separator", "="],
        b"no separator here\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stdin line 1"));
    fails(
        &["consume", &t, "-g", "g", "--from", "3"],
        &["--from", "is a topic", "group reset"],
    );
    fails(&["topic", "route", &q, "k"], &[&q]);
    fails(&["create", &t, "--partitions", "2"], &[&t, "exists"]);
    fails(
        &["create", &path_in(dir.path(), "x"), "--partitions", "0"],
        &["'0'", "--partitions"],
    );

    std::fs::remove_file(format!("{t}/partition-0001.q")).unwrap();
    fails(&["info", &t], &[&t, "partition 1"]);
    std::fs::write(format!("{t}/descriptor"), b"garbage").unwrap();
    fails(&["info", &t], &[&t, "descriptor"]);
}
