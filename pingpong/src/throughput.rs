//! Cross-process throughput of 64-byte messages: producer processes publish, this process
//! consumes, for shmq and for a minimal single-producer ring (the floor). The harness behind
//! the cross-process cases of `benches/throughput.rs` and `shmq bench --throughput`.
//!
//! A [`Flow`] starts its producers as child processes (this binary again, as for a
//! [`Pinger`](crate::Pinger)) and consumes in the calling process. Each [`Flow::run`] tells
//! every producer over its stdin how many records to publish, then consumes them all, checking
//! each record's producer and sequence number. The clock starts when the first record arrives
//! (the producers' wake-up from their stdin read is not throughput) and stops after the last
//! one (and, for shmq, its commit). Between runs the producers sleep in that read, so an idle
//! flow takes no CPU while another case is measured.
//!
//! The batch cases (`shmq_1p_b16`, `shmq_1p_b64`) are the one-producer case with both sides
//! moving records in batches: the producer publishes [`Case::batch`] records per
//! `Producer::publish_batch` call, the consumer takes up to as many per `Consumer::poll_batch`
//! call and commits at most once per call.
//!
//! The work cases (`ack_1w`, `ack_2w`, `ack_4w`, [`Case::WORK`]) move records from one
//! producer process to 1, 2 or 4 worker processes of one work group, each of which takes a
//! record with `Worker::poll` and acks it (`Worker::ack`) before the next; their gating
//! counterpart (`commit_1c`) has one consumer process that commits every record
//! (`Consumer::poll`, then `commit`). The same producer child as `shmq_1p_1g` publishes, and
//! this process only watches: its clock starts when the run's first record is published and
//! stops when the group's committed cursor (a work group's base: every record below it acked)
//! has passed the last, each seen at a look every [`LOOK_EVERY`]. After each run of a work
//! case it checks the group's counters: every record delivered exactly once and acked.
//!
//! The floor's ring (`floor_ring`) is a file mapping with a tail word at byte 0, a head word at
//! byte 128 (their own cache-line pair each), and [`SLOTS`] records of [`MSG`] bytes from byte
//! 4096. The producer writes a record, then publishes it with a Release store of the tail (one
//! per record); it reloads the head (Acquire) only when the ring looks full, and spins until a
//! slot is free. The consumer reloads the tail (Acquire) only when it has caught up with the
//! last value it saw, copies the record out, and gives its slot back with a Release store of
//! the head (one per record). Each side spins for the other, then yields its CPU between
//! looks (on a loaded machine the two may share one CPU); both waits are bounded by
//! [`REPLY_TIMEOUT`].

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::child::{new_dir, pair_dir, spawn_ready};
use crate::shared::Patience;
use crate::{median, queue_err, Error, MSG, REPLY_TIMEOUT};

/// Records in the floor's ring.
pub const SLOTS: u64 = 4096;
/// Ring bytes of the shmq queue: 512 KiB, 5,461 records of 64 bytes (a 32-byte header each);
/// the smallest power of two (the ring's rule) with room for [`SLOTS`] of them.
pub const SHMQ_RING: u64 = 512 << 10;
/// The shmq consumer commits every this many records (and after the last one of a run).
pub const COMMIT_EVERY: u64 = 256;
/// The largest [`Case::batch`].
const MAX_BATCH: usize = 64;
/// Producers of [`Case::Shmq4p`].
const FAN_IN: usize = 4;
/// Environment variable giving a producer child its index (byte 8 of its records).
const PRODUCER_ENV: &str = "SHMQ_BENCH_PRODUCER";
/// The floor's ring file in the flow's directory.
const FLOOR_FILE: &str = "ring";
/// The shmq queue file in the flow's directory.
const SHMQ_FILE: &str = "tp.q";
/// The consumer group of the shmq cases.
const GROUP: &str = "tp";
/// Byte offset of the floor's tail word (records published).
const TAIL: usize = 0;
/// Byte offset of the floor's head word (records consumed): 128 bytes after the tail, so the
/// two words never share a cache line or an adjacent-line prefetch pair.
const HEAD: usize = 128;
/// Byte offset of the floor's first record slot.
const SLOTS_AT: usize = 4096;
/// Length of the floor's ring file.
const RING_FILE_LEN: usize = SLOTS_AT + SLOTS as usize * MSG;
/// Looks at the other side's word a floor side spins for before it starts yielding its CPU
/// (tens of microseconds; a cache line moves between cores in about 0.1 µs).
const FLOOR_SPINS: u32 = 1024;
/// The bytes of a record after its sequence number and producer index.
const FILL: u8 = 0xA5;
/// The child role of [`Case::Commit1c`]'s consumer process.
const COMMIT_READER: &str = "shmq_commit_reader";
/// The child role of the work cases' worker processes.
const ACK_WORKER: &str = "shmq_ack_worker";
/// The work cases' window: 4,096 records dispatched and not settled at most (the ring holds
/// 5,461, so the window, not the ring, bounds what is in flight).
const WORK_WINDOW: u32 = 4096;
/// The work cases' visibility timeout: far longer than any run, so that no record is delivered
/// twice (each run checks it).
const VISIBILITY: Duration = Duration::from_secs(600);
/// The work cases (and their gating case) move this fraction of the messages a measurement
/// gives each case: they run at a fifth to a tenth of the other shmq cases' rate, and the
/// quick pass CI runs must stay short.
const WATCHED_SHARE: u64 = 8;
/// How long this process sleeps between two looks at the queue in the cases it only watches:
/// the resolution of their clock (runs last tens of milliseconds or more).
const LOOK_EVERY: Duration = Duration::from_micros(100);

