//! Consumers: `Consumer` (a queue's group member), the polling machinery it shares with
//! `TopicConsumer` ([`Handle`]), `Message`, the zero-copy `Payload`, and the `Messages`
//! iterator.
//!
//! A handle's state is behind a mutex that a poll holds while it waits with the GIL released,
//! so a poll from a second thread waits its turn rather than failing. The asyncio side
//! (`python/shmq/_aio.py`) runs [`Handle::wait_park`] in an executor thread; what that wait
//! receives is *parked* in the handle and handed out by the next poll or `await next()`, so a
//! message received after the awaiting task was cancelled is not lost.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyModule};
use pyo3::{PyTraverseError, PyVisit};

use crate::errors::{to_py, IntoPy, UnknownGroup};
use crate::queue::{closed, lock_handle};
use crate::Wait;

/// One record as a reader returns it, borrowed from the reader until its next call.
pub struct Raw<'a> {
    /// The record's offset.
    pub offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Aborted offsets skipped right before it.
    pub aborted_before: u64,
    /// Its partition (topic records).
    pub partition: Option<u32>,
    /// Its key (topic records published with one).
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

/// What [`Handle`] polls: a queue consumer or a topic member.
pub trait Reader: Send {
    /// The next record, waiting up to `timeout`.
    fn read(&mut self, timeout: Duration) -> shmq::Result<Option<Raw<'_>>>;
}

impl Reader for shmq::Consumer {
    fn read(&mut self, timeout: Duration) -> shmq::Result<Option<Raw<'_>>> {
        Ok(self.poll(Some(timeout))?.map(|m| Raw {
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            aborted_before: m.aborted_before,
            partition: None,
            key: None,
            payload: m.payload,
        }))
    }
}

impl Reader for shmq::TopicConsumer {
    fn read(&mut self, timeout: Duration) -> shmq::Result<Option<Raw<'_>>> {
        Ok(self.poll(Some(timeout))?.map(|m| Raw {
            offset: m.offset,
            timestamp_ns: m.timestamp_ns,
            aborted_before: m.aborted_before,
            partition: Some(m.partition),
            key: m.key,
            payload: m.value,
        }))
    }
}

/// What a wait received while nobody was awaiting it.
enum Parked {
    Message(Py<Message>),
    Error(shmq::Error),
}

/// A handle's mutable state.
pub struct State<R> {
    /// The reader; `None` once closed.
    pub reader: Option<R>,
    parked: Option<Parked>,
}

/// How many buffers of a zero-copy consumer's current payload are exported, and which
/// payload is current. Every access holds the GIL (buffer slots and the consumer's methods run
/// with it), which orders them: Relaxed throughout.
#[derive(Default)]
struct Views {
    exports: AtomicUsize,
    generation: AtomicU64,
}

/// The polling machinery of a consumer (queue or topic), shared by both classes.
pub struct Handle<R> {
    /// The reader and what an async wait parked, taken in turn by the handle's calls.
    pub state: Mutex<State<R>>,
    views: Arc<Views>,
    zero_copy: bool,
    /// Async waits: the last ticket handed out, and the highest one cancelled. Relaxed: a
    /// wait reads the flag once per slice; a late read only delays its end by one slice.
    tickets: AtomicU64,
    cancelled: AtomicU64,
    what: &'static str,
}

impl<R: Reader> Handle<R> {
    /// A handle over `reader`; `what` names it in errors ("consumer").
    pub fn new(reader: R, zero_copy: bool, what: &'static str) -> Self {
        Handle {
            state: Mutex::new(State {
                reader: Some(reader),
                parked: None,
            }),
            views: Arc::default(),
            zero_copy,
            tickets: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            what,
        }
    }

