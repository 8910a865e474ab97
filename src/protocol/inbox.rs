//! An inbox's file: [`InboxTable`], each field at the one offset defined here, the header's
//! encoding and validation, the slot state word, the key index, and the transitions of the
//! inbox protocol as functions over the table (FORMAT.md, "Inbox file"; ARCHITECTURE.md,
//! "Inboxes"). The policy over them (the admission lock, opening, liveness) is
//! `queue/inbox.rs`; the loom model runs the transitions here over heap memory.
//!
//! # Protocol
//!
//! Admission `n` (the `n`-th key admitted, from 0) owns slot `n mod W`. A slot's 128-bit state
//! word is `n << 2 | S` (low half) and the holder's lease id (high half, HELD only), `S` one
//! of EMPTY (the word is 0), HELD, OPEN (admitted, held by nobody: released, to be retried)
//! and DONE. Invariants:
//!
//! * (N1) Keys, the index and the words `admitted` and `pending` change only under the inbox's
//!   admission lock (an OFD lock on [`ADMISSION_LOCK`], which the kernel drops when its holder
//!   dies). A holder killed mid-admission leaves `pending` set, and the next holder repairs
//!   the slot and rebuilds the index from the slots before it looks anything up.
//! * (N2) A slot's state moves into HELD only under the lock; out of HELD by its holder alone
//!   (done, or release), lock-free, by a CAS from exactly `(n, HELD, holder)`. A state word
//!   never repeats for one holder (`n` grows per slot; a holder's Mark is used once), so a CAS
//!   from a remembered word succeeds only for the hold it remembers.
//! * (N3) A slot HELD by a live holder is never reused: an admission that would evict it fails
//!   (`InboxFull`), so a key being applied is never forgotten while it is applied.
//!
//! Every state CAS is SeqCst (SYNC N in ARCHITECTURE.md's table): the done CAS's Release half
//! publishes the caller's effect to whoever reads DONE afterwards (Acquire).
//!
//! A key already done is answered without the lock: every change of the keys and the index
//! (an admission, a repair) is a write section of a seqlock on the `version` word (odd while
//! it runs, SYNC Q), and a lookup made outside the lock counts only if `version` was even and
//! unchanged around it and no admission was pending ([`InboxTable::peek_done`]). Without it, a
//! reader could match a key's bytes read before an admission overwrote them with the state of
//! the key that replaced it.

use crate::error::InboxFault;
use crate::protocol::crc;
use crate::protocol::layout::{get32, put32};
use crate::protocol::sync::{fence, pack, unpack, AtomicU128, AtomicU64, Ordering, Region};

/// The magic at byte 0 of an inbox file.
pub(crate) const MAGIC: [u8; 8] = *b"SHMQINBX";
/// The inbox file format version.
pub(crate) const VERSION: u32 = 1;
/// Smallest window (keys).
pub(crate) const MIN_WINDOW: u32 = 64;
/// Largest window (keys).
pub(crate) const MAX_WINDOW: u32 = 1 << 20;
/// Longest key (bytes), stored verbatim.
pub(crate) const MAX_KEY: usize = 64;
/// Longest inbox name (bytes).
pub(crate) const MAX_NAME: usize = 64;

// Immutable header (checksummed).
const H_VERSION: usize = 8;
const H_WINDOW: usize = 12;
const H_NAME_LEN: usize = 16;
const H_NAME: usize = 20;
const H_CRC: usize = 124;
/// Bytes of the immutable header, checksum included.
pub(crate) const HEADER_LEN: usize = H_CRC + 4;

// Mutable words, each on its own 128-byte line.
const ADMITTED: u64 = 128;
const PENDING: u64 = 256;
/// The boot id of the machine that last opened the file (16 bytes).
pub(crate) const BOOT_ID: u64 = 384;
const COUNTERS: u64 = 512;
const VERSION_WORD: u64 = 640;

/// The byte of the file whose OFD write lock is the admission lock (clear of the liveness
/// range at 2^62 and of every byte of the file).
pub(crate) const ADMISSION_LOCK: u64 = 1 << 61;

