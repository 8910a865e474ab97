//! Cross-process ping-pong latency of 64-byte messages: one-way = round trip / 2.
//!
//! Cases, all in one run: the physical floor (an `AtomicU64` ping-ponged through a shared
//! mapping), shmq with spinning consumers, shmq with blocking (futex) consumers, a pipe pair and
//! a Unix domain socket pair. After criterion, an interleaved pass measures every case in turn,
//! several times, and prints each one's median ratio to the floor measured in the same
//! repetition (the host moves the 2 vCPUs between physical cores, so absolute numbers shift
//! from run to run; ratios within a run are what to compare).

#[path = "common/pingpong.rs"]
mod pingpong;
#[path = "common/support.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use pingpong::{median, Mode, Pinger};

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_64B");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for mode in Mode::ALL {
        let mut p = Pinger::start(mode);
        group.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            p.warm(200);
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    p.round_trip();
                }
                t.elapsed() / 2
            })
        });
    }
    group.finish();
}

/// Every mode measured in turn, `reps` times; prints median one-way ns and median ratio to the
/// floor of the same repetition.
fn interleaved() {
    let (reps, budget) = if quick() {
        (5, Duration::from_millis(100))
    } else {
        (9, Duration::from_millis(400))
    };
    let mut pingers: Vec<Pinger> = Mode::ALL.iter().map(|&m| Pinger::start(m)).collect();
    let mut ns = vec![Vec::new(); pingers.len()];
    for _ in 0..reps {
        for (i, p) in pingers.iter_mut().enumerate() {
            p.warm(200);
            // Batches of 32 round trips, each timed; the repetition's figure is the median
            // batch (robust to the preemptions other load on this 2-vCPU VM causes).
            let start = Instant::now();
            let mut batches = Vec::new();
            while start.elapsed() < budget {
                let t = Instant::now();
                for _ in 0..32 {
                    p.round_trip();
                }
                batches.push(t.elapsed().as_nanos() as f64 / 64.0);
            }
            ns[i].push(median(&mut batches));
        }
    }
    println!("\ninterleaved one-way latency, 64 B, {reps} repetitions (median 32-round-trip batch per repetition):");
    println!(
        "{:<14} {:>10} {:>12} {:>12} {:>12}",
        "case", "median ns", "x floor", "min x floor", "max x floor"
    );
    let floor = ns[0].clone();
    for (i, p) in pingers.iter().enumerate() {
        let mut ratios: Vec<f64> = ns[i].iter().zip(&floor).map(|(a, f)| a / f).collect();
        let mut v = ns[i].clone();
        let med = median(&mut v);
        let r = median(&mut ratios);
        println!(
            "{:<14} {:>10.1} {:>12.2} {:>12.2} {:>12.2}",
            p.mode.name(),
            med,
            r,
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    for (i, alt) in [(3usize, "pipe"), (4, "unix_socket")] {
        for (j, q) in [(1usize, "shmq_spin"), (2, "shmq_blocking")] {
            let mut r: Vec<f64> = ns[i].iter().zip(&ns[j]).map(|(a, b)| a / b).collect();
            println!("{alt} / {q}: median {:.1}x", median(&mut r));
        }
    }
    drop(pingers);
}

criterion_group!(benches, latency);

fn main() {
    pingpong::maybe_run_child();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if support::full_bench_run() {
        interleaved();
    }
}
