//! A C process whose queue file is truncated under it while it publishes and consumes
//! (`tests/c/truncate_while_running.c`): it must not die of SIGBUS, but see `SHMQ_ESTALE` on
//! every later call, keep using its other queue, and exit normally. Truncated to 0 and to
//! mid-file, in turn.

mod build;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use build::c_program;
use shmq_core::{Options, Queue};

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn a_c_process_sees_estale_when_its_file_is_truncated() {
    let program = c_program("tests/c", "truncate_while_running");
    for round in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim.q");
        let other = dir.path().join("other.q");
        let options = Options {
            capacity: 1 << 20,
            max_message: 1024,
            ..Options::default()
        };
        Queue::create(&path, &options).unwrap();
        Queue::create(&other, &options).unwrap();
        let mut child = Command::new(&program)
            .arg(&path)
            .arg(&other)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run truncate_while_running");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Blocks until the program is under way (or has ended, which the asserts below report).
        let first = lines.next().map(Result::unwrap);
        assert_eq!(first.as_deref(), Some("running"), "round {round}");
        let size = std::fs::metadata(&path).unwrap().len();
        let to = if round % 2 == 0 { 0 } else { size / 2 };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(to)
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("round {round}: the C process did not finish within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            status.success(),
            "round {round} (truncated to {to} of {size} bytes): {status:?}"
        );
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        assert_eq!(rest, ["estale"], "round {round}");
        println!(
            "round {round}: truncated to {to} of {size} bytes; SHMQ_ESTALE and a normal exit \
             after {:.2?}",
            start.elapsed()
        );
    }
}
