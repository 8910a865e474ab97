//! Hostile and damaged queue files: opening and using them returns errors, never panics, hangs
//! or crashes; and the clear, deterministic errors for common mistakes.
//!
//! The property tests start from one valid template file (several laps of records, an aborted
//! record, a gating and a lapped non-gating group with commits) and damage it in five ways:
//! random byte edits, truncation/extension, extreme values in the shared tables and ring,
//! header-field edits with a recomputed checksum, and wholly random files (some behind a valid
//! header). Each damaged file is then driven through the whole API in a watchdog thread.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use common::format::*;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use shmq::{Corruption, Error, FullPolicy, Options, Queue, SeekTo, Start, Subscribe};

// ---------------------------------------------------------------------------------------------
// The file layout (`common::format`, from FORMAT.md) and what these tests edit in it.

/// Mutable header words: the tail (offset, position), the data and space futex words and
/// their sleeper bitmaps, the durability cursors (flushed, durable, flush count, recovery
/// floor), the poison word (offset, errno), the durability futex word and bitmap, and the
/// boot id that decides whether open runs recovery.
const HEADER_WORDS: [u64; 21] = [
    128, 136, 256, 264, 272, 280, 288, 304, 312, 320, 328, 384, 388, 392, 512, 516, 520, 640, 648,
    768, 776,
];
/// Durability policy code of `Sync` in the header field `durability`.
const DURABILITY_SYNC: u32 = 2;
/// Immutable header fields: (byte offset, width).
const HEADER_FIELDS: [(usize, usize); 11] = [
    (OFF_VERSION, 4),
    (OFF_HEADER_SIZE, 4),
    (OFF_CAPACITY, 8),
    (OFF_MAX_MESSAGE, 4),
    (OFF_FULL_POLICY, 4),
    (OFF_GROUP_SLOTS, 4),
    (OFF_PRODUCER_SLOTS, 4),
    (OFF_CLAIM_TIMEOUT, 8),
    (OFF_CREATED, 8),
    (OFF_FILE_SIZE, 8),
    (OFF_DURABILITY, 4),
];

/// The layout a (possibly edited) header implies, if its sizes are sane enough to compute.
fn layout_of_header(b: &[u8]) -> Option<Layout> {
    let cap = get64(b, OFF_CAPACITY);
    let (g, p) = (get32(b, OFF_GROUP_SLOTS), get32(b, OFF_PRODUCER_SLOTS));
    (cap.is_power_of_two() && (32..=1 << 24).contains(&cap) && g <= 4096 && p <= 4096)
        .then(|| Layout::new(cap, g as u64, p as u64))
}

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header checksum (CRC32C of bytes 0..124, little-endian at 124).
fn reseal(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[..CHECKSUMMED]);
    put32(b, CHECKSUMMED, crc);
}

/// A valid immutable header for these parameters.
fn header(
    l: &Layout,
    max_message: u32,
    policy: u32,
    claim_timeout_ns: u64,
    created: u64,
) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[..8].copy_from_slice(b"SHMQRING");
    put32(&mut b, OFF_VERSION, shmq::FORMAT_VERSION);
    put32(&mut b, OFF_HEADER_SIZE, HEADER_SIZE as u32);
    put64(&mut b, OFF_CAPACITY, l.capacity);
    put32(&mut b, OFF_MAX_MESSAGE, max_message);
    put32(&mut b, OFF_FULL_POLICY, policy);
    put32(&mut b, OFF_GROUP_SLOTS, l.group_slots as u32);
    put32(&mut b, OFF_PRODUCER_SLOTS, l.producer_slots as u32);
    put64(&mut b, OFF_CLAIM_TIMEOUT, claim_timeout_ns);
    put64(&mut b, OFF_CREATED, created);
    put64(&mut b, OFF_FILE_SIZE, l.file_size);
    reseal(&mut b);
    b
}

// ---------------------------------------------------------------------------------------------
// The template file.

const T_CAPACITY: u64 = 4096;
const T_GROUPS: u32 = 4;
const T_PRODUCERS: u32 = 4;
const T_RECORDS: u64 = 150;

struct Template {
    bytes: Vec<u8>,
    layout: Layout,
    /// File offsets of the record headers of committed records still described by the index.
    record_heads: Vec<u64>,
}

fn t_payload(i: u64) -> Vec<u8> {
    (0..(i * 53 % 200) as usize)
        .map(|k| (i as usize ^ k) as u8)
        .collect()
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(build_template)
}

