//! Per-call cost of `Producer::publish` and `Consumer::poll`: N publishes of 64 bytes into a
//! fresh queue, then N polls. The C twin is `ffi/examples/call_cost.c`; run both on the same
//! machine and compare (see `ffi/README.md`).
//!
//! Usage: `cargo run --release -p shmq-benches --example call_cost -- PATH [N] [--no-verify]`
//! (`--no-verify`: polls skip the CRC32C check, to measure what it costs)

use std::time::{Duration, Instant};

fn main() -> shmq::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: call_cost PATH [N]");
    let n: u64 = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let verify = args.next().as_deref() != Some("--no-verify");
    let options = shmq::Options {
        capacity: 256 << 20, // room for every record: nothing waits
        ..shmq::Options::default()
    };
    let queue = shmq::Queue::create(&path, &options)?;
    let mut consumer = queue.consumer("g")?;
    consumer.set_verify_checksums(verify);
    let mut producer = queue.producer()?;
    let msg = [7u8; 64];
    let t0 = Instant::now();
    for _ in 0..n {
        producer.publish(&msg)?;
    }
    let t1 = Instant::now();
    let mut sum = 0u64;
    for _ in 0..n {
        let m = consumer.poll(Some(Duration::ZERO))?.expect("a record");
        sum += m.payload[0] as u64;
    }
    let t2 = Instant::now();
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    println!(
        "rust publish {:.1} ns/call  poll {:.1} ns/call  ({n} messages, verify {verify}, check {sum})",
        per(t1 - t0),
        per(t2 - t1)
    );
    std::fs::remove_file(&path).expect("remove the queue file");
    Ok(())
}
