//! Cross-process ping-pong latency of 64-byte messages: one-way = round trip / 2.
//!
//! Cases, all in one run (see `shmq_pingpong::Mode`): the atomic floor (an `AtomicU64`
//! ping-ponged through a shared mapping), the futex floor (a shared word, each side sleeping
//! in `FUTEX_WAIT` until woken), shmq with spinning consumers, shmq with blocking consumers,
//! shmq's async API (`recv().await` on a current-thread tokio runtime), a pipe pair, a Unix domain socket pair, iceoryx2 publish-subscribe, Redis Streams and NATS
//! (each broker pair starts its own server; skipped with a note if it is not installed).
//!
//! After criterion, an interleaved pass measures every case in turn, several times, and prints
//! each one's median ratio to the floors and to shmq measured in the same repetition (the host
//! moves the 2 vCPUs between physical cores, so absolute numbers shift from run to run; ratios
//! within a run are what to compare).

use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion};
use shmq_benches::{bench_dir, full_bench_run};
use shmq_pingpong::{median, Mode, Pinger};

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
}

/// The pair for `mode`, or `None` (with a note) if it cannot run here, e.g. its server is not
/// installed.
fn start(mode: Mode) -> Option<Pinger> {
    match Pinger::start(mode, &bench_dir()) {
        Ok(p) => Some(p),
        Err(e @ shmq_pingpong::Error::Unavailable { .. }) => {
            println!("note: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_way_64B");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for &mode in Mode::ALL {
        let Some(mut p) = start(mode) else {
            continue;
        };
        group.bench_function(BenchmarkId::from_parameter(mode.name()), |b| {
            p.warm(200).expect("warm-up");
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    p.round_trip().expect("round trip");
                }
                t.elapsed() / 2
            })
        });
    }
    group.finish();
}

/// Median over repetitions of `a[i] / b[i]`.
fn median_ratio(a: &[f64], b: &[f64]) -> f64 {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    median(&mut r)
}

/// Every mode measured in turn, `reps` times; prints median one-way ns and median ratios to
/// the floors and to shmq of the same repetition.
fn interleaved() {
    let (reps, budget) = if quick() {
        (5, Duration::from_millis(100))
    } else {
        (9, Duration::from_millis(400))
    };
    let mut pingers: Vec<Pinger> = Mode::ALL.iter().filter_map(|&m| start(m)).collect();
    let modes: Vec<Mode> = pingers.iter().map(|p| p.mode()).collect();
    let mut ns = vec![Vec::new(); pingers.len()];
    for _ in 0..reps {
        for (i, p) in pingers.iter_mut().enumerate() {
            p.warm(200).expect("warm-up");
            // Batches of 32 round trips, each timed; the repetition's figure is the median
            // batch (robust to the preemptions other load on this 2-vCPU VM causes).
            let start = Instant::now();
            let mut batches = Vec::new();
            while start.elapsed() < budget {
                let t = Instant::now();
                for _ in 0..32 {
                    p.round_trip().expect("round trip");
                }
                batches.push(t.elapsed().as_nanos() as f64 / 64.0);
            }
            ns[i].push(median(&mut batches));
        }
    }
    drop(pingers);
    let of = |m: Mode| {
        let i = Mode::ALL
            .iter()
            .position(|&x| x == m)
            .expect("every mode runs");
        &ns[i]
    };
    println!("\ninterleaved one-way latency, 64 B, {reps} repetitions (median 32-round-trip batch per repetition):");
    println!(
        "{:<14} {:>10} {:>14} {:>14}",
        "case", "median ns", "x floor_atomic", "x floor_futex"
    );
    for &m in &modes {
        let mut v = of(m).clone();
        println!(
            "{:<14} {:>10.1} {:>14.2} {:>14.2}",
            m.name(),
            median(&mut v),
            median_ratio(of(m), of(Mode::Floor)),
            median_ratio(of(m), of(Mode::FutexFloor)),
        );
    }
    if modes.contains(&Mode::ShmqAsync) {
        println!(
            "shmq_async / shmq_blocking: median {:.2}x",
            median_ratio(of(Mode::ShmqAsync), of(Mode::ShmqBlocking))
        );
    }
    for &alt in modes.iter().skip_while(|&&m| m != Mode::Pipe) {
        for q in [Mode::ShmqSpin, Mode::ShmqBlocking] {
            println!(
                "{} / {}: median {:.2}x",
                alt.name(),
                q.name(),
                median_ratio(of(alt), of(q))
            );
        }
    }
}

criterion_group!(benches, latency);

fn main() {
    shmq_pingpong::maybe_run_child();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if full_bench_run() {
        interleaved();
    }
}
