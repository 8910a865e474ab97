//! Helpers shared by the C ABI tests.

use std::ffi::{CStr, CString};
use std::path::Path;

use shmq::shmq_last_error;

/// `p` as a C string.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

/// This thread's last error message, copied.
pub fn last_error() -> String {
    // SAFETY: shmq_last_error never returns NULL and the string lives until the next failure
    // on this thread; it is copied at once.
    unsafe { CStr::from_ptr(shmq_last_error()) }
        .to_string_lossy()
        .into_owned()
}
