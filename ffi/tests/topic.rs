//! The `shmq_topic_*` functions, called through the C ABI (the rlib exports the same code as
//! `libshmq.so`): create, keyed/round-robin/direct publishing, a group member polling and
//! committing, growth, and the error statuses with out-parameters left untouched.

mod common;

use std::collections::HashMap;
use std::ffi::CString;
use std::path::Path;
use std::ptr::{null, null_mut};

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

fn small_options() -> shmq_options {
    let mut o = std::mem::MaybeUninit::<shmq_options>::uninit();
    // SAFETY: `o` is writable; on SHMQ_OK it is fully initialised.
    assert_eq!(unsafe { shmq_options_default(o.as_mut_ptr()) }, SHMQ_OK);
    // SAFETY: initialised above.
    let mut o = unsafe { o.assume_init() };
    o.capacity_bytes = 1 << 16;
    o.max_message_bytes = 1024;
    o
}

fn create(path: &Path, partitions: u32) -> *mut shmq_topic {
    let mut t = null_mut();
    let o = small_options();
    // SAFETY: valid C string, initialised options, writable out.
    let st = unsafe { shmq_topic_create(cpath(path).as_ptr(), partitions, &o, &mut t) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    t
}

fn partitions(t: *const shmq_topic) -> u32 {
    let mut n = 0;
    // SAFETY: live topic, writable out.
    assert_eq!(unsafe { shmq_topic_partitions(t, &mut n) }, SHMQ_OK);
    n
}

fn producer(t: *const shmq_topic) -> *mut shmq_topic_producer {
    let mut p = null_mut();
    // SAFETY: live topic, writable out.
    assert_eq!(unsafe { shmq_topic_producer_new(t, &mut p) }, SHMQ_OK);
    p
}

fn consumer(t: *const shmq_topic, group: &str) -> *mut shmq_topic_consumer {
    let mut c = null_mut();
    let g = CString::new(group).unwrap();
    // SAFETY: live topic, valid C string, writable out.
    let st = unsafe { shmq_topic_consumer_new(t, g.as_ptr(), &mut c) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    c
}

/// A polled record, copied: `(partition, offset, key, value)`.
type Record = (u32, u64, Option<Vec<u8>>, Vec<u8>);

/// Polls one record and copies it.
fn poll(c: *mut shmq_topic_consumer, timeout_ns: i64) -> Option<Record> {
    let mut m = std::mem::MaybeUninit::<shmq_topic_message>::uninit();
    // SAFETY: live consumer used by this thread only, writable out.
    match unsafe { shmq_topic_poll(c, timeout_ns, m.as_mut_ptr()) } {
        SHMQ_OK => {}
        SHMQ_TIMEOUT => return None,
        st => panic!("poll: {st:?}: {}", last_error()),
    }
    // SAFETY: written on SHMQ_OK.
    let m = unsafe { m.assume_init() };
    let copy = |p: *const u8, len: usize| {
        if len == 0 {
            Vec::new()
        } else {
            // SAFETY: valid until the next call on the consumer; copied at once.
            unsafe { std::slice::from_raw_parts(p, len) }.to_vec()
        }
    };
    let key = m.has_key.then(|| copy(m.key, m.key_len));
    assert!(m.has_key || (m.key.is_null() && m.key_len == 0));
    Some((m.partition, m.offset, key, copy(m.data, m.len)))
}

#[test]
fn publish_poll_commit_and_grow_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.topic");
    let t = create(&path, 4);
    assert_eq!(partitions(t), 4);

    let mut part = 99;
    // SAFETY: 9 readable bytes, writable out.
    let st = unsafe { shmq_topic_partition_for_key(b"123456789".as_ptr(), 9, 8, &mut part) };
    assert_eq!((st, part), (SHMQ_OK, 3), "the documented test vector");

    let c = consumer(t, "billing");
    let p = producer(t);
    let mut routed = HashMap::new();
    for seq in 0..3u32 {
        for k in 0..100 {
            let key = format!("order-{k}");
            let (mut partition, mut offset) = (99, 0);
            // SAFETY: live producer; the buffers are readable for their lengths; outs writable.
            let st = unsafe {
                shmq_topic_publish_keyed(
                    p,
                    key.as_ptr(),
                    key.len(),
                    seq.to_le_bytes().as_ptr(),
                    4,
                    -1,
                    &mut partition,
                    &mut offset,
                )
            };
            assert_eq!(st, SHMQ_OK, "{}", last_error());
            assert_eq!(partition, shmq_core::partition_for_key(key.as_bytes(), 4));
            routed.insert(key, partition);
        }
    }
    let mut offset = 0;
    // SAFETY: live producer, NULL key means none, readable data, writable out.
    let st =
        unsafe { shmq_topic_publish_to(p, 2, null(), 0, b"direct".as_ptr(), 6, 0, &mut offset) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    let mut rr = [0; 4];
    for _ in 0..8 {
        let mut partition = 99;
        // SAFETY: live producer, readable data, writable out; NULL offset_out is allowed.
        let st = unsafe { shmq_topic_publish(p, b"rr".as_ptr(), 2, 0, &mut partition, null_mut()) };
        assert_eq!(st, SHMQ_OK);
        rr[partition as usize] += 1;
    }
    assert_eq!(rr, [2; 4], "round-robin");

    let mut next: HashMap<Vec<u8>, u32> = HashMap::new();
    let (mut direct, mut unkeyed) = (0, 0);
    while let Some((partition, offset, key, value)) = poll(c, 200_000_000) {
        match key {
            Some(k) => {
                assert_eq!(routed[std::str::from_utf8(&k).unwrap()], partition);
                let n = next.entry(k).or_default();
                assert_eq!(value, n.to_le_bytes(), "per-key order");
                *n += 1;
            }
            None if value == b"direct" => {
                assert_eq!(partition, 2);
                direct += 1;
            }
            None => unkeyed += 1,
        }
        // SAFETY: live consumer used by this thread only.
        assert_eq!(unsafe { shmq_topic_commit(c, partition, offset) }, SHMQ_OK);
    }
    assert_eq!((next.len(), direct, unkeyed), (100, 1, 8));
    assert!(next.values().all(|&n| n == 3));

    // What C published, the Rust API reads back, committed by the C member.
    let rust = shmq_core::Topic::open(&path).unwrap();
    for info in rust.info() {
        let g = info.groups.iter().find(|g| g.name == "billing").unwrap();
        assert_eq!(g.committed, info.tail_offset);
    }

    // SAFETY: live topic.
    let st = unsafe { shmq_topic_grow(t, 6) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    assert_eq!(partitions(t), 6);
    // SAFETY: live topic.
    assert_eq!(unsafe { shmq_topic_grow(t, 2) }, SHMQ_EINVAL);
    assert!(last_error().contains("cannot shrink"));
    // The producer picks up the growth at its next publish.
    // SAFETY: live producer, readable data, writable out.
    let st =
        unsafe { shmq_topic_publish_to(p, 5, b"k".as_ptr(), 1, b"v".as_ptr(), 1, 0, &mut offset) };
    assert_eq!((st, offset), (SHMQ_OK, 0), "{}", last_error());
    let got = poll(c, 2_000_000_000).expect("the member picks up partition 5");
    assert_eq!(got, (5, 0, Some(b"k".to_vec()), b"v".to_vec()));

    // SAFETY: each handle is freed exactly once.
    unsafe {
        shmq_topic_consumer_free(c);
        shmq_topic_producer_free(p);
        shmq_topic_close(t);
    }
}

#[test]
fn errors_leave_out_parameters_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.topic");
    let t = create(&path, 2);
    let mut out = 0xdead_beef_u32;
    let mut handle = std::ptr::dangling_mut::<shmq_topic>();

    // SAFETY: every pointer below is NULL, a live handle, or a writable local.
    unsafe {
        assert_eq!(shmq_topic_partitions(null(), &mut out), SHMQ_EINVAL);
        assert_eq!(
            shmq_topic_partition_for_key(b"k".as_ptr(), 1, 0, &mut out),
            SHMQ_EINVAL
        );
        assert_eq!(
            shmq_topic_partition_for_key(null(), 1, 4, &mut out),
            SHMQ_EINVAL
        );
        assert_eq!(out, 0xdead_beef);
        let o = small_options();
        assert_eq!(
            shmq_topic_create(cpath(&path).as_ptr(), 2, &o, &mut handle),
            SHMQ_EEXIST
        );
        let other = dir.path().join("zero.topic");
        assert_eq!(
            shmq_topic_create(cpath(&other).as_ptr(), 0, &o, &mut handle),
            SHMQ_EINVAL
        );
        let missing = dir.path().join("missing.topic");
        assert_eq!(
            shmq_topic_open(cpath(&missing).as_ptr(), &mut handle),
            SHMQ_ENOENT
        );
        assert_eq!(handle, std::ptr::dangling_mut::<shmq_topic>());

        let p = producer(t);
        let mut offset = 7u64;
        let st = shmq_topic_publish_to(p, 9, null(), 0, b"v".as_ptr(), 1, 0, &mut offset);
        assert_eq!((st, offset), (SHMQ_EINVAL, 7));
        assert!(
            last_error().contains("partition 9 does not exist"),
            "{}",
            last_error()
        );
        let big = vec![0u8; 2000];
        let st = shmq_topic_publish(p, big.as_ptr(), big.len(), 0, null_mut(), &mut offset);
        assert_eq!((st, offset), (SHMQ_ETOOBIG, 7));
        shmq_topic_producer_free(p);

        let g = CString::new("g").unwrap();
        let mut joined = null_mut();
        let st = shmq_topic_consumer_subscribe(t, g.as_ptr(), 100, 150, &mut joined);
        assert_eq!(
            (st, joined),
            (SHMQ_EINVAL, null_mut()),
            "session under 2 intervals"
        );
        assert!(last_error().contains("at least twice"), "{}", last_error());
        let st = shmq_topic_consumer_subscribe(t, g.as_ptr(), 10_000_000, 0, &mut joined);
        assert_eq!(st, SHMQ_OK, "{}", last_error());
        shmq_topic_consumer_free(joined);
        // The older name is the same function.
        let st = shmq_topic_consumer_join(t, g.as_ptr(), 100, 150, &mut joined);
        assert_eq!(
            st, SHMQ_EINVAL,
            "session under 2 intervals, by the older name"
        );
        let st = shmq_topic_consumer_join(t, g.as_ptr(), 10_000_000, 0, &mut joined);
        assert_eq!(st, SHMQ_OK, "{}", last_error());
        shmq_topic_consumer_free(joined);
        let c = consumer(t, "g");
        let mut m = std::mem::MaybeUninit::<shmq_topic_message>::zeroed();
        assert_eq!(shmq_topic_poll(c, 0, m.as_mut_ptr()), SHMQ_TIMEOUT);
        assert_eq!(m.assume_init().len, 0, "untouched on timeout");
        assert_eq!(shmq_topic_commit(c, 5, 0), SHMQ_EINVAL);
        assert!(last_error().contains("does not exist"), "{}", last_error());
        shmq_topic_consumer_free(c);
        shmq_topic_close(t);
    }

    std::fs::remove_file(path.join("partition-0001.q")).unwrap();
    // SAFETY: valid C string, writable out.
    let st = unsafe { shmq_topic_open(cpath(&path).as_ptr(), &mut handle) };
    assert_eq!(st, SHMQ_ECORRUPT);
    assert!(
        last_error().contains("partition 1 is missing"),
        "{}",
        last_error()
    );
    assert_eq!(handle, std::ptr::dangling_mut::<shmq_topic>());
}
