//! `shmq bridge`: a server that cannot be reached is reported at each attempt, then ends the
//! run with one clear error line and a non-zero status; plain queue files bridged through a
//! real JetStream server (which the test starts on 127.0.0.1, and fails without) that is
//! killed and restarted, with the status lines' figures checked. The bridge's guarantees under
//! kills are tested in `bridge/tests/cluster.rs`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{info, ok, path_in, shmq};

#[test]
fn unreachable_server_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let topic = path_in(dir.path(), "t");
    ok(&["create", &topic, "--partitions", "2", "--capacity", "1MiB"]);
    let server = format!("nats://127.0.0.1:{}", free_port());
    for direction in ["out", "in"] {
        let out = shmq(
            &[
                "bridge",
                direction,
                &topic,
                "--server",
                &server,
                "--connect-attempts",
                "2",
            ],
            b"",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "one retry note, one error: {stderr}");
        assert!(
            lines[0].contains("retrying in 1 s") && lines[0].contains(&server),
            "{stderr}"
        );
        assert!(
            lines[1].starts_with(&format!(
                "shmq: {topic}: cannot connect to NATS at {server}"
            )),
            "{stderr}"
        );
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for a server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// A child process killed and reaped when dropped (also when the test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a JetStream server on 127.0.0.1:`port` storing into `store` (Debian puts nats-server
/// in /usr/sbin, so that is searched too).
fn nats_server(port: u16, store: &Path) -> Killed {
    let path = std::env::var("PATH").unwrap_or_default();
    let child = Command::new("nats-server")
        .env("PATH", format!("{path}:/usr/sbin:/usr/local/sbin"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start nats-server ({e}): install it (Debian: apt-get install nats-server)"
            )
        });
    Killed(child)
}

/// Starts `shmq bridge` with `args`, its stderr (the status lines) into `log`.
fn bridge(args: &[&str], log: &Path) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_shmq"))
        .arg("bridge")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("bridge log file"))
        .spawn()
        .expect("start shmq bridge");
    Killed(child)
}

/// Waits (up to a minute) until queue `path` holds `count` records.
fn wait_for_records(path: &str, count: u64, logs: &[&Path]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while info(path)["tail_offset"].as_u64() != Some(count) {
        assert!(
            Instant::now() < deadline,
            "{path}: {} records, {count} expected; logs: {:?}",
            info(path)["tail_offset"],
            logs.iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The figures of the last status line in `log`, by name (`forwarded/s`, `in-flight`,
/// `local lag`, ...), and the highest `forwarded/s` of any line.
fn last_status(log: &Path) -> (HashMap<String, u64>, u64) {
    let text = std::fs::read_to_string(log).expect("read the bridge log");
    let lines: Vec<HashMap<String, u64>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("shmq bridge: forwarded/s "))
        .map(|l| {
            // "R  forwarded N  skipped N  in-flight N  local lag N ...": pairs after the rate.
            let mut fields = l.split("  ");
            let mut figures = HashMap::new();
            let rate = fields
                .next()
                .expect("a rate")
                .parse()
                .expect("a whole rate");
            figures.insert("forwarded/s".to_string(), rate);
            for field in fields {
                let (name, value) = field.rsplit_once(' ').expect("name and figure");
                figures.insert(name.to_string(), value.parse().expect("a figure"));
            }
            figures
        })
        .collect();
    let top = lines.iter().map(|f| f["forwarded/s"]).max().unwrap_or(0);
    let last = lines
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no status line in:\n{text}"));
    (last, top)
}

#[test]
fn queue_files_through_a_restarted_server() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (path_in(dir.path(), "a.q"), path_in(dir.path(), "b.q"));
    for q in [&a, &b] {
        ok(&["create", q, "--capacity", "1MiB"]);
    }
    let port = free_port();
    let store = dir.path().join("store");
    let mut server = nats_server(port, &store);
    let url = format!("nats://127.0.0.1:{port}");
    let link = [
        "--server",
        &url,
        "--stream",
        "CLIQ",
        "--subject",
        "cliq",
        "--status-interval",
        "1s",
    ];
    let (out_log, in_log) = (dir.path().join("out.log"), dir.path().join("in.log"));
    let out_args = [&["out", a.as_str()][..], &link].concat();
    let mut out = bridge(&out_args, &out_log);
    let _in = bridge(
        &[&["in", b.as_str(), "--ack-wait", "2s"][..], &link].concat(),
        &in_log,
    );
    let logs = [out_log.as_path(), in_log.as_path()];
    let ids =
        |range: std::ops::Range<u64>| -> String { range.map(|i| format!("id {i}\n")).collect() };

    assert!(shmq(&["publish", &a], ids(0..1000).as_bytes())
        .status
        .success());
    wait_for_records(&b, 1000, &logs);
    // The server goes away and comes back on the same port with its store: both bridges
    // reconnect by themselves, and the records published meanwhile arrive once.
    drop(server);
    assert!(shmq(&["publish", &a], ids(1000..2000).as_bytes())
        .status
        .success());
    std::thread::sleep(Duration::from_secs(1));
    server = nats_server(port, &store);
    wait_for_records(&b, 2000, &logs);
    let got = ok(&[
        "consume", &b, "--group", "check", "--create", "--count", "2000", "--commit",
    ]);
    assert_eq!(got, ids(0..2000), "every record once, in order");

    // The status lines after a second more carry the final figures.
    std::thread::sleep(Duration::from_millis(2500));
    for (log, side) in [(&out_log, "out"), (&in_log, "in")] {
        let (last, top) = last_status(log);
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert_eq!(last["forwarded"], 2000, "{side}: {text}");
        assert_eq!(last["in-flight"], 0, "{side}: {text}");
        assert_eq!(last["local lag"], 0, "{side}: {text}");
        assert_eq!(last["remote lag"], 0, "{side}: {text}");
        assert!(last["disconnects"] >= 1, "{side}: {text}");
        assert!(last["reconnects"] >= 1, "{side}: {text}");
        assert!(
            top > 0,
            "{side}: a line with records forwarded per second: {text}"
        );
    }

    // Ctrl-C while the server is down: bridge-out waits at most 10 s for its PubAcks, ends
    // cleanly and leaves those records uncommitted; restarted, it sends them once.
    drop(server);
    assert!(shmq(&["publish", &a], ids(2000..2100).as_bytes())
        .status
        .success());
    std::thread::sleep(Duration::from_secs(1));
    let pid = nix::unistd::Pid::from_raw(out.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT bridge-out");
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = out.0.try_wait().expect("wait for bridge-out") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "bridge-out still runs 40 s after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_log).unwrap_or_default();
    assert!(status.success(), "{status}: {text}");
    assert!(
        text.contains("not acknowledged; they stay uncommitted"),
        "{text}"
    );
    server = nats_server(port, &store);
    // Asking for a longer duplicate window than the existing stream's gets a warning.
    let out2_log = dir.path().join("out2.log");
    out = bridge(
        &[&out_args[..], &["--duplicate-window", "1h"]].concat(),
        &out2_log,
    );
    wait_for_records(&b, 2100, &logs);
    let text = std::fs::read_to_string(&out2_log).unwrap_or_default();
    assert!(
        text.contains("stream CLIQ has a duplicate window of 600s, not 3600s"),
        "{text}"
    );
    let got = ok(&["consume", &b, "--group", "check", "--count", "100"]);
    assert_eq!(got, ids(2000..2100), "the rest once, in order");
    drop((out, server));
}
