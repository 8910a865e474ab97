//! Model checks of the ring protocol under loom (`RUSTFLAGS="--cfg loom" cargo test --lib --release loom`).
//!
//! Every model builds a [`Ring`] over a small heap [`Region`] (see `sync.rs`: each 8-byte word is a
//! loom atomic, the tail is a mutex-backed 128-bit stand-in, the futex is a mutex + condvar) and
//! drives the same `ring.rs` code the queue runs over its mapped file:
//!
//! 1. [`claim_commit_read`]: two producers publish one record each while a reader follows the
//!    cursor rule; offsets and positions are dense and a record read `Ready` carries its bytes.
//! 2. [`abort_races_commit`]: a reader's abort of a pending record against its producer's
//!    commit: exactly one of them wins, and the record reads accordingly.
//! 3. [`no_lost_wakeup`] and [`abort_wakes_sleeper`]: the sleeping half of SYNC W against a
//!    commit (or an abort); loom reports a deadlock if a wake-up can be lost.
//! 4. [`dead_claim_is_skipped`]: a claim that is never committed is aborted by a reader, which
//!    finds the next record through `resolve` and reads it.
//! 5. [`stalled_commit_on_reused_slot`]: a producer stalled before its commit while its record
//!    was aborted and its slot reused by the next lap: its commit fails and leaves the newer
//!    record's tag and header alone.
//! 6. [`run_claim_races_single_claim`]: a run of two records (one tail CAS) races a single
//!    claim while a reader follows the cursor: offsets and positions are dense whichever wins,
//!    the run's records are adjacent, and no position a reader can resolve is a losing
//!    contender's provisional one.
//! 7. [`run_is_read_whole_or_not_at_all`]: a reader that aborts a run's first record at any
//!    moment of its publish reads none of the run, also a member committed already; one that
//!    does not reads all of it.
//!
//! 8. [`transaction_is_read_whole_or_not_at_all`]: a topic transaction's two records against
//!    a reader that gives each up at any moment: both end as the commit point said.
//!
//! 9. [`work_dispatch_race`], [`work_ack_races_redelivery`], [`work_base_advance_races_ack`]
//!    and [`work_shared_sleeper_bit`]: the work-group state machine (`protocol/work.rs`): two
//!    dispatches of one offset, an ack against a redelivery after the lease expired, base
//!    advances racing acks, and the sleeper bit that a group's workers share.
//!
//! 10. [`inbox_two_admitters_of_one_key`], [`inbox_done_races_takeover`] and
//!     [`inbox_release_races_takeover`]: the inbox's slot state machine (`protocol/inbox.rs`):
//!     two admissions of one key (the admission lock a loom mutex), and a holder's done or
//!     release against a takeover by a process that judged it dead;
//!     [`inbox_lock_free_done_sees_no_reused_slot`]: the lock-free answer for a done key
//!     (SYNC Q) against admissions that reuse the key's slot.
//!
//! Payload lengths are multiples of 8 because the model region copies whole words. Readers
//! that wait for a record spin with `loom::thread::yield_now` (loom then runs other threads
//! first), so every model terminates. With `LOOM_MAX_PREEMPTIONS=2` the whole set takes well
//! under a second after the build; the models also pass with no preemption bound (a few
//! seconds).
//!
//! Two loom limitations shape the models (see `model_ring` and the readers):
//! * loom models SeqCst accesses only approximately, so the region's initial zeroes are
//!   re-written SeqCst (see `model_ring`);
//! * loom's DPOR remembers only the last access to each atomic, so a race "reader loads, then
//!   the writer, which loaded the same word itself, stores" is never reversed (tokio-rs/loom
//!   #166, #392; `seal` loads the slot tag before its CAS). A reader that looked once and gave
//!   up would miss "Ready before the bytes are written"; readers therefore keep re-reading
//!   until they see the writes, and loom then explores the reverse orders from that side.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};
// Not `loom::sync::Arc`: when loom reports a deadlock it unwinds the blocked threads after the
// execution is gone, and dropping a loom `Arc` then panics again and aborts the whole test
// binary. Sharing the ring is not what these models check; the joins order its teardown.
use std::sync::Arc;

use loom::thread;

use crate::protocol::crc;
use crate::protocol::layout::{footprint, DATA_WAITERS, RECORD_HEADER, TAIL};
use crate::protocol::ring::{
    tag, tag_offset, Attempt, Claim, Found, KnownTail, Position, Ready, Ring, RingLayout, ABORTED,
    COMMITTED,
};
use crate::protocol::sync::{unpack, Ordering, Region};

/// Data-ring size of the models: small, but several records fit without wrapping.
const CAPACITY: u64 = 128;
/// Offset slots (`N`): one per smallest record in one ring's worth of bytes, as in a queue file.
const SLOTS: u64 = CAPACITY / RECORD_HEADER;
/// Producer slots (only their `INTENT`/`INTENT_POS` words are used), one per model producer.
const PRODUCERS: u64 = 256;
const PRODUCER_STRIDE: u64 = 32;
/// Offset index: `CAPACITY / 32` slots of 16 bytes, clear of `DATA_SEQ` (384) and
/// `DATA_WAITERS` (392).
const INDEX: u64 = 448;
/// The data ring itself.
const DATA: u64 = 512;
const REGION_LEN: usize = (DATA + CAPACITY) as usize;
/// The model consumer's bit in the sleeper bitmap.
const SLEEPER_BIT: u64 = 1 << 3;

fn model_ring() -> Arc<Ring> {
    let layout = RingLayout {
        capacity: CAPACITY,
        max_message: 32,
        index: INDEX,
        index_entries: SLOTS,
        data: DATA,
    };
    assert!(INDEX + layout.index_entries * 16 <= DATA);
    let region = Region::new_model(REGION_LEN);
    // A new file's zeroes, written SeqCst by the creating thread before any other thread runs.
    // Loom treats SeqCst accesses as AcqRel (loom README, "unsupported features"; tokio-rs/loom
    // #180) except for one rule: a SeqCst load never returns a SeqCst store older than another
    // SeqCst store it could see. The value an atomic is created with is not a SeqCst store, so
    // without these stores loom lets a SeqCst load return the initial zero after a SeqCst write
    // that precedes it in the total order S, which C++ forbids (the zero happens-before that
    // write). That made SYNC W fail spuriously in the sequential schedule "producer commits and
    // finds no waiter, then the consumer flags itself and still reads the old tag". Every other
    // write to a SeqCst-accessed word (slot tags, DATA_WAITERS, DATA_SEQ) is SeqCst already.
    for off in (0..REGION_LEN as u64).step_by(8) {
        region.u64(off).store(0, Ordering::SeqCst);
    }
    for off in (0..REGION_LEN as u64).step_by(4) {
        region.u32(off).store(0, Ordering::SeqCst);
    }
    Arc::new(Ring::new(region, layout))
}

