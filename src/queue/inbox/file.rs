//! An inbox's file (`<queue path>.inbox-<name>`): atomic creation under the queue's admin
//! lock, validating open with the queue's [`Trust`], the `SIGBUS`-protected mapping, the
//! admission lock, and the repair after a dead admission or a machine restart (FORMAT.md,
//! "Inbox file").

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Corruption, Error, InboxFault, Result};
use crate::mapping::file::{create_beside, io_err};
use crate::mapping::lease::OwnFd;
use crate::mapping::side_file::{self, Ops, SideFile};
use crate::mapping::trust::Trust;
use crate::protocol::inbox::{self, file_size, Damage, InboxConfig, InboxTable, HEADER_LEN};
use crate::protocol::sync::unpack;
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

/// An open, mapped inbox file (its [`SideFile`] through `Deref`).
pub(crate) struct InboxFile {
    side: SideFile,
    pub(crate) config: InboxConfig,
}

impl Deref for InboxFile {
    type Target = SideFile;
    fn deref(&self) -> &SideFile {
        &self.side
    }
}

impl InboxFile {
    /// Creates inbox `config.name` next to the queue file unless it exists (under the queue's
    /// admin lock): a temporary file with its blocks allocated, the header and boot id written
    /// and `fsync`ed, then renamed into place without replacing anything.
    pub(crate) fn create(shared: &MappedQueue, config: &InboxConfig) -> Result<()> {
        let path = path_for(&shared.path, &config.name);
        let mode = shared.mode()?;
        let size = file_size(config.window);
        match create_beside(&path, mode, size, &config.encode(), inbox::BOOT_ID) {
            Err(Error::Exists { .. }) => Ok(()),
            other => other,
        }
    }

    /// Opens and validates inbox `name` of the queue file at `queue`, which `trust` must
    /// accept: size, magic, version, checksum, every header field, and the name. Repairs it
    /// first if the machine restarted since it was last opened.
    pub(crate) fn open(queue: &Path, name: &str, trust: &Trust) -> Result<Self> {
        let path = path_for(queue, name);
        let ops = Ops {
            open: "open inbox file",
            read_header: "read inbox header",
        };
        let (side, config) = SideFile::open(
            &path,
            trust,
            &ops,
            file_size(inbox::MIN_WINDOW)..=u64::MAX,
            |len, expected| corrupt(&path, InboxFault::Size { len, expected }),
            |head: &[u8; HEADER_LEN]| {
                let config = InboxConfig::decode(head).map_err(|f| corrupt(&path, f))?;
                let len = file_size(config.window);
                Ok((config, len))
            },
        )?
        .ok_or_else(|| Error::UnknownInbox { path: path.clone() })?;
        if config.name != name {
            let found = config.name.clone();
            return Err(corrupt(&path, InboxFault::Name { found }));
        }
        let inbox = InboxFile { side, config };
        inbox.repair_if_restarted()?;
        Ok(inbox)
    }

    /// The file's shared words.
    pub(crate) fn table(&self) -> InboxTable<'_> {
        InboxTable::new(self.region(), self.config.window)
    }

    /// Shares the file with the process's watcher, which checks it every
    /// [`watch::INTERVAL`](crate::mapping::watch::INTERVAL): what an
    /// [`Inbox`](crate::Inbox) holds for its life.
    pub(crate) fn watch(self) -> Arc<InboxFile> {
        side_file::watch(self)
    }

    /// Puts slot `s` on disk (`msync`).
    pub(crate) fn sync_slot(&self, s: u64) -> Result<()> {
        let (off, len) = self.table().slot_range(s);
        self.sync_range(off, len)
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

    /// After a machine restart (the boot id differs), under the admission lock of a
    /// description of its own: the index is rebuilt from the slots, and slots whose key does
    /// not match its hash (a page that did not reach the disk whole) are emptied. HELD slots
    /// need nothing: no holder of an earlier boot is alive, so they are taken again.
    fn repair_if_restarted(&self) -> Result<()> {
        let Some(boot) = self.restarted(inbox::BOOT_ID)? else {
            return Ok(());
        };
        let fd = OwnFd::open(&self.file, &self.path).map_err(io_err(&self.path, "open"))?;
        let _lock = self.admission(&fd)?;
        let repaired = self.recover(inbox::BOOT_ID, boot, || {
            self.table()
                .repair(true)
                .map(drop)
                .map_err(|d| damaged(&self.path, d))
        })?;
        if repaired {
            // The repaired slots reach the disk before anyone builds on them.
            self.sync_all()?;
        }
        Ok(())
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