    /// Ends the validity of the current zero-copy payload before the reader moves on; refuses
    /// while a buffer of it is exported (a `memoryview` or anything made from one).
    pub fn expire_views(&self) -> PyResult<()> {
        if !self.zero_copy {
            return Ok(());
        }
        if self.views.exports.load(Ordering::Relaxed) > 0 {
            return Err(PyBufferError::new_err(
                "a memoryview of the last message's payload (or a buffer made from one) is still \
                 alive: release it (`with msg.payload as view:`, or `del`) before polling, \
                 committing, seeking or closing",
            ));
        }
        self.views.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn build(&self, owner: &Bound<'_, PyAny>, raw: Raw<'_>) -> PyResult<Py<Message>> {
        let py = owner.py();
        let payload = if self.zero_copy {
            Py::new(
                py,
                Payload {
                    ptr: Ptr(raw.payload.as_ptr()),
                    len: raw.payload.len(),
                    generation: self.views.generation.load(Ordering::Relaxed),
                    views: self.views.clone(),
                    _owner: owner.clone().unbind(),
                },
            )?
            .into_any()
        } else {
            PyBytes::new(py, raw.payload).into_any().unbind()
        };
        Py::new(
            py,
            Message {
                offset: raw.offset,
                timestamp_ns: raw.timestamp_ns,
                aborted_before: raw.aborted_before,
                partition: raw.partition,
                key: raw.key.map(|k| PyBytes::new(py, k).unbind()),
                payload,
                view: self.zero_copy,
            },
        )
    }

    /// The next message (a parked one first), waiting up to `timeout` in slices.
    pub fn poll(
        &self,
        owner: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Py<Message>>> {
        let py = owner.py();
        let timeout = crate::timeout(timeout)?;
        let mut state = lock_handle(py, &self.state);
        if let Some(parked) = state.parked.take() {
            return match parked {
                Parked::Message(m) => Ok(Some(m)),
                Parked::Error(e) => Err(to_py(e)),
            };
        }
        self.expire_views()?;
        let reader = state.reader.as_mut().ok_or_else(|| closed(self.what))?;
        // With the GIL held when a record is ready: releasing it costs more than the read.
        match reader.read(Duration::ZERO) {
            Ok(Some(raw)) => return self.build(owner, raw).map(Some),
            Ok(None) if timeout == Some(Duration::ZERO) => return Ok(None),
            Ok(None) => {}
            Err(e) => return Err(to_py(e)),
        }
        let wait = Wait::new(timeout);
        loop {
            let slice = wait.slice();
            match py.detach(|| reader.read(slice)) {
                Ok(Some(raw)) => return self.build(owner, raw).map(Some),
                Ok(None) if wait.more(py)? => {}
                Ok(None) => return Ok(None),
                Err(e) => return Err(to_py(e)),
            }
        }
    }

    /// A new ticket for an async wait.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Ends the async wait with `ticket` within one slice (what it already received stays
    /// parked).
    pub fn cancel(&self, ticket: u64) {
        self.cancelled.fetch_max(ticket, Ordering::Relaxed);
    }

    /// An async wait, run in an executor thread: waits up to `timeout` for a message, parks
    /// it (or the error the poll raised) and returns true; false if the time ran out or the
    /// wait was cancelled first.
    pub fn wait_park(
        &self,
        owner: &Bound<'_, PyAny>,
        ticket: u64,
        timeout: Option<f64>,
    ) -> PyResult<bool> {
        let py = owner.py();
        let timeout = crate::timeout(timeout)?;
        let mut state = lock_handle(py, &self.state);
        if state.parked.is_some() {
            return Ok(true);
        }
        if self.cancelled.load(Ordering::Relaxed) >= ticket {
            return Ok(false);
        }
        self.expire_views()?;
        let state = &mut *state;
        let reader = state.reader.as_mut().ok_or_else(|| closed(self.what))?;
        let wait = Wait::new(timeout);
        loop {
            let slice = wait.slice();
            match py.detach(|| reader.read(slice)) {
                Ok(Some(raw)) => {
                    let message = self.build(owner, raw)?;
                    state.parked = Some(Parked::Message(message));
                    return Ok(true);
                }
                Ok(None) => {
                    if self.cancelled.load(Ordering::Relaxed) >= ticket || !wait.more(py)? {
                        return Ok(false);
                    }
                }
                Err(e) => {
                    state.parked = Some(Parked::Error(e));
                    return Ok(true);
                }
            }
        }
    }

    /// The garbage collector's view of the parked message: a zero-copy one refers back to its
    /// consumer, a cycle when nobody takes it. Skipped while a call holds the state (the
    /// collector then sees an outside reference and keeps the objects).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Ok(state) = self.state.try_lock() {
            if let Some(Parked::Message(m)) = &state.parked {
                visit.call(m)?;
            }
        }
        Ok(())
    }

