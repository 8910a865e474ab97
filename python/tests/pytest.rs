//! Runs the Python package's tests (`python/tests/*.py`) from `cargo test`.
//!
//! Builds the wheel with maturin, installs it with pip into a directory of its own (put first
//! on `PYTHONPATH`), builds the `shmq` tool and `libshmq.so` and compiles the C examples
//! against it for the cross-language tests, then runs `python3 -m pytest`. The nested builds
//! use a target directory of their own under `target/tmp`: the outer `cargo test` may hold
//! the lock of the workspace's one. A missing maturin, pytest or cc fails the test with what
//! to install; a missing maturin or pytest is skipped only when `SHMQ_ALLOW_SKIP` names it.

#[path = "../../tests/common/tools.rs"]
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Longest a nested build or the pytest run may take before the test fails (a loaded
/// two-core machine builds the extension in about a minute).
const LIMIT: Duration = Duration::from_secs(30 * 60);

fn python() -> String {
    std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the python crate is in the workspace")
        .to_path_buf()
}

/// Runs `cmd` to completion within [`LIMIT`], failing the test with `what` if it fails.
fn run(what: &str, cmd: &mut Command) {
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    let status = wait(child, what);
    assert!(status.success(), "{what} failed ({status}): {cmd:?}");
}

fn wait(mut child: Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            return status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("{what} took longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `python3 -m <module> --version` works; if not, fails with an installation hint, or
/// (when `SHMQ_ALLOW_SKIP` names the module) returns false and the test is skipped.
fn require_module(module: &str) -> bool {
    tools::require(
        module,
        tools::runs(&python(), &["-m", module, "--version"]),
        "the Python package's tests",
        "pip install maturin pytest (add --break-system-packages on a Debian system Python)",
    )
}

#[test]
fn pytest() {
    if !require_module("maturin") || !require_module("pytest") {
        return;
    }
    let root = workspace();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shmq-python");
    let target = work.join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    // The Rust tool and libshmq.so for the cross-language tests.
    run(
        "cargo build -p shmq-cli -p shmq-ffi",
        Command::new(&cargo)
            .args(["build", "-p", "shmq-cli", "-p", "shmq-ffi"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&root),
    );
    let lib_dir = target.join("debug");
    let c_dir = work.join("c");
    std::fs::create_dir_all(&c_dir).expect("create the C output directory");
    for name in ["publisher", "subscriber"] {
        run(
            &format!("cc {name}.c (apt-get install gcc if cc is missing)"),
            Command::new("cc")
                .arg("-I")
                .arg(root.join("ffi/include"))
                .arg(root.join(format!("ffi/examples/{name}.c")))
                .arg("-L")
                .arg(&lib_dir)
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
                .arg("-lshmq")
                .arg("-o")
                .arg(c_dir.join(name)),
        );
    }

    // The package: a wheel, installed into a directory of its own.
    let wheels = work.join("wheels");
    let site = work.join("site");
    for dir in [&wheels, &site] {
        let _ = std::fs::remove_dir_all(dir);
    }
    run(
        "maturin build",
        Command::new(python())
            .args([
                "-m",
                "maturin",
                "build",
                "--profile",
                "dev",
                "--interpreter",
            ])
            .arg(python())
            .arg("--manifest-path")
            .arg(root.join("python/Cargo.toml"))
            .arg("--out")
            .arg(&wheels)
            .env("CARGO_TARGET_DIR", &target),
    );
    let wheel = std::fs::read_dir(&wheels)
        .expect("the wheel directory")
        .map(|e| e.expect("a wheel directory entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .expect("maturin built no wheel");
    run(
        "pip install the wheel",
        Command::new(python())
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"])
            .arg(&site)
            .arg(&wheel),
    );

    run(
        "pytest python/tests",
        Command::new(python())
            .args([
                "-m",
                "pytest",
                "-v",
                "--durations=8",
                "-p",
                "no:cacheprovider",
            ])
            .arg(root.join("python/tests"))
            .env("PYTHONPATH", &site)
            .env("SHMQ_CLI", target.join("debug/shmq"))
            .env("SHMQ_C_DIR", &c_dir)
            // The C examples find the libshmq.so built above through their rpath; cargo's
            // LD_LIBRARY_PATH, which wins over it, may name the workspace's own target
            // directory and an older libshmq.so there.
            .env_remove("LD_LIBRARY_PATH")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(&site),
    );
}
