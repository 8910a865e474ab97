//! Every `shmq_status` is reached through the exported C functions (called from Rust through
//! the rlib: the same code the C library runs), with out-parameters left untouched on failure.

mod common;

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr::{null, null_mut};

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

fn name(s: shmq_status) -> String {
    // SAFETY: shmq_status_name returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(shmq_status_name(s as i32)) }
        .to_string_lossy()
        .into_owned()
}

fn small_options(policy: shmq_full_policy) -> shmq_options {
    let mut o = std::mem::MaybeUninit::<shmq_options>::uninit();
    // SAFETY: `o` is writable; on SHMQ_OK it is fully initialised.
    assert_eq!(unsafe { shmq_options_default(o.as_mut_ptr()) }, SHMQ_OK);
    // SAFETY: initialised by shmq_options_default above.
    let mut o = unsafe { o.assume_init() };
    assert_eq!(o.size, std::mem::size_of::<shmq_options>());
    o.capacity_bytes = 4096;
    o.max_message_bytes = 1024;
    o.full_policy = policy;
    o
}

fn create(path: &Path, options: &shmq_options) -> *mut shmq_queue {
    let mut q = null_mut();
    // SAFETY: valid C string, initialised options, writable out.
    let st = unsafe { shmq_create(cpath(path).as_ptr(), options, &mut q) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    q
}

fn producer(q: *mut shmq_queue) -> *mut shmq_producer {
    let mut p = null_mut();
    // SAFETY: live queue, writable out.
    assert_eq!(unsafe { shmq_producer_new(q, &mut p) }, SHMQ_OK);
    p
}

fn consumer(q: *mut shmq_queue, group: &str) -> Result<*mut shmq_consumer, shmq_status> {
    let mut c = null_mut();
    let g = CString::new(group).unwrap();
    // SAFETY: live queue, valid C string, writable out.
    match unsafe { shmq_consumer_new(q, g.as_ptr(), &mut c) } {
        SHMQ_OK => Ok(c),
        st => {
            assert!(c.is_null(), "out written on failure");
            Err(st)
        }
    }
}

fn publish(p: *mut shmq_producer, data: &[u8], timeout_ns: i64) -> shmq_status {
    let mut off = u64::MAX;
    // SAFETY: live producer, `data` readable for its length, writable out.
    let st = unsafe { shmq_publish(p, data.as_ptr(), data.len(), timeout_ns, &mut off) };
    if st != SHMQ_OK {
        assert_eq!(off, u64::MAX, "offset_out written on failure");
    }
    st
}

#[test]
fn every_status_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let mut reached = std::collections::BTreeSet::new();
    let mut saw = |st: shmq_status, want: shmq_status| {
        assert_eq!(st, want, "{}", last_error());
        if st != SHMQ_OK {
            assert!(!last_error().is_empty(), "{} sets a message", name(st));
        }
        reached.insert(st as i32);
    };

    // SHMQ_EINVAL: NULL arguments and handles, bad timeouts, bad options.
    let mut q = null_mut();
    // SAFETY: in every call of this test, arguments are NULL, live handles from this test, valid
    // C strings, readable buffers with their lengths, or writable out-parameters.
    unsafe {
        saw(shmq_create(null(), null(), &mut q), SHMQ_EINVAL);
        let p = cpath(&dir.path().join("x.q"));
        saw(shmq_create(p.as_ptr(), null(), null_mut()), SHMQ_EINVAL);
        saw(shmq_open(null(), &mut q), SHMQ_EINVAL);
        saw(shmq_options_default(null_mut()), SHMQ_EINVAL);
        saw(
            shmq_publish(null_mut(), null(), 0, 0, null_mut()),
            SHMQ_EINVAL,
        );
        saw(
            shmq_producer_set_coarse_timestamps(null_mut(), true),
            SHMQ_EINVAL,
        );
        saw(shmq_poll(null_mut(), 0, null_mut()), SHMQ_EINVAL);
        saw(shmq_commit(null_mut(), 0), SHMQ_EINVAL);
        saw(shmq_seek(null_mut(), 0), SHMQ_EINVAL);
        saw(shmq_wait_durable(null_mut(), 0, 0), SHMQ_EINVAL);
        saw(shmq_producer_new(null(), &mut null_mut()), SHMQ_EINVAL);
        saw(
            shmq_consumer_new(null(), c"g".as_ptr(), &mut null_mut()),
            SHMQ_EINVAL,
        );
        let mut bad = small_options(shmq_full_policy::SHMQ_FULL_BLOCK);
        bad.size = 4;
        saw(shmq_create(p.as_ptr(), &bad, &mut q), SHMQ_EINVAL);
        let mut bad = small_options(shmq_full_policy::SHMQ_FULL_BLOCK);
        bad.capacity_bytes = 1000; // not a power of two
        saw(shmq_create(p.as_ptr(), &bad, &mut q), SHMQ_EINVAL);
        assert!(q.is_null(), "out written on failure");
        // Freeing NULL is a no-op.
        shmq_close(null_mut());
        shmq_producer_free(null_mut());
        shmq_consumer_free(null_mut());
    }

    // SHMQ_ENOENT, SHMQ_EEXIST, SHMQ_ECORRUPT, SHMQ_EVERSION, SHMQ_EUNTRUSTED, SHMQ_EIO.
    let missing = cpath(&dir.path().join("missing.q"));
    let garbage = dir.path().join("garbage.q");
    std::fs::write(&garbage, vec![0xABu8; 16384]).unwrap();
    let opts = small_options(shmq_full_policy::SHMQ_FULL_REJECT);
    let path = dir.path().join("reject.q");
    let q = create(&path, &opts);
    let mut versioned = std::fs::read(&path).unwrap();
    versioned[8..12].copy_from_slice(&99u32.to_le_bytes());
    let versioned_path = dir.path().join("version.q");
    std::fs::write(&versioned_path, versioned).unwrap();
    // SAFETY: as above: NULL, live handles from this test, valid C strings, readable
    // buffers of the given lengths, or writable out-parameters.
    unsafe {
        let mut q2 = null_mut();
        saw(shmq_open(missing.as_ptr(), &mut q2), SHMQ_ENOENT);
        saw(
            shmq_create(cpath(&path).as_ptr(), &opts, &mut q2),
            SHMQ_EEXIST,
        );
        saw(shmq_open(cpath(&garbage).as_ptr(), &mut q2), SHMQ_ECORRUPT);
        saw(
            shmq_open(cpath(&versioned_path).as_ptr(), &mut q2),
            SHMQ_EVERSION,
        );
        // A queue file every user may write is never trusted.
        let open_to_all = dir.path().join("open-to-all.q");
        std::fs::copy(&path, &open_to_all).unwrap();
        std::fs::set_permissions(
            &open_to_all,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .unwrap();
        saw(
            shmq_open(cpath(&open_to_all).as_ptr(), &mut q2),
            SHMQ_EUNTRUSTED,
        );
        // A file "inside" a regular file: ENOTDIR from the OS, an I/O error.
        let under_file = garbage.join("sub.q");
        saw(
            shmq_create(cpath(&under_file).as_ptr(), &opts, &mut q2),
            SHMQ_EIO,
        );
        assert!(q2.is_null());
    }

    // On the REJECT queue: SHMQ_TIMEOUT, SHMQ_ETOOBIG, SHMQ_FULL, SHMQ_EBUSY, SHMQ_EINVAL.
    let c = consumer(q, "g").unwrap();
    let p = producer(q);
    // SAFETY: as above: NULL, live handles from this test, valid C strings, readable
    // buffers of the given lengths, or writable out-parameters.
    unsafe {
        let mut msg = std::mem::MaybeUninit::<shmq_message>::uninit();
        saw(shmq_poll(c, 0, msg.as_mut_ptr()), SHMQ_TIMEOUT);
        saw(shmq_poll(c, 1_000_000, msg.as_mut_ptr()), SHMQ_TIMEOUT);
        saw(shmq_poll(c, -2, msg.as_mut_ptr()), SHMQ_EINVAL);
        saw(publish(p, &[0; 2000], 0), SHMQ_ETOOBIG);
        saw(publish(p, b"x", -5), SHMQ_EINVAL);
        let mut published = 0u64;
        loop {
            match publish(p, &[7; 512], 0) {
                SHMQ_OK => published += 1,
                st => {
                    saw(st, SHMQ_FULL);
                    break;
                }
            }
            assert!(published < 100, "a 4 KiB ring never filled");
        }
        saw(shmq_commit(c, 0), SHMQ_EINVAL); // nothing polled yet
        saw(shmq_seek(c, 1 << 40), SHMQ_EINVAL);
        saw(shmq_wait_durable(p, 1 << 40, 0), SHMQ_EINVAL);
        saw(shmq_wait_durable(p, published - 1, -1), SHMQ_OK);
        // Read one record, check it, commit it: room for one more.
        saw(shmq_poll(c, -1, msg.as_mut_ptr()), SHMQ_OK);
        let m = msg.assume_init();
        assert_eq!((m.offset, m.len), (0, 512));
        assert_eq!(std::slice::from_raw_parts(m.data, m.len), &[7; 512][..]);
        saw(shmq_commit(c, 0), SHMQ_OK);
        saw(shmq_seek(c, 1), SHMQ_OK); // still in the ring: the cursor moves
    }
    // The group is held by `c`: a second member is refused.
    saw(consumer(q, "g").unwrap_err(), SHMQ_EBUSY);
    // SAFETY: as above: NULL, live handles from this test, valid C strings, readable
    // buffers of the given lengths, or writable out-parameters.
    unsafe {
        shmq_producer_free(p);
        shmq_consumer_free(c);
    }
    // Freed: the group can be joined again, and the queue handle outlives nothing it must.
    let c = consumer(q, "g").unwrap();
    // SAFETY: as above: NULL, live handles from this test, valid C strings, readable
    // buffers of the given lengths, or writable out-parameters.
    unsafe {
        shmq_close(q); // the consumer keeps the mapping alive
        let mut msg = std::mem::MaybeUninit::<shmq_message>::uninit();
        saw(shmq_poll(c, 0, msg.as_mut_ptr()), SHMQ_OK);
        assert_eq!(
            msg.assume_init().offset,
            1,
            "resumes after the committed offset"
        );
        shmq_consumer_free(c);
    }

    // SHMQ_EBUSY from slots, SHMQ_TIMEOUT from a blocked publish.
    let mut opts = small_options(shmq_full_policy::SHMQ_FULL_BLOCK);
    opts.producer_slots = 1;
    let q = create(&dir.path().join("block.q"), &opts);
    let c = consumer(q, "gate").unwrap();
    let p = producer(q);
    // SAFETY: as above: NULL, live handles from this test, valid C strings, readable
    // buffers of the given lengths, or writable out-parameters.
    unsafe {
        let mut p2 = null_mut();
        saw(shmq_producer_new(q, &mut p2), SHMQ_EBUSY);
        assert!(p2.is_null());
        while publish(p, &[1; 512], 0) == SHMQ_OK {}
        saw(publish(p, &[1; 512], 0), SHMQ_TIMEOUT);
        saw(publish(p, &[1; 512], 2_000_000), SHMQ_TIMEOUT);
        shmq_consumer_free(c);
        shmq_producer_free(p);
        shmq_close(q);
    }

    // SHMQ_LAGGED: an OVERWRITE queue laps its consumer.
    let q = create(
        &dir.path().join("overwrite.q"),
        &small_options(shmq_full_policy::SHMQ_FULL_OVERWRITE),
    );
    let c = consumer(q, "slow").unwrap();
    let p = producer(q);
    // SAFETY: as above: NULL, live handles from this test, valid C strings, readable
    // buffers of the given lengths, or writable out-parameters.
    unsafe {
        for _ in 0..40 {
            saw(publish(p, &[3; 512], 0), SHMQ_OK);
        }
        let mut msg = std::mem::MaybeUninit::<shmq_message>::uninit();
        saw(shmq_poll(c, 0, msg.as_mut_ptr()), SHMQ_LAGGED);
        assert!(last_error().contains("lost"), "{}", last_error());
        saw(shmq_poll(c, 0, msg.as_mut_ptr()), SHMQ_OK);
        assert!(msg.assume_init().offset > 0);
        shmq_producer_free(p);
        shmq_consumer_free(c);
        shmq_close(q);
    }

    // SHMQ_EINTERNAL: no input reaches a panic through the ABI, so drive the panic boundary
    // every exported function runs in directly.
    saw(guard("test", || panic!("boom")), SHMQ_EINTERNAL);
    assert!(last_error().contains("boom"), "{}", last_error());

    // SHMQ_EFORKED: a producer made before fork() is refused in the child, with a message.
    let dir = tempfile::tempdir().unwrap();
    let q = create(
        &dir.path().join("forked.q"),
        &small_options(shmq_full_policy::SHMQ_FULL_BLOCK),
    );
    let p = producer(q);
    // SAFETY: the child makes one call through the library and `_exit`s at once, running no
    // destructor and no test-harness code.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        let ok = publish(p, b"from the child", 0) == SHMQ_EFORKED
            && last_error().contains("before a fork");
        // SAFETY: ends the forked child.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child into a local.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child's publish through the parent's producer was not refused with SHMQ_EFORKED"
    );
    reached.insert(SHMQ_EFORKED as i32);
    // SAFETY: the parent's own live handles, freed once.
    unsafe {
        assert_eq!(publish(p, b"parent", 0), SHMQ_OK, "{}", last_error());
        shmq_producer_free(p);
        shmq_close(q);
    }

    let all: Vec<i32> = (-11..=3).collect();
    assert_eq!(
        reached.into_iter().collect::<Vec<_>>(),
        all,
        "every status reached"
    );
}

