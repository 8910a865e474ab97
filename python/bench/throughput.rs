//! The Rust side of `throughput.py`: publishes COUNT 64-byte records to a new queue at PATH
//! (with a gating group made first), then polls and commits them all, timing each phase, as
//! the script does through the Python package and through ctypes.
//!
//! usage: throughput PATH COUNT  (prints "publish SECONDS poll SECONDS")

use std::time::{Duration, Instant};

fn main() -> shmq::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(count)) = (args.next(), args.next()) else {
        eprintln!("usage: throughput PATH COUNT");
        std::process::exit(2);
    };
    let count: u64 = count.parse().expect("COUNT is a number");
    let options = shmq::Options {
        capacity: 64 << 20,
        max_message: 1024,
        ..shmq::Options::default()
    };
    let queue = shmq::Queue::create(&path, &options)?;
    let mut consumer = queue.consumer("bench")?;
    let mut producer = queue.producer()?;
    let payload = [b'x'; 64];

    let start = Instant::now();
    for _ in 0..count {
        producer.publish(&payload)?;
    }
    let publish = start.elapsed();

    let start = Instant::now();
    let mut sum = 0u64;
    for i in 0..count {
        let msg = consumer
            .poll(Some(Duration::ZERO))?
            .expect("every record is published");
        // The payload handed to the caller, as the Python paths hand out a bytes object.
        sum += msg.payload.to_vec()[0] as u64;
        if i % 256 == 255 {
            let offset = msg.offset;
            consumer.commit(offset)?;
        }
    }
    let poll = start.elapsed();
    assert_eq!(sum, count * b'x' as u64);
    println!(
        "publish {} poll {}",
        publish.as_secs_f64(),
        poll.as_secs_f64()
    );
    std::fs::remove_file(&path).expect("remove the bench queue");
    Ok(())
}
