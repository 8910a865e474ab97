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

/// Every operation that can be failed, for tests to iterate over.
pub const OPS: &[&str] = &["allocate", "fdatasync", "msync"];

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

/// Fails with an injected error if `SHMQ_FAIL` names `op` (test builds only).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn check(_op: &'static str) -> std::io::Result<()> {
    Ok(())
}
