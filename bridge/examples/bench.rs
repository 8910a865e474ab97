//! The bridge path next to a plain JetStream publisher/consumer pair, in one run against one
//! nats-server (JetStream, file storage) that the bench starts on 127.0.0.1:
//!
//! * throughput: `--records` records (default 100,000) as fast as they go, records/s;
//! * latency: 5,000 records at 2,000/s, p50/p99 from publish to receipt.
//!
//! The bridge path is topic → bridge-out → stream → bridge-in → topic, with both bridges on
//! threads of this process; the plain pair publishes with up to 512 PubAcks in flight and
//! reads through a pull consumer. Run it as
//! `cargo run --release -p shmq-bridge --example bench -- --records 100000`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use futures::StreamExt;
use hdrhistogram::Histogram;
use shmq::{Options, Topic, TopicOptions};
use shmq_bridge::{InConfig, NatsOptions, OutConfig, Stats, StreamOptions};

/// Records of the latency phase, and their rate.
const LATENCY_RECORDS: u64 = 5_000;
/// Records per second in the latency phase.
const LATENCY_RATE: u64 = 2_000;

/// Nanoseconds since the Unix epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A 32-byte payload that starts with the send time.
fn payload(i: u64) -> Vec<u8> {
    let mut v = now_ns().to_le_bytes().to_vec();
    v.extend_from_slice(&i.to_le_bytes());
    v.resize(32, 0);
    v
}

/// The send time a payload starts with.
fn sent_ns(v: &[u8]) -> u64 {
    v.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .expect("payload of the bench")
}

/// The nats-server, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts nats-server with JetStream on a free port; returns it and its URL.
fn start_server(dir: &Path) -> (Server, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nats-server not found: install it (Debian: apt-get install nats-server)");
    let child = Command::new(binary)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server");
    (Server(child), format!("nats://127.0.0.1:{port}"))
}

/// Percentiles line of a histogram of nanoseconds.
fn percentiles(h: &Histogram<u64>) -> String {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!("p50 {:.0} µs  p99 {:.0} µs", us(0.5), us(0.99))
}

