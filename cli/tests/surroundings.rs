//! `shmq info` and `shmq stat` on a queue file that was removed or replaced while a process
//! maps it.

mod common;

use std::time::{Duration, Instant};

use common::{fails, info, ok, path_in, Background};

/// Waits until process `pid` maps `path` (at most 20 s).
fn wait_until_mapped(pid: u32, path: &str) {
    let start = Instant::now();
    let suffix = format!(" {path}");
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.lines().any(|l| l.ends_with(&suffix)) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pid {pid} never mapped {path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn info_names_the_processes_that_map_a_removed_or_replaced_file() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    // A process that maps the queue and looks at it again only in ten minutes.
    let holder = Background::start(&["stat", &q, "--interval", "10m"]);
    wait_until_mapped(holder.pid(), &q);
    assert!(
        info(&q).get("detached_pids").is_none(),
        "nothing detached yet"
    );

    std::fs::remove_file(&q).unwrap();
    let pid = format!("pid {}", holder.pid());
    fails(
        &["info", &q],
        &["no such queue file", "a removed file at this path", &pid],
    );

    ok(&["create", &q, "--capacity", "64KiB"]);
    let v = info(&q);
    assert_eq!(v["detached_pids"], serde_json::json!([holder.pid()]), "{v}");
    let text = ok(&["info", &q]);
    assert!(text.contains("DETACHED") && text.contains(&pid), "{text}");
}

#[test]
fn stat_stops_when_its_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let q = path_in(dir.path(), "q");
    ok(&["create", &q, "--capacity", "64KiB"]);
    let mut stat = Background::start(&["stat", &q, "--interval", "100ms"]);
    wait_until_mapped(stat.pid(), &q);
    std::fs::remove_file(&q).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = stat.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "stat did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "stat ends with an error: {status:?}");
}