/// One cross-process throughput case.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Case {
    /// A minimal single-producer ring in a shared file mapping: the floor.
    FloorRing,
    /// shmq: one producer process, one consumer process in one gating group.
    Shmq1p,
    /// shmq as [`Case::Shmq1p`], its producer on the coarse clock
    /// ([`shmq::Timestamps::Coarse`]).
    ShmqCoarse,
    /// shmq: four producer processes, one consumer process in one gating group.
    Shmq4p,
    /// shmq as [`Case::Shmq1p`], in batches of 16 records on both sides.
    ShmqBatch16,
    /// shmq as [`Case::Shmq1p`], in batches of 64 records on both sides.
    ShmqBatch64,
    /// shmq: one producer process, one consumer process in a gating group that commits every
    /// record; this process watches (the work cases' like-for-like gating case).
    Commit1c,
    /// shmq: one producer process, one worker process of a work group acking every record.
    Ack1w,
    /// The same with two worker processes.
    Ack2w,
    /// The same with four worker processes.
    Ack4w,
}

impl Case {
    /// The cases that this process consumes, the floor first (what `shmq bench --throughput`
    /// measures).
    pub const ALL: [Case; 6] = [
        Case::FloorRing,
        Case::Shmq1p,
        Case::ShmqCoarse,
        Case::Shmq4p,
        Case::ShmqBatch16,
        Case::ShmqBatch64,
    ];

    /// The work-group cases and their gating case: consumer processes settle every record
    /// while this process only watches the group's committed cursor.
    pub const WORK: [Case; 4] = [Case::Commit1c, Case::Ack1w, Case::Ack2w, Case::Ack4w];

    /// [`Case::ALL`], then [`Case::WORK`].
    pub fn every() -> impl Iterator<Item = Case> {
        Case::ALL.into_iter().chain(Case::WORK)
    }

    /// Short name, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Case::FloorRing => "floor_ring",
            Case::Shmq1p => "shmq_1p_1g",
            Case::ShmqCoarse => "shmq_1p_coarse",
            Case::Shmq4p => "shmq_4p_1g",
            Case::ShmqBatch16 => "shmq_1p_b16",
            Case::ShmqBatch64 => "shmq_1p_b64",
            Case::Commit1c => "commit_1c",
            Case::Ack1w => "ack_1w",
            Case::Ack2w => "ack_2w",
            Case::Ack4w => "ack_4w",
        }
    }

    /// Records per publish and most records per poll: 1 but for the batch cases.
    pub fn batch(self) -> usize {
        match self {
            Case::ShmqBatch16 => 16,
            Case::ShmqBatch64 => MAX_BATCH,
            _ => 1,
        }
    }

    /// The case called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Case> {
        Case::every().find(|c| c.name() == name)
    }

    /// Producer processes.
    pub fn producers(self) -> usize {
        match self {
            Case::Shmq4p => FAN_IN,
            _ => 1,
        }
    }

    /// Consumer processes: the worker processes of the work cases, the committing consumer
    /// of [`Case::Commit1c`], none where this process consumes.
    pub fn readers(self) -> usize {
        match self {
            Case::Commit1c | Case::Ack1w => 1,
            Case::Ack2w => 2,
            Case::Ack4w => 4,
            _ => 0,
        }
    }

    /// What the case moves through, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Case::FloorRing => {
                "a minimal single-producer ring: 4,096 slots of 64 B in a shared file mapping, \
                 one Release store of the tail per record, both sides spin, then yield"
            }
            Case::Shmq1p => {
                "shmq, 512 KiB ring, checksums on: 1 producer process, 1 consumer process \
                 (gating group, blocking poll, commit every 256)"
            }
            Case::ShmqCoarse => {
                "shmq_1p_1g with the producer's records stamped on the coarse clock \
                 (CLOCK_REALTIME_COARSE)"
            }
            Case::Shmq4p => {
                "the same queue with 4 producer processes publishing at once into the one group"
            }
            Case::ShmqBatch16 => {
                "shmq_1p_1g in batches of 16: publish_batch, poll_batch, a commit per poll at most"
            }
            Case::ShmqBatch64 => "the same in batches of 64",
            Case::Commit1c => {
                "shmq_1p_1g's queue and producer, the gating group read by a consumer process \
                 that commits every record (blocking poll); this process only watches"
            }
            Case::Ack1w => {
                "the same producer, 1 worker process of a work group (window 4,096, \
                 visibility 10 min): Worker::poll then ack for every record"
            }
            Case::Ack2w => "the same with 2 worker processes",
            Case::Ack4w => "the same with 4 worker processes",
        }
    }

    /// The messages this case moves when a measurement gives each case `per_case`: all of
    /// them, or an eighth for the cases this process only watches ([`Case::WORK`]).
    pub fn messages(self, per_case: u64) -> u64 {
        if self.readers() > 0 {
            per_case / WATCHED_SHARE
        } else {
            per_case
        }
    }

    /// The child role of this case's producers.
    fn role(self) -> &'static str {
        match self {
            Case::FloorRing => "floor_ring_producer",
            Case::ShmqCoarse => "shmq_coarse_producer",
            Case::ShmqBatch16 => "shmq_batch16_producer",
            Case::ShmqBatch64 => "shmq_batch64_producer",
            // The work cases have shmq_1p_1g's producer.
            _ => "shmq_producer",
        }
    }

    /// The child role of this case's consumer processes, if it has any.
    fn reader_role(self) -> Option<&'static str> {
        match self {
            Case::Commit1c => Some(COMMIT_READER),
            Case::Ack1w | Case::Ack2w | Case::Ack4w => Some(ACK_WORKER),
            _ => None,
        }
    }
}

