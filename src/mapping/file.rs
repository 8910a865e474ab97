//! Creating and opening queue files: atomic creation (temp file, allocated blocks, header, then
//! a no-replace rename), validating open, and the shared mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, PathKind, Result};
use crate::mapping::sigbus::Protected;
use crate::mapping::trust::{open_shared, Trust};
use crate::mapping::watch::Identity;
use crate::protocol::layout::{Geometry, Offsets, BOOT_ID, IMMUTABLE_SIZE};

/// An open queue file and its shared mapping.
pub(crate) struct Mapped {
    pub path: PathBuf,
    pub file: File,
    /// A second open file description of the same file, for the flush's `fdatasync` only.
    pub flush_file: File,
    /// The shared mapping, protected from a `SIGBUS` if the file shrinks (`sigbus.rs`).
    pub map: Protected,
    /// What the file was at open, for the watcher to compare with (`watch.rs`).
    pub identity: Identity,
    pub geometry: Geometry,
    pub offsets: Offsets,
    /// Whom the opener trusts (the files found next to this one are checked alike).
    pub trust: Trust,
}

pub(crate) fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn check_platform() -> Result<()> {
    if !portable_atomic::AtomicU128::is_lock_free() {
        return Err(Error::Unsupported(
            "this CPU has no lock-free 128-bit compare-and-swap",
        ));
    }
    Ok(())
}

/// Creates a queue file at `path` with `geometry` and permission bits `mode`.
///
/// No opener ever sees a half-written file: everything is written to a temporary file in the
/// same directory, its blocks allocated (so a full disk fails here, never as SIGBUS later), then
/// renamed into place without replacing anything that exists.
pub(crate) fn create(path: &Path, geometry: &Geometry, mode: u32) -> Result<Mapped> {
    check_platform()?;
    geometry.check().map_err(Error::InvalidOptions)?;
    crate::mapping::trust::check_create_mode(mode)?;
    let name = path.file_name().ok_or_else(|| Error::NoFileName {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let nonce = crate::runtime::clock::now_ns() % 1_000_000_000;
    let tmp = dir.join(format!(
        ".{}.{}.{nonce}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_new(&tmp, geometry, mode).and_then(|file| {
        rename_noreplace(&tmp, path)?;
        // Make the new name durable too; failure here is not fatal to using the queue.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(file)
    });
    let file = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    map(path.to_path_buf(), file, geometry.clone(), Trust::default())
}

/// Creates the file `path`, which must not exist, with permission bits `mode` and `size` bytes
/// allocated (so a full disk fails here, never as SIGBUS in a writer of the mapping later).
pub(crate) fn create_allocated(path: &Path, mode: u32, size: u64) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(path, "create"))?;
    // The umask may have cleared bits the caller asked for.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(path, "chmod"))?;
    crate::fault::check("allocate").map_err(io_err(path, "allocate"))?;
    nix::fcntl::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t)
        .map_err(|e| io_err(path, "allocate")(io::Error::from(e)))?;
    Ok(file)
}

fn write_new(tmp: &Path, geometry: &Geometry, mode: u32) -> Result<File> {
    let file = create_allocated(tmp, mode, geometry.offsets().file_size)?;
    file.write_all_at(&geometry.encode(), 0)
        .map_err(io_err(tmp, "write header"))?;
    // The machine the file was made on: recovery runs when an opener's boot id differs.
    let boot = crate::runtime::boot::boot_id().map_err(io_err(tmp, "read boot id"))?;
    file.write_all_at(&boot, BOOT_ID)
        .map_err(io_err(tmp, "write header"))?;
    file.sync_all().map_err(io_err(tmp, "fsync"))?;
    Ok(file)
}

/// Renames `from` to `to` unless `to` exists ([`Error::Exists`] then): the last step of an
/// atomic creation.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    nix::fcntl::renameat2(
        None,
        from,
        None,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| match e {
        nix::errno::Errno::EEXIST => Error::Exists {
            path: to.to_path_buf(),
        },
        e => io_err(to, "rename into place")(io::Error::from(e)),
    })
}

/// The file name of a topic's descriptor inside the topic directory (FORMAT.md).
pub(crate) const TOPIC_DESCRIPTOR: &str = "descriptor";

/// Whether `path` is a topic directory (a directory holding a topic descriptor); nothing is
/// validated.
pub(crate) fn is_topic_dir(path: &Path) -> bool {
    path.is_dir() && path.join(TOPIC_DESCRIPTOR).is_file()
}

/// Opens and validates an existing queue file that `trust` accepts.
pub(crate) fn open(path: &Path, trust: &Trust) -> Result<Mapped> {
    check_platform()?;
    let file = open_shared(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_path_buf(),
        },
        _ if e.raw_os_error() == Some(libc::ELOOP) => Error::Symlink {
            path: path.to_path_buf(),
        },
        _ => io_err(path, "open")(e),
    })?;
    let meta = file.metadata().map_err(io_err(path, "stat"))?;
    if !meta.file_type().is_file() {
        let t = meta.file_type();
        return Err(Error::WrongKind {
            path: path.to_path_buf(),
            found: if t.is_fifo() {
                PathKind::Fifo
            } else if t.is_socket() {
                PathKind::Socket
            } else if t.is_dir() {
                PathKind::Directory
            } else {
                PathKind::Device
            },
            expected: PathKind::QueueFile,
        });
    }
    trust.check(path, &meta)?;
    let mut head = [0u8; IMMUTABLE_SIZE];
    let got = read_prefix(&file, &mut head).map_err(io_err(path, "read header"))?;
    let geometry = Geometry::decode(&head[..got], meta.len()).map_err(|kind| Error::Corrupt {
        path: path.to_path_buf(),
        kind,
    })?;
    map(path.to_path_buf(), file, geometry, *trust)
}

fn read_prefix(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn map(path: PathBuf, file: File, geometry: Geometry, trust: Trust) -> Result<Mapped> {
    let offsets = geometry.offsets();
    let map = Protected::map(&file, offsets.file_size as usize).map_err(io_err(&path, "mmap"))?;
    let identity = Identity::new(&file, &path, offsets.file_size).map_err(io_err(&path, "stat"))?;
    // The kernel reports a writeback error once to each open file description. An `msync` of
    // the mapping (a Sync commit) is reported errors through the mapping's description, so the
    // flushes use a description of their own, which no other call can consume an error from.
    // Reopened through /proc, which names this very file even if its path was replaced.
    let flush_file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(io_err(&path, "open for flushes"))?;
    Ok(Mapped {
        path,
        file,
        flush_file,
        map,
        identity,
        geometry,
        offsets,
        trust,
    })
}
