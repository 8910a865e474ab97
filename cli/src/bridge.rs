//! `shmq bridge out|in`: forward a topic or queue file to a NATS JetStream stream, or a stream
//! into a topic or queue file (the `bridge` feature; the logic is the `shmq-bridge` crate).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::duration::parse_duration;
use crate::error::CliError;

/// Arguments of `shmq bridge`.
#[derive(Args)]
pub struct BridgeArgs {
    /// Which direction.
    #[command(subcommand)]
    direction: Direction,
}

/// The two directions of a bridge.
#[derive(Subcommand)]
enum Direction {
    /// Read a topic or queue file as a consumer group and publish each record to
    /// `<subject>.<partition>` (a queue is partition 0); commit after JetStream's PubAck. A
    /// restarted bridge re-sends what it had not committed, and the stream drops the copies
    /// (Nats-Msg-Id).
    Out(OutArgs),
    /// Read the stream through a durable pull consumer and publish into a topic (same key) or
    /// a queue file (values only); ack after the local publish is durable, without duplicates
    /// after a crash.
    In(InArgs),
}

/// Arguments of `shmq bridge out`.
#[derive(Args)]
struct OutArgs {
    /// The topic directory or queue file to read.
    path: PathBuf,
    /// The consumer group to read as (created if missing).
    #[arg(long, default_value = "shmq-bridge-out")]
    group: String,
    /// The topic's or queue's identity in Nats-Msg-Id (default: host name and canonical
    /// path). Give every topic or queue bridged into one stream its own.
    #[arg(long)]
    source: Option<String>,
    /// PubAcks awaited at once (publishes in flight).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_in_flight: u64,
    /// Where to connect and which stream.
    #[command(flatten)]
    link: LinkArgs,
}

/// Arguments of `shmq bridge in`.
#[derive(Args)]
struct InArgs {
    /// The topic directory or queue file to publish into.
    path: PathBuf,
    /// The durable consumer's name (the bridge's group in the topic or queue is
    /// `shmq-bridge-in.<durable>`).
    #[arg(long, default_value = "shmq-bridge-in")]
    durable: String,
    /// Messages fetched at once; also the consumer's max-ack-pending.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// The consumer's ack wait: an unacked message is delivered again after it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ack_wait: Duration,
    /// The file keeping the last applied stream sequence (default: beside the topic or
    /// queue, `<name>.bridge-in.<durable>.seq`).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Where to connect and which stream.
    #[command(flatten)]
    link: LinkArgs,
}

/// Connection and stream options common to both directions.
#[derive(Args)]
struct LinkArgs {
    /// NATS server URLs (repeat, or separate with commas); `tls://` for TLS.
    #[arg(
        long = "server",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    servers: Vec<String>,
    /// The JetStream stream (created if missing).
    #[arg(long, default_value = "SHMQ")]
    stream: String,
    /// Subject prefix: records go to `<subject>.<partition>`.
    #[arg(long, default_value = "shmq")]
    subject: String,
    /// Replicas of the stream when the bridge creates it.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// The stream's de-duplication window when the bridge creates it: a bridge-out restarted
    /// within it creates no duplicate.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duplicate_window: Duration,
    /// A NATS credentials (.creds) file.
    #[arg(long, value_name = "FILE")]
    creds: Option<PathBuf>,
    /// Require TLS.
    #[arg(long)]
    tls: bool,
    /// PEM root certificates to trust for TLS.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Give up after this many failed first connections (0: retry forever).
    #[arg(long, default_value_t = 0)]
    connect_attempts: usize,
    /// Print a status line this often on stderr (0s: never): records forwarded per second
    /// and in all, skipped duplicates, PubAcks (out) or acks (in) in flight, the local and
    /// the JetStream lag, disconnections, reconnections and retries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    status_interval: Duration,
}

impl LinkArgs {
    /// The library's connection options.
    fn nats(&self) -> shmq_bridge::NatsOptions {
        shmq_bridge::NatsOptions {
            servers: self.servers.clone(),
            credentials: self.creds.clone(),
            tls: self.tls,
            root_certificates: self.tls_ca.clone(),
            connect_attempts: self.connect_attempts,
        }
    }

    /// The library's stream options.
    fn stream(&self) -> shmq_bridge::StreamOptions {
        shmq_bridge::StreamOptions {
            name: self.stream.clone(),
            subject: self.subject.clone(),
            replicas: self.replicas,
            duplicate_window: self.duplicate_window,
        }
    }
}

/// Runs `shmq bridge`.
pub fn run(args: &BridgeArgs) -> Result<(), CliError> {
    let stats = shmq_bridge::Stats::new();
    let flag = Arc::clone(&stats);
    // Ctrl-C: finish what is in flight, then stop.
    let _ = ctrlc::set_handler(move || flag.request_stop());
    let (interval, path) = match &args.direction {
        Direction::Out(a) => (a.link.status_interval, a.path.clone()),
        Direction::In(a) => (a.link.status_interval, a.path.clone()),
    };
    if !interval.is_zero() {
        // Not joined: it may be asleep for an interval when the bridge ends.
        let stats = Arc::clone(&stats);
        std::thread::spawn(move || status_lines(&stats, interval));
    }
    let result = match &args.direction {
        Direction::Out(a) => shmq_bridge::run_out(
            &shmq_bridge::OutConfig {
                path: a.path.clone(),
                group: a.group.clone(),
                source: a.source.clone(),
                nats: a.link.nats(),
                stream: a.link.stream(),
                max_in_flight: a.max_in_flight as usize,
            },
            &stats,
        ),
        Direction::In(a) => shmq_bridge::run_in(
            &shmq_bridge::InConfig {
                path: a.path.clone(),
                durable: a.durable.clone(),
                nats: a.link.nats(),
                stream: a.link.stream(),
                batch: a.batch as usize,
                ack_wait: a.ack_wait,
                state: a.state.clone(),
            },
            &stats,
        ),
    };
    stats.request_stop();
    result.map_err(|e| match e {
        shmq_bridge::Error::Shmq { path, source } => CliError::queue(&path, source),
        e => CliError::new(path.display(), e),
    })
}

/// Prints the bridge's status line every `interval` until it stops.
fn status_lines(stats: &shmq_bridge::Stats, interval: Duration) {
    let mut last = stats.snapshot();
    let mut at = Instant::now();
    while !stats.stopping() {
        std::thread::sleep(interval);
        let now = stats.snapshot();
        errln!("shmq bridge: {}", now.line(&last, at.elapsed()));
        (last, at) = (now, Instant::now());
    }
}