/// The key index: `2W` buckets of 8 bytes from byte 4096.
const INDEX_BASE: u64 = 4096;
/// Slots: `W` slots of [`SLOT`] bytes, from the first page after the index.
const SLOT: u64 = 128;
const S_STATE: u64 = 0;
const S_LEN: u64 = 16;
const S_HASH: u64 = 20;
const S_KEY: u64 = 24;

/// Where the slots begin for window `w`.
fn slot_base(window: u32) -> u64 {
    (INDEX_BASE + 16 * u64::from(window)).next_multiple_of(4096)
}

/// The file size for window `w`: exact.
pub(crate) fn file_size(window: u32) -> u64 {
    slot_base(window) + SLOT * u64::from(window)
}

/// A slot's state `S` (the low 2 bits of its state word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Never used, or repaired after an admission that died before it finished.
    Empty,
    /// Held by a process applying the key's effect.
    Held,
    /// Admitted but held by nobody: its holder released it without recording it done.
    Open,
    /// Its effect was recorded done.
    Done,
}

impl State {
    fn bits(self) -> u64 {
        match self {
            State::Empty => 0,
            State::Held => 1,
            State::Open => 2,
            State::Done => 3,
        }
    }
}

/// One slot's state word, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The admission it belongs to.
    pub seq: u64,
    /// Its state.
    pub state: State,
    /// The holder's lease id (HELD), else 0.
    pub holder: u64,
}

/// Largest admission number a state word holds (62 bits).
pub(crate) const MAX_SEQ: u64 = (1 << 62) - 1;

/// Encodes a state word.
pub(crate) fn pack_slot(s: Slot) -> u128 {
    pack((s.seq.min(MAX_SEQ) << 2) | s.state.bits(), s.holder)
}

/// Decodes a state word: `None` if no writer stores it (an EMPTY word that is not 0, a HELD
/// word without a holder, or another state with one).
pub(crate) fn unpack_slot(word: u128) -> Option<Slot> {
    let (low, high) = unpack(word);
    let state = match low & 3 {
        0 => State::Empty,
        1 => State::Held,
        2 => State::Open,
        _ => State::Done,
    };
    let ok = match state {
        State::Empty => word == 0,
        State::Held => high != 0,
        State::Open | State::Done => high == 0,
    };
    ok.then_some(Slot {
        seq: low >> 2,
        state,
        holder: high,
    })
}

/// A key as stored: its length and its bytes zero-padded to [`MAX_KEY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    len: u32,
    bytes: [u8; MAX_KEY],
    hash: u32,
}

impl Key {
    /// The stored form of `key`; `None` if it is longer than [`MAX_KEY`].
    pub(crate) fn new(key: &[u8]) -> Option<Key> {
        let mut bytes = [0u8; MAX_KEY];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(Key {
            len: key.len() as u32,
            bytes,
            hash: crc::crc32c(key),
        })
    }
}

/// The inbox's settings: the immutable header of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InboxConfig {
    /// Keys remembered (a power of two, [`MIN_WINDOW`] ..= [`MAX_WINDOW`]).
    pub window: u32,
    /// The inbox's name.
    pub name: String,
}

impl InboxConfig {
    /// The header bytes of a new file with these settings.
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        put32(&mut b, H_VERSION, VERSION);
        put32(&mut b, H_WINDOW, self.window);
        let name = self.name.as_bytes();
        put32(&mut b, H_NAME_LEN, name.len() as u32);
        b[H_NAME..H_NAME + name.len()].copy_from_slice(name);
        let crc = crc::crc32c(&b[..H_CRC]);
        put32(&mut b, H_CRC, crc);
        b
    }

    /// Decodes and validates a header read from a file: magic, version, checksum, then every
    /// field's range. Never panics, whatever the bytes.
    pub(crate) fn decode(b: &[u8; HEADER_LEN]) -> Result<InboxConfig, InboxFault> {
        if b[..8] != MAGIC {
            return Err(InboxFault::BadMagic);
        }
        let version = get32(b, H_VERSION);
        if version != VERSION {
            return Err(InboxFault::Version { found: version });
        }
        if get32(b, H_CRC) != crc::crc32c(&b[..H_CRC]) {
            return Err(InboxFault::Checksum);
        }
        let window = get32(b, H_WINDOW);
        if !window.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(InboxFault::Field {
                field: "window",
                value: window.into(),
            });
        }
        let name_len = get32(b, H_NAME_LEN) as usize;
        let name = (1..=MAX_NAME)
            .contains(&name_len)
            .then(|| std::str::from_utf8(&b[H_NAME..H_NAME + name_len]).ok())
            .flatten()
            .ok_or(InboxFault::Field {
                field: "name length",
                value: name_len as u64,
            })?;
        Ok(InboxConfig {
            window,
            name: name.to_string(),
        })
    }
}

