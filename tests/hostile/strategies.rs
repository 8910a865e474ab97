//! The proptest strategies: how the template is damaged.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use crate::common::format::*;
use crate::exercise::*;
use crate::file::*;
use crate::template::*;

/// `cases` per property, or `PROPTEST_CASES` from the environment for longer soak runs.
pub(crate) fn config(cases: u32) -> ProptestConfig {
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
pub(crate) enum WordValue {
    Const(u64),
    /// The original plus a small delta.
    Near(i64),
    /// The original shifted into a slot tag (`offset << 3 | flags`), offset nudged.
    Tag(i64, u8),
    /// The original with one bit flipped.
    Flip(u8),
}

impl WordValue {
    pub(crate) fn apply(&self, orig: u64) -> u64 {
        match *self {
            WordValue::Const(v) => v,
            WordValue::Near(d) => orig.wrapping_add(d as u64),
            WordValue::Tag(d, f) => (orig.wrapping_add(d as u64) << 3) | (f as u64 & 7),
            WordValue::Flip(bit) => orig ^ (1 << (bit % 64)),
        }
    }
}

pub(crate) fn word_value() -> impl Strategy<Value = WordValue> {
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
pub(crate) enum Target {
    HeaderWord(usize),
    Group { slot: u64, word: u64 },
    Producer { slot: u64, word: u64 },
    Index { entry: u64, tag: bool },
    RecordHead { record: usize, word: u64 },
    Ring { word: u64 },
}

impl Target {
    pub(crate) fn offset(&self, t: &Template) -> u64 {
        let l = &t.layout;
        match *self {
            Target::HeaderWord(i) => HEADER_WORDS[i % HEADER_WORDS.len()],
            Target::Group { slot, word } => l.groups + slot * GROUP_SLOT + word * 8,
            Target::Producer { slot, word } => l.producers + slot * PRODUCER_SLOT + word * 8,
            Target::Index { entry, tag } if tag => l.tag_at(entry),
            Target::Index { entry, .. } => l.pos_at(entry),
            Target::RecordHead { record, word } => {
                t.record_heads[record % t.record_heads.len()] + word * 8
            }
            Target::Ring { word } => l.ring + word * 8,
        }
    }
}

pub(crate) fn target() -> impl Strategy<Value = Target> {
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
pub(crate) fn targeted_edit() -> impl Strategy<Value = (Target, WordValue, u8)> {
    (
        target(),
        word_value(),
        prop_oneof![4 => Just(0u8), 1 => 1u8..8],
    )
}

pub(crate) fn apply_targeted(bytes: &mut [u8], t: &Template, edits: &[(Target, WordValue, u8)]) {
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
pub(crate) enum FieldEdit {
    Known(usize, WordValue),
    /// Any 4- or 8-byte window inside the checksummed bytes.
    Anywhere(usize, bool, WordValue),
}

pub(crate) fn field_edit() -> impl Strategy<Value = FieldEdit> {
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

pub(crate) fn apply_field(b: &mut [u8], edit: &FieldEdit) {
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
pub(crate) enum Resize {
    Keep,
    /// Resize to what the edited header implies and fix the file-size field to match.
    Follow,
    /// Resize to what the header implies but leave the file-size field as edited.
    FollowLengthOnly,
}

/// Largest file the strategies materialise (header edits can ask for huge rings).
pub(crate) const MAX_FILE: u64 = 8 << 20;

pub(crate) fn resize() -> impl Strategy<Value = Resize> {
    prop_oneof![
        Just(Resize::Keep),
        Just(Resize::Follow),
        Just(Resize::FollowLengthOnly)
    ]
}

pub(crate) fn header_edits(
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
