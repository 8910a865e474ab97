//! Per-call cost of `Producer::publish` and `Consumer::poll`: N publishes of 64 bytes into a
//! fresh queue, then N polls. The C twin is `ffi/examples/call_cost.c`; run both on the same
//! machine and compare (see `ffi/README.md`). With `--batch B` the records go through
//! `Producer::publish_batch` and `Consumer::poll_batch`, B per call, and the costs are per
//! record (N a multiple of B).
//!
//! Settling each record: with `--commit` every poll is followed by `Consumer::commit` of its
//! offset (a gating group committing every record); with `--work` the records are read by a
//! work group instead, `Worker::poll` then `Worker::ack` for each. Under callgrind the
//! inclusive costs of `Consumer::poll` + `Consumer::commit` and `Worker::poll` +
//! `Worker::ack` divided by N compare the two (BENCHMARKS.md, "Work groups").
//!
//! With `--idempotent` the records are published by an `IdempotentProducer` with sequence
//! numbers 0..N instead: its `publish` against `Producer::publish` of a run without the flag
//! is what de-duplication costs (BENCHMARKS.md, "Idempotent producers").
//!
//! With `--inbox` every poll is followed by `Consumer::commit`, and then each record's offset
//! goes through an inbox (window 4,096) as its key: N × `Inbox::begin` + `Mark::done` of a
//! new key (each admission past the first 4,096 evicts the oldest), then 4,096 × `begin` of a
//! key done already (a duplicate filtered). The costs of a poll + commit, a begin + done and a
//! duplicate's begin are printed side by side.
//!
//! Usage: `cargo run --release -p shmq-benches --example call_cost -- PATH [N] [--no-verify]
//! [--batch B | --commit | --work | --idempotent | --inbox]` (`--no-verify`: polls skip the
//! CRC32C check, to measure what it costs)

use std::time::{Duration, Instant};

/// How each polled record is settled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Settle {
    /// Not at all: polls only.
    None,
    /// `Consumer::commit` of every record.
    Commit,
    /// A work group: `Worker::poll` and `Worker::ack` instead of the consumer.
    Ack,
    /// `Consumer::commit` of every record, then an inbox's `begin` + `done` per record.
    Inbox,
}

fn main() -> shmq::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect(
        "usage: call_cost PATH [N] [--no-verify] [--batch B | --commit | --work | --idempotent \
         | --inbox]",
    );
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let (mut verify, mut batch, mut settle) = (true, 1usize, Settle::None);
    let mut idempotent = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-verify" => verify = false,
            "--batch" => batch = args.next().and_then(|b| b.parse().ok()).expect("--batch B"),
            "--commit" => settle = Settle::Commit,
            "--work" => settle = Settle::Ack,
            "--idempotent" => idempotent = true,
            "--inbox" => settle = Settle::Inbox,
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        batch >= 1 && n.is_multiple_of(batch as u64),
        "N must be a multiple of B"
    );
    assert!(
        batch == 1 || settle == Settle::None,
        "--commit, --work and --inbox take single records"
    );
    assert!(
        !idempotent || (batch == 1 && settle != Settle::Ack),
        "--idempotent takes single records and a consumer"
    );
    assert!(
        verify || settle != Settle::Ack,
        "a worker always verifies checksums"
    );
    let options = shmq::Options {
        capacity: 256 << 20, // room for every record: nothing waits
        ..shmq::Options::default()
    };
    let queue = shmq::Queue::create(&path, &options)?;
    if settle == Settle::Ack {
        return work(&queue, &path, n);
    }
    let mut consumer = queue.consumer("g")?;
    consumer.set_verify_checksums(verify);
    let msg = [7u8; 64];
    let run = vec![&msg[..]; batch];
    let mut sum = 0u64;
    if idempotent {
        let ids = shmq::IdOptions {
            slots: 1,
            window: 1024,
        };
        let mut producer = queue.idempotent_producer("call_cost", &ids)?;
        let t0 = Instant::now();
        for seq in 0..n {
            producer.publish(seq, &msg)?;
        }
        let per = (Instant::now() - t0).as_nanos() as f64 / n as f64;
        for _ in 0..n {
            let m = consumer.poll(Some(Duration::ZERO))?.expect("a record");
            sum += m.payload[0] as u64;
        }
        println!("rust idempotent publish {per:.1} ns/record  ({n} messages, check {sum})");
        drop(producer);
        let mut ids_path = std::ffi::OsString::from(&path);
        ids_path.push(".ids");
        std::fs::remove_file(ids_path).expect("remove the producer-id file");
        std::fs::remove_file(&path).expect("remove the queue file");
        return Ok(());
    }
    let mut producer = queue.producer()?;
    let t0 = Instant::now();
    if batch == 1 {
        for _ in 0..n {
            producer.publish(&msg)?;
        }
    } else {
        for _ in 0..n / batch as u64 {
            producer.publish_batch(&run)?;
        }
    }
    let t1 = Instant::now();
    if batch == 1 {
        for _ in 0..n {
            let m = consumer.poll(Some(Duration::ZERO))?.expect("a record");
            sum += m.payload[0] as u64;
            if settle != Settle::None {
                let done = m.offset;
                consumer.commit(done)?;
            }
        }
    } else {
        let mut polled = 0;
        while polled < n {
            let got = consumer.poll_batch(batch, Some(Duration::ZERO), |m| {
                sum += m.payload[0] as u64;
            })?;
            assert!(got > 0, "records missing after {polled}");
            polled += got as u64;
        }
    }
    let t2 = Instant::now();
    if settle == Settle::Inbox {
        inbox(&queue, n, t2 - t1)?;
        std::fs::remove_file(&path).expect("remove the queue file");
        return Ok(());
    }
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    let read = if settle == Settle::Commit {
        "poll+commit"
    } else {
        "poll"
    };
    println!(
        "rust publish {:.1} ns/record  {read} {:.1} ns/record  ({n} messages, batch {batch}, \
         verify {verify}, check {sum})",
        per(t1 - t0),
        per(t2 - t1)
    );
    std::fs::remove_file(&path).expect("remove the queue file");
    Ok(())
}

