//! Publish throughput of 64-byte records under each durability policy, against a raw floor:
//! `pwrite` 64 B at an advancing offset + `fdatasync`, in a file in the same directory.
//! No consumer groups exist, so nothing but durability holds a producer back.
//!
//! The interleaved pass also measures two floors of writing through a shared mapping, as shmq
//! does: the pages a Sync publish dirties (a header word, a producer-slot word, an index slot
//! and 64 B of data, four pages) + `fdatasync`, and 1 MiB copied into a mapping +
//! `fdatasync`, the sustained rate Batch can reach at most (as 64 B records of 96 bytes).

use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use shmq::Durability;
use shmq_benches::{bench_dir, full_bench_run};

const MSG: usize = 64;
const FLOOR_FILE: u64 = 1 << 20;
/// Bytes a 64 B record takes in the ring (32-byte header + payload).
const FOOTPRINT: u64 = 96;
/// The mapped floors' file: as large as the queues' rings.
const MAPPED_FILE: usize = 16 << 20;
/// One chunk of the mapped bandwidth floor.
const CHUNK: usize = 1 << 20;

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

    // The floors of writing through a mapping, as shmq does (see the module docs).
    let mut mapped = Mapped::new(dir.path());
    g.bench_function("mmap_4pages_fdatasync", |b| b.iter(|| mapped.sync_pages()));
    g.throughput(Throughput::Elements(CHUNK as u64 / FOOTPRINT));
    g.bench_function("mmap_1MiB_fdatasync", |b| b.iter(|| mapped.chunk()));
    g.throughput(Throughput::Elements(1));

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
        (5, Duration::from_millis(150))
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
    let mut mapped = Mapped::new(dir.path());
    // ops/s per case per repetition: floor, none, batch, sync, then the mapped floors: Sync's
    // four pages, and 1 MiB chunks (in records of `FOOTPRINT` bytes per second).
    let mut ops: Vec<Vec<f64>> = vec![Vec::new(); 6];
    let mut at = 0u64;
    for _ in 0..reps {
        ops[4].push(timed(budget, || mapped.sync_pages()));
        ops[5].push(timed(budget, || mapped.chunk()) * (CHUNK as u64 / FOOTPRINT) as f64);
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
    for (i, name) in [
        "raw_pwrite_fdatasync",
        "none",
        "batch_1ms_1MiB",
        "sync",
        "mmap_4pages_fdatasync",
        "mmap_1MiB_fdatasync",
    ]
    .iter()
    .enumerate()
    {
        println!("{name:<22} {:>14.0}", med(&ops[i]));
    }
    println!("sync / raw floor: {:.2}x", ratio(3, 0));
    println!("batch / none:     {:.2}x", ratio(2, 1));
    println!("sync / mmap_4pages_fdatasync: {:.2}x", ratio(3, 4));
    println!("mmap_4pages_fdatasync / raw floor: {:.2}x", ratio(4, 0));
    println!("batch / mmap_1MiB_fdatasync:  {:.2}x", ratio(2, 5));
    println!("mmap_1MiB_fdatasync / none:   {:.2}x", ratio(5, 1));
}

/// Calls of `op` per second over `budget`.
fn timed(budget: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        op();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The floors of writing through a shared mapping: a file of its own, allocated and written
/// as a queue file is.
struct Mapped {
    file: File,
    map: memmap2::MmapMut,
    /// Where the next record of `sync_pages` goes, past the data area's start.
    record: usize,
    /// Where the next chunk goes.
    chunk: usize,
    n: usize,
}

impl Mapped {
    fn new(dir: &std::path::Path) -> Mapped {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("mapped.dat"))
            .expect("mapped floor file");
        // Made as shmq makes a queue file (`posix_fallocate`, then written only through the
        // mapping), so that its page cache is filled by page faults as a queue's is: a file
        // filled by `write` calls holds large folios, which take fewer faults and requests.
        // SAFETY: plain system call on a descriptor this function owns.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, MAPPED_FILE as libc::off_t) };
        assert_eq!(
            rc,
            0,
            "posix_fallocate: {}",
            std::io::Error::from_raw_os_error(rc)
        );
        file.sync_all().expect("sync_all");
        // SAFETY: the file is this process's own, in a temporary directory nobody else uses,
        // and is neither truncated nor written otherwise while mapped.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
        Mapped {
            file,
            map,
            record: 0,
            chunk: 0,
            n: 0,
        }
    }

    /// What a Sync publish of 64 B dirties, as in a queue of this size: a header word (the
    /// tail), a producer-slot word (the intent), an index slot and the record, then
    /// `fdatasync`.
    fn sync_pages(&mut self) {
        const PAGE: usize = 4096;
        const DATA: usize = 16 * PAGE;
        let n = self.n;
        self.map[0..8].copy_from_slice(&n.to_le_bytes());
        self.map[PAGE..PAGE + 8].copy_from_slice(&n.to_le_bytes());
        let slot = 2 * PAGE + (n * 16) % (DATA - 2 * PAGE);
        self.map[slot..slot + 16].copy_from_slice(&[n as u8; 16]);
        let at = DATA + self.record;
        self.map[at..at + FOOTPRINT as usize].copy_from_slice(&[0x5A; FOOTPRINT as usize]);
        self.record = (self.record + FOOTPRINT as usize) % (MAPPED_FILE - DATA - PAGE);
        self.n += 1;
        self.file.sync_data().expect("fdatasync");
    }

    /// 1 MiB copied into the mapping at an advancing offset, then `fdatasync`.
    fn chunk(&mut self) {
        let at = self.chunk;
        self.map[at..at + CHUNK].fill(0x5A ^ self.n as u8);
        self.chunk = (at + CHUNK) % MAPPED_FILE;
        self.n += 1;
        self.file.sync_data().expect("fdatasync");
    }
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
