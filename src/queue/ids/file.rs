//! The producer-id file (`<queue path>.ids`): atomic creation under the queue's admin lock on
//! first use, validating open with the queue's [`Trust`], the `SIGBUS`-protected mapping, the
//! id slots' names, and recovery after a machine restart (FORMAT.md, "Producer-id file").

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, IdsFault, Result};
use crate::mapping::file::{create_beside, io_err};
use crate::mapping::lease::OwnFd;
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::{open_shared, Trust};
use crate::mapping::watch::{self, Identity, Watched};
use crate::protocol::ids::{
    self, file_size, IdsConfig, IdsTable, ACTIVE, FREE, HEADER_LEN, MAX_NAME,
};
use crate::protocol::sync::{Ordering, Region};
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

/// An open, mapped producer-id file.
pub(crate) struct IdsFile {
    // Field order: the region points into `map`, dropped after it.
    region: Region,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    config: IdsConfig,
    /// What the file was at open, for the watcher's checks (removed, replaced, shrunk).
    identity: Identity,
    map: Protected,
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
            let mode = shared
                .file
                .metadata()
                .map_err(io_err(&shared.path, "stat"))?
                .mode()
                & 0o777;
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
        let file = match open_shared(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, "open producer-id file")(e)),
        };
        let meta = file.metadata().map_err(io_err(&path, "stat"))?;
        trust.check(&path, &meta)?;
        let len = meta.len();
        let smallest = file_size(ids::MIN_SLOTS, ids::MIN_WINDOW);
        if len < smallest {
            return Err(corrupt(
                &path,
                IdsFault::Size {
                    len,
                    expected: smallest,
                },
            ));
        }
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(&path, "read producer-id header"))?;
        let config = IdsConfig::decode(&head).map_err(|f| corrupt(&path, f))?;
        let expected = file_size(config.slots, config.window);
        if len != expected {
            return Err(corrupt(&path, IdsFault::Size { len, expected }));
        }
        let map = Protected::map(&file, expected as usize).map_err(io_err(&path, "mmap"))?;
        // SAFETY: the mapping is page-aligned, exactly `expected` bytes, readable and
        // writable, and lives in `map` for as long as the region (same struct, dropped later).
        let region = unsafe { Region::new(map.as_mut_ptr(), expected as usize) };
        let identity = Identity::new(&file, &path, expected).map_err(io_err(&path, "fstat"))?;
        let ids = IdsFile {
            region,
            file,
            path,
            config,
            identity,
            map,
        };
        ids.recover_if_restarted(shared)?;
        Ok(Some(ids))
    }

    /// The file's shared words.
    pub(crate) fn table(&self) -> IdsTable<'_> {
        IdsTable::new(&self.region, self.config)
    }

    /// `Err` once the file shrank under this process's mapping (`Truncated`), or its path was
    /// removed or names another file (`Detached`, from the watcher: only a holder's file is
    /// watched, see [`watch`](Self::watch)).
    pub(crate) fn check_damage(&self) -> Result<()> {
        match self.map.damage() {
            None => Ok(()),
            Some(damage) => Err(damage.error(self.path.clone())),
        }
    }

    /// Shares the file with the process's watcher, which checks it every
    /// [`watch::INTERVAL`]: what an idempotent producer holds for its life.
    pub(crate) fn watch(self) -> Arc<IdsFile> {
        let ids = Arc::new(self);
        let weak: std::sync::Weak<dyn Watched> = Arc::downgrade(&ids) as _;
        watch::add(weak);
        ids
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

    fn boot_id(&self) -> [u8; 16] {
        // Acquire: pairs with the Release store that ends recovery, so an opener that takes
        // the fast path (no lock) sees the recovered slots.
        self.region
            .u128(ids::BOOT_ID)
            .load(Ordering::Acquire)
            .to_le_bytes()
    }

    /// Recovery after a machine restart (the boot id differs), under an exclusive `flock` of
    /// the file, after the queue itself recovered (its tail is final): in every active slot,
    /// entries of offsets recovery dropped from the queue (at or past its tail) are cleared,
    /// and so is an in-flight claim at or past it (one below it is settled by the next
    /// holder, as after a kill); owners are cleared.
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
            // Relaxed: nobody else uses the file on this boot before the boot id below is
            // stored (Release), and every later opener loads it (Acquire) first.
            t.owner(slot).store(0, Ordering::Relaxed);
        }
        // Release: publishes the recovered slots to openers that load the boot id.
        self.region
            .u128(ids::BOOT_ID)
            .store(u128::from_le_bytes(boot), Ordering::Release);
        // The recovered state reaches the disk before anyone builds on it.
        crate::fault::check("msync").map_err(io_err(&self.path, "msync"))?;
        let len = file_size(self.config.slots, self.config.window);
        self.map
            .raw()
            .flush_range(0, len as usize)
            .map_err(io_err(&self.path, "msync"))
    }
}

impl Watched for IdsFile {
    fn check_now(&self) {
        watch::check(&self.file, &self.identity, &self.map);
    }
}

impl Drop for IdsFile {
    fn drop(&mut self) {
        // Stops the watcher if this was the last file it watched (a no-op for a file it did
        // not watch while others remain).
        watch::released();
    }
}
