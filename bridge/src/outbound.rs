//! Bridge-out: a consumer group of a local topic or queue file → a JetStream stream.

use std::collections::{HashMap, VecDeque};
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{Publish, PublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::local::{Endpoint, Read, Reader};
use crate::{
    Error, NatsOptions, Result, Stats, StreamOptions, HEADER_KEY, HEADER_OFFSET, HEADER_PARTITION,
    HEADER_TIMESTAMP,
};

/// What [`run_out`] reads and where it publishes.
#[derive(Debug, Clone)]
pub struct OutConfig {
    /// The local topic directory or queue file (a queue is partition 0, without keys).
    pub path: PathBuf,
    /// The consumer group the bridge reads as (created if missing). Its committed offsets
    /// are what has been PubAcked.
    pub group: String,
    /// The identity of the topic or queue in `Nats-Msg-Id` (`<source>/<partition>/<offset>`).
    /// It must differ between every topic or queue bridged into one stream; `None`: `<host
    /// name>:<canonical path>`.
    pub source: Option<String>,
    /// The NATS servers.
    pub nats: NatsOptions,
    /// The stream and subject prefix.
    pub stream: StreamOptions,
    /// At most this many publishes await their PubAck at once.
    pub max_in_flight: usize,
}

/// One record read from the topic or queue, on its way to JetStream.
#[derive(Debug, Clone)]
struct Record {
    /// Partition in the local topic (0 for a queue).
    partition: u32,
    /// Offset in that partition.
    offset: u64,
    /// The record's subject and headers, built once.
    subject: String,
    /// The headers (partition, offset, key, timestamp).
    headers: HeaderMap,
    /// The `Nats-Msg-Id`.
    id: String,
    /// The value.
    value: Bytes,
}

/// A PubAck on its way.
type AckFuture =
    Pin<Box<dyn Future<Output = std::result::Result<PublishAck, PublishError>> + Send>>;

/// How long a stopping bridge-out waits for the PubAcks in flight before it leaves them
/// uncommitted (a restarted bridge re-sends them, and the stream drops the copies).
const DRAIN: Duration = Duration::from_secs(10);

/// Runs bridge-out until `stats.stop` is set or an error that retrying cannot cure (the
/// topic or queue fails, or the first connection fails `connect_attempts` times). Once
/// stopped, it waits up to 10 s for the PubAcks in flight and commits what they cover.
pub fn run_out(config: &OutConfig, stats: &Arc<Stats>) -> Result<()> {
    let shmq_err = |source| Error::Shmq {
        path: config.path.clone(),
        source,
    };
    let local = Endpoint::open(&config.path).map_err(shmq_err)?;
    let source = match &config.source {
        Some(s) => s.clone(),
        None => default_source(&config.path),
    };
    let (runtime, js, stream) = crate::start(&config.nats, &config.stream, stats)?;
    // An existing stream keeps its own window: say so when it is shorter than asked, since
    // a bridge down for longer than it re-sends records as new ones.
    let window = stream.cached_info().config.duplicate_window;
    if window < config.stream.duplicate_window {
        crate::say!(
            "stream {} has a duplicate window of {window:?}, not {:?}: a bridge-out down for longer than {window:?} stores its uncommitted records again",
            config.stream.name,
            config.stream.duplicate_window
        );
    }

    let max_in_flight = config.max_in_flight.max(1);
    let (records_tx, records_rx) = mpsc::channel::<Record>(max_in_flight);
    let (commits_tx, commits_rx) = std_mpsc::channel::<(u32, u64)>();
    let nats_side = runtime.spawn(publish_loop(
        js,
        records_rx,
        commits_tx,
        max_in_flight,
        Arc::clone(stats),
    ));
    let read = read_loop(&local, config, &source, records_tx, &commits_rx, stats);
    let _ = runtime.block_on(nats_side);
    read.map_err(shmq_err)
}

/// `<host name>:<canonical path>`, the default identity of a topic or queue.
fn default_source(local: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let path = std::fs::canonicalize(local).unwrap_or_else(|_| local.to_path_buf());
    format!("{host}:{}", path.display())
}

/// The shmq thread: polls the group, hands records to the publish loop (waiting while the
/// bounded channel is full) and applies the commits the publish loop sends back. When asked
/// to stop, it closes the channel and commits until the publish loop has every PubAck in.
fn read_loop(
    local: &Endpoint,
    config: &OutConfig,
    source: &str,
    records: mpsc::Sender<Record>,
    commits: &std_mpsc::Receiver<(u32, u64)>,
    stats: &Stats,
) -> shmq::Result<()> {
    let session = shmq::MemberOptions::default().session_timeout;
    let mut member = local.reader(&config.group, shmq::Start::Earliest, session)?;
    forward(local, &mut member, config, source, &records, commits, stats)?;
    drop(records);
    // The publish loop holds the sender of the commits until its last PubAck.
    while let Ok((p, o)) = commits.recv() {
        match member.commit(p, o) {
            Ok(()) | Err(shmq::Error::NotHeld { .. } | shmq::Error::TakenOver { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The body of [`read_loop`], until stopped or the publish loop is gone.
fn forward(
    local: &Endpoint,
    member: &mut Reader,
    config: &OutConfig,
    source: &str,
    records: &mpsc::Sender<Record>,
    commits: &std_mpsc::Receiver<(u32, u64)>,
    stats: &Stats,
) -> shmq::Result<()> {
    let mut pending: Option<Record> = None;
    while !stats.stopping() {
        apply_commits(local, member, commits, None, stats)?;
        if let Some(record) = pending.take() {
            match records.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(record)) => {
                    // Back-pressure: wait for a PubAck (it frees a place) rather than buffer.
                    pending = Some(record);
                    apply_commits(
                        local,
                        member,
                        commits,
                        Some(Duration::from_millis(50)),
                        stats,
                    )?;
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
        match member.poll(Duration::from_millis(100)) {
            Ok(Some(m)) => pending = Some(record_of(&config.stream.subject, source, &m)),
            Ok(None) => {}
            // Records a non-gating group lost are gone from the ring: nothing to forward.
            Err(shmq::Error::Lagged { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Builds the JetStream message of a local record.
fn record_of(subject: &str, source: &str, m: &Read<'_>) -> Record {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_PARTITION, m.partition.to_string().as_str());
    headers.insert(HEADER_OFFSET, m.offset.to_string().as_str());
    headers.insert(HEADER_TIMESTAMP, m.timestamp_ns.to_string().as_str());
    if let Some(key) = m.key {
        headers.insert(HEADER_KEY, crate::hex(key).as_str());
    }
    Record {
        partition: m.partition,
        offset: m.offset,
        subject: format!("{subject}.{}", m.partition),
        headers,
        id: format!("{source}/{}/{}", m.partition, m.offset),
        value: Bytes::copy_from_slice(m.value),
    }
}

/// Commits the highest PubAcked offset of each partition, waiting up to `wait` for the first.
/// A partition that moved to another member (`NotHeld`, `TakenOver`) is skipped: its new
/// holder re-sends from the committed offset, and the stream drops the copies.
fn apply_commits(
    local: &Endpoint,
    member: &mut Reader,
    commits: &std_mpsc::Receiver<(u32, u64)>,
    wait: Option<Duration>,
    stats: &Stats,
) -> shmq::Result<()> {
    let mut highest: HashMap<u32, u64> = HashMap::new();
    if let Some(wait) = wait {
        if let Ok((p, o)) = commits.recv_timeout(wait) {
            highest.insert(p, o);
        }
    }
    while let Ok((p, o)) = commits.try_recv() {
        let e = highest.entry(p).or_insert(o);
        *e = (*e).max(o);
    }
    for (&p, &o) in &highest {
        match member.commit(p, o) {
            Ok(()) => {}
            Err(shmq::Error::NotHeld { .. } | shmq::Error::TakenOver { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let lag: u64 = member
        .assignment()
        .iter()
        .filter_map(|&p| {
            let tail = local.partitions().get(p as usize)?.tail_offset();
            Some(tail.saturating_sub(member.committed(p)?))
        })
        .sum();
    Stats::set(&stats.local_lag, lag);
    Ok(())
}

/// Publishes one record; the PubAck comes later.
async fn publish(
    js: &async_nats::jetstream::Context,
    record: &Record,
) -> std::result::Result<AckFuture, PublishError> {
    let message = Publish::build()
        .headers(record.headers.clone())
        .message_id(&record.id)
        .payload(record.value.clone());
    let ack = js.send_publish(record.subject.clone(), message).await?;
    Ok(Box::pin(ack.into_future()))
}

/// The NATS side: keeps up to `max_in_flight` publishes awaiting their PubAck, in order; a
/// PubAck commits its record. On a failure it waits, then re-sends every record not yet
/// acknowledged, in order (the stream drops those it already has). Once the records channel
/// is closed (a stop), it returns when every PubAck is in or [`DRAIN`] has passed.
async fn publish_loop(
    js: async_nats::jetstream::Context,
    mut records: mpsc::Receiver<Record>,
    commits: std_mpsc::Sender<(u32, u64)>,
    max_in_flight: usize,
    stats: Arc<Stats>,
) {
    let mut in_flight: VecDeque<(Record, Option<AckFuture>)> = VecDeque::new();
    let mut open = true;
    // When the records channel closed: the drain's deadline.
    let mut drain = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        // A stop closes the channel; records still in it were never published, and stay
        // uncommitted like those in flight. Checked here too, not only by `recv`, which is
        // not polled while `in_flight` is full.
        if open && records.is_closed() {
            open = false;
            drain = tokio::time::Instant::now() + DRAIN;
        }
        Stats::set(&stats.in_flight, in_flight.len() as u64);
        let unsent = in_flight.iter().filter(|(_, f)| f.is_none()).count();
        Stats::set(&stats.remote_lag, unsent as u64);
        if !open && in_flight.is_empty() {
            return;
        }
        if !open && tokio::time::Instant::now() >= drain {
            crate::say!(
                "stopping with {} records not acknowledged; they stay uncommitted and a restarted bridge re-sends them",
                in_flight.len()
            );
            return;
        }
        let room = open && in_flight.len() < max_in_flight;
        let front_ready = in_flight.front().is_some_and(|(_, f)| f.is_some());
        tokio::select! {
            biased;
            ack = async {
                match in_flight.front_mut() {
                    Some((_, Some(f))) => f.await,
                    _ => std::future::pending().await,
                }
            }, if front_ready => {
                match ack {
                    Ok(_) => {
                        let Some((record, _)) = in_flight.pop_front() else { continue };
                        Stats::add(&stats.forwarded, 1);
                        backoff = Duration::from_millis(100);
                        if commits.send((record.partition, record.offset)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        crate::say!("publish failed ({e}); re-sending {} records", in_flight.len());
                        Stats::add(&stats.retries, 1);
                        for (_, f) in in_flight.iter_mut() {
                            *f = None;
                        }
                        Stats::set(&stats.remote_lag, in_flight.len() as u64);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        resend(&js, &mut in_flight, &stats).await;
                    }
                }
            }
            record = records.recv(), if room => {
                match record {
                    Some(record) => {
                        in_flight.push_back((record, None));
                        resend(&js, &mut in_flight, &stats).await;
                    }
                    None => {
                        open = false;
                        drain = tokio::time::Instant::now() + DRAIN;
                    }
                }
            }
            // Neither can proceed: a record without its publish (the last attempt failed).
            _ = tokio::time::sleep(backoff), if !front_ready && !in_flight.is_empty() => {
                resend(&js, &mut in_flight, &stats).await;
            }
            // Stopping: the drain's deadline ends the wait for PubAcks (checked above).
            _ = tokio::time::sleep_until(drain), if !open => {}
        }
    }
}

/// Publishes, in order, the records of `in_flight` that have no PubAck on its way; stops at
/// the first that fails to go out (it is tried again later).
async fn resend(
    js: &async_nats::jetstream::Context,
    in_flight: &mut VecDeque<(Record, Option<AckFuture>)>,
    stats: &Stats,
) {
    for (record, ack) in in_flight.iter_mut() {
        if ack.is_some() {
            continue;
        }
        match publish(js, record).await {
            Ok(f) => *ack = Some(f),
            Err(e) => {
                crate::say!("publish failed ({e}); retrying");
                Stats::add(&stats.retries, 1);
                return;
            }
        }
    }
}
