//! Hostile surroundings: a queue file truncated, removed or replaced under running processes.
//! No process dies, each gets `Error::Truncated` or `Error::Detached`, and other queues of the
//! same process keep working. A `SIGBUS` that is not shmq's still reaches the host's handler,
//! or kills the process as it would have without shmq.

mod common;

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shmq::{Detachment, Error, Options, Queue};

/// How long a child may take to notice and report (the watcher checks once a second).
const LIMIT: Duration = Duration::from_secs(60);
/// The children's payload size, from the parent (`SHMQ_PAYLOAD`): 200 bytes (the direct CRC
/// path) or 4 KiB (where the CPU has it, the copy with its CRC folded in, in 64-byte stores).
fn payload_len() -> usize {
    common::arg::<usize>("SHMQ_PAYLOAD")
}

fn main() {
    match common::role().as_deref() {
        Some("producer") => producer(),
        Some("consumer") => consumer(),
        Some("host_handler") => host_handler(),
        Some("host_default") => host_default(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            ("truncated_in_a_loop", truncated_in_a_loop),
            ("removed_is_detached", removed_is_detached),
            ("replaced_is_detached", replaced_is_detached),
            ("a_forked_child_is_watched", a_forked_child_is_watched),
            (
                "foreign_sigbus_reaches_host_handler",
                foreign_sigbus_reaches_host_handler,
            ),
            ("foreign_sigbus_still_kills", foreign_sigbus_still_kills),
            ("prefault_of_a_cut_file", prefault_of_a_cut_file),
        ]),
    }
}

fn options() -> Options {
    Options {
        capacity: 1 << 20,
        max_message: 4096,
        ..Options::default()
    }
}

fn assert_truncated(e: &Error, path: &Path, who: &str) {
    assert!(
        matches!(e, Error::Truncated { path: p } if p == path),
        "{who}: expected Truncated for {}, got {e:?}",
        path.display()
    );
    assert!(e.to_string().contains("truncated"), "{who}: message {e}");
}

/// The other queue of the process still publishes and delivers.
fn bystander_works(other: &Queue, group: &str) {
    let mut c = other.consumer(group).unwrap();
    c.seek(shmq::SeekTo::Latest).unwrap();
    let mut p = other.producer().unwrap();
    let payload = format!("still here: {group}");
    let offset = p.publish(payload.as_bytes()).unwrap();
    // The other process of the round may publish to this queue too: skip its records.
    loop {
        let m = c
            .poll(Some(Duration::from_secs(10)))
            .unwrap()
            .expect("the other queue delivers");
        if m.offset == offset {
            assert_eq!(m.payload, payload.as_bytes());
            return;
        }
        assert!(m.offset < offset, "record {offset} skipped");
    }
}