/// The counters of an inbox (Relaxed: statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    /// `begin` calls that found the key done.
    Duplicates = 0,
    /// `begin` calls that found the key held by a live holder.
    Busy = 1,
    /// Keys taken again: released by their holder, or held by a dead one.
    Retaken = 2,
    /// Keys evicted from the window by later admissions.
    Evicted = 3,
}

/// What is damaged in an inbox file, found by a transition (the caller reports it with the
/// path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// A slot's state word no writer stores for that slot.
    Slot(u64, u128),
    /// A slot's key length or hash.
    Key(u64),
    /// An index bucket names no slot.
    Bucket(u64, u64),
    /// The index has no empty bucket (it always has at least `W`).
    IndexFull,
    /// `admitted` or `pending` is out of range.
    Cursor(u64, u64),
}

/// Where a lookup ended: the slot holding the key, or not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Slot `s` holds the key; its state word was `word`.
    Found(u64, u128),
    /// The key is not in the window.
    Missing,
}

/// What [`InboxTable::begin`] found for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begun {
    /// The caller holds the key now, as admission `seq` in slot `slot`.
    Fresh {
        /// The slot.
        slot: u64,
        /// The admission.
        seq: u64,
    },
    /// The key is done.
    Done,
    /// A live holder holds the key.
    Busy,
    /// The key is new, and the oldest slot is held by a live holder (N3).
    Full,
}

/// The mutable part of a mapped inbox file of window `window`: a view over its region (the
/// mapping is exactly [`file_size`] bytes, checked by the opener).
pub(crate) struct InboxTable<'a> {
    region: &'a Region,
    window: u64,
}

impl<'a> InboxTable<'a> {
    /// The table of an inbox file with `window` keys mapped as `region`.
    pub(crate) fn new(region: &'a Region, window: u32) -> Self {
        InboxTable {
            region,
            window: u64::from(window),
        }
    }

