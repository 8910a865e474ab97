//! A side file: a file of per-feature state next to a queue or topic (a work group's file, the
//! producer-id file, an inbox's file, a topic's transaction file), opened and mapped the one way
//! they all share: opened without following a link, checked against the opener's [`Trust`],
//! sized, its fixed header read and validated by the file's own decoder, its exact size checked,
//! mapped [`Protected`], and watched for removal; plus the boot-id-keyed recovery after a
//! machine restart and `msync`. Each file keeps its own typed faults: the caller supplies them.

use std::fs::File;
use std::ops::{Deref, RangeInclusive};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mapping::file::io_err;
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::{open_shared, Trust};
use crate::mapping::watch::{self, Identity, Watched};
use crate::protocol::sync::{Ordering, Region};

/// The names of a side file's open and header-read steps, in its I/O errors.
pub(crate) struct Ops {
    /// The open step (`"open work file"`).
    pub(crate) open: &'static str,
    /// The header read (`"read work header"`).
    pub(crate) read_header: &'static str,
}

/// An open, mapped side file.
pub(crate) struct SideFile {
    // Field order: the region points into `map`, dropped after it.
    region: Region,
    /// The open file.
    pub(crate) file: File,
    /// Where it was opened.
    pub(crate) path: PathBuf,
    /// What the file was at open, for the watcher's checks (removed, replaced, shrunk).
    identity: Identity,
    map: Protected,
    /// The mapping's length (the file's exact size).
    len: u64,
}

impl SideFile {
    /// Opens and validates the side file at `path`, which `trust` must accept; `Ok(None)` if it
    /// does not exist. In order: a size outside `sizes` is `size_fault(len, nearest bound)`;
    /// the `H`-byte header is read and `decode`d into the file's configuration and the exact
    /// size it implies (its faults are the file's own); a size other than that is
    /// `size_fault(len, exact)`. Then the file is mapped whole.
    pub(crate) fn open<C, const H: usize>(
        path: &Path,
        trust: &Trust,
        ops: &Ops,
        sizes: RangeInclusive<u64>,
        size_fault: impl Fn(u64, u64) -> Error,
        decode: impl FnOnce(&[u8; H]) -> Result<(C, u64)>,
    ) -> Result<Option<(SideFile, C)>> {
        let file = match open_shared(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(path, ops.open)(e)),
        };
        let meta = file.metadata().map_err(io_err(path, "stat"))?;
        trust.check(path, &meta)?;
        let len = meta.len();
        if len < *sizes.start() {
            return Err(size_fault(len, *sizes.start()));
        }
        if len > *sizes.end() {
            return Err(size_fault(len, *sizes.end()));
        }
        let mut head = [0u8; H];
        file.read_exact_at(&mut head, 0)
            .map_err(io_err(path, ops.read_header))?;
        let (config, expected) = decode(&head)?;
        if len != expected {
            return Err(size_fault(len, expected));
        }
        let size = usize::try_from(expected).map_err(|_| size_fault(len, expected))?;
        let map = Protected::map(&file, size).map_err(io_err(path, "mmap"))?;
        // SAFETY: the mapping is page-aligned, exactly `size` bytes, readable and writable,
        // and lives in `map` for as long as the region (same struct, dropped later).
        let region = unsafe { Region::new(map.as_mut_ptr(), size) };
        let identity = Identity::new(&file, path, expected).map_err(io_err(path, "fstat"))?;
        let side = SideFile {
            region,
            file,
            path: path.to_path_buf(),
            identity,
            map,
            len: expected,
        };
        Ok(Some((side, config)))
    }

    /// The file's shared words.
    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// `Err` once the file shrank under this process's mapping (`Truncated`, from the `SIGBUS`
    /// handler or the watcher), or its path was removed or names another file (`Detached`,
    /// from the watcher: only a watched file, see [`watch`]).
    #[inline]
    pub(crate) fn check_damage(&self) -> Result<()> {
        self.map.check(&self.path)
    }

    /// `outcome` of a call that used the file, checked after it as
    /// [`check_damage`](Self::check_damage) says ([`Protected::checked_after`]).
    #[inline(always)]
    pub(crate) fn checked_after<T>(&self, outcome: Result<T>) -> Result<T> {
        self.map.checked_after(&self.path, outcome)
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
        self.sync_range(0, self.len)
    }

    fn boot_id(&self, at: u64) -> [u8; 16] {
        // Acquire: pairs with the Release store that ends recovery (`recover`), so an opener
        // that takes the fast path (no lock) sees the recovered state.
        self.region.u128(at).load(Ordering::Acquire).to_le_bytes()
    }

    /// This machine's boot id if the file's (at byte `at`) differs from it: the machine
    /// restarted since the file was last recovered, and the caller takes its recovery lock
    /// and calls [`recover`](Self::recover). `None`: nothing to do.
    pub(crate) fn restarted(&self, at: u64) -> Result<Option<[u8; 16]>> {
        let boot = crate::runtime::boot::boot_id().map_err(io_err(&self.path, "read boot id"))?;
        Ok((self.boot_id(at) != boot).then_some(boot))
    }

    /// Under the caller's recovery lock: unless another opener recovered the file meanwhile,
    /// runs `repair` and stores `boot` (from [`restarted`](Self::restarted)) at byte `at`.
    /// `Ok(true)` if it did (the caller puts what must reach the disk there before anyone
    /// builds on it).
    pub(crate) fn recover(
        &self,
        at: u64,
        boot: [u8; 16],
        repair: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        if self.boot_id(at) == boot {
            return Ok(false);
        }
        repair()?;
        // Release: publishes the recovered state to openers that load the boot id.
        self.region
            .u128(at)
            .store(u128::from_le_bytes(boot), Ordering::Release);
        Ok(true)
    }
}

/// A holder of a side file (through `Deref`, as every side file's type is) can be watched.
impl<T: Deref<Target = SideFile> + Send + Sync> Watched for T {
    fn check_now(&self) {
        watch::check(&self.file, &self.identity, &self.map);
    }
}

/// Shares `holder`'s side file with the process's watcher, which checks it every
/// [`watch::INTERVAL`] for as long as the returned `Arc` lives.
pub(crate) fn watch<T: Deref<Target = SideFile> + Send + Sync + 'static>(holder: T) -> Arc<T> {
    let held = Arc::new(holder);
    let weak: std::sync::Weak<dyn Watched> = Arc::downgrade(&held) as _;
    watch::add(weak);
    held
}

impl Drop for SideFile {
    fn drop(&mut self) {
        // Stops the watcher if this was the last file it watched (a no-op for a file it did
        // not watch while others remain).
        watch::released();
    }
}
