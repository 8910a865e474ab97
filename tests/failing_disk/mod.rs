//! A disk that fails on demand: an ext4 file system on a loop device backed by a memfd. The
//! kernel (block layer, ext4, page cache, writeback) is real; only the medium is memory.
//!
//! [`FailingDisk::fail`] seals the memfd against writes (`F_SEAL_WRITE`). From then on every
//! write the loop driver makes is refused, which the block layer reports as an I/O error ("I/O
//! error, dev loopN … op WRITE" in the kernel log), and reads still work: a device that has
//! stopped accepting writes. A failed writeback is then handled as on any device: ext4 logs it,
//! the page is marked clean, and the error is reported once to each open file description's
//! next `fsync`, `fdatasync` or `msync`.
//!
//! A seal cannot be removed. [`FailingDisk::replace`] puts what the failed device holds on a
//! new, working one (as an operator copies a failing disk) and mounts that: the page cache is
//! gone, so every read shows what reached the device, as after a machine restart.
//!
//! mkfs writes everything it sets up (no discard, no lazy initialisation of the inode tables or
//! the journal), so that ext4 has no background metadata writes to make later. The file system
//! is mounted with `commit=600`, so that no periodic journal commit falls inside a test: a
//! journal write on the failed device aborts the journal, and ext4 then fails every later call,
//! which would hide which call reports the lost data pages. A flush whose data writes failed
//! has no metadata of its own to commit.
//!
//! Needs root (a loop device, mounts) and `mkfs.ext4` (Debian package e2fsprogs). Without them
//! the test fails with a message saying what is missing; it skips only a missing `mkfs.ext4`,
//! and only when `SHMQ_ALLOW_SKIP` names it (`common::tools`).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of the device.
const DEVICE_BYTES: u64 = 64 << 20;
/// `ioctl` requests of the loop driver (`linux/loop.h`).
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

/// A mounted ext4 file system on a loop device whose writes can be made to fail; unmounted and
/// detached when dropped.
pub struct FailingDisk {
    mnt: tempfile::TempDir,
    medium: File,
    device: Option<LoopDevice>,
    mounted: bool,
}

impl FailingDisk {
    /// Builds and mounts the file system; panics if this machine cannot, or returns `None`
    /// (the test skipped) if `mkfs.ext4` is missing and `SHMQ_ALLOW_SKIP` names it.
    pub fn new() -> Option<FailingDisk> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the failing-disk tests need root (a loop device and a mount)"
        );
        let mkfs = find("mkfs.ext4");
        let found = crate::common::tools::require(
            "mkfs.ext4",
            mkfs.is_some(),
            "the failing-disk tests",
            "apt-get install e2fsprogs",
        );
        let mkfs = mkfs.filter(|_| found)?;
        let medium = memfd();
        medium.set_len(DEVICE_BYTES).unwrap();
        let device = LoopDevice::attach(&medium);
        let out = Command::new(&mkfs)
            .args(["-q", "-F", "-b", "4096"])
            .args(["-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&device.path)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", mkfs.display()));
        assert!(
            out.status.success(),
            "mkfs.ext4 {} failed: {}",
            device.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut disk = FailingDisk {
            mnt: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
            medium,
            device: Some(device),
            mounted: false,
        };
        disk.mount();
        Some(disk)
    }

    /// The mounted file system's root directory.
    pub fn dir(&self) -> PathBuf {
        self.mnt.path().to_path_buf()
    }

    /// From now on every write to the device fails. Everything dirty in the file system is
    /// written back first, so only what is written from now on is lost.
    pub fn fail(&self) {
        let dir = File::open(self.dir()).unwrap();
        // SAFETY: syncfs on a descriptor we own.
        let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
        assert_eq!(rc, 0, "syncfs: {}", std::io::Error::last_os_error());
        // SAFETY: fcntl(F_ADD_SEALS) on a memfd we own; it takes an integer argument.
        let rc = unsafe {
            libc::fcntl(
                self.medium.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_WRITE,
            )
        };
        assert_eq!(rc, 0, "seal: {}", std::io::Error::last_os_error());
    }

    /// Writes the dirty pages of the file at `path` back through a file description of its
    /// own (`fdatasync`), as the kernel's periodic writeback or another program would. Its
    /// report of a failure is its own: each other description of the file still gets one.
    pub fn write_back(&self, path: &Path) -> std::io::Result<()> {
        File::open(path)?.sync_data()
    }

    /// Unmounts the file system (no file on it may be open), copies what the device holds to a
    /// new, working device and mounts that. Nothing that failed to reach the old device is on
    /// the new one, and no page cache remains: what a machine restart would find.
    pub fn replace(&mut self) {
        self.unmount();
        drop(self.device.take());
        let copy = memfd();
        copy.set_len(DEVICE_BYTES).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < DEVICE_BYTES {
            let n = self.medium.read_at(&mut buf, at).unwrap();
            assert!(n > 0, "short read of the device at {at}");
            // Skipping zero chunks keeps the copy sparse.
            if buf[..n].iter().any(|&b| b != 0) {
                copy.write_all_at(&buf[..n], at).unwrap();
            }
            at += n as u64;
        }
        self.medium = copy;
        self.device = Some(LoopDevice::attach(&self.medium));
        self.mount();
    }

    fn mount(&mut self) {
        let device = self.device.as_ref().expect("a loop device");
        let src = cstring(&device.path);
        let target = cstring(self.mnt.path());
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call and no data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                c"ext4".as_ptr(),
                0,
                c"commit=600".as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mount {} on {}: {}",
            device.path.display(),
            self.mnt.path().display(),
            std::io::Error::last_os_error()
        );
        self.mounted = true;
    }

    fn unmount(&mut self) {
        let target = cstring(self.mnt.path());
        // SAFETY: umount2 with a NUL-terminated path that outlives the call.
        let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
        assert_eq!(rc, 0, "umount: {}", std::io::Error::last_os_error());
        self.mounted = false;
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        if self.mounted {
            // A test that panicked may still hold files open: detach the mount lazily rather
            // than fail. Never panic here.
            let target = cstring(self.mnt.path());
            // SAFETY: umount2 with a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// A loop device bound to a file; detached when dropped.
struct LoopDevice {
    path: PathBuf,
    file: File,
}

impl LoopDevice {
    fn attach(medium: &File) -> LoopDevice {
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .unwrap_or_else(|e| panic!("/dev/loop-control: {e} (no loop device support?)"));
        // Another process may take the free device between the two calls: try again then.
        for _ in 0..20 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            assert!(
                n >= 0,
                "LOOP_CTL_GET_FREE: {}",
                std::io::Error::last_os_error()
            );
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // SAFETY: LOOP_SET_FD takes the backing file's descriptor, open for as long as the
            // call runs (the driver takes its own reference).
            let rc = unsafe {
                libc::ioctl(
                    file.as_raw_fd(),
                    LOOP_SET_FD,
                    medium.as_raw_fd() as libc::c_ulong,
                )
            };
            if rc == 0 {
                return LoopDevice { path, file };
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "LOOP_SET_FD: {e}");
        }
        panic!("no free loop device");
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // SAFETY: LOOP_CLR_FD takes no argument. Failure leaves a device behind; nothing more
        // can be done here.
        unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD) };
    }
}

/// A new, empty memfd that can be sealed.
fn memfd() -> File {
    // SAFETY: memfd_create with a NUL-terminated name; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"shmq-failing-disk".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    unsafe { File::from_raw_fd(fd) }
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The path of `program` in `$PATH` or the sbin directories, if it is there.
fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