/// Region offset of producer `p`'s slot.
fn intent(p: u64) -> u64 {
    PRODUCERS + p * PRODUCER_STRIDE
}

/// Producer `p`'s payload: producers use different lengths, so a reader can tell whose record
/// it sees, and footprints differ, so a wrong cursor position shows.
fn payload(p: u64) -> Vec<u8> {
    let len = 8 * (p as usize + 1);
    (0..len)
        .map(|i| (0xa0 + 0x10 * p as u8) | i as u8)
        .collect()
}

fn timestamp(p: u64) -> u64 {
    1000 + p
}

/// The timestamp of the records of models 6 and 7 (a run's records share one).
const RUN_TIME: u64 = 2000;

/// The producer whose payload has length `len`.
fn owner_of_len(len: u32) -> u64 {
    assert!(
        len % 8 == 0 && (8..=16).contains(&len),
        "unexpected length {len}"
    );
    len as u64 / 8 - 1
}

/// Claims a record for producer `p`'s payload as `Producer::claim_raw` does, with unlimited
/// room (see [`claim_len`]).
fn claim(ring: &Ring, p: u64) -> Claim {
    claim_len(ring, p, payload(p).len() as u32)
}

/// Claims a record of `len` bytes for producer `p` as `Producer::claim_raw` does, with
/// unlimited room. The starting tail is the one of a producer opened before any record was
/// published; a stale tail is refreshed by the failed CAS inside `try_claim`, which the
/// two-producer models exercise.
fn claim_len(ring: &Ring, p: u64, len: u32) -> Claim {
    let mut tail = KnownTail::read(0);
    match ring.try_claim(&mut tail, len, u64::MAX, intent(p)) {
        Attempt::Claimed(c) => {
            assert_eq!(c.len, len);
            assert_eq!(c.start, c.at, "nothing wraps in these models");
            assert_eq!(tail.get(), (c.offset + 1, c.start + footprint(len as u64)));
            c
        }
        Attempt::NoSpace { end } => panic!("no space with an unlimited limit (end {end})"),
        Attempt::BadTail { offset, pos } => panic!("model tail ({offset}, {pos}) is impossible"),
    }
}

/// The CRC32C producer `p` publishes with its payload.
fn crc(p: u64) -> u32 {
    crc::crc32c(&payload(p))
}

/// Writes producer `p`'s payload into its claim and commits it, as `Producer::publish` does.
fn write_and_commit(ring: &Ring, c: &Claim, p: u64) -> Result<(), ()> {
    ring.write_payload(c, &payload(p));
    ring.commit(c, timestamp(p), crc(p), 0, intent(p))
}

/// Checks that `found`, read at cursor `(offset, pos)`, is a complete record by producer `p`
/// (header and payload), and returns the cursor position of `offset + 1`.
fn check_ready(ring: &Ring, found: Found, offset: u64, pos: u64, p: u64) -> u64 {
    check_record(ring, found, offset, pos, p, timestamp(p))
}

/// [`check_ready`] for a record stamped `ts` (a run's records share the run's timestamp).
fn check_record(ring: &Ring, found: Found, offset: u64, pos: u64, p: u64, ts_want: u64) -> u64 {
    let Found::Ready(ready) = found else {
        panic!("record {offset} at {pos}: expected Ready, found {found:?}");
    };
    let Ready {
        start,
        timestamp: ts,
        ..
    } = ready;
    let (len, at) = (ready.len(), ready.payload());
    let want = payload(p);
    assert_eq!(start, pos, "record {offset} moved");
    assert_eq!(len as usize, want.len(), "record {offset}: header length");
    assert_eq!(ts, ts_want, "record {offset}: header timestamp");
    let head = DATA + (start & (CAPACITY - 1));
    assert_eq!(at, head + RECORD_HEADER);
    // The length word's high half carries the CRC (FORMAT.md); `read` checks only the length.
    let len_word = ring.region.u64(head + 8).load(Ordering::Relaxed);
    assert_eq!(
        (len_word >> 32) as u32,
        crc(p),
        "record {offset}: header CRC"
    );
    let mut got = vec![0u8; want.len()];
    ring.region.read_bytes(at, &mut got);
    assert_eq!(
        got, want,
        "record {offset}: payload seen Ready before it was written"
    );
    start + footprint(len as u64)
}

/// Starts producers 0 and 1: each claims a record and then does `then` with its claim (writes
/// and commits it, or dies first). Their handles, in producer order, return the claim and
/// what `then` returned.
fn spawn_producers<R: Send + 'static>(
    ring: &Arc<Ring>,
    then: fn(&Ring, &Claim, u64) -> R,
) -> Vec<thread::JoinHandle<(Claim, R)>> {
    (0..2u64)
        .map(|p| {
            let ring = ring.clone();
            thread::spawn(move || {
                let c = claim(&ring, p);
                let r = then(&ring, &c, p);
                (c, r)
            })
        })
        .collect()
}

/// Spins until record `offset` at `pos` reads `Ready`, checks it with [`check_ready`], and
/// returns the producer that wrote it and the position of the record after it.
fn await_ready(ring: &Ring, offset: u64, pos: u64) -> (u64, u64) {
    await_stamped(ring, offset, pos, None)
}

/// [`await_ready`] for a record of a run stamped `ts`.
fn await_record(ring: &Ring, ts: u64, offset: u64, pos: u64) -> (u64, u64) {
    await_stamped(ring, offset, pos, Some(ts))
}

/// [`await_ready`], the timestamp checked against `ts` (or the producer's own if `None`).
fn await_stamped(ring: &Ring, offset: u64, pos: u64, ts: Option<u64>) -> (u64, u64) {
    loop {
        match ring.read(offset, pos) {
            found @ Found::Ready(_) => {
                let Found::Ready(ready) = &found else {
                    unreachable!()
                };
                let p = owner_of_len(ready.len());
                let ts = ts.unwrap_or(timestamp(p));
                return (p, check_record(ring, found, offset, pos, p, ts));
            }
            // A fresh slot: not committed yet (a real reader would sleep here).
            Found::Pending { tag: 0 } => thread::yield_now(),
            other => panic!("record {offset}: unexpected {other:?}"),
        }
    }
}

