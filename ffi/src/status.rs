//! `shmq_status`: the result code of every call, and how `shmq::Error` maps onto it.

use std::ffi::{c_char, c_int};

use shmq_core::{Corruption, Error};

/// The result of a call. `SHMQ_OK` (0) is success, positive values are expected outcomes the
/// caller branches on, negative values are errors. Every non-OK status sets the thread's
/// last-error message (`shmq_last_error`).
///
/// How the Rust library's errors map:
///
/// | status           | `shmq::Error` variants                                              |
/// |------------------|---------------------------------------------------------------------|
/// | `SHMQ_TIMEOUT`   | `Timeout`, `Aborted` (the publish stalled past the claim timeout and did not happen: retry), `TransactionAborted`, a poll that found nothing |
/// | `SHMQ_FULL`      | `Full` (ring full under `SHMQ_FULL_REJECT`)                        |
/// | `SHMQ_LAGGED`    | `Lagged` (records were overwritten before being read; the consumer continues at the oldest retained record) |
/// | `SHMQ_EINVAL`    | `InvalidArgument`, `InvalidOptions`, `WrongGroupKind` (a plain consumer on a work group or the reverse), `OffsetOutOfRange`, `WrongKind` (a directory given to `shmq_open`, a file to `shmq_topic_open`), `Symlink`, `NoFileName`, `NoSuchPartition`, `KeyTooBig`, `SequenceOutsideWindow` (an idempotent retry older than its id's window), NULL or malformed arguments |
/// | `SHMQ_EIO`       | `Io`, `Poisoned` (an earlier flush failed: nothing was published) |
/// | `SHMQ_ECORRUPT`  | `Corrupt` (every kind but `Version`; for topics also a bad descriptor or membership file, or a missing partition file) |
/// | `SHMQ_EVERSION`  | `Corrupt` of kind `Version` (file written by another format version) |
/// | `SHMQ_ETOOBIG`   | `TooBig`, `BatchTooBig`                                             |
/// | `SHMQ_ENOENT`    | `NotFound` (no queue file), `TopicNotFound`, `UnknownGroup`, `UnknownProducerId`, `UnknownInbox` |
/// | `SHMQ_EEXIST`    | `Exists` (create never replaces a file)                             |
/// | `SHMQ_EBUSY`     | `GroupBusy`, `ProducerIdBusy`, `TooManyProducers`, `TooManyProducerIds`, `TooManyGroups`, `TooManyMembers`, `TransactionalIdBusy`, `TooManyTransactionalIds`, `InboxFull`, `KeyBusy` (try again once the holder or a slot is free) |
/// | `SHMQ_EINTERNAL` | a caught Rust panic (a bug), `Unsupported` (platform cannot run shmq), an error variant newer than this table |
/// | `SHMQ_EFORKED`   | `Forked` (a producer, consumer or member handle used in a child forked after it was made) |
/// | `SHMQ_EUNTRUSTED`| `Untrusted` (the file belongs to another user, or its group or others may write it) |
/// | `SHMQ_ESTALE`    | `Truncated` (the file shrank under this process), `Detached` (its path was removed or names another file now) |
/// | `SHMQ_ENOTDURABLE` | `NotDurable` (the record was published at `*offset_out` but is not known to be on disk) |
/// | `SHMQ_ETAKENOVER`| `TakenOver`, `NotHeld` (the group or partition is no longer this consumer's: stop reading it) |
/// | `SHMQ_ELEASE`    | `LeaseExpired` (a work group's delivery is no longer this worker's: nothing changed), `MarkLost` (an inbox key is no longer this mark's: nothing recorded) |
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum shmq_status {
    /// Success.
    SHMQ_OK = 0,
    /// Nothing happened within the timeout (poll found no message, publish found no room).
    SHMQ_TIMEOUT = 1,
    /// The ring is full and the queue's policy is `SHMQ_FULL_REJECT`.
    SHMQ_FULL = 2,
    /// The consumer was overrun and lost records; it continues at the oldest retained one.
    SHMQ_LAGGED = 3,
    /// A NULL or out-of-range argument.
    SHMQ_EINVAL = -1,
    /// An I/O call on the queue file failed.
    SHMQ_EIO = -2,
    /// The queue file is not a valid shmq queue.
    SHMQ_ECORRUPT = -3,
    /// The queue file has a format version this library does not read.
    SHMQ_EVERSION = -4,
    /// The payload is larger than the queue's maximum message size.
    SHMQ_ETOOBIG = -5,
    /// The queue file or consumer group does not exist.
    SHMQ_ENOENT = -6,
    /// The queue file already exists.
    SHMQ_EEXIST = -7,
    /// The consumer group is held by another live consumer, or all slots are taken: it may
    /// succeed later.
    SHMQ_EBUSY = -8,
    /// An internal error (a caught panic: a bug) or an unsupported platform.
    SHMQ_EINTERNAL = -9,
    /// The producer, consumer or member handle was made by the parent of this forked
    /// process: make a new one here (queue and topic handles work in the child).
    SHMQ_EFORKED = -10,
    /// The queue file, or the topic's directory or a file in it, belongs to a user or group
    /// the caller did not trust, or every user may write it: it was not opened (see
    /// `shmq_open_trusting`).
    SHMQ_EUNTRUSTED = -11,
    /// The queue file (or a topic's partition or membership file) was truncated, removed or
    /// replaced under this process: every later call on it fails with this. Close the handle
    /// and open the queue again once it exists again. Other queues are not affected.
    SHMQ_ESTALE = -12,
    /// The record was published (consumers see it) at the offset stored in `*offset_out`, but
    /// it is not known to be on disk: its flush failed (the file is then poisoned) or the wait
    /// for it ended first. Not "nothing was published": do not publish it again blindly.
    SHMQ_ENOTDURABLE = -13,
    /// Someone else took this consumer's group (or topic partition) or moved its committed
    /// offset: another member judged it dead, its session went stale, or an operator reset
    /// the group. Nothing was committed; stop reading the group (free the consumer).
    SHMQ_ETAKENOVER = -14,
    /// A work group's delivery is no longer this worker's: its visibility timeout passed (the
    /// record may be redelivered to another worker) or it was settled already. Nothing
    /// changed. Also an inbox mark whose key is no longer its own (nothing recorded).
    SHMQ_ELEASE = -15,
}

