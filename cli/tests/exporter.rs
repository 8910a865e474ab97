//! `shmq exporter`: a real exporter process on 127.0.0.1 (any free port), scraped over HTTP;
//! its figures match `shmq info --json` for the same state, a queue removed while it runs
//! reads `shmq_up 0` without stopping it, and a bad path fails at startup.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fails, info, ok, path_in, shmq};
use serde_json::Value;

/// The exporter process; killed by its pid and reaped when dropped (also when a test fails).
struct Exporter {
    child: Child,
    addr: String,
}

impl Exporter {
    /// Starts `shmq exporter --listen 127.0.0.1:0 PATHS…` and reads the address it took from
    /// its first line of output.
    fn start(paths: &[&str]) -> Exporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shmq"))
            .args(["exporter", "--listen", "127.0.0.1:0"])
            .args(paths)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shmq exporter");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the exporter's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Exporter { child, addr }
    }

    /// `GET target`: the status line, the headers and the body.
    fn get(&self, target: &str) -> (String, String, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the exporter");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_string(), body.to_string())
    }

    /// Scrapes `/metrics` and returns every sample by `name{labels}`, checking that each
    /// metric has its `# HELP` and `# TYPE` lines.
    fn scrape(&self) -> HashMap<String, f64> {
        let (status, headers, body) = self.get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4"),
            "{headers}"
        );
        let mut samples = HashMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("shmq_"), "{line}");
            assert!(body.contains(&format!("# HELP {name} ")), "HELP of {name}");
            assert!(body.contains(&format!("# TYPE {name} ")), "TYPE of {name}");
            samples.insert(series.to_string(), value.parse().expect("a number"));
        }
        samples
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // `kill` signals the child's pid (SIGKILL); the exporter keeps no state to save.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series`, which must be there.
fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

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
