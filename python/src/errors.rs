//! The exception hierarchy: one Python class per [`shmq::Error`] variant (a few share one),
//! all below `shmq.Error`, with the variant's fields as attributes.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyModule;

create_exception!(
    shmq,
    Error,
    PyException,
    "Base class of every error shmq raises."
);
create_exception!(
    shmq,
    IoError,
    Error,
    "An I/O call on a queue file failed (`.path`, `.op`, `.errno`)."
);
create_exception!(
    shmq,
    CorruptFile,
    Error,
    "A queue file, topic descriptor or record is not valid (`.path`, `.kind`)."
);
create_exception!(
    shmq,
    Exists,
    Error,
    "The file already exists: create never replaces one (`.path`)."
);
create_exception!(
    shmq,
    NotFound,
    Error,
    "No queue file or topic at the path (`.path`)."
);
create_exception!(
    shmq,
    Untrusted,
    Error,
    "The file could have been written by a user the opener does not trust (`.path`)."
);
create_exception!(
    shmq,
    InvalidArgument,
    Error,
    "An argument is out of range: `.argument` says which (\"group name\", \"offset\", \"options\", \"partition\", \"path\", ...), `.path` the file or topic involved, if any."
);
create_exception!(shmq, Unsupported, Error, "This machine cannot run shmq.");
create_exception!(
    shmq,
    TooBig,
    Error,
    "A payload is larger than the queue's maximum message size (`.len`, `.max`)."
);
create_exception!(
    shmq,
    Full,
    Error,
    "The ring is full and the queue's policy is \"reject\"."
);
create_exception!(
    shmq,
    Timeout,
    Error,
    "A blocked publish or confirm did not finish in time."
);
create_exception!(
    shmq,
    WrongKind,
    InvalidArgument,
    "The path is another kind of thing than the call takes: a topic directory for a queue file, or the reverse (`.path`, `.found`, `.expected`)."
);
create_exception!(
    shmq,
    TooMany,
    Error,
    "Every producer, group or member slot is in use (`.slots`)."
);
create_exception!(
    shmq,
    UnknownGroup,
    Error,
    "The named consumer group does not exist (`.group`)."
);
create_exception!(
    shmq,
    Busy,
    Error,
    "Another live member holds the consumer group (`.group`, `.pid`), or another live process the transactional id (`.id`, `.pid`, `.path`)."
);
create_exception!(
    shmq,
    TakenOver,
    Error,
    "Someone else took the group or moved its committed offset: stop reading it (`.group`, `.found`)."
);
create_exception!(
    shmq,
    NotHeld,
    Error,
    "A topic member committed a partition it no longer holds (`.group`, `.partition`)."
);
create_exception!(
    shmq,
    Lagged,
    Error,
    "A lappable consumer was overrun: `.lost` records were skipped; it goes on at the oldest one."
);
create_exception!(
    shmq,
    Aborted,
    Error,
    "The publish stalled past the claim timeout and readers gave it up (`.offset`), or a transaction was aborted: none of it is visible (`.id`, `.why`, `.path`)."
);
create_exception!(
    shmq,
    NotDurable,
    Error,
    "The record was published but is not known to be on disk (`.path`, `.offset`, `.op`)."
);
create_exception!(
    shmq,
    Forked,
    Error,
    "The handle was made by another process before a fork; make a new one here (`.path`, `.pid`)."
);
create_exception!(
    shmq,
    Poisoned,
    Error,
    "A flush of the file failed: records from `.offset` on are never reported durable (`.path`)."
);
create_exception!(
    shmq,
    Stale,
    Error,
    "The queue file was truncated, removed or replaced under this process (`.path`, `.why`)."
);
create_exception!(
    shmq,
    OffsetOutOfRange,
    Error,
    "The offset is not in the ring (`.requested`, `.earliest`, `.latest`)."
);