/// Model 1: two producers claim and commit one record each; a concurrent reader walks the
/// cursor from `(0, 0)` as `Consumer::poll` does (`pos(o + 1) = start + footprint(len)`),
/// spinning while a record is pending. Every record it accepts must be complete (header and
/// payload) and belong to the producer that claimed that offset; afterwards both records still
/// read `Ready`, offsets are `{0, 1}` and positions are dense.
#[test]
fn claim_commit_read() {
    loom::model(|| {
        let ring = model_ring();
        let producers = spawn_producers(&ring, write_and_commit);

        // Concurrent reader: (offset, producer) of every record accepted, in cursor order.
        let mut seen = Vec::new();
        let mut pos = 0;
        for offset in 0..2 {
            let (p, next) = await_ready(&ring, offset, pos);
            pos = next;
            seen.push((offset, p));
        }

        let claims: Vec<(Claim, Result<(), ()>)> =
            producers.into_iter().map(|h| h.join().unwrap()).collect();
        let mut owner = [0u64; 2];
        for (p, (c, r)) in claims.iter().enumerate() {
            assert_eq!(*r, Ok(()), "producer {p}'s commit of {} failed", c.offset);
            owner[c.offset as usize] = p as u64;
        }
        let offsets: BTreeSet<u64> = claims.iter().map(|(c, _)| c.offset).collect();
        assert_eq!(offsets, BTreeSet::from([0, 1]), "offsets are not dense");
        let first = &claims[owner[0] as usize].0;
        let second = &claims[owner[1] as usize].0;
        assert_eq!(first.at, 0);
        assert_eq!(
            second.at,
            footprint(first.len as u64),
            "positions are not dense"
        );
        let end = second.at + footprint(second.len as u64);
        assert_eq!(
            unpack(ring.region.u128(TAIL).load(Ordering::SeqCst)),
            (2, end)
        );
        assert_eq!(ring.resolve(1), Some(second.at));
        assert_eq!(ring.resolve(2), Some(end));

        for &(offset, p) in &seen {
            assert_eq!(
                p, owner[offset as usize],
                "record {offset} read with the wrong bytes"
            );
        }
        // Final pass: both records are visible once their producers are done.
        let mut pos = 0;
        for offset in 0..2 {
            let found = ring.read(offset, pos);
            pos = check_ready(&ring, found, offset, pos, owner[offset as usize]);
        }
        assert_eq!(pos, end);
    });
}

/// Model 2: a producer claims, writes and commits record 0 while a reader waits until the
/// record is claimed (`tail.offset > 0`, as `Consumer::poll` checks) and, if it still finds it
/// pending, aborts it with the tag it saw (as `poll` does after the claim timeout). Exactly one
/// of commit and abort succeeds, and the record then reads `Ready` or `Aborted` accordingly; a
/// committed record is never aborted and an aborted one never becomes `Ready`.
#[test]
fn abort_races_commit() {
    static ABORT_TRIED: AtomicUsize = AtomicUsize::new(0);
    static ABORT_WON: AtomicUsize = AtomicUsize::new(0);
    static COMMIT_WON: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let ring = model_ring();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let c = claim(&ring, 0);
                let r = write_and_commit(&ring, &c, 0);
                (c, r)
            })
        };

        while ring.tail().0 == 0 {
            thread::yield_now();
        }
        let mut tried = false;
        let mut aborted = false;
        match ring.read(0, 0) {
            Found::Pending { tag } => {
                tried = true;
                aborted = ring.abort(0, tag);
                if aborted {
                    assert_eq!(ring.read(0, 0), Found::Aborted);
                }
            }
            found @ Found::Ready(_) => {
                check_ready(&ring, found, 0, 0, 0);
            }
            other => panic!("record 0: unexpected {other:?}"),
        }

        let (c, committed) = producer.join().unwrap();
        assert_eq!(c.offset, 0);
        if tried {
            ABORT_TRIED.fetch_add(1, StdOrdering::Relaxed);
            assert!(
                committed.is_ok() != aborted,
                "commit {committed:?} and abort {aborted}: exactly one must win"
            );
        } else {
            assert_eq!(committed, Ok(()), "nobody aborted, yet the commit failed");
        }
        let found = ring.read(0, 0);
        if aborted {
            ABORT_WON.fetch_add(1, StdOrdering::Relaxed);
            assert_eq!(found, Found::Aborted);
            assert_eq!(ring.slot_tag(0).load(Ordering::SeqCst), tag(0, ABORTED));
            // Readers skip the aborted claim to pos(1), the end of its claim.
            assert_eq!(ring.resolve(1), Some(footprint(c.len as u64)));
        } else {
            if tried {
                COMMIT_WON.fetch_add(1, StdOrdering::Relaxed);
            }
            assert_eq!(ring.slot_tag(0).load(Ordering::SeqCst), tag(0, COMMITTED));
            check_ready(&ring, found, 0, 0, 0);
        }
    });
    // The race itself was explored, with both outcomes.
    assert!(ABORT_TRIED.load(StdOrdering::Relaxed) > 0);
    assert!(ABORT_WON.load(StdOrdering::Relaxed) > 0);
    assert!(COMMIT_WON.load(StdOrdering::Relaxed) > 0);
}

/// The consumer half of the wake-up models: waits at cursor `(0, 0)` as `Consumer::poll` does
/// (flag, re-check the slot tag with SeqCst, sleep on the futex) until record 0 is no longer
/// pending, and returns what it found. Each wake-up must make progress: nothing but the change
/// we wait for ever bumps the futex word in these models.
fn wait_for_record_0(ring: &Ring) -> Found {
    let mut sleeps = 0;
    loop {
        match ring.read(0, 0) {
            Found::Pending { tag } => {
                assert!(sleeps < 1, "woken without record 0 changing");
                sleeps += 1;
                let word = ring.slot_tag(0);
                // SYNC W (SeqCst): as in `Consumer::poll`.
                let changed = || word.load(Ordering::SeqCst) != tag;
                ring.wait_data(SLEEPER_BIT, changed, None, || true);
            }
            found => return found,
        }
    }
}

/// Model 3: a consumer sleeps on record 0 while a producer commits it. The sleeper must
/// always return (a lost wake-up leaves it blocked forever, which loom reports as a deadlock)
/// and then read the record, and must have taken its bit out of the sleeper bitmap.
#[test]
fn no_lost_wakeup() {
    loom::model(|| {
        let ring = model_ring();
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let found = wait_for_record_0(&ring);
                check_ready(&ring, found, 0, 0, 0);
            })
        };
        let c = claim(&ring, 0);
        assert_eq!(write_and_commit(&ring, &c, 0), Ok(()));
        consumer.join().unwrap();
        assert_eq!(ring.region.u64(DATA_WAITERS).load(Ordering::SeqCst), 0);
    });
}