    /// Breaks the cycle above: drops the parked message (the group's next member receives it
    /// again, as after `close()`).
    pub fn clear(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            state.parked = None;
        }
    }

    /// Takes what an async wait parked (raising a parked error).
    pub fn take_parked(&self, py: Python<'_>) -> PyResult<Option<Py<Message>>> {
        match lock_handle(py, &self.state).parked.take() {
            None => Ok(None),
            Some(Parked::Message(m)) => Ok(Some(m)),
            Some(Parked::Error(e)) => Err(to_py(e)),
        }
    }

    /// Runs `f` on the open reader, after expiring zero-copy views (commit, seek).
    pub fn with<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut R) -> shmq::Result<T>,
    ) -> PyResult<T> {
        let mut state = lock_handle(py, &self.state);
        self.expire_views()?;
        let reader = state.reader.as_mut().ok_or_else(|| closed(self.what))?;
        f(reader).py_err()
    }

    /// Reads from the open reader (no view expiry: a query).
    pub fn query<T>(&self, py: Python<'_>, f: impl FnOnce(&R) -> T) -> PyResult<T> {
        let state = lock_handle(py, &self.state);
        let reader = state.reader.as_ref().ok_or_else(|| closed(self.what))?;
        Ok(f(reader))
    }

    /// Leaves the group (drops the reader); a parked message is dropped uncommitted, so the
    /// group's next member receives it again.
    pub fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = lock_handle(py, &self.state);
        self.expire_views()?;
        let reader = state.reader.take();
        state.parked = None;
        drop(state);
        py.detach(|| drop(reader));
        Ok(())
    }
}

/// The `shmq._aio` module (the asyncio side), imported once.
pub fn aio(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static AIO: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    AIO.get_or_try_init(py, || Ok::<_, PyErr>(py.import("shmq._aio")?.unbind()))
        .map(|m| m.bind(py))
}

/// What `Queue.consumer` asks for.
pub struct Join<'a> {
    /// The group's name.
    pub group: &'a str,
    /// Create the group if it does not exist (else `UnknownGroup`).
    pub create: bool,
    /// How to create it, and the member's session timeout.
    pub subscribe: shmq::Subscribe,
    /// Payloads as memoryviews (see `Message.payload`).
    pub zero_copy: bool,
}

/// A member of a queue's consumer group. Iterate it (`for msg in consumer:` blocks for the next
/// message), `poll(timeout)`, `commit(msg)`; `await consumer.next()` and `async for` under
/// asyncio. A context manager; `close()` leaves the group.
#[pyclass(module = "shmq", frozen)]
pub struct Consumer {
    handle: Handle<shmq::Consumer>,
    group: String,
    /// Commits wait for an `fdatasync` (durability "sync"): release the GIL for them.
    sync: bool,
}

impl Consumer {
    /// The consumer's handle (for a transaction's `commit_consumed`).
    pub fn handle(&self) -> &Handle<shmq::Consumer> {
        &self.handle
    }

    /// Joins `join.group` on `queue`.
    pub fn join(py: Python<'_>, queue: &shmq::Queue, join: Join<'_>) -> PyResult<Consumer> {
        if join.zero_copy && join.subscribe.session_timeout.is_some() {
            return Err(PyValueError::new_err(
                "zero_copy needs a member without a session timeout: a member counted out by \
                 its timeout could have the bytes under a view overwritten",
            ));
        }
        if !join.create && !queue.groups().iter().any(|g| g.name == join.group) {
            let err =
                UnknownGroup::new_err(format!("consumer group {:?} does not exist", join.group));
            err.value(py).setattr("group", join.group)?;
            return Err(err);
        }
        let consumer = py
            .detach(|| queue.subscribe(join.group, &join.subscribe))
            .py_err()?;
        Ok(Consumer {
            handle: Handle::new(consumer, join.zero_copy, "consumer"),
            group: join.group.into(),
            sync: queue.geometry().durability == shmq::Durability::Sync,
        })
    }
}

