//! `shmq._shmq`: the native part of the `shmq` Python package, a PyO3 extension over the Rust
//! library. `python/shmq/__init__.py` re-exports it; `python/shmq/_aio.py` adds the asyncio
//! side; `python/shmq/_shmq.pyi` documents the types.
//!
//! Every call that can wait releases the GIL and waits in slices of at most [`SLICE`],
//! checking for signals between them, so Ctrl-C interrupts a blocked poll or publish.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A `#[pymethods]` block for a class with a `close()` method, adding the context-manager
/// methods: `__enter__` returns the object, `__exit__` calls its `close()`. PyO3 takes one
/// `#[pymethods]` block per class, so the block is wrapped rather than shared. The caller
/// writes the `#[pymethods]` attribute: the code PyO3 generates for `**kwargs` takes its
/// names' hygiene from the attribute's tokens.
macro_rules! pymethods_closing {
    ($hash:tt $pymethods:tt impl $ty:ident { $($body:tt)* }) => {
        $hash $pymethods
        impl $ty {
            $($body)*

            fn __enter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            fn __exit__(
                slf: &Bound<'_, Self>,
                _ty: Option<&Bound<'_, PyAny>>,
                _value: Option<&Bound<'_, PyAny>>,
                _tb: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<()> {
                slf.call_method0("close").map(drop)
            }
        }
    };
}

mod consumer;
mod errors;
mod options;
mod queue;
mod topic;
mod transaction;
mod work;

/// Longest wait with the GIL released before the waiter checks for signals: a Ctrl-C
/// interrupts a blocked call within this (plus the time to return from the slice).
const SLICE: Duration = Duration::from_millis(100);

/// A Python timeout (seconds, `None` for no limit) as a Rust one.
fn timeout(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_infinite() && s > 0.0 => Ok(None),
        Some(s) => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|_| PyValueError::new_err(format!("timeout must be >= 0 seconds, got {s}"))),
    }
}

/// The producer clock a `coarse_timestamps` argument asks for.
fn timestamps(coarse: bool) -> shmq::Timestamps {
    if coarse {
        shmq::Timestamps::Coarse
    } else {
        shmq::Timestamps::Precise
    }
}

/// A wait of at most a timeout, taken in slices with a signal check between them.
struct Wait {
    deadline: Option<Instant>,
}

impl Wait {
    /// A wait of `timeout` from now (`None`: no limit).
    fn new(timeout: Option<Duration>) -> Wait {
        Wait {
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// How long the next slice may wait: [`SLICE`] or what is left, whichever is shorter.
    fn slice(&self) -> Duration {
        match self.deadline {
            None => SLICE,
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
        }
    }

    /// After a slice that ended without a result: runs the signal handlers (a
    /// `KeyboardInterrupt` propagates) and says whether time is left for another slice.
    fn more(&self, py: Python<'_>) -> PyResult<bool> {
        py.check_signals()?;
        Ok(self.deadline.is_none_or(|d| Instant::now() < d))
    }
}

/// What `__reduce__` returns for a handle opened from a path: "call `T.open(path)`", so a
/// handle passed to a `multiprocessing` worker (spawn or forkserver) is opened anew there.
fn reopen<'py, T: pyo3::PyTypeInfo>(
    py: Python<'py>,
    path: &std::path::Path,
) -> PyResult<Bound<'py, pyo3::types::PyTuple>> {
    use pyo3::types::PyTuple;
    let open = py.get_type::<T>().getattr("open")?;
    PyTuple::new(py, [open, PyTuple::new(py, [path])?.into_any()])
}

/// The extension module.
#[pymodule]
fn _shmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<queue::Queue>()?;
    m.add_class::<queue::Producer>()?;
    m.add_class::<queue::GroupInfo>()?;
    m.add_class::<consumer::Consumer>()?;
    m.add_class::<consumer::Message>()?;
    m.add_class::<consumer::Payload>()?;
    m.add_class::<consumer::Messages>()?;
    m.add_class::<topic::Topic>()?;
    m.add_class::<topic::TopicProducer>()?;
    m.add_class::<topic::TopicConsumer>()?;
    m.add_class::<topic::PartitionInfo>()?;
    m.add_class::<topic::MemberInfo>()?;
    m.add_class::<transaction::TransactionalProducer>()?;
    m.add_class::<transaction::TransactionInfo>()?;
    m.add_class::<work::Worker>()?;
    m.add_class::<work::Job>()?;
    m.add_class::<work::Ticket>()?;
    m.add_class::<work::PendingInfo>()?;
    m.add_class::<work::WorkInfo>()?;
    m.add_class::<work::DeadLetter>()?;
    m.add("FORMAT_VERSION", shmq::FORMAT_VERSION)?;
    Ok(())
}