/// Model 3b: as model 3, but the record's producer never commits and another reader aborts
/// it: the abort must wake the sleeper just as a commit does (it notifies under SYNC W).
#[test]
fn abort_wakes_sleeper() {
    loom::model(|| {
        let ring = model_ring();
        // The claim exists before the race: the aborting reader only aborts claimed records.
        let c = claim(&ring, 0);
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || wait_for_record_0(&ring))
        };
        let Found::Pending { tag } = ring.read(0, 0) else {
            panic!("record 0 is not pending");
        };
        assert!(ring.abort(0, tag), "nothing else changes record 0");
        assert_eq!(consumer.join().unwrap(), Found::Aborted);
        assert_eq!(ring.resolve(1), Some(footprint(c.len as u64)));
        assert_eq!(ring.region.u64(DATA_WAITERS).load(Ordering::SeqCst), 0);
    });
}

/// Model 4: two producers race to claim; the one that gets offset 0 dies before committing
/// (it simply never calls `commit`), the other commits offset 1. A concurrent reader waits
/// until record 0 is claimed, finds it pending and aborts it (standing in for the claim
/// timeout), locates record 1 with `resolve(1)` (which races with record 1's claim: it answers
/// from the tail or from slot 1) and spins until record 1 reads `Ready` there. The position
/// must be the end of the dead claim, and record 1 must carry the live producer's bytes.
#[test]
fn dead_claim_is_skipped() {
    loom::model(|| {
        let ring = model_ring();
        // The producer that got offset 0 dies after its claim: no write, no commit.
        let producers = spawn_producers(&ring, |ring, c, p| {
            (c.offset != 0).then(|| write_and_commit(ring, c, p))
        });

        while ring.tail().0 == 0 {
            thread::yield_now();
        }
        let Found::Pending { tag: seen } = ring.read(0, 0) else {
            panic!("the dead claim 0 is not pending");
        };
        assert_eq!(seen, 0);
        assert!(ring.abort(0, seen), "nobody else changes record 0's tag");
        assert_eq!(ring.read(0, 0), Found::Aborted);
        // Record 0 is claimed, so its end, pos(1), is known: the tail's position if record 1
        // is not claimed yet, else slot 1's entry.
        let pos1 = ring
            .resolve(1)
            .expect("pos(1) unknown after record 0 was claimed");
        let (reader_saw, end) = await_ready(&ring, 1, pos1);

        let claims: Vec<(Claim, Option<Result<(), ()>>)> =
            producers.into_iter().map(|h| h.join().unwrap()).collect();
        let dead = claims.iter().position(|(c, _)| c.offset == 0).unwrap() as u64;
        let live = 1 - dead;
        let (dead_claim, _) = &claims[dead as usize];
        let (live_claim, live_result) = &claims[live as usize];
        assert_eq!(live_claim.offset, 1);
        assert_eq!(*live_result, Some(Ok(())));
        assert_eq!(
            pos1,
            footprint(dead_claim.len as u64),
            "resolve(1) disagrees with the dead claim's end"
        );
        assert_eq!(live_claim.at, pos1);
        assert_eq!(reader_saw, live, "record 1 read with the wrong bytes");
        assert_eq!(end, pos1 + footprint(live_claim.len as u64));

        // A reader arriving now skips the aborted record the same way.
        assert_eq!(ring.read(0, 0), Found::Aborted);
        assert_eq!(ring.resolve(1), Some(pos1));
        let found = ring.read(1, pos1);
        check_ready(&ring, found, 1, pos1, live);
        assert_eq!(ring.resolve(2), Some(end));
    });
}

/// Model 5: producer 0 claims record 0 and stalls before its commit. A reader aborts the record
/// (standing in for the claim timeout), and producer 1 then publishes records 1 to 4. Records 0
/// to 3 are empty, so one lap holds exactly `N` of them and record 4 reuses record 0's slot and
/// ring bytes. The stalled producer wakes up once record 0 is aborted and commits at any point
/// of producer 1's run. Its commit must fail and must not write its header over record 4's:
/// slot 0 ends as `(4, COMMITTED)`, record 0 reads `Overtaken` and record 4 reads `Ready` with
/// producer 1's header and payload. (Refusing only the tag `(0, ABORTED)` let a commit that
/// loaded `(4, COMMITTED)` overwrite it and report the skipped record 0 as published.)
#[test]
fn stalled_commit_on_reused_slot() {
    // Executions whose stalled commit started before the slot was reused, and after.
    static BEFORE_REUSE: AtomicUsize = AtomicUsize::new(0);
    static AFTER_REUSE: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let ring = model_ring();
        // Empty: there is no payload to write before the commit.
        let stalled = claim_len(&ring, 0, 0);
        assert_eq!((stalled.offset, stalled.at), (0, 0));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                // SeqCst as a sleeper's re-check; the loop only waits for the abort, so the
                // commit below runs anywhere from the abort to after record 4's commit.
                while ring.slot_tag(0).load(Ordering::SeqCst) == 0 {
                    thread::yield_now();
                }
                // Relaxed: by coherence the commit's own load of the tag sees this value or a
                // later one, so `reused` means the commit found the slot reused.
                let reused = tag_offset(ring.slot_tag(0).load(Ordering::Relaxed)) > 0;
                (reused, ring.commit(&stalled, timestamp(0), 0, 0, intent(0)))
            })
        };

        let Found::Pending { tag: seen } = ring.read(0, 0) else {
            panic!("the stalled claim 0 is not pending");
        };
        assert!(ring.abort(0, seen), "nothing else changes record 0's tag");
        for o in 1..SLOTS {
            let c = claim_len(&ring, 1, 0);
            assert_eq!((c.offset, c.at), (o, o * RECORD_HEADER));
            assert_eq!(ring.commit(&c, timestamp(1), 0, 0, intent(1)), Ok(()));
        }
        let c = claim(&ring, 1);
        assert_eq!(
            (c.offset, c.at),
            (SLOTS, CAPACITY),
            "record 4 does not reuse record 0's slot and bytes"
        );
        assert_eq!(write_and_commit(&ring, &c, 1), Ok(()));

        let (reused, committed) = producer.join().unwrap();
        assert_eq!(
            committed,
            Err(()),
            "the stalled commit of aborted record 0 succeeded"
        );
        let explored = if reused { &AFTER_REUSE } else { &BEFORE_REUSE };
        explored.fetch_add(1, StdOrdering::Relaxed);
        assert_eq!(
            ring.slot_tag(0).load(Ordering::SeqCst),
            tag(SLOTS, COMMITTED)
        );
        assert_eq!(ring.read(0, 0), Found::Overtaken);
        let found = ring.read(SLOTS, CAPACITY);
        check_ready(&ring, found, SLOTS, CAPACITY, 1);
    });
    // The stalled commit ran both into the aborted tag and into the reused slot.
    assert!(BEFORE_REUSE.load(StdOrdering::Relaxed) > 0);
    assert!(AFTER_REUSE.load(StdOrdering::Relaxed) > 0);
}

