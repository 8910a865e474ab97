//! Durability: flush policies, confirms, group commit, injected I/O failures, writes that fail
//! on a real (loop) device, and recovery after a simulated power loss.
//!
//! A power loss is simulated the way SQLite's crash tests do it. The file image as of the last
//! durable point is kept, a random subset of the 4 KiB pages dirtied since is laid over it, the
//! boot id is changed, and the result is reopened. Recovery must keep every record before the
//! durable offset and must never deliver a torn one.

mod common;
mod failing_disk;

use std::path::Path;
use std::time::{Duration, Instant};

use common::format::{BOOT_ID_AT, FLUSHED_AT};
use failing_disk::FailingDisk;
use shmq::{Durability, Error, Options, Queue, Start, Subscribe, WorkOptions};

const MAX: usize = 400;
/// Size of the pages a power loss writes back or not.
const PAGE: usize = 4096;
/// Makes every flush `fdatasync` leave a copy of the file as it wrote it (`src/fault.rs`).
const SYNC_IMAGES: &str = "SHMQ_SYNC_IMAGES";

fn main() {
    match common::role().as_deref() {
        Some("sync-producer") => sync_producer(),
        Some("flush-poisoned") => flush_poisoned(),
        Some(r) => panic!("unknown role {r}"),
        None => common::harness::run(&[
            (
                "sync_publish_returns_after_its_flush",
                sync_publish_returns_after_its_flush,
            ),
            ("confirm_under_none", confirm_under_none),
            (
                "sync_publish_behind_a_stuck_claim",
                sync_publish_behind_a_stuck_claim,
            ),
            (
                "batch_flushes_within_max_delay",
                batch_flushes_within_max_delay,
            ),
            (
                "group_commit_across_processes",
                group_commit_across_processes,
            ),
            ("injected_failures_are_errors", injected_failures_are_errors),
            (
                "failed_writeback_is_never_reported_durable",
                failed_writeback_is_never_reported_durable,
            ),
            (
                "an_error_a_commit_saw_still_stops_the_flush",
                an_error_a_commit_saw_still_stops_the_flush,
            ),
            ("power_loss_recovery", power_loss_recovery),
            (
                "confirmed_records_survive_a_lapping_ring",
                confirmed_records_survive_a_lapping_ring,
            ),
            (
                "clean_restart_keeps_everything",
                clean_restart_keeps_everything,
            ),
            (
                "work_settlements_are_synced_as_the_queue_says",
                work_settlements_are_synced_as_the_queue_says,
            ),
        ]),
    }
}

/// Queue files live on a real disk (the target directory), not tmpfs, so flushes are real.
fn dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn options(durability: Durability) -> Options {
    Options {
        capacity: 1 << 16,
        max_message: MAX as u32,
        durability,
        claim_timeout: Duration::from_millis(200),
        ..Options::default()
    }
}

/// Payload for record `seq` of a single producer: `seq` equals its offset.
fn payload(seq: u64) -> Vec<u8> {
    common::payload(0, seq as u32, MAX)
}

fn sync_publish_returns_after_its_flush() {
    let d = dir();
    let q = Queue::create(d.path().join("q"), &options(Durability::Sync)).unwrap();
    let mut p = q.producer().unwrap();
    for seq in 0..50 {
        let before = q.flushes();
        let o = p.publish(&payload(seq)).unwrap();
        // One producer: each publish needed (and waited for) a flush of its own.
        assert_eq!(
            q.flushes(),
            before + 1,
            "publish {o} returned without its flush"
        );
        assert!(
            q.durable_offset() > o,
            "publish {o} returned before it was durable"
        );
    }
    // Consumer commits are synced too, and still work.
    let mut c = q.consumer("g").unwrap();
    let m = c
        .poll(Some(Duration::from_secs(1)))
        .unwrap()
        .unwrap()
        .offset;
    c.commit(m).unwrap();
    println!("  50 Sync publishes, {} flushes", q.flushes());
}