fn build_template() -> Template {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("template.q");
    let opts = Options {
        capacity: T_CAPACITY,
        max_message: 256,
        full_policy: FullPolicy::Block,
        group_slots: T_GROUPS,
        producer_slots: T_PRODUCERS,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    {
        let q = Queue::create(&path, &opts).unwrap();
        let mut alpha = q.consumer("alpha").unwrap();
        let beta_opts = Subscribe {
            gating: false,
            start: Start::Earliest,
            session_timeout: None,
        };
        let mut beta = q.subscribe("beta", &beta_opts).unwrap();
        let mut p = q.producer().unwrap();
        p.set_timeout(Some(Duration::from_secs(5)));
        let mut expect = 0;
        for i in 0..T_RECORDS {
            if i == 70 {
                drop(p.claim(16).unwrap()); // an aborted record
                expect += 1;
            }
            let offset = p.publish(&t_payload(i)).unwrap();
            assert_eq!(offset, expect);
            expect += 1;
            let m = alpha.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
            assert_eq!(m.payload, &t_payload(i)[..]);
            let o = m.offset;
            if i < T_RECORDS - 5 {
                alpha.commit(o).unwrap();
            }
            if i < 40 {
                let m = beta.poll(Some(Duration::from_secs(1))).unwrap().unwrap();
                let o = m.offset;
                if i < 30 {
                    beta.commit(o).unwrap();
                }
            }
        }
        assert_eq!(q.tail_offset(), T_RECORDS + 1);
        let groups = q.groups();
        assert_eq!(groups.len(), 2);
    }
    let bytes = std::fs::read(&path).unwrap();
    let layout = Layout::new(T_CAPACITY, T_GROUPS as u64, T_PRODUCERS as u64);
    assert_eq!(
        bytes.len() as u64,
        layout.file_size,
        "layout drifted from FORMAT.md"
    );
    // The tail must have wrapped the ring several times.
    assert!(get64(&bytes, TAIL_POSITION_AT) > 3 * T_CAPACITY);
    let mut record_heads = Vec::new();
    for e in 0..layout.entries {
        let slot = (layout.index + e * INDEX_SLOT) as usize;
        let (pos, tag) = (get64(&bytes, slot), get64(&bytes, slot + 8));
        if tag & 1 == 1 {
            let start = if tag & 4 != 0 {
                pos + (T_CAPACITY - pos % T_CAPACITY)
            } else {
                pos
            };
            let head = layout.ring + start % T_CAPACITY;
            // Only records whose header still carries their offset (not overwritten).
            if get64(&bytes, head as usize) == tag >> 3 {
                record_heads.push(head);
            }
        }
    }
    assert!(record_heads.len() > 10, "template has too few live records");
    Template {
        bytes,
        layout,
        record_heads,
    }
}

// ---------------------------------------------------------------------------------------------
// Driving a (possibly hostile) file through the API.

/// Longest any single case may take before it counts as a hang.
const WATCHDOG: Duration = Duration::from_secs(10);

fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn fresh_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    scratch_dir().join(format!("case-{}.q", N.fetch_add(1, Ordering::Relaxed)))
}

/// Writes `bytes` to a fresh file and runs [`exercise`] on it in a watchdog thread. Fails the
/// case on a panic or a hang.
fn check_file(bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = fresh_path();
    std::fs::write(&path, bytes).unwrap();
    let (tx, rx) = mpsc::channel();
    let worker = {
        let path = path.clone();
        std::thread::spawn(move || {
            exercise(&path);
            let _ = tx.send(());
        })
    };
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(TestCaseError::fail(format!(
                "hang: the API did not return within {WATCHDOG:?} on {}",
                path.display()
            )));
        }
    }
    let outcome = worker.join();
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = outcome {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        return Err(TestCaseError::fail(format!("panicked: {msg}")));
    }
    Ok(())
}

/// Open, inspect, consume, seek, commit, publish: every call may fail, none may panic or hang.
/// Returns whether the file opened (for the strategies' sanity checks).
fn exercise(path: &Path) -> bool {
    let q = match Queue::open(path) {
        Ok(q) => q,
        Err(e) => {
            // Errors must render (Display walks every field).
            assert!(!e.to_string().is_empty());
            return false;
        }
    };
    let groups = q.groups();
    let tail = q.tail_offset();
    let _ = q.geometry().clone();
    let _ = (
        q.fill(),
        q.producers(),
        q.producers_waiting(),
        q.oldest_offset(),
    );
    if let Some(g) = groups.first() {
        for to in [
            SeekTo::Time(u64::MAX / 2),
            SeekTo::Offset(tail / 2),
            SeekTo::Earliest,
        ] {
            let _ = q.reset_group(&g.name, to);
        }
    }
    for g in groups.iter().take(3) {
        if let Ok(mut c) = q.consumer(&g.name) {
            drive(&mut c, tail);
        }
    }
    for (name, gating) in [("new-gating", true), ("new-free", false)] {
        let opts = Subscribe {
            gating,
            start: if gating {
                Start::Earliest
            } else {
                Start::Latest
            },
            session_timeout: None,
        };
        if let Ok(mut c) = q.subscribe(name, &opts) {
            drive(&mut c, tail);
        }
    }
    if let Ok(mut p) = q.producer() {
        p.set_timeout(Some(Duration::from_millis(10)));
        let _ = p.publish(b"hostile");
        let _ = p.publish(&[7u8; 256]);
        if let Ok(mut claimed) = p.claim(12) {
            claimed.as_mut_slice().fill(0xa5);
            let _ = claimed.offset();
            let _ = claimed.commit();
        }
        if let Ok(claimed) = p.claim(3) {
            drop(claimed); // abandoned
        }
    }
    if let Some(g) = groups.first() {
        if let Ok(mut c) = q.consumer(&g.name) {
            let _ = c.poll(Some(Duration::ZERO));
        }
    }
    let _ = q.delete_group("new-free");
    let _ = q.delete_group("no-such-group");
    let _ = q.groups();
    true
}