/// Claims a run for producer `p` of one record per owner in `owners` (each with that owner's
/// payload, so a reader can tell them apart) with one tail CAS, as `Producer::publish_batch`
/// does, with unlimited room, and writes their payloads; returns the claims. The starting tail
/// is stale as in [`claim_len`].
fn claim_and_write_run(ring: &Ring, p: u64, owners: &[u64]) -> Vec<Claim> {
    let lens: Vec<u32> = owners.iter().map(|&o| payload(o).len() as u32).collect();
    let mut tail = KnownTail::read(0);
    let mut run = Vec::new();
    let Attempt::Claimed(first) =
        ring.try_claim_run(&mut tail, &lens, u64::MAX, intent(p), &mut run)
    else {
        panic!("the run found no room with an unlimited limit");
    };
    assert_eq!(first.offset, run[0].offset);
    for (c, &o) in run.iter().zip(owners) {
        assert_eq!(c.start, c.at, "nothing wraps in these models");
        ring.write_payload(c, &payload(o));
    }
    run
}

/// Model 6: producer 1 publishes a run of two records, its own payload then producer 0's,
/// with one claim (`try_claim_run`, then `commit_run` as `Producer::publish_batch` does), while producer 0 publishes one record; a reader walks the
/// cursor from `(0, 0)` as in model 1. The run's first record is longer than the single one,
/// so a run that loses the race for offset 0 had computed a position for offset 1 past its
/// true one. Before each record it reads, whatever `position` reports for that offset must be
/// the cursor or "not yet known": a run that lost its CAS leaves only provisional slot values
/// behind, and a run that won stores its members' positions before it commits. Afterwards
/// offsets are dense, the run's two records are adjacent in offsets and bytes, and both orders
/// of the race were explored.
#[test]
fn run_claim_races_single_claim() {
    static RUN_FIRST: AtomicUsize = AtomicUsize::new(0);
    static SINGLE_FIRST: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let ring = model_ring();
        let batcher = {
            let ring = ring.clone();
            thread::spawn(move || {
                let owners = [1, 0];
                let run = claim_and_write_run(&ring, 1, &owners);
                let committed = ring.commit_run(&run, RUN_TIME, &owners.map(crc), intent(1));
                assert_eq!(committed, Ok(()));
                run
            })
        };
        let single = {
            let ring = ring.clone();
            thread::spawn(move || {
                let c = claim(&ring, 0);
                ring.write_payload(&c, &payload(0));
                // Stamped as the run is, so the reader checks every record alike.
                assert_eq!(ring.commit(&c, RUN_TIME, crc(0), 0, intent(0)), Ok(()));
                c
            })
        };

        let mut seen = Vec::new();
        let mut pos = 0;
        for offset in 0..3 {
            match ring.position(offset) {
                Position::At(p) | Position::Member(p) => {
                    assert_eq!(p, pos, "record {offset}: wrong position")
                }
                Position::Unpublished | Position::Unknown => {}
            }
            let (p, next) = await_record(&ring, RUN_TIME, offset, pos);
            pos = next;
            seen.push(p);
        }

        let run = batcher.join().unwrap();
        let one = single.join().unwrap();
        assert_eq!(run.len(), 2);
        assert_eq!(
            run[1].offset,
            run[0].offset + 1,
            "the run's offsets are not dense"
        );
        assert_eq!(run[1].at, run[0].at + footprint(run[0].len as u64));
        if run[0].offset == 0 {
            assert_eq!(
                (one.offset, one.at),
                (2, run[1].at + footprint(run[1].len as u64))
            );
            assert_eq!(seen, [1, 0, 0]);
            RUN_FIRST.fetch_add(1, StdOrdering::Relaxed);
        } else {
            assert_eq!((one.offset, one.at), (0, 0));
            assert_eq!(run[0].at, footprint(one.len as u64));
            assert_eq!(seen, [0, 1, 0]);
            SINGLE_FIRST.fetch_add(1, StdOrdering::Relaxed);
        }
        assert_eq!(
            unpack(ring.region.u128(TAIL).load(Ordering::SeqCst)),
            (3, pos)
        );
        for offset in 0..3 {
            assert!(
                ring.resolve(offset).is_some(),
                "pos({offset}) unknown at the end"
            );
        }
        // A reader skipping an aborted record 0 or 1 lands on the next record's position.
        let ends = [0, 1].map(|o| ring.resolve(o + 1).unwrap());
        let starts: Vec<u64> = [0, 1].map(|o| ring.resolve(o).unwrap()).to_vec();
        assert!(starts[0] < ends[0] && ends[0] == starts[1] && starts[1] < ends[1]);
    });
    assert!(RUN_FIRST.load(StdOrdering::Relaxed) > 0);
    assert!(SINGLE_FIRST.load(StdOrdering::Relaxed) > 0);
}