/// Sends `n` records through `send`, `rate` per second (0: unthrottled).
fn paced(n: u64, rate: u64, mut send: impl FnMut(u64)) {
    let start = Instant::now();
    for i in 0..n {
        if let Some(ns) = (i * 1_000_000_000).checked_div(rate) {
            let due = start + Duration::from_nanos(ns);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        send(i);
    }
}

/// The plain pair: records/s of `n` unthrottled, then latency percentiles.
fn plain(url: &str, n: u64) -> (f64, String) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect");
        let js = jetstream::new(client);
        let stream = js
            .get_or_create_stream(jetstream::stream::Config {
                name: "PLAIN".into(),
                subjects: vec!["plain.>".into()],
                ..Default::default()
            })
            .await
            .expect("stream");
        let consumer = stream
            .get_or_create_consumer(
                "plain",
                jetstream::consumer::pull::Config {
                    durable_name: Some("plain".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut result = (0.0, String::new());
        for (phase, count, rate) in [(0, n, 0), (1, LATENCY_RECORDS, LATENCY_RATE)] {
            let js = js.clone();
            let publisher = tokio::spawn(async move {
                let start = Instant::now();
                let mut acks = std::collections::VecDeque::new();
                for i in 0..count {
                    if let Some(ns) = (i * 1_000_000_000).checked_div(rate) {
                        let due = start + Duration::from_nanos(ns);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let ack = js
                        .publish(format!("plain.{}", i % 8), payload(i).into())
                        .await
                        .expect("publish");
                    acks.push_back(ack);
                    if acks.len() >= 512 {
                        acks.pop_front().expect("ack").await.expect("PubAck");
                    }
                }
                for ack in acks {
                    ack.await.expect("PubAck");
                }
            });
            let start = Instant::now();
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for _ in 0..count {
                let m = messages.next().await.expect("message").expect("message");
                let _ = h.record(now_ns().saturating_sub(sent_ns(&m.payload)));
                m.ack().await.expect("ack");
            }
            publisher.await.expect("publisher");
            if phase == 0 {
                result.0 = count as f64 / start.elapsed().as_secs_f64();
            } else {
                result.1 = percentiles(&h);
            }
        }
        result
    })
}

/// The bridge path: records/s of `n` unthrottled, then latency percentiles.
fn bridged(url: &str, dir: &Path, n: u64) -> (f64, String) {
    let options = TopicOptions {
        partitions: 8,
        queue: Options {
            capacity: 16 << 20,
            max_message: 4096,
            ..Options::default()
        },
    };
    let (a, b): (PathBuf, PathBuf) = (dir.join("a"), dir.join("b"));
    let src = Topic::create(&a, &options).expect("source topic");
    let dst = Topic::create(&b, &options).expect("target topic");
    let mut reader = dst.consumer("bench").expect("reader");
    let nats = NatsOptions {
        servers: vec![url.into()],
        ..NatsOptions::default()
    };
    let stream = StreamOptions {
        name: "BRIDGED".into(),
        subject: "bridged".into(),
        replicas: 1,
        duplicate_window: Duration::from_secs(120),
    };
    let stats = Stats::new();
    let out = {
        let (stats, config) = (
            Arc::clone(&stats),
            OutConfig {
                path: a.clone(),
                group: "out".into(),
                source: Some("bench".into()),
                nats: nats.clone(),
                stream: stream.clone(),
                max_in_flight: 512,
            },
        );
        std::thread::spawn(move || shmq_bridge::run_out(&config, &stats))
    };
    let inb = {
        let (stats, config) = (
            Arc::clone(&stats),
            InConfig {
                path: b.clone(),
                durable: "in".into(),
                nats,
                stream,
                batch: 256,
                ack_wait: Duration::from_secs(10),
                state: None,
            },
        );
        std::thread::spawn(move || shmq_bridge::run_in(&config, &stats))
    };
    let mut producer = src.producer().expect("producer");
    let mut result = (0.0, String::new());
    for (phase, count, rate) in [(0, n, 0), (1, LATENCY_RECORDS, LATENCY_RATE)] {
        let start = Instant::now();
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut received = 0;
        // Reads every record there is (waiting up to `wait` for the first).
        let mut receive = |reader: &mut shmq::TopicConsumer, mut wait: Duration| -> u64 {
            let mut got = 0;
            while let Some(m) = reader.poll(Some(wait)).expect("poll") {
                let _ = h.record(now_ns().saturating_sub(sent_ns(m.value)));
                let (p, o) = (m.partition, m.offset);
                reader.commit(p, o).expect("commit");
                got += 1;
                wait = Duration::ZERO;
            }
            got
        };
        paced(count, rate, |i| {
            producer
                .publish_keyed(format!("k{}", i % 1000).as_bytes(), &payload(i))
                .expect("publish");
            received += receive(&mut reader, Duration::ZERO);
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        while received < count {
            assert!(
                Instant::now() < deadline,
                "bridge stalled: {:?}",
                stats.snapshot()
            );
            received += receive(&mut reader, Duration::from_millis(100));
        }
        if phase == 0 {
            result.0 = count as f64 / start.elapsed().as_secs_f64();
        } else {
            result.1 = percentiles(&h);
        }
    }
    stats.request_stop();
    out.join().expect("bridge-out thread").expect("bridge-out");
    inb.join().expect("bridge-in thread").expect("bridge-in");
    result
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut records = 100_000u64;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                records = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--records N")
            }
            // `cargo bench` passes --bench; nothing else is accepted.
            "--bench" => {}
            other => panic!("unknown argument {other} (only --records N)"),
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, url) = start_server(dir.path());
    std::thread::sleep(Duration::from_millis(500));
    let (plain_rate, plain_latency) = plain(&url, records);
    let (bridged_rate, bridged_latency) = bridged(&url, dir.path(), records);
    println!(
        "{records} records of 32 bytes, then {LATENCY_RECORDS} at {LATENCY_RATE}/s for latency"
    );
    println!("  plain JetStream pair   {plain_rate:>9.0} records/s   {plain_latency}");
    println!("  topic → bridge → topic {bridged_rate:>9.0} records/s   {bridged_latency}");
}
