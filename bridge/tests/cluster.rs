//! Bridge tests against a 3-node JetStream cluster on 127.0.0.1 (nats-server from Debian):
//! keyed records from a local topic through bridge-out → a stream with 3 replicas → bridge-in
//! into a second topic, while bridge processes are SIGKILLed and restarted and one server is
//! killed and restarted. Every record must arrive once, in per-key order. Then the same for
//! plain queue files through one server: every record once, in the queue's order.
//!
//! `SHMQ_BRIDGE_RECORDS` sets the record count of the topic run (default 200,000). The test
//! binary runs itself as the bridge processes (`SHMQ_BRIDGE_ROLE=out|in`).

#[path = "../../tests/common/harness.rs"]
mod harness;
#[path = "../../tests/common/tools.rs"]
mod tools;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmq::{Options, Topic, TopicOptions};
use shmq_bridge::{InConfig, NatsOptions, OutConfig, Stats, StreamOptions};

/// Distinct keys in the run.
const KEYS: u64 = 1_000;
/// Partitions of both topics.
const PARTITIONS: u32 = 8;
/// The stream of the topic run.
const STREAM: &str = "ORDERS";
/// Subject prefix of the topic run.
const SUBJECT: &str = "orders";
/// Records of the queue run.
const QUEUE_RECORDS: u64 = 20_000;

fn main() {
    match std::env::var("SHMQ_BRIDGE_ROLE").as_deref() {
        Ok(role) => bridge_role(role),
        Err(_) => harness::run(&[
            (
                "unreachable_server_is_a_clear_error",
                unreachable_server_is_a_clear_error,
            ),
            ("pipeline_through_a_cluster_with_kills", || {
                if let Some(server) = nats_server() {
                    pipeline_through_a_cluster_with_kills(&server);
                }
            }),
            ("queue_files_through_a_server_with_kills", || {
                if let Some(server) = nats_server() {
                    queue_files_through_a_server_with_kills(&server);
                }
            }),
        ]),
    }
}

/// The nats-server binary. Without it the JetStream tests fail, or are skipped (`None`) if
/// `SHMQ_ALLOW_SKIP` names `nats-server`.
fn nats_server() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    for dir in candidates {
        let path = dir.join("nats-server");
        if path.is_file() {
            return Some(path);
        }
    }
    tools::require(
        "nats-server",
        false,
        "the JetStream tests",
        "Debian: apt-get install nats-server",
    );
    None
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// One nats-server of the cluster, killed and waited for on drop.
struct Node {
    /// The binary.
    binary: PathBuf,
    /// Its config file.
    config: PathBuf,
    /// Its client port.
    port: u16,
    /// The running process, if any.
    child: Option<Child>,
}

impl Node {
    /// Starts (or restarts) the server.
    fn start(&mut self) {
        let log = fs::File::create(self.config.with_extension("log")).expect("server log file");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// SIGKILLs the server and reaps it.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three JetStream servers routed to each other on 127.0.0.1, each with its own store (not
/// started yet).
fn cluster(binary: &Path, dir: &Path) -> Vec<Node> {
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    (0..3)
        .map(|i| {
            let port = free_port();
            let routes: Vec<String> = cluster_ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, p)| format!("\"nats-route://127.0.0.1:{p}\""))
                .collect();
            let store = dir.join(format!("n{i}"));
            let config = dir.join(format!("n{i}.conf"));
            fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: shmqtest, listen: 127.0.0.1:{}, routes: [{}] }}\n",
                    store.display(),
                    cluster_ports[i],
                    routes.join(", ")
                ),
            )
            .expect("write the server config");
            Node {
                binary: binary.to_path_buf(),
                config,
                port,
                child: None,
            }
        })
        .collect()
}

/// One JetStream server on 127.0.0.1 with its own store (not started yet).
fn single(binary: &Path, dir: &Path) -> Node {
    let port = free_port();
    let config = dir.join("single.conf");
    fs::write(
        &config,
        format!(
            "server_name: single\nlisten: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join("single").display()
        ),
    )
    .expect("write the server config");
    Node {
        binary: binary.to_path_buf(),
        config,
        port,
        child: None,
    }
}