/// Model 7: a run is read all at once or not at all. Producer 1 publishes a run of two records
/// (`try_claim_run`, `commit_run`); a reader waits until the run is claimed and, if it finds
/// its first record pending, aborts it at once (a claim timeout that ran out at any moment of
/// the publish), then walks on with `past_aborted` as `poll` does. Either the reader reads
/// both records and the producer's commit succeeded, or it reads neither, both offsets end
/// aborted (also a member the producer had committed before the abort), the walk lands past
/// the run, and the producer's commit failed. Every outcome, including an abort after the
/// member's commit, is explored.
#[test]
fn run_is_read_whole_or_not_at_all() {
    static READ: AtomicUsize = AtomicUsize::new(0);
    static ABORTED_CLEAN: AtomicUsize = AtomicUsize::new(0);
    static ABORTED_AFTER_MEMBER: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let ring = model_ring();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let owners = [1, 0];
                let run = claim_and_write_run(&ring, 1, &owners);
                let committed = ring.commit_run(&run, RUN_TIME, &owners.map(crc), intent(1));
                (run, committed)
            })
        };

        while ring.tail().0 == 0 {
            thread::yield_now();
        }
        let mut member_was_committed = false;
        let delivered = match ring.read(0, 0) {
            Found::Pending { tag } => {
                member_was_committed = tag_offset(ring.slot_tag(1).load(Ordering::SeqCst)) == 1;
                !ring.abort(0, tag)
            }
            Found::Ready(_) => true,
            other => panic!("record 0: unexpected {other:?}"),
        };
        let end;
        if delivered {
            let (first, pos1) = await_record(&ring, RUN_TIME, 0, 0);
            assert_eq!(first, 1, "record 0 is the run's first");
            let (second, pos2) = await_record(&ring, RUN_TIME, 1, pos1);
            assert_eq!(second, 0, "record 1 is the run's second");
            end = pos2;
        } else {
            assert_eq!(ring.read(0, 0), Found::Aborted);
            // Skips the whole run: its member is aborted too, committed or not.
            let (next, pos) = ring
                .past_aborted(0)
                .expect("the run's end is the tail, always known");
            assert_eq!(next, 2, "the walk stopped inside the run");
            end = pos;
        }

        let (run, committed) = producer.join().unwrap();
        assert_eq!(
            end,
            run[1].at + footprint(run[1].len as u64),
            "the reader's cursor after the run"
        );
        if delivered {
            assert_eq!(committed, Ok(()));
            READ.fetch_add(1, StdOrdering::Relaxed);
        } else {
            assert_eq!(
                committed,
                Err(()),
                "the run was aborted, yet its commit succeeded"
            );
            for offset in 0..2 {
                assert_eq!(
                    ring.slot_tag(offset).load(Ordering::SeqCst),
                    tag(offset, ABORTED),
                    "record {offset} of the aborted run"
                );
            }
            let counter = if member_was_committed {
                &ABORTED_AFTER_MEMBER
            } else {
                &ABORTED_CLEAN
            };
            counter.fetch_add(1, StdOrdering::Relaxed);
        }
    });
    assert!(READ.load(StdOrdering::Relaxed) > 0);
    assert!(ABORTED_CLEAN.load(StdOrdering::Relaxed) > 0);
    assert!(ABORTED_AFTER_MEMBER.load(StdOrdering::Relaxed) > 0);
}

/// Where the transaction model keeps its state word (a byte of the model region no other
/// model word uses: past producer 2's slot, before `DATA_SEQ`).
const TXN_STATE: u64 = 360;

/// Model 8: a transaction of two records (two claims of one producer, standing for two
/// partitions) against a reader that gives each record up as soon as it finds it stalled (a
/// claim timeout that ran out at any moment of the commit): a record not yet prepared is
/// aborted, a prepared one is settled as `give_up_stalled` decides (aborting the transaction
/// if it is still preparing). The producer prepares both, CASes the state word to COMMITTED
/// (or, if that fails, to ABORTED) and settles both. Both records end the same way, as the
/// producer's commit point said, and both outcomes are explored.
#[test]
fn transaction_is_read_whole_or_not_at_all() {
    use crate::protocol::ring::is_prepared;
    use crate::protocol::txn::{self, decide};
    static COMMITTED_BOTH: AtomicUsize = AtomicUsize::new(0);
    static ABORTED_BOTH: AtomicUsize = AtomicUsize::new(0);
    loom::model(|| {
        let ring = model_ring();
        let epoch = 1;
        ring.region
            .u64(TXN_STATE)
            .store(txn::state(epoch, txn::PREPARING), Ordering::SeqCst);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let link = txn::link(0, epoch);
                let mut claims = Vec::new();
                let mut prepared = true;
                for p in 0..2u64 {
                    let run = claim_and_write_run(&ring, p, &[p]);
                    prepared &= ring.prepare_run(&run, RUN_TIME, &[crc(p)], link).is_ok();
                    claims.push((p, run));
                }
                let state = ring.region.u64(TXN_STATE);
                let committed = prepared
                    && state
                        .compare_exchange(
                            txn::state(epoch, txn::PREPARING),
                            txn::state(epoch, txn::COMMITTED),
                            Ordering::SeqCst,
                            Ordering::Relaxed,
                        )
                        .is_ok();
                if !committed {
                    let _ = state.compare_exchange(
                        txn::state(epoch, txn::PREPARING),
                        txn::state(epoch, txn::ABORTED),
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    );
                }
                for (p, run) in &claims {
                    ring.settle_claims(run, committed, intent(*p));
                }
                committed
            })
        };

        while ring.tail().0 < 2 {
            thread::yield_now();
        }
        let mut outcome = [None, None];
        for (o, result) in outcome.iter_mut().enumerate() {
            let o = o as u64;
            let pos = ring.resolve(o).expect("both claimed");
            loop {
                let t = ring.slot_tag(o).load(Ordering::SeqCst);
                if t == tag(o, COMMITTED) || t == tag(o, ABORTED) {
                    *result = Some(t == tag(o, COMMITTED));
                    break;
                }
                if is_prepared(o, t) || tag_offset(t) <= o {
                    let decided = txn::give_up_stalled(&ring, o, pos, t, |slot, e| {
                        assert_eq!(slot, 0, "the link names the model's slot");
                        Ok::<_, ()>(decide(ring.region.u64(TXN_STATE), e))
                    });
                    assert_eq!(decided, Ok(true), "no lap in these models");
                } else {
                    panic!("record {o}: unexpected tag {t:#x}");
                }
            }
        }
        let committed = producer.join().unwrap();
        assert_eq!(
            outcome,
            [Some(committed); 2],
            "the records ended {outcome:?}, the producer's commit point said {committed}"
        );
        if committed {
            for o in 0..2 {
                let pos = ring.resolve(o).unwrap();
                check_record(&ring, ring.read(o, pos), o, pos, o, RUN_TIME);
                assert_eq!(
                    ring.region.u64(DATA + pos + 24).load(Ordering::Relaxed),
                    txn::link(0, epoch),
                    "record {o}: its header lost the link (only the tag may change)"
                );
            }
            COMMITTED_BOTH.fetch_add(1, StdOrdering::Relaxed);
        } else {
            ABORTED_BOTH.fetch_add(1, StdOrdering::Relaxed);
        }
    });
    assert!(COMMITTED_BOTH.load(StdOrdering::Relaxed) > 0);
    assert!(ABORTED_BOTH.load(StdOrdering::Relaxed) > 0);
}

