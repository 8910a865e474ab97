//! Helpers shared by the end-to-end tests: run the `shmq` binary and check its output.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `shmq` with `args`, feeding `stdin`, and waits for it.
pub fn shmq(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for shmq")
}

/// `shmq` with `args` and no input; panics with its output unless it succeeds.
pub fn ok(args: &[&str]) -> String {
    let out = shmq(args, b"");
    assert!(
        out.status.success(),
        "shmq {args:?} failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Asserts that `shmq args` fails with exactly one stderr line `shmq: …` containing every
/// needle; returns that line.
pub fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = shmq(args, b"");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "shmq {args:?} should fail");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr:?}");
    assert!(stderr.starts_with("shmq: "), "{stderr:?}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{stderr:?} should mention {needle:?}"
        );
    }
    stderr
}

/// A path inside `dir` as a string.
pub fn path_in(dir: &Path, name: &str) -> String {
    dir.join(name)
        .to_str()
        .expect("UTF-8 temp path")
        .to_string()
}

/// Parses `shmq info --json`.
pub fn info(queue: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&["info", queue, "--json"])).expect("info prints JSON")
}

/// A `shmq` process running in the background, killed and reaped when dropped (also when a
/// test fails while it runs).
pub struct Background(pub std::process::Child);

impl Background {
    /// Starts `shmq` with `args`, its output discarded.
    pub fn start(args: &[&str]) -> Background {
        let child = Command::new(env!("CARGO_BIN_EXE_shmq"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shmq");
        Background(child)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `shmq info --json` of `queue` until `done` holds (at most 20 s, else the test fails
/// naming `what`); returns that info.
pub fn wait_for_info(
    queue: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = info(queue);
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
