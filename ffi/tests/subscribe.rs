//! `shmq_consumer_subscribe`: a group created non-gating never holds producers back, one
//! created at `latest` skips what was published before it, and unknown flags are refused
//! without writing the out-parameter.

mod common;

use std::ffi::CString;
use std::ptr::null_mut;

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

/// A 4 KiB BLOCK queue in `dir` and a producer of it.
fn queue(dir: &std::path::Path) -> (*mut shmq_queue, *mut shmq_producer) {
    let mut o = std::mem::MaybeUninit::<shmq_options>::uninit();
    // SAFETY: `o` is writable; on SHMQ_OK it is fully initialised.
    assert_eq!(unsafe { shmq_options_default(o.as_mut_ptr()) }, SHMQ_OK);
    // SAFETY: initialised by shmq_options_default above.
    let mut o = unsafe { o.assume_init() };
    o.capacity_bytes = 4096;
    o.max_message_bytes = 1024;
    let (mut q, mut p) = (null_mut(), null_mut());
    let path = cpath(&dir.join("q"));
    // SAFETY: valid C string, initialised options, writable out.
    assert_eq!(unsafe { shmq_create(path.as_ptr(), &o, &mut q) }, SHMQ_OK);
    // SAFETY: live queue, writable out.
    assert_eq!(unsafe { shmq_producer_new(q, &mut p) }, SHMQ_OK);
    (q, p)
}

/// Publishes `data` with a 5 s timeout; returns the status.
fn publish(p: *mut shmq_producer, data: &[u8]) -> shmq_status {
    let mut offset = 0;
    // SAFETY: live producer, `data` readable, writable out.
    unsafe { shmq_publish(p, data.as_ptr(), data.len(), 5_000_000_000, &mut offset) }
}

/// Subscribes to `group` with `flags`.
fn subscribe(
    q: *mut shmq_queue,
    group: &str,
    flags: u32,
) -> Result<*mut shmq_consumer, shmq_status> {
    let mut c = null_mut();
    let g = CString::new(group).unwrap();
    // SAFETY: live queue, valid C string, writable out.
    match unsafe { shmq_consumer_subscribe(q, g.as_ptr(), flags, &mut c) } {
        SHMQ_OK => Ok(c),
        st => {
            assert!(c.is_null(), "out written on failure");
            Err(st)
        }
    }
}

#[test]
fn a_non_gating_latest_group_skips_the_past_and_holds_nobody_back() {
    let dir = tempfile::tempdir().unwrap();
    let (q, p) = queue(dir.path());
    assert_eq!(publish(p, b"before"), SHMQ_OK);
    let c = subscribe(q, "peek", SHMQ_SUBSCRIBE_NON_GATING | SHMQ_SUBSCRIBE_LATEST).unwrap();
    assert_eq!(publish(p, b"after"), SHMQ_OK);
    let mut m = std::mem::MaybeUninit::<shmq_message>::uninit();
    // SAFETY: live consumer, writable out.
    let status = unsafe { shmq_poll(c, 1_000_000_000, m.as_mut_ptr()) };
    assert_eq!(status, SHMQ_OK);
    // SAFETY: written on SHMQ_OK.
    let m = unsafe { m.assume_init() };
    // SAFETY: valid until the next call on the consumer.
    let payload = unsafe { std::slice::from_raw_parts(m.data, m.len) };
    assert_eq!((m.offset, payload), (1, &b"after"[..]));
    // A 4 KiB ring laps many times over; a gating group would block the producer.
    for _ in 0..500 {
        assert_eq!(publish(p, &[7u8; 100]), SHMQ_OK, "{}", last_error());
    }
    // SAFETY: each handle is live and freed once.
    unsafe {
        shmq_consumer_free(c);
        shmq_producer_free(p);
        shmq_close(q);
    }
    assert_eq!(groups(dir.path()), vec![("peek".to_string(), false)]);
}

#[test]
fn unknown_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (q, p) = queue(dir.path());
    assert_eq!(subscribe(q, "g", 4), Err(SHMQ_EINVAL));
    assert_eq!(
        last_error(),
        "flags 0x4 has unknown bits 0x4 (known: \
         SHMQ_SUBSCRIBE_NON_GATING, SHMQ_SUBSCRIBE_LATEST)"
    );
    // SAFETY: each handle is live and freed once.
    unsafe {
        shmq_producer_free(p);
        shmq_close(q);
    }
    assert_eq!(groups(dir.path()), vec![], "nothing was created");
}

/// The groups of `dir/q` as (name, gating), read with the Rust library.
fn groups(dir: &std::path::Path) -> Vec<(String, bool)> {
    let queue = shmq_core::Queue::open(dir.join("q")).unwrap();
    queue
        .groups()
        .into_iter()
        .map(|g| (g.name, g.gating))
        .collect()
}
