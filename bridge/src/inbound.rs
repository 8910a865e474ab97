//! Bridge-in: a JetStream durable pull consumer → a local topic or queue file.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;

use crate::local::{Endpoint, Reader, Writer};
use crate::{Error, NatsOptions, Result, Stats, StreamOptions, HEADER_KEY, HEADER_PARTITION};

/// What [`run_in`] reads and where it publishes.
#[derive(Debug, Clone)]
pub struct InConfig {
    /// The local topic directory or queue file the messages go to (a queue stores values
    /// only, without keys).
    pub path: PathBuf,
    /// The durable consumer's name in the stream. The bridge's own consumer group in the
    /// local topic or queue is `shmq-bridge-in.<durable>`.
    pub durable: String,
    /// The NATS servers.
    pub nats: NatsOptions,
    /// The stream and subject prefix (the consumer filters on `<subject>.>`).
    pub stream: StreamOptions,
    /// Messages fetched at once, and the consumer's max-ack-pending.
    pub batch: usize,
    /// The consumer's ack wait: a message not acked within it is delivered again.
    pub ack_wait: Duration,
    /// The file keeping the stream sequence of the last message applied (written after each
    /// batch is durable locally, before the acks); `None`: `<name>.bridge-in.<durable>.seq`
    /// beside the topic directory or queue file.
    pub state: Option<PathBuf>,
}

/// A record published locally but not yet known to be acked in JetStream: after a crash,
/// a redelivered message equal to it is not published again.
struct Unconfirmed {
    /// Its offset in the partition.
    offset: u64,
    /// Its key.
    key: Option<Vec<u8>>,
    /// Its value.
    value: Vec<u8>,
}

/// The local side of bridge-in: the topic or queue, its producer and the bridge's own group.
struct Local {
    /// The topic or queue.
    endpoint: Endpoint,
    /// Publishes the messages.
    producer: Writer,
    /// The bridge's group: committed up to the records whose JetStream ack is confirmed.
    member: Reader,
    /// Whether a keyed message was stored without its key (a queue) and that was said.
    dropped_keys: bool,
    /// Per partition, the records the member has read past its committed offset.
    unconfirmed: Vec<VecDeque<Unconfirmed>>,
    /// Per partition, the highest offset the member has read.
    read: Vec<Option<u64>>,
}