/// The ratios a report prints under its table: (numerator, denominator), where both ran.
pub const RATIOS: [(Case, Case); 11] = [
    (Case::Shmq1p, Case::FloorRing),
    (Case::ShmqCoarse, Case::FloorRing),
    (Case::ShmqCoarse, Case::Shmq1p),
    (Case::Shmq4p, Case::FloorRing),
    (Case::Shmq4p, Case::Shmq1p),
    (Case::ShmqBatch16, Case::FloorRing),
    (Case::ShmqBatch64, Case::FloorRing),
    (Case::Commit1c, Case::Shmq1p),
    (Case::Ack1w, Case::Commit1c),
    (Case::Ack2w, Case::Ack1w),
    (Case::Ack4w, Case::Ack1w),
];

/// Writes `seq` and `producer` into the head of record `rec`.
fn stamp(rec: &mut [u8; MSG], seq: u64, producer: u8) {
    rec[..8].copy_from_slice(&seq.to_le_bytes());
    rec[8] = producer;
}

/// The sequence number and producer index of a record.
fn parse(rec: &[u8]) -> (u64, u8) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&rec[..8]);
    (u64::from_le_bytes(seq), rec[8])
}

/// The floor's ring file, mapped.
struct FloorRing {
    /// The mapping, at least `RING_FILE_LEN` bytes (checked when it is made).
    map: memmap2::MmapRaw,
}

impl FloorRing {
    /// Creates the ring file `path` (zeroed: both words 0) and maps it.
    fn create(path: &Path) -> Result<FloorRing, Error> {
        let io = |op| {
            move |source| Error::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io("create"))?;
        f.set_len(RING_FILE_LEN as u64).map_err(io("set_len"))?;
        FloorRing::map(path, &f)
    }

    /// Maps the existing ring file `path`.
    fn open(path: &Path) -> Result<FloorRing, Error> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                op: "open",
                source,
            })?;
        FloorRing::map(path, &f)
    }

    /// Maps `f` (the file `path`), which must hold the whole ring.
    fn map(path: &Path, f: &std::fs::File) -> Result<FloorRing, Error> {
        let io = |op| {
            move |source| Error::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        let map = memmap2::MmapRaw::map_raw(f).map_err(io("mmap"))?;
        if map.len() < RING_FILE_LEN {
            return Err(io("check the length")(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} bytes, a ring needs {RING_FILE_LEN}", map.len()),
            )));
        }
        Ok(FloorRing { map })
    }

    /// The word at byte `at` ([`TAIL`] or [`HEAD`]).
    fn word(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at == TAIL || at == HEAD);
        // SAFETY: `at` is TAIL or HEAD, a multiple of 8 inside the first page; the mapping is
        // page-aligned and at least RING_FILE_LEN long (checked in `map`) and lives as long as
        // `self`; AtomicU64 has the layout of u64, and both processes touch these two words
        // only through atomics.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(at).cast()) }
    }

    /// The slot of record `seq`: [`MSG`] bytes inside the mapping.
    fn slot(&self, seq: u64) -> *mut u8 {
        let at = SLOTS_AT + (seq % SLOTS) as usize * MSG;
        // SAFETY: `at + MSG <= RING_FILE_LEN <= map.len()` (checked in `map`): the pointer
        // stays inside the mapping.
        unsafe { self.map.as_mut_ptr().add(at) }
    }

    /// Checks that `tail - head` (records in the ring, as the words say) is a possible count;
    /// a damaged word must fail, not send a side past the records it may touch.
    fn in_ring(&self, head: u64, tail: u64) -> Result<u64, Error> {
        match tail.checked_sub(head) {
            Some(n) if n <= SLOTS => Ok(n),
            _ => Err(Error::Transport {
                mode: Case::FloorRing.name(),
                what: format!("ring words out of range: head {head}, tail {tail}"),
            }),
        }
    }
}

/// A floor side's wait for the other side: spins, then yields its CPU on every further look,
/// so that two spinners sharing one CPU (a loaded machine) hand it over instead of each
/// burning its time slice; fails after [`REPLY_TIMEOUT`].
struct FloorWait {
    /// Looks so far.
    looks: u32,
    /// The bound on the whole wait.
    patience: Patience,
}

impl FloorWait {
    /// A fresh wait.
    #[inline]
    fn new() -> FloorWait {
        FloorWait {
            looks: 0,
            patience: Patience::new(),
        }
    }

    /// One more look at the other side's word failed: spin or yield before the next.
    #[inline]
    fn step(&mut self) -> Result<(), Error> {
        self.looks = self.looks.saturating_add(1);
        if self.looks > FLOOR_SPINS {
            std::thread::yield_now();
        }
        self.patience.spin_named(Case::FloorRing.name())
    }
}

/// A child of a flow: a producer publishing the counts its parent sends over stdin until stdin
/// closes, or a consumer or worker settling every record until then.
pub(crate) fn child(role: &str) -> Option<Result<(), Error>> {
    match role {
        COMMIT_READER => return Some(consume_committing()),
        ACK_WORKER => return Some(work_acking()),
        _ => {}
    }
    let case = Case::every().find(|c| c.role() == role)?;
    Some(produce(case))
}

/// The options of every shmq flow's queue.
fn queue_options() -> shmq::Options {
    shmq::Options {
        capacity: SHMQ_RING,
        max_message: MSG as u32,
        checksums: true,
        ..shmq::Options::default()
    }
}

