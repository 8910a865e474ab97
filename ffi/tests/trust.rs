//! `shmq_open_trusting` and `shmq_topic_open_trusting` through the C ABI: a file another user
//! owns, or that its group may write, is `SHMQ_EUNTRUSTED` for `shmq_open` (out-parameter
//! untouched, the last error naming owner and mode) and opens once its owner or group is
//! trusted. Needs root (to chown a file to uid 65534): fails, never skips, without it.

mod common;

use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::ptr::null_mut;

use shmq::*;
use shmq_status::*;

use common::{cpath, last_error};

/// Another user (`nobody` on Debian; only the id is used).
const OTHER: u32 = 65534;

fn options(mode: u32) -> shmq_options {
    let mut o = std::mem::MaybeUninit::<shmq_options>::uninit();
    // SAFETY: `o` is writable; on SHMQ_OK it is fully initialised.
    assert_eq!(unsafe { shmq_options_default(o.as_mut_ptr()) }, SHMQ_OK);
    // SAFETY: initialised above.
    let mut o = unsafe { o.assume_init() };
    o.capacity_bytes = 1 << 16;
    o.max_message_bytes = 1024;
    o.mode = mode;
    o
}

/// `shmq_open_trusting(path, owner, group)`: the handle, or the status with `out` untouched.
fn open_queue(path: &Path, owner: u32, group: u32) -> Result<(), shmq_status> {
    let mut q = null_mut();
    // SAFETY: valid C string, writable out.
    match unsafe { shmq_open_trusting(cpath(path).as_ptr(), owner, group, &mut q) } {
        SHMQ_OK => {
            // SAFETY: a live handle, freed once.
            unsafe { shmq_close(q) };
            Ok(())
        }
        st => {
            assert!(q.is_null(), "out written on failure");
            Err(st)
        }
    }
}

/// `shmq_topic_open_trusting(path, owner, group)`, like [`open_queue`].
fn open_topic(path: &Path, owner: u32, group: u32) -> Result<(), shmq_status> {
    let mut t = null_mut();
    // SAFETY: valid C string, writable out.
    match unsafe { shmq_topic_open_trusting(cpath(path).as_ptr(), owner, group, &mut t) } {
        SHMQ_OK => {
            // SAFETY: a live handle, freed once.
            unsafe { shmq_topic_close(t) };
            Ok(())
        }
        st => {
            assert!(t.is_null(), "out written on failure");
            Err(st)
        }
    }
}

#[test]
fn untrusted_files_are_refused_until_their_owner_or_group_is_trusted() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "ffi/tests/trust.rs needs root to chown a file to another user"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let mut q = null_mut();
    // SAFETY: valid C string, initialised options, writable out.
    let st = unsafe { shmq_create(cpath(&path).as_ptr(), &options(0o660), &mut q) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    // SAFETY: a live handle, freed once.
    unsafe { shmq_close(q) };
    let gid = std::fs::metadata(&path).unwrap().gid();

    let mut q = null_mut();
    // SAFETY: valid C string, writable out.
    let st = unsafe { shmq_open(cpath(&path).as_ptr(), &mut q) };
    assert_eq!(st, SHMQ_EUNTRUSTED);
    assert!(q.is_null(), "out written on failure");
    let e = last_error();
    assert!(
        e.contains("mode 0660") && e.contains("its group may write it"),
        "{e}"
    );
    assert_eq!(open_queue(&path, SHMQ_TRUST_NONE, gid), Ok(()));
    assert_eq!(open_queue(&path, 0, SHMQ_TRUST_NONE), Err(SHMQ_EUNTRUSTED));

    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o600)).unwrap();
    chown(&path, Some(OTHER), None).unwrap();
    assert_eq!(
        open_queue(&path, SHMQ_TRUST_NONE, SHMQ_TRUST_NONE),
        Err(SHMQ_EUNTRUSTED)
    );
    assert!(last_error().contains("belongs to another user"));
    assert_eq!(open_queue(&path, OTHER, SHMQ_TRUST_NONE), Ok(()));

    // Every user may write it: refused whatever is trusted.
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o606)).unwrap();
    assert_eq!(open_queue(&path, OTHER, gid), Err(SHMQ_EUNTRUSTED));
    let mut q = null_mut();
    let other = dir.path().join("every-user");
    // SAFETY: valid C string, initialised options, writable out.
    let st = unsafe { shmq_create(cpath(&other).as_ptr(), &options(0o666), &mut q) };
    assert_eq!(st, SHMQ_EINVAL, "creating a file every user may write");

    let topic = dir.path().join("t");
    let mut t = null_mut();
    // SAFETY: valid C string, initialised options, writable out.
    let st = unsafe { shmq_topic_create(cpath(&topic).as_ptr(), 2, &options(0o660), &mut t) };
    assert_eq!(st, SHMQ_OK, "{}", last_error());
    // SAFETY: a live handle, freed once.
    unsafe { shmq_topic_close(t) };
    let mut t = null_mut();
    // SAFETY: valid C string, writable out.
    let st = unsafe { shmq_topic_open(cpath(&topic).as_ptr(), &mut t) };
    assert_eq!(st, SHMQ_EUNTRUSTED);
    assert!(t.is_null(), "out written on failure");
    assert_eq!(open_topic(&topic, SHMQ_TRUST_NONE, gid), Ok(()));

    // SAFETY: shmq_status_name returns a static NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr(shmq_status_name(SHMQ_EUNTRUSTED as i32)) };
    assert_eq!(name.to_str().unwrap(), "SHMQ_EUNTRUSTED");
}