// Work groups (`protocol/work.rs`): the entry state machine and the shared sleeper bit, over a
// model region laid out as a work file of the smallest window. The queue's sleeper words
// (`DATA_SEQ`, `DATA_WAITERS`) and the group's committed cursor live in bytes of the same
// region that a work file does not use (its immutable header and the gap before its members).

use crate::protocol::work::{file_size, pack_state, Entry, State, WorkTable, MIN_WINDOW};

/// Where the work models keep the group's committed cursor (`base`).
const BASE_WORD: u64 = 1920;
/// Where the sleeper model's notifier publishes its change.
const CHANGE_WORD: u64 = 2048;

fn model_work() -> Arc<Region> {
    let len = file_size(MIN_WINDOW) as usize;
    let region = Region::new_model(len);
    // See `model_ring`: the zeroes of a new file, as SeqCst stores, for the words the work
    // models access SeqCst (the sleeper words, the count, the change word).
    for off in [DATA_WAITERS, CHANGE_WORD, 1536] {
        region.u64(off).store(0, Ordering::SeqCst);
    }
    region
        .u32(crate::protocol::layout::DATA_SEQ)
        .store(0, Ordering::SeqCst);
    Arc::new(region)
}

fn in_flight(offset: u64, deadline: u64, count: u32, holder: u8) -> Entry {
    Entry {
        offset,
        state: State::InFlight,
        deadline,
        count,
        holder,
    }
}

/// Work model 1: two workers race to dispatch offset 5: exactly one wins (the other's CAS
/// fails, or it finds the entry dispatched), and the entry holds the winner's delivery and
/// position.
#[test]
fn work_dispatch_race() {
    loom::model(|| {
        let region = model_work();
        let workers: Vec<_> = (0..2u8)
            .map(|me| {
                let region = region.clone();
                thread::spawn(move || {
                    let t = WorkTable::new(&region, MIN_WINDOW);
                    t.dispatch(in_flight(5, 100, 1, me), 64).unwrap()
                })
            })
            .collect();
        let won: Vec<bool> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(won.iter().filter(|&&w| w).count(), 1, "{won:?}");
        let t = WorkTable::new(&region, MIN_WINDOW);
        let winner = won.iter().position(|&w| w).unwrap() as u8;
        assert_eq!(t.load(5), Ok(Some(in_flight(5, 100, 1, winner))));
        assert_eq!(t.pos(5).load(Ordering::SeqCst), 64);
    });
}

/// Work model 2: the holder's ack races a redelivery by a worker that found the lease
/// expired: exactly one wins. A refused ack changed nothing; an ack that won leaves the
/// record acked for good.
#[test]
fn work_ack_races_redelivery() {
    loom::model(|| {
        let region = model_work();
        let held = in_flight(5, 100, 1, 0);
        WorkTable::new(&region, MIN_WINDOW)
            .state(5)
            .store(pack_state(held), Ordering::SeqCst);
        let redeliver = {
            let region = region.clone();
            thread::spawn(move || {
                let t = WorkTable::new(&region, MIN_WINDOW);
                let seen = t.state(5).load(Ordering::SeqCst);
                match t.load(5) {
                    Ok(Some(e)) if e.state == State::InFlight => {
                        t.transition(seen, in_flight(5, 200, e.count + 1, 1))
                    }
                    _ => false,
                }
            })
        };
        let t = WorkTable::new(&region, MIN_WINDOW);
        let acked = t.transition(pack_state(held), held.to(State::Acked, 100, 0));
        let redelivered = redeliver.join().unwrap();
        assert!(acked != redelivered, "exactly one wins");
        let now = t.load(5).unwrap().unwrap();
        if acked {
            assert_eq!(now.state, State::Acked);
        } else {
            assert_eq!(now, in_flight(5, 200, 2, 1));
            // The late ack is refused again and changes nothing.
            assert!(!t.transition(pack_state(held), held.to(State::Acked, 100, 0)));
            assert_eq!(t.load(5).unwrap(), Some(now));
        }
    });
}