/// The work cases' group options: [`WORK_WINDOW`], [`VISIBILITY`].
fn work_options() -> shmq::WorkOptions {
    shmq::WorkOptions {
        visibility_timeout: VISIBILITY,
        window: WORK_WINDOW,
        ..shmq::WorkOptions::default()
    }
}

/// A consumer or worker child's queue (`role` names it in errors), and its path.
fn open_reader(role: &'static str) -> Result<(shmq::Queue, PathBuf), Error> {
    let path = pair_dir(role)?.join(SHMQ_FILE);
    let queue = shmq::Queue::open(&path).map_err(queue_err(&path))?;
    Ok((queue, path))
}

/// Tells the parent this child is ready, then has a thread exit the process when the parent
/// closes its stdin (or dies): the main thread stays in its poll loop.
fn ready_until_stdin_closes() -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(b"R")
        .and_then(|()| out.flush())
        .map_err(|source| Error::Io {
            path: "stdout".into(),
            op: "signal ready",
            source,
        })?;
    std::thread::spawn(|| {
        let mut b = [0u8; 1];
        let _ = std::io::stdin().read(&mut b);
        std::process::exit(0);
    });
    Ok(())
}

/// [`Case::Commit1c`]'s consumer process: polls the gating group, checks each record's
/// sequence number and commits it, until its stdin closes. Between runs it sleeps in `poll`.
fn consume_committing() -> Result<(), Error> {
    let mode = Case::Commit1c.name();
    let (queue, path) = open_reader(COMMIT_READER)?;
    let mut rx = queue.consumer(GROUP).map_err(queue_err(&path))?;
    ready_until_stdin_closes()?;
    let mut next = [0u64];
    loop {
        let Some(m) = rx.poll(Some(REPLY_TIMEOUT)).map_err(queue_err(&path))? else {
            continue;
        };
        check_record(mode, &m, &mut next)?;
        let off = m.offset;
        rx.commit(off).map_err(queue_err(&path))?;
    }
}

/// A work case's worker process: polls the work group, checks each record (one worker's
/// first deliveries come in offset order, so its sequence numbers rise) and acks it, until
/// its stdin closes. Between runs it sleeps in `poll`.
fn work_acking() -> Result<(), Error> {
    let (queue, path) = open_reader(ACK_WORKER)?;
    let mut worker = queue
        .worker(GROUP, &work_options())
        .map_err(queue_err(&path))?;
    ready_until_stdin_closes()?;
    let mut last: Option<u64> = None;
    loop {
        let Some(job) = worker.poll(Some(REPLY_TIMEOUT)).map_err(queue_err(&path))? else {
            continue;
        };
        let (seq, producer) = record_of(ACK_WORKER, job.offset, job.payload)?;
        if producer != 0 || last.is_some_and(|l| seq <= l) {
            return Err(Error::Transport {
                mode: ACK_WORKER,
                what: format!(
                    "record at offset {} (delivery {}, lease until {} ms) from producer \
                     {producer} carries sequence number {seq}, after {last:?}",
                    job.offset,
                    job.deliveries,
                    job.ticket.deadline_ms()
                ),
            });
        }
        last = Some(seq);
        let ticket = job.ticket;
        worker.ack(ticket).map_err(queue_err(&path))?;
    }
}

/// A producer's end of the flow.
// One per producer process, on its stack: boxing the producer to even out the variants would
// only add a pointer to follow on every measured publish.
#[allow(clippy::large_enum_variant)]
enum Source {
    /// The floor's ring, and the tail (this side's word) and head as last seen.
    Floor {
        ring: FloorRing,
        tail: u64,
        head: u64,
    },
    /// A shmq producer of the flow's queue, publishing `batch` records per call.
    Shmq {
        tx: shmq::Producer,
        path: PathBuf,
        seq: u64,
        batch: usize,
    },
}

