//! The benchmarks of shmq: the criterion suites in `benches/` (latency, throughput,
//! durability) and the `call_cost` example, in a crate of their own so that they link shmq
//! without its `fault-injection` feature, as users get it (see `BENCHMARKS.md`).
//!
//! This library is what every benchmark binary shares: where its files go, and whether
//! criterion was asked for a real run.

use std::path::PathBuf;

/// Where benchmark files go: a directory next to the bench binary, inside the target dir
/// (ext4 here, not tmpfs).
pub fn bench_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<bin> -> target/<profile>/shmq-bench-tmp
    let base = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("shmq-bench-tmp");
    std::fs::create_dir_all(&dir).expect("create bench dir");
    dir
}

/// Whether this is a real benchmark run (criterion got `--bench`), not `cargo test`, `--list`,
/// `--test` or `--profile-time`: the interleaved passes run only then.
pub fn full_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |f: &str| args.iter().any(|a| a == f);
    has("--bench") && !has("--list") && !has("--test") && !has("--profile-time")
}
