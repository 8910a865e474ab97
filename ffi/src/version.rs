//! `shmq_version` and `shmq_format_version`: which library a program runs against, and which
//! queue files it reads.

use std::ffi::c_char;

/// The library version, NUL-terminated: the package version of the Rust crates.
static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The version of the shmq library, as a static NUL-terminated string such as "0.1.0" (never
/// NULL; do not free it). Safe from any thread.
#[no_mangle]
pub extern "C" fn shmq_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// The queue file format version this library reads and writes (`FORMAT.md`); a file of
/// another version fails to open with `SHMQ_EVERSION`. Safe from any thread.
#[no_mangle]
pub extern "C" fn shmq_format_version() -> u32 {
    shmq_core::FORMAT_VERSION
}
