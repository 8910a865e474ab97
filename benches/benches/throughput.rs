//! Throughput: in one process (one producer thread publishing, consumer group(s) on other
//! threads), and across processes.
//!
//! Each consumer reads the first byte of every payload (zero-copy: `poll` hands out a slice of
//! the ring) and commits every 256 messages, or when it runs dry. The timed region runs from
//! the first publish until every consumer has seen the last message. `copy` uses
//! `Producer::publish`; `claim` uses `Producer::claim` + `as_mut_slice().copy_from_slice(..)` +
//! `commit()`, i.e. the same bytes written in place (it measures the API path, not a
//! payload the producer builds for free). `memcpy_floor` copies the same payload into a 64 MiB
//! buffer at a rotating offset on one thread: single-core memcpy bandwidth, same run;
//! `memcpy_hot` copies it into one cache-resident 64 KiB buffer.
//!
//! `xproc_64B` is the cross-process part (`shmq_pingpong::throughput`): producer processes
//! publish 64 B records that this process consumes, for a minimal single-producer ring (the
//! floor, `floor_ring`) and for shmq with one and four producer processes into one gating
//! group, and in batches; then the work-group cases: one producer process to 1, 2 and 4 worker
//! processes acking every record (`ack_1w`, `ack_2w`, `ack_4w`) next to one consumer process
//! committing every record of a gating group (`commit_1c`). Criterion measures all but the work
//! cases; the interleaved pass runs them all in turn (the work cases with an eighth of the
//! messages, to keep `--quick` short) and prints their ratios (to the floor; ack against
//! commit; 2 and 4 workers against one).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use shmq_benches::{bench_dir, full_bench_run};
use shmq_pingpong::median;
use shmq_pingpong::throughput::{self, Flow};

const SIZES: [usize; 4] = [16, 64, 1024, 64 * 1024];
const COMMIT_EVERY: u64 = 256;
const RING: u64 = 64 << 20;

struct Reader {
    seen: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

/// One queue, `producers` producers and `groups` consumer threads.
struct Setup {
    producers: Vec<shmq::Producer>,
    readers: Vec<Reader>,
    stop: Arc<AtomicBool>,
    sent: u64,
    _queue: shmq::Queue,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn new(producers: usize, groups: usize, checksums: bool) -> Setup {
        let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");
        let opts = shmq::Options {
            capacity: RING,
            max_message: 64 * 1024,
            checksums,
            ..shmq::Options::default()
        };
        let queue = shmq::Queue::create(dir.path().join("tp.q"), &opts).expect("create");
        let stop = Arc::new(AtomicBool::new(false));
        let readers = (0..groups)
            .map(|g| {
                let mut c = queue.consumer(&format!("g{g}")).expect("consumer");
                let seen = Arc::new(AtomicU64::new(0));
                let (seen2, stop2) = (seen.clone(), stop.clone());
                let handle = std::thread::spawn(move || {
                    let mut n = 0u64;
                    let mut pending = None;
                    loop {
                        match c.poll(Some(Duration::from_millis(5))).expect("poll") {
                            Some(m) => {
                                black_box(m.payload[0]);
                                let off = m.offset;
                                n += 1;
                                if n.is_multiple_of(COMMIT_EVERY) {
                                    c.commit(off).expect("commit");
                                    pending = None;
                                } else {
                                    pending = Some(off);
                                }
                                seen2.store(n, Ordering::Release);
                            }
                            None => {
                                if let Some(off) = pending.take() {
                                    c.commit(off).expect("commit");
                                }
                                if stop2.load(Ordering::Acquire) {
                                    break;
                                }
                            }
                        }
                    }
                });
                Reader {
                    seen,
                    handle: Some(handle),
                }
            })
            .collect();
        Setup {
            producers: (0..producers)
                .map(|_| queue.producer().expect("producer"))
                .collect(),
            readers,
            stop,
            sent: 0,
            _queue: queue,
            _dir: dir,
        }
    }

