//! An inbox's file (`<queue path>.inbox-<name>`): atomic creation under the queue's admin
//! lock, validating open with the queue's [`Trust`], the `SIGBUS`-protected mapping, the
//! admission lock, and the repair after a dead admission or a machine restart (FORMAT.md,
//! "Inbox file").

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, InboxFault, Result};
use crate::mapping::file::{create_allocated, io_err, rename_noreplace};
use crate::mapping::lease::OwnFd;
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::{open_shared, Trust};
use crate::mapping::watch::{self, Identity, Watched};
use crate::protocol::inbox::{
    self, file_size, Damage, HeaderFault, InboxConfig, InboxTable, HEADER_LEN,
};
use crate::protocol::sync::{unpack, Ordering, Region};
use crate::queue::mapped::MappedQueue;

/// The suffix between a queue file's name and an inbox's name.
pub(crate) const SUFFIX: &str = ".inbox-";

/// The path of inbox `name` of the queue file at `queue`.
pub(crate) fn path_for(queue: &Path, name: &str) -> PathBuf {
    let mut p = queue.as_os_str().to_owned();
    p.push(SUFFIX);
    p.push(name);
    PathBuf::from(p)
}

/// A damaged inbox file at `path`.
pub(crate) fn corrupt(path: &Path, why: InboxFault) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        kind: Corruption::Inbox(why),
    }
}

/// The error of damage a transition found.
pub(crate) fn damaged(path: &Path, damage: Damage) -> Error {
    corrupt(
        path,
        match damage {
            Damage::Slot(slot, word) => {
                let (low, high) = unpack(word);
                InboxFault::Slot { slot, high, low }
            }
            Damage::Key(slot) => InboxFault::Key { slot },
            Damage::Bucket(bucket, value) => InboxFault::Index { bucket, value },
            Damage::IndexFull => InboxFault::Index {
                bucket: u64::MAX,
                value: 0,
            },
            Damage::Cursor(admitted, pending) => InboxFault::Cursor { admitted, pending },
        },
    )
}

/// An open, mapped inbox file.
pub(crate) struct InboxFile {
    // Field order: the region points into `map`, dropped after it.
    region: Region,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) config: InboxConfig,
    /// What the file was at open, for the watcher's checks (removed, replaced, shrunk).
    identity: Identity,
    map: Protected,
}

impl InboxFile {
    /// Creates inbox `config.name` next to the queue file unless it exists (under the queue's
    /// admin lock): a temporary file with its blocks allocated, the header and boot id written
    /// and `fsync`ed, then renamed into place without replacing anything.
    pub(crate) fn create(shared: &MappedQueue, config: &InboxConfig) -> Result<()> {
        let path = path_for(&shared.path, &config.name);
        let meta = shared
            .file
            .metadata()
            .map_err(io_err(&shared.path, "stat"))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let file = create_allocated(&tmp, meta.mode() & 0o777, file_size(config.window))?;
            file.write_all_at(&config.encode(), 0)
                .map_err(io_err(&tmp, "write inbox header"))?;
            let boot = crate::runtime::boot::boot_id().map_err(io_err(&tmp, "read boot id"))?;
            file.write_all_at(&boot, inbox::BOOT_ID)
                .map_err(io_err(&tmp, "write inbox header"))?;
            file.sync_all().map_err(io_err(&tmp, "fsync"))?;
            rename_noreplace(&tmp, &path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            Err(Error::Exists { .. }) => Ok(()),
            other => other,
        }
    }

