//! Helpers shared by the end-to-end tests: run the `shmq` binary and check its output.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    ok_with(args, b"")
}

/// [`ok`] with `stdin` as the input.
pub fn ok_with(args: &[&str], stdin: &[u8]) -> String {
    let out = shmq(args, stdin);
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

/// The exporter process; killed by its pid and reaped when dropped (also when a test fails).
pub struct Exporter {
    /// The process.
    pub child: std::process::Child,
    /// The address it serves on.
    pub addr: String,
}

impl Exporter {
    /// Starts `shmq exporter --listen 127.0.0.1:0 PATHS…` and reads the address it took from
    /// its first line of output.
    pub fn start(paths: &[&str]) -> Exporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shmq"))
            .args(["exporter", "--listen", "127.0.0.1:0"])
            .args(paths)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shmq exporter");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the exporter's first line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Exporter { child, addr }
    }

    /// `GET target`: the status line, the headers and the body.
    pub fn get(&self, target: &str) -> (String, String, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the exporter");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_string(), body.to_string())
    }

    /// Scrapes `/metrics` and returns every sample by `name{labels}`, checking that each
    /// metric has its `# HELP` and `# TYPE` lines.
    pub fn scrape(&self) -> HashMap<String, f64> {
        let (status, headers, body) = self.get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            headers.contains("Content-Type: text/plain; version=0.0.4"),
            "{headers}"
        );
        let mut samples = HashMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("shmq_"), "{line}");
            assert!(body.contains(&format!("# HELP {name} ")), "HELP of {name}");
            assert!(body.contains(&format!("# TYPE {name} ")), "TYPE of {name}");
            samples.insert(series.to_string(), value.parse().expect("a number"));
        }
        samples
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // `kill` signals the child's pid (SIGKILL); the exporter keeps no state to save.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series`, which must be there.
pub fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}