/// A bridge process of the test (this binary, re-run in a role).
struct Bridge {
    /// `out` or `in`.
    role: &'static str,
    /// Environment handed to the role.
    env: Vec<(String, String)>,
    /// Its stderr file.
    log: PathBuf,
    /// The running process.
    child: Option<Child>,
    /// Times it was SIGKILLed.
    kills: u32,
}

impl Bridge {
    /// A bridge of `path` through `servers` and `stream` (name, replicas), logging into `dir`
    /// (not started yet).
    fn new(
        role: &'static str,
        path: &Path,
        servers: &str,
        stream: (&str, usize),
        dir: &Path,
    ) -> Bridge {
        Bridge {
            role,
            env: vec![
                ("SHMQ_BRIDGE_SERVERS".into(), servers.into()),
                ("SHMQ_BRIDGE_PATH".into(), path.display().to_string()),
                ("SHMQ_BRIDGE_STREAM".into(), stream.0.into()),
                ("SHMQ_BRIDGE_REPLICAS".into(), stream.1.to_string()),
            ],
            log: dir.join(format!("bridge-{role}.log")),
            child: None,
            kills: 0,
        }
    }

    /// Its log so far.
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the process.
    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("bridge log file");
        let child = Command::new(std::env::current_exe().expect("test binary path"))
            .env("SHMQ_BRIDGE_ROLE", self.role)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a bridge process");
        self.child = Some(child);
    }

    /// SIGKILLs the process and reaps it; panics if it had exited by itself (an error).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "bridge {} exited by itself ({status}); its log:\n{}",
                    self.role,
                    self.log()
                );
            }
            let _ = c.kill();
            let _ = c.wait();
            self.kills += 1;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A bridge process: its configuration from the environment (`SHMQ_BRIDGE_STREAM`,
/// `SHMQ_BRIDGE_REPLICAS`: the stream's name, subject prefix in lower case, and replicas).
fn bridge_role(role: &str) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let name = var("SHMQ_BRIDGE_STREAM");
    let nats = NatsOptions {
        servers: var("SHMQ_BRIDGE_SERVERS")
            .split(',')
            .map(String::from)
            .collect(),
        connect_attempts: 0,
        ..NatsOptions::default()
    };
    let stream = StreamOptions {
        subject: name.to_lowercase(),
        name,
        replicas: var("SHMQ_BRIDGE_REPLICAS")
            .parse()
            .expect("SHMQ_BRIDGE_REPLICAS is a number"),
        duplicate_window: Duration::from_secs(600),
    };
    let stats = Stats::new();
    let result = match role {
        "out" => shmq_bridge::run_out(
            &OutConfig {
                path: var("SHMQ_BRIDGE_PATH").into(),
                group: "bridge".into(),
                source: Some("host-a/orders".into()),
                nats,
                stream,
                max_in_flight: 512,
            },
            &stats,
        ),
        _ => shmq_bridge::run_in(
            &InConfig {
                path: var("SHMQ_BRIDGE_PATH").into(),
                durable: "host-b".into(),
                nats,
                stream,
                batch: 256,
                ack_wait: Duration::from_secs(3),
                state: None,
            },
            &stats,
        ),
    };
    if let Err(e) = result {
        eprintln!("bridge {role}: {e}");
        std::process::exit(1);
    }
}

/// A server that is not there: a typed error naming the address after the given attempts,
/// no panic.
fn unreachable_server_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = dir.path().join("t");
    Topic::create(&topic, &topic_options()).expect("create the topic");
    let port = free_port();
    let config = OutConfig {
        path: topic,
        group: "bridge".into(),
        source: None,
        nats: NatsOptions {
            servers: vec![format!("nats://127.0.0.1:{port}")],
            connect_attempts: 2,
            ..NatsOptions::default()
        },
        stream: StreamOptions {
            name: STREAM.into(),
            subject: SUBJECT.into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(60),
        },
        max_in_flight: 16,
    };
    let started = Instant::now();
    let err = shmq_bridge::run_out(&config, &Stats::new()).expect_err("no server listens there");
    let text = err.to_string();
    assert!(
        matches!(err, shmq_bridge::Error::Connect { .. }) && text.contains(&port.to_string()),
        "unexpected error: {text}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the second attempt came after a pause"
    );
}

