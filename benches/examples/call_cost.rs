//! Per-call cost of `Producer::publish` and `Consumer::poll`: N publishes of 64 bytes into a
//! fresh queue, then N polls. The C twin is `ffi/examples/call_cost.c`; run both on the same
//! machine and compare (see `ffi/README.md`). With `--batch B` the records go through
//! `Producer::publish_batch` and `Consumer::poll_batch`, B per call, and the costs are per
//! record (N a multiple of B).
//!
//! Usage: `cargo run --release -p shmq-benches --example call_cost -- PATH [N] [--no-verify]
//! [--batch B]` (`--no-verify`: polls skip the CRC32C check, to measure what it costs)

use std::time::{Duration, Instant};

fn main() -> shmq::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: call_cost PATH [N] [--no-verify] [--batch B]");
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let (mut verify, mut batch) = (true, 1usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-verify" => verify = false,
            "--batch" => batch = args.next().and_then(|b| b.parse().ok()).expect("--batch B"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        batch >= 1 && n.is_multiple_of(batch as u64),
        "N must be a multiple of B"
    );
    let options = shmq::Options {
        capacity: 256 << 20, // room for every record: nothing waits
        ..shmq::Options::default()
    };
    let queue = shmq::Queue::create(&path, &options)?;
    let mut consumer = queue.consumer("g")?;
    consumer.set_verify_checksums(verify);
    let mut producer = queue.producer()?;
    let msg = [7u8; 64];
    let run = vec![&msg[..]; batch];
    let mut sum = 0u64;
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
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    println!(
        "rust publish {:.1} ns/record  poll {:.1} ns/record  ({n} messages, batch {batch}, \
         verify {verify}, check {sum})",
        per(t1 - t0),
        per(t2 - t1)
    );
    std::fs::remove_file(&path).expect("remove the queue file");
    Ok(())
}