fn drive(c: &mut shmq::Consumer, tail: u64) {
    let _ = (c.group(), c.position(), c.committed(), c.lag());
    poll_some(c, 4);
    if let Ok(Some(m)) = c.poll(Some(Duration::from_millis(1))) {
        let _ = m.payload.iter().map(|&b| b as u64).sum::<u64>();
    }
    for to in [
        SeekTo::Earliest,
        SeekTo::Latest,
        SeekTo::Committed,
        SeekTo::Offset(0),
        SeekTo::Offset(tail),
        SeekTo::Offset(tail.wrapping_sub(1)),
        SeekTo::Offset(tail / 2),
        SeekTo::Offset(u64::MAX),
        SeekTo::Time(0),
        SeekTo::Time(u64::MAX),
        SeekTo::Time(c.committed().wrapping_mul(1 << 30)),
        SeekTo::Earliest,
    ] {
        if c.seek(to).is_ok() {
            poll_some(c, 2);
        }
    }
    let _ = c.commit(u64::MAX);
    let _ = c.commit(0);
}

/// Polls up to `n` records without waiting, committing each one read.
fn poll_some(c: &mut shmq::Consumer, n: usize) {
    for _ in 0..n {
        match c.poll(Some(Duration::ZERO)) {
            Ok(Some(m)) => {
                let _ = m.payload.iter().fold(m.timestamp_ns, |a, &b| a ^ b as u64);
                let o = m.offset;
                let _ = c.commit(o);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// `cases` per property, or `PROPTEST_CASES` from the environment for longer soak runs.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Never write regression files into the source tree; failures print the case.
        failure_persistence: None,
        max_shrink_iters: 1000,
        // A hanging case costs a whole watchdog period per shrink step.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// A value for a shared word: extreme, random, or derived from the value already there.
#[derive(Debug, Clone)]
enum WordValue {
    Const(u64),
    /// The original plus a small delta.
    Near(i64),
    /// The original shifted into a slot tag (`offset << 3 | flags`), offset nudged.
    Tag(i64, u8),
    /// The original with one bit flipped.
    Flip(u8),
}

impl WordValue {
    fn apply(&self, orig: u64) -> u64 {
        match *self {
            WordValue::Const(v) => v,
            WordValue::Near(d) => orig.wrapping_add(d as u64),
            WordValue::Tag(d, f) => (orig.wrapping_add(d as u64) << 3) | (f as u64 & 7),
            WordValue::Flip(bit) => orig ^ (1 << (bit % 64)),
        }
    }
}

fn word_value() -> impl Strategy<Value = WordValue> {
    prop_oneof![
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(2),
            Just(3),
            Just(7),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(u64::MAX - 7),
            Just(u64::MAX - 31),
            Just(u64::MAX - 4095),
            Just(u64::MAX << 3),
            Just(u64::MAX << 3 | 1),
            Just(u64::MAX << 3 | 5),
            Just(1 << 63),
            Just(i64::MAX as u64),
            Just(u32::MAX as u64),
            Just(T_CAPACITY),
            Just(T_CAPACITY - 1),
            Just(T_CAPACITY - 32),
            Just(T_CAPACITY + 4),
            (0u64..64).prop_map(|k| 1u64 << k),
            (0u64..1 << 20),
            any::<u64>(),
        ]
        .prop_map(WordValue::Const),
        (-300i64..300).prop_map(WordValue::Near),
        (-3i64..200, 0u8..8).prop_map(|(d, f)| WordValue::Tag(d, f)),
        any::<u8>().prop_map(WordValue::Flip),
    ]
}

/// Where a targeted word write lands.
#[derive(Debug, Clone)]
enum Target {
    HeaderWord(usize),
    Group { slot: u64, word: u64 },
    Producer { slot: u64, word: u64 },
    Index { entry: u64, tag: bool },
    RecordHead { record: usize, word: u64 },
    Ring { word: u64 },
}

impl Target {
    fn offset(&self, t: &Template) -> u64 {
        let l = &t.layout;
        match *self {
            Target::HeaderWord(i) => HEADER_WORDS[i % HEADER_WORDS.len()],
            Target::Group { slot, word } => l.groups + slot * GROUP_SLOT + word * 8,
            Target::Producer { slot, word } => l.producers + slot * PRODUCER_SLOT + word * 8,
            Target::Index { entry, tag } => l.index + entry * INDEX_SLOT + if tag { 8 } else { 0 },
            Target::RecordHead { record, word } => {
                t.record_heads[record % t.record_heads.len()] + word * 8
            }
            Target::Ring { word } => l.ring + word * 8,
        }
    }
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0usize..HEADER_WORDS.len()).prop_map(Target::HeaderWord),
        (0..T_GROUPS as u64, 0u64..32).prop_map(|(slot, word)| Target::Group { slot, word }),
        (0..T_PRODUCERS as u64, 0u64..16).prop_map(|(slot, word)| Target::Producer { slot, word }),
        (0..T_CAPACITY / 32, any::<bool>()).prop_map(|(entry, tag)| Target::Index { entry, tag }),
        (any::<usize>(), 0u64..4).prop_map(|(record, word)| Target::RecordHead { record, word }),
        (0..T_CAPACITY / 8).prop_map(|word| Target::Ring { word }),
    ]
}

/// One targeted edit: a word value at a target, optionally misaligned by a few bytes.
fn targeted_edit() -> impl Strategy<Value = (Target, WordValue, u8)> {
    (
        target(),
        word_value(),
        prop_oneof![4 => Just(0u8), 1 => 1u8..8],
    )
}

fn apply_targeted(bytes: &mut [u8], t: &Template, edits: &[(Target, WordValue, u8)]) {
    for (target, value, skew) in edits {
        let at = (target.offset(t) + *skew as u64) as usize;
        if at + 8 <= bytes.len() {
            let orig = get64(bytes, at);
            put64(bytes, at, value.apply(orig));
        }
    }
}

/// A header-field edit: which field, and what to put there.
#[derive(Debug, Clone)]
enum FieldEdit {
    Known(usize, WordValue),
    /// Any 4- or 8-byte window inside the checksummed bytes.
    Anywhere(usize, bool, WordValue),
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    let value = prop_oneof![
        3 => word_value(),
        1 => (0u64..4).prop_map(WordValue::Const),
        1 => (12u64..20).prop_map(|k| WordValue::Const(1 << k)),
        1 => (0u64..70).prop_map(WordValue::Const),
    ];
    prop_oneof![
        4 => (0..HEADER_FIELDS.len(), value.clone()).prop_map(|(i, v)| FieldEdit::Known(i, v)),
        1 => (8usize..120, any::<bool>(), value).prop_map(|(at, wide, v)| FieldEdit::Anywhere(
            at,
            wide,
            v
        )),
    ]
}

fn apply_field(b: &mut [u8], edit: &FieldEdit) {
    let (at, width, value) = match edit {
        FieldEdit::Known(i, v) => (HEADER_FIELDS[*i].0, HEADER_FIELDS[*i].1, v),
        FieldEdit::Anywhere(at, wide, v) => (*at, if *wide { 8 } else { 4 }, v),
    };
    let width = if at + width > CHECKSUMMED { 4 } else { width };
    if width == 8 {
        let orig = get64(b, at);
        put64(b, at, value.apply(orig));
    } else {
        let orig = get32(b, at) as u64;
        put32(b, at, value.apply(orig) as u32);
    }
}

/// How the file length follows a header edit.
#[derive(Debug, Clone, Copy)]
enum Resize {
    Keep,
    /// Resize to what the edited header implies and fix the file-size field to match.
    Follow,
    /// Resize to what the header implies but leave the file-size field as edited.
    FollowLengthOnly,
}

/// Largest file the strategies materialise (header edits can ask for huge rings).
const MAX_FILE: u64 = 8 << 20;

fn resize() -> impl Strategy<Value = Resize> {
    prop_oneof![
        Just(Resize::Keep),
        Just(Resize::Follow),
        Just(Resize::FollowLengthOnly)
    ]
}

fn header_edits(
    edits: &[FieldEdit],
    resize: Resize,
    deep: &[(Target, WordValue, u8)],
) -> Result<(), TestCaseError> {
    let t = template();
    let mut b = t.bytes.clone();
    for e in edits {
        apply_field(&mut b, e);
    }
    if let (Some(l), false) = (layout_of_header(&b), matches!(resize, Resize::Keep)) {
        if l.file_size <= MAX_FILE {
            b.resize(l.file_size as usize, 0);
            if matches!(resize, Resize::Follow) {
                put64(&mut b, OFF_FILE_SIZE, l.file_size);
            }
        }
    }
    reseal(&mut b);
    apply_targeted(&mut b, t, deep);
    check_file(&b)
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn random_byte_edits(edits: &[(prop::sample::Index, u8, bool)]) -> Result<(), TestCaseError> {
    let mut b = template().bytes.clone();
    for (at, v, xor) in edits {
        let i = at.index(b.len());
        b[i] = if *xor { b[i] ^ (*v).max(1) } else { *v };
    }
    check_file(&b)
}

fn extreme_words(edits: &[(Target, WordValue, u8)]) -> Result<(), TestCaseError> {
    let t = template();
    let mut b = t.bytes.clone();
    apply_targeted(&mut b, t, edits);
    check_file(&b)
}

fn byte_edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, bool)>> {
    prop::collection::vec(
        (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
        1..24,
    )
}

proptest! {
    #![proptest_config(config(2000))]

    /// (a) Random byte flips and overwrites anywhere in the file.
    #[test]
    fn random_byte_edits_never_panic_or_hang(edits in byte_edits()) {
        random_byte_edits(&edits)?;
    }
}

proptest! {
    #![proptest_config(config(3000))]

    /// (c) Extreme and near-miss values in the group table, producer table, offset index,
    /// record headers, ring bytes and mutable header words.
    #[test]
    fn extreme_words_in_shared_state_never_panic_or_hang(
        edits in prop::collection::vec(targeted_edit(), 1..8),
    ) {
        extreme_words(&edits)?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// (b) Truncation and extension to random lengths (zero or random fill).
    #[test]
    fn truncated_or_extended_files_are_refused(
        len in prop_oneof![
            0usize..200,
            0usize..(4 * T_CAPACITY as usize),
            (0usize..64).prop_map(|d| template().bytes.len() - 32 + d),
            0usize..(64 << 10),
        ],
        fill in any::<u8>(),
    ) {
        let t = template();
        let mut b = t.bytes.clone();
        b.resize(len, fill);
        let path = fresh_path();
        std::fs::write(&path, &b).unwrap();
        let r = Queue::open(&path);
        let _ = std::fs::remove_file(&path);
        if len == t.bytes.len() {
            prop_assert!(r.is_ok());
        } else {
            let need = if len < HEADER_SIZE as usize { HEADER_SIZE } else { t.layout.file_size };
            match r {
                Err(Error::Corrupt { kind: Corruption::Truncated { len: l, need: n }, .. }) => {
                    prop_assert_eq!((l, n), (len as u64, need));
                }
                Err(e) => prop_assert!(false, "wrong error {e}"),
                Ok(_) => prop_assert!(false, "opened a {len}-byte file"),
            }
        }
        // Either way the rest of the API must cope.
        check_file(&b)?;
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// (d) Header-field edits with the checksum recomputed, so validation goes past it
    /// (durability policies included); the file length and file-size field optionally follow
    /// the edited geometry.
    #[test]
    fn header_edits_with_valid_checksum_never_panic_or_hang(
        edits in prop::collection::vec(field_edit(), 1..4),
        resize in resize(),
        deep in prop::collection::vec(targeted_edit(), 0..3),
    ) {
        header_edits(&edits, resize, &deep)?;
    }

    /// (e) Wholly random files: raw bytes, a valid magic and version over random bytes, and
    /// a valid header of random geometry over random or sparsely poisoned tables.
    #[test]
    fn random_files_never_panic_or_hang(
        kind in 0u8..4,
        raw in prop::collection::vec(any::<u8>(), 0..20_000),
        cap_log in 12u32..15,
        max_message in any::<u32>(),
        policy in 0u32..3,
        slots in (1u64..=64, 1u64..=64),
        claim_ns in prop_oneof![Just(1u64), 1u64..2_000_000, Just(u64::MAX)],
        words in prop::collection::vec((any::<prop::sample::Index>(), word_value()), 0..64),
    ) {
        let b = match kind {
            0 => raw,
            1 => {
                let mut b = raw;
                b.resize(b.len().max(HEADER_SIZE as usize), 0);
                b[..8].copy_from_slice(b"SHMQRING");
                put32(&mut b, OFF_VERSION, shmq::FORMAT_VERSION);
                b
            }
            _ => {
                let l = Layout::new(1 << cap_log, slots.0, slots.1);
                let max = 1 + max_message % ((l.capacity / 2 - 32) as u32);
                let mut b = vec![0u8; l.file_size as usize];
                if kind == 2 {
                    // Random bytes after the header, cycled.
                    for (dst, src) in b[HEADER_SIZE as usize..].iter_mut().zip(raw.iter().cycle()) {
                        *dst = *src;
                    }
                }
                b[..128].copy_from_slice(&header(&l, max, policy, claim_ns, 1));
                for (at, v) in &words {
                    let at = (HEADER_SIZE as usize + at.index(b.len() - HEADER_SIZE as usize)) & !7;
                    if at + 8 <= b.len() {
                        let orig = get64(&b, at);
                        put64(&mut b, at, v.apply(orig));
                    }
                }
                b
            }
        };
        check_file(&b)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic errors.

fn make_queue(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    let q = Queue::create(&path, &opts).unwrap();
    q.producer().unwrap().publish(b"x").unwrap();
    path
}

fn edit_file(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    let len = b.len();
    f(&mut b);
    if b.len() == len {
        // In place: truncating a file that is open would be a truncation (`Error::Truncated`).
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.write_all_at(&b, 0).unwrap();
    } else {
        std::fs::write(path, b).unwrap();
    }
}

fn open_err(path: &Path) -> Error {
    match Queue::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

fn corruption(path: &Path) -> Corruption {
    match open_err(path) {
        Error::Corrupt { path: p, kind } => {
            assert_eq!(p, path, "error names the wrong path");
            let e = Error::Corrupt {
                path: p,
                kind: kind.clone(),
            };
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "message lacks the path: {e}"
            );
            kind
        }
        e => panic!("expected Corrupt, got {e:?}"),
    }
}

/// The directory holds exactly these names (no temp files left behind).
fn assert_dir_holds(dir: &Path, names: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}

#[test]
fn template_is_valid_and_usable() {
    let t = template();
    let path = fresh_path();
    std::fs::write(&path, &t.bytes).unwrap();
    let q = Queue::open(&path).unwrap();
    assert_eq!(q.tail_offset(), T_RECORDS + 1);
    let mut names: Vec<(String, u64, bool)> = q
        .groups()
        .into_iter()
        .map(|g| (g.name, g.committed, g.gating))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("alpha".to_string(), T_RECORDS + 1 - 5, true),
            ("beta".to_string(), 30, false)
        ]
    );
    // alpha resumes at its first uncommitted record; beta was lapped long ago.
    let mut alpha = q.consumer("alpha").unwrap();
    let m = alpha.poll(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(m.offset, T_RECORDS + 1 - 5);
    assert_eq!(m.payload, &t_payload(T_RECORDS - 5)[..]);
    let mut beta = q.consumer("beta").unwrap();
    assert!(matches!(
        beta.poll(Some(Duration::ZERO)),
        Err(Error::Lagged { lost }) if lost > 0
    ));
    assert!(exercise(&path), "the undamaged template failed to open");
}

#[test]
fn wrong_magic_is_bad_magic_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    edit_file(&path, |b| b[0] ^= 0x20);
    assert_eq!(corruption(&path), Corruption::BadMagic);
    // A file that is not a queue at all, but long enough.
    std::fs::write(&path, vec![b'#'; 16384]).unwrap();
    assert_eq!(corruption(&path), Corruption::BadMagic);
}

#[test]
fn wrong_version_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    edit_file(&path, |b| {
        put32(b, OFF_VERSION, 1);
        reseal(b);
    });
    assert_eq!(
        corruption(&path),
        Corruption::Version {
            found: 1,
            supported: 2
        }
    );
    // The version is checked before the checksum.
    edit_file(&path, |b| put32(b, OFF_VERSION, 0xdead));
    assert!(matches!(
        corruption(&path),
        Corruption::Version { found: 0xdead, .. }
    ));
}

#[test]
fn truncated_and_extended_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    let good = std::fs::read(&path).unwrap();
    let full = good.len() as u64;
    for (len, need) in [
        (full - 1, full),
        (full - REGION_ALIGN, full),
        (HEADER_SIZE, full),
        (full + 1, full),
        (full * 2, full),
        (HEADER_SIZE - 1, HEADER_SIZE),
        (100, HEADER_SIZE),
        (0, HEADER_SIZE),
    ] {
        std::fs::write(&path, &good).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len).unwrap();
        assert_eq!(
            corruption(&path),
            Corruption::Truncated { len, need },
            "length {len}"
        );
    }
    std::fs::write(&path, &good).unwrap();
    assert_eq!(Queue::open(&path).unwrap().tail_offset(), 1);
}

#[test]
fn damaged_header_fields_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    let good = std::fs::read(&path).unwrap();
    // A flipped bit without a new checksum.
    edit_file(&path, |b| b[OFF_CAPACITY] ^= 1);
    assert!(matches!(
        corruption(&path),
        Corruption::HeaderChecksum { .. }
    ));
    // Bad values with a valid checksum.
    for (at, value) in [
        (OFF_FULL_POLICY, 3u64),
        (OFF_GROUP_SLOTS, 0),
        (OFF_GROUP_SLOTS, 65),
        (OFF_PRODUCER_SLOTS, 0),
        (OFF_MAX_MESSAGE, 0),
        (OFF_MAX_MESSAGE, 4096),
        (OFF_CAPACITY, 4095),
        (OFF_CAPACITY, 1 << 41),
        (OFF_CLAIM_TIMEOUT, 0),
        (OFF_FILE_SIZE, 12345),
    ] {
        std::fs::write(&path, &good).unwrap();
        edit_file(&path, |b| {
            if at == OFF_CAPACITY || at == OFF_CLAIM_TIMEOUT || at == OFF_FILE_SIZE {
                put64(b, at, value);
            } else {
                put32(b, at, value as u32);
            }
            reseal(b);
        });
        assert!(
            matches!(corruption(&path), Corruption::Field(_)),
            "field at {at} = {value}"
        );
    }
    // A consistent but different capacity: the file is now the wrong size.
    std::fs::write(&path, &good).unwrap();
    edit_file(&path, |b| {
        let l = Layout::new(8192, 64, 64);
        put64(b, OFF_CAPACITY, 8192);
        put64(b, OFF_FILE_SIZE, l.file_size);
        reseal(b);
    });
    assert!(matches!(
        corruption(&path),
        Corruption::Truncated { need, .. } if need == Layout::new(8192, 64, 64).file_size
    ));
}

