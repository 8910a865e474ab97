//! Publish throughput of 64-byte records under each durability policy, against a raw floor:
//! `pwrite` 64 B at an advancing offset + `fdatasync`, in a file in the same directory.
//! No consumer groups exist, so nothing but durability holds a producer back.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use shmq::Durability;
use shmq_benches::{bench_dir, full_bench_run};

const MSG: usize = 64;
const FLOOR_FILE: u64 = 1 << 20;

fn durability(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let payload = [0x5Au8; MSG];
    let mut g = c.benchmark_group("publish_64B");
    g.throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);

    // Raw floor: the cheapest way to put 64 B on disk per operation.
    let f = floor_file(dir.path());
    let mut at = 0u64;
    g.bench_function("raw_pwrite_fdatasync", |b| {
        b.iter(|| {
            f.write_all_at(black_box(&payload), at).expect("pwrite");
            f.sync_data().expect("fdatasync");
            at = (at + MSG as u64) % FLOOR_FILE;
        })
    });

    for (name, durability) in policies() {
        let opts = shmq::Options {
            capacity: 16 << 20,
            max_message: 4096,
            durability,
            ..shmq::Options::default()
        };
        let q = shmq::Queue::create(dir.path().join(format!("{name}.q")), &opts).expect("create");
        let mut p = q.producer().expect("producer");
        g.bench_function(BenchmarkId::new("shmq", name), |b| {
            b.iter(|| p.publish(black_box(&payload)).expect("publish"))
        });
    }
    g.finish();
}

/// Floor, None, Batch and Sync in turn, `reps` times, each for a fixed time; prints median
/// ops/s and the ratios that the targets name, per repetition (disk latency on this VM drifts
/// a lot between criterion's sequential cases).
fn interleaved() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (reps, budget) = if quick {
        (3, Duration::from_millis(150))
    } else {
        (7, Duration::from_millis(400))
    };
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let payload = [0x5Au8; MSG];
    let f = floor_file(dir.path());
    let mut producers: Vec<(shmq::Queue, shmq::Producer)> = policies()
        .into_iter()
        .map(|(name, durability)| {
            let opts = shmq::Options {
                capacity: 16 << 20,
                max_message: 4096,
                durability,
                ..shmq::Options::default()
            };
            let q =
                shmq::Queue::create(dir.path().join(format!("i_{name}.q")), &opts).expect("create");
            let p = q.producer().expect("producer");
            (q, p)
        })
        .collect();
    // ops/s per case per repetition: floor, none, batch, sync.
    let mut ops: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let mut at = 0u64;
    for _ in 0..reps {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget {
            f.write_all_at(&payload, at).expect("pwrite");
            f.sync_data().expect("fdatasync");
            at = (at + MSG as u64) % FLOOR_FILE;
            n += 1;
        }
        ops[0].push(n as f64 / start.elapsed().as_secs_f64());
        for (i, (_, p)) in producers.iter_mut().enumerate() {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < budget {
                for _ in 0..16 {
                    p.publish(&payload).expect("publish");
                }
                n += 16;
            }
            ops[i + 1].push(n as f64 / start.elapsed().as_secs_f64());
        }
    }
    let med = |v: &[f64]| shmq_pingpong::median(&mut v.to_vec());
    let ratio = |a: usize, b: usize| {
        let r: Vec<f64> = ops[a].iter().zip(&ops[b]).map(|(x, y)| x / y).collect();
        med(&r)
    };
    println!("\ninterleaved publish throughput, 64 B, {reps} repetitions (median ops/s):");
    for (i, name) in ["raw_pwrite_fdatasync", "none", "batch_1ms_1MiB", "sync"]
        .iter()
        .enumerate()
    {
        println!("{name:<22} {:>14.0}", med(&ops[i]));
    }
    println!("sync / raw floor: {:.2}x", ratio(3, 0));
    println!("batch / none:     {:.2}x", ratio(2, 1));
}

fn policies() -> [(&'static str, Durability); 3] {
    [
        ("none", Durability::None),
        (
            "batch_1ms_1MiB",
            Durability::Batch {
                max_delay: Duration::from_millis(1),
                max_bytes: 1 << 20,
            },
        ),
        ("sync", Durability::Sync),
    ]
}

/// The raw floor's file in `dir`: written out (not sparse) and synced, so the floor's
/// `fdatasync` never allocates blocks.
fn floor_file(dir: &std::path::Path) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("floor.dat"))
        .expect("floor file");
    f.write_all_at(&vec![0u8; FLOOR_FILE as usize], 0)
        .expect("prefill");
    f.sync_all().expect("sync_all");
    f
}

criterion_group!(benches, durability);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if full_bench_run() {
        interleaved();
    }
}