/// The producer child of `case`: opens its end, says it is ready, then publishes each count.
fn produce(case: Case) -> Result<(), Error> {
    let name = case.role();
    let dir = pair_dir(name)?;
    let index: u8 = std::env::var(PRODUCER_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(Error::Transport {
            mode: name,
            what: format!("{PRODUCER_ENV} is not set to a producer index"),
        })?;
    let mut source = match case {
        Case::FloorRing => Source::Floor {
            ring: FloorRing::open(&dir.join(FLOOR_FILE))?,
            tail: 0,
            head: 0,
        },
        _ => {
            let path = dir.join(SHMQ_FILE);
            let queue = shmq::Queue::open(&path).map_err(queue_err(&path))?;
            let mut tx = queue.producer().map_err(queue_err(&path))?;
            // Bounded: a consumer gone for good fails the publish instead of hanging it.
            tx.set_timeout(Some(REPLY_TIMEOUT));
            if case == Case::ShmqCoarse {
                tx.set_timestamps(shmq::Timestamps::Coarse);
            }
            Source::Shmq {
                tx,
                path,
                seq: 0,
                batch: case.batch(),
            }
        }
    };
    let io = |op| {
        move |source| Error::Io {
            path: "stdio".into(),
            op,
            source,
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(b"R")
        .and_then(|()| out.flush())
        .map_err(io("signal ready"))?;
    let mut stdin = std::io::stdin().lock();
    let mut rec = [FILL; MSG];
    let mut count = [0u8; 8];
    loop {
        match stdin.read_exact(&mut count) {
            Ok(()) => {}
            // The parent closed our stdin (or died): done.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io("read a count")(e)),
        }
        let n = u64::from_le_bytes(count);
        match &mut source {
            Source::Floor { ring, tail, head } => {
                for _ in 0..n {
                    floor_push(ring, tail, head, &mut rec)?;
                }
            }
            Source::Shmq {
                tx,
                path,
                seq,
                batch: 1,
            } => {
                for _ in 0..n {
                    stamp(&mut rec, *seq, index);
                    tx.publish(&rec).map_err(queue_err(path))?;
                    *seq += 1;
                }
            }
            Source::Shmq {
                tx,
                path,
                seq,
                batch,
            } => {
                let mut recs = vec![[FILL; MSG]; *batch];
                let mut left = n;
                while left > 0 {
                    let k = (*batch as u64).min(left) as usize;
                    for (i, r) in recs[..k].iter_mut().enumerate() {
                        stamp(r, *seq + i as u64, index);
                    }
                    // On the stack: no allocation per batch in the measured loop.
                    let payloads: [&[u8]; MAX_BATCH] = std::array::from_fn(|i| &recs[i % k][..]);
                    tx.publish_batch(&payloads[..k]).map_err(queue_err(path))?;
                    *seq += k as u64;
                    left -= k as u64;
                }
            }
        }
    }
}

/// Writes `rec`, stamped with sequence `*tail`, into the floor's ring and publishes it;
/// spins while the ring is full.
#[inline]
fn floor_push(
    ring: &FloorRing,
    tail: &mut u64,
    head: &mut u64,
    rec: &mut [u8; MSG],
) -> Result<(), Error> {
    if *tail - *head == SLOTS {
        let mut wait = FloorWait::new();
        loop {
            // Acquire pairs with the consumer's Release store of the head: its reads of the
            // slots it gave back happened before this side overwrites them.
            *head = ring.word(HEAD).load(Ordering::Acquire);
            if ring.in_ring(*head, *tail)? < SLOTS {
                break;
            }
            wait.step()?;
        }
    }
    stamp(rec, *tail, 0);
    // SAFETY: the slot is MSG bytes inside the mapping (`slot`). The consumer is done with it:
    // `tail - head < SLOTS`, so the record it last held is below the head this side
    // Acquire-loaded; and it will not read it before the Release store below publishes it.
    unsafe { std::ptr::copy_nonoverlapping(rec.as_ptr(), ring.slot(*tail), MSG) };
    *tail += 1;
    // Release: publishes the record's bytes to the consumer's Acquire load of the tail.
    ring.word(TAIL).store(*tail, Ordering::Release);
    Ok(())
}

/// A child process of a flow and its stdin: a producer's feeds it counts; closing it stops
/// the child.
struct Feeder {
    /// The child process, killed and reaped on drop.
    child: Child,
    /// Its stdin.
    stdin: ChildStdin,
}

/// The consumer's end of a flow.
// One value per flow: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Sink {
    /// The floor's ring, and the head (this side's word) and tail as last seen.
    Floor {
        ring: FloorRing,
        head: u64,
        tail: u64,
    },
    /// shmq: the consumer of the flow's group, and the next sequence number expected from each
    /// producer.
    Shmq {
        rx: shmq::Consumer,
        path: PathBuf,
        next: Vec<u64>,
        _queue: shmq::Queue,
    },
    /// The cases whose consumers are child processes ([`Case::WORK`]): the queue this process
    /// watches, and how many records its producer has published so far.
    Watch {
        queue: shmq::Queue,
        path: PathBuf,
        published: u64,
    },
}

/// The result of one [`Flow::run`]: `messages` records consumed in `elapsed`, from the first
/// record's arrival to the last one's.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// Records timed (every record of the run but the first, whose arrival starts the clock).
    pub messages: u64,
    /// How long they took.
    pub elapsed: Duration,
}

impl Run {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The time `iters` messages take at this run's rate (criterion's `iter_custom`).
    pub fn time_for(&self, iters: u64) -> Duration {
        Duration::from_secs_f64(iters as f64 / self.rate())
    }
}

/// One case set up: its producer processes started and its consumer ready in this process.
/// Kills and reaps its children on drop.
pub struct Flow {
    /// Which case.
    case: Case,
    /// This process's end.
    sink: Sink,
    /// The producer processes.
    feeders: Vec<Feeder>,
    /// The consumer or worker processes of [`Case::WORK`] (their stdin only ever closes).
    readers: Vec<Feeder>,
    /// The flow's files; removed on drop (after the children are gone).
    _dir: tempfile::TempDir,
}

