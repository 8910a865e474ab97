//! Inboxes: a consumer-side de-duplication filter in a file next to the queue
//! ([`Queue::inbox`](crate::Queue::inbox)), so that a replay after a crash or a group reset
//! does not apply a business event twice. An [`Inbox`] remembers the last `W` keys admitted
//! (message ids, or any key up to [`MAX_INBOX_KEY`] bytes, stored verbatim) and whether each
//! one's effect was recorded done; any number of processes share it. The protocol is
//! `protocol/inbox.rs`'s and ARCHITECTURE.md's "Inboxes"; the file is `file.rs`'s.
//!
//! # What it guarantees
//!
//! [`Inbox::begin`] hands a key to one live process at a time ([`Admit::Fresh`] with a
//! [`Mark`]); [`Mark::done`] records it done, after which every `begin` of the key within the
//! window answers [`Admit::Done`]. An effect applied between `begin` and `done` is applied
//! again only if its process dies (or drops the mark) after the effect and before `done`:
//! the key is then taken again by the next `begin`. To close that window too, make the effect
//! idempotent, or store the effect and the mark in one transaction of your own store. A key
//! evicted from the window (more than `W` later keys admitted) is [`Admit::Fresh`] again.

pub(crate) mod file;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mapping::lease::{self, Lease};
use crate::mapping::trust::Trust;
use crate::protocol::inbox::{
    Begun, Counter, InboxConfig, Key, State, MAX_KEY, MAX_NAME, MAX_WINDOW, MIN_WINDOW,
};
use crate::protocol::layout::Durability;
use crate::protocol::sync::{pack, unpack, Ordering};
use crate::queue::group::AdminLock;
use crate::queue::mapped::MappedQueue;
use file::{damaged, InboxFile};

/// The longest key an inbox stores (bytes). Keys are stored verbatim: a key never matches
/// another one by hash alone.
pub const MAX_INBOX_KEY: usize = MAX_KEY;

/// The settings of an inbox, used only when [`Queue::inbox`](crate::Queue::inbox) creates it:
/// an existing inbox keeps its file's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxOptions {
    /// How many of the most recently admitted keys are remembered: a power of two, 64 to 2^20
    /// (4096). The file holds 144 bytes per key (a 128-byte slot and two index buckets).
    pub window: u32,
}

impl Default for InboxOptions {
    fn default() -> Self {
        InboxOptions { window: 4096 }
    }
}

/// What [`Inbox::begin`] found for a key.
#[must_use = "a Fresh key must be applied and recorded done, or the mark dropped"]
#[derive(Debug)]
pub enum Admit {
    /// The key is new to the window (or was released, or its holder died): this process holds
    /// it now. Apply its effect, then [`Mark::done`]; dropping the mark instead releases it.
    Fresh(Mark),
    /// The key's effect was recorded done: skip it.
    Done,
    /// Another live process (or another mark of this one) holds the key: it is being applied
    /// now. Retry later; if that holder dies without recording it done, it is taken again.
    Busy,
}

/// An inbox's counters and fill ([`Queue::inbox_info`](crate::Queue::inbox_info)). Counters
/// are totals since the inbox was created, statistics, not one atomic snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxInfo {
    /// The inbox's name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// The window (keys).
    pub window: u32,
    /// Keys in the window now (at most `window`).
    pub fill: u64,
    /// Keys admitted since creation.
    pub admitted: u64,
    /// Keys recorded done, of those in the window.
    pub done: u64,
    /// Keys held by a live process now.
    pub held: u64,
    /// `begin` calls that found their key done (duplicates filtered out).
    pub duplicates: u64,
    /// `begin` calls that found their key held by a live process.
    pub busy: u64,
    /// Keys taken again after their holder released them or died.
    pub retaken: u64,
    /// Keys evicted from the window by later ones.
    pub evicted: u64,
}

/// A handle on an inbox: [`begin`](Inbox::begin) and [`once`](Inbox::once). Made by
/// [`Queue::inbox`](crate::Queue::inbox); one per thread (admissions take `&mut self`), as many
/// as you like per process. Used in a child forked after it was made, it fails with
/// [`Error::Forked`].
pub struct Inbox {
    file: Arc<InboxFile>,
    lease: Arc<Lease>,
    sync: bool,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("path", &self.file.path)
            .field("window", &self.file.config.window)
            .finish()
    }
}

/// A key this process holds ([`Admit::Fresh`]): [`done`](Mark::done) records its effect
/// applied; dropping the mark without it releases the key, which the next
/// [`begin`](Inbox::begin) of it takes again. If the process dies, the kernel drops its lease
/// and the key is taken again the same way.
pub struct Mark {
    file: Arc<InboxFile>,
    lease: Arc<Lease>,
    slot: u64,
    seq: u64,
    sync: bool,
    finished: bool,
}

impl std::fmt::Debug for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mark")
            .field("path", &self.file.path)
            .field("admission", &self.seq)
            .finish()
    }
}