#[test]
fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.q");
    match open_err(&path) {
        Error::NotFound { path: p } => assert_eq!(p, path),
        e => panic!("expected NotFound, got {e:?}"),
    }
    assert!(!path.exists());
}

#[test]
fn symlinks_and_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = make_queue(&dir);
    let before = std::fs::read(&target).unwrap();
    let link = dir.path().join("link.q");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    match open_err(&link) {
        Error::InvalidArgument(msg) => assert!(msg.contains("symbolic link"), "{msg}"),
        e => panic!("expected a refusal, got {e:?}"),
    }
    // A dangling link is refused too, not followed into a new file.
    let dangling = dir.path().join("dangling.q");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    assert!(matches!(open_err(&dangling), Error::InvalidArgument(_)));
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    assert!(matches!(
        Queue::create(&dangling, &opts),
        Err(Error::Exists { .. })
    ));
    assert!(!dir.path().join("nowhere").exists());
    // A FIFO is not a regular file.
    let fifo = dir.path().join("fifo.q");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(matches!(open_err(&fifo), Error::InvalidArgument(_)));
    // A directory is refused with an error, not a panic.
    assert!(Queue::open(dir.path()).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), before);
}

/// A payload byte flipped in the file (on disk or by another process) is caught by the record's
/// CRC32C: the consumer gets an error naming the file and offset, then goes on with the next
/// record. With verification turned off, the damaged bytes are delivered as they are.
#[test]
fn a_flipped_payload_byte_fails_the_checksum_and_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let q = Queue::create(&path, &Options::default()).unwrap();
    let mut p = q.producer().unwrap();
    for i in 0..3u32 {
        p.publish(format!("payload number {i:04} to be checked").as_bytes())
            .unwrap();
    }
    let needle = b"payload number 0001";
    edit_file(&path, |b| {
        let at = b
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("payload 1 in the file");
        b[at + 3] ^= 0x20;
    });
    let mut unchecked = q.consumer("raw").unwrap();
    unchecked.set_verify_checksums(false);
    let mut c = q.consumer("g").unwrap();
    assert_eq!(c.poll(Some(Duration::ZERO)).unwrap().unwrap().offset, 0);
    match c.poll(Some(Duration::ZERO)) {
        Err(Error::Corrupt {
            path: p,
            kind:
                Corruption::Checksum {
                    offset: 1,
                    stored,
                    computed,
                },
        }) => {
            assert_eq!(p, path);
            assert_ne!(stored, computed);
        }
        other => panic!("expected a checksum error for record 1, got {other:?}"),
    }
    let next = c.poll(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(next.offset, 2, "the damaged record is skipped");
    assert_eq!(next.payload, b"payload number 0002 to be checked");
    unchecked.poll(Some(Duration::ZERO)).unwrap().unwrap();
    let damaged = unchecked.poll(Some(Duration::ZERO)).unwrap().unwrap();
    assert_eq!(damaged.payload, b"payLoad number 0001 to be checked");
}

