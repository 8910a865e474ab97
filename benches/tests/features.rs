//! The benchmarks measure shmq as users get it: `cargo bench -p shmq-benches` must link shmq
//! without its `fault-injection` feature, whose crash points run on the hot path.

use std::process::Command;

/// The shmq features `cargo tree` resolves for this crate alone, i.e. for `cargo bench -p
/// shmq-benches` (a `cargo test --workspace` build unifies features across the workspace, so
/// the shmq this test itself links may differ).
#[test]
fn benches_link_shmq_without_fault_injection() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(&cargo)
        .args(["tree", "--manifest-path", manifest])
        .args(["-p", "shmq-benches", "-e", "features", "-i", "shmq"])
        .args(["--prefix", "none", "--format", "{p} {f}"])
        .output()
        .unwrap_or_else(|e| panic!("run `{cargo} tree`: {e} (install cargo)"));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`cargo tree` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(tree.contains("shmq v"), "no shmq in the tree:\n{tree}");
    assert!(
        !tree.contains("fault-injection"),
        "the benchmarks would link shmq with fault-injection:\n{tree}"
    );
}