/// The status for a Rust library error (see the table on [`shmq_status`]).
pub(crate) fn status_of(e: &Error) -> shmq_status {
    use shmq_status::*;
    match e {
        Error::Io { .. } | Error::Poisoned { .. } => SHMQ_EIO,
        Error::NotDurable { .. } => SHMQ_ENOTDURABLE,
        Error::Corrupt {
            kind: Corruption::Version { .. },
            ..
        } => SHMQ_EVERSION,
        Error::Corrupt { .. } => SHMQ_ECORRUPT,
        Error::Exists { .. } => SHMQ_EEXIST,
        Error::NotFound { .. }
        | Error::TopicNotFound { .. }
        | Error::UnknownGroup(_)
        | Error::UnknownProducerId { .. }
        | Error::UnknownInbox { .. } => SHMQ_ENOENT,
        Error::InvalidArgument { .. }
        | Error::InvalidOptions(_)
        | Error::OffsetOutOfRange { .. }
        | Error::WrongKind { .. }
        | Error::Symlink { .. }
        | Error::NoFileName { .. }
        | Error::NoSuchPartition { .. }
        | Error::KeyTooBig { .. }
        | Error::WrongGroupKind { .. }
        | Error::SequenceOutsideWindow { .. } => SHMQ_EINVAL,
        Error::LeaseExpired { .. } | Error::MarkLost { .. } => SHMQ_ELEASE,
        Error::Unsupported(_) => SHMQ_EINTERNAL,
        Error::TooBig { .. } | Error::BatchTooBig { .. } => SHMQ_ETOOBIG,
        Error::Full { .. } => SHMQ_FULL,
        Error::Timeout { .. } | Error::Aborted { .. } | Error::TransactionAborted { .. } => {
            SHMQ_TIMEOUT
        }
        Error::TooManyProducers(_)
        | Error::TooManyGroups(_)
        | Error::TooManyMembers { .. }
        | Error::GroupBusy { .. }
        | Error::TransactionalIdBusy { .. }
        | Error::TooManyTransactionalIds { .. }
        | Error::ProducerIdBusy { .. }
        | Error::TooManyProducerIds { .. }
        | Error::InboxFull { .. }
        | Error::KeyBusy { .. } => SHMQ_EBUSY,
        Error::TakenOver { .. } | Error::NotHeld { .. } => SHMQ_ETAKENOVER,
        Error::Lagged { .. } => SHMQ_LAGGED,
        Error::Forked { .. } => SHMQ_EFORKED,
        Error::Untrusted { .. } => SHMQ_EUNTRUSTED,
        Error::Truncated { .. } | Error::Detached { .. } => SHMQ_ESTALE,
        // `Error` is non-exhaustive: a variant added after this table is a bug here.
        _ => SHMQ_EINTERNAL,
    }
}

/// The name of a status code, e.g. `"SHMQ_EINVAL"`; `"SHMQ_UNKNOWN"` for a value that is not a
/// `shmq_status`. Takes an `int` so any value is safe to pass. The string is static: never
/// freed, valid forever. Safe from any thread.
#[no_mangle]
pub extern "C" fn shmq_status_name(status: c_int) -> *const c_char {
    let name = match status {
        0 => c"SHMQ_OK",
        1 => c"SHMQ_TIMEOUT",
        2 => c"SHMQ_FULL",
        3 => c"SHMQ_LAGGED",
        -1 => c"SHMQ_EINVAL",
        -2 => c"SHMQ_EIO",
        -3 => c"SHMQ_ECORRUPT",
        -4 => c"SHMQ_EVERSION",
        -5 => c"SHMQ_ETOOBIG",
        -6 => c"SHMQ_ENOENT",
        -7 => c"SHMQ_EEXIST",
        -8 => c"SHMQ_EBUSY",
        -9 => c"SHMQ_EINTERNAL",
        -10 => c"SHMQ_EFORKED",
        -11 => c"SHMQ_EUNTRUSTED",
        -12 => c"SHMQ_ESTALE",
        -13 => c"SHMQ_ENOTDURABLE",
        -14 => c"SHMQ_ETAKENOVER",
        -15 => c"SHMQ_ELEASE",
        _ => c"SHMQ_UNKNOWN",
    };
    name.as_ptr()
}
