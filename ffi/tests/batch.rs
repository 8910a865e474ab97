//! The batch calls of the C ABI: `shmq_publish_batch` and `shmq_poll_batch`, from a C program
//! (`tests/c/batch.c`) against a Rust peer in each direction, and their argument checks.

mod build;
mod common;

use std::ffi::c_void;
use std::process::Command;
use std::ptr::{null, null_mut};
use std::time::Duration;

use build::c_program;
use common::{cpath, last_error};
use shmq::*;
use shmq_core::{FullPolicy, Options, Queue};
use shmq_status::*;

const COUNT: u64 = 20_000;

fn new_queue(dir: &std::path::Path) -> (std::path::PathBuf, Queue) {
    let path = dir.join("batch.q");
    let options = Options {
        capacity: 1 << 16,
        max_message: 256,
        full_policy: FullPolicy::Block,
        ..Options::default()
    };
    (path.clone(), Queue::create(&path, &options).unwrap())
}

/// Runs `batch PATH <role> COUNT BATCH` and checks that it succeeded.
fn run_c(path: &std::path::Path, role: &str, batch: u32) -> std::process::Child {
    Command::new(c_program("tests/c", "batch"))
        .arg(path)
        .args([role, &COUNT.to_string(), &batch.to_string()])
        .spawn()
        .expect("run the batch program")
}

#[test]
fn c_batches_to_a_rust_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, queue) = new_queue(dir.path());
    let mut consumer = queue.consumer("g").unwrap();
    let mut child = run_c(&path, "produce", 64);
    let mut next = 0u64;
    while next < COUNT {
        consumer
            .poll_batch(64, Some(Duration::from_secs(20)), |m| {
                assert_eq!(m.offset, next);
                assert_eq!(m.payload, format!("batch {next}").as_bytes());
                next += 1;
            })
            .unwrap();
        consumer.commit(next - 1).unwrap();
    }
    assert!(child.wait().unwrap().success(), "the C producer failed");
}

#[test]
fn rust_batches_to_a_c_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, queue) = new_queue(dir.path());
    // The group exists before the producer starts, so it holds every record.
    drop(queue.consumer("g").unwrap());
    let mut child = run_c(&path, "consume", 16);
    let mut producer = queue.producer().unwrap();
    for first in (0..COUNT).step_by(50) {
        let payloads: Vec<String> = (first..first + 50).map(|i| format!("batch {i}")).collect();
        let slices: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        assert_eq!(producer.publish_batch(&slices).unwrap(), first);
    }
    assert!(child.wait().unwrap().success(), "the C consumer failed");
}

/// Counts the records `shmq_poll_batch` hands to it (`ctx` is a `u64`).
unsafe extern "C" fn count(ctx: *mut c_void, _message: *const shmq_message) {
    // SAFETY: the test passes a `u64` as `ctx`, alive for the call.
    unsafe { *ctx.cast::<u64>() += 1 };
}

#[test]
fn argument_checks_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _queue) = new_queue(dir.path());
    let (mut q, mut p, mut c) = (null_mut(), null_mut(), null_mut());
    let group = c"g";
    // SAFETY: valid C strings and writable out-parameters; handles used by this thread only,
    // freed once at the end; record arrays and counters live across each call.
    unsafe {
        assert_eq!(shmq_open(cpath(&path).as_ptr(), &mut q), SHMQ_OK);
        assert_eq!(shmq_producer_new(q, &mut p), SHMQ_OK);
        assert_eq!(shmq_consumer_new(q, group.as_ptr(), &mut c), SHMQ_OK);
        let mut first = u64::MAX;
        let records = [b"one".as_slice(), b"two", b""].map(|r| shmq_record {
            data: if r.is_empty() { null() } else { r.as_ptr() },
            len: r.len(),
        });
        assert_eq!(
            shmq_publish_batch(p, records.as_ptr(), 0, 0, &mut first),
            SHMQ_EINVAL
        );
        assert_eq!(shmq_publish_batch(p, null(), 3, 0, &mut first), SHMQ_EINVAL);
        assert_eq!(first, u64::MAX, "written on failure");
        assert_eq!(
            shmq_publish_batch(p, records.as_ptr(), 3, 0, &mut first),
            SHMQ_OK
        );
        assert_eq!(first, 0);
        let big = vec![0u8; 257];
        let too_big = [shmq_record {
            data: big.as_ptr(),
            len: big.len(),
        }];
        assert_eq!(
            shmq_publish_batch(p, too_big.as_ptr(), 1, 0, &mut first),
            SHMQ_ETOOBIG
        );

        let mut seen = 0u64;
        let ctx = (&mut seen as *mut u64).cast::<c_void>();
        let mut handed = 0usize;
        assert_eq!(
            shmq_poll_batch(c, 8, 0, None, ctx, &mut handed),
            SHMQ_EINVAL
        );
        assert_eq!(last_error(), "callback is NULL");
        assert_eq!(
            shmq_poll_batch(c, 2, 0, Some(count), ctx, &mut handed),
            SHMQ_OK
        );
        assert_eq!((handed, seen), (2, 2));
        assert_eq!(
            shmq_poll_batch(c, 8, 0, Some(count), ctx, &mut handed),
            SHMQ_OK
        );
        assert_eq!((handed, seen), (1, 3));
        assert_eq!(
            shmq_poll_batch(c, 8, 0, Some(count), ctx, &mut handed),
            SHMQ_TIMEOUT
        );
        assert_eq!(seen, 3);
        shmq_consumer_free(c);
        shmq_producer_free(p);
        shmq_close(q);
    }
}
