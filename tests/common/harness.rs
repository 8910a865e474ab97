//! The test runner of the `harness = false` test binaries (they need their own `main` to
//! dispatch to a child role): it reads libtest's command line, so `cargo test`, `cargo nextest`
//! and a person running the binary drive it as they drive a libtest binary.
//!
//! Shared by the test crates of the workspace (each includes this file by path).
#![allow(dead_code)] // each test binary uses a part of it

use std::time::Instant;

/// The command line of a test binary, as libtest reads it, so that `cargo test`, `cargo
/// nextest` and a person running the binary all drive a `harness = false` binary the same way:
/// `--list` (with `--format terse`: only the `name: test` lines), `--ignored`,
/// `--include-ignored`, `--exact`, `--skip PATTERN` and name filters. Options that only shape
/// libtest's own output (`--nocapture`, `--test-threads`, `--color`, ...) are accepted and
/// change nothing here: the tests run one after the other and print as they go.
struct Args {
    list: bool,
    terse: bool,
    ignored: bool,
    exact: bool,
    skip: Vec<String>,
    filters: Vec<String>,
}

impl Args {
    /// Parses this process's arguments; exits with status 2 and a message on one it does not
    /// know, as libtest does.
    fn parse() -> Args {
        let mut args = Args {
            list: false,
            terse: false,
            ignored: false,
            exact: false,
            skip: Vec::new(),
            filters: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline.clone().or_else(|| it.next()).unwrap_or_else(|| {
                    eprintln!("error: {name} needs a value");
                    std::process::exit(2)
                })
            };
            match flag.as_str() {
                "--list" => args.list = true,
                "--format" => args.terse = value("--format") == "terse",
                "--ignored" => args.ignored = true,
                "--exact" => args.exact = true,
                "--skip" => args.skip.push(value("--skip")),
                "--test-threads" | "--color" | "--logfile" | "-Z" => {
                    value(&flag);
                }
                // `--include-ignored` selects what a plain run does: none of these tests is
                // ignored.
                "--include-ignored" | "--nocapture" | "--show-output" | "--quiet" | "-q"
                | "--test" => {}
                f if f.starts_with('-') => {
                    eprintln!("error: unknown option {f}");
                    std::process::exit(2)
                }
                _ => args.filters.push(arg),
            }
        }
        args
    }

    /// Whether the test `name` (never ignored: these binaries have no ignored tests) is
    /// selected.
    fn selects(&self, name: &str) -> bool {
        let matches = |pattern: &str| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern)
            }
        };
        !self.ignored
            && (self.filters.is_empty() || self.filters.iter().any(|f| matches(f)))
            && !self.skip.iter().any(|s| matches(s))
    }
}

/// Whether this run only lists the tests (`--list`), so a test binary can skip checks that
/// only running its tests needs (e.g. being root).
pub fn listing() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// Runs the named tests that the command line selects (see [`Args`]), catching panics; prints
/// a cargo-like report and the plain closing line `N passed, N failed`; exits non-zero on any
/// failure. With `--list`, prints the selected tests as libtest does instead of running them.
pub fn run(tests: &[(&str, fn())]) {
    let args = Args::parse();
    let selected: Vec<_> = tests
        .iter()
        .filter(|(name, _)| args.selects(name))
        .collect();
    if args.list {
        for (name, _) in &selected {
            println!("{name}: test");
        }
        if !args.terse {
            println!("\n{} tests, 0 benchmarks", selected.len());
        }
        return;
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in selected {
        let start = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1?})", start.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
