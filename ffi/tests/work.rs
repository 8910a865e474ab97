//! Work groups through the C ABI: two C workers (`tests/c/work_worker.c`) sharing a group fed
//! by a Rust producer, each record settled once, rejected and exhausted ones in the
//! dead-letter queue (read by Rust and by C); `SHMQ_ELEASE` from C; the same under valgrind;
//! and the argument checks, scheduled publishes and queries of the `shmq_work_*` functions.

mod build;
mod common;

#[path = "../../tests/common/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use build::c_program;
use common::{cpath, last_error};
use shmq::*;
use shmq_core::{DeadLetter, DeadReason, Options, Queue};
use shmq_status::*;

/// Longest a C program may run (valgrind included) before the test fails.
const LIMIT: Duration = Duration::from_secs(240);

const VALGRIND: &[&str] = &[
    "valgrind",
    "--quiet",
    "--error-exitcode=1",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect,possible",
];

/// A work queue and an empty dead-letter queue in `dir`.
fn queues(dir: &Path) -> (PathBuf, Queue, PathBuf, Queue) {
    let options = Options {
        capacity: 1 << 18,
        max_message: 512,
        ..Options::default()
    };
    let path = dir.join("jobs.q");
    let dlq = dir.join("jobs-dead.q");
    (
        path.clone(),
        Queue::create(&path, &options).unwrap(),
        dlq.clone(),
        Queue::create(&dlq, &options).unwrap(),
    )
}

/// Starts `wrap... work_worker args...` with its standard output piped.
fn start(wrap: &[&str], args: &[&str]) -> std::process::Child {
    let program = c_program("tests/c", "work_worker");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start work_worker")
}

/// Waits for `child` (killing and reaping it after [`LIMIT`]), checks that it succeeded and
/// returns what it printed.
fn finish(mut child: std::process::Child, what: &str) -> String {
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).expect("read the output");
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for work_worker") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: work_worker ran longer than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().expect("the output reader");
    assert!(status.success(), "{what}: work_worker failed ({status})");
    out
}

/// Publishes "job <i>" for i in 0..count.
fn publish_jobs(queue: &Queue, count: u64) {
    let mut producer = queue.producer().unwrap();
    for i in 0..count {
        assert_eq!(producer.publish(format!("job {i}").as_bytes()).unwrap(), i);
    }
}

/// What `work_worker ... work` must do with record `i`.
fn expected(i: u64) -> &'static str {
    match i % 10 {
        3 => "reject",
        9 => "dead",
        _ => "ack",
    }
}

/// Runs `workers` C workers over `count` records and checks every settlement, the counters
/// and the dead-letter queue (read by Rust, then by the C program).
fn c_workers(count: u64, workers: usize, wrap: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (path, queue, dlq_path, dlq) = queues(dir.path());
    // The audit group exists before the first dead letter.
    drop(dlq.consumer("audit").unwrap());
    publish_jobs(&queue, count);
    let (p, d) = (path.to_str().unwrap(), dlq_path.to_str().unwrap());
    let n = count.to_string();
    let children: Vec<_> = (0..workers)
        .map(|_| start(wrap, &[p, "work", d, &n]))
        .collect();
    let mut settled = BTreeMap::<u64, Vec<String>>::new();
    for (k, child) in children.into_iter().enumerate() {
        for line in finish(child, &format!("worker {k}")).lines() {
            let (what, offset) = line.split_once(' ').expect("a settlement line");
            settled
                .entry(offset.parse().unwrap())
                .or_default()
                .push(what.to_string());
        }
    }
    for i in 0..count {
        assert_eq!(
            settled.get(&i).map(Vec::as_slice),
            Some(&[expected(i).to_string()][..]),
            "record {i} settled once, as {}",
            expected(i)
        );
    }
    let info = queue.work_info("jobs").unwrap();
    let dead = (0..count).filter(|i| expected(*i) != "ack").count() as u64;
    assert_eq!((info.acked, info.dead_lettered), (count - dead, dead));
    assert_eq!((info.in_flight, info.waiting, info.base), (0, 0, count));
    // Each 7 was nacked once and each 9 twice before it was dead-lettered.
    let sevens = (0..count).filter(|i| i % 10 == 7).count() as u64;
    let nines = (0..count).filter(|i| i % 10 == 9).count() as u64;
    assert_eq!(info.redelivered, sevens + 2 * nines);

    let source = std::path::absolute(&path).unwrap();
    let mut reader = dlq.consumer("check").unwrap();
    let mut letters = Vec::new();
    while let Some(m) = reader.poll(Some(Duration::from_millis(100))).unwrap() {
        let d = DeadLetter::parse(m.payload).unwrap();
        let (reason, deliveries) = match expected(d.offset) {
            "reject" => (DeadReason::Rejected, 1),
            _ => (DeadReason::MaxDeliveries, 3),
        };
        assert_eq!((d.reason, d.deliveries), (reason, deliveries), "{d:?}");
        assert_eq!(d.payload, format!("job {}", d.offset).as_bytes());
        assert_eq!(Path::new(d.source), source);
        letters.push(format!(
            "dead {} {} {} {} job {}",
            d.offset,
            reason as u32,
            deliveries,
            source.display(),
            d.offset
        ));
    }
    assert_eq!(letters.len() as u64, dead);
    let c_letters = finish(start(wrap, &[d, "dead", &dead.to_string()]), "dead");
    assert_eq!(c_letters.lines().collect::<Vec<_>>(), letters);
}