impl Flow {
    /// Creates `case`'s ring or queue in a new temporary directory under `base`, starts its
    /// producer processes and waits until each is ready.
    pub fn start(case: Case, base: &Path) -> Result<Flow, Error> {
        let dir = new_dir(case.name(), base)?;
        let sink = match case {
            Case::FloorRing => Sink::Floor {
                ring: FloorRing::create(&dir.path().join(FLOOR_FILE))?,
                head: 0,
                tail: 0,
            },
            _ if case.readers() > 0 => {
                let path = dir.path().join(SHMQ_FILE);
                let queue =
                    shmq::Queue::create(&path, &queue_options()).map_err(queue_err(&path))?;
                if case != Case::Commit1c {
                    // The work group, before its workers join; its settings are the file's.
                    drop(
                        queue
                            .worker(GROUP, &work_options())
                            .map_err(queue_err(&path))?,
                    );
                }
                Sink::Watch {
                    queue,
                    path,
                    published: 0,
                }
            }
            _ => {
                let path = dir.path().join(SHMQ_FILE);
                let queue =
                    shmq::Queue::create(&path, &queue_options()).map_err(queue_err(&path))?;
                // The gating group exists before any producer starts: it sees every record.
                let rx = queue.consumer(GROUP).map_err(queue_err(&path))?;
                Sink::Shmq {
                    rx,
                    path,
                    next: vec![0; case.producers()],
                    _queue: queue,
                }
            }
        };
        // The readers first: Commit1c's consumer creates the gating group before it says it is
        // ready, so the group sees every record.
        let mut readers = Vec::with_capacity(case.readers());
        if let Some(role) = case.reader_role() {
            for _ in 0..case.readers() {
                let (child, stdin) = spawn_ready(role, case.name(), dir.path(), &[])?;
                readers.push(Feeder { child, stdin });
            }
        }
        let mut feeders = Vec::with_capacity(case.producers());
        for i in 0..case.producers() {
            let (child, stdin) = spawn_ready(
                case.role(),
                case.name(),
                dir.path(),
                &[(PRODUCER_ENV, i.to_string())],
            )?;
            feeders.push(Feeder { child, stdin });
        }
        Ok(Flow {
            case,
            sink,
            feeders,
            readers,
            _dir: dir,
        })
    }

    /// Which case this flow measures.
    pub fn case(&self) -> Case {
        self.case
    }

    /// Moves at least `messages` records (at least 2; split evenly over the producers) and
    /// times them.
    pub fn run(&mut self, messages: u64) -> Result<Run, Error> {
        let name = self.case.name();
        let per = messages.max(2).div_ceil(self.feeders.len() as u64);
        let total = per * self.feeders.len() as u64;
        for f in &mut self.feeders {
            f.stdin
                .write_all(&per.to_le_bytes())
                .map_err(|_| Error::ChildGone { mode: name })?;
        }
        let (first, last) = match &mut self.sink {
            Sink::Floor { ring, head, tail } => floor_take(ring, head, tail, total)?,
            Sink::Shmq { rx, path, next, .. } if self.case.batch() > 1 => {
                shmq_take_batches(name, rx, path, next, total, self.case.batch())?
            }
            Sink::Shmq { rx, path, next, .. } => shmq_take(name, rx, path, next, total)?,
            Sink::Watch {
                queue,
                path,
                published,
            } => {
                let start = *published;
                *published += total;
                watch_settled(self.case, queue, path, &mut self.readers, start, total)?
            }
        };
        Ok(Run {
            messages: total - 1,
            elapsed: last - first,
        })
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        // Our own children, by their pids.
        for f in self.feeders.iter_mut().chain(&mut self.readers) {
            let _ = f.child.kill();
            let _ = f.child.wait();
        }
    }
}

/// Consumes `total` records from the floor's ring; returns when the first and the last
/// arrived.
fn floor_take(
    ring: &FloorRing,
    head: &mut u64,
    tail: &mut u64,
    total: u64,
) -> Result<(Instant, Instant), Error> {
    let mut first = None;
    for _ in 0..total {
        if *head == *tail {
            let mut wait = FloorWait::new();
            loop {
                // Acquire pairs with the producer's Release store of the tail: the record's
                // bytes are visible before it is read.
                *tail = ring.word(TAIL).load(Ordering::Acquire);
                if ring.in_ring(*head, *tail)? > 0 {
                    break;
                }
                wait.step()?;
            }
        }
        // SAFETY: the slot is MSG bytes inside the mapping (`slot`); the producer published it
        // (head < tail, Acquire-loaded above) and will not write it again before the Release
        // store of the head below gives it back. `[u8; MSG]` has alignment 1.
        let rec = unsafe { std::ptr::read(ring.slot(*head).cast::<[u8; MSG]>()) };
        let (seq, _) = parse(&rec);
        if seq != *head {
            return Err(Error::Transport {
                mode: Case::FloorRing.name(),
                what: format!("record {} carries sequence number {seq}", *head),
            });
        }
        *head += 1;
        // Release: this side's read of the slot happens before the producer reuses it.
        ring.word(HEAD).store(*head, Ordering::Release);
        first.get_or_insert_with(Instant::now);
    }
    let last = Instant::now();
    Ok((first.unwrap_or(last), last))
}

/// Consumes `total` records of the shmq flow `mode` through `rx` (queue file `path`), checking
/// each producer's sequence numbers against `next`, and commits every [`COMMIT_EVERY`] and
/// after the last; returns when the first and the last arrived.
#[allow(clippy::unnecessary_lazy_evaluations)]
fn shmq_take(
    mode: &'static str,
    rx: &mut shmq::Consumer,
    path: &Path,
    next: &mut [u64],
    total: u64,
) -> Result<(Instant, Instant), Error> {
    let mut first = None;
    for i in 1..=total {
        let m = rx
            .poll(Some(REPLY_TIMEOUT))
            .map_err(queue_err(path))?
            // Lazily: built eagerly, the error was dropped after every record, 2.4 % of the
            // consumer's samples (`perf`) that the floor's loop does not pay.
            .ok_or_else(|| Error::Timeout { mode })?;
        first.get_or_insert_with(Instant::now);
        check_record(mode, &m, next)?;
        if i.is_multiple_of(COMMIT_EVERY) || i == total {
            let off = m.offset;
            rx.commit(off).map_err(queue_err(path))?;
        }
    }
    let last = Instant::now();
    Ok((first.unwrap_or(last), last))
}