#[test]
fn create_never_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_queue(&dir);
    let before = std::fs::read(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let opts = Options {
        capacity: 8192,
        max_message: 256,
        ..Options::default()
    };
    match Queue::create(&path, &opts) {
        Err(Error::Exists { path: p }) => assert_eq!(p, path),
        other => panic!("expected Exists, got {:?}", other.err()),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    // Any existing file, queue or not.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"keep me").unwrap();
    assert!(matches!(
        Queue::create(&other, &opts),
        Err(Error::Exists { .. })
    ));
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    // No temporary files left behind, and the queue still opens with its record.
    assert_dir_holds(dir.path(), &["q", "notes.txt"]);
    let q = Queue::open(&path).unwrap();
    assert_eq!(q.tail_offset(), 1);
}

#[test]
fn invalid_options_are_refused_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let base = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    let cases: Vec<(&str, Options)> = vec![
        (
            "capacity not a power of two",
            Options {
                capacity: 5000,
                ..base.clone()
            },
        ),
        (
            "capacity too small",
            Options {
                capacity: 2048,
                max_message: 16,
                ..base.clone()
            },
        ),
        (
            "capacity too large",
            Options {
                capacity: 1 << 41,
                ..base.clone()
            },
        ),
        (
            "max_message too big",
            Options {
                max_message: 2048,
                ..base.clone()
            },
        ),
        (
            "max_message far too big",
            Options {
                max_message: u32::MAX,
                ..base.clone()
            },
        ),
        (
            "max_message zero",
            Options {
                max_message: 0,
                ..base.clone()
            },
        ),
        (
            "mode 0o10000",
            Options {
                mode: 0o10000,
                ..base.clone()
            },
        ),
        (
            "group slots 0",
            Options {
                group_slots: 0,
                ..base.clone()
            },
        ),
        (
            "group slots 65",
            Options {
                group_slots: 65,
                ..base.clone()
            },
        ),
        (
            "producer slots 0",
            Options {
                producer_slots: 0,
                ..base.clone()
            },
        ),
        (
            "claim timeout zero",
            Options {
                claim_timeout: Duration::ZERO,
                ..base.clone()
            },
        ),
    ];
    for (what, opts) in cases {
        match Queue::create(&path, &opts) {
            Err(Error::InvalidArgument(msg)) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: expected InvalidArgument, got {:?}", other.err()),
        }
        assert_dir_holds(dir.path(), &[]);
    }
    // The largest valid message size is accepted.
    Queue::create(
        &path,
        &Options {
            max_message: 2048 - 32,
            ..base
        },
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Regressions: damaged cursors that once made the library panic or spin (found by the
// property tests above; fixed in src/ring.rs `sane_cursor` and src/durable.rs).

/// Runs `f`, failing the test with `what` if it panics.
fn must_not_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} panicked on a damaged file: {msg}");
        }
    }
}