/// Topic geometry of the test: room for the whole run.
fn topic_options() -> TopicOptions {
    TopicOptions {
        partitions: PARTITIONS,
        queue: Options {
            capacity: 8 << 20,
            max_message: 4096,
            ..Options::default()
        },
    }
}

/// A small xorshift generator, seeded from the clock (printed, to replay a failure's timing).
struct Rng(u64);

impl Rng {
    /// The next number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The main property: every record once, per-key order, across bridge and server kills.
fn pipeline_through_a_cluster_with_kills(server: &Path) {
    let records: u64 = std::env::var("SHMQ_BRIDGE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("host-a.orders");
    let target = dir.path().join("host-b.orders");
    let src = Topic::create(&source, &topic_options()).expect("create the source topic");
    let dst = Topic::create(&target, &topic_options()).expect("create the target topic");
    let mut check = dst.consumer("check").expect("join the checking group");

    // Ports first, so the bridges can start before any server listens: they must report the
    // refused connection and retry, not fail.
    let mut nodes = cluster(server, dir.path());
    let servers = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    let bridge = |role, topic: &Path| Bridge::new(role, topic, &servers, (STREAM, 3), dir.path());
    let mut out = bridge("out", &source);
    let mut inb = bridge("in", &target);
    out.start();
    inb.start();
    std::thread::sleep(Duration::from_secs(2));
    for n in &mut nodes {
        n.start();
    }

    let producer = std::thread::spawn(move || {
        let mut p = src.producer().expect("producer");
        let mut next = vec![0u64; KEYS as usize];
        for i in 0..records {
            let key = i % KEYS;
            let value = format!("{key}:{}", next[key as usize]);
            next[key as usize] += 1;
            p.publish_keyed(format!("k{key}").as_bytes(), value.as_bytes())
                .expect("publish to the source topic");
            if i % 20_000 == 19_999 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });

    let seed = Instant::now().elapsed().as_nanos() as u64 | std::process::id() as u64 | 1;
    println!("kill schedule seed {seed}");
    let mut rng = Rng(seed);
    let mut expect = vec![0u64; KEYS as usize];
    let mut received = 0u64;
    let mut node_killed = false;
    let mut next_kill = Instant::now() + Duration::from_secs(3);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(600);
    let mut last_progress = (Instant::now(), 0u64);
    while received < records {
        assert!(
            Instant::now() < deadline,
            "{received} of {records} records after {:?}; logs in {}:\nout:\n{}\nin:\n{}",
            start.elapsed(),
            dir.path().display(),
            out.log(),
            inb.log()
        );
        if let Some(m) = check
            .poll(Some(Duration::from_millis(100)))
            .expect("poll the target")
        {
            received += 1;
            let value = std::str::from_utf8(m.value).expect("utf-8 value");
            let (key, seq) = value.split_once(':').expect("key:seq");
            let (key, seq): (u64, u64) = (key.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(m.key, Some(format!("k{key}").as_bytes()), "key preserved");
            assert!(
                seq == expect[key as usize],
                "key {key}: record {seq} where {} was next (a duplicate if lower, a loss or reorder if higher) at partition {} offset {}; logs in {}:\nout:\n{}\nin:\n{}",
                expect[key as usize],
                m.partition,
                m.offset,
                dir.path().display(),
                out.log(),
                inb.log()
            );
            expect[key as usize] += 1;
            let (p, o) = (m.partition, m.offset);
            check.commit(p, o).expect("commit the checking group");
        }
        if received > last_progress.1 + 20_000 {
            println!("{received} records received after {:?}", start.elapsed());
            last_progress = (Instant::now(), received);
        }
        // Kills while less than 90% arrived; the end runs undisturbed.
        if Instant::now() >= next_kill && received < records * 9 / 10 {
            if !node_killed && received > records / 3 {
                let victim = rng.below(3) as usize;
                println!("killing server n{victim} at {received} records");
                nodes[victim].kill();
                std::thread::sleep(Duration::from_secs(3));
                nodes[victim].start();
                node_killed = true;
            } else if rng.below(2) == 0 {
                out.kill();
                out.start();
            } else {
                inb.kill();
                inb.start();
            }
            next_kill = Instant::now() + Duration::from_millis(1_500 + rng.below(3_000));
        }
    }
    producer.join().expect("producer thread");
    assert!(node_killed, "the run ended before a server was killed");
    // A late duplicate would show up now.
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        if let Some(m) = check
            .poll(Some(Duration::from_millis(100)))
            .expect("poll the target")
        {
            panic!(
                "an extra record after all {records} arrived: {:?}",
                String::from_utf8_lossy(m.value)
            );
        }
    }
    println!(
        "{records} records through the cluster in {:?}, bridge-out killed {} times, bridge-in {} times, a server killed and restarted",
        start.elapsed(),
        out.kills,
        inb.kills
    );
    let out_log = out.log();
    let in_log = inb.log();
    println!(
        "bridge-in waited for redeliveries {} times; bridge-out re-sent after a failed publish {} times",
        in_log.matches("redelivery").count(),
        out_log.matches("re-sending").count()
    );
    assert!(
        out_log.contains("cannot connect to NATS"),
        "the bridge started before the servers says it cannot connect yet:\n{out_log}"
    );
}

/// Plain queue files: one partition, no keys. Ids from a source queue through bridge-out → a
/// stream on one server → bridge-in into a target queue, each bridge SIGKILLed and restarted
/// twice: every id must arrive once and in the source's order.
fn queue_files_through_a_server_with_kills(server: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (source, target) = (dir.path().join("a.q"), dir.path().join("b.q"));
    let options = Options {
        capacity: 4 << 20,
        max_message: 4096,
        ..Options::default()
    };
    let src = shmq::Queue::create(&source, &options).expect("create the source queue");
    let dst = shmq::Queue::create(&target, &options).expect("create the target queue");
    let mut check = dst.consumer("check").expect("join the checking group");
    let mut node = single(server, dir.path());
    node.start();
    let servers = format!("nats://127.0.0.1:{}", node.port);
    let mut out = Bridge::new("out", &source, &servers, ("QUEUED", 1), dir.path());
    let mut inb = Bridge::new("in", &target, &servers, ("QUEUED", 1), dir.path());
    out.start();
    inb.start();
    let mut producer = src.producer().expect("producer");
    for id in 0..QUEUE_RECORDS {
        producer
            .publish(format!("id {id}").as_bytes())
            .expect("publish to the source queue");
    }

    let start = Instant::now();
    let deadline = start + Duration::from_secs(180);
    let mut received = 0u64;
    // Kill each bridge twice, alternating, at these counts of records received.
    let mut kills = [2_000, 6_000, 10_000, 14_000].into_iter().peekable();
    while received < QUEUE_RECORDS {
        assert!(
            Instant::now() < deadline,
            "{received} of {QUEUE_RECORDS} records after {:?}:\nout:\n{}\nin:\n{}",
            start.elapsed(),
            out.log(),
            inb.log()
        );
        if let Some(m) = check
            .poll(Some(Duration::from_millis(100)))
            .expect("poll the target")
        {
            let value = String::from_utf8_lossy(m.payload).into_owned();
            assert_eq!(
                value,
                format!("id {received}"),
                "a duplicate if lower, a loss or reorder if higher:\nout:\n{}\nin:\n{}",
                out.log(),
                inb.log()
            );
            received += 1;
            let offset = m.offset;
            check.commit(offset).expect("commit the checking group");
        }
        if kills.peek().is_some_and(|&at| received >= at) {
            let bridge = if kills.len() % 2 == 0 {
                &mut out
            } else {
                &mut inb
            };
            bridge.kill();
            bridge.start();
            kills.next();
        }
    }
    let quiet = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet {
        if let Some(m) = check
            .poll(Some(Duration::from_millis(100)))
            .expect("poll the target")
        {
            panic!(
                "an extra record after all {QUEUE_RECORDS} arrived: {:?}",
                String::from_utf8_lossy(m.payload)
            );
        }
    }
    assert_eq!((out.kills, inb.kills), (2, 2), "each bridge killed twice");
    println!(
        "{QUEUE_RECORDS} records from queue to queue in {:?}, each bridge killed twice",
        start.elapsed()
    );
}