/// Times a run of a case this process only watches ([`Case::WORK`]): the clock starts when
/// the producer has published record `start` (the first of the run) and stops when the
/// group's committed cursor has passed the run's last record, each seen at a look every
/// [`LOOK_EVERY`]. A work case then checks the group's counters (untimed): every record
/// delivered once and acked.
fn watch_settled(
    case: Case,
    queue: &shmq::Queue,
    path: &Path,
    readers: &mut [Feeder],
    start: u64,
    total: u64,
) -> Result<(Instant, Instant), Error> {
    let mode = case.name();
    let end = start + total;
    let first = watch(mode, readers, start + 1, || Ok(queue.tail_offset()))?;
    let last = watch(mode, readers, end, || {
        queue
            .groups()
            .into_iter()
            .find(|g| g.name == GROUP)
            .map(|g| g.committed)
            .ok_or(Error::Transport {
                mode,
                what: format!("group {GROUP} is gone"),
            })
    })?;
    if case != Case::Commit1c {
        // A worker counts its ack just after the ACKED CAS, so another one may move base past
        // the record first (the counters are not one snapshot with base): wait for the count.
        let info = || queue.work_info(GROUP).map_err(queue_err(path));
        watch(mode, readers, end, || info().map(|i| i.acked))?;
        let info = info()?;
        if info.acked != end || info.delivered != end || info.redelivered != 0 {
            return Err(Error::Transport {
                mode,
                what: format!(
                    "after {end} records: {} delivered, {} redelivered, {} acked",
                    info.delivered, info.redelivered, info.acked
                ),
            });
        }
    }
    Ok((first, last))
}

/// Looks at `value` every [`LOOK_EVERY`] until it reaches `target`; returns when it saw it.
/// Fails when a reader process exited (it printed why) or the value has not moved for
/// [`REPLY_TIMEOUT`].
fn watch(
    mode: &'static str,
    readers: &mut [Feeder],
    target: u64,
    mut value: impl FnMut() -> Result<u64, Error>,
) -> Result<Instant, Error> {
    let mut seen = value()?;
    let mut since = Instant::now();
    while seen < target {
        std::thread::sleep(LOOK_EVERY);
        let now = value()?;
        if now != seen {
            (seen, since) = (now, Instant::now());
            continue;
        }
        if readers
            .iter_mut()
            .any(|r| !matches!(r.child.try_wait(), Ok(None)))
        {
            return Err(Error::ChildGone { mode });
        }
        if since.elapsed() > REPLY_TIMEOUT {
            return Err(Error::Timeout { mode });
        }
    }
    Ok(Instant::now())
}

/// The sequence number and producer index of the record at `offset` of the shmq flow `mode`,
/// after checking its length.
#[inline]
fn record_of(mode: &'static str, offset: u64, payload: &[u8]) -> Result<(u64, u8), Error> {
    if payload.len() != MSG {
        return Err(Error::Transport {
            mode,
            what: format!(
                "a {}-byte record at offset {offset}, expected {MSG}",
                payload.len()
            ),
        });
    }
    Ok(parse(payload))
}

/// Checks a record of the shmq flow `mode`: its length, and its producer's sequence number
/// against `next` (which it advances).
#[inline]
fn check_record(mode: &'static str, m: &shmq::Message<'_>, next: &mut [u64]) -> Result<(), Error> {
    let (seq, producer) = record_of(mode, m.offset, m.payload)?;
    match next.get_mut(usize::from(producer)) {
        Some(want) if *want == seq => {
            *want += 1;
            Ok(())
        }
        _ => Err(Error::Transport {
            mode,
            what: format!(
                "record at offset {} from producer {producer} carries sequence number {seq}, \
                 out of order",
                m.offset
            ),
        }),
    }
}

/// [`shmq_take`] in batches: up to `batch` records per `poll_batch`, and a commit after a call
/// that passed a multiple of [`COMMIT_EVERY`] or took the last record.
fn shmq_take_batches(
    mode: &'static str,
    rx: &mut shmq::Consumer,
    path: &Path,
    next: &mut [u64],
    total: u64,
    batch: usize,
) -> Result<(Instant, Instant), Error> {
    let mut first = None;
    let mut taken = 0u64;
    while taken < total {
        let mut checked = Ok(());
        let mut last_offset = 0;
        let want = (batch as u64).min(total - taken) as usize;
        let got = rx
            .poll_batch(want, Some(REPLY_TIMEOUT), |m| {
                // Assigned only on failure: a `Result` of this crate's `Error` copied into
                // `checked` after every record was 16 % of the consumer's samples (`perf`),
                // which the floor's loop does not pay.
                if checked.is_ok() {
                    if let Err(e) = check_record(mode, &m, next) {
                        checked = Err(e);
                    }
                }
                last_offset = m.offset;
            })
            .map_err(queue_err(path))?;
        if got == 0 {
            return Err(Error::Timeout { mode });
        }
        first.get_or_insert_with(Instant::now);
        checked?;
        let before = taken;
        taken += got as u64;
        if taken / COMMIT_EVERY != before / COMMIT_EVERY || taken == total {
            rx.commit(last_offset).map_err(queue_err(path))?;
        }
    }
    let last = Instant::now();
    Ok((first.unwrap_or(last), last))
}

/// Messages per second of every case, per round, from one interleaved measurement.
pub struct Report {
    /// The cases, in the order measured.
    cases: Vec<Case>,
    /// Messages per second: one list per case, one entry per round.
    rates: Vec<Vec<f64>>,
}

