//! The producer-id file (`<queue path>.ids`): atomic creation under the queue's admin lock on
//! first use, validating open with the queue's [`Trust`], the `SIGBUS`-protected mapping, the
//! id slots' names, and recovery after a machine restart (FORMAT.md, "Producer-id file").

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, IdsFault, Result};
use crate::mapping::file::{create_beside, io_err};
use crate::mapping::lease::OwnFd;
use crate::mapping::side_file::{self, Ops, SideFile};
use crate::mapping::trust::Trust;
use crate::protocol::ids::{
    self, file_size, IdsConfig, IdsTable, ACTIVE, FREE, HEADER_LEN, MAX_NAME,
};
use crate::protocol::sync::Ordering;
use crate::queue::group::AdminLock;
use crate::queue::mapped::MappedQueue;

/// The path of the producer-id file of the queue file at `queue`.
pub(crate) fn path_for(queue: &Path) -> PathBuf {
    let mut name = queue.as_os_str().to_owned();
    name.push(".ids");
    PathBuf::from(name)
}

/// A damaged producer-id file at `path`.
pub(crate) fn corrupt(path: &Path, why: IdsFault) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        kind: Corruption::Ids(why),
    }
}

/// An open, mapped producer-id file (its [`SideFile`] through `Deref`).
pub(crate) struct IdsFile {
    side: SideFile,
    config: IdsConfig,
}

impl Deref for IdsFile {
    type Target = SideFile;
    fn deref(&self) -> &SideFile {
        &self.side
    }
}

