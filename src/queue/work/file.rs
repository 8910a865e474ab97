//! A work group's file (`<queue path>.work-<slot>`): atomic creation under the queue's admin
//! lock, validating open with the queue's [`Trust`], the `SIGBUS`-protected mapping, and
//! recovery after a machine restart (FORMAT.md, "Work file").

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, Result, WorkFault};
use crate::mapping::file::{create_beside, io_err};
use crate::mapping::lease::OwnFd;
use crate::mapping::side_file::{self, Ops, SideFile};
use crate::mapping::trust::Trust;
use crate::protocol::sync::{pack, unpack, Ordering};
use crate::protocol::work::{
    self, file_size, pack_state, Entry, State, WorkConfig, WorkTable, HEADER_LEN, MEMBERS,
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

/// An open, mapped work file (its [`SideFile`] through `Deref`).
pub(crate) struct WorkFile {
    side: SideFile,
    pub(crate) config: WorkConfig,
}

impl Deref for WorkFile {
    type Target = SideFile;
    fn deref(&self) -> &SideFile {
        &self.side
    }
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
        let mode = shared.mode()?;
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
        let ops = Ops {
            open: "open work file",
            read_header: "read work header",
        };
        let (side, config) = SideFile::open(
            &path,
            trust,
            &ops,
            file_size(work::MIN_WINDOW)..=u64::MAX,
            |len, expected| corrupt(&path, WorkFault::Size { len, expected }),
            |head: &[u8; HEADER_LEN]| {
                let config = WorkConfig::decode(head).map_err(|f| corrupt(&path, f))?;
                let len = file_size(config.window);
                Ok((config, len))
            },
        )?
        .ok_or_else(|| corrupt(&path, WorkFault::Missing))?;
        if config.slot != slot || config.name != name {
            return Err(corrupt(
                &path,
                WorkFault::Group {
                    found: format!("group {:?} (slot {})", config.name, config.slot),
                },
            ));
        }
        let work = WorkFile { side, config };
        work.recover_if_restarted(shared)?;
        Ok(work)
    }

    /// The file's shared words.
    pub(crate) fn table(&self) -> WorkTable<'_> {
        WorkTable::new(self.region(), self.config.window)
    }

    /// Shares the file with the process's watcher, which checks it every
    /// [`watch::INTERVAL`](crate::mapping::watch::INTERVAL): what a worker holds for its life.
    pub(crate) fn watch(self) -> Arc<WorkFile> {
        side_file::watch(self)
    }

    /// Loads `offset`'s entry; a damaged word is [`WorkFault::Entry`].
    pub(crate) fn load(&self, offset: u64) -> Result<Option<Entry>> {
        self.table()
            .load(offset)
            .map_err(|word| corrupt(&self.path, entry_fault(offset, word)))
    }

    /// Recovery after a machine restart (the boot id differs), under an exclusive `flock` of
    /// the work file, after the queue itself recovered (its tail is final): deliveries in
    /// flight and dead-letterings in progress become WAITING, due now (their count kept);
    /// entries of offsets recovery dropped from the queue (at or past its tail) are cleared;
    /// `next` is clamped into `base..=tail`; member slots and the sleeper bitmap are cleared.
    fn recover_if_restarted(&self, shared: &MappedQueue) -> Result<()> {
        let Some(boot) = self.restarted(work::BOOT_ID)? else {
            return Ok(());
        };
        let _lock =
            OwnFd::flock_exclusive(&self.file, &self.path).map_err(io_err(&self.path, "flock"))?;
        if self.recover(work::BOOT_ID, boot, || self.repair(shared))? {
            // The recovered state reaches the disk before anyone builds on it.
            self.sync_all()?;
        }
        Ok(())
    }

    /// The repair of [`recover_if_restarted`](Self::recover_if_restarted), under its lock.
    fn repair(&self, shared: &MappedQueue) -> Result<()> {
        let t = self.table();
        let (tail, _) = shared.ring.tail();
        let now = clock::now_ns() / 1_000_000;
        // Relaxed throughout: nobody else uses the file on this boot before `recover` stores
        // the boot id (Release), and every later opener loads it (Acquire) first.
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
        Ok(())
    }
}
