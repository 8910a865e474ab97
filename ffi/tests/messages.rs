//! The last-error messages say what and why. Opening the wrong kind of path says what it is: a
//! directory given to `shmq_open` and a queue file given to `shmq_topic_open` are `SHMQ_EINVAL`
//! naming both kinds, and an empty file is `SHMQ_ECORRUPT` saying it is no queue file. A full
//! queue names its file and the group holding producers back.

mod common;

use std::ptr::null_mut;

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

/// `shmq_open` of `path` into `*out`.
fn open_queue(path: &std::path::Path, out: &mut *mut shmq_queue) -> shmq_status {
    // SAFETY: a valid C string and a writable out-parameter.
    unsafe { shmq_open(cpath(path).as_ptr(), out) }
}

/// `shmq_topic_open` of `path` into `*out`.
fn open_topic(path: &std::path::Path, out: &mut *mut shmq_topic) -> shmq_status {
    // SAFETY: a valid C string and a writable out-parameter.
    unsafe { shmq_topic_open(cpath(path).as_ptr(), out) }
}

#[test]
fn wrong_kinds_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t");
    let options = shmq_core::TopicOptions {
        partitions: 2,
        queue: shmq_core::Options {
            capacity: 4096,
            max_message: 1024,
            ..shmq_core::Options::default()
        },
    };
    shmq_core::Topic::create(&t, &options).unwrap();
    let q = dir.path().join("q");
    shmq_core::Queue::create(&q, &options.queue).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();

    let mut queue = null_mut();
    assert_eq!(open_queue(&t, &mut queue), SHMQ_EINVAL);
    assert!(queue.is_null());
    assert_eq!(
        last_error(),
        format!("{}: is a topic directory, not a queue file", t.display())
    );
    assert_eq!(open_queue(dir.path(), &mut queue), SHMQ_EINVAL);
    assert_eq!(
        last_error(),
        format!("{}: is a directory, not a queue file", dir.path().display())
    );
    assert_eq!(open_queue(&empty, &mut queue), SHMQ_ECORRUPT);
    assert_eq!(
        last_error(),
        format!(
            "{}: file is empty: not a shmq queue file (one starts with a 4096-byte header)",
            empty.display()
        )
    );
    assert!(queue.is_null());

    let mut topic = null_mut();
    assert_eq!(open_topic(&q, &mut topic), SHMQ_EINVAL);
    assert_eq!(
        last_error(),
        format!("{}: is a queue file, not a topic directory", q.display())
    );
    assert_eq!(open_topic(&empty, &mut topic), SHMQ_EINVAL);
    assert_eq!(
        last_error(),
        format!("{}: is a file, not a topic directory", empty.display())
    );
    assert!(topic.is_null());
}

#[test]
fn full_and_timeout_name_the_file_and_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let options = shmq_core::Options {
        capacity: 4096,
        max_message: 1024,
        ..shmq_core::Options::default()
    };
    let rust = shmq_core::Queue::create(&path, &options).unwrap();
    drop(rust.consumer("slow").unwrap());
    let mut q = null_mut();
    assert_eq!(open_queue(&path, &mut q), SHMQ_OK);
    let mut p = null_mut();
    // SAFETY: live queue, writable out.
    assert_eq!(unsafe { shmq_producer_new(q, &mut p) }, SHMQ_OK);
    let data = [0u8; 40];
    let mut offset = 0;
    let status = loop {
        // SAFETY: live producer, readable data, writable out.
        match unsafe { shmq_publish(p, data.as_ptr(), data.len(), 200_000_000, &mut offset) } {
            SHMQ_OK => {}
            st => break st,
        }
    };
    assert_eq!(status, SHMQ_TIMEOUT);
    assert_eq!(
        last_error(),
        format!(
            "{}: timed out after 200ms waiting for room in the queue; the slowest gating \
             group \"slow\" is 56 messages behind (no member holds it)",
            path.display()
        )
    );
    // SAFETY: each handle is live and freed once.
    unsafe {
        shmq_producer_free(p);
        shmq_close(q);
    }
}

#[test]
fn a_commit_ahead_of_the_reader_says_what_may_be_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let rust = shmq_core::Queue::create(&path, &shmq_core::Options::default()).unwrap();
    let mut producer = rust.producer().unwrap();
    for _ in 0..3 {
        producer.publish(b"m").unwrap();
    }
    let mut q = null_mut();
    assert_eq!(open_queue(&path, &mut q), SHMQ_OK);
    let mut c = null_mut();
    let group = std::ffi::CString::new("g").unwrap();
    // SAFETY: live queue, valid C string, writable out.
    let status = unsafe { shmq_consumer_new(q, group.as_ptr(), &mut c) };
    assert_eq!(status, SHMQ_OK);
    // SAFETY: live consumer.
    assert_eq!(unsafe { shmq_commit(c, 0) }, SHMQ_EINVAL);
    assert_eq!(
        last_error(),
        "invalid offset: cannot commit offset 0: commit takes the offset of the last record \
         processed, and this consumer has not read any record yet"
    );
    let mut m = std::mem::MaybeUninit::<shmq_message>::uninit();
    for _ in 0..2 {
        // SAFETY: live consumer, writable out.
        assert_eq!(unsafe { shmq_poll(c, 0, m.as_mut_ptr()) }, SHMQ_OK);
    }
    // SAFETY: live consumer.
    assert_eq!(unsafe { shmq_commit(c, 2) }, SHMQ_EINVAL);
    assert_eq!(
        last_error(),
        "invalid offset: cannot commit offset 2: commit takes the offset of the last record \
         processed, and this consumer's next record is 2, so it may commit up to 1"
    );
    // SAFETY: live consumer.
    assert_eq!(unsafe { shmq_commit(c, 1) }, SHMQ_OK);
    assert_eq!(
        rust.groups()[0].committed,
        2,
        "committed is the next offset to read"
    );
    // SAFETY: each handle is live and freed once.
    unsafe {
        shmq_consumer_free(c);
        shmq_close(q);
    }
}
