//! `shmq_producer_set_coarse_timestamps`: a C producer on the coarse clock stamps its records
//! with the time of the kernel's last tick (shared by records published within one tick, at
//! most one tick early), and can go back to the precise clock.

mod common;

use std::ptr::null_mut;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{cpath, last_error};
use shmq::*;
use shmq_status::*;

/// Nanoseconds since the Unix epoch, as `SystemTime` says.
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Publishes `n` records through `p` and returns the wall clock before and after.
fn publish(p: *mut shmq_producer, n: u32) -> (u64, u64) {
    let before = wall_ns();
    for i in 0..n {
        let data = i.to_le_bytes();
        // SAFETY: a live producer used by this thread only, readable data, no offset out.
        let status = unsafe { shmq_publish(p, data.as_ptr(), data.len(), 0, null_mut()) };
        assert_eq!(status, SHMQ_OK);
    }
    (before, wall_ns())
}

/// How many distinct timestamps the next `n` records carry, checking each is within
/// `from..=to`.
fn distinct_stamps(c: &mut shmq_core::Consumer, n: u32, from: u64, to: u64) -> usize {
    let mut stamps: Vec<u64> = (0..n)
        .map(|_| {
            let m = c.poll(Some(Duration::from_secs(5))).unwrap().unwrap();
            assert!(
                (from..=to).contains(&m.timestamp_ns),
                "{} not in {from}..={to}",
                m.timestamp_ns
            );
            m.timestamp_ns
        })
        .collect();
    stamps.dedup();
    stamps.len()
}

#[test]
fn a_c_producer_can_stamp_with_the_coarse_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let rust = shmq_core::Queue::create(&path, &shmq_core::Options::default()).unwrap();
    let mut c = rust.consumer("g").unwrap();
    let mut q = null_mut();
    let p_path = cpath(&path);
    // SAFETY: a NUL-terminated path, writable out.
    assert_eq!(unsafe { shmq_open(p_path.as_ptr(), &mut q) }, SHMQ_OK);
    let mut p = null_mut();
    // SAFETY: live queue, writable out.
    assert_eq!(unsafe { shmq_producer_new(q, &mut p) }, SHMQ_OK);

    // SAFETY: a live producer used by this thread only.
    let status = unsafe { shmq_producer_set_coarse_timestamps(p, true) };
    assert_eq!(status, SHMQ_OK);
    let (before, after) = publish(p, 1000);
    let tick = 10_000_000; // the longest tick: CONFIG_HZ = 100
    let coarse = distinct_stamps(&mut c, 1000, before - tick, after);
    assert!(coarse < 100, "{coarse} distinct coarse stamps of 1000");

    // SAFETY: as above.
    let status = unsafe { shmq_producer_set_coarse_timestamps(p, false) };
    assert_eq!(status, SHMQ_OK);
    let (before, after) = publish(p, 1000);
    let precise = distinct_stamps(&mut c, 1000, before, after);
    assert!(precise > 500, "{precise} distinct precise stamps of 1000");

    // SAFETY: a NULL handle is refused, not dereferenced.
    let null = unsafe { shmq_producer_set_coarse_timestamps(null_mut(), true) };
    assert_eq!(null, SHMQ_EINVAL);
    assert!(
        last_error().contains("producer is NULL"),
        "{}",
        last_error()
    );

    // SAFETY: each handle is live and freed once.
    unsafe {
        shmq_producer_free(p);
        shmq_close(q);
    }
}
