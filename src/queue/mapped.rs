//! [`MappedQueue`]: one open queue file, mapped, as every handle of this process sees it: the
//! ring over the mapping, the file's geometry and offsets, its descriptors, and the guards
//! that turn a truncated, removed or replaced file into an error.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Corruption, Error, Result, TxnFault};
use crate::mapping::file;
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::Trust;
use crate::mapping::watch::{self, Identity, Watched};
use crate::protocol::durable_state::DurableState;
use crate::protocol::groups::GroupTable;
use crate::protocol::layout::{Geometry, Offsets};
use crate::protocol::producers::ProducerTable;
use crate::protocol::ring::{Ring, RingLayout};
use crate::protocol::sync::{AtomicU128, Region};
use crate::protocol::txn;
use crate::queue::txn::{TxnFile, FILE_NAME};

/// Everything a handle shares with the other handles of the same open file.
pub(crate) struct MappedQueue {
    // Field order matters: the ring's region points into `map`, which is dropped after it.
    pub ring: Ring,
    pub geometry: Geometry,
    pub offsets: Offsets,
    pub path: PathBuf,
    pub file: File,
    /// The file description flushes `fdatasync` through, and no other call uses (see
    /// `file::map`).
    pub flush_file: File,
    /// The claim a flush leader of this process found stuck at the prefix's end (its offset
    /// plus one; 0: none) and since when, in `CLOCK_MONOTONIC` nanoseconds (see
    /// `committed_prefix`). An atomic, not a mutex: a child forked while a leader thread held a
    /// mutex would find it locked for ever.
    pub flush_stall: AtomicU128,
    /// Whom the opener trusts, for the files found next to this one (`txn.rs`).
    pub trust: Trust,
    /// The topic's transaction file next to this partition file, opened by the first reader
    /// that meets a prepared record stalled past the claim timeout (`txn.rs`).
    pub txns: OnceLock<TxnFile>,
    /// What the file was at open, for the watcher (`watch.rs`).
    identity: Identity,
    map: Protected,
}

impl MappedQueue {
    /// The queue file's permission bits, which the files created beside it take.
    pub(crate) fn mode(&self) -> Result<u32> {
        use std::os::unix::fs::MetadataExt;
        let meta = self
            .file
            .metadata()
            .map_err(file::io_err(&self.path, "stat"))?;
        Ok(meta.mode() & 0o777)
    }

    pub(crate) fn new(m: file::Mapped) -> Self {
        let layout = RingLayout {
            capacity: m.geometry.capacity,
            max_message: m.geometry.max_message,
            index: m.offsets.index,
            index_entries: m.offsets.index_entries,
            data: m.offsets.ring,
        };
        // SAFETY: the mapping is page-aligned, exactly `file_size` bytes long, readable and
        // writable, and lives in `map` for as long as the `Ring` (same struct, dropped later).
        let region = unsafe { Region::new(m.map.as_mut_ptr(), m.offsets.file_size as usize) };
        MappedQueue {
            ring: Ring::new(region, layout),
            geometry: m.geometry,
            offsets: m.offsets,
            path: m.path,
            file: m.file,
            flush_file: m.flush_file,
            flush_stall: AtomicU128::new(0),
            trust: m.trust,
            txns: OnceLock::new(),
            identity: m.identity,
            map: m.map,
        }
    }

    /// Shares `self` with its handles and the watcher.
    pub(crate) fn share(self) -> Arc<MappedQueue> {
        let shared = Arc::new(self);
        let weak: std::sync::Weak<dyn Watched> = Arc::downgrade(&shared) as _;
        watch::add(weak);
        shared
    }

    /// `Err` if the file was truncated, removed or replaced under this process (what the
    /// `SIGBUS` handler or the watcher found): calls that may write check this first, and
    /// calls that read the mapping check it before they return what they read. One atomic
    /// load.
    #[inline]
    pub(crate) fn check_damage(&self) -> Result<()> {
        self.map.check(&self.path)
    }

    /// `outcome` of a call that used the mapping, checked after it as
    /// [`check_damage`](Self::check_damage) says ([`Protected::checked_after`]).
    #[inline(always)]
    pub(crate) fn checked_after<T>(&self, outcome: Result<T>) -> Result<T> {
        self.map.checked_after(&self.path, outcome)
    }