/// The lease id in lease word `word`: what a HELD slot stores.
fn id(word: u128) -> u64 {
    unpack(word).1
}

/// Whether holder `holder` (a lease id) of a HELD slot is alive.
fn alive(file: &InboxFile, holder: u64) -> bool {
    lease::alive(&file.file, pack(0, holder))
}

impl Inbox {
    /// Looks `key` up and, unless it is done or held by a live process, takes it: admits it
    /// (evicting the oldest key of a full window) or takes it again (released, or its holder
    /// died). A key done already is answered without a lock; the rest under the inbox's
    /// admission lock, which a killed holder cannot keep (the kernel drops it) and whose
    /// half-done admission the next holder repairs.
    ///
    /// Fails with [`Error::KeyTooBig`] for a key over [`MAX_INBOX_KEY`] bytes,
    /// [`Error::InboxFull`] when the oldest key is still held by a live process,
    /// [`Error::Forked`] in a child forked after the inbox was made, and
    /// [`Error::Corrupt`] with [`Corruption::Inbox`](crate::Corruption::Inbox) for a damaged
    /// file.
    pub fn begin(&mut self, key: &[u8]) -> Result<Admit> {
        let file = &self.file;
        self.lease.check_current(&file.path)?;
        file.check_damage()?;
        let key = Key::new(key).ok_or(Error::KeyTooBig {
            len: key.len(),
            max: MAX_KEY,
        })?;
        // A key done already is answered without the lock (SYNC Q); anything else under it.
        if file.table().peek_done(&key) {
            return Ok(Admit::Done);
        }
        let me = id(self.lease.word());
        let _lock = file.admission(self.lease.fd())?;
        let begun = file
            .table()
            .begin(&key, me, |holder| alive(file, holder), crate::crash::point)
            .map_err(|d| damaged(&file.path, d))?;
        let (slot, seq) = match begun {
            Begun::Fresh { slot, seq } => (slot, seq),
            Begun::Done => return Ok(Admit::Done),
            Begun::Busy => return Ok(Admit::Busy),
            Begun::Full => {
                return Err(Error::InboxFull {
                    path: file.path.clone(),
                    window: file.config.window,
                })
            }
        };
        Ok(Admit::Fresh(Mark {
            file: file.clone(),
            lease: self.lease.clone(),
            slot,
            seq,
            sync: self.sync,
            finished: false,
        }))
    }

    /// Runs `effect` once per key: `Ok(Some(its value))` if this call applied it (and recorded
    /// it done), `Ok(None)` if it was done already. A key another live process holds fails
    /// with [`Error::KeyBusy`] (retry later); otherwise as [`begin`](Inbox::begin) and
    /// [`Mark::done`]. If `effect` panics, the key is released.
    pub fn once<T>(&mut self, key: &[u8], effect: impl FnOnce() -> T) -> Result<Option<T>> {
        match self.begin(key)? {
            Admit::Fresh(mark) => {
                let value = effect();
                mark.done()?;
                Ok(Some(value))
            }
            Admit::Done => Ok(None),
            Admit::Busy => Err(Error::KeyBusy {
                path: self.file.path.clone(),
            }),
        }
    }

    /// The window (keys), fixed when the inbox was created.
    pub fn window(&self) -> u32 {
        self.file.config.window
    }

    /// The inbox file.
    pub fn path(&self) -> &Path {
        &self.file.path
    }
}

impl Mark {
    /// Records the key's effect applied: every later [`begin`](Inbox::begin) of it within the
    /// window answers [`Admit::Done`]. On a [`Durability::Sync`] queue the slot is on disk
    /// when this returns. Fails with [`Error::Forked`] in a child forked after the mark was
    /// made (the parent's mark is left alone), and [`Error::MarkLost`] if the slot is no
    /// longer this mark's (someone wrote the file outside the protocol).
    pub fn done(mut self) -> Result<()> {
        let file = &self.file;
        self.lease.check_current(&file.path)?;
        file.check_damage()?;
        crate::crash::point("inbox.done.before_cas");
        let me = id(self.lease.word());
        // The mark is spent either way: a failed CAS means the slot is not ours to release.
        self.finished = true;
        if !file.table().finish(self.slot, self.seq, me, true) {
            return Err(Error::MarkLost {
                path: file.path.clone(),
            });
        }
        if self.sync {
            file.sync_slot(self.slot)?;
        }
        Ok(())
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        // In a forked child the mark is the parent's: leave it alone.
        if self.finished || !self.lease.current() {
            return;
        }
        let me = id(self.lease.word());
        // A failed CAS: the slot is no longer ours, nothing to release.
        let _ = self.file.table().finish(self.slot, self.seq, me, false);
    }
}