/// Measures `per_case` messages ([`Case::messages`]: an eighth for the work cases) on every
/// flow in `rounds` interleaved rounds: each round runs every flow in turn, an untimed warm-up
/// of an eighth of its block, then the timed block. `progress` is called with the message
/// count after each block.
pub fn measure(
    flows: &mut [Flow],
    per_case: u64,
    rounds: u64,
    mut progress: impl FnMut(u64),
) -> Result<Report, Error> {
    let rounds = rounds.clamp(1, (per_case / 2).max(1));
    let mut rates = vec![Vec::new(); flows.len()];
    for round in 0..rounds {
        for (f, r) in flows.iter_mut().zip(rates.iter_mut()) {
            // Spread the remainder over the first rounds so the total is the case's share.
            let share = f.case().messages(per_case);
            let block = share / rounds + u64::from(round < share % rounds);
            f.run(block / 8)?;
            r.push(f.run(block)?.rate());
            progress(block);
        }
    }
    Ok(Report {
        cases: flows.iter().map(Flow::case).collect(),
        rates,
    })
}

impl Report {
    /// The rounds of `case`, if it was measured.
    fn of(&self, case: Case) -> Option<&[f64]> {
        let i = self.cases.iter().position(|&c| c == case)?;
        Some(&self.rates[i])
    }

    /// Median messages per second of `case` over the rounds, if it was measured.
    pub fn median(&self, case: Case) -> Option<f64> {
        self.of(case).map(|r| median(&mut r.to_vec()))
    }

    /// The median over the rounds of `a`'s rate divided by `b`'s in the same round, if both
    /// were measured: above 1, `a` moves more messages per second.
    pub fn ratio(&self, a: Case, b: Case) -> Option<f64> {
        let (ra, rb) = (self.of(a)?, self.of(b)?);
        let mut r: Vec<f64> = ra.iter().zip(rb).map(|(x, y)| x / y).collect();
        Some(median(&mut r))
    }
}

/// The table (median, lowest and highest msgs/s per case) and the [`RATIOS`] of the cases that
/// ran.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rounds = self.rates.first().map_or(0, Vec::len);
        writeln!(
            f,
            "{:<14} {:>12} {:>12} {:>12}   (msgs/s over {rounds} rounds)",
            "CASE", "MEDIAN", "MIN", "MAX"
        )?;
        for (c, r) in self.cases.iter().zip(&self.rates) {
            let min = r.iter().copied().fold(f64::INFINITY, f64::min);
            let max = r.iter().copied().fold(0.0, f64::max);
            let med = median(&mut r.clone());
            writeln!(f, "{:<14} {med:>12.0} {min:>12.0} {max:>12.0}", c.name())?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<30} {:>8}   (median of per-round ratios of msgs/s; above 1: the first is faster)",
            "RATIO", "MEDIAN"
        )?;
        for (a, b) in RATIOS {
            if let Some(r) = self.ratio(a, b) {
                let pair = format!("{} / {}", a.name(), b.name());
                writeln!(f, "{pair:<30} {r:>7.2}x")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Case::every() {
            assert_eq!(Case::from_name(c.name()), Some(c));
        }
        assert_eq!(Case::from_name("nope"), None);
    }

    #[test]
    fn watched_cases_move_an_eighth() {
        assert_eq!(Case::every().count(), Case::ALL.len() + Case::WORK.len());
        for c in Case::ALL {
            assert_eq!(c.readers(), 0, "{}", c.name());
            assert_eq!(c.messages(800), 800, "{}", c.name());
        }
        for c in Case::WORK {
            assert_eq!(c.producers(), 1, "{}", c.name());
            assert_eq!(c.messages(800), 100, "{}", c.name());
            assert!(c.reader_role().is_some(), "{}", c.name());
        }
        let readers: Vec<usize> = Case::WORK.iter().map(|c| c.readers()).collect();
        assert_eq!(readers, [1, 1, 2, 4]);
    }

    #[test]
    fn records_carry_sequence_and_producer() {
        let mut rec = [FILL; MSG];
        stamp(&mut rec, 0x0102_0304_0506_0708, 3);
        assert_eq!(parse(&rec), (0x0102_0304_0506_0708, 3));
        assert!(rec[9..].iter().all(|&b| b == FILL));
    }

    #[test]
    fn damaged_ring_words_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = FloorRing::create(&dir.path().join(FLOOR_FILE)).expect("create");
        assert_eq!(ring.in_ring(5, 5).expect("empty"), 0);
        assert_eq!(ring.in_ring(0, SLOTS).expect("full"), SLOTS);
        assert!(ring.in_ring(0, SLOTS + 1).is_err());
        assert!(ring.in_ring(6, 5).is_err());
        // A short file is refused when it is mapped.
        let short = dir.path().join("short");
        std::fs::write(&short, [0u8; 4096]).expect("write");
        let err = FloorRing::open(&short)
            .err()
            .expect("a short ring file fails");
        assert!(err.to_string().contains("a ring needs"), "{err}");
    }

    #[test]
    fn report_medians_and_ratios() {
        let r = Report {
            cases: vec![Case::FloorRing, Case::Shmq1p],
            rates: vec![vec![10.0, 20.0, 40.0], vec![5.0, 4.0, 10.0]],
        };
        assert_eq!(r.median(Case::FloorRing), Some(20.0));
        // Per-round ratios 0.5, 0.2, 0.25: median 0.25.
        assert_eq!(r.ratio(Case::Shmq1p, Case::FloorRing), Some(0.25));
        assert_eq!(r.ratio(Case::Shmq4p, Case::FloorRing), None);
        let text = r.to_string();
        assert!(text.contains("shmq_1p_1g / floor_ring"), "{text}");
        assert!(!text.contains("shmq_4p_1g"), "{text}");
    }
}