/// Publishes to the victim until it fails, which must be `Truncated`; then uses the bystander.
fn producer() {
    let victim = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let other = Queue::open(common::arg::<String>("SHMQ_OTHER")).unwrap();
    let mut p = victim.producer().unwrap();
    let payload = vec![7u8; payload_len()];
    let e = loop {
        match p.publish(&payload) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_truncated(&e, victim.path(), "producer");
    // Every later call fails the same way.
    assert_truncated(&p.publish(&payload).unwrap_err(), victim.path(), "producer");
    assert_truncated(&victim.producer().err().unwrap(), victim.path(), "producer");
    bystander_works(&other, "producer-side");
    println!("truncated");
}

/// Reads the victim until it fails, which must be `Truncated`; then uses the bystander.
fn consumer() {
    let victim = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let other = Queue::open(common::arg::<String>("SHMQ_OTHER")).unwrap();
    let mut c = victim.consumer("readers").unwrap();
    let len = payload_len();
    let e = loop {
        match c.poll(Some(Duration::from_secs(30))) {
            Ok(Some(m)) => {
                // Read in place: a truncation after the poll shows here as zeros, which the
                // file check then explains.
                let whole = m.payload.len() == len && m.payload.iter().all(|&b| b == 7);
                let offset = m.offset;
                if !whole {
                    break victim
                        .check_file()
                        .expect_err("consumer: a torn record in an intact file");
                }
                if let Err(e) = c.commit(offset) {
                    break e;
                }
            }
            Ok(None) => panic!("consumer: nothing for 30 s and no error"),
            Err(e) => break e,
        }
    };
    assert_truncated(&e, victim.path(), "consumer");
    assert_truncated(&c.poll(None).unwrap_err(), victim.path(), "consumer");
    bystander_works(&other, "consumer-side");
    println!("truncated");
}

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Truncates the file under a producer and a consumer process, to 0 and to mid-file, in turn,
/// with payloads of 200 bytes and of 4 KiB.
fn truncated_in_a_loop() {
    for round in 0..8u32 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim.q");
        let other_path = dir.path().join("other.q");
        let victim = Queue::create(&path, &options()).unwrap();
        let other = Queue::create(&other_path, &options()).unwrap();
        // The group exists before the producer starts, so it sees every record.
        drop(victim.consumer("readers").unwrap());
        let payload = if round % 4 < 2 { 200 } else { 4096 };
        let env = [
            ("SHMQ_PATH", path.display().to_string()),
            ("SHMQ_OTHER", other_path.display().to_string()),
            ("SHMQ_PAYLOAD", payload.to_string()),
        ];
        let children = [
            common::spawn("producer", &env),
            common::spawn("consumer", &env),
        ];
        // Let them get going: some records published and read.
        let start = Instant::now();
        while victim.groups()[0].committed < 500 {
            assert!(start.elapsed() < LIMIT, "round {round}: no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let to = if round % 2 == 0 { 0 } else { size / 2 };
        truncate(&path, to);
        let truncated_at = Instant::now();
        for (child, what) in children.into_iter().zip(["producer", "consumer"]) {
            let (out, status) = common::wait(child, LIMIT, what);
            assert!(
                status.success(),
                "round {round} (to {to} bytes): {what} failed: {status:?}"
            );
            assert_eq!(out.trim(), "truncated", "round {round}: {what}");
        }
        println!(
            "  round {round}: {payload}-byte records, truncated to {to} of {size} bytes; both \
             children reported it within {:.2?}",
            truncated_at.elapsed()
        );
        // This process maps the file too; its own calls fail, its other queue works.
        assert_truncated(&victim.check_file().unwrap_err(), &path, "parent");
        bystander_works(&other, "parent");
    }
}

/// Publishes until `want` comes back, for at most [`LIMIT`]; returns how long that took.
fn publish_until(q: &Queue, want: fn(&Error) -> bool) -> Duration {
    let mut p = q.producer().unwrap();
    let start = Instant::now();
    loop {
        match p.publish(b"x") {
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) if want(&e) => return start.elapsed(),
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(start.elapsed() < LIMIT, "not detected within {LIMIT:?}");
    }
}

/// Prefaulting a file cut under the process reports the truncation (no `SIGBUS`: the kernel
/// refuses the pages past the end), as every later call does.
fn prefault_of_a_cut_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.q");
    let q = Queue::create(&path, &options()).unwrap();
    q.prefault().unwrap();
    truncate(&path, 4096);
    assert_truncated(&q.prefault().unwrap_err(), &path, "prefault");
    assert_truncated(&q.producer().err().unwrap(), &path, "producer");
}

fn removed_is_detached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.q");
    let q = Queue::create(&path, &options()).unwrap();
    let mut p = q.producer().unwrap();
    p.publish(b"before").unwrap();
    drop(p);
    std::fs::remove_file(&path).unwrap();
    let took = publish_until(&q, |e| {
        matches!(
            e,
            Error::Detached {
                why: Detachment::Removed,
                ..
            }
        )
    });
    println!("  removal detected by a publishing producer after {took:.2?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let e = q.consumer("late").err().unwrap();
    assert!(e.to_string().contains("removed"), "{e}");
    assert!(matches!(e, Error::Detached { ref path, .. } if path == &q.path().to_path_buf()));
}

fn replaced_is_detached() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swapped.q");
    let new_path: PathBuf = dir.path().join("new.q");
    let q = Queue::create(&path, &options()).unwrap();
    let mut c = q.consumer("readers").unwrap();
    Queue::create(&new_path, &options()).unwrap();
    std::fs::rename(&new_path, &path).unwrap();
    // On demand: at once.
    let e = q.check_file().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Detached {
                why: Detachment::Replaced,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("replaced"), "{e}");
    assert!(c.poll(Some(Duration::from_secs(1))).is_err());

    // And from the watcher alone, in a queue nobody asked.
    let path2 = dir.path().join("swapped2.q");
    let q2 = Queue::create(&path2, &options()).unwrap();
    Queue::create(&new_path, &options()).unwrap();
    std::fs::rename(&new_path, &path2).unwrap();
    let took = publish_until(&q2, |e| {
        matches!(
            e,
            Error::Detached {
                why: Detachment::Replaced,
                ..
            }
        )
    });
    println!("  replacement detected by a publishing producer after {took:.2?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// The watcher thread does not survive `fork`: the child's first handle starts its own.
fn a_forked_child_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forked.q");
    let q = Queue::create(&path, &options()).unwrap();
    // SAFETY: the child only uses shmq and exits with `_exit`, never returning into the
    // test runner.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let outcome = std::panic::catch_unwind(|| {
            // Wait for the parent to remove the file, then expect the watcher to see it.
            while path.exists() {
                std::thread::sleep(Duration::from_millis(5));
            }
            publish_until(&q, |e| {
                matches!(
                    e,
                    Error::Detached {
                        why: Detachment::Removed,
                        ..
                    }
                )
            })
        });
        let code = match outcome {
            Ok(took) if took < Duration::from_secs(5) => 0,
            _ => 1,
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    // Let the child make its producer first (it waits for the removal before publishing).
    std::thread::sleep(Duration::from_millis(100));
    std::fs::remove_file(&path).unwrap();
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child did not see the removal within 5 s (status {status})"
    );
}