    /// [`check_damage`](Self::check_damage) after checking the file now (`fstat`, `lstat`):
    /// for error paths, where what looks like corruption may be a file truncated within a
    /// page (which reads zeros past its new end without a fault) a moment ago.
    #[cold]
    pub(crate) fn recheck(&self) -> Result<()> {
        self.check_now();
        self.check_damage()
    }

    /// The consumer-group table of the file.
    pub(crate) fn groups(&self) -> GroupTable<'_> {
        GroupTable::new(
            &self.ring.region,
            self.offsets.groups,
            self.geometry.group_slots,
        )
    }

    /// The producer table of the file.
    pub(crate) fn producers(&self) -> ProducerTable<'_> {
        ProducerTable::new(
            &self.ring.region,
            self.offsets.producers,
            self.geometry.producer_slots,
        )
    }

    /// The durability words of the file's header page.
    pub(crate) fn durable_state(&self) -> DurableState<'_> {
        DurableState::new(&self.ring.region)
    }

    /// An I/O error on this queue's file.
    pub(crate) fn io(&self, op: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Maps every page of the file into this process's page tables, writable
    /// (`MADV_POPULATE_WRITE`), so that no later access faults on first touch
    /// ([`Queue::prefault`](crate::Queue::prefault)).
    pub(crate) fn prefault(&self) -> Result<()> {
        self.check_damage()?;
        let op = "prefault the mapping (madvise MADV_POPULATE_WRITE)";
        let populated = crate::fault::check("prefault")
            .and_then(|()| self.map.raw().advise(memmap2::Advice::PopulateWrite))
            .map_err(|source| self.io(op, source));
        if populated.is_err() {
            // EFAULT can be a page past the file's end, which the file check names as a
            // truncation; any other cause is reported as the kernel gave it.
            self.recheck()?;
        }
        populated
    }

    /// Writes the pages holding `len` bytes at `off` to disk and waits (`msync(MS_SYNC)`).
    pub(crate) fn sync_range(&self, off: u64, len: u64) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            op: "msync",
            source,
        };
        crate::fault::check("msync").map_err(io)?;
        self.map
            .raw()
            .flush_range(off as usize, len as usize)
            .map_err(io)
    }
}

/// Prepared records of topic transactions (`txn.rs`).
impl MappedQueue {
    /// Gives up the record at `offset` (claim at `pos`, tag `seen`) that a reader waited on for
    /// the claim timeout: a plain claim is aborted; a prepared record is committed or aborted
    /// as its transaction decides (aborting the transaction if it never reached its commit
    /// point). Nothing happens if the tag changed meanwhile (the caller reads it again).
    /// `Ok(false)`: the ring lapped the record (a reader that may be overrun), nothing done.
    ///
    /// Errors: the transaction file cannot be opened or is damaged. The record is then left
    /// as it is (its transaction may have committed): the reader reports the error and tries
    /// again at its next call.
    pub(crate) fn give_up_stalled(&self, offset: u64, pos: u64, seen: u64) -> Result<bool> {
        txn::give_up_stalled(&self.ring, offset, pos, seen, |slot, epoch| {
            Ok(self.transactions()?.outcome(slot, epoch))
        })
    }

    /// The transaction file next to this partition file, opened at the first call.
    fn transactions(&self) -> Result<&TxnFile> {
        if let Some(t) = self.txns.get() {
            t.check_damage()?;
            return Ok(t);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let path = dir.join(FILE_NAME);
        let opened = TxnFile::open(&path, &self.trust).map_err(|e| match e {
            Error::NotFound { .. } => Error::Corrupt {
                path,
                kind: Corruption::Txn(TxnFault::Missing),
            },
            e => e,
        })?;
        // A racing thread's file is as good as ours.
        Ok(self.txns.get_or_init(|| opened))
    }
}

impl Drop for MappedQueue {
    fn drop(&mut self) {
        watch::released();
    }
}

impl Watched for MappedQueue {
    fn check_now(&self) {
        watch::check(&self.file, &self.identity, &self.map);
    }
}
