//! A work group's file (`<queue path>.work-<slot>`): atomic creation under the queue's admin
//! lock, validating open with the queue's [`Trust`], the `SIGBUS`-protected mapping, and
//! recovery after a machine restart (FORMAT.md, "Work file").

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, Result, WorkFault};
use crate::mapping::file::{create_beside, io_err};
use crate::mapping::lease::OwnFd;
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::{open_shared, Trust};
use crate::mapping::watch::{self, Identity, Watched};
use crate::protocol::sync::{pack, unpack, Ordering, Region};
use crate::protocol::work::{
    self, file_size, pack_state, Entry, HeaderFault, State, WorkConfig, WorkTable, HEADER_LEN,
    MEMBERS,
};
use crate::queue::mapped::MappedQueue;
use crate::runtime::clock;

/// The path of the work file of group slot `slot` of the queue file at `queue`.
pub(crate) fn path_for(queue: &Path, slot: u32) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(format!(".work-{slot}"));
    PathBuf::from(name)
}

/// A damaged work file at `path`.
pub(crate) fn corrupt(path: &Path, why: WorkFault) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        kind: Corruption::Work(why),
    }
}

/// The fault of a damaged state word `word` in `offset`'s entry.
pub(crate) fn entry_fault(offset: u64, word: u128) -> WorkFault {
    let (low, high) = unpack(word);
    WorkFault::Entry { offset, high, low }
}

/// An open, mapped work file.
pub(crate) struct WorkFile {
    // Field order: the region points into `map`, dropped after it.
    region: Region,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) config: WorkConfig,
    /// What the file was at open, for the watcher's checks (removed, replaced, shrunk).
    identity: Identity,
    map: Protected,
}

