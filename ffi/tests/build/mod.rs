//! Building the C test programs: the freshly built `libshmq.so`, and each program compiled
//! against it and the header with `cc`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// This crate's directory.
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the `libshmq.so` built with this test. Cargo builds every crate type
/// of the library before running its tests, into `target/<profile>/deps` (the test binary's
/// own directory); `cargo build` also copies it to `target/<profile>`.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("deps dir").to_path_buf();
        let profile = deps.parent().expect("profile dir").to_path_buf();
        if deps.join("libshmq.so").exists() {
            return deps;
        }
        if !profile.join("libshmq.so").exists() {
            // Not expected, but be robust: build the cdylib explicitly.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let ok = Command::new(cargo)
                .args(["build", "-p", "shmq-ffi"])
                .status()
                .expect("run cargo build")
                .success();
            assert!(ok, "cargo build -p shmq-ffi failed");
        }
        assert!(
            profile.join("libshmq.so").exists(),
            "no libshmq.so in {} or {}",
            deps.display(),
            profile.display()
        );
        profile
    })
}

/// Compiles `<dir>/<name>.c` (`dir` relative to this crate) against the header and
/// `libshmq.so` (once per test run).
pub fn c_program(dir: &'static str, name: &'static str) -> PathBuf {
    static BUILT: Mutex<Vec<(&'static str, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    // Names are unique across the directories: the programs share one output directory.
    if let Some((_, p)) = built.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shmq-ffi-examples");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let lib = lib_dir();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join(dir).join(format!("{name}.c")))
        .arg("-L")
        .arg(lib)
        .arg("-lshmq")
        // DT_RPATH, not DT_RUNPATH: cargo's LD_LIBRARY_PATH for tests includes
        // target/<profile>, whose libshmq.so is only as fresh as the last `cargo build`, and
        // LD_LIBRARY_PATH overrides a RUNPATH but not an RPATH.
        .arg("-Wl,--disable-new-dtags")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run cc");
    assert!(status.success(), "compiling {name}.c failed");
    built.push((name, out.clone()));
    out
}