#[test]
fn c_workers_share_a_group() {
    c_workers(600, 2, &[]);
}

#[test]
fn c_worker_lease_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (path, queue, ..) = queues(dir.path());
    publish_jobs(&queue, 2);
    let out = finish(start(&[], &[path.to_str().unwrap(), "lease"]), "lease");
    assert_eq!(out, "lease: ok\n");
}

#[test]
fn c_workers_under_valgrind() {
    if !tools::require_valgrind("the C work group program") {
        return;
    }
    c_workers(40, 1, VALGRIND);
    let dir = tempfile::tempdir().unwrap();
    let (path, queue, ..) = queues(dir.path());
    publish_jobs(&queue, 2);
    let out = finish(
        start(VALGRIND, &[path.to_str().unwrap(), "lease"]),
        "lease under valgrind",
    );
    assert_eq!(out, "lease: ok\n");
}

/// The default options as C gets them.
fn default_options() -> shmq_work_options {
    let mut o = std::mem::MaybeUninit::<shmq_work_options>::uninit();
    // SAFETY: a writable struct; it is initialised when the call returns SHMQ_OK.
    unsafe {
        assert_eq!(shmq_work_options_default(o.as_mut_ptr()), SHMQ_OK);
        o.assume_init()
    }
}

#[test]
fn options_and_argument_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (path, queue, dlq_path, _dlq) = queues(dir.path());
    drop(queue.consumer("plain").unwrap());
    let d = default_options();
    assert_eq!(d.size, std::mem::size_of::<shmq_work_options>());
    assert_eq!(
        (d.visibility_timeout_ms, d.max_deliveries, d.window),
        (30_000, 5, 4096)
    );
    assert_eq!(d.backoff, shmq_backoff::SHMQ_BACKOFF_FIXED);
    assert_eq!(d.backoff_initial_ms, 1000);
    assert!(d.dead_letter.is_null());
    let sentinel = 0x5a5a as *mut shmq_worker;
    let mut w = sentinel;
    let group = c"g";
    // SAFETY: valid C strings, options and out-parameters; handles used by this thread only,
    // freed once.
    unsafe {
        let mut q = null_mut();
        assert_eq!(shmq_open(cpath(&path).as_ptr(), &mut q), SHMQ_OK);
        assert_eq!(
            shmq_worker_new(null(), group.as_ptr(), &d, &mut w),
            SHMQ_EINVAL
        );
        assert_eq!(shmq_worker_new(q, null(), &d, &mut w), SHMQ_EINVAL);
        assert_eq!(
            shmq_worker_new(q, group.as_ptr(), &d, null_mut()),
            SHMQ_EINVAL
        );
        let mut small = d;
        small.size = 8;
        assert_eq!(
            shmq_worker_new(q, group.as_ptr(), &small, &mut w),
            SHMQ_EINVAL
        );
        assert!(
            last_error().contains("shmq_work_options_default"),
            "{}",
            last_error()
        );
        // An out-of-range enum, written as C could.
        let mut bad = d;
        std::ptr::addr_of_mut!(bad.backoff).cast::<u32>().write(7);
        assert_eq!(
            shmq_worker_new(q, group.as_ptr(), &bad, &mut w),
            SHMQ_EINVAL
        );
        assert_eq!(last_error(), "options->backoff 7 is invalid");
        let mut window = d;
        window.window = 100;
        assert_eq!(
            shmq_worker_new(q, group.as_ptr(), &window, &mut w),
            SHMQ_EINVAL
        );
        assert!(last_error().contains("window"), "{}", last_error());
        // A worker on a plain group, and a consumer on a work group.
        assert_eq!(
            shmq_worker_new(q, c"plain".as_ptr(), &d, &mut w),
            SHMQ_EINVAL
        );
        assert!(
            last_error().contains("is not a work group"),
            "{}",
            last_error()
        );
        assert_eq!(w, sentinel, "written on failure");
        let mut dead = d;
        let dlq = cpath(&dlq_path);
        dead.dead_letter = dlq.as_ptr();
        dead.backoff = shmq_backoff::SHMQ_BACKOFF_EXPONENTIAL;
        dead.backoff_initial_ms = 5;
        dead.backoff_max_ms = 40;
        assert_eq!(shmq_worker_new(q, group.as_ptr(), &dead, &mut w), SHMQ_OK);
        let mut c = null_mut();
        assert_eq!(shmq_consumer_new(q, group.as_ptr(), &mut c), SHMQ_EINVAL);
        assert!(last_error().contains("is not a plain"), "{}", last_error());

        let mut job = std::mem::zeroed::<shmq_job>();
        assert_eq!(shmq_work_poll(w, -2, &mut job), SHMQ_EINVAL);
        assert_eq!(shmq_work_poll(w, 0, null_mut()), SHMQ_EINVAL);
        assert_eq!(shmq_work_poll(null_mut(), 0, &mut job), SHMQ_EINVAL);
        assert_eq!(shmq_work_poll(w, 0, &mut job), SHMQ_TIMEOUT);
        let ticket = shmq_ticket {
            offset: 0,
            deliveries: 1,
            deadline_ms: 1,
        };
        assert_eq!(shmq_work_ack(null_mut(), ticket), SHMQ_EINVAL);
        assert_eq!(shmq_work_nack(w, ticket, -2), SHMQ_EINVAL);
        assert_eq!(shmq_work_extend(w, null_mut(), 10), SHMQ_EINVAL);
        assert_eq!(shmq_work_ack(w, ticket), SHMQ_ELEASE);

        // A fresh record: nacked to the group's exponential back-off, delivered again.
        queue.producer().unwrap().publish(b"one").unwrap();
        assert_eq!(shmq_work_poll(w, 5_000_000_000, &mut job), SHMQ_OK);
        assert_eq!(std::slice::from_raw_parts(job.data, job.len), b"one");
        assert_eq!((job.offset, job.deliveries), (0, 1));
        assert_eq!(shmq_work_nack(w, job.ticket, SHMQ_NACK_BACKOFF), SHMQ_OK);
        assert_eq!(
            shmq_work_nack(w, job.ticket, SHMQ_NACK_BACKOFF),
            SHMQ_ELEASE
        );
        assert_eq!(shmq_work_poll(w, 5_000_000_000, &mut job), SHMQ_OK);
        assert_eq!((job.offset, job.deliveries), (0, 2));
        let mut entries = [std::mem::zeroed::<shmq_pending>(); 1];
        let mut n = 0usize;
        assert_eq!(
            shmq_work_pending(q, group.as_ptr(), entries.as_mut_ptr(), 1, &mut n),
            SHMQ_OK
        );
        assert_eq!(n, 1);
        assert_eq!(entries[0].state, shmq_pending_state::SHMQ_PENDING_IN_FLIGHT);
        assert_eq!(entries[0].holder, std::process::id());
        assert_eq!(
            shmq_work_pending(q, group.as_ptr(), null_mut(), 1, &mut n),
            SHMQ_EINVAL
        );
        assert_eq!(
            shmq_work_pending(q, c"nope".as_ptr(), null_mut(), 0, &mut n),
            SHMQ_ENOENT
        );
        let mut info = std::mem::zeroed::<shmq_work_info>();
        assert_eq!(
            shmq_work_group_info(q, c"plain".as_ptr(), &mut info),
            SHMQ_EINVAL
        );
        assert_eq!(
            shmq_work_group_info(q, group.as_ptr(), null_mut()),
            SHMQ_EINVAL
        );
        assert_eq!(shmq_work_group_info(q, group.as_ptr(), &mut info), SHMQ_OK);
        assert_eq!(
            (info.delivered, info.redelivered, info.in_flight),
            (1, 1, 1)
        );
        assert_eq!(shmq_work_ack(w, job.ticket), SHMQ_OK);
        shmq_worker_free(w);
        shmq_worker_free(null_mut());
        shmq_close(q);
    }
}