#[test]
fn status_names_and_last_error_are_thread_local() {
    assert_eq!(name(SHMQ_OK), "SHMQ_OK");
    assert_eq!(name(SHMQ_EINTERNAL), "SHMQ_EINTERNAL");
    // SAFETY: static string.
    let unknown = unsafe { CStr::from_ptr(shmq_status_name(42)) };
    assert_eq!(unknown.to_str().unwrap(), "SHMQ_UNKNOWN");
    // SAFETY: NULL arguments are reported, not dereferenced.
    assert_eq!(unsafe { shmq_open(null(), null_mut()) }, SHMQ_EINVAL);
    let here = last_error();
    let there = std::thread::spawn(last_error).join().unwrap();
    assert!(here.contains("NULL"), "{here}");
    assert_eq!(there, "", "another thread has no error yet");
    let _: *const c_char = shmq_last_error();
}

#[test]
fn a_published_record_not_on_disk_is_not_durable_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.q");
    let mut opts = small_options(shmq_full_policy::SHMQ_FULL_BLOCK);
    opts.durability = shmq_durability::SHMQ_DURABILITY_SYNC;
    // Far longer than the test: nobody aborts the stuck claim below while it runs.
    opts.claim_timeout_ns = 600_000_000_000;
    let q = create(&path, &opts);
    let p = producer(q);
    assert_eq!(publish(p, b"first", -1), SHMQ_OK, "{}", last_error());
    // Another producer claims offset 1 and never commits it: no flush can cover offset 2.
    let rust = shmq_core::Queue::open(&path).unwrap();
    let mut stuck = rust.producer().unwrap();
    std::mem::forget(stuck.claim(8).unwrap());
    let mut offset = u64::MAX;
    // SAFETY: live producer, readable buffer, writable out.
    let st = unsafe { shmq_publish(p, b"second".as_ptr(), 6, 500_000_000, &mut offset) };
    assert_eq!(st, SHMQ_ENOTDURABLE, "{}", last_error());
    assert_eq!(name(st), "SHMQ_ENOTDURABLE");
    assert_eq!(offset, 2, "the offset of the published record is written");
    assert!(last_error().contains("not durable"), "{}", last_error());
    assert_eq!(rust.tail_offset(), 3, "the record was published");
    // SAFETY: live handles of this test, freed once.
    unsafe {
        shmq_producer_free(p);
        shmq_close(q);
    }
}