/// The `#[pymethods]` of a consumer class (`$ty`, with a `handle: Handle<_>` and a
/// `group: String`): polling, iteration, asyncio, `close()`, the context manager, `__repr__`
/// and the garbage collector's slots, plus the class's own `$extra` methods. The docs of
/// `poll`, `next` and `close` are given per class; the caller writes the `#[pymethods]`
/// attribute (see `pymethods_closing`). PyO3 takes one `#[pymethods]` block per class and no
/// inheritance of methods between classes, so the block is generated.
macro_rules! consumer_pymethods {
    (
        $hash:tt $pymethods:tt
        impl $ty:ident {
            $(#[$poll_doc:meta])* poll;
            $(#[$next_doc:meta])* next;
            $(#[$close_doc:meta])* close;
            $($extra:tt)*
        }
    ) => {
        pymethods_closing! {
        $hash $pymethods
        impl $ty {
            $(#[$poll_doc])*
            #[pyo3(signature = (timeout=None))]
            fn poll(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Option<Py<Message>>> {
                slf.get().handle.poll(slf.as_any(), timeout)
            }

            /// The group's name.
            #[getter]
            fn group(&self) -> &str {
                &self.group
            }

            /// An iterator over messages that ends when none comes within `timeout` seconds.
            #[pyo3(signature = (timeout=None))]
            fn iter(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<Messages> {
                Messages::new(slf.as_any(), timeout)
            }

            fn __iter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<Message>>> {
                Self::poll(slf, None)
            }

            $(#[$next_doc])*
            #[pyo3(signature = (timeout=None))]
            fn next<'py>(
                slf: &Bound<'py, Self>,
                timeout: Option<f64>,
            ) -> PyResult<Bound<'py, PyAny>> {
                aio(slf.py())?.call_method1("next_message", (slf, timeout))
            }

            fn __aiter__(slf: Py<Self>) -> Py<Self> {
                slf
            }

            fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
                Self::next(slf, None)
            }

            fn _ticket(&self) -> u64 {
                self.handle.ticket()
            }

            fn _cancel(&self, ticket: u64) {
                self.handle.cancel(ticket)
            }

            #[pyo3(signature = (ticket, timeout))]
            fn _wait_park(
                slf: &Bound<'_, Self>,
                ticket: u64,
                timeout: Option<f64>,
            ) -> PyResult<bool> {
                slf.get().handle.wait_park(slf.as_any(), ticket, timeout)
            }

            fn _take_parked(&self, py: Python<'_>) -> PyResult<Option<Py<Message>>> {
                self.handle.take_parked(py)
            }

            $(#[$close_doc])*
            fn close(&self, py: Python<'_>) -> PyResult<()> {
                self.handle.close(py)
            }

            fn __repr__(&self) -> String {
                format!(concat!("<shmq.", stringify!($ty), " group={:?}>"), self.group)
            }

            fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
                self.handle.traverse(&visit)
            }

            fn __clear__(&self) {
                self.handle.clear()
            }

            $($extra)*
        }
        }
    };
}
pub(crate) use consumer_pymethods;

/// The offset of a `Message` or an `int`.
fn offset_of(msg: &Bound<'_, PyAny>) -> PyResult<u64> {
    match msg.cast::<Message>() {
        Ok(m) => Ok(m.get().offset),
        Err(_) => msg.extract(),
    }
}

consumer_pymethods! {
#[pymethods]
impl Consumer {
    /// The next message, waiting up to `timeout` seconds (`None`: forever, `0`: not at all);
    /// `None` if none came. Raises `Lagged` (with `.lost`) when the group was overrun.
    poll;
    /// A coroutine: the next message, waiting up to `timeout` seconds (`None`: forever)
    /// without blocking the event loop; `None` if none came.
    next;
    /// Leaves the group (releases its lease).
    close;

    /// Commits `msg` (a `Message` or an offset): it and everything before it are processed,
    /// and the group's next member resumes after it.
    fn commit(&self, py: Python<'_>, msg: &Bound<'_, PyAny>) -> PyResult<()> {
        let offset = offset_of(msg)?;
        if self.sync {
            self.handle.with(py, |c| py.detach(|| c.commit(offset)))
        } else {
            self.handle.with(py, |c| c.commit(offset))
        }
    }

    /// Moves the read cursor (not the committed offset): "earliest", "latest", "committed",
    /// an offset, or a time (datetime or seconds since the epoch).
    fn seek(&self, py: Python<'_>, to: &Bound<'_, PyAny>) -> PyResult<()> {
        let to = crate::options::seek_to(to)?;
        self.handle.with(py, |c| c.seek(to))
    }

    /// Whether polls check each record's CRC32C (on by default in a queue with checksums).
    fn set_verify_checksums(&self, py: Python<'_>, verify: bool) -> PyResult<()> {
        self.handle.with(py, |c| {
            c.set_verify_checksums(verify);
            Ok(())
        })
    }

    /// The offset of the next record this consumer reads.
    #[getter]
    fn position(&self, py: Python<'_>) -> PyResult<u64> {
        self.handle.query(py, |c| c.position())
    }

    /// The group's committed offset (the next to read after a restart).
    #[getter]
    fn committed(&self, py: Python<'_>) -> PyResult<u64> {
        self.handle.query(py, |c| c.committed())
    }

    /// Records published but not yet read by this consumer (a snapshot).
    #[getter]
    fn lag(&self, py: Python<'_>) -> PyResult<u64> {
        self.handle.query(py, |c| c.lag())
    }
}
}

/// One record. `payload` is `bytes`, or for a `zero_copy` consumer a read-only `memoryview`.
#[pyclass(module = "shmq", frozen)]
pub struct Message {
    offset: u64,
    timestamp_ns: u64,
    aborted_before: u64,
    partition: Option<u32>,
    key: Option<Py<PyBytes>>,
    /// `bytes`, or a [`Payload`] when `view`.
    payload: Py<PyAny>,
    view: bool,
}

#[pymethods]
impl Message {
    /// The record's offset in its queue (or partition).
    #[getter]
    fn offset(&self) -> u64 {
        self.offset
    }

    /// When it was published, seconds since the Unix epoch (as `time.time()`).
    #[getter]
    fn timestamp(&self) -> f64 {
        self.timestamp_ns as f64 / 1e9
    }

    /// When it was published, nanoseconds since the Unix epoch.
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// Offsets right before this one that were aborted (no record) since the previous message.
    #[getter]
    fn aborted_before(&self) -> u64 {
        self.aborted_before
    }

    /// The partition (topic messages; `None` for a queue's).
    #[getter]
    fn partition(&self) -> Option<u32> {
        self.partition
    }

    /// The key (topic messages published with one; else `None`).
    #[getter]
    fn key(&self, py: Python<'_>) -> Option<Py<PyBytes>> {
        self.key.as_ref().map(|k| k.clone_ref(py))
    }

    /// The payload: `bytes`; for a `zero_copy` consumer a new read-only `memoryview` of the
    /// record at each access, valid until the consumer's next poll, commit, seek or close
    /// (which raise `BufferError` while a view of it is alive).
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let payload = self.payload.bind(py);
        if !self.view {
            return Ok(payload.clone());
        }
        // SAFETY: `payload` is a live object (we hold a reference); the call returns a new
        // reference or NULL with an exception set, which `from_owned_ptr_or_err` turns into
        // a `PyErr`.
        unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(payload.as_ptr())) }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.payload)?;
        if let Some(key) = &self.key {
            visit.call(key)?;
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        match self.partition {
            Some(p) => format!("<shmq.Message partition={p} offset={}>", self.offset),
            None => format!("<shmq.Message offset={}>", self.offset),
        }
    }
}

/// A raw pointer to payload bytes, sendable: it is only read through the buffer protocol,
/// with the GIL held, while the owning consumer keeps the bytes unchanged.
struct Ptr(*const u8);

// SAFETY: the pointer is dereferenced only by Python buffer consumers, with the GIL held, and
// only while `Payload::generation` is current (the consumer has not moved on), whatever
// thread holds the object.
unsafe impl Send for Ptr {}
// SAFETY: as above; the pointee is never written through this pointer.
unsafe impl Sync for Ptr {}

/// The exporter behind a zero-copy payload's `memoryview`: a record in the mapping (gating
/// group) or in the consumer's own copy (a group that can be lapped, which shmq copies and
/// validates), valid while its consumer stays on this message.
#[pyclass(module = "shmq", frozen)]
pub struct Payload {
    ptr: Ptr,
    len: usize,
    generation: u64,
    views: Arc<Views>,
    /// The consumer: keeps the mapping (and its copy buffer) alive while a view exists.
    _owner: Py<PyAny>,
}

#[pymethods]
impl Payload {
    /// # Safety
    /// Called by Python's buffer protocol with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        if this.views.generation.load(Ordering::Relaxed) != this.generation {
            return Err(PyBufferError::new_err(
                "this zero-copy payload expired: its consumer has polled, committed, seeked or \
                 closed since (copy it with bytes(msg.payload) to keep it)",
            ));
        }
        let len = ffi::Py_ssize_t::try_from(this.len)
            .map_err(|_| PyBufferError::new_err("payload too large for a buffer"))?;
        // SAFETY: `view` is the caller's to fill; the bytes stay valid and unchanged while the
        // generation is current, and the consumer refuses to move on while `exports` > 0.
        // Read-only (1): a writable request fails with BufferError. The view keeps `slf`
        // alive (PyBuffer_FillInfo takes a reference to it).
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(view, slf.as_ptr(), this.ptr.0 as *mut _, len, 1, flags)
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        this.views.exports.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self._owner)
    }

    /// # Safety
    /// Called by Python's buffer protocol once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.views.exports.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An iterator over a consumer's messages that ends when none comes within its timeout.
#[pyclass(module = "shmq")]
pub struct Messages {
    consumer: Py<PyAny>,
    timeout: Option<f64>,
}

impl Messages {
    /// Messages of `consumer` (anything with `poll(timeout)`).
    pub fn new(consumer: &Bound<'_, PyAny>, timeout: Option<f64>) -> PyResult<Messages> {
        crate::timeout(timeout)?;
        Ok(Messages {
            consumer: consumer.clone().unbind(),
            timeout,
        })
    }
}

#[pymethods]
impl Messages {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let msg = self
            .consumer
            .bind(py)
            .call_method1("poll", (self.timeout,))?;
        Ok((!msg.is_none()).then_some(msg))
    }
}