#[test]
fn scheduled_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ..) = queues(dir.path());
    let d = default_options();
    // SAFETY: valid C strings, options, payloads and out-parameters; handles used by this
    // thread only, freed once.
    unsafe {
        let (mut q, mut p, mut w) = (null_mut(), null_mut(), null_mut());
        assert_eq!(shmq_open(cpath(&path).as_ptr(), &mut q), SHMQ_OK);
        assert_eq!(shmq_producer_new(q, &mut p), SHMQ_OK);
        assert_eq!(shmq_worker_new(q, c"s".as_ptr(), &d, &mut w), SHMQ_OK);
        let mut offset = u64::MAX;
        let too_long = 1u64 << 32;
        assert_eq!(
            shmq_publish_scheduled(p, b"x".as_ptr(), 1, too_long, 0, 0, &mut offset),
            SHMQ_EINVAL
        );
        assert_eq!(offset, u64::MAX, "written on failure");
        // Expires 1 ms after its timestamp, long before it is due.
        assert_eq!(
            shmq_publish_scheduled(p, b"stale".as_ptr(), 5, 400, 1, 0, &mut offset),
            SHMQ_OK
        );
        assert_eq!(offset, 0);
        assert_eq!(
            shmq_publish_scheduled(p, b"later".as_ptr(), 5, 400, 0, 0, &mut offset),
            SHMQ_OK
        );
        assert_eq!(offset, 1);
        let sent = Instant::now();
        let mut job = std::mem::zeroed::<shmq_job>();
        assert_eq!(shmq_work_poll(w, 10_000_000_000, &mut job), SHMQ_OK);
        assert!(
            sent.elapsed() >= Duration::from_millis(300),
            "{:?}",
            sent.elapsed()
        );
        assert_eq!(job.offset, 1);
        assert_eq!(std::slice::from_raw_parts(job.data, job.len), b"later");
        let mut t = job.ticket;
        assert_eq!(shmq_work_extend(w, &mut t, 60_000), SHMQ_OK);
        assert!(t.deadline_ms > job.ticket.deadline_ms);
        assert_eq!(shmq_work_ack(w, job.ticket), SHMQ_ELEASE);
        assert_eq!(shmq_work_ack(w, t), SHMQ_OK);
        let mut info = std::mem::zeroed::<shmq_work_info>();
        assert_eq!(shmq_work_group_info(q, c"s".as_ptr(), &mut info), SHMQ_OK);
        assert_eq!((info.expired, info.acked, info.base), (1, 1, 2));
        shmq_worker_free(w);
        shmq_producer_free(p);
        shmq_close(q);
    }
}