    /// Publishes `iters` messages (split over the producers) and waits until every group has
    /// read them; returns the elapsed time.
    fn run(&mut self, iters: u64, payload: &[u8], claim: bool) -> Duration {
        let start = Instant::now();
        let per = iters.div_ceil(self.producers.len() as u64);
        std::thread::scope(|s| {
            let (first, rest) = self.producers.split_first_mut().expect("a producer");
            for p in rest {
                s.spawn(move || publish_n(p, per, payload, claim));
            }
            publish_n(first, per, payload, claim);
        });
        self.sent += per * self.producers.len() as u64;
        for r in &self.readers {
            while r.seen.load(Ordering::Acquire) < self.sent {
                std::thread::yield_now();
            }
        }
        start.elapsed()
    }
}

fn publish_n(p: &mut shmq::Producer, n: u64, payload: &[u8], claim: bool) {
    for _ in 0..n {
        if claim {
            let mut c = p.claim(payload.len()).expect("claim");
            c.as_mut_slice().copy_from_slice(payload);
            c.commit().expect("commit");
        } else {
            p.publish(payload).expect("publish");
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for r in &mut self.readers {
            if let Some(h) = r.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// The floors' destination buffers start on a page boundary. glibc puts a large block 16 bytes
/// past one, and a copy into a destination 16 bytes off a 32-byte boundary ran at about 0.75×
/// the rate of an aligned one on the reference VM (9.0 against 12.0 GiB/s): a floor that slow
/// would flatter every ratio to it. (Ring payloads start 32 bytes into a record, on a 32-byte
/// boundary at 64 KiB.)
const PAGE: usize = 4096;

/// `len` bytes of `buf` (which has `PAGE` bytes to spare) from its first page boundary.
fn page_aligned(buf: &mut [u8], len: usize) -> &mut [u8] {
    let start = buf.as_ptr().align_offset(PAGE);
    &mut buf[start..start + len]
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
}

fn one_to_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("1p_1g");
    configure(&mut g);
    for size in SIZES {
        let payload = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        if size == 64 * 1024 {
            let mut buf = vec![0u8; RING as usize + PAGE];
            let dst = page_aligned(&mut buf, RING as usize);
            let mut at = 0usize;
            g.bench_function(BenchmarkId::new("memcpy_floor", size), |b| {
                b.iter(|| {
                    dst[at..at + size].copy_from_slice(black_box(&payload));
                    at = (at + size) % RING as usize;
                    black_box(&dst[at..at + 1]);
                })
            });
            // The same copy into one cache-resident 64 KiB buffer: the upper bound.
            let mut hot_buf = vec![0u8; size + PAGE];
            let hot = page_aligned(&mut hot_buf, size);
            g.bench_function(BenchmarkId::new("memcpy_hot", size), |b| {
                b.iter(|| {
                    hot.copy_from_slice(black_box(&payload));
                    black_box(&hot);
                })
            });
        }
        for (name, claim) in [("copy", false), ("claim", true)] {
            let mut s = Setup::new(1, 1, true);
            g.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_custom(|iters| s.run(iters, &payload, claim))
            });
        }
        if size == 64 * 1024 {
            let mut s = Setup::new(1, 1, false);
            g.bench_function(BenchmarkId::new("copy_no_checksum", size), |b| {
                b.iter_custom(|iters| s.run(iters, &payload, false))
            });
        }
    }
    g.finish();
}

fn fan(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_64B");
    configure(&mut g);
    let payload = vec![0xA5u8; 64];
    g.throughput(Throughput::Bytes(64));
    for (name, p, groups) in [("2p_1g", 2, 1), ("1p_2g", 1, 2)] {
        let mut s = Setup::new(p, groups, true);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| s.run(iters, &payload, false))
        });
    }
    g.finish();
}

/// The cross-process cases but the work cases (which the interleaved pass measures): criterion
/// times each run of a flow from its first record to its last.
fn cross_process(c: &mut Criterion) {
    let mut g = c.benchmark_group("xproc_64B");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    for case in throughput::Case::ALL {
        let mut flow = Flow::start(case, &bench_dir()).expect("start the producer processes");
        g.bench_function(case.name(), |b| {
            b.iter_custom(|iters| flow.run(iters).expect("run").time_for(iters))
        });
    }
    g.finish();
}

/// The cross-process cases in interleaved rounds: msgs/s and the ratios (`throughput::RATIOS`).
fn cross_process_interleaved(quick: bool) {
    let (rounds, per_case) = if quick {
        (5, 2_500_000)
    } else {
        (9, 18_000_000)
    };
    let mut flows: Vec<Flow> = throughput::Case::every()
        .map(|case| Flow::start(case, &bench_dir()).expect("start the producer processes"))
        .collect();
    let report = throughput::measure(&mut flows, per_case, rounds, |_| {}).expect("measure");
    println!(
        "\ncross-process throughput, 64 B, {rounds} interleaved rounds of {} messages per case \
         ({} for {}):",
        per_case / rounds,
        throughput::Case::Ack1w.messages(per_case) / rounds,
        throughput::Case::WORK
            .map(throughput::Case::name)
            .join(", ")
    );
    print!("{report}");
}