/// `--work`: a work group (created before the records, window 4,096, a visibility timeout
/// far beyond the run), N publishes, then N × `Worker::poll` + `Worker::ack`.
fn work(queue: &shmq::Queue, path: &str, n: u64) -> shmq::Result<()> {
    let options = shmq::WorkOptions {
        visibility_timeout: Duration::from_secs(600),
        window: 4096,
        ..shmq::WorkOptions::default()
    };
    let mut worker = queue.worker("w", &options)?;
    let mut producer = queue.producer()?;
    let msg = [7u8; 64];
    let t0 = Instant::now();
    for _ in 0..n {
        producer.publish(&msg)?;
    }
    let t1 = Instant::now();
    let mut sum = 0u64;
    for _ in 0..n {
        let job = worker.poll(Some(Duration::ZERO))?.expect("a job");
        sum += job.payload[0] as u64;
        let ticket = job.ticket;
        worker.ack(ticket)?;
    }
    let t2 = Instant::now();
    assert_eq!(queue.work_info("w")?.acked, n, "every record acked");
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    println!(
        "rust publish {:.1} ns/record  worker poll+ack {:.1} ns/record  ({n} messages, \
         check {sum})",
        per(t1 - t0),
        per(t2 - t1)
    );
    drop(worker);
    queue.delete_group("w")?;
    std::fs::remove_file(path).expect("remove the queue file");
    Ok(())
}

/// `--inbox`: N × `Inbox::begin` + `Mark::done` of the offsets 0..N as keys, then 4,096
/// duplicates' `begin`, printed next to the `poll` + `commit` the records took (`polled`).
fn inbox(queue: &shmq::Queue, n: u64, polled: Duration) -> shmq::Result<()> {
    const WINDOW: u32 = 4096;
    let mut inbox = queue.inbox("i", &shmq::InboxOptions { window: WINDOW })?;
    let t0 = Instant::now();
    for o in 0..n {
        match inbox.begin(&o.to_le_bytes())? {
            shmq::Admit::Fresh(mark) => mark.done()?,
            other => panic!("key {o} is new, found {other:?}"),
        }
    }
    let t1 = Instant::now();
    let dups = n.min(u64::from(WINDOW));
    for o in n - dups..n {
        assert!(matches!(inbox.begin(&o.to_le_bytes())?, shmq::Admit::Done));
    }
    let t2 = Instant::now();
    let per = |d: Duration, k: u64| d.as_nanos() as f64 / k as f64;
    println!(
        "rust poll+commit {:.1} ns/record  inbox begin+done {:.1} ns/key  duplicate begin \
         {:.1} ns/key  ({n} messages, window {WINDOW})",
        per(polled, n),
        per(t1 - t0, n),
        per(t2 - t1, dups)
    );
    drop(inbox);
    queue.delete_inbox("i")
}