impl WorkFile {
    /// Creates the work file of `config.slot` next to the queue file (under its admin lock,
    /// before the slot becomes active): a temporary file with its blocks allocated, the header
    /// and boot id written and `fsync`ed, then renamed into place. A file left at the path by
    /// a creation that died before the slot became active, or by a deletion that died before
    /// removing it, belongs to no group and is replaced.
    pub(crate) fn create(shared: &MappedQueue, config: &WorkConfig) -> Result<()> {
        let path = path_for(&shared.path, config.slot);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(&path, "remove a stale work file")(e))
            }
            _ => {}
        }
        let meta = shared
            .file
            .metadata()
            .map_err(io_err(&shared.path, "stat"))?;
        let mode = meta.mode() & 0o777;
        create_beside(
            &path,
            mode,
            file_size(config.window),
            &config.encode(),
            work::BOOT_ID,
        )
    }

    /// Opens and validates the work file of group `name` in slot `slot`, which `trust` must
    /// accept: size, magic, version, checksum, every header field, and the group it names.
    /// Recovers it first if the machine restarted since it was last opened.
    pub(crate) fn open(shared: &MappedQueue, slot: u32, name: &str, trust: &Trust) -> Result<Self> {
        let path = path_for(&shared.path, slot);
        let file = open_shared(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => corrupt(&path, WorkFault::Missing),
            _ => io_err(&path, "open work file")(e),
        })?;
        let meta = file.metadata().map_err(io_err(&path, "stat"))?;
        trust.check(&path, &meta)?;
        let len = meta.len();
        if len < file_size(work::MIN_WINDOW) {
            return Err(corrupt(
                &path,
                WorkFault::Size {
                    len,
                    expected: file_size(work::MIN_WINDOW),
                },
            ));
        }
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(&path, "read work header"))?;
        let config = WorkConfig::decode(&head).map_err(|f| {
            corrupt(
                &path,
                match f {
                    HeaderFault::Magic => WorkFault::BadMagic,
                    HeaderFault::Version(found) => WorkFault::Version { found },
                    HeaderFault::Checksum => WorkFault::Checksum,
                    HeaderFault::Field(field, value) => WorkFault::Field { field, value },
                },
            )
        })?;
        let expected = file_size(config.window);
        if len != expected {
            return Err(corrupt(&path, WorkFault::Size { len, expected }));
        }
        if config.slot != slot || config.name != name {
            return Err(corrupt(
                &path,
                WorkFault::Group {
                    found: format!("group {:?} (slot {})", config.name, config.slot),
                },
            ));
        }
        let map = Protected::map(&file, expected as usize).map_err(io_err(&path, "mmap"))?;
        // SAFETY: the mapping is page-aligned, exactly `expected` bytes, readable and
        // writable, and lives in `map` for as long as the region (same struct, dropped later).
        let region = unsafe { Region::new(map.as_mut_ptr(), expected as usize) };
        let identity = Identity::new(&file, &path, expected).map_err(io_err(&path, "fstat"))?;
        let work = WorkFile {
            region,
            file,
            path,
            config,
            identity,
            map,
        };
        work.recover_if_restarted(shared)?;
        Ok(work)
    }

    /// The file's shared words.
    pub(crate) fn table(&self) -> WorkTable<'_> {
        WorkTable::new(&self.region, self.config.window)
    }

    /// `Err` once the file shrank under this process's mapping (`Truncated`, from the `SIGBUS`
    /// handler or the watcher), or its path was removed or names another file (`Detached`,
    /// from the watcher: only a worker's file is watched, see [`watch`](Self::watch)).
    pub(crate) fn check_damage(&self) -> Result<()> {
        match self.map.damage() {
            None => Ok(()),
            Some(damage) => Err(damage.error(self.path.clone())),
        }
    }

    /// Shares the file with the process's watcher, which checks it every
    /// [`watch::INTERVAL`]: what a worker holds for its life.
    pub(crate) fn watch(self) -> Arc<WorkFile> {
        let work = Arc::new(self);
        let weak: std::sync::Weak<dyn Watched> = Arc::downgrade(&work) as _;
        watch::add(weak);
        work
    }

    /// Puts bytes `off..off + len` of the file on disk (`msync`).
    pub(crate) fn sync_range(&self, off: u64, len: u64) -> Result<()> {
        crate::fault::check("msync").map_err(io_err(&self.path, "msync"))?;
        self.map
            .raw()
            .flush_range(off as usize, len as usize)
            .map_err(io_err(&self.path, "msync"))
    }

    /// Puts the whole file on disk (`msync`).
    pub(crate) fn sync_all(&self) -> Result<()> {
        self.sync_range(0, file_size(self.config.window))
    }

    /// Loads `offset`'s entry; a damaged word is [`WorkFault::Entry`].
    pub(crate) fn load(&self, offset: u64) -> Result<Option<Entry>> {
        self.table()
            .load(offset)
            .map_err(|word| corrupt(&self.path, entry_fault(offset, word)))
    }

    fn boot_id(&self) -> [u8; 16] {
        // Acquire: pairs with the Release store that ends recovery, so an opener that takes
        // the fast path (no lock) sees the recovered entries.
        self.region
            .u128(work::BOOT_ID)
            .load(Ordering::Acquire)
            .to_le_bytes()
    }

    /// Recovery after a machine restart (the boot id differs), under an exclusive `flock` of
    /// the work file, after the queue itself recovered (its tail is final): deliveries in
    /// flight and dead-letterings in progress become WAITING, due now (their count kept);
    /// entries of offsets recovery dropped from the queue (at or past its tail) are cleared;
    /// `next` is clamped into `base..=tail`; member slots and the sleeper bitmap are cleared.
    fn recover_if_restarted(&self, shared: &MappedQueue) -> Result<()> {
        let boot = crate::runtime::boot::boot_id().map_err(io_err(&self.path, "read boot id"))?;
        if self.boot_id() == boot {
            return Ok(());
        }
        let _lock =
            OwnFd::flock_exclusive(&self.file, &self.path).map_err(io_err(&self.path, "flock"))?;
        if self.boot_id() == boot {
            return Ok(());
        }
        let t = self.table();
        let (tail, _) = shared.ring.tail();
        let now = clock::now_ns() / 1_000_000;
        // Relaxed throughout: nobody else uses the file on this boot before the boot id
        // below is stored (Release), and every later opener loads it (Acquire) first.
        for i in 0..u64::from(self.config.window) {
            let word = t.state(i).load(Ordering::Relaxed);
            let Some(e) = work::unpack_state(word) else {
                return Err(corrupt(&self.path, entry_fault(i, word)));
            };
            let to = if e.offset >= tail && word != 0 {
                Some(0)
            } else if matches!(e.state, State::InFlight | State::DeadLettering(_)) {
                Some(pack_state(e.to(State::Waiting, now, work::NO_HOLDER)))
            } else {
                None
            };
            if let Some(to) = to {
                t.state(i).store(to, Ordering::Relaxed);
            }
        }
        let (base, base_pos) = shared.committed(self.config.slot);
        let (next, next_pos) = unpack(t.next().load(Ordering::Relaxed));
        let next = if next > tail {
            shared.ring.tail()
        } else {
            (next, next_pos)
        };
        let next = if next.0 < base {
            (base, base_pos)
        } else {
            next
        };
        t.next().store(pack(next.0, next.1), Ordering::Relaxed);
        t.earliest().store(0, Ordering::Relaxed);
        t.sleepers().store(0, Ordering::Relaxed);
        for m in 0..MEMBERS {
            t.member(m).store(0, Ordering::Relaxed);
        }
        // Release: publishes the recovered entries to openers that load the boot id.
        self.region
            .u128(work::BOOT_ID)
            .store(u128::from_le_bytes(boot), Ordering::Release);
        // The recovered state reaches the disk before anyone builds on it.
        self.sync_all()
    }
}

impl Watched for WorkFile {
    fn check_now(&self) {
        watch::check(&self.file, &self.identity, &self.map);
    }
}

impl Drop for WorkFile {
    fn drop(&mut self) {
        // Stops the watcher if this was the last file it watched (a no-op for a file it did
        // not watch while others remain).
        watch::released();
    }
}
