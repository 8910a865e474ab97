//! One-way latency percentiles of 64-byte cross-process ping-pong, from an HDR histogram:
//! the atomic floor, shmq spinning and shmq blocking, interleaved in one run.
//!
//! `cargo run --release --example latency_percentiles [-- N | --quick]`
//! N is messages per mode (default 1,000,000; `--quick` = 100,000). Each round trip is timed
//! with one `Instant::now()` (the clock read's own cost is printed and included); one-way =
//! round trip / 2.

#[path = "../benches/common/pingpong.rs"]
mod pingpong;
#[path = "../benches/common/support.rs"]
mod support;

use std::time::Instant;

use hdrhistogram::Histogram;
use pingpong::{Mode, Pinger};

const REPS: u64 = 10;

fn main() {
    pingpong::maybe_run_child();
    let mut n: u64 = 1_000_000;
    for a in std::env::args().skip(1) {
        if a == "--quick" {
            n = 100_000;
        } else if let Ok(v) = a.parse() {
            n = v;
        }
    }
    let per_rep = (n / REPS).max(1);
    let mut clock = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).expect("histogram");
    for _ in 0..100_000 {
        let t = Instant::now();
        let _ = clock.record(t.elapsed().as_nanos().max(1) as u64);
    }
    println!(
        "clock read (Instant::now back to back): p50 {} ns, p99 {} ns",
        clock.value_at_quantile(0.5),
        clock.value_at_quantile(0.99)
    );

    let modes = [Mode::Floor, Mode::ShmqSpin, Mode::ShmqBlocking];
    let mut pingers: Vec<Pinger> = modes.iter().map(|&m| Pinger::start(m)).collect();
    let mut hists: Vec<Histogram<u64>> = modes
        .iter()
        .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"))
        .collect();
    for _ in 0..REPS {
        for (p, h) in pingers.iter_mut().zip(hists.iter_mut()) {
            p.warm(200);
            let mut prev = Instant::now();
            for _ in 0..per_rep {
                p.round_trip();
                let now = Instant::now();
                let one_way = ((now - prev).as_nanos() / 2).max(1) as u64;
                h.saturating_record(one_way);
                prev = now;
            }
        }
    }
    drop(pingers);

    let qs = [
        ("p50", 0.5),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ];
    println!(
        "one-way latency, 64 B, {} messages per mode in {REPS} interleaved rounds (ns):",
        per_rep * REPS
    );
    print!("{:<14}", "mode");
    for (q, _) in qs {
        print!(" {q:>10}");
    }
    println!(" {:>12}", "max");
    for (m, h) in modes.iter().zip(&hists) {
        print!("{:<14}", m.name());
        for (_, q) in qs {
            print!(" {:>10}", h.value_at_quantile(q));
        }
        println!(" {:>12}", h.max());
    }
    let floor = &hists[0];
    for (m, h) in modes.iter().zip(&hists).skip(1) {
        print!("{:<14}", format!("{} / floor", m.name()));
        for (_, q) in qs {
            let f = floor.value_at_quantile(q) as f64;
            print!(" {:>9.2}x", h.value_at_quantile(q) as f64 / f);
        }
        println!(" {:>11.2}x", h.max() as f64 / floor.max() as f64);
    }
}
