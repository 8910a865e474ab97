//! A bridge between shmq topics or queue files and NATS JetStream, without duplicates across
//! the link. A queue file is bridged as a topic of one partition (0) whose records have no key.
//!
//! * [`run_out`] reads a local topic or queue as a member of a consumer group and publishes
//!   each record to the JetStream subject `<subject>.<partition>`, with `Nats-Msg-Id` set from
//!   the topic's identity, the partition and the offset. It commits the group's offset only after
//!   JetStream's PubAck, so a bridge restarted after a crash re-sends what it had not committed
//!   and the stream's de-duplication window drops the copies.
//! * [`run_in`] reads the stream through a durable pull consumer and publishes each message
//!   into a local topic (same key) or queue, acking JetStream only after the local publish is
//!   durable. It keeps a consumer group of its own there, committed only after the ack is
//!   confirmed: after a crash, the records past that group's offset are the ones whose ack may
//!   have been lost, and redelivered messages that match them are not published again. The
//!   stream sequence of the last message applied is kept in a file beside the topic, so a
//!   redelivery of a message already applied is recognized after a restart too.
//!
//! The shmq side runs on a dedicated thread with the blocking API; the NATS side on a tokio
//! runtime; bounded channels between them carry the back-pressure. `ARCHITECTURE.md`
//! ("Bridge") describes the protocol and its limits.

/// A warning on stderr that never panics (a closed stderr drops it).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "shmq bridge: {}", format_args!($($arg)*));
    }};
}
pub(crate) use say;

mod inbound;
mod local;
mod outbound;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

pub use inbound::{run_in, InConfig};
pub use outbound::{run_out, OutConfig};

/// Header carrying the record's partition in the source topic.
pub const HEADER_PARTITION: &str = "Shmq-Partition";
/// Header carrying the record's offset in its source partition.
pub const HEADER_OFFSET: &str = "Shmq-Offset";
/// Header carrying the record's key, hex-encoded (absent for a record without a key).
pub const HEADER_KEY: &str = "Shmq-Key";
/// Header carrying the record's publish time, nanoseconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "Shmq-Timestamp";

/// Errors of the bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local topic or queue failed.
    #[error("{path}: {source}")]
    Shmq {
        /// The topic directory or queue file.
        path: PathBuf,
        /// The shmq error.
        #[source]
        source: shmq::Error,
    },
    /// No NATS server could be reached (after the configured connection attempts).
    #[error("cannot connect to NATS at {servers}: {reason}")]
    Connect {
        /// The server URLs tried.
        servers: String,
        /// Why.
        reason: String,
    },
    /// The credentials file could not be read.
    #[error("{path}: cannot read the NATS credentials: {source}")]
    Credentials {
        /// The credentials file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JetStream management request (stream or consumer) failed.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// What was asked.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A message from the stream lacks a header the bridge needs, or has a bad one.
    #[error("stream message {sequence}: {reason}")]
    BadMessage {
        /// Its stream sequence.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// Bridge-in's file of the last applied stream sequence could not be read or written.
    #[error("{path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The I/O error (`InvalidData` for a file of the wrong size).
        #[source]
        source: std::io::Error,
    },
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A result of the bridge.
pub type Result<T> = std::result::Result<T, Error>;

/// How to reach the NATS servers.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:port`, or `tls://` for TLS).
    pub servers: Vec<String>,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// Require TLS on every connection.
    pub tls: bool,
    /// A PEM file of root certificates to trust for TLS.
    pub root_certificates: Option<PathBuf>,
    /// How many times to try the first connection before giving up (0: forever).
    pub connect_attempts: usize,
}

/// The JetStream stream a bridge uses.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// The stream's name.
    pub name: String,
    /// The subject prefix: records go to `<subject>.<partition>`.
    pub subject: String,
    /// Create the stream if it is missing, with this many replicas.
    pub replicas: usize,
    /// The stream's de-duplication window: how long after a crash a restarted bridge-out may
    /// re-send without creating duplicates.
    pub duplicate_window: Duration,
}