/// Runs bridge-in until `stats.stop` is set or an error that retrying cannot cure.
pub fn run_in(config: &InConfig, stats: &Arc<Stats>) -> Result<()> {
    let shmq_err = |source| Error::Shmq {
        path: config.path.clone(),
        source,
    };
    let mut local = Local::open(&config.path, &config.durable, stats).map_err(shmq_err)?;
    let (runtime, _, stream) = crate::start(&config.nats, &config.stream, stats)?;
    let consumer_config = pull::Config {
        durable_name: Some(config.durable.clone()),
        filter_subject: format!("{}.>", config.stream.subject),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_ack_pending: config.batch as i64,
        ..Default::default()
    };
    let jet_err = |what: &str, e: &dyn std::fmt::Display| Error::JetStream {
        what: format!("{what} {}", config.durable),
        reason: e.to_string(),
    };
    let mut consumer = runtime
        .block_on(stream.get_or_create_consumer(&config.durable, consumer_config))
        .map_err(|e| jet_err("consumer", &e))?;
    // Messages delivered to a previous run and never acked are delivered again once their
    // ack wait expires, before new ones. Waiting for that keeps them in stream order.
    let info = runtime
        .block_on(consumer.info())
        .map_err(|e| jet_err("consumer info", &e))?;
    let (stale, floor) = (info.num_ack_pending, info.ack_floor.stream_sequence);
    if stale > 0 {
        crate::say!(
            "{stale} messages of a previous run await their redelivery; waiting {:?}",
            config.ack_wait
        );
        std::thread::sleep(config.ack_wait + Duration::from_secs(1));
    }

    // Stream sequence of the last message applied: redeliveries at or below it are acked
    // without a publish; a jump past `last_sequence + 1` is checked against the stream.
    let state = SequenceFile::new(config);
    let mut last_sequence = floor.max(state.read()?);
    // A fetch returns at once what is there (no prefetch, so no delivery waits in a buffer
    // while the bridge waits for a gap); an empty one is followed by a pause, 1 ms doubling
    // to 16 ms while the stream stays idle.
    let mut idle = Duration::ZERO;
    while !stats.stopping() {
        std::thread::sleep(idle);
        let fetched = runtime.block_on(async {
            let batch = consumer
                .fetch()
                .max_messages(config.batch)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            let messages: Vec<_> = batch.collect().await;
            messages
                .into_iter()
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        });
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                crate::say!("fetch from {} failed ({e}); retrying", config.durable);
                Stats::add(&stats.retries, 1);
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        if messages.is_empty() {
            Stats::set(&stats.remote_lag, 0);
            idle = (idle * 2).clamp(Duration::from_millis(1), Duration::from_millis(16));
            // The member heartbeats only inside its polls.
            local.read_one(Duration::ZERO).map_err(shmq_err)?;
            continue;
        }
        idle = Duration::ZERO;
        Stats::set(&stats.in_flight, messages.len() as u64);
        let mut applied: Vec<(u32, u64)> = Vec::with_capacity(messages.len());
        let mut gap = false;
        for (i, message) in messages.iter().enumerate() {
            let info = message.info().map_err(|e| Error::BadMessage {
                sequence: 0,
                reason: e.to_string(),
            })?;
            let sequence = info.stream_sequence;
            Stats::set(&stats.remote_lag, info.pending);
            if sequence <= last_sequence {
                Stats::add(&stats.skipped, 1);
                continue;
            }
            if sequence > last_sequence + 1
                && runtime.block_on(in_stream(
                    &stream,
                    last_sequence + 1,
                    &config.stream.subject,
                ))
            {
                // A delivery lost on its way (a connection that dropped) comes back after
                // its ack wait, before newer messages: leave this one and the rest unacked
                // (they come back too, in order) and wait. A gap of messages the stream no
                // longer has (or of other subjects) is passed over.
                crate::say!(
                    "stream sequence {sequence} after {last_sequence}: waiting {:?} for the redelivery of the gap",
                    config.ack_wait
                );
                messages.truncate(i);
                gap = true;
                break;
            }
            let (key, source_partition) = parse_headers(message, sequence)?;
            let (partition, offset, fresh) = local
                .apply(key.as_deref(), source_partition, &message.payload, stats)
                .map_err(shmq_err)?;
            if !fresh {
                Stats::add(&stats.skipped, 1);
            }
            applied.push((partition, offset));
            last_sequence = sequence;
        }
        local.make_durable(&applied).map_err(shmq_err)?;
        // Before the acks: a confirmed ack can still be lost when the consumer's leader
        // changes, and the message then comes back, also to a restarted bridge.
        state.write(last_sequence, local.durable())?;
        ack_all(&runtime, &messages, stats)?;
        local.confirm(&applied, stats).map_err(shmq_err)?;
        Stats::add(&stats.forwarded, applied.len() as u64);
        Stats::set(&stats.in_flight, 0);
        if gap {
            std::thread::sleep(config.ack_wait + Duration::from_secs(1));
        }
    }
    Ok(())
}

/// The file of the last applied stream sequence: 8 bytes, little-endian, replaced atomically.
struct SequenceFile {
    /// Its path.
    path: PathBuf,
}