#[test]
fn a_group_taken_over_has_its_own_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = cpath(&dir.path().join("t.topic"));
    let mut opts = small_options(shmq_full_policy::SHMQ_FULL_BLOCK);
    opts.capacity_bytes = 1 << 16;
    let mut t = null_mut();
    // SAFETY: valid C string, initialised options, writable out.
    let st = unsafe { shmq_topic_create(path.as_ptr(), 1, &opts, &mut t) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    let join = || {
        let mut c = null_mut();
        // SAFETY: live topic, valid C string, writable out. Heartbeat 100 ms, session 1 s.
        let st = unsafe {
            shmq_topic_consumer_subscribe(t, c"g".as_ptr(), 100_000_000, 1_000_000_000, &mut c)
        };
        assert_eq!(st, SHMQ_OK, "{}", last_error());
        c
    };
    let mut p = null_mut();
    let mut msg = std::mem::MaybeUninit::<shmq_topic_message>::uninit();
    // SAFETY: live handles of this test, readable buffers, writable outs.
    unsafe {
        assert_eq!(shmq_topic_producer_new(t, &mut p), SHMQ_OK);
        let st = shmq_topic_publish(p, b"x".as_ptr(), 1, -1, null_mut(), null_mut());
        assert_eq!(st, SHMQ_OK, "{}", last_error());
    }
    let first = join();
    // SAFETY: live consumer used by this thread only, writable out.
    let st = unsafe { shmq_topic_poll(first, 5_000_000_000, msg.as_mut_ptr()) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    // `first` stops polling (so stops heartbeating); `second` takes the partition once its
    // session has passed. Until then `first` still holds it and its commit succeeds.
    let second = join();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let st = loop {
        // SAFETY: live consumers used by this thread only, writable out.
        let st = unsafe {
            shmq_topic_poll(second, 100_000_000, msg.as_mut_ptr());
            shmq_topic_commit(first, 0, 0)
        };
        if st != SHMQ_OK || std::time::Instant::now() > deadline {
            break st;
        }
    };
    assert_eq!(st, SHMQ_ETAKENOVER, "{}", last_error());
    assert_eq!(name(st), "SHMQ_ETAKENOVER");
    // SAFETY: live handles of this test, freed once.
    unsafe {
        shmq_topic_consumer_free(first);
        shmq_topic_consumer_free(second);
        shmq_topic_producer_free(p);
        shmq_topic_close(t);
    }
}
