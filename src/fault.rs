//! Injected I/O failures for the tests.
//!
//! With the `fault-injection` feature, `SHMQ_FAIL=<op>[,<op>…]` makes the named I/O calls fail
//! (`allocate` with `ENOSPC`, every other with `EIO`) before they reach the kernel, so each error
//! path can be driven deterministically. The variable is read at every call, so a test can turn
//! failures on and off. Without the feature every check compiles to `Ok(())`.
//!
//! An injected failure leaves the kernel's state as it was: the dirty pages stay dirty and the
//! next call writes them. A real writeback failure does not (the pages are marked clean and
//! the error is reported once). `tests/durability.rs` makes real writes fail on a loop device
//! for that (`tests/failing_disk`).
//!
//! `SHMQ_SYNC_IMAGES=<dir>` makes every successful flush `fdatasync` leave in `<dir>` a copy of
//! the file as the call found it: what the disk holds at least, once the call returned. The
//! power-loss tests build their disk images on it, so they need not guess which state each
//! flush wrote.

/// Every operation that can be failed, for tests to iterate over.
pub const OPS: &[&str] = &["allocate", "fdatasync", "msync", "prefault"];

/// Fails with an injected error if `SHMQ_FAIL` names `op` (test builds only).
#[cfg(feature = "fault-injection")]
pub(crate) fn check(op: &'static str) -> std::io::Result<()> {
    let Ok(list) = std::env::var("SHMQ_FAIL") else {
        return Ok(());
    };
    if !list.split(',').any(|o| o == op) {
        return Ok(());
    }
    let errno = if op == "allocate" {
        libc::ENOSPC
    } else {
        libc::EIO
    };
    Err(std::io::Error::from_raw_os_error(errno))
}

/// Runs `sync`, a flush's `fdatasync` of `file`, unless `SHMQ_FAIL` names `fdatasync`. With
/// `SHMQ_SYNC_IMAGES=<dir>`, a call that succeeded leaves a copy of the file as it found it in
/// `<dir>`, named by a number that grows with each call of this process (zero-padded, so the
/// names sort in call order).
#[cfg(feature = "fault-injection")]
pub(crate) fn flush_sync(
    file: &std::fs::File,
    sync: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SYNCS: AtomicU64 = AtomicU64::new(0);
    check("fdatasync")?;
    let Some(dir) = std::env::var_os("SHMQ_SYNC_IMAGES") else {
        return sync();
    };
    // Read through the page cache, which the mapping shares: the state the call writes out.
    let mut image = vec![0; file.metadata()?.len() as usize];
    file.read_exact_at(&mut image, 0)?;
    sync()?;
    // Relaxed: only numbers the copies; the tests that read them flush from one thread.
    let n = SYNCS.fetch_add(1, Ordering::Relaxed) + 1;
    std::fs::write(std::path::Path::new(&dir).join(format!("{n:08}")), image)
}

/// Runs `sync`, a flush's `fdatasync` (test hooks compiled out).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn flush_sync(
    _file: &std::fs::File,
    sync: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    sync()
}

/// Fails with an injected error if `SHMQ_FAIL` names `op` (test builds only).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn check(_op: &'static str) -> std::io::Result<()> {
    Ok(())
}