create_exception!(
    shmq,
    LeaseExpired,
    Error,
    "A work group's delivery is no longer this worker's: its lease ran out or it was settled already; nothing changed (`.path`, `.group`, `.offset`)."
);
create_exception!(
    shmq,
    WrongGroupKind,
    InvalidArgument,
    "The group is of the other kind: a plain consumer on a work group or a worker on a plain group (`.path`, `.group`, `.expected`: \"plain\" or \"work\")."
);

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for (name, class) in [
        ("Error", py.get_type::<Error>()),
        ("IoError", py.get_type::<IoError>()),
        ("CorruptFile", py.get_type::<CorruptFile>()),
        ("Exists", py.get_type::<Exists>()),
        ("NotFound", py.get_type::<NotFound>()),
        ("Untrusted", py.get_type::<Untrusted>()),
        ("InvalidArgument", py.get_type::<InvalidArgument>()),
        ("Unsupported", py.get_type::<Unsupported>()),
        ("TooBig", py.get_type::<TooBig>()),
        ("Full", py.get_type::<Full>()),
        ("Timeout", py.get_type::<Timeout>()),
        ("WrongKind", py.get_type::<WrongKind>()),
        ("TooMany", py.get_type::<TooMany>()),
        ("UnknownGroup", py.get_type::<UnknownGroup>()),
        ("Busy", py.get_type::<Busy>()),
        ("TakenOver", py.get_type::<TakenOver>()),
        ("NotHeld", py.get_type::<NotHeld>()),
        ("Lagged", py.get_type::<Lagged>()),
        ("Aborted", py.get_type::<Aborted>()),
        ("NotDurable", py.get_type::<NotDurable>()),
        ("Forked", py.get_type::<Forked>()),
        ("Poisoned", py.get_type::<Poisoned>()),
        ("Stale", py.get_type::<Stale>()),
        ("OffsetOutOfRange", py.get_type::<OffsetOutOfRange>()),
        ("LeaseExpired", py.get_type::<LeaseExpired>()),
        ("WrongGroupKind", py.get_type::<WrongGroupKind>()),
    ] {
        m.add(name, class)?;
    }
    Ok(())
}

