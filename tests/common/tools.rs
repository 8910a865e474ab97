//! Tests that need a program this machine may lack (valgrind, python3, c++, maturin, pytest,
//! nats-server, mkfs.ext4) fail when it is missing, with a message naming what to install: a
//! test that passes because its tool is missing checks nothing. A missing tool is skipped only
//! when the environment variable `SHMQ_ALLOW_SKIP` names it (a comma-separated list, e.g.
//! `SHMQ_ALLOW_SKIP=valgrind,python3`, or `all`); the skip is then printed.
//!
//! Shared by the test crates of the workspace (each includes this file by path).
#![allow(dead_code)] // each test binary uses a part of it

use std::process::{Command, Stdio};

/// The environment variable that lists the tools whose tests may be skipped.
pub const ALLOW_SKIP: &str = "SHMQ_ALLOW_SKIP";

/// Whether `program args...` runs and exits with success (its output discarded).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether [`ALLOW_SKIP`] names `tool` (or is `all`).
fn skip_allowed(tool: &str) -> bool {
    std::env::var(ALLOW_SKIP)
        .is_ok_and(|v| v.split(',').map(str::trim).any(|t| t == tool || t == "all"))
}

/// Whether the test needing `tool` runs: true if `found`. Otherwise panics with `install` (how
/// to get it), unless [`ALLOW_SKIP`] names `tool`: then prints that `what` is skipped and
/// returns false, and the caller returns without checking anything.
pub fn require(tool: &str, found: bool, what: &str, install: &str) -> bool {
    if found {
        return true;
    }
    if skip_allowed(tool) {
        eprintln!("SKIPPED {what}: {tool} is missing ({ALLOW_SKIP} allows it); {install}");
        return false;
    }
    panic!(
        "{what}: {tool} is missing or does not run. Install it ({install}), or set \
         {ALLOW_SKIP}={tool} to skip these checks"
    );
}

/// [`require`] for valgrind, to check `what` (e.g. "the C inbox program") under it.
pub fn require_valgrind(what: &str) -> bool {
    require(
        "valgrind",
        runs("valgrind", &["--version"]),
        &format!("checking {what} under valgrind"),
        "Debian: apt-get install valgrind (.ci/run installs it)",
    )
}