/// A claim that is never committed (its producer stopped mid-record) and no consumer running
/// to abort it: the flush leader aborts it after the claim timeout, so a Sync publish behind it
/// completes instead of waiting for ever.
fn sync_publish_behind_a_stuck_claim() {
    let d = dir();
    let q = Queue::create(d.path().join("q"), &options(Durability::Sync)).unwrap();
    let mut stuck = q.producer().unwrap();
    std::mem::forget(stuck.claim(100).unwrap());
    let mut p = q.producer().unwrap();
    let start = Instant::now();
    let o = p.publish(&payload(1)).unwrap();
    let waited = start.elapsed();
    assert_eq!(o, 1);
    assert!(q.durable_offset() > o);
    assert!(
        waited >= Duration::from_millis(200),
        "aborted before the claim timeout"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    // With a publish timeout shorter than the claim timeout, the publish reports it.
    std::mem::forget(stuck.claim(100).unwrap());
    p.set_timeout(Some(Duration::from_millis(20)));
    let err = p.publish(&payload(3)).unwrap_err();
    assert!(
        matches!(err, Error::NotDurable { offset: 3, .. }),
        "{err:?}"
    );
    println!("  a Sync publish behind a stuck claim returned after {waited:?}");
}

fn confirm_under_none() {
    let d = dir();
    let q = Queue::create(d.path().join("q"), &options(Durability::None)).unwrap();
    let mut p = q.producer().unwrap();
    let mut last = 0;
    for seq in 0..100 {
        last = p.publish(&payload(seq)).unwrap();
    }
    assert_eq!(q.durable_offset(), 0, "None flushes nothing by itself");
    assert_eq!(q.flushes(), 0);
    p.wait_durable(last, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(q.durable_offset(), 100);
    // Producers under None are not held back by flushes, so the flush also syncs the header
    // that carries its flushed cursor before it reports anything durable.
    assert_eq!(
        q.flushes(),
        2,
        "one confirm, one flush (data, then header) for all 100 records"
    );
    assert!(matches!(
        p.wait_durable(100, Some(Duration::ZERO)),
        Err(Error::InvalidArgument {
            argument: "offset",
            ..
        })
    ));
}

fn batch_flushes_within_max_delay() {
    let d = dir();
    let delay = Duration::from_millis(20);
    let opts = options(Durability::Batch {
        max_delay: delay,
        max_bytes: 1 << 30,
    });
    let q = Queue::create(d.path().join("q"), &opts).unwrap();
    let mut p = q.producer().unwrap();
    for seq in 0..10 {
        p.publish(&payload(seq)).unwrap();
    }
    let start = Instant::now();
    while q.durable_offset() < 10 {
        assert!(start.elapsed() < delay * 50, "background flush never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "  durable {:?} after the last publish (max delay {delay:?})",
        start.elapsed()
    );
    // A batch filled by bytes is flushed at once (by the flusher its publisher wakes), not
    // after `max_delay`.
    let opts = options(Durability::Batch {
        max_delay: Duration::from_secs(3600),
        max_bytes: 4096,
    });
    let q = Queue::create(d.path().join("q2"), &opts).unwrap();
    let mut p = q.producer().unwrap();
    for seq in 0..200 {
        p.publish(&payload(seq)).unwrap();
    }
    let start = Instant::now();
    // Every full batch is flushed; the records after the last one wait for `max_delay`.
    while q.durable_offset() <= 150 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "full batches not flushed: durable offset {} after {} flushes",
            q.durable_offset(),
            q.flushes()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    println!(
        "  ~40 KiB in 4 KiB batches: durable offset {} after {:?}, {} flushes",
        q.durable_offset(),
        start.elapsed(),
        q.flushes()
    );
}

fn sync_producer() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    let id: u32 = common::arg("SHMQ_ID");
    let mut p = q.producer().unwrap();
    for seq in 0..common::arg::<u32>("SHMQ_COUNT") {
        let o = p.publish(&common::payload(id, seq, 64)).unwrap();
        assert!(
            q.durable_offset() > o,
            "Sync publish returned before its flush"
        );
    }
}

/// Four producer processes under Sync share flushes: well under one flush per message.
fn group_commit_across_processes() {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 500;
    let d = dir();
    let path = d.path().join("q");
    let q = Queue::create(&path, &options(Durability::Sync)).unwrap();
    let start = Instant::now();
    let children: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            common::spawn(
                "sync-producer",
                &[
                    ("SHMQ_PATH", path.display().to_string()),
                    ("SHMQ_ID", id.to_string()),
                    ("SHMQ_COUNT", EACH.to_string()),
                ],
            )
        })
        .collect();
    for c in children {
        let (_, status) = common::wait(c, Duration::from_secs(120), "sync producer");
        assert!(status.success(), "sync producer failed");
    }
    let elapsed = start.elapsed();
    let total = (PRODUCERS * EACH) as f64;
    let ratio = q.flushes() as f64 / total;
    println!(
        "  {PRODUCERS} processes x {EACH} Sync publishes: {} flushes, {ratio:.3} flushes per message, {:.0} msg/s",
        q.flushes(),
        total / elapsed.as_secs_f64()
    );
    assert_eq!(q.durable_offset(), total as u64);
    assert!(
        ratio < 0.75,
        "group commit did not share flushes: {ratio:.3} per message"
    );
}