/// The Python exception for `err`: its class by variant, its message the Rust one (which
/// names the path where a file is involved), its fields as attributes.
pub fn to_py(err: shmq::Error) -> PyErr {
    use shmq::Error as E;
    let message = err.to_string();
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (exc, attrs): (PyErr, Vec<(&str, Attr)>) = match err {
        E::Io {
            path: p,
            op,
            source,
        } => (
            IoError::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("op", Attr::Str(op.into())),
                ("errno", Attr::OptInt(source.raw_os_error().map(i64::from))),
            ],
        ),
        E::Corrupt { path: p, kind } => (
            CorruptFile::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("kind", Attr::Str(kind.to_string())),
            ],
        ),
        E::Exists { path: p } => (
            Exists::new_err(message),
            vec![("path", Attr::Str(path(&p)))],
        ),
        E::NotFound { path: p } | E::TopicNotFound { path: p } => (
            NotFound::new_err(message),
            vec![("path", Attr::Str(path(&p)))],
        ),
        E::Untrusted { path: p, mode, .. } => (
            Untrusted::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("mode", Attr::Int(mode.into())),
            ],
        ),
        E::InvalidArgument { argument, .. } => invalid(message, argument, None),
        E::InvalidOptions(_) => invalid(message, "options", None),
        E::Symlink { path: p } | E::NoFileName { path: p } => {
            invalid(message, "path", Some(path(&p)))
        }
        E::KeyTooBig { .. } => invalid(message, "key", None),
        E::NoSuchPartition { path: p, .. } => invalid(message, "partition", Some(path(&p))),
        E::Unsupported(_) => (Unsupported::new_err(message), vec![]),
        E::TooBig { len, max } => (
            TooBig::new_err(message),
            vec![
                ("len", Attr::Int(len as i64)),
                ("max", Attr::Int(max.into())),
            ],
        ),
        E::Full { path: p, .. } => (Full::new_err(message), vec![("path", Attr::Str(path(&p)))]),
        E::Timeout {
            path: p, waited, ..
        } => (
            Timeout::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("waited", Attr::Float(waited.as_secs_f64())),
            ],
        ),
        E::TooManyProducers(slots) | E::TooManyGroups(slots) => (
            TooMany::new_err(message),
            vec![("slots", Attr::Int(slots.into()))],
        ),
        E::TooManyMembers { path: p, slots } => (
            TooMany::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("slots", Attr::Int(slots.into())),
            ],
        ),
        E::UnknownGroup(group) => (
            UnknownGroup::new_err(message),
            vec![("group", Attr::Str(group))],
        ),
        E::GroupBusy { group, pid } => (
            Busy::new_err(message),
            vec![("group", Attr::Str(group)), ("pid", Attr::Int(pid.into()))],
        ),
        E::TransactionalIdBusy { path: p, id, pid } => (
            Busy::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("id", Attr::Str(id)),
                ("pid", Attr::Int(pid.into())),
            ],
        ),
        E::TooManyTransactionalIds { path: p, slots } => (
            TooMany::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("slots", Attr::Int(slots.into())),
            ],
        ),
        E::TransactionAborted { path: p, id, why } => (
            Aborted::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("id", Attr::Str(id)),
                ("why", Attr::Str(why)),
            ],
        ),
        E::TakenOver { group, found } => (
            TakenOver::new_err(message),
            vec![("group", Attr::Str(group)), ("found", Attr::U64(found))],
        ),
        E::NotHeld { group, partition } => (
            NotHeld::new_err(message),
            vec![
                ("group", Attr::Str(group)),
                ("partition", Attr::Int(partition.into())),
            ],
        ),
        E::Lagged { lost } => (Lagged::new_err(message), vec![("lost", Attr::U64(lost))]),
        E::Aborted { offset } => (
            Aborted::new_err(message),
            vec![("offset", Attr::U64(offset))],
        ),
        E::NotDurable {
            path: p,
            offset,
            op,
            ..
        } => (
            NotDurable::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("offset", Attr::U64(offset)),
                ("op", Attr::Str(op.into())),
            ],
        ),
        E::Forked { path: p, pid } => (
            Forked::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("pid", Attr::Int(pid.into())),
            ],
        ),
        E::Poisoned {
            path: p, offset, ..
        } => (
            Poisoned::new_err(message),
            vec![("path", Attr::Str(path(&p))), ("offset", Attr::U64(offset))],
        ),
        E::WrongKind {
            path: p,
            found,
            expected,
        } => (
            WrongKind::new_err(message),
            vec![
                ("argument", Attr::Str("path".into())),
                ("path", Attr::Str(path(&p))),
                ("found", Attr::Str(found.to_string())),
                ("expected", Attr::Str(expected.to_string())),
            ],
        ),
        E::Truncated { path: p } => (
            Stale::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("why", Attr::Str("truncated".into())),
            ],
        ),
        E::Detached { path: p, why } => (
            Stale::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                (
                    "why",
                    Attr::Str(
                        match why {
                            shmq::Detachment::Removed => "removed",
                            shmq::Detachment::Replaced => "replaced",
                        }
                        .into(),
                    ),
                ),
            ],
        ),
        E::OffsetOutOfRange {
            requested,
            earliest,
            latest,
        } => (
            OffsetOutOfRange::new_err(message),
            vec![
                ("requested", Attr::U64(requested)),
                ("earliest", Attr::U64(earliest)),
                ("latest", Attr::U64(latest)),
            ],
        ),
        E::LeaseExpired {
            path: p,
            group,
            offset,
        } => (
            LeaseExpired::new_err(message),
            vec![
                ("path", Attr::Str(path(&p))),
                ("group", Attr::Str(group)),
                ("offset", Attr::U64(offset)),
            ],
        ),
        E::WrongGroupKind {
            path: p,
            group,
            expected,
        } => (
            WrongGroupKind::new_err(message),
            vec![
                ("argument", Attr::Str("group".into())),
                ("path", Attr::Str(path(&p))),
                ("group", Attr::Str(group)),
                (
                    "expected",
                    Attr::Str(match expected {
                        shmq::GroupKind::Plain => "plain".into(),
                        shmq::GroupKind::Work => "work".into(),
                        // Non-exhaustive: a newer kind by its description.
                        other => other.to_string(),
                    }),
                ),
            ],
        ),
        // `shmq::Error` is non-exhaustive: a variant newer than this mapping is still an error.
        _ => (Error::new_err(message), vec![]),
    };
    Python::attach(|py| {
        let value = exc.value(py);
        for (name, attr) in attrs {
            // Setting an attribute on a fresh exception instance cannot fail short of memory
            // exhaustion; the exception is still the right class if it does.
            let _ = match attr {
                Attr::Str(s) => value.setattr(name, s),
                Attr::OptStr(s) => value.setattr(name, s),
                Attr::Int(i) => value.setattr(name, i),
                Attr::U64(u) => value.setattr(name, u),
                Attr::OptInt(o) => value.setattr(name, o),
                Attr::Float(f) => value.setattr(name, f),
            };
        }
    });
    exc
}

/// An [`InvalidArgument`] naming the argument and the path involved, if any.
fn invalid(
    message: String,
    argument: &'static str,
    path: Option<String>,
) -> (PyErr, Vec<(&'static str, Attr)>) {
    (
        InvalidArgument::new_err(message),
        vec![
            ("argument", Attr::Str(argument.into())),
            ("path", Attr::OptStr(path)),
        ],
    )
}

/// An attribute value of an exception.
enum Attr {
    Str(String),
    OptStr(Option<String>),
    Int(i64),
    U64(u64),
    OptInt(Option<i64>),
    Float(f64),
}

/// Shorthand: a `shmq::Result` as a `PyResult`.
pub trait IntoPy<T> {
    /// Converts the error (if any) with [`to_py`].
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for shmq::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
