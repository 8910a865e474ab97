//! Shared helpers for the integration tests: re-running this test binary as a child in a
//! given role, signalling, stopping and reaping children (also forked ones), self-checking
//! payloads; the file layouts (`format`), the test runner of the `harness = false` binaries
//! (`harness`) and the check for a missing tool (`tools`).
#![allow(dead_code)] // each test binary uses a different subset

pub mod format;
pub mod harness;
pub mod tools;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const ROLE: &str = "SHMQ_TEST_ROLE";

/// The child role this process was started in, if any.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// A required environment argument of a child.
pub fn arg<T: std::str::FromStr>(name: &str) -> T {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("child needs {name}"));
    v.parse()
        .unwrap_or_else(|_| panic!("{name}={v} does not parse"))
}

/// Starts this binary again as a child in `role` with `env` set.
pub fn spawn(role: &str, env: &[(&str, String)]) -> Child {
    command_via(&[], role, env).spawn().expect("spawn child")
}

/// The command that runs this binary again as a child in `role` with `env` set, through
/// `wrapper` if it is not empty: a program and its arguments, to which the binary's path is
/// appended (e.g. `unshare --pid --fork` to run the child in a pid namespace of its own).
/// Standard input is closed, standard output piped, standard error inherited.
pub fn command_via(wrapper: &[&str], role: &str, env: &[(&str, String)]) -> Command {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = match wrapper.split_first() {
        None => Command::new(&exe),
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(&exe);
            cmd
        }
    };
    cmd.env(ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A test that fails leaves no child behind: each one is killed when the test process dies.
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe and touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// Waits for `child` up to `limit`; kills it and panics on timeout; returns its stdout and
/// exit status.
pub fn wait(mut child: Child, limit: Duration, what: &str) -> (String, ExitStatus) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            use std::io::Read;
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            return (out, status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a child was ended by SIGKILL.
pub fn killed(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    const SIGKILL: i32 = 9;
    status.signal() == Some(SIGKILL)
}

/// A small deterministic PRNG (xorshift64*) for kill timing; seeded and printed by each test.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock (the seed is printed so a failure can be replayed
    /// with `SHMQ_SEED`).
    pub fn new() -> Rng {
        let seed = std::env::var("SHMQ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("  seed {seed} (replay with SHMQ_SEED={seed})");
        Rng(seed)
    }

    /// A value in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        lo + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (hi - lo)
    }
}

/// SIGKILLs a child and reaps it.
pub fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A payload that names its producer and sequence number and checks itself: 8 bytes of
/// `(producer, seq)` then a pattern derived from them; length varies with `seq`.
pub fn payload(producer: u32, seq: u32, max: usize) -> Vec<u8> {
    let len = 8 + (seq as usize * 7919 + producer as usize * 31) % (max - 8);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&producer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|i| pattern(producer, seq, i)));
    v
}

fn pattern(producer: u32, seq: u32, i: usize) -> u8 {
    (producer.wrapping_mul(131) ^ seq.wrapping_mul(7) ^ i as u32) as u8
}

/// Decodes and verifies a payload made by [`payload`]: `(producer, seq)`, or a description of
/// the damage.
pub fn check(p: &[u8]) -> Result<(u32, u32), String> {
    if p.len() < 8 {
        return Err(format!("payload of {} bytes is too short", p.len()));
    }
    let producer = u32::from_le_bytes(p[..4].try_into().unwrap());
    let seq = u32::from_le_bytes(p[4..8].try_into().unwrap());
    match (8..p.len()).find(|&i| p[i] != pattern(producer, seq, i)) {
        None => Ok((producer, seq)),
        Some(i) => Err(format!("payload ({producer}, {seq}) corrupt at byte {i}")),
    }
}

/// Appends one line to a log file with a single write(2), so nothing sits in a user-space
/// buffer. A SIGKILL can still cut that write short (the kernel checks for a fatal signal between
/// the pages it copies), leaving a torn last line without its newline: [`read_log`] drops it.
pub fn log_line(file: &mut std::fs::File, line: &str) {
    file.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// A fresh temporary directory and a queue path inside it.
pub fn queue_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("queue.shmq")
}

/// Reads a log written with [`log_line`] (see [`parse_log`]); a missing file is an empty log.
pub fn read_log(path: &Path) -> Vec<Vec<u64>> {
    parse_log(&std::fs::read_to_string(path).unwrap_or_default())
}

/// Parses a log of whitespace-separated integers, one record per line. A final line without
/// its newline is dropped: it is the torn write of a child killed in the middle of
/// [`log_line`], and what it holds may be a prefix of a number that parses as another one.
pub fn parse_log(text: &str) -> Vec<Vec<u64>> {
    text.split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
        .collect()
}

/// CPU time consumed so far by the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid, exclusively borrowed local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Waits until `done` is true, checking every millisecond; panics after `limit`. How long it
/// took.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) takes no memory; `pid` is a child of this test, not yet reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// Waits until child `pid` has stopped (SIGSTOP).
pub fn wait_stopped(pid: libc::pid_t, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child writes only `status`; WUNTRACED reports a stop
        // without reaping.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED | libc::WNOHANG) };
        if r == pid {
            assert!(
                libc::WIFSTOPPED(status),
                "{what} ended instead of stopping ({status:#x})"
            );
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` in a forked child and ends the child with its result as exit code (101 if it
/// panicked), never returning into the test harness.
pub fn in_child(f: impl FnOnce() -> i32) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
    // SAFETY: _exit(2) ends this forked copy of the test process without running the
    // parent's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Waits up to `limit` for forked child `pid` to end; returns its exit code (128 + the signal
/// if a signal ended it), or `None` if it was still running, and then SIGKILLs and reaps it.
pub fn reap(pid: libc::pid_t, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child writes only `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            });
        }
        assert_eq!(r, 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: as above; kill(2) on our own child, then reap it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A log whose writer was killed mid-line keeps its complete lines only.
#[test]
fn parse_log_drops_a_torn_last_line() {
    assert_eq!(
        parse_log("45539\n45540\n45541\n45"),
        [[45539], [45540], [45541]]
    );
    assert_eq!(parse_log("0 7 3 1 2\n1 4 0"), [[0, 7, 3, 1, 2]]);
    assert_eq!(parse_log("1 2\n3 4\n"), [[1, 2], [3, 4]]);
    assert!(parse_log("12").is_empty());
    assert!(parse_log("").is_empty());
}
