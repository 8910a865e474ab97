//! The idempotent producer of the C ABI: a C program (`tests/c/idempotent.c`) publishes and
//! retries through `shmq_idempotent_*`, is run again as a restarted producer of the same id,
//! and is refused the id while a Rust handle holds it; the argument checks.

mod build;
mod common;

use std::process::Command;
use std::ptr::null_mut;

use build::c_program;
use common::{cpath, last_error};
use shmq::*;
use shmq_core::{IdOptions, Options, PublishOutcome, Queue, SeekTo};
use shmq_status::*;

/// Runs `idempotent PATH ID COUNT`: its exit code and standard output.
fn run_c(path: &std::path::Path, id: &str, count: u64) -> (i32, String) {
    let out = Command::new(c_program("tests/c", "idempotent"))
        .arg(path)
        .args([id, &count.to_string()])
        .output()
        .expect("run the idempotent program");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "the C program reported: {stderr}");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_restarted_c_producer_publishes_each_sequence_number_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idem.q");
    let queue = Queue::create(&path, &Options::default()).unwrap();
    assert_eq!(
        run_c(&path, "c-1", 50),
        (0, "next 0 published 50 duplicates 50\n".into())
    );
    // Restarted: it resumes at 50, and every earlier retry is a duplicate.
    assert_eq!(
        run_c(&path, "c-1", 80),
        (0, "next 50 published 30 duplicates 80\n".into())
    );
    let mut reader = queue.tail_reader(SeekTo::Earliest).unwrap();
    let mut n = 0u64;
    while let Some(m) = reader.poll(Some(std::time::Duration::ZERO)).unwrap() {
        assert_eq!(m.payload, format!("seq {n}").as_bytes());
        n += 1;
    }
    assert_eq!(n, 80);
    // A Rust handle of the same id sees what the C program published.
    let mut p = queue
        .idempotent_producer("c-1", &IdOptions::default())
        .unwrap();
    assert_eq!(p.publish(7, b"x").unwrap(), PublishOutcome::Duplicate(7));
    // While it holds the id, the C program is refused with SHMQ_EBUSY.
    let (code, out) = run_c(&path, "c-1", 80);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("held by live process"), "{out}");
}

#[test]
fn argument_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("args.q");
    Queue::create(&path, &Options::default()).unwrap();
    let mut q = null_mut();
    // SAFETY: valid arguments; every handle made here is freed below.
    unsafe {
        assert_eq!(shmq_open(cpath(&path).as_ptr(), &mut q), SHMQ_OK);
        let mut p = null_mut();
        let id = c"orders";
        assert_eq!(
            shmq_idempotent_producer_new(q, std::ptr::null(), 0, 0, &mut p),
            SHMQ_EINVAL
        );
        assert_eq!(
            shmq_idempotent_producer_new(q, id.as_ptr(), 3, 100, &mut p),
            SHMQ_EINVAL
        );
        assert!(
            last_error().contains("producer-id options"),
            "{}",
            last_error()
        );
        assert_eq!(
            shmq_idempotent_producer_new(q, id.as_ptr(), 0, 16, &mut p),
            SHMQ_OK
        );
        let mut busy = null_mut();
        assert_eq!(
            shmq_idempotent_producer_new(q, id.as_ptr(), 0, 0, &mut busy),
            SHMQ_EBUSY
        );
        assert!(busy.is_null(), "out written on failure");
        let (mut offset, mut dup) = (u64::MAX, true);
        for seq in 0..20u64 {
            assert_eq!(
                shmq_idempotent_publish(p, seq, b"x".as_ptr(), 1, 0, &mut offset, &mut dup),
                SHMQ_OK
            );
            assert_eq!((offset, dup), (seq, false));
        }
        assert_eq!(
            shmq_idempotent_publish(p, 19, b"x".as_ptr(), 1, 0, &mut offset, &mut dup),
            SHMQ_OK
        );
        assert_eq!((offset, dup), (19, true));
        // Older than the window of 16: refused, the outputs untouched.
        let (mut o2, mut d2) = (7u64, false);
        assert_eq!(
            shmq_idempotent_publish(p, 2, b"x".as_ptr(), 1, 0, &mut o2, &mut d2),
            SHMQ_EINVAL
        );
        assert!(last_error().contains("window"), "{}", last_error());
        assert_eq!((o2, d2), (7, false));
        let mut next = 0;
        assert_eq!(shmq_idempotent_next_sequence(p, &mut next), SHMQ_OK);
        assert_eq!(next, 20);
        assert_eq!(shmq_idempotent_next_sequence(p, null_mut()), SHMQ_EINVAL);
        shmq_idempotent_producer_free(p);
        shmq_idempotent_producer_free(null_mut());
        shmq_close(q);
    }
}
