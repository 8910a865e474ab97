//! `shmq exporter`: serves the state of queue files and topics to Prometheus (text exposition
//! format 0.0.4) over a small HTTP/1.1 server on `std::net::TcpListener`.
//!
//! Every scrape opens each path anew and reads it with `shmq info`'s own gathering
//! ([`info::gather`]), taking the figures from the JSON document `shmq info --json` prints, so
//! the two never disagree. A path that cannot be read at a scrape (removed, replaced by an
//! untrusted file, …) reports `shmq_up 0` and a warning on stderr; the exporter goes on.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::Value;
use shmq::{Queue, Topic};

use crate::error::CliError;
use crate::info;
use crate::trust::TrustArgs;

/// Arguments of `shmq exporter`.
#[derive(Args)]
pub struct ExporterArgs {
    /// Address to serve `GET /metrics` on (port 0: any free port; the first line of output
    /// names the one taken).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    listen: String,
    /// Queue files and topic directories to export.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Whom to trust with a file another user made.
    #[command(flatten)]
    trust: TrustArgs,
}

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest request head read: a scrape's is a few hundred bytes.
const MAX_REQUEST: u64 = 16 * 1024;

/// Checks every path once, binds, prints `listening on http://ADDR/metrics` and serves until
/// killed.
pub fn run(args: &ExporterArgs) -> Result<(), CliError> {
    for path in &args.paths {
        open(&args.trust, path)?;
    }
    let listener = TcpListener::bind(&args.listen)
        .map_err(|e| CliError::new(&args.listen, format_args!("listen: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::new(&args.listen, format_args!("listen: {e}")))?;
    info::print(&format!("listening on http://{addr}/metrics"))?;
    for stream in listener.incoming() {
        // A client that fails (resets, times out) concerns that client only.
        match stream {
            Ok(stream) => {
                if let Err(e) = serve(stream, args) {
                    errln!("shmq: exporter: client: {e}");
                }
            }
            Err(e) => errln!("shmq: exporter: accept: {e}"),
        }
    }
    Ok(())
}

/// What a path holds.
enum Opened {
    /// A queue file.
    Queue(Queue),
    /// A topic directory.
    Topic(Topic),
}

/// Opens `path` as a topic if it is one, else as a queue file.
fn open(trust: &TrustArgs, path: &Path) -> Result<Opened, CliError> {
    if Topic::is_topic(path) {
        trust.open_topic(path).map(Opened::Topic)
    } else {
        trust.open_queue(path).map(Opened::Queue)
    }
}

/// Answers one request: `GET /metrics` (or `/`), 404 for other paths, 405 for other methods.
fn serve(stream: TcpStream, args: &ExporterArgs) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_REQUEST));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The rest of the head (headers) until the blank line; no request here has a body.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 && line.trim_end() != "" {
        line.clear();
    }
    let mut words = request_line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            scrape(args),
        ),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "shmq exporter: metrics at /metrics\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// One metric family: its samples from every path, printed together under one `# HELP` and
/// `# TYPE`.
struct Family {
    /// The metric name.
    name: &'static str,
    /// The `# HELP` text.
    help: &'static str,
    /// `gauge` or `counter`.
    kind: &'static str,
    /// Each sample's label set (`{…}`) and value.
    samples: Vec<(String, f64)>,
}

/// The families in the order they are printed; `(name, kind, help)`.
const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "shmq_up",
        "gauge",
        "1 if the queue file or topic could be read at this scrape, else 0.",
    ),
    ("shmq_topic_partitions", "gauge", "Partitions of the topic."),
    (
        "shmq_topic_members_live",
        "gauge",
        "Live members of the topic's consumer group.",
    ),
    (
        "shmq_capacity_bytes",
        "gauge",
        "Size of the data ring in bytes.",
    ),
    (
        "shmq_max_message_bytes",
        "gauge",
        "Largest payload in bytes.",
    ),
    (
        "shmq_oldest_offset",
        "gauge",
        "Oldest offset still in the ring.",
    ),
    (
        "shmq_tail_offset",
        "gauge",
        "Next offset a producer will be given: records published since creation.",
    ),
    (
        "shmq_durable_offset",
        "gauge",
        "Every record before this offset is on disk.",
    ),
    (
        "shmq_fill_bytes",
        "gauge",
        "Ring bytes producers may not overwrite yet.",
    ),
    (
        "shmq_fill_ratio",
        "gauge",
        "shmq_fill_bytes as a fraction of the capacity (1: producers wait or fail).",
    ),
    (
        "shmq_producers_running",
        "gauge",
        "Producer slots held by running processes.",
    ),
    (
        "shmq_producers_waiting",
        "gauge",
        "Producers asleep waiting for room.",
    ),
    (
        "shmq_flushes_total",
        "counter",
        "Flushes (fdatasync) of the file since its creation.",
    ),
    (
        "shmq_group_committed_offset",
        "gauge",
        "Next offset the consumer group reads after a restart.",
    ),
    (
        "shmq_group_lag_messages",
        "gauge",
        "Records published but not committed by the group.",
    ),
    (
        "shmq_group_lag_bytes",
        "gauge",
        "Ring bytes from the group's committed position to the tail.",
    ),
    (
        "shmq_group_gating",
        "gauge",
        "1 if the group holds producers back, else 0.",
    ),
    (
        "shmq_group_holder_alive",
        "gauge",
        "1 if a running process holds the group, else 0.",
    ),
    (
        "shmq_work_workers",
        "gauge",
        "Live workers of the work group.",
    ),
    (
        "shmq_work_in_flight",
        "gauge",
        "Records of the work group delivered and held by a worker now.",
    ),
    (
        "shmq_work_waiting",
        "gauge",
        "Records of the work group waiting to be delivered (again) at a due time.",
    ),
    (
        "shmq_work_delivered_total",
        "counter",
        "First deliveries of the work group's records.",
    ),
    (
        "shmq_work_redelivered_total",
        "counter",
        "Deliveries after the first (nacks and expired leases).",
    ),
    (
        "shmq_work_acked_total",
        "counter",
        "Records of the work group acked.",
    ),
    (
        "shmq_work_dead_lettered_total",
        "counter",
        "Records of the work group dead-lettered: rejected, or out of deliveries.",
    ),
    (
        "shmq_work_expired_total",
        "counter",
        "Records of the work group expired before they were delivered.",
    ),
];