#[test]
fn dead_letter_parse_checks() {
    let payload = {
        let dir = tempfile::tempdir().unwrap();
        let (path, queue, dlq_path, dlq) = queues(dir.path());
        let options = shmq_core::WorkOptions {
            dead_letter: Some(dlq_path),
            ..shmq_core::WorkOptions::default()
        };
        let mut worker = queue.worker("g", &options).unwrap();
        queue.producer().unwrap().publish(b"bad job").unwrap();
        let ticket = worker
            .poll(Some(Duration::from_secs(5)))
            .unwrap()
            .unwrap()
            .ticket;
        worker.reject(ticket).unwrap();
        let mut c = dlq.consumer("read").unwrap();
        let m = c.poll(Some(Duration::from_secs(5))).unwrap().unwrap();
        let source = std::path::absolute(&path).unwrap();
        (m.payload.to_vec(), source)
    };
    let (bytes, source) = payload;
    // SAFETY: the bytes and out-parameter live across each call; the parsed pointers are read
    // while `bytes` lives.
    unsafe {
        let mut d = std::mem::MaybeUninit::<shmq_dead_letter>::uninit();
        assert_eq!(
            shmq_dead_letter_parse(bytes.as_ptr(), bytes.len(), d.as_mut_ptr()),
            SHMQ_OK
        );
        let mut d = d.assume_init();
        assert_eq!(d.reason, shmq_dead_reason::SHMQ_DEAD_REJECTED);
        assert_eq!((d.offset, d.deliveries), (0, 1));
        assert!(d.dead_at_ns >= d.timestamp_ns);
        let s = std::slice::from_raw_parts(d.source.cast::<u8>(), d.source_len);
        assert_eq!(s, source.to_str().unwrap().as_bytes());
        assert_eq!(
            std::slice::from_raw_parts(d.payload, d.payload_len),
            b"bad job"
        );
        let range = bytes.as_ptr_range();
        assert!(range.contains(&d.payload) && range.contains(&d.source.cast()));
        // Every prefix shorter than the header and source is refused (one cut in the payload
        // is a valid record of a shorter payload).
        let fixed = bytes.len() - b"bad job".len();
        for len in 0..fixed {
            let mut out = shmq_dead_letter { offset: 77, ..d };
            assert_eq!(
                shmq_dead_letter_parse(bytes.as_ptr(), len, &mut out),
                SHMQ_ECORRUPT,
                "prefix of {len}"
            );
            assert_eq!(out.offset, 77, "written on failure");
        }
        assert_eq!(shmq_dead_letter_parse(null(), 0, &mut d), SHMQ_ECORRUPT);
        assert_eq!(shmq_dead_letter_parse(null(), 4, &mut d), SHMQ_EINVAL);
        assert_eq!(
            shmq_dead_letter_parse(bytes.as_ptr(), bytes.len(), null_mut()),
            SHMQ_EINVAL
        );
        let mut bad = bytes.clone();
        bad[36] = 9; // the reason
        assert_eq!(
            shmq_dead_letter_parse(bad.as_ptr(), bad.len(), &mut d),
            SHMQ_ECORRUPT
        );
        assert!(last_error().contains("bad reason"), "{}", last_error());
    }
}