/// One interleaved case: a name, the payload size, messages per repetition, and a closure that
/// moves that many messages and returns the time it took.
type Case<'a> = (
    &'static str,
    usize,
    u64,
    Box<dyn FnMut(u64) -> Duration + 'a>,
);

/// The targets' cases measured in turn, several times, so that their ratios come from the same
/// moments of this shared machine: 64 KiB copy and zero-copy publish against the streaming
/// memcpy floor, and the 64 B fan-in and fan-out cases.
fn interleaved(quick: bool) {
    let (reps, scale) = if quick { (5, 4) } else { (9, 1) };
    let big = vec![0xA5u8; 64 * 1024];
    let small = vec![0xA5u8; 64];
    let mut buf = vec![0u8; RING as usize + PAGE];
    let dst = page_aligned(&mut buf, RING as usize);
    let mut at = 0usize;
    // One queue per case: each closure holds its queue mutably for the whole pass.
    let mut one = Setup::new(1, 1, true);
    let mut one_claim = Setup::new(1, 1, true);
    let mut one_small = Setup::new(1, 1, true);
    let mut plain = Setup::new(1, 1, false);
    let mut two_p = Setup::new(2, 1, true);
    let mut two_g = Setup::new(1, 2, true);
    let (big_n, small_n) = (4096 / scale, 1_000_000 / scale);
    let big_ref = &big;
    let mut cases: Vec<Case> = vec![
        (
            "memcpy_floor 64 KiB",
            big.len(),
            big_n,
            Box::new(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    dst[at..at + big_ref.len()].copy_from_slice(black_box(big_ref));
                    at = (at + big_ref.len()) % RING as usize;
                    black_box(&dst[at..at + 1]);
                }
                t.elapsed()
            }),
        ),
        (
            "copy 64 KiB",
            big.len(),
            big_n,
            Box::new(|n| one.run(n, big_ref, false)),
        ),
        (
            "claim 64 KiB",
            big.len(),
            big_n,
            Box::new(|n| one_claim.run(n, big_ref, true)),
        ),
        (
            "copy 64 KiB no checksum",
            big.len(),
            big_n,
            Box::new(|n| plain.run(n, big_ref, false)),
        ),
    ];
    let small_ref = &small;
    cases.push((
        "copy 64 B 1p_1g",
        64,
        small_n,
        Box::new(|n| one_small.run(n, small_ref, false)),
    ));
    cases.push((
        "copy 64 B 2p_1g",
        64,
        small_n,
        Box::new(|n| two_p.run(n, small_ref, false)),
    ));
    cases.push((
        "copy 64 B 1p_2g",
        64,
        small_n,
        Box::new(|n| two_g.run(n, small_ref, false)),
    ));
    let mut ns = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        for (i, (_, _, n, f)) in cases.iter_mut().enumerate() {
            f(*n / 8); // warm-up
            ns[i].push(f(*n).as_nanos() as f64 / *n as f64);
        }
    }
    println!("\ninterleaved throughput, {reps} repetitions (median of repetitions; ratio = median of per-repetition ratios):");
    println!(
        "{:<26} {:>10} {:>12} {:>9} {:>16}",
        "case", "ns/msg", "msgs/s", "GiB/s", "x memcpy_floor"
    );
    for (i, (name, size, _, _)) in cases.iter().enumerate() {
        let mut v = ns[i].clone();
        let med = median(&mut v);
        let vs_floor = if *size == big.len() {
            let mut r: Vec<f64> = ns[0].iter().zip(&ns[i]).map(|(f, x)| f / x).collect();
            format!("{:.2}", median(&mut r))
        } else {
            "-".to_string()
        };
        println!(
            "{:<26} {:>10.1} {:>12.0} {:>9.2} {:>16}",
            name,
            med,
            1e9 / med,
            *size as f64 / med / 1.073_741_824,
            vs_floor
        );
    }
}

criterion_group!(benches, one_to_one, fan, cross_process);

fn main() {
    // The cross-process cases' producers are this binary again.
    shmq_pingpong::maybe_run_child();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if full_bench_run() {
        let quick = std::env::args().any(|a| a == "--quick");
        interleaved(quick);
        cross_process_interleaved(quick);
    }
}
