//! The thread-local last-error message and the panic boundary every exported function runs in.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::status::shmq_status;

thread_local! {
    // Const-initialised: the first use on a thread allocates nothing either.
    static LAST_ERROR: RefCell<Message> = const { RefCell::new(Message::Fixed(c"")) };
}

/// A last-error message: a fixed text (stored without allocating, so an expected outcome such
/// as an empty poll costs no heap work) or one made for this failure.
#[derive(Debug)]
pub enum Message {
    /// A static text.
    Fixed(&'static CStr),
    /// A text made for this failure.
    Owned(CString),
}

impl Message {
    fn as_ptr(&self) -> *const c_char {
        match self {
            Message::Fixed(s) => s.as_ptr(),
            Message::Owned(s) => s.as_ptr(),
        }
    }
}

/// Why a call failed: the status to return and the message for [`shmq_last_error`].
#[derive(Debug)]
pub struct Failure {
    /// The status returned to C.
    pub status: shmq_status,
    /// The message stored for `shmq_last_error`.
    pub message: Message,
}

impl Failure {
    /// A failure with the given status and message (a NUL byte in it is written `\0`).
    pub fn new(status: shmq_status, message: impl Into<String>) -> Failure {
        let text = message.into().replace('\0', "\\0");
        Failure {
            status,
            message: Message::Owned(CString::new(text).unwrap_or_default()),
        }
    }

    /// A failure with the given status and a fixed message: setting it allocates nothing.
    pub fn fixed(status: shmq_status, message: &'static CStr) -> Failure {
        Failure {
            status,
            message: Message::Fixed(message),
        }
    }

    /// An `SHMQ_EINVAL` failure.
    pub fn einval(message: impl Into<String>) -> Failure {
        Failure::new(shmq_status::SHMQ_EINVAL, message)
    }
}

impl From<shmq_core::Error> for Failure {
    fn from(e: shmq_core::Error) -> Failure {
        Failure::new(crate::status::status_of(&e), e.to_string())
    }
}

fn set_last_error(message: Message) {
    // `try_with`: during thread teardown the slot may be gone; the message is then dropped.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

/// Runs the body of an exported function: catches panics (`SHMQ_EINTERNAL`) and records the
/// last-error message of any failure. Public (hidden) only so the tests can reach the panic
/// path; it is not part of the C ABI.
#[doc(hidden)]
#[inline(always)]
pub fn guard(function: &str, body: impl FnOnce() -> Result<(), Failure>) -> shmq_status {
    // AssertUnwindSafe: after a panic the handle involved may be inconsistent; the documented
    // contract is that it is then only freed.
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return shmq_status::SHMQ_OK,
        Ok(Err(failure)) => failure,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            Failure::new(
                shmq_status::SHMQ_EINTERNAL,
                format!("{function}: internal error (panic): {what}"),
            )
        }
    };
    set_last_error(failure.message);
    failure.status
}

/// The message describing the last call on this thread that returned a status other than
/// `SHMQ_OK` (an empty string if there was none).
///
/// Thread-local: each thread sees only its own failures. The returned string is owned by the
/// library and stays valid until the next call on this thread that returns a non-OK status;
/// copy it to keep it. Never NULL. Safe to call from any thread at any time.
#[no_mangle]
pub extern "C" fn shmq_last_error() -> *const c_char {
    catch_unwind(|| {
        LAST_ERROR
            .try_with(|slot| slot.try_borrow().map(|s| s.as_ptr()).ok())
            .ok()
            .flatten()
    })
    .ok()
    .flatten()
    .unwrap_or(c"".as_ptr())
}
