//! `shmq exporter`: a real exporter process on 127.0.0.1 (any free port), scraped over HTTP;
//! its figures match `shmq info --json` for the same state, a queue removed while it runs
//! reads `shmq_up 0` without stopping it, and a bad path fails at startup.

mod common;

use std::collections::HashMap;

use common::{fails, info, ok, path_in, sample, shmq, Exporter};
use serde_json::Value;

/// Checks a queue's (or partition's) samples, labelled `labels`, against its `info --json`.
fn check_queue(samples: &HashMap<String, f64>, labels: &str, info: &Value) {
    let n = |key: &str| {
        info[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {info}")) as f64
    };
    for (metric, key) in [
        ("shmq_capacity_bytes", "capacity"),
        ("shmq_max_message_bytes", "max_message"),
        ("shmq_oldest_offset", "oldest_offset"),
        ("shmq_tail_offset", "tail_offset"),
        ("shmq_durable_offset", "durable_offset"),
        ("shmq_fill_bytes", "fill_bytes"),
        ("shmq_producers_running", "producers_alive"),
        ("shmq_producers_waiting", "producers_waiting"),
    ] {
        assert_eq!(
            sample(samples, &format!("{metric}{{{labels}}}")),
            n(key),
            "{metric}"
        );
    }
    let ratio = sample(samples, &format!("shmq_fill_ratio{{{labels}}}"));
    assert_eq!(ratio, n("fill_bytes") / n("capacity"));
    assert!(samples.contains_key(&format!("shmq_flushes_total{{{labels}}}")));
    for group in info["groups"].as_array().expect("groups") {
        let name = group["name"].as_str().unwrap();
        let labels = format!("{labels},group=\"{name}\"");
        let g = |key: &str| group[key].as_u64().unwrap() as f64;
        let flag = |key: &str| f64::from(u8::from(group[key].as_bool().unwrap()));
        let s = |metric: &str| sample(samples, &format!("{metric}{{{labels}}}"));
        assert_eq!(s("shmq_group_committed_offset"), g("committed"));
        assert_eq!(s("shmq_group_lag_messages"), g("lag"));
        assert_eq!(s("shmq_group_lag_bytes"), g("lag_bytes"));
        assert_eq!(s("shmq_group_gating"), flag("gating"));
        assert_eq!(s("shmq_group_holder_alive"), flag("holder_alive"));
    }
}

#[test]
fn exporter_figures_match_info() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "orders.q");
    ok(&["create", &q, "--capacity", "1MiB"]);
    ok(&["group", "create", &q, "audit"]);
    ok(&["group", "create", &q, "sms", "--non-gating"]);
    let lines: String = (0..7).map(|i| format!("order {i}\n")).collect();
    assert!(shmq(&["publish", &q], lines.as_bytes()).status.success());
    ok(&["consume", &q, "-g", "audit", "--count", "3", "--commit"]);
    let t = path_in(dir.path(), "events");
    ok(&["create", &t, "--partitions", "2", "--capacity", "64KiB"]);
    ok(&["group", "create", &t, "billing"]);
    let keyed = b"a 1\nb 2\nc 3\nd 4\n";
    let published = shmq(&["publish", &t, "--key-separator", " "], keyed);
    assert!(published.status.success());

    let exporter = Exporter::start(&[&q, &t]);
    let samples = exporter.scrape();
    assert_eq!(sample(&samples, &format!("shmq_up{{path=\"{q}\"}}")), 1.0);
    assert_eq!(sample(&samples, &format!("shmq_up{{path=\"{t}\"}}")), 1.0);
    let queue_info = info(&q);
    assert_eq!(queue_info["tail_offset"], 7);
    check_queue(&samples, &format!("path=\"{q}\""), &queue_info);
    let audit = format!("shmq_group_lag_messages{{path=\"{q}\",group=\"audit\"}}");
    assert_eq!(sample(&samples, &audit), 4.0);

    let topic_info = info(&t);
    let partitions = topic_info["partition_info"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 2);
    let topic_partitions = format!("shmq_topic_partitions{{path=\"{t}\"}}");
    assert_eq!(sample(&samples, &topic_partitions), 2.0);
    let mut tails = 0.0;
    for (p, partition) in partitions.iter().enumerate() {
        check_queue(
            &samples,
            &format!("path=\"{t}\",partition=\"{p}\""),
            partition,
        );
        tails += sample(
            &samples,
            &format!("shmq_tail_offset{{path=\"{t}\",partition=\"{p}\"}}"),
        );
    }
    assert_eq!(tails, 4.0, "every keyed record in one of the partitions");

    let (status, _, _) = exporter.get("/nowhere");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    // The queue goes away while the exporter runs: it reports it down and serves the rest.
    std::fs::remove_file(&q).unwrap();
    let samples = exporter.scrape();
    assert_eq!(sample(&samples, &format!("shmq_up{{path=\"{q}\"}}")), 0.0);
    assert_eq!(sample(&samples, &format!("shmq_up{{path=\"{t}\"}}")), 1.0);
    assert!(!samples
        .keys()
        .any(|k| k.starts_with("shmq_tail_offset") && k.contains(&q)));
    let mut exporter = exporter;
    assert!(
        exporter.child.try_wait().unwrap().is_none(),
        "the exporter still runs"
    );
    // Stopped by its pid.
    let pid = exporter.child.id();
    exporter.child.kill().expect("kill the exporter");
    let status = exporter.child.wait().unwrap();
    assert!(!status.success(), "exporter {pid} was killed: {status}");
}

#[test]
fn exporter_refuses_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = path_in(dir.path(), "missing.q");
    fails(
        &["exporter", "--listen", "127.0.0.1:0", &missing],
        &[&missing, "no such queue file"],
    );
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    fails(
        &["exporter", "--listen", "256.0.0.1:1", &q],
        &["256.0.0.1:1", "listen"],
    );
}
