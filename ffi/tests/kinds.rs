//! Opening the wrong kind of path says what it is: a directory given to `shmq_open` and a
//! queue file given to `shmq_topic_open` are `SHMQ_EINVAL` naming both kinds, and an empty
//! file is `SHMQ_ECORRUPT` saying it is no queue file.

mod common;

use std::ptr::null_mut;

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

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
    // SAFETY: valid C string, writable out.
    assert_eq!(
        unsafe { shmq_open(cpath(&t).as_ptr(), &mut queue) },
        SHMQ_EINVAL
    );
    assert!(queue.is_null());
    assert_eq!(
        last_error(),
        format!("{}: is a topic directory, not a queue file", t.display())
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { shmq_open(cpath(dir.path()).as_ptr(), &mut queue) },
        SHMQ_EINVAL
    );
    assert_eq!(
        last_error(),
        format!("{}: is a directory, not a queue file", dir.path().display())
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { shmq_open(cpath(&empty).as_ptr(), &mut queue) },
        SHMQ_ECORRUPT
    );
    assert_eq!(
        last_error(),
        format!(
            "{}: file is empty: not a shmq queue file (one starts with a 4096-byte header)",
            empty.display()
        )
    );
    assert!(queue.is_null());

    let mut topic = null_mut();
    // SAFETY: valid C string, writable out.
    assert_eq!(
        unsafe { shmq_topic_open(cpath(&q).as_ptr(), &mut topic) },
        SHMQ_EINVAL
    );
    assert_eq!(
        last_error(),
        format!("{}: is a queue file, not a topic directory", q.display())
    );
    // SAFETY: as above.
    assert_eq!(
        unsafe { shmq_topic_open(cpath(&empty).as_ptr(), &mut topic) },
        SHMQ_EINVAL
    );
    assert_eq!(
        last_error(),
        format!("{}: is a file, not a topic directory", empty.display())
    );
    assert!(topic.is_null());
}
