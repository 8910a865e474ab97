//! Recovery after a machine restart, on disk images built by hand: the page cache at chosen
//! moments, each 4 KiB page taken from any one of them (a power loss writes back any subset of
//! the dirty pages, in any order), then the boot id changed so that opening recovers.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::format::{Layout, BOOT_ID_AT};
use shmq::{Error, Options, Queue, Start, Subscribe};

/// Size of the pages a power loss writes back or not.
const PAGE: usize = 4096;

fn u64_at(image: &[u8], at: u64) -> u64 {
    let at = at as usize;
    u64::from_le_bytes(image[at..at + 8].try_into().unwrap())
}

/// Recovers `image` as file `name` in `dir` and returns every record it then delivers from
/// the oldest on: `(offset, payload)`.
fn recover(dir: &Path, name: &str, mut image: Vec<u8>) -> Vec<(u64, Vec<u8>)> {
    image[BOOT_ID_AT..BOOT_ID_AT + 16].copy_from_slice(&[0x5a; 16]);
    let path = dir.join(name);
    std::fs::write(&path, &image).unwrap();
    let q = Queue::open(&path).unwrap_or_else(|e| panic!("{name}: reopen failed: {e}"));
    assert!(q.recovery().is_some(), "{name}: no recovery ran");
    let mut c = q
        .subscribe(
            "check",
            &Subscribe {
                gating: false,
                start: Start::Earliest,
                session_timeout: None,
            },
        )
        .unwrap();
    let mut delivered = Vec::new();
    while let Some(m) = c.poll(Some(Duration::ZERO)).unwrap() {
        delivered.push((m.offset, m.payload.to_vec()));
    }
    drop((c, q));
    std::fs::remove_file(&path).unwrap();
    delivered
}

/// A producer stalls between `seal`'s check of its slot and its header write; a reader aborts
/// the record meanwhile; the producer then writes the whole header (valid CRC), loses the
/// commit, is told `Aborted`, and publishes the same payload again. If the machine then
/// restarts before the aborted slot tag reaches the disk but after the record's page did, the
/// record must not come back: its producer was told nothing of it was published, and the
/// retry would make it a duplicate. Checked on every image whose pages each come from one of
/// three moments: before the abort, after the lost commit, after the retry.
#[test]
fn a_record_aborted_under_its_producer_never_comes_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::create(
        &path,
        &Options {
            capacity: 4096,
            max_message: 256,
            claim_timeout: Duration::from_millis(20),
            ..Options::default()
        },
    )
    .unwrap();
    let layout = Layout::of(&q);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        layout.ring + layout.capacity,
        "layout as in FORMAT.md"
    );
    let mut reader = q.consumer("g").unwrap();
    let mut p = q.producer().unwrap();
    let earlier: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 40]).collect();
    for record in &earlier {
        p.publish(record).unwrap();
    }
    assert_eq!(q.flush().unwrap(), 3, "records 0..3 are on disk");

    let order = b"charge card 4242 for 100 EUR";
    let mut claim = p.claim(order.len()).unwrap();
    let o = claim.offset();
    claim.as_mut_slice().copy_from_slice(order);
    let before_abort = std::fs::read(&path).unwrap();
    // The reader gives the stalled claim up after the claim timeout and moves past it.
    for want in 0..o {
        assert_eq!(
            reader.poll(Some(Duration::ZERO)).unwrap().unwrap().offset,
            want
        );
    }
    assert!(reader
        .poll(Some(Duration::from_millis(300)))
        .unwrap()
        .is_none());
    assert_eq!(
        reader.position(),
        o + 1,
        "the reader skipped the aborted claim"
    );
    // The producer, past `seal`'s check, writes the header as `seal` does: offset, length
    // and CRC, timestamp, reserved.
    let pos = u64_at(&before_abort, layout.pos_at(o));
    let mut header = Vec::with_capacity(32);
    header.extend_from_slice(&o.to_le_bytes());
    header.extend_from_slice(&(order.len() as u32).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(order).to_le_bytes());
    header.extend_from_slice(&1u64.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&header, layout.data(pos)).unwrap();
    // Its commit loses to the abort, and it is told so ...
    match claim.commit() {
        Err(Error::Aborted { offset }) => assert_eq!(offset, o),
        other => panic!("expected Aborted, got {other:?}"),
    }
    let after_abort = std::fs::read(&path).unwrap();
    assert_eq!(
        u64_at(&after_abort, layout.tag_at(o)),
        o << 3 | 2,
        "the slot says aborted"
    );
    // ... so it publishes the same record again.
    let retry = p.publish(order).unwrap();
    assert_eq!(retry, o + 1);
    let after_retry = std::fs::read(&path).unwrap();

    let moments = [&before_abort, &after_abort, &after_retry];
    let changed: Vec<usize> = (0..after_retry.len() / PAGE)
        .filter(|&i| {
            let page = |m: &Vec<u8>| m[i * PAGE..(i + 1) * PAGE].to_vec();
            moments.iter().any(|m| page(m) != page(&before_abort))
        })
        .collect();
    let tag_page = layout.tag_at(o) as usize / PAGE;
    let record_page = layout.data(pos) as usize / PAGE;
    assert!(changed.contains(&tag_page) && changed.contains(&record_page));
    assert_ne!(tag_page, record_page);
    assert!(changed.len() <= 6, "{} changed pages", changed.len());

    let flushed: Vec<(u64, Vec<u8>)> = (0..).zip(earlier).collect();
    let (mut resurrected, mut duplicated) = (Vec::new(), Vec::new());
    for n in 0..3usize.pow(changed.len() as u32) {
        // Page `changed[k]` comes from moment `(n / 3^k) % 3`.
        let choice: Vec<usize> = (0..changed.len())
            .map(|k| n / 3usize.pow(k as u32) % 3)
            .collect();
        let mut image = after_retry.clone();
        for (&page, &m) in changed.iter().zip(&choice) {
            image[page * PAGE..(page + 1) * PAGE]
                .copy_from_slice(&moments[m][page * PAGE..(page + 1) * PAGE]);
        }
        let delivered = recover(dir.path(), &format!("image{n}"), image);
        assert!(
            delivered.starts_with(&flushed),
            "pages {changed:?} from moments {choice:?}: the flushed records are not all \
             there: {delivered:?}"
        );
        if delivered.iter().any(|(offset, _)| *offset == o) {
            resurrected.push(choice.clone());
        }
        if delivered.iter().filter(|(_, p)| p == order).count() > 1 {
            duplicated.push(choice.clone());
        }
        if choice.iter().all(|&m| m == 2) {
            assert_eq!(
                delivered.last(),
                Some(&(retry, order.to_vec())),
                "with every page written back, the retry is kept"
            );
        }
    }
    println!(
        "{} images of pages {changed:?} (index page {tag_page}, record page {record_page})",
        3usize.pow(changed.len() as u32)
    );
    assert!(
        resurrected.is_empty() && duplicated.is_empty(),
        "the aborted record {o} came back in {} images, twice with its retry in {} \
         (moment of each of pages {changed:?}): {resurrected:?}",
        resurrected.len(),
        duplicated.len()
    );
}