/// Checks an inbox name: 1 to 64 bytes of ASCII letters, digits, `.`, `_` and `-`, not
/// starting with `.` nor ending in `.tmp` (it becomes part of a file name, and a creation's
/// temporary file ends in `.tmp`).
fn check_name(name: &str) -> Result<()> {
    let ok = (1..=MAX_NAME).contains(&name.len())
        && !name.starts_with('.')
        && !name.ends_with(".tmp")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        argument: "inbox name",
        why: format!(
            "{name:?}: must be 1 to {MAX_NAME} bytes of ASCII letters, digits, '.', '_' and \
             '-', not starting with '.' nor ending in \".tmp\""
        ),
    })
}

/// [`Queue::inbox`](crate::Queue::inbox): opens inbox `name`, creating it with `options` (under
/// the queue's admin lock) if it does not exist.
pub(crate) fn open(
    shared: &MappedQueue,
    trust: &Trust,
    name: &str,
    options: &InboxOptions,
) -> Result<Inbox> {
    check_name(name)?;
    let w = options.window;
    if !w.is_power_of_two() || !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
        return Err(Error::InvalidArgument {
            argument: "inbox window",
            why: format!("{w} is not a power of two from {MIN_WINDOW} to {MAX_WINDOW}"),
        });
    }
    let file = match InboxFile::open(&shared.path, name, trust) {
        Err(Error::UnknownInbox { .. }) => {
            let config = InboxConfig {
                window: w,
                name: name.into(),
            };
            let _lock = AdminLock::take(shared)?;
            InboxFile::create(shared, &config)?;
            InboxFile::open(&shared.path, name, trust)?
        }
        other => other?,
    };
    let lease = Lease::new(&file.file, &file.path).map_err(|source| Error::Io {
        path: file.path.clone(),
        op: "take a lease",
        source,
    })?;
    Ok(Inbox {
        file: file.watch(),
        lease: Arc::new(lease),
        sync: shared.geometry.durability == Durability::Sync,
    })
}

/// [`Queue::inbox_info`](crate::Queue::inbox_info): the counters and fill of inbox `name`.
pub(crate) fn info(queue: &Path, trust: &Trust, name: &str) -> Result<InboxInfo> {
    check_name(name)?;
    let file = InboxFile::open(queue, name, trust)?;
    let t = file.table();
    let bad = |d| damaged(&file.path, d);
    let (admitted, _) = t.cursors().map_err(bad)?;
    let (mut fill, mut done, mut held) = (0, 0, 0);
    for s in 0..u64::from(file.config.window) {
        let (_, slot) = t.load(s).map_err(bad)?;
        match slot.state {
            State::Empty => continue,
            State::Done => done += 1,
            State::Held if alive(&file, slot.holder) => held += 1,
            _ => {}
        }
        fill += 1;
    }
    // Relaxed: statistics.
    let count = |c| t.counter(c).load(Ordering::Relaxed);
    file.check_damage()?;
    Ok(InboxInfo {
        name: name.into(),
        path: file.path.clone(),
        window: file.config.window,
        fill,
        admitted,
        done,
        held,
        duplicates: count(Counter::Duplicates),
        busy: count(Counter::Busy),
        retaken: count(Counter::Retaken),
        evicted: count(Counter::Evicted),
    })
}

/// [`Queue::inboxes`](crate::Queue::inboxes): the names of the queue's inboxes (files named
/// `<queue file name>.inbox-<name>` next to it), sorted.
pub(crate) fn names(queue: &Path) -> Result<Vec<String>> {
    let dir = match queue.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(base) = queue.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}{}", file::SUFFIX);
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        op: "list the inboxes",
        source,
    })?;
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
        // A name that is not an inbox name (a creation's temporary file) is not an inbox.
        .filter(|n| check_name(n).is_ok())
        .collect();
    out.sort();
    Ok(out)
}

/// [`Queue::delete_inbox`](crate::Queue::delete_inbox): removes inbox `name`'s file under the
/// queue's admin lock and its admission lock; fails with [`Error::KeyBusy`] while a live
/// process holds one of its keys.
pub(crate) fn delete(shared: &MappedQueue, trust: &Trust, name: &str) -> Result<()> {
    check_name(name)?;
    let _admin = AdminLock::take(shared)?;
    let file = InboxFile::open(&shared.path, name, trust)?;
    let fd = crate::mapping::lease::OwnFd::open(&file.file, &file.path)
        .map_err(crate::mapping::file::io_err(&file.path, "open"))?;
    let _lock = file.admission(&fd)?;
    let t = file.table();
    for s in 0..u64::from(file.config.window) {
        let (_, slot) = t.load(s).map_err(|d| damaged(&file.path, d))?;
        if slot.state == State::Held && alive(&file, slot.holder) {
            return Err(Error::KeyBusy {
                path: file.path.clone(),
            });
        }
    }
    std::fs::remove_file(&file.path).map_err(|source| Error::Io {
        path: file.path.clone(),
        op: "remove inbox file",
        source,
    })
}