/// A file of two pages, mapped shared by this process outside shmq, then truncated: the
/// returned pointer faults with `SIGBUS` when read.
fn foreign_truncated_mapping(dir: &Path) -> *mut u8 {
    let f = tempfile::tempfile_in(dir).unwrap();
    f.set_len(8192).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of a file this process owns; never unmapped (the process
    // ends in the fault).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    f.set_len(0).unwrap();
    p as *mut u8
}

extern "C" fn host_sigbus(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(42) };
}

/// Installs its own SIGBUS handler, then opens a queue (shmq chains to it), then faults on a
/// mapping that is not shmq's: its own handler must run (exit status 42).
fn host_handler() {
    // SAFETY: an all-zero sigaction is valid; the handler only calls `_exit`.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = host_sigbus as extern "C" fn(_, _, _) as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        assert_eq!(libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()), 0);
    }
    touch_foreign_after_open();
}

/// Opens a queue with the default SIGBUS action, then faults outside shmq: dies by SIGBUS.
fn host_default() {
    touch_foreign_after_open();
}

fn touch_foreign_after_open() {
    let dir = PathBuf::from(common::arg::<String>("SHMQ_DIR"));
    let q = Queue::open(dir.join("host.q")).unwrap();
    q.producer().unwrap().publish(b"shmq is in use").unwrap();
    let p = foreign_truncated_mapping(&dir);
    // SAFETY: deliberately reads a page past the end of its file: the fault is the test.
    let v = unsafe { p.read_volatile() };
    println!("survived a foreign fault, read {v}");
}

fn foreign_child(role: &str) -> std::process::ExitStatus {
    let dir = tempfile::tempdir().unwrap();
    Queue::create(dir.path().join("host.q"), &options()).unwrap();
    let child = common::spawn(role, &[("SHMQ_DIR", dir.path().display().to_string())]);
    let (out, status) = common::wait(child, LIMIT, role);
    assert!(out.is_empty(), "{role} went on after the fault: {out}");
    status
}

fn foreign_sigbus_reaches_host_handler() {
    let status = foreign_child("host_handler");
    assert_eq!(
        status.code(),
        Some(42),
        "the host's handler did not run: {status:?}"
    );
}

fn foreign_sigbus_still_kills() {
    let status = foreign_child("host_default");
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}