impl SequenceFile {
    /// The configured path, or the default beside the topic or queue.
    fn new(config: &InConfig) -> SequenceFile {
        let path = config.state.clone().unwrap_or_else(|| {
            let name = config
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "topic".into());
            config
                .path
                .with_file_name(format!("{name}.bridge-in.{}.seq", config.durable))
        });
        SequenceFile { path }
    }

    /// The sequence stored, 0 if the file does not exist.
    fn read(&self) -> Result<u64> {
        match std::fs::read(&self.path) {
            Ok(bytes) => bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| Error::State {
                    path: self.path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} bytes, not 8", bytes.len()),
                    ),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(Error::State {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Stores `sequence` (a temporary file renamed over it, both synced when `durable`).
    fn write(&self, sequence: u64, durable: bool) -> Result<()> {
        use std::io::Write as _;
        let err = |source| Error::State {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("seq.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(&sequence.to_le_bytes()).map_err(err)?;
        if durable {
            file.sync_data().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if durable {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

/// Whether the stream holds message `sequence` on the bridge's subjects (`<subject>.…`): a
/// gap before it is a delivery to wait for. When the stream cannot be asked, it is assumed to.
async fn in_stream(stream: &jetstream::stream::Stream, sequence: u64, subject: &str) -> bool {
    match stream.get_raw_message(sequence).await {
        Ok(m) => m
            .subject
            .as_str()
            .strip_prefix(subject)
            .is_some_and(|rest| rest.starts_with('.')),
        Err(e) => e.kind() != jetstream::stream::LastRawMessageErrorKind::NoMessageFound,
    }
}

/// The key (hex-decoded) and source partition of a message from bridge-out.
fn parse_headers(message: &jetstream::Message, sequence: u64) -> Result<(Option<Vec<u8>>, u32)> {
    let bad = |reason: String| Error::BadMessage { sequence, reason };
    let headers = message.headers.as_ref();
    let key = match headers.and_then(|h| h.get(HEADER_KEY)) {
        Some(v) => {
            Some(crate::unhex(v.as_str()).ok_or_else(|| bad(format!("{HEADER_KEY} is not hex")))?)
        }
        None => None,
    };
    let partition = match headers.and_then(|h| h.get(HEADER_PARTITION)) {
        Some(v) => v
            .as_str()
            .parse()
            .map_err(|_| bad(format!("{HEADER_PARTITION} is not a number")))?,
        None => 0,
    };
    Ok((key, partition))
}

/// Acks every message and waits for the server's confirmation, retrying for up to a
/// minute (the client reconnects meanwhile); acks are idempotent.
fn ack_all(
    runtime: &tokio::runtime::Runtime,
    messages: &[jetstream::Message],
    stats: &Stats,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut left: Vec<&jetstream::Message> = messages.iter().collect();
    loop {
        let confirmed = runtime.block_on(futures::future::join_all(
            left.iter().map(|m| m.double_ack()).collect::<Vec<_>>(),
        ));
        let failed: Vec<&jetstream::Message> = left
            .iter()
            .zip(confirmed)
            .filter(|(_, r)| r.is_err())
            .map(|(m, _)| *m)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Stats::add(&stats.retries, 1);
        if Instant::now() > deadline {
            return Err(Error::JetStream {
                what: "ack".into(),
                reason: format!("{} acks unconfirmed for a minute", failed.len()),
            });
        }
        crate::say!("{} acks unconfirmed; retrying", failed.len());
        std::thread::sleep(Duration::from_millis(500));
        left = failed;
    }
}

impl Local {
    /// Opens the topic or queue, joins the bridge's group, waits until it holds every
    /// partition, and reads the records past its committed offsets (those whose ack may have
    /// been lost).
    fn open(path: &std::path::Path, durable: &str, stats: &Stats) -> shmq::Result<Local> {
        let endpoint = Endpoint::open(path)?;
        let producer = endpoint.writer()?;
        // A new group starts at the tail: what the topic or queue held before is not the
        // bridge's.
        let group = format!("shmq-bridge-in.{durable}");
        let member = endpoint.reader(&group, shmq::Start::Latest, Duration::from_secs(10))?;
        let n = endpoint.partitions().len();
        let mut local = Local {
            endpoint,
            producer,
            member,
            dropped_keys: false,
            unconfirmed: (0..n).map(|_| VecDeque::new()).collect(),
            read: vec![None; n],
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = local.read_one(Duration::from_millis(100))?;
            let holds_all = local.member.assignment().len() == n;
            if holds_all && !got {
                break;
            }
            if Instant::now() > deadline {
                return Err(shmq::Error::InvalidArgument {
                    argument: "durable",
                    why: format!(
                        "the group shmq-bridge-in.{durable} holds {} of {n} partitions after \
                         30 s: another bridge-in of this durable runs",
                        local.member.assignment().len()
                    ),
                });
            }
        }
        let waiting: usize = local.unconfirmed.iter().map(VecDeque::len).sum();
        if waiting > 0 {
            crate::say!("{waiting} local records await their JetStream ack");
        }
        Stats::set(&stats.local_lag, waiting as u64);
        Ok(local)
    }

    /// Polls one record into `unconfirmed`; whether there was one.
    fn read_one(&mut self, timeout: Duration) -> shmq::Result<bool> {
        match self.member.poll(timeout) {
            Ok(Some(m)) => {
                let p = m.partition as usize;
                if let (Some(q), Some(r)) = (self.unconfirmed.get_mut(p), self.read.get_mut(p)) {
                    q.push_back(Unconfirmed {
                        offset: m.offset,
                        key: m.key.map(<[u8]>::to_vec),
                        value: m.value.to_vec(),
                    });
                    *r = Some(m.offset);
                }
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(shmq::Error::Lagged { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Publishes a message unless a record equal to it awaits its confirmation (it was
    /// published before a crash): its partition, offset, and whether it was published now.
    fn apply(
        &mut self,
        key: Option<&[u8]>,
        source_partition: u32,
        value: &[u8],
        stats: &Stats,
    ) -> shmq::Result<(u32, u64, bool)> {
        if key.is_some() && !self.endpoint.keyed() && !self.dropped_keys {
            crate::say!("the messages carry keys; a queue file stores their values only");
            self.dropped_keys = true;
        }
        let (partition, key) = self.endpoint.route(key, source_partition);
        if let Some(q) = self.unconfirmed.get_mut(partition as usize) {
            if let Some(i) = q
                .iter()
                .position(|u| u.key.as_deref() == key && u.value == value)
            {
                // Records before it were confirmed before the crash, or are not the bridge's.
                let offset = q[i].offset;
                q.drain(..=i);
                return Ok((partition, offset, false));
            }
        }
        loop {
            match self.producer.publish(partition, key, value) {
                Ok(offset) => return Ok((partition, offset, true)),
                // Back-pressure from a full topic or queue under `Reject`: JetStream keeps the
                // rest.
                Err(shmq::Error::Full { .. } | shmq::Error::Timeout { .. })
                    if !stats.stopping() =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the records are meant to survive a machine crash (`Sync` or `Batch`).
    fn durable(&self) -> bool {
        self.endpoint
            .partitions()
            .first()
            .is_some_and(|q| !matches!(q.geometry().durability, shmq::Durability::None))
    }

    /// Under `Batch`, flushes the partitions written to (under `Sync` each publish was on disk
    /// when it returned; under `None` durability is the page cache's).
    fn make_durable(&self, applied: &[(u32, u64)]) -> shmq::Result<()> {
        let mut touched: Vec<u32> = applied.iter().map(|&(p, _)| p).collect();
        touched.sort_unstable();
        touched.dedup();
        for p in touched {
            if let Some(q) = self.endpoint.partitions().get(p as usize) {
                if matches!(q.geometry().durability, shmq::Durability::Batch { .. }) {
                    q.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Commits the bridge's group over the records whose ack is confirmed, reading them back
    /// first (a group commits only what it has read).
    fn confirm(&mut self, applied: &[(u32, u64)], stats: &Stats) -> shmq::Result<()> {
        let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
        for &(p, o) in applied {
            let e = highest.entry(p).or_insert(o);
            *e = (*e).max(o);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (&p, &o) in &highest {
            while self.read.get(p as usize).copied().flatten() < Some(o) {
                if Instant::now() > deadline {
                    return Err(shmq::Error::InvalidArgument {
                        argument: "offset",
                        why: format!(
                            "partition {p}: offset {o} published but not readable after 30 s"
                        ),
                    });
                }
                self.read_one(Duration::from_millis(100))?;
            }
            self.member.commit(p, o)?;
            if let Some(q) = self.unconfirmed.get_mut(p as usize) {
                while q.front().is_some_and(|u| u.offset <= o) {
                    q.pop_front();
                }
            }
        }
        let lag: usize = self.unconfirmed.iter().map(VecDeque::len).sum();
        Stats::set(&stats.local_lag, lag as u64);
        Ok(())
    }
}