/// Counters a bridge updates as it runs, for a status line.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records forwarded (out: PubAcked and committed; in: published locally and acked).
    pub forwarded: AtomicU64,
    /// Records skipped as already delivered (duplicates that the bridge recognized).
    pub skipped: AtomicU64,
    /// Publishes awaiting their PubAck (out) or messages awaiting their ack (in).
    pub in_flight: AtomicU64,
    /// Lag of the local side: records of the group not yet committed (out), or of the local
    /// topic's group of the bridge (in).
    pub local_lag: AtomicU64,
    /// Lag of the JetStream side: messages pending for the durable consumer (in), or
    /// publishes to be re-sent (out).
    pub remote_lag: AtomicU64,
    /// Connections lost to the NATS server.
    pub disconnects: AtomicU64,
    /// Connections made again after one was lost (the first connection does not count).
    pub reconnects: AtomicU64,
    /// Errors retried (failed publishes, acks and fetches).
    pub retries: AtomicU64,
    /// Set to stop the bridge: it finishes what is in flight and returns.
    pub stop: AtomicBool,
}

impl Stats {
    /// New zeroed counters, shared.
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats::default())
    }

    /// Whether [`stop`](Self::stop) was set. Relaxed: a flag polled in a loop, no data depends
    /// on it.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Asks the bridge to stop (what [`stopping`](Self::stopping) reads). Relaxed: the flag
    /// carries no data; the bridge sees it at its next loop turn.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Adds `n` to a counter. Relaxed: counters for display only.
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge. Relaxed: gauges for display only.
    fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    /// The counters now, each read on its own (Relaxed: counters for display).
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            forwarded: get(&self.forwarded),
            skipped: get(&self.skipped),
            in_flight: get(&self.in_flight),
            local_lag: get(&self.local_lag),
            remote_lag: get(&self.remote_lag),
            disconnects: get(&self.disconnects),
            reconnects: get(&self.reconnects),
            retries: get(&self.retries),
        }
    }
}

/// The counters of [`Stats`] at one moment; two of them give the forwarding rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// [`Stats::forwarded`].
    pub forwarded: u64,
    /// [`Stats::skipped`].
    pub skipped: u64,
    /// [`Stats::in_flight`].
    pub in_flight: u64,
    /// [`Stats::local_lag`].
    pub local_lag: u64,
    /// [`Stats::remote_lag`].
    pub remote_lag: u64,
    /// [`Stats::disconnects`].
    pub disconnects: u64,
    /// [`Stats::reconnects`].
    pub reconnects: u64,
    /// [`Stats::retries`].
    pub retries: u64,
}

impl Snapshot {
    /// One status line: the records forwarded per second since `earlier`, taken `elapsed`
    /// before this one, then every counter.
    pub fn line(&self, earlier: &Snapshot, elapsed: Duration) -> String {
        let rate = self.forwarded.saturating_sub(earlier.forwarded) as f64
            / elapsed.as_secs_f64().max(1e-3);
        format!(
            "forwarded/s {rate:.0}  forwarded {}  skipped {}  in-flight {}  local lag {}  remote lag {}  disconnects {}  reconnects {}  retries {}",
            self.forwarded,
            self.skipped,
            self.in_flight,
            self.local_lag,
            self.remote_lag,
            self.disconnects,
            self.reconnects,
            self.retries,
        )
    }
}