/// A 4 KiB queue holding `records` records of `len` bytes, no groups.
fn small_queue(dir: &tempfile::TempDir, records: u64, len: usize) -> PathBuf {
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        claim_timeout: Duration::from_millis(100),
        ..Options::default()
    };
    let q = Queue::create(&path, &opts).unwrap();
    let mut p = q.producer().unwrap();
    for _ in 0..records {
        p.publish(&vec![1; len]).unwrap();
    }
    path
}

/// `publish` on a file whose tail word was damaged: a `Corrupt` error naming the file.
fn publish_on_damaged_tail(edit: impl FnOnce(&mut Vec<u8>)) {
    let dir = tempfile::tempdir().unwrap();
    let path = small_queue(&dir, 3, 10);
    edit_file(&path, edit);
    let q = Queue::open(&path).unwrap();
    let mut p = q.producer().unwrap();
    p.set_timeout(Some(Duration::from_millis(10)));
    match must_not_panic("Producer::publish", || p.publish(b"x")) {
        Err(Error::Corrupt {
            path: p,
            kind: Corruption::Shared(_),
        }) => assert_eq!(p, path),
        other => panic!("expected Corrupt(Shared), got {other:?}"),
    }
}

/// A tail position that is not 8-aligned once reached `Ring::seal`'s alignment assert.
#[test]
fn unaligned_tail_position_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| {
        let pos = get64(b, TAIL_POSITION_AT);
        put64(b, TAIL_POSITION_AT, pos + 1);
    });
}

