//! `shmq bridge`: a server that cannot be reached is reported at each attempt, then ends the
//! run with one clear error line and a non-zero status (the bridge's behaviour with servers is tested in
//! `bridge/tests/cluster.rs`).

mod common;

use common::{ok, path_in, shmq};

#[test]
fn unreachable_server_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let topic = path_in(dir.path(), "t");
    ok(&["create", &topic, "--partitions", "2", "--capacity", "1MiB"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let server = format!("nats://127.0.0.1:{port}");
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