/// A batch is atomic across a restart too: a batch whose first record was aborted (readers
/// gave it up after its producer stalled or died) while its later records were committed
/// already is not replayed in part, and records published after it still are. The image is the
/// page cache after a whole batch and one more record were published, with the batch's first
/// slot tag set to aborted and its later members left committed, as a power loss can leave
/// them (the reader's aborts of the members on another page, or not yet made). Also the moment
/// the whole batch was committed: then it is replayed whole.
#[test]
fn a_batch_whose_first_record_was_aborted_is_not_replayed_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::create(
        &path,
        &Options {
            capacity: 1 << 16,
            max_message: 256,
            ..Options::default()
        },
    )
    .unwrap();
    let layout = Layout::of(&q);
    let mut p = q.producer().unwrap();
    for i in 0..3u8 {
        p.publish(&[i; 40]).unwrap();
    }
    assert_eq!(q.flush().unwrap(), 3, "records 0..3 are on disk");
    let batch: Vec<Vec<u8>> = (0..4u8).map(|i| vec![0xb0 | i; 24]).collect();
    let slices: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    let first = p.publish_batch(&slices).unwrap();
    let after = p.publish(b"after the batch").unwrap();
    drop(p);
    let whole = std::fs::read(&path).unwrap();
    drop(q);

    let kept: Vec<(u64, Vec<u8>)> = (0..3u8).map(|i| (i as u64, vec![i; 40])).collect();
    let delivered = recover(dir.path(), "whole", whole.clone());
    let mut want = kept.clone();
    want.extend((first..).zip(batch.iter().cloned()));
    want.push((after, b"after the batch".to_vec()));
    assert_eq!(delivered, want, "a committed batch is replayed whole");

    let mut image = whole;
    let tag_at = layout.tag_at(first) as usize;
    image[tag_at..tag_at + 8].copy_from_slice(&(first << 3 | 2).to_le_bytes());
    let delivered = recover(dir.path(), "aborted", image);
    let mut want = kept;
    want.push((after, b"after the batch".to_vec()));
    assert_eq!(
        delivered, want,
        "the batch's committed later records came back, or the record after it was lost"
    );
}