fn injected_failures_are_errors() {
    let d = dir();
    // A failed allocation (a full disk) fails creation cleanly and leaves nothing behind.
    std::env::set_var("SHMQ_FAIL", "allocate");
    let err = Queue::create(d.path().join("full"), &options(Durability::None)).err();
    std::env::remove_var("SHMQ_FAIL");
    match err {
        Some(Error::Io {
            ref path,
            op: "allocate",
            ref source,
        }) => {
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC");
            assert!(err
                .as_ref()
                .unwrap()
                .to_string()
                .contains(&path.display().to_string()));
        }
        e => panic!("expected an allocate error, got {e:?}"),
    }
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        0,
        "temp file left behind"
    );

    // A refused prefault is an I/O error that names the file; the queue keeps working.
    let prefaulted = d.path().join("prefaulted");
    let q = Queue::create(&prefaulted, &options(Durability::None)).unwrap();
    std::env::set_var("SHMQ_FAIL", "prefault");
    let err = q.prefault().unwrap_err();
    std::env::remove_var("SHMQ_FAIL");
    assert!(
        matches!(&err, Error::Io { path, source, .. }
            if path == &prefaulted && source.raw_os_error() == Some(libc::EIO)),
        "{err:?}"
    );
    assert!(err.to_string().contains("prefault"), "{err}");
    q.prefault().unwrap();
    q.producer().unwrap().publish(&payload(0)).unwrap();
    drop(q);

    // A failed flush under Sync: the publish reports that its record is not durable, and the
    // file is poisoned.
    let path = d.path().join("q");
    let q = Queue::create(&path, &options(Durability::Sync)).unwrap();
    let mut p = q.producer().unwrap();
    p.publish(&payload(0)).unwrap();
    std::env::set_var("SHMQ_FAIL", "fdatasync");
    let err = p.publish(&payload(1)).unwrap_err();
    std::env::remove_var("SHMQ_FAIL");
    assert!(
        matches!(
            err,
            Error::NotDurable {
                offset: 1,
                op: "fdatasync",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not durable"), "{err}");
    assert_eq!(
        q.durable_offset(),
        1,
        "the failed flush must not advance the durable offset"
    );
    // The disk works again, but what the failed flush did not cover is never reported durable
    // (after a real failure the kernel would not write it again): confirms, flushes and
    // publishes fail, naming the file and the failure.
    p.wait_durable(0, Some(Duration::ZERO)).unwrap();
    let err = p
        .wait_durable(1, Some(Duration::from_secs(10)))
        .unwrap_err();
    assert!(matches!(err, Error::Poisoned { offset: 1, .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("Input/output error"), "{err}");
    assert!(matches!(q.flush(), Err(Error::Poisoned { offset: 1, .. })));
    assert!(matches!(
        p.publish(&payload(2)),
        Err(Error::Poisoned { offset: 1, .. })
    ));
    assert_eq!(q.tail_offset(), 2, "a publish on a poisoned file published");
    // Consumers still read and commit, so the backlog can be drained.
    let mut c = q.consumer("g").unwrap();
    std::env::set_var("SHMQ_FAIL", "msync");
    let o = c
        .poll(Some(Duration::from_secs(1)))
        .unwrap()
        .unwrap()
        .offset;
    assert!(matches!(c.commit(o), Err(Error::Io { op: "msync", .. })));
    std::env::remove_var("SHMQ_FAIL");
    c.commit(o).unwrap();
    let m = c.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
    assert_eq!((m.offset, m.payload), (1, &payload(1)[..]));
    c.commit(1).unwrap();
    drop((c, p, q));
    // The mark is in the file: every opener sees it.
    let q = Queue::open(&path).unwrap();
    assert!(matches!(q.flush(), Err(Error::Poisoned { offset: 1, .. })));
    drop(q);
    // Recovery after a restart clears it. (An injected failure loses nothing: the pages stayed
    // dirty and reached the disk later, so recovery finds record 1 intact and keeps it.)
    restart(&path);
    let q = Queue::open(&path).unwrap();
    let r = q.recovery().expect("recovery ran");
    assert_eq!((r.flushed, r.tail), (1, 2), "{r:?}");
    assert_eq!(q.flush().unwrap(), 2);
    let mut p = q.producer().unwrap();
    assert_eq!(p.publish(&payload(2)).unwrap(), 2);
    assert_eq!(q.durable_offset(), 3);
}

/// The two file images of a power loss and what is known about them.
struct Cut {
    /// The disk as of the last flush.
    durable_image: Vec<u8>,
    /// The page cache at the moment of the cut.
    cache: Vec<u8>,
    /// The durable offset of the last flush.
    durable: u64,
    /// The flushed-cursor bytes of the flush before it (what the disk holds if the header page
    /// was not written back since).
    flushed_before: [u8; 16],
    /// The tail at the cut.
    tail: u64,
}

fn power_loss_images(path: &Path) -> Cut {
    let opts = Options {
        capacity: 1 << 16,
        ..options(Durability::Batch {
            max_delay: Duration::from_secs(3600),
            max_bytes: 1 << 30,
        })
    };
    let q = Queue::create(path, &opts).unwrap();
    let mut p = q.producer().unwrap();
    let mut g = q.consumer("g").unwrap();
    let mut seq = 0;
    let mut publish = |p: &mut shmq::Producer, g: &mut shmq::Consumer, n: u64| {
        for _ in 0..n {
            assert_eq!(p.publish(&payload(seq)).unwrap(), seq);
            let m = g
                .poll(Some(Duration::from_secs(1)))
                .unwrap()
                .unwrap()
                .offset;
            g.commit(m).unwrap();
            seq += 1;
        }
    };
    // More than a lap of the 64 KiB ring, so records wrap; then two durable points.
    publish(&mut p, &mut g, 400);
    q.flush().unwrap();
    let mut flushed_before = [0u8; 16];
    flushed_before.copy_from_slice(&std::fs::read(path).unwrap()[FLUSHED_AT..FLUSHED_AT + 16]);
    publish(&mut p, &mut g, 10);
    let durable = q.flush().unwrap();
    let durable_image = std::fs::read(path).unwrap();
    // After the durable point: more records, commits past it, and a claim left half written
    // by a producer that stops mid-record, followed by records of another producer.
    publish(&mut p, &mut g, 150);
    let mut claim = p.claim(300).unwrap();
    claim.as_mut_slice()[..150].fill(0xAB);
    std::mem::forget(claim);
    let mut p2 = q.producer().unwrap();
    p2.publish(&payload(999)).unwrap();
    Cut {
        durable_image,
        cache: std::fs::read(path).unwrap(),
        durable,
        flushed_before,
        tail: q.tail_offset(),
    }
}

fn power_loss_recovery() {
    let d = dir();
    let cut = power_loss_images(&d.path().join("q"));
    let (durable_image, cache, durable, tail) =
        (&cut.durable_image, &cut.cache, cut.durable, cut.tail);
    let dirty: Vec<usize> = (0..cache.len() / PAGE)
        .filter(|&i| durable_image[i * PAGE..(i + 1) * PAGE] != cache[i * PAGE..(i + 1) * PAGE])
        .collect();
    assert!(
        dirty.len() >= 8,
        "too few dirty pages ({}) to mean anything",
        dirty.len()
    );
    let mut rng = common::Rng::new();
    const IMAGES: usize = 300;
    let mut replayed_total = 0;
    let mut clamped_total = 0;
    let mut skipped_total = 0;
    for i in 0..IMAGES {
        let mut image = durable_image.clone();
        for &page in &dirty {
            if rng.range(0, 2) == 1 {
                image[page * PAGE..(page + 1) * PAGE]
                    .copy_from_slice(&cache[page * PAGE..(page + 1) * PAGE]);
            }
        }
        // The flushed cursor on disk may still be the one of the flush before.
        if rng.range(0, 2) == 1 {
            image[FLUSHED_AT..FLUSHED_AT + 16].copy_from_slice(&cut.flushed_before);
        }
        image[BOOT_ID_AT..BOOT_ID_AT + 16].copy_from_slice(&[i as u8 ^ 0x5a; 16]);
        let path = d.path().join(format!("image{i}"));
        std::fs::write(&path, &image).unwrap();
        let q = Queue::open(&path).unwrap_or_else(|e| panic!("image {i}: reopen failed: {e}"));
        let r = q
            .recovery()
            .unwrap_or_else(|| panic!("image {i}: no recovery ran"))
            .clone();
        assert!(
            r.tail >= durable,
            "image {i}: recovered tail {} < durable {durable}",
            r.tail
        );
        assert!(
            r.tail <= tail,
            "image {i}: recovered tail {} past the real tail {tail}",
            r.tail
        );
        replayed_total += r.replayed;
        clamped_total += r.clamped.len();
        skipped_total += r.skipped.len();
        // Every record still in the ring, up to the recovered tail, is intact and in order.
        let mut c = checker(&q);
        let first = c.position();
        assert!(
            first < durable,
            "image {i}: nothing before the durable point is readable"
        );
        for expected in first..r.tail {
            let m = c
                .poll(Some(Duration::from_secs(1)))
                .unwrap()
                .unwrap_or_else(|| panic!("image {i}: record {expected} missing"));
            assert_eq!(m.offset, expected, "image {i}: records out of order");
            assert_eq!(
                m.payload,
                &payload(expected)[..],
                "image {i}: record {expected} torn"
            );
        }
        assert!(
            c.poll(Some(Duration::ZERO)).unwrap().is_none(),
            "image {i}: record past tail"
        );
        for gi in q.groups().iter().filter(|g| g.name != "check") {
            assert!(
                gi.committed <= r.tail,
                "image {i}: group {} past the tail",
                gi.name
            );
            assert_eq!(gi.holder, None, "image {i}: a lease survived the restart");
        }
        // The queue works after recovery: the next record gets the next offset.
        let mut p = q.producer().unwrap();
        assert_eq!(p.publish(b"after").unwrap(), r.tail);
        drop((c, p, q));
        std::fs::remove_file(&path).unwrap();
    }
    println!(
        "  {IMAGES} images of {} dirty pages: durable offset {durable} always kept, {replayed_total} records replayed past it in all, {clamped_total} group offsets clamped to the tail, {skipped_total} moved up to the floor",
        dirty.len()
    );
}

/// The copies the flush hook leaves, one per successful flush `fdatasync`, in call order
/// (`SHMQ_SYNC_IMAGES`, see `src/fault.rs`).
fn synced_copies(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut copies: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    copies.sort();
    copies
}

/// The page cache at the end of one operation of [`lapping_ring_power_loss`].
struct Moment {
    cache: Vec<u8>,
    /// Flush `fdatasync`s completed by then.
    syncs: usize,
    /// The durable offset by then: every record before it was confirmed.
    durable: u64,
    tail: u64,
}

/// A record confirmed durable survives a power loss at any later moment, however far the
/// producers have lapped the ring since its flush.
fn confirmed_records_survive_a_lapping_ring() {
    let mut failures = Vec::new();
    for durability in [
        Durability::Batch {
            max_delay: Duration::from_secs(3600),
            max_bytes: 1 << 30,
        },
        Durability::None,
    ] {
        let (lost, images) = lapping_ring_power_loss(durability);
        if let Some(example) = lost.first() {
            failures.push(format!(
                "{durability:?}: {} of {images} images recovered a tail below the durable \
                 offset, e.g. {example}",
                lost.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One producer laps a 16 KiB ring many times, confirming a record now and then (and, under
/// Batch, flushing whenever the durability bound holds it back). After every publish the page
/// cache is copied. A power loss after publish `m` leaves on disk what the last flush
/// `fdatasync` before it wrote (the flush hook's copy of the file), with each page possibly
/// replaced by the version it held at the end of any publish since: any subset of the pages
/// dirtied since, in any order. Every such image must recover at least up to the durable
/// offset of moment `m`, and deliver every record it keeps intact and in order. Returns the
/// images that recovered less, and how many images were tried.
fn lapping_ring_power_loss(durability: Durability) -> (Vec<String>, usize) {
    const OPS: u64 = 500;
    const IMAGES_PER_CUT: usize = 2;
    let d = dir();
    let path = d.path().join("q");
    let copies = tempfile::tempdir().unwrap();
    let opts = Options {
        capacity: 16 << 10,
        group_slots: 1,
        producer_slots: 2,
        ..options(durability)
    };
    let q = Queue::create(&path, &opts).unwrap();
    let mut p = q.producer().unwrap();
    let mut rng = common::Rng::new();
    std::env::set_var(SYNC_IMAGES, copies.path());
    let mut moments = Vec::new();
    for seq in 0..OPS {
        assert_eq!(p.publish(&payload(seq)).unwrap(), seq);
        if rng.range(0, 40) == 0 {
            p.wait_durable(seq, Some(Duration::from_secs(10))).unwrap();
        }
        moments.push(Moment {
            cache: std::fs::read(&path).unwrap(),
            syncs: synced_copies(copies.path()).len(),
            durable: q.durable_offset(),
            tail: q.tail_offset(),
        });
    }
    std::env::remove_var(SYNC_IMAGES);
    let synced = synced_copies(copies.path());
    assert!(synced.len() >= 5, "only {} flushes", synced.len());

    let restarts = tempfile::tempdir().unwrap();
    let mut lost = Vec::new();
    let mut images = 0;
    for (m, cut) in moments.iter().enumerate().filter(|(_, c)| c.syncs > 0) {
        let base = std::fs::read(&synced[cut.syncs - 1]).unwrap();
        // The publish during which that fdatasync ran, and every one after it up to the cut.
        let since = moments.iter().position(|x| x.syncs == cut.syncs).unwrap();
        let later = &moments[since..=m];
        for k in 0..IMAGES_PER_CUT {
            let mut image = base.clone();
            for page in 0..image.len() / PAGE {
                if rng.range(0, 2) == 1 {
                    let v = &later[rng.range(0, later.len() as u64) as usize].cache;
                    image[page * PAGE..(page + 1) * PAGE]
                        .copy_from_slice(&v[page * PAGE..(page + 1) * PAGE]);
                }
            }
            image[BOOT_ID_AT..BOOT_ID_AT + 16].copy_from_slice(&[0x5a; 16]);
            images += 1;
            let name = format!("cut{m}-{k}");
            let path = restarts.path().join(&name);
            std::fs::write(&path, &image).unwrap();
            let q = Queue::open(&path).unwrap_or_else(|e| panic!("{name}: reopen failed: {e}"));
            let r = q
                .recovery()
                .unwrap_or_else(|| panic!("{name}: no recovery ran"))
                .clone();
            assert!(
                r.tail <= cut.tail,
                "{name}: recovered tail {} past the real tail {}",
                r.tail,
                cut.tail
            );
            if r.tail < cut.durable {
                lost.push(format!("{name}: durable {}, {r:?}", cut.durable));
            }
            let mut c = checker(&q);
            let first = c.position();
            // Recovery vouches for the confirmed records from its starting point on: they must
            // all be readable (and, below, intact).
            assert!(
                first <= r.flushed || r.flushed >= cut.durable,
                "{name}: confirmed records {first}..{} are not readable, {r:?}",
                cut.durable
            );
            for expected in first..r.tail {
                let m = c
                    .poll(Some(Duration::ZERO))
                    .unwrap()
                    .unwrap_or_else(|| panic!("{name}: record {expected} missing"));
                assert_eq!(m.offset, expected, "{name}: records out of order");
                assert_eq!(
                    m.payload,
                    &payload(expected)[..],
                    "{name}: record {expected} torn"
                );
            }
            assert!(
                c.poll(Some(Duration::ZERO)).unwrap().is_none(),
                "{name}: a record past the tail"
            );
            drop((c, q));
            std::fs::remove_file(&path).unwrap();
        }
    }
    println!(
        "  {durability:?}: {OPS} publishes, {} flush fdatasyncs, {images} images, {} with a \
         tail below the durable offset",
        synced.len(),
        lost.len()
    );
    (lost, images)
}

/// After a clean reboot (every page written back) recovery keeps every committed record.
fn clean_restart_keeps_everything() {
    let d = dir();
    let path = d.path().join("q");
    let q = Queue::create(&path, &options(Durability::None)).unwrap();
    let mut p = q.producer().unwrap();
    for seq in 0..100 {
        p.publish(&payload(seq)).unwrap();
    }
    drop((p, q));
    let mut image = std::fs::read(&path).unwrap();
    image[BOOT_ID_AT..BOOT_ID_AT + 16].copy_from_slice(&[7; 16]);
    std::fs::write(&path, &image).unwrap();
    let q = Queue::open(&path).unwrap();
    let r = q.recovery().expect("recovery ran");
    assert_eq!((r.flushed, r.replayed, r.tail), (0, 100, 100));
    let mut c = q.consumer("g").unwrap();
    for expected in 0..100 {
        let m = c.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
        assert_eq!((m.offset, m.payload), (expected, &payload(expected)[..]));
    }
    // A second open on the same boot does not recover again.
    assert!(Queue::open(&path).unwrap().recovery().is_none());
}

/// Whether record `offset` with `payload` is in `image`: its header (offset, length, CRC32C)
/// followed by its payload, at any record boundary.
fn on_device(image: &[u8], offset: u64, payload: &[u8]) -> bool {
    let mut head = offset.to_le_bytes().to_vec();
    head.extend((payload.len() as u32).to_le_bytes());
    head.extend(crc32c::crc32c(payload).to_le_bytes());
    let end = 32 + payload.len();
    (0..image.len().saturating_sub(end))
        .step_by(8)
        .any(|at| image[at..at + 16] == head[..] && image[at + 32..at + end] == *payload)
}

/// A real device failure. The writeback of records fails; the kernel marks the failed pages
/// clean and reports the error once, so the next `fdatasync` succeeds without writing them.
/// The durable offset must never move over those records: the file is poisoned, in every
/// process, until recovery after a restart rebuilds it from what the device holds.
fn failed_writeback_is_never_reported_durable() {
    let Some(mut disk) = FailingDisk::new() else {
        return;
    };
    let path = disk.dir().join("q");
    let q = Queue::create(&path, &options(Durability::None)).unwrap();
    let mut p = q.producer().unwrap();
    for seq in 0..10 {
        assert_eq!(p.publish(&payload(seq)).unwrap(), seq);
    }
    assert_eq!(q.flush().unwrap(), 10);
    disk.fail();
    for seq in 10..60 {
        assert_eq!(p.publish(&payload(seq)).unwrap(), seq);
    }
    // The first flush gets the device's error; the kernel has nothing left to write (or to
    // report) for the next ones.
    let confirms: Vec<_> = (0..3)
        .map(|_| p.wait_durable(59, Some(Duration::from_secs(10))))
        .collect();
    let durable = q.durable_offset();
    println!("  confirms while the device fails: {confirms:?}; durable offset {durable}");
    assert_eq!(
        durable, 10,
        "the durable offset moved over records whose flush failed"
    );
    for confirm in &confirms {
        match confirm {
            Err(
                e @ Error::Poisoned {
                    offset: 10, source, ..
                },
            ) => {
                assert_eq!(source.raw_os_error(), Some(libc::EIO));
                assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            }
            r => panic!("a confirm after the failed flush returned {r:?}"),
        }
    }
    // Records before the failure are still confirmed.
    p.wait_durable(9, Some(Duration::ZERO)).unwrap();
    // A process that opens the file now never gets the device's error (the kernel reported it
    // already); the mark in the file stops its flush.
    let child = common::spawn(
        "flush-poisoned",
        &[("SHMQ_PATH", path.display().to_string())],
    );
    let (out, status) = common::wait(child, Duration::from_secs(60), "flush-poisoned");
    assert!(
        status.success(),
        "the other process's flush did not fail as it should"
    );
    assert_eq!(out.trim(), "10");
    // The queue still carries records, from the page cache.
    assert_eq!(p.publish(&payload(60)).unwrap(), 60);
    let mut c = q.consumer("g").unwrap();
    for seq in 0..=60 {
        let m = c.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
        assert_eq!((m.offset, m.payload), (seq, &payload(seq)[..]));
    }
    drop((c, p, q));

    // What the device holds: everything reported durable, and not what failed.
    disk.replace();
    let image = std::fs::read(&path).unwrap();
    let missing: Vec<u64> = (0..60)
        .filter(|&s| !on_device(&image, s, &payload(s)))
        .collect();
    assert!(
        missing.iter().any(|&s| s >= 10),
        "the device lost nothing: no write failed"
    );
    assert!(
        missing.iter().all(|&s| s >= durable),
        "durable offset {durable}, but records {missing:?} are not on the device"
    );
    // After a restart (the page cache is gone with the old device), recovery keeps what the
    // device holds, and the queue works again.
    restart(&path);
    let q = Queue::open(&path).unwrap();
    let r = q.recovery().expect("recovery ran").clone();
    assert_eq!((r.flushed, r.tail), (10, 10), "{r:?}");
    let mut c = q.consumer("after").unwrap();
    for seq in 0..10 {
        let m = c.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
        assert_eq!((m.offset, m.payload), (seq, &payload(seq)[..]));
    }
    assert!(c.poll(Some(Duration::ZERO)).unwrap().is_none());
    let mut p = q.producer().unwrap();
    assert_eq!(p.publish(&payload(10)).unwrap(), 10);
    assert_eq!(q.flush().unwrap(), 11);
    println!(
        "  records not on the failed device: {missing:?}; recovered tail {}",
        r.tail
    );
}

/// Child: opens a queue file whose flush failed in another process, flushes, and prints the
/// offset the poison error names.
fn flush_poisoned() {
    let q = Queue::open(common::arg::<String>("SHMQ_PATH")).unwrap();
    match q.flush() {
        Err(Error::Poisoned { offset, .. }) => println!("{offset}"),
        r => panic!("a flush in a process that opened the file after the failure: {r:?}"),
    }
}

/// Makes the file at `path` look last used before a machine restart (another boot id), so
/// that the next open recovers it.
fn restart(path: &Path) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0x5a; 16], BOOT_ID_AT as u64).unwrap();
}

/// The same through another door. A Sync consumer's commit `msync`s its cursor, and that call
/// reports any writeback error of the file (the kernel reports errors per file, not per page),
/// here one of the ring's pages. That consumes the report for the file description the
/// mapping was made from, so a flush through that description would succeed.
fn an_error_a_commit_saw_still_stops_the_flush() {
    let Some(mut disk) = FailingDisk::new() else {
        return;
    };
    let path = disk.dir().join("q");
    let big = common::payload(0, 2, 8000);
    // A claim timeout well above the publish timeout below: no flush leader may abort the
    // stuck claim while that publish waits.
    let opts = Options {
        max_message: 8000,
        claim_timeout: Duration::from_secs(1),
        ..options(Durability::Sync)
    };
    let q = Queue::create(&path, &opts).unwrap();
    let mut p = q.producer().unwrap();
    let mut stuck = q.producer().unwrap();
    let mut c = q.consumer("g").unwrap();
    assert_eq!(p.publish(&payload(0)).unwrap(), 0);
    let m = c.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
    assert_eq!(m.offset, 0);
    disk.fail();
    // Record 1 is claimed and never committed, so no flush reaches record 2 yet: its publish
    // times out with the record committed but not flushed.
    std::mem::forget(stuck.claim(100).unwrap());
    p.set_timeout(Some(Duration::from_millis(20)));
    let r = p.publish(&big).unwrap_err();
    assert!(
        matches!(
            r,
            Error::NotDurable {
                offset: 2,
                op: "wait for the flush",
                ..
            }
        ),
        "{r:?}"
    );
    // The consumer aborts the stuck claim after the claim timeout and reads record 2.
    let m = c.poll(Some(Duration::from_secs(5))).unwrap().unwrap();
    assert_eq!((m.offset, m.payload), (2, &big[..]));
    // The file is written back, and every write fails.
    assert!(disk.write_back(&path).is_err(), "a write-back succeeded");
    let commit = c.commit(2);
    assert!(
        matches!(commit, Err(Error::Io { op: "msync", .. })),
        "{commit:?}"
    );
    let confirm = p.wait_durable(2, Some(Duration::from_secs(10)));
    let durable = q.durable_offset();
    println!("  commit: {commit:?}; the confirm after it: {confirm:?}; durable offset {durable}");
    assert_eq!(
        durable, 1,
        "the durable offset moved over a record whose flush failed"
    );
    assert!(
        matches!(confirm, Err(Error::Poisoned { offset: 1, .. })),
        "{confirm:?}"
    );
    // A Sync publish on the poisoned file publishes nothing.
    let r = p.publish(&payload(3));
    assert!(matches!(r, Err(Error::Poisoned { offset: 1, .. })), "{r:?}");
    assert_eq!(q.tail_offset(), 3);
    drop((c, stuck, p, q));
    disk.replace();
    let image = std::fs::read(&path).unwrap();
    assert!(on_device(&image, 0, &payload(0)));
    assert!(!on_device(&image, 2, &big), "the device lost nothing");
}

/// A non-gating reader of every record still in the ring, for checking a recovered file.
fn checker(q: &Queue) -> shmq::Consumer {
    let from_the_start = Subscribe {
        gating: false,
        start: Start::Earliest,
        session_timeout: None,
    };
    q.subscribe("check", &from_the_start).unwrap()
}

/// A work group's settlements reach the disk as the queue's durability says: under `Sync` an
/// ack returns only after its entry's `msync` (an injected failure of it is the ack's error,
/// naming the work file); under `Batch` a poll syncs the work file once the batch's max delay
/// has passed, before it takes a delivery (its failure is the poll's error, and strands no
/// delivery: the record is taken once the disk works again).
fn work_settlements_are_synced_as_the_queue_says() {
    let d = dir();
    let work_file = |q: &Path| {
        let mut s = q.as_os_str().to_owned();
        s.push(".work-0");
        std::path::PathBuf::from(s)
    };
    let long = Some(Duration::from_secs(10));
    let wopts = WorkOptions {
        window: 64,
        ..WorkOptions::default()
    };

    let path = d.path().join("sync.q");
    let q = Queue::create(&path, &options(Durability::Sync)).unwrap();
    let mut w = q.worker("jobs", &wopts).unwrap();
    let mut p = q.producer().unwrap();
    p.publish(&payload(0)).unwrap();
    p.publish(&payload(1)).unwrap();
    let t = w.poll(long).unwrap().unwrap().ticket;
    std::env::set_var("SHMQ_FAIL", "msync");
    let err = w.ack(t).unwrap_err();
    std::env::remove_var("SHMQ_FAIL");
    match &err {
        Error::Io {
            path: p,
            op: "msync",
            ..
        } => assert_eq!(p, &work_file(&path)),
        e => panic!("expected the work file's msync error, got {e:?}"),
    }
    let t = w.poll(long).unwrap().unwrap().ticket;
    w.ack(t).unwrap();
    drop((w, p, q));

    let path = d.path().join("batch.q");
    let batch = Durability::Batch {
        max_delay: Duration::from_millis(5),
        max_bytes: 1 << 20,
    };
    let q = Queue::create(&path, &options(batch)).unwrap();
    let mut w = q.worker("jobs", &wopts).unwrap();
    let mut p = q.producer().unwrap();
    p.publish(&payload(0)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::env::set_var("SHMQ_FAIL", "msync");
    let err = w.poll(long).map(|j| j.map(|j| j.offset));
    std::env::remove_var("SHMQ_FAIL");
    assert!(
        matches!(err, Err(Error::Io { op: "msync", .. })),
        "expected the batch sync's error, got {err:?}"
    );
    let job = w.poll(long).unwrap().expect("the record, not stranded");
    assert_eq!((job.offset, job.deliveries), (0, 1));
}
