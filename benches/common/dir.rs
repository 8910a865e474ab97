//! Where the benchmarks put their queue files.

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
