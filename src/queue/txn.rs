//! A topic's transaction file (`<topic>/transactions`, FORMAT.md "Transaction file"): creation
//! and validating open. Its holders are `topic/transaction.rs`'s; a reader that meets a
//! prepared record stalled past the claim timeout opens its partition's through
//! `MappedQueue::give_up_stalled`: `transactions` in the same directory as the partition file,
//! since any reader of a partition (a topic member, a `Queue` opened on the partition file, a
//! tail reader, the flusher) may meet one.

use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Corruption, Error, Result, TxnFault};
use crate::mapping::file::{create_allocated, io_err, rename_noreplace};
use crate::mapping::lease::OwnFd;
use crate::mapping::side_file::{Ops, SideFile};
use crate::mapping::trust::Trust;
use crate::protocol::txn::{self, check_header, encode_header, TxnTable, FILE_SIZE, HEADER_LEN};

/// The transaction file's name inside a topic directory.
pub(crate) const FILE_NAME: &str = "transactions";

/// An open, mapped transaction file (its [`SideFile`] through `Deref`).
pub(crate) struct TxnFile {
    side: SideFile,
}

impl Deref for TxnFile {
    type Target = SideFile;
    fn deref(&self) -> &SideFile {
        &self.side
    }
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
        let Some(boot) = self.restarted(txn::BOOT_ID)? else {
            return Ok(());
        };
        let _lock =
            OwnFd::flock_exclusive(&self.file, &self.path).map_err(io_err(&self.path, "flock"))?;
        self.recover(txn::BOOT_ID, boot, || {
            let table = self.table();
            for slot in 0..txn::SLOTS {
                table.clear_after_restart(slot);
            }
            Ok(())
        })
        .map(drop)
    }

    /// Opens and validates the transaction file at `path`, which `trust` must accept: size,
    /// magic, version, checksum, then the header's fields. [`Error::NotFound`] if it does
    /// not exist.
    pub(crate) fn open(path: &Path, trust: &Trust) -> Result<TxnFile> {
        let ops = Ops {
            open: "open transaction file",
            read_header: "read transaction header",
        };
        let (side, ()) = SideFile::open(
            path,
            trust,
            &ops,
            FILE_SIZE..=FILE_SIZE,
            |len, expected| corrupt(path, TxnFault::Size { len, expected }),
            |head: &[u8; HEADER_LEN]| {
                check_header(head).map_err(|f| corrupt(path, f))?;
                Ok(((), FILE_SIZE))
            },
        )?
        .ok_or_else(|| Error::NotFound {
            path: path.to_path_buf(),
        })?;
        Ok(TxnFile { side })
    }

    /// The file's slots.
    pub(crate) fn table(&self) -> TxnTable<'_> {
        TxnTable::new(self.region())
    }

    /// The outcome of transaction `epoch` of `slot` for one of its prepared records
    /// ([`txn::decide`]).
    pub(crate) fn outcome(&self, slot: u32, epoch: u64) -> bool {
        txn::decide(self.table().state(slot), epoch)
    }
}