/// A tail position near `u64::MAX` once overflowed `at + rest` in `Ring::try_claim`.
#[test]
fn tail_position_near_u64_max_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| put64(b, TAIL_POSITION_AT, u64::MAX - 7));
}

/// A tail offset of `u64::MAX` once overflowed `offset + 1` in `Ring::try_claim`.
#[test]
fn tail_offset_u64_max_fails_publish_cleanly() {
    publish_on_damaged_tail(|b| put64(b, TAIL_OFFSET_AT, u64::MAX));
}

/// Polling a group whose committed position is near `u64::MAX` while its committed offset is a
/// record that wrapped to the next lap (once overflowed `pos + (capacity - idx)` in
/// `Ring::read`).
#[test]
fn huge_committed_position_fails_poll_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        ..Options::default()
    };
    {
        let q = Queue::create(&path, &opts).unwrap();
        let mut c = q.consumer("g").unwrap();
        let mut p = q.producer().unwrap();
        p.set_timeout(Some(Duration::from_secs(5)));
        // Footprint 232: record 17 would start at 3944 and wraps to the next lap.
        for i in 0..18 {
            p.publish(&[5; 200]).unwrap();
            let o = c.poll(Some(Duration::ZERO)).unwrap().unwrap().offset;
            if i < 17 {
                c.commit(o).unwrap();
            }
        }
        assert_eq!(c.committed(), 17);
    }
    // Slot 0's committed cursor is (offset, position) at +128 in its 256-byte slot.
    let at = (HEADER_SIZE + 128) as usize;
    edit_file(&path, |b| {
        assert_eq!(get64(b, at), 17, "group layout drifted");
        put64(b, at + 8, u64::MAX - 2);
    });
    let q = Queue::open(&path).unwrap();
    let mut c = q.consumer("g").unwrap();
    let r = must_not_panic("Consumer::poll", || {
        c.poll(Some(Duration::ZERO)).map(|m| m.map(|m| m.offset))
    });
    assert!(
        matches!(r, Err(Error::Corrupt { .. })),
        "expected Corrupt, got {r:?}"
    );
}