/// Work model 3: two workers ack offsets 0 and 1 and each advances base; whatever the
/// interleaving, base ends at 2 (no advance is lost, none passes an unsettled entry).
#[test]
fn work_base_advance_races_ack() {
    loom::model(|| {
        let region = model_work();
        let t = WorkTable::new(&region, MIN_WINDOW);
        for o in 0..2 {
            t.state(o)
                .store(pack_state(in_flight(o, 100, 1, o as u8)), Ordering::SeqCst);
        }
        let settle = |region: &Region, o: u64| {
            let t = WorkTable::new(region, MIN_WINDOW);
            let held = in_flight(o, 100, 1, o as u8);
            assert!(t.transition(pack_state(held), held.to(State::Acked, 100, o as u8)));
            let base = region.u128(BASE_WORD);
            let _ = t.advance_base(
                || base.load(Ordering::SeqCst),
                |seen, b, pos| {
                    base.compare_exchange(
                        seen,
                        crate::protocol::sync::pack(b, pos),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                },
                |b| Some(b * 32),
            );
        };
        let other = {
            let region = region.clone();
            thread::spawn(move || settle(&region, 1))
        };
        settle(&region, 0);
        other.join().unwrap();
        assert_eq!(
            unpack(region.u128(BASE_WORD).load(Ordering::SeqCst)),
            (2, 64)
        );
    });
}

/// Work model 4: two workers of one group sleep on the shared bit while a notifier makes
/// the change they wait for and wakes the bit (SYNC W). Neither may sleep through it (loom
/// reports a lost wake-up as a deadlock: the model futex has no timeout), and the bit is
/// clear once both are out.
#[test]
fn work_shared_sleeper_bit() {
    loom::model(|| {
        let region = model_work();
        let sleepers: Vec<_> = (0..2)
            .map(|member| {
                let region = region.clone();
                thread::spawn(move || {
                    let t = WorkTable::new(&region, MIN_WINDOW);
                    let changed = || region.u64(CHANGE_WORD).load(Ordering::SeqCst) != 0;
                    while !changed() {
                        t.sleep(&region, SLEEPER_BIT, member, changed, None);
                    }
                })
            })
            .collect();
        region.u64(CHANGE_WORD).store(1, Ordering::SeqCst);
        crate::protocol::ring::wake_on(&region, DATA_WAITERS, crate::protocol::layout::DATA_SEQ);
        for s in sleepers {
            s.join().unwrap();
        }
        assert_eq!(region.u64(DATA_WAITERS).load(Ordering::SeqCst), 0);
    });
}

// Inboxes (`protocol/inbox.rs`): the slot state machine over a model region laid out as an
// inbox file of the smallest window. The admission lock (an OFD lock in a file) is a loom
// mutex; the effect the models apply is a word of the region the file does not use.

use crate::protocol::inbox::{self, Begun, InboxTable, Key};

/// Where the inbox models count the effects applied.
const EFFECT: u64 = 1024;

fn model_inbox() -> Arc<Region> {
    let region = Region::new_model(inbox::file_size(inbox::MIN_WINDOW) as usize);
    // See `model_ring`: the zeroes of a new file, as SeqCst stores, for the words the models
    // access SeqCst (the slot state words are mutex-backed 128-bit stand-ins).
    region.u64(EFFECT).store(0, Ordering::SeqCst);
    Arc::new(region)
}

/// `begin` of `key` by `holder` under the admission lock, judging every other holder alive
/// or dead as `alive` says.
fn inbox_begin(region: &Region, lock: &loom::sync::Mutex<()>, holder: u64, alive: bool) -> Begun {
    let _held = lock.lock().unwrap();
    let t = InboxTable::new(region, inbox::MIN_WINDOW);
    let key = Key::new(b"order-1").unwrap();
    t.begin(&key, holder, |_| alive, |_| {}).unwrap()
}

/// Inbox model 1: two processes begin the same key: exactly one gets it fresh and applies
/// the effect; the other finds it busy or done, and one that finds it done sees the effect
/// (SYNC N: the done CAS publishes it).
#[test]
fn inbox_two_admitters_of_one_key() {
    loom::model(|| {
        let region = model_inbox();
        let lock = Arc::new(loom::sync::Mutex::new(()));
        let admitters: Vec<_> = (1..=2u64)
            .map(|me| {
                let (region, lock) = (region.clone(), lock.clone());
                thread::spawn(move || {
                    let begun = inbox_begin(&region, &lock, me, true);
                    let t = InboxTable::new(&region, inbox::MIN_WINDOW);
                    match begun {
                        Begun::Fresh { slot, seq } => {
                            region.u64(EFFECT).fetch_add(1, Ordering::Relaxed);
                            assert!(t.finish(slot, seq, me, true));
                        }
                        Begun::Done => assert_eq!(
                            region.u64(EFFECT).load(Ordering::Relaxed),
                            1,
                            "done seen before its effect"
                        ),
                        Begun::Busy => {}
                        Begun::Full => panic!("a window of one key is not full"),
                    }
                    begun
                })
            })
            .collect();
        let got: Vec<Begun> = admitters.into_iter().map(|a| a.join().unwrap()).collect();
        let fresh = got
            .iter()
            .filter(|b| matches!(b, Begun::Fresh { .. }))
            .count();
        assert_eq!(fresh, 1, "{got:?}");
        assert_eq!(region.u64(EFFECT).load(Ordering::Relaxed), 1);
        assert_eq!(inbox_begin(&region, &lock, 3, true), Begun::Done);
    });
}

/// Inbox models 2 and 3: holder 1 holds the key and records it done (`done`) or releases it,
/// while process 2 judges it dead (its lease lost) and takes the key over. Exactly one of the
/// done and the takeover wins; a release never undoes a takeover.
fn inbox_finish_races_takeover(done: bool) {
    loom::model(move || {
        let region = model_inbox();
        let lock = Arc::new(loom::sync::Mutex::new(()));
        let Begun::Fresh { slot, seq } = inbox_begin(&region, &lock, 1, true) else {
            panic!("a new key is fresh");
        };
        let holder = {
            let region = region.clone();
            thread::spawn(move || {
                let t = InboxTable::new(&region, inbox::MIN_WINDOW);
                t.finish(slot, seq, 1, done)
            })
        };
        let taker = inbox_begin(&region, &lock, 2, false);
        let finished = holder.join().unwrap();
        let t = InboxTable::new(&region, inbox::MIN_WINDOW);
        let (_, now) = t.load(slot).unwrap();
        match taker {
            Begun::Fresh { .. } => {
                assert!(!done || !finished, "both the done and the takeover won");
                assert_eq!((now.state, now.holder), (inbox::State::Held, 2));
            }
            Begun::Done => {
                assert!(done && finished);
                assert_eq!(now.state, inbox::State::Done);
            }
            other => panic!("the taker found {other:?}"),
        }
    });
}

#[test]
fn inbox_done_races_takeover() {
    inbox_finish_races_takeover(true);
}

#[test]
fn inbox_release_races_takeover() {
    inbox_finish_races_takeover(false);
}

/// Inbox model 4: a key `K` admitted and released (never done) is evicted by a key `X`, which
/// is done, and is then admitted again into the same slot, while a reader asks without the
/// lock whether `K` is done. It never is: a reader that read `X`'s DONE state and then `K`'s
/// bytes written by the second admission would say so, and the seqlock (SYNC Q) rules that
/// read out.
#[test]
fn inbox_lock_free_done_sees_no_reused_slot() {
    loom::model(|| {
        let region = model_inbox();
        let lock = Arc::new(loom::sync::Mutex::new(()));
        let w = u64::from(inbox::MIN_WINDOW);
        let t = InboxTable::new(&region, inbox::MIN_WINDOW);
        let k = Key::new(b"key-K---").unwrap();
        let x = Key::new(b"key-X---").unwrap();
        assert_eq!(
            t.begin(&k, 1, |_| true, |_| {}),
            Ok(Begun::Fresh { slot: 0, seq: 0 })
        );
        assert!(t.finish(0, 0, 1, false));
        // As if W − 1 other keys were admitted into the other slots: slot 0 is the oldest.
        t.admitted().store(w, Ordering::Relaxed);
        let writer = {
            let (region, lock) = (region.clone(), lock.clone());
            thread::spawn(move || {
                let t = InboxTable::new(&region, inbox::MIN_WINDOW);
                let _held = lock.lock().unwrap();
                assert_eq!(
                    t.begin(&x, 2, |_| true, |_| {}),
                    Ok(Begun::Fresh { slot: 0, seq: w })
                );
                assert!(t.finish(0, w, 2, true));
                t.admitted().store(2 * w, Ordering::Relaxed);
                assert_eq!(
                    t.begin(&k, 2, |_| true, |_| {}),
                    Ok(Begun::Fresh {
                        slot: 0,
                        seq: 2 * w
                    })
                );
            })
        };
        let t = InboxTable::new(&region, inbox::MIN_WINDOW);
        assert!(!t.peek_done(&k), "K was never done");
        writer.join().unwrap();
        assert!(!t.peek_done(&k));
        assert!(!t.peek_done(&x), "X was evicted");
    });
}