/// Connects to NATS, retrying the first connection `connect_attempts` times, and counts
/// disconnections in `stats`. The client reconnects by itself afterwards.
pub(crate) async fn connect(
    options: &NatsOptions,
    stats: &Arc<Stats>,
) -> Result<jetstream::Context> {
    let servers = options.servers.join(",");
    let addrs: Vec<async_nats::ServerAddr> = options
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e: std::io::Error| Error::Connect {
            servers: servers.clone(),
            reason: e.to_string(),
        })?;
    let mut attempt = 0usize;
    loop {
        attempt += 1;
        match connect_options(options, stats)
            .await?
            .connect(addrs.as_slice())
            .await
        {
            Ok(client) => return Ok(jetstream::new(client)),
            Err(e) if options.connect_attempts == 0 || attempt < options.connect_attempts => {
                crate::say!("cannot connect to NATS at {servers} ({e}); retrying in 1 s");
                Stats::add(&stats.retries, 1);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(Error::Connect {
                    servers,
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// The client's options: timeouts, credentials, TLS, and a callback counting disconnections
/// and reconnections.
async fn connect_options(
    options: &NatsOptions,
    stats: &Arc<Stats>,
) -> Result<async_nats::ConnectOptions> {
    let mut connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .require_tls(options.tls);
    if let Some(path) = &options.credentials {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|source| Error::Credentials {
                path: path.clone(),
                source,
            })?;
    }
    if let Some(path) = &options.root_certificates {
        connect = connect.add_root_certificates(path.clone());
    }
    let counters = Arc::clone(stats);
    // The client reports its first connection as `Connected` too; later ones are reconnects.
    // Relaxed: the callbacks of one client run one after another on the client's task.
    let connected_once = Arc::new(AtomicBool::new(false));
    Ok(connect.event_callback(move |event| {
        let counters = Arc::clone(&counters);
        let connected_once = Arc::clone(&connected_once);
        async move {
            match event {
                async_nats::Event::Disconnected => Stats::add(&counters.disconnects, 1),
                // `swap` says whether this client had connected before.
                async_nats::Event::Connected if connected_once.swap(true, Ordering::Relaxed) => {
                    Stats::add(&counters.reconnects, 1)
                }
                _ => {}
            }
        }
    }))
}

/// Gets the stream, creating it (with its replicas and de-duplication window) if it is
/// missing. Retried until `deadline` passes: a new cluster needs a moment to elect a leader.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    stream: &StreamOptions,
    deadline: Duration,
) -> Result<jetstream::stream::Stream> {
    let config = jetstream::stream::Config {
        name: stream.name.clone(),
        subjects: vec![format!("{}.>", stream.subject)],
        num_replicas: stream.replicas,
        duplicate_window: stream.duplicate_window,
        ..Default::default()
    };
    let start = tokio::time::Instant::now();
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() < deadline => {
                crate::say!("stream {} not ready ({e}); retrying", stream.name);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(Error::JetStream {
                    what: format!("stream {}", stream.name),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// The start of either direction: a runtime, a JetStream context connected to `nats`
/// (counting disconnects and reconnects in `stats`), and the stream `stream` (created if
/// missing; its creation is retried for up to a minute, while a new cluster elects a leader).
pub(crate) fn start(
    nats: &NatsOptions,
    stream: &StreamOptions,
    stats: &Arc<Stats>,
) -> Result<(
    tokio::runtime::Runtime,
    jetstream::Context,
    jetstream::stream::Stream,
)> {
    let runtime = runtime()?;
    let js = runtime.block_on(connect(nats, stats))?;
    let stream = runtime.block_on(ensure_stream(&js, stream, Duration::from_secs(60)))?;
    Ok((runtime, js, stream))
}

/// A multi-threaded runtime with one worker: the NATS side is I/O-bound.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Lower-case hex of `bytes` (header values are text; keys are bytes).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes [`hex`]; `None` for text that is not an even number of hex digits.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        let key = [0u8, 1, 0xab, 0xff, b'k'];
        assert_eq!(super::hex(&key), "0001abff6b");
        assert_eq!(super::unhex("0001abff6b").as_deref(), Some(&key[..]));
        assert_eq!(super::unhex("0"), None);
        assert_eq!(super::unhex("zz"), None);
    }
}