impl IdsFile {
    /// Opens the queue's producer-id file, first creating it with `config` (under the queue's
    /// admin lock, with the queue file's mode) if it does not exist.
    pub(crate) fn open_or_create(
        shared: &MappedQueue,
        trust: &Trust,
        config: &IdsConfig,
    ) -> Result<IdsFile> {
        if let Some(ids) = IdsFile::open(shared, trust)? {
            return Ok(ids);
        }
        {
            let _lock = AdminLock::take(shared)?;
            let path = path_for(&shared.path);
            let mode = shared.mode()?;
            let size = file_size(config.slots, config.window);
            match create_beside(&path, mode, size, &config.encode(), ids::BOOT_ID) {
                Ok(()) | Err(Error::Exists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        IdsFile::open(shared, trust)?.ok_or_else(|| {
            io_err(&path_for(&shared.path), "open producer-id file")(
                std::io::ErrorKind::NotFound.into(),
            )
        })
    }

    /// Opens and validates the queue's producer-id file, which `trust` must accept: size,
    /// magic, version, checksum, each header field, then the size the header implies.
    /// `Ok(None)` if there is none. Recovers it first if the machine restarted since it was
    /// last opened.
    pub(crate) fn open(shared: &MappedQueue, trust: &Trust) -> Result<Option<IdsFile>> {
        let path = path_for(&shared.path);
        let ops = Ops {
            open: "open producer-id file",
            read_header: "read producer-id header",
        };
        let opened = SideFile::open(
            &path,
            trust,
            &ops,
            file_size(ids::MIN_SLOTS, ids::MIN_WINDOW)..=u64::MAX,
            |len, expected| corrupt(&path, IdsFault::Size { len, expected }),
            |head: &[u8; HEADER_LEN]| {
                let config = IdsConfig::decode(head).map_err(|f| corrupt(&path, f))?;
                Ok((config, file_size(config.slots, config.window)))
            },
        )?;
        let Some((side, config)) = opened else {
            return Ok(None);
        };
        let ids = IdsFile { side, config };
        ids.recover_if_restarted(shared)?;
        Ok(Some(ids))
    }

    /// The file's shared words.
    pub(crate) fn table(&self) -> IdsTable<'_> {
        IdsTable::new(self.region(), self.config)
    }

    /// Shares the file with the process's watcher, which checks it every
    /// [`watch::INTERVAL`](crate::mapping::watch::INTERVAL): what an idempotent producer holds
    /// for its life.
    pub(crate) fn watch(self) -> Arc<IdsFile> {
        side_file::watch(self)
    }

    /// A damaged word of slot `slot`.
    pub(crate) fn slot_fault(&self, slot: u32, field: &'static str, value: u64) -> Error {
        corrupt(&self.path, IdsFault::Slot { slot, field, value })
    }

    /// Whether slot `slot` is active, and its name if so; a state or name no writer stores
    /// is [`IdsFault::Slot`].
    pub(crate) fn name(&self, slot: u32) -> Result<Option<String>> {
        let t = self.table();
        // Acquire: pairs with the Release store that activates a slot after its name.
        match t.state(slot).load(Ordering::Acquire) {
            FREE => return Ok(None),
            ACTIVE => {}
            other => return Err(self.slot_fault(slot, "state", other)),
        }
        // Relaxed: ordered by the Acquire load above.
        let len = t.name_len(slot).load(Ordering::Relaxed);
        if len == 0 || len > MAX_NAME as u64 {
            return Err(self.slot_fault(slot, "name length", len));
        }
        let mut buf = vec![0u8; len as usize];
        t.read_name(slot, &mut buf);
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| self.slot_fault(slot, "name", len))
    }

    /// The slot of producer id `id`, if it has one.
    pub(crate) fn find(&self, id: &str) -> Result<Option<u32>> {
        for slot in 0..self.config.slots {
            if self.name(slot)?.as_deref() == Some(id) {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// The slot of producer id `id`, made in a free slot if it has none (under the queue's
    /// admin lock: the name is written before the slot becomes active).
    pub(crate) fn find_or_create(&self, shared: &MappedQueue, id: &str) -> Result<u32> {
        if let Some(slot) = self.find(id)? {
            return Ok(slot);
        }
        let _lock = AdminLock::take(shared)?;
        if let Some(slot) = self.find(id)? {
            return Ok(slot);
        }
        let t = self.table();
        // Acquire: pairs with the Release store that frees a slot after it was emptied.
        let free = (0..self.config.slots)
            .find(|&s| t.state(s).load(Ordering::Acquire) == FREE)
            .ok_or_else(|| Error::TooManyProducerIds {
                path: self.path.clone(),
                slots: self.config.slots,
            })?;
        // Relaxed: a free slot is only written under the admin lock, which we hold; the
        // Release store of the state publishes the name.
        t.write_name(free, id.as_bytes());
        t.name_len(free).store(id.len() as u64, Ordering::Relaxed);
        t.state(free).store(ACTIVE, Ordering::Release);
        Ok(free)
    }

    /// Recovery after a machine restart (the boot id differs), under an exclusive `flock` of
    /// the file, after the queue itself recovered (its tail is final): in every active slot,
    /// entries of offsets recovery dropped from the queue (at or past its tail) are cleared,
    /// and so is an in-flight claim at or past it (one below it is settled by the next
    /// holder, as after a kill); owners are cleared.
    fn recover_if_restarted(&self, shared: &MappedQueue) -> Result<()> {
        let Some(boot) = self.restarted(ids::BOOT_ID)? else {
            return Ok(());
        };
        let _lock =
            OwnFd::flock_exclusive(&self.file, &self.path).map_err(io_err(&self.path, "flock"))?;
        if self.recover(ids::BOOT_ID, boot, || self.repair(shared))? {
            // The recovered state reaches the disk before anyone builds on it.
            self.sync_all()?;
        }
        Ok(())
    }

    /// The repair of [`recover_if_restarted`](Self::recover_if_restarted), under its lock.
    fn repair(&self, shared: &MappedQueue) -> Result<()> {
        let t = self.table();
        let (tail, _) = shared.ring.tail();
        for slot in 0..self.config.slots {
            if self.name(slot)?.is_none() {
                continue;
            }
            for i in 0..u64::from(self.config.window) {
                let entry = t.load_entry(slot, i).map_err(|f| corrupt(&self.path, f))?;
                if entry.is_some_and(|(_, offset)| offset >= tail) {
                    t.clear_entry(slot, i);
                }
            }
            if t.in_flight_offset(slot)
                .is_some_and(|offset| offset >= tail)
            {
                t.clear_in_flight(slot);
            }
            // Relaxed: nobody else uses the file on this boot before `recover` stores the boot
            // id (Release), and every later opener loads it (Acquire) first.
            t.owner(slot).store(0, Ordering::Relaxed);
        }
        Ok(())
    }
}
