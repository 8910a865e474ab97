//! A topic's transaction file (`<topic>/transactions`, FORMAT.md "Transaction file"): creation
//! and validating open. Its holders are `topic/transaction.rs`'s; a reader that meets a
//! prepared record stalled past the claim timeout opens its partition's through
//! `MappedQueue::give_up_stalled`: `transactions` in the same directory as the partition file,
//! since any reader of a partition (a topic member, a `Queue` opened on the partition file, a
//! tail reader, the flusher) may meet one.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, Error, Result, TxnFault};
use crate::mapping::file::{create_allocated, io_err, rename_noreplace};
use crate::mapping::lease::OwnFd;
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::{open_shared, Trust};
use crate::protocol::sync::{Ordering, Region};
use crate::protocol::txn::{
    self, check_header, encode_header, HeaderFault, TxnTable, FILE_SIZE, HEADER_LEN,
};

/// The transaction file's name inside a topic directory.
pub(crate) const FILE_NAME: &str = "transactions";

/// An open, mapped transaction file.
pub(crate) struct TxnFile {
    // Field order: the region points into `map`, dropped after it.
    region: Region,
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    map: Protected,
}

fn corrupt(path: &Path, why: TxnFault) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        kind: Corruption::Txn(why),
    }
}

impl TxnFile {
    /// Opens the transaction file of topic directory `dir`, creating it first if it does not
    /// exist (a temporary file, its header written and `fsync`ed, renamed into place; a
    /// concurrent creator's file wins and is opened). `mode` is the new file's mode.
    pub(crate) fn open_or_create(dir: &Path, mode: u32, trust: &Trust) -> Result<TxnFile> {
        let path = dir.join(FILE_NAME);
        match Self::open(&path, trust) {
            Err(Error::NotFound { .. }) => {}
            Ok(txns) => {
                txns.recover_if_restarted()?;
                return Ok(txns);
            }
            Err(e) => return Err(e),
        }
        let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
        let written = (|| {
            let file = create_allocated(&tmp, mode, FILE_SIZE)?;
            file.write_all_at(&encode_header(), 0)
                .map_err(io_err(&tmp, "write transaction header"))?;
            file.sync_all().map_err(io_err(&tmp, "fsync"))?;
            rename_noreplace(&tmp, &path)
        })();
        let _ = std::fs::remove_file(&tmp);
        match written {
            // `Exists`: another process created it first; use theirs.
            Ok(()) | Err(Error::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
        let txns = Self::open(&path, trust)?;
        txns.recover_if_restarted()?;
        Ok(txns)
    }

    /// Recovery after a machine restart (the boot id differs), under an exclusive `flock` of
    /// the file, for a holder before it touches its slot: every slot's epoch is ended as it
    /// stood and settled ([`TxnTable::clear_after_restart`]): its participants' offsets and its
    /// input commit speak of the machine before the restart, whose recovered partitions hold
    /// none of its prepared records. A new file gets its first boot id here.
    fn recover_if_restarted(&self) -> Result<()> {
        let boot = crate::runtime::boot::boot_id().map_err(io_err(&self.path, "read boot id"))?;
        let boot = u128::from_le_bytes(boot);
        let table = self.table();
        // Acquire: pairs with the Release store that ends recovery, so a holder that takes the
        // fast path (no lock) sees the recovered slots.
        if table.boot_id().load(Ordering::Acquire) == boot {
            return Ok(());
        }
        let _lock =
            OwnFd::flock_exclusive(&self.file, &self.path).map_err(io_err(&self.path, "flock"))?;
        if table.boot_id().load(Ordering::Acquire) == boot {
            return Ok(());
        }
        for slot in 0..txn::SLOTS {
            table.clear_after_restart(slot);
        }
        // Release: publishes the recovered slots to holders that load the boot id.
        table.boot_id().store(boot, Ordering::Release);
        Ok(())
    }

    /// Opens and validates the transaction file at `path`, which `trust` must accept: size,
    /// magic, version, checksum, then the header's fields. [`Error::NotFound`] if it does
    /// not exist.
    pub(crate) fn open(path: &Path, trust: &Trust) -> Result<TxnFile> {
        let file = open_shared(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                path: path.to_path_buf(),
            },
            _ => io_err(path, "open transaction file")(e),
        })?;
        let meta = file.metadata().map_err(io_err(path, "stat"))?;
        trust.check(path, &meta)?;
        if meta.len() != FILE_SIZE {
            return Err(corrupt(
                path,
                TxnFault::Size {
                    len: meta.len(),
                    expected: FILE_SIZE,
                },
            ));
        }
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(path, "read transaction header"))?;
        check_header(&head).map_err(|f| {
            corrupt(
                path,
                match f {
                    HeaderFault::Magic => TxnFault::BadMagic,
                    HeaderFault::Version(found) => TxnFault::Version { found },
                    HeaderFault::Checksum => TxnFault::Checksum,
                    HeaderFault::Field(field, value) => TxnFault::Field { field, value },
                },
            )
        })?;
        let map = Protected::map(&file, FILE_SIZE as usize).map_err(io_err(path, "mmap"))?;
        // SAFETY: the mapping is page-aligned, exactly FILE_SIZE bytes, readable and writable,
        // and lives in `map` for as long as the region (same struct, dropped later).
        let region = unsafe { Region::new(map.as_mut_ptr(), FILE_SIZE as usize) };
        Ok(TxnFile {
            region,
            file,
            path: path.to_path_buf(),
            map,
        })
    }

    /// The file's slots.
    pub(crate) fn table(&self) -> TxnTable<'_> {
        TxnTable::new(&self.region)
    }

    /// `Err` once the file shrank under this process's mapping (`Truncated`, from the `SIGBUS`
    /// handler).
    pub(crate) fn check_damage(&self) -> Result<()> {
        match self.map.damage() {
            None => Ok(()),
            Some(damage) => Err(damage.error(self.path.clone())),
        }
    }

    /// The outcome of transaction `epoch` of `slot` for one of its prepared records
    /// ([`txn::decide`]).
    pub(crate) fn outcome(&self, slot: u32, epoch: u64) -> bool {
        txn::decide(self.table().state(slot), epoch)
    }
}