    /// Admissions completed: the next admission's number.
    pub(crate) fn admitted(&self) -> &'a AtomicU64 {
        self.region.u64(ADMITTED)
    }

    /// 0, or the number plus one of an admission in progress (its holder may have died).
    pub(crate) fn pending(&self) -> &'a AtomicU64 {
        self.region.u64(PENDING)
    }

    /// The seqlock over the keys and the index: odd while a write section runs (or after its
    /// writer died in one, until the next holder of the lock repairs the file).
    fn version(&self) -> &'a AtomicU64 {
        self.region.u64(VERSION_WORD)
    }

    /// Runs `f`, which changes keys or the index (under the lock), as a write section of the
    /// seqlock (SYNC Q).
    fn write_section<T>(&self, f: impl FnOnce() -> T) -> T {
        // Relaxed: only holders of the admission lock write the word, and the lock orders them.
        let odd = self.version().load(Ordering::Relaxed) | 1;
        self.version().store(odd, Ordering::Relaxed);
        // SYNC Q: the odd value is ordered before every write of `f`, so a reader whose
        // Acquire fence follows a read of any of them sees the version move.
        fence(Ordering::Release);
        let out = f();
        // SYNC Q (Release): publishes `f`'s writes with the even value.
        self.version().store(odd.wrapping_add(1), Ordering::Release);
        out
    }

    /// Whether `key` is done, answered without the lock: `true` only if a lookup that found it
    /// DONE ran within one even `version` with no admission pending (SYNC Q); `false` means
    /// "ask under the lock" (not found, not done, a write section in between, or damage,
    /// which the locked path reports).
    pub(crate) fn peek_done(&self, key: &Key) -> bool {
        // SYNC Q (Acquire): pairs with the Release store that ended the last write section.
        let before = self.version().load(Ordering::Acquire);
        // Relaxed: read inside the section check below.
        if before & 1 == 1 || self.pending().load(Ordering::Relaxed) != 0 {
            return false;
        }
        let done = matches!(
            self.lookup(key),
            Ok(Lookup::Found(_, word)) if unpack_slot(word).is_some_and(|s| s.state == State::Done)
        );
        // SYNC Q: a write section whose writes the lookup saw has its odd value (or a later
        // one) visible after this fence.
        fence(Ordering::Acquire);
        if !done || self.version().load(Ordering::Relaxed) != before {
            return false;
        }
        // Relaxed: a statistic.
        self.counter(Counter::Duplicates)
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A counter.
    pub(crate) fn counter(&self, c: Counter) -> &'a AtomicU64 {
        self.region.u64(COUNTERS + 8 * c as u64)
    }

    /// The state word of slot `s` (`s < W`).
    pub(crate) fn state(&self, s: u64) -> &'a AtomicU128 {
        debug_assert!(s < self.window);
        self.region
            .u128(slot_base(self.window as u32) + SLOT * s + S_STATE)
    }

    /// The byte range of slot `s` (for syncing it).
    pub(crate) fn slot_range(&self, s: u64) -> (u64, u64) {
        (slot_base(self.window as u32) + SLOT * s, SLOT)
    }

    fn bucket(&self, i: u64) -> &'a AtomicU64 {
        self.region.u64(INDEX_BASE + 8 * i)
    }

    fn buckets(&self) -> u64 {
        2 * self.window
    }

    /// Loads slot `s`'s state, checked: a word no writer stores there is [`Damage::Slot`].
    pub(crate) fn load(&self, s: u64) -> Result<(u128, Slot), Damage> {
        // SYNC N (Acquire, as SeqCst): a DONE seen here comes after the holder's effect.
        let word = self.state(s).load(Ordering::SeqCst);
        match unpack_slot(word) {
            Some(slot) if slot.state == State::Empty || slot.seq % self.window == s => {
                Ok((word, slot))
            }
            _ => Err(Damage::Slot(s, word)),
        }
    }

    /// Reads slot `s`'s key (under the lock: N1, or in a seqlock read that validates it: SYNC
    /// V), checked: a length over [`MAX_KEY`] or a hash that is not the key's is
    /// [`Damage::Key`].
    fn key(&self, s: u64) -> Result<Key, Damage> {
        let base = slot_base(self.window as u32) + SLOT * s;
        // Relaxed: keys change only under the admission lock (N1), which orders them; a reader
        // without it validates what it read with the seqlock (SYNC Q).
        let len = self.region.u64(base + S_LEN).load(Ordering::Relaxed);
        let (len, hash) = (len as u32, (len >> 32) as u32);
        let mut bytes = [0u8; MAX_KEY];
        self.region.read_bytes(base + S_KEY, &mut bytes);
        let key = Key::new(bytes.get(..len as usize).ok_or(Damage::Key(s))?);
        match key {
            Some(k) if k.hash == hash && k.bytes == bytes => Ok(k),
            _ => Err(Damage::Key(s)),
        }
    }

    fn write_key(&self, s: u64, key: &Key) {
        let base = slot_base(self.window as u32) + SLOT * s;
        debug_assert_eq!(S_HASH, S_LEN + 4);
        // Relaxed: under the admission lock (N1).
        self.region.u64(base + S_LEN).store(
            u64::from(key.len) | u64::from(key.hash) << 32,
            Ordering::Relaxed,
        );
        self.region.write_bytes(base + S_KEY, &key.bytes);
    }

    /// A bucket's slot and hash: `None` for an empty bucket.
    fn decode_bucket(&self, i: u64) -> Result<Option<(u64, u32)>, Damage> {
        // Relaxed: the index changes only under the admission lock (N1); a reader without it
        // validates what it read with the seqlock (SYNC Q).
        let b = self.bucket(i).load(Ordering::Relaxed);
        if b == 0 {
            return Ok(None);
        }
        let slot = (b & 0xffff_ffff).wrapping_sub(1);
        if slot >= self.window {
            return Err(Damage::Bucket(i, b));
        }
        Ok(Some((slot, (b >> 32) as u32)))
    }

    /// Finds `key` (under the lock: N1; or in [`peek_done`](Self::peek_done)'s seqlock read,
    /// whose answer counts only if no write section ran meanwhile). Bounded: at most `2W`
    /// buckets are probed.
    pub(crate) fn lookup(&self, key: &Key) -> Result<Lookup, Damage> {
        let mask = self.buckets() - 1;
        let mut i = u64::from(key.hash) & mask;
        for _ in 0..self.buckets() {
            let Some((s, hash)) = self.decode_bucket(i)? else {
                return Ok(Lookup::Missing);
            };
            if hash == key.hash {
                let (word, slot) = self.load(s)?;
                if slot.state != State::Empty && self.key(s)? == *key {
                    return Ok(Lookup::Found(s, word));
                }
            }
            i = (i + 1) & mask;
        }
        Err(Damage::IndexFull)
    }

    /// Adds slot `s` with hash `hash` to the index (under the lock).
    fn insert(&self, s: u64, hash: u32) -> Result<(), Damage> {
        let mask = self.buckets() - 1;
        let mut i = u64::from(hash) & mask;
        for _ in 0..self.buckets() {
            if self.decode_bucket(i)?.is_none() {
                // Relaxed: under the admission lock (N1).
                self.bucket(i)
                    .store(u64::from(hash) << 32 | (s + 1), Ordering::Relaxed);
                return Ok(());
            }
            i = (i + 1) & mask;
        }
        Err(Damage::IndexFull)
    }

    /// Removes slot `s` (hash `hash`) from the index by backward shift, so that no probe
    /// sequence has a hole (under the lock). A slot not in the index is left alone.
    fn remove(&self, s: u64, hash: u32) -> Result<(), Damage> {
        let mask = self.buckets() - 1;
        let mut i = u64::from(hash) & mask;
        let mut found = None;
        for _ in 0..self.buckets() {
            match self.decode_bucket(i)? {
                None => break,
                Some((slot, _)) if slot == s => {
                    found = Some(i);
                    break;
                }
                Some(_) => i = (i + 1) & mask,
            }
        }
        let Some(mut hole) = found else {
            return Ok(());
        };
        let mut j = hole;
        for _ in 0..self.buckets() {
            j = (j + 1) & mask;
            let Some((_, h)) = self.decode_bucket(j)? else {
                break;
            };
            let home = u64::from(h) & mask;
            // Move j's entry into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                // Relaxed: under the admission lock (N1).
                let b = self.bucket(j).load(Ordering::Relaxed);
                self.bucket(hole).store(b, Ordering::Relaxed);
                hole = j;
            }
        }
        self.bucket(hole).store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Admits `key` as admission `n` (under the lock, after a lookup missed it), evicting
    /// slot `n mod W`'s previous key, whose state word was `old` (not HELD by a live
    /// holder: N3): `pending`, the index without the old key, the key, the state
    /// `(n, HELD, holder)`, the index with the key, then `admitted` and `pending` (N1).
    /// `hook` runs between the steps (the crash points). False if the slot's state changed
    /// since `old` was read (only a hostile writer changes it under the lock).
    pub(crate) fn admit(
        &self,
        n: u64,
        old: u128,
        key: &Key,
        holder: u64,
        hook: impl Fn(&'static str),
    ) -> Result<bool, Damage> {
        self.write_section(|| self.admit_in_section(n, old, key, holder, hook))
    }

    /// [`admit`](Self::admit) inside its write section.
    fn admit_in_section(
        &self,
        n: u64,
        old: u128,
        key: &Key,
        holder: u64,
        hook: impl Fn(&'static str),
    ) -> Result<bool, Damage> {
        let s = n % self.window;
        // Relaxed: under the admission lock (N1); a successor repairs from these.
        self.pending().store(n + 1, Ordering::Relaxed);
        hook("inbox.admit.after_pending");
        if old != 0 {
            let evicted = self.key(s)?;
            self.remove(s, evicted.hash)?;
        }
        self.write_key(s, key);
        hook("inbox.admit.before_state");
        let to = pack_slot(Slot {
            seq: n,
            state: State::Held,
            holder,
        });
        // SYNC N (SeqCst): see `finish`.
        if self
            .state(s)
            .compare_exchange(old, to, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return Ok(false);
        }
        hook("inbox.admit.after_state");
        self.insert(s, key.hash)?;
        self.admitted().store(n + 1, Ordering::Relaxed);
        self.pending().store(0, Ordering::Relaxed);
        if old != 0 {
            self.counter(Counter::Evicted)
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Looks `key` up and takes it for `holder` unless it is done or held by a live holder
    /// (`alive(id)`; the caller's own id counts as live): takes it again (OPEN, or HELD by a
    /// dead holder) or admits it. Under the admission lock (N1); `hook` runs at the crash
    /// points of an admission.
    pub(crate) fn begin(
        &self,
        key: &Key,
        holder: u64,
        alive: impl Fn(u64) -> bool,
        hook: impl Fn(&'static str),
    ) -> Result<Begun, Damage> {
        let live = |id| id == holder || alive(id);
        // Relaxed for the counters: statistics.
        let count = |c| {
            self.counter(c).fetch_add(1, Ordering::Relaxed);
        };
        // A holder judged dead can still end its hold (a hostile write made its lease look
        // dead, or the check raced its end): the take's CAS then fails, and the key is looked
        // at again. Its holder changes the word at most once, so two rounds suffice.
        let mut changed = None;
        for _ in 0..3 {
            let (s, word) = match self.lookup(key)? {
                Lookup::Found(s, word) => (s, word),
                Lookup::Missing => return self.admit_new(key, holder, live, hook),
            };
            let found = unpack_slot(word).ok_or(Damage::Slot(s, word))?;
            match found.state {
                State::Done => {
                    count(Counter::Duplicates);
                    return Ok(Begun::Done);
                }
                State::Held if live(found.holder) => {
                    count(Counter::Busy);
                    return Ok(Begun::Busy);
                }
                // HELD by a dead holder, or OPEN (`lookup` never finds an EMPTY slot).
                _ => {}
            }
            if self.take(s, word, found.seq, holder) {
                count(Counter::Retaken);
                return Ok(Begun::Fresh {
                    slot: s,
                    seq: found.seq,
                });
            }
            changed = Some((s, word));
        }
        // Still changing under the lock: a hostile writer.
        let (s, word) = changed.unwrap_or_default();
        Err(Damage::Slot(s, word))
    }

    /// Admits `key`, which the window lacks, unless the oldest slot is held by a live holder.
    fn admit_new(
        &self,
        key: &Key,
        holder: u64,
        live: impl Fn(u64) -> bool,
        hook: impl Fn(&'static str),
    ) -> Result<Begun, Damage> {
        let (n, _) = self.cursors()?;
        let s = n % self.window;
        let (old, oldest) = self.load(s)?;
        if oldest.state == State::Held && live(oldest.holder) {
            return Ok(Begun::Full);
        }
        // The oldest slot's holder (judged dead) may end its hold meanwhile: the admission's
        // CAS fails, and the caller sees the damage of a word changing under the lock only if
        // that happens again.
        if !self.admit(n, old, key, holder, &hook)? {
            let (old, _) = self.load(s)?;
            if !self.admit(n, old, key, holder, &hook)? {
                return Err(Damage::Slot(s, old));
            }
        }
        Ok(Begun::Fresh { slot: s, seq: n })
    }

    /// Takes slot `s`, whose word was `from` (OPEN, or HELD by a dead holder), for `holder`
    /// (under the lock: N2). False if the word changed meanwhile.
    fn take(&self, s: u64, from: u128, seq: u64, holder: u64) -> bool {
        let to = Slot {
            seq,
            state: State::Held,
            holder,
        };
        self.cas(s, from, to)
    }

    /// Ends hold `(seq, HELD, holder)` of slot `s` as DONE (`done`) or OPEN (a release): the
    /// holder's CAS from exactly its word (N2). False if the word is another.
    pub(crate) fn finish(&self, s: u64, seq: u64, holder: u64, done: bool) -> bool {
        let from = pack_slot(Slot {
            seq,
            state: State::Held,
            holder,
        });
        let to = Slot {
            seq,
            state: if done { State::Done } else { State::Open },
            holder: 0,
        };
        self.cas(s, from, to)
    }

    fn cas(&self, s: u64, from: u128, to: Slot) -> bool {
        // SYNC N (SeqCst): the Release half publishes the holder's effect with DONE; a
        // failure is reloaded by the caller (Relaxed).
        self.state(s)
            .compare_exchange(from, pack_slot(to), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Checks `admitted` and `pending`: `(admitted, pending)`, or [`Damage::Cursor`].
    pub(crate) fn cursors(&self) -> Result<(u64, u64), Damage> {
        // Relaxed: under the admission lock (N1), or a statistic.
        let a = self.admitted().load(Ordering::Relaxed);
        let p = self.pending().load(Ordering::Relaxed);
        if a >= MAX_SEQ || (p != 0 && p != a + 1) {
            return Err(Damage::Cursor(a, p));
        }
        Ok((a, p))
    }

    /// Repairs a file whose last admission died (N1), or rebuilds it after a machine restart
    /// (`rebuild`), under the lock: the slot of an admission that did not reach its state CAS
    /// is emptied (its old key may be half overwritten); one that did counts as admitted;
    /// slots whose key does not match its hash are emptied; the index is rebuilt from the
    /// slots. Returns how many slots were emptied.
    pub(crate) fn repair(&self, rebuild: bool) -> Result<u64, Damage> {
        let (a, p) = self.cursors()?;
        // Relaxed: under the lock; an odd version left by a writer that died in its section
        // is made even by this repair's section.
        if p == 0 && !rebuild && self.version().load(Ordering::Relaxed) & 1 == 0 {
            return Ok(0);
        }
        self.write_section(|| self.rebuild(a, p))
    }

    /// [`repair`](Self::repair) inside its write section, from `admitted` `a` and `pending`
    /// `p`.
    fn rebuild(&self, a: u64, p: u64) -> Result<u64, Damage> {
        let mut emptied = 0;
        let mut admitted = a;
        if p != 0 {
            let s = a % self.window;
            let (word, slot) = self.load(s)?;
            if slot.state != State::Empty && slot.seq == a {
                admitted = a + 1;
            } else if word != 0 {
                self.state(s).store(0, Ordering::SeqCst);
                emptied += 1;
            }
        }
        for i in 0..self.buckets() {
            // Relaxed: under the admission lock (N1).
            self.bucket(i).store(0, Ordering::Relaxed);
        }
        for s in 0..self.window {
            let (word, slot) = self.load(s)?;
            if word == 0 {
                continue;
            }
            match self.key(s) {
                Ok(k) if slot.seq < admitted => self.insert(s, k.hash)?,
                _ => {
                    // SeqCst as every state change (SYNC N).
                    self.state(s).store(0, Ordering::SeqCst);
                    emptied += 1;
                }
            }
        }
        self.admitted().store(admitted, Ordering::Relaxed);
        self.pending().store(0, Ordering::Relaxed);
        Ok(emptied)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    fn with_table(f: impl FnOnce(&InboxTable<'_>)) {
        let len = file_size(MIN_WINDOW) as usize;
        let mut mem: Vec<Page> = (0..len.div_ceil(4096)).map(|_| Page([0; 4096])).collect();
        // SAFETY: `mem` is 4096-aligned, at least `len` bytes long and outlives `region`.
        let region = unsafe { Region::new(mem.as_mut_ptr().cast(), len) };
        f(&InboxTable::new(&region, MIN_WINDOW));
    }

    #[test]
    fn state_words_round_trip_and_refuse_damage() {
        let held = Slot {
            seq: 12345,
            state: State::Held,
            holder: 77,
        };
        assert_eq!(unpack_slot(pack_slot(held)), Some(held));
        assert_eq!(unpack_slot(pack(5 << 2, 0)), None, "EMPTY with an offset");
        assert_eq!(unpack_slot(pack(5 << 2 | 1, 0)), None, "HELD by nobody");
        assert_eq!(unpack_slot(pack(5 << 2 | 3, 9)), None, "DONE with a holder");
    }

    /// Many keys through a small window: every key of the last W is found, every older one
    /// is missing, and the index stays consistent through backward-shift removals.
    #[test]
    fn window_keeps_the_last_w_keys() {
        with_table(|t| {
            let w = u64::from(MIN_WINDOW);
            for n in 0..5 * w {
                let key = Key::new(format!("key-{n}").as_bytes()).unwrap();
                assert_eq!(t.lookup(&key), Ok(Lookup::Missing));
                let s = n % w;
                let (old, _) = t.load(s).unwrap();
                assert_eq!(t.admit(n, old, &key, 9, |_| {}), Ok(true));
                assert!(t.finish(s, n, 9, true));
                for back in 0..w.min(n + 1) {
                    let k = Key::new(format!("key-{}", n - back).as_bytes()).unwrap();
                    assert!(matches!(t.lookup(&k), Ok(Lookup::Found(..))), "{n} {back}");
                }
                if n >= w {
                    let gone = Key::new(format!("key-{}", n - w).as_bytes()).unwrap();
                    assert_eq!(t.lookup(&gone), Ok(Lookup::Missing));
                }
            }
            assert_eq!(t.repair(true), Ok(0));
            let last = Key::new(format!("key-{}", 5 * w - 1).as_bytes()).unwrap();
            assert!(matches!(t.lookup(&last), Ok(Lookup::Found(..))));
        });
    }

    /// An admission that died after `pending` and the key but before the state CAS: the
    /// repair empties the slot (its old key may be torn) and keeps the others.
    #[test]
    fn repair_after_a_dead_admission() {
        with_table(|t| {
            let w = u64::from(MIN_WINDOW);
            for n in 0..w {
                let key = Key::new(&n.to_le_bytes()).unwrap();
                assert_eq!(t.admit(n, 0, &key, 9, |_| {}), Ok(true));
            }
            let key = Key::new(b"torn").unwrap();
            let (old, _) = t.load(0).unwrap();
            let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                t.admit(w, old, &key, 9, |p| {
                    if p == "inbox.admit.before_state" {
                        panic!("killed")
                    }
                })
            }));
            assert!(died.is_err());
            assert_eq!(t.repair(false), Ok(1));
            assert_eq!(t.cursors(), Ok((w, 0)));
            assert_eq!(t.lookup(&key), Ok(Lookup::Missing));
            assert_eq!(
                t.lookup(&Key::new(&0u64.to_le_bytes()).unwrap()),
                Ok(Lookup::Missing)
            );
            let one = Key::new(&1u64.to_le_bytes()).unwrap();
            assert!(matches!(t.lookup(&one), Ok(Lookup::Found(1, _))));
        });
    }

    #[test]
    fn headers_round_trip_and_refuse_damage() {
        let c = InboxConfig {
            window: 128,
            name: "payments".into(),
        };
        let b = c.encode();
        assert_eq!(InboxConfig::decode(&b), Ok(c));
        let mut bad = b;
        bad[H_WINDOW] ^= 1;
        assert_eq!(InboxConfig::decode(&bad), Err(InboxFault::Checksum));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(InboxConfig::decode(&bad), Err(InboxFault::BadMagic));
    }
}
