//! `shmq_prefault` and `shmq_topic_prefault`: a C process prefaults its mapping of a queue and
//! of every partition of a topic; a file cut under it is `SHMQ_ESTALE`; a NULL handle is
//! `SHMQ_EINVAL`.

mod common;

use std::ptr::{null, null_mut};

use common::{cpath, last_error};
use shmq::*;
use shmq_status::*;

#[test]
fn a_c_process_prefaults_its_queue_and_topic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let rust = shmq_core::Queue::create(&path, &shmq_core::Options::default()).unwrap();
    let mut c = rust.consumer("g").unwrap();
    let mut q = null_mut();
    // SAFETY: a NUL-terminated path, writable out.
    assert_eq!(unsafe { shmq_open(cpath(&path).as_ptr(), &mut q) }, SHMQ_OK);
    // SAFETY: a live queue handle.
    assert_eq!(unsafe { shmq_prefault(q) }, SHMQ_OK, "{}", last_error());
    let mut p = null_mut();
    // SAFETY: live queue, writable out.
    assert_eq!(unsafe { shmq_producer_new(q, &mut p) }, SHMQ_OK);
    // SAFETY: a live producer used by this thread only, readable data, no offset out.
    let st = unsafe { shmq_publish(p, b"warm".as_ptr(), 4, 0, null_mut()) };
    assert_eq!(st, SHMQ_OK);
    let m = c
        .poll(Some(std::time::Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert_eq!(m.payload, b"warm");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    // SAFETY: a live queue handle.
    assert_eq!(unsafe { shmq_prefault(q) }, SHMQ_ESTALE);
    assert!(last_error().contains("truncated"), "{}", last_error());
    // SAFETY: a NULL handle is refused, not dereferenced.
    assert_eq!(unsafe { shmq_prefault(null()) }, SHMQ_EINVAL);
    assert!(last_error().contains("queue is NULL"), "{}", last_error());

    let topic_path = dir.path().join("t.topic");
    let options = shmq_core::TopicOptions {
        partitions: 4,
        queue: shmq_core::Options {
            capacity: 1 << 16,
            max_message: 1024,
            ..shmq_core::Options::default()
        },
    };
    shmq_core::Topic::create(&topic_path, &options).unwrap();
    let mut t = null_mut();
    // SAFETY: a NUL-terminated path, writable out.
    let st = unsafe { shmq_topic_open(cpath(&topic_path).as_ptr(), &mut t) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    // SAFETY: a live topic handle.
    let st = unsafe { shmq_topic_prefault(t) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    // SAFETY: a NULL handle is refused, not dereferenced.
    assert_eq!(unsafe { shmq_topic_prefault(null()) }, SHMQ_EINVAL);

    // SAFETY: each handle is live and freed once.
    unsafe {
        shmq_producer_free(p);
        shmq_close(q);
        shmq_topic_close(t);
    }
}