/// The metrics of one scrape, in the text exposition format 0.0.4.
fn scrape(args: &ExporterArgs) -> String {
    let mut families: Vec<Family> = FAMILIES
        .iter()
        .map(|&(name, kind, help)| Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        })
        .collect();
    let mut add = |name: &str, labels: &[(&str, &str)], value: f64| {
        if let Some(f) = families.iter_mut().find(|f| f.name == name) {
            f.samples.push((label_set(labels), value));
        }
    };
    for path in &args.paths {
        let shown = path.display().to_string();
        match open(&args.trust, path) {
            Ok(Opened::Queue(queue)) => {
                add("shmq_up", &[("path", &shown)], 1.0);
                queue_samples(&mut add, &shown, None, &queue);
            }
            Ok(Opened::Topic(topic)) => {
                add("shmq_up", &[("path", &shown)], 1.0);
                let labels = [("path", shown.as_str())];
                add(
                    "shmq_topic_partitions",
                    &labels,
                    topic.partition_count().into(),
                );
                let mut live: Vec<(String, u32)> = Vec::new();
                for m in topic.members().into_iter().filter(|m| m.live) {
                    match live.iter_mut().find(|(g, _)| *g == m.group) {
                        Some((_, n)) => *n += 1,
                        None => live.push((m.group, 1)),
                    }
                }
                for (group, n) in live {
                    let labels = [("path", shown.as_str()), ("group", group.as_str())];
                    add("shmq_topic_members_live", &labels, n.into());
                }
                for (p, queue) in topic.partitions().iter().enumerate() {
                    queue_samples(&mut add, &shown, Some(p), queue);
                }
            }
            Err(e) => {
                errln!("shmq: {e}");
                add("shmq_up", &[("path", &shown)], 0.0);
            }
        }
    }
    let mut out = String::new();
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value) in &f.samples {
            let _ = writeln!(out, "{}{labels} {value}", f.name);
        }
    }
    out
}

/// The samples of one queue file (or partition `partition` of a topic), from the document
/// `shmq info --json` prints for it.
fn queue_samples(
    add: &mut impl FnMut(&str, &[(&str, &str)], f64),
    path: &str,
    partition: Option<usize>,
    queue: &Queue,
) {
    let doc = serde_json::to_value(info::gather(queue)).unwrap_or(Value::Null);
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let flag = |v: &Value, key: &str| match v.get(key).and_then(Value::as_bool) {
        Some(b) => f64::from(u8::from(b)),
        None => f64::NAN,
    };
    let partition = partition.map(|p| p.to_string());
    let mut labels = vec![("path", path)];
    if let Some(p) = &partition {
        labels.push(("partition", p.as_str()));
    }
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
        add(metric, &labels, number(&doc, key));
    }
    let ratio = number(&doc, "fill_bytes") / number(&doc, "capacity");
    add("shmq_fill_ratio", &labels, ratio);
    add("shmq_flushes_total", &labels, queue.flushes() as f64);
    let groups = doc.get("groups").and_then(Value::as_array);
    for group in groups.into_iter().flatten() {
        let name = group.get("name").and_then(Value::as_str).unwrap_or("");
        let mut labels = labels.clone();
        labels.push(("group", name));
        for (metric, key) in [
            ("shmq_group_committed_offset", "committed"),
            ("shmq_group_lag_messages", "lag"),
            ("shmq_group_lag_bytes", "lag_bytes"),
        ] {
            add(metric, &labels, number(group, key));
        }
        add("shmq_group_gating", &labels, flag(group, "gating"));
        add(
            "shmq_group_holder_alive",
            &labels,
            flag(group, "holder_alive"),
        );
        let Some(work) = group.get("work") else {
            continue;
        };
        for (metric, key) in [
            ("shmq_work_workers", "workers"),
            ("shmq_work_in_flight", "in_flight"),
            ("shmq_work_waiting", "waiting"),
            ("shmq_work_delivered_total", "delivered"),
            ("shmq_work_redelivered_total", "redelivered"),
            ("shmq_work_acked_total", "acked"),
            ("shmq_work_dead_lettered_total", "dead_lettered"),
            ("shmq_work_expired_total", "expired"),
        ] {
            add(metric, &labels, number(work, key));
        }
    }
}

/// `{k="v",…}` with the values escaped as the format requires (backslash, quote, newline).
fn label_set(labels: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(","))
}

#[cfg(test)]
mod tests {
    use super::label_set;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            label_set(&[("path", "/a\"b\\c\nd"), ("group", "g")]),
            r#"{path="/a\"b\\c\nd",group="g"}"#
        );
    }
}