    /// Opens and validates inbox `name` of the queue file at `queue`, which `trust` must
    /// accept: size, magic, version, checksum, every header field, and the name. Repairs it
    /// first if the machine restarted since it was last opened.
    pub(crate) fn open(queue: &Path, name: &str, trust: &Trust) -> Result<Self> {
        let path = path_for(queue, name);
        let file = open_shared(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::UnknownInbox { path: path.clone() },
            _ => io_err(&path, "open inbox file")(e),
        })?;
        let meta = file.metadata().map_err(io_err(&path, "stat"))?;
        trust.check(&path, &meta)?;
        let len = meta.len();
        let smallest = file_size(inbox::MIN_WINDOW);
        if len < smallest {
            let fault = InboxFault::Size {
                len,
                expected: smallest,
            };
            return Err(corrupt(&path, fault));
        }
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(&path, "read inbox header"))?;
        let config = InboxConfig::decode(&head).map_err(|f| {
            corrupt(
                &path,
                match f {
                    HeaderFault::Magic => InboxFault::BadMagic,
                    HeaderFault::Version(found) => InboxFault::Version { found },
                    HeaderFault::Checksum => InboxFault::Checksum,
                    HeaderFault::Field(field, value) => InboxFault::Field { field, value },
                },
            )
        })?;
        let expected = file_size(config.window);
        if len != expected {
            return Err(corrupt(&path, InboxFault::Size { len, expected }));
        }
        if config.name != name {
            let found = config.name.clone();
            return Err(corrupt(&path, InboxFault::Name { found }));
        }
        let map = Protected::map(&file, expected as usize).map_err(io_err(&path, "mmap"))?;
        // SAFETY: the mapping is page-aligned, exactly `expected` bytes, readable and
        // writable, and lives in `map` for as long as the region (same struct, dropped later).
        let region = unsafe { Region::new(map.as_mut_ptr(), expected as usize) };
        let identity = Identity::new(&file, &path, expected).map_err(io_err(&path, "fstat"))?;
        let inbox = InboxFile {
            region,
            file,
            path,
            config,
            identity,
            map,
        };
        inbox.repair_if_restarted()?;
        Ok(inbox)
    }

    /// The file's shared words.
    pub(crate) fn table(&self) -> InboxTable<'_> {
        InboxTable::new(&self.region, self.config.window)
    }

    /// `Err` once the file shrank under this process's mapping (`Truncated`), or its path was
    /// removed or names another file (`Detached`, from the watcher: only an [`Inbox`]'s file is
    /// watched).
    ///
    /// [`Inbox`]: crate::Inbox
    pub(crate) fn check_damage(&self) -> Result<()> {
        match self.map.damage() {
            None => Ok(()),
            Some(damage) => Err(damage.error(self.path.clone())),
        }
    }

    /// Shares the file with the process's watcher, which checks it every
    /// [`watch::INTERVAL`]: what an [`Inbox`](crate::Inbox) holds for its life.
    pub(crate) fn watch(self) -> Arc<InboxFile> {
        let file = Arc::new(self);
        let weak: std::sync::Weak<dyn Watched> = Arc::downgrade(&file) as _;
        watch::add(weak);
        file
    }

    /// Puts slot `s` on disk (`msync`).
    pub(crate) fn sync_slot(&self, s: u64) -> Result<()> {
        crate::fault::check("msync").map_err(io_err(&self.path, "msync"))?;
        let (off, len) = self.table().slot_range(s);
        self.map
            .raw()
            .flush_range(off as usize, len as usize)
            .map_err(io_err(&self.path, "msync"))
    }

    /// Takes the admission lock through `fd` (a description of this file), repairing what a
    /// holder killed mid-admission left (N1) before handing it out.
    pub(crate) fn admission<'a>(&'a self, fd: &'a OwnFd) -> Result<Admission<'a>> {
        fd.lock(inbox::ADMISSION_LOCK)
            .map_err(io_err(&self.path, "lock the inbox"))?;
        let held = Admission { fd };
        self.table()
            .repair(false)
            .map_err(|d| damaged(&self.path, d))?;
        Ok(held)
    }

    fn boot_id(&self) -> [u8; 16] {
        // Acquire: pairs with the Release store that ends a repair, so an opener that takes
        // the fast path (no lock) sees the repaired slots.
        self.region
            .u128(inbox::BOOT_ID)
            .load(Ordering::Acquire)
            .to_le_bytes()
    }

    /// After a machine restart (the boot id differs), under the admission lock of a
    /// description of its own: the index is rebuilt from the slots, and slots whose key does
    /// not match its hash (a page that did not reach the disk whole) are emptied. HELD slots
    /// need nothing: no holder of an earlier boot is alive, so they are taken again.
    fn repair_if_restarted(&self) -> Result<()> {
        let boot = crate::runtime::boot::boot_id().map_err(io_err(&self.path, "read boot id"))?;
        if self.boot_id() == boot {
            return Ok(());
        }
        let fd = OwnFd::open(&self.file, &self.path).map_err(io_err(&self.path, "open"))?;
        let _lock = self.admission(&fd)?;
        if self.boot_id() == boot {
            return Ok(());
        }
        self.table()
            .repair(true)
            .map_err(|d| damaged(&self.path, d))?;
        // Release: publishes the repaired slots to openers that load the boot id.
        self.region
            .u128(inbox::BOOT_ID)
            .store(u128::from_le_bytes(boot), Ordering::Release);
        self.map.raw().flush().map_err(io_err(&self.path, "msync"))
    }
}

/// The admission lock, held: released when dropped (or by the kernel, if the process dies).
pub(crate) struct Admission<'a> {
    fd: &'a OwnFd,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.fd.unlock(inbox::ADMISSION_LOCK);
    }
}

impl Watched for InboxFile {
    fn check_now(&self) {
        watch::check(&self.file, &self.identity, &self.map);
    }
}

impl Drop for InboxFile {
    fn drop(&mut self) {
        // Stops the watcher if this was the last file it watched.
        watch::released();
    }
}