/// A `Sync` publisher waiting behind another producer's unfinished record sleeps (it once spun
/// in `Shared::wait_durable`, and forever on some damaged files).
#[test]
fn sync_publish_behind_pending_record_does_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let opts = Options {
        capacity: 4096,
        max_message: 256,
        // Nobody gives the pending record up during the test.
        claim_timeout: Duration::from_secs(30),
        ..Options::default()
    };
    drop(Queue::create(&path, &opts).unwrap());
    edit_file(&path, |b| {
        assert_eq!(get32(b, OFF_DURABILITY), 0, "header layout drifted");
        put32(b, OFF_DURABILITY, DURABILITY_SYNC);
        reseal(b);
    });
    let q = Queue::open(&path).unwrap();
    let mut a = q.producer().unwrap();
    let mut claim = a.claim(8).unwrap(); // record 0, not committed yet
    claim.as_mut_slice().fill(1);
    let q2 = q.clone();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut b = q2.producer().unwrap();
        b.set_timeout(Some(Duration::from_millis(100)));
        let cpu = common::thread_cpu();
        let r = b.publish(b"second").map_err(|e| e.to_string());
        let _ = tx.send(());
        (r, common::thread_cpu() - cpu)
    });
    // Let the waiter wait a second, then finish record 0 so it can complete.
    let returned_early = rx.recv_timeout(Duration::from_secs(1)).is_ok();
    assert_eq!(claim.commit().unwrap(), 0);
    let (r, cpu) = waiter.join().unwrap();
    assert!(r.is_ok() || returned_early, "publish failed: {r:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "a waiting Sync publish burned {cpu:?} of CPU (returned early: {returned_early})"
    );
}

/// A producer held back by a durable cursor that cannot advance (a damaged record in the
/// durable prefix of a `Sync` file) must still honour its publish timeout.
#[test]
fn producer_behind_stuck_durable_prefix_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = small_queue(&dir, 3, 10); // footprint 48: record 1's header at ring + 48
    let ring = Layout::new(4096, 64, 64).ring as usize;
    edit_file(&path, |b| {
        assert_eq!(get32(b, OFF_DURABILITY), 0, "header layout drifted");
        put32(b, OFF_DURABILITY, DURABILITY_SYNC);
        reseal(b);
        assert_eq!(get64(b, ring + 48), 1, "record layout drifted");
        put64(b, ring + 48, 52); // record 1's header names another offset
    });
    let q = Queue::open(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut p = q.producer().unwrap();
        p.set_timeout(Some(Duration::from_millis(20)));
        // Sync publishes time out waiting for durability; once the ring is full up to the
        // stuck durable cursor, they must time out waiting for room.
        let outcomes: Vec<String> = (0..100)
            .map(|_| match p.publish(&[9; 100]) {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            })
            .collect();
        let _ = tx.send(outcomes);
    });
    let outcomes = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("publish hung behind a stuck durable prefix");
    assert!(
        outcomes.iter().all(|o| o != "ok"),
        "a record was acknowledged durable past a damaged one: {outcomes:?}"
    );
}
