//! `Queue` (an open queue file), `Producer` and `GroupInfo`.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use crate::consumer::{Consumer, Join};
use crate::errors::IntoPy;
use crate::options;
use crate::work::{PendingInfo, Settings, WorkInfo, Worker};
use crate::Wait;

/// Locks `m` whatever a panicking holder left (the state is a handle; no invariant spans a
/// panic in it). Only for mutexes whose holders never release the GIL.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Locks a handle's mutex, whose holder may be waiting with the GIL released: if it is taken,
/// waits for it with the GIL released too (holding the GIL would keep the holder from
/// returning), then tries again.
pub fn lock_handle<'a, T: Send>(py: Python<'_>, m: &'a Mutex<T>) -> MutexGuard<'a, T> {
    loop {
        match m.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(e)) => return e.into_inner(),
            Err(TryLockError::WouldBlock) => py.detach(|| drop(lock(m))),
        }
    }
}

/// The `ValueError` of a handle used after `close()`.
pub fn closed(what: &str) -> PyErr {
    PyValueError::new_err(format!("operation on a closed {what}"))
}

/// An open queue file. A context manager: `with shmq.Queue.open(path) as q:`. Producers and
/// consumers made from it keep the file mapped after it is closed.
#[pyclass(module = "shmq", frozen)]
pub struct Queue {
    queue: Mutex<Option<shmq::Queue>>,
}

impl Queue {
    /// The open queue, or a `ValueError` after `close()`.
    pub fn get(&self) -> PyResult<shmq::Queue> {
        lock(&self.queue).clone().ok_or_else(|| closed("queue"))
    }

    fn wrap(q: shmq::Queue) -> Queue {
        Queue {
            queue: Mutex::new(Some(q)),
        }
    }
}

pymethods_closing! {
#[pymethods]
impl Queue {
    /// Creates a queue file (never replacing one) and opens it. Keyword arguments: capacity,
    /// max_message, full ("block", "reject", "overwrite"), durability ("none", "batch",
    /// "sync"), batch_delay, batch_bytes, group_slots, producer_slots, claim_timeout, mode,
    /// checksums.
    #[staticmethod]
    #[pyo3(signature = (path, **options))]
    fn create(
        py: Python<'_>,
        path: std::path::PathBuf,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Queue> {
        let options = options::queue_options(options)?;
        py.detach(|| shmq::Queue::create(&path, &options))
            .py_err()
            .map(Queue::wrap)
    }

    /// Opens an existing queue file. `trust_owner` (a uid) and `trust_group` (a gid) accept a
    /// file of that user or group (see the README, "Sharing a queue between users").
    #[staticmethod]
    #[pyo3(signature = (path, *, trust_owner=None, trust_group=None))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        trust_owner: Option<u32>,
        trust_group: Option<u32>,
    ) -> PyResult<Queue> {
        let trust = options::trust(trust_owner, trust_group);
        py.detach(|| shmq::Queue::open_trusting(&path, &trust))
            .py_err()
            .map(Queue::wrap)
    }

    /// A new producer (takes one of the queue's producer slots until closed). `timeout`: how
    /// long `publish` waits for room when the queue is full and its policy is "block" (`None`:
    /// as long as it takes). `coarse_timestamps`: stamp records with the kernel's last tick
    /// (millisecond resolution) instead of a precise clock read, for a cheaper publish.
    #[pyo3(signature = (*, timeout=None, coarse_timestamps=false))]
    fn producer(&self, timeout: Option<f64>, coarse_timestamps: bool) -> PyResult<Producer> {
        let timeout = crate::timeout(timeout)?;
        let queue = self.get()?;
        let sync = !matches!(queue.geometry().durability, shmq::Durability::None);
        let mut producer = queue.producer().py_err()?;
        producer.set_timestamps(crate::timestamps(coarse_timestamps));
        Ok(Producer {
            inner: Mutex::new(Some(producer)),
            timeout,
            flushes: sync,
        })
    }

    /// Joins consumer group `group`. `create`: make the group if it does not exist (as
    /// `gating`, starting at `start`), else raise `UnknownGroup`. `session_timeout`: seconds
    /// this member may go without polling before another may take the group. `zero_copy`:
    /// payloads as memoryviews over the mapping (see `Message.payload`).
    #[pyo3(signature = (group, *, create=true, gating=true, start="earliest", session_timeout=None, zero_copy=false))]
    #[allow(clippy::too_many_arguments)]
    fn consumer(
        &self,
        py: Python<'_>,
        group: &str,
        create: bool,
        gating: bool,
        start: &str,
        session_timeout: Option<f64>,
        zero_copy: bool,
    ) -> PyResult<Consumer> {
        let queue = self.get()?;
        let subscribe = shmq::Subscribe {
            gating,
            start: options::start(start)?,
            session_timeout: session_timeout
                .map(|s| options::seconds("session_timeout", s))
                .transpose()?,
        };
        Consumer::join(
            py,
            &queue,
            Join {
                group,
                create,
                subscribe,
                zero_copy,
            },
        )
    }

    /// Joins work group `group` as a competing worker (see `Worker`). A group that does not
    /// exist is created with these settings; an existing one keeps its own.
    /// `visibility_timeout`: seconds a worker holds a delivery before it goes to anyone again
    /// (30). `max_deliveries`: deliveries before a nacked or timed-out record is
    /// dead-lettered (5; 0: unlimited). `backoff`: the delay of a nack without one, seconds
    /// (fixed, 1.0) or `(initial, max)` (exponential). `window`: records in flight at most (a
    /// power of two, 4096). `start`: "earliest" or "latest". `dead_letter`: the path of an
    /// existing queue file that receives dead letters (`None`: they are dropped, counted).
    /// `max_age`: seconds after which a record expires instead of being delivered.
    /// `dead_letter_expired`: expired records are dead-lettered too. Raises `WrongGroupKind`
    /// for a plain consumer group.
    #[pyo3(signature = (group, *, visibility_timeout=None, max_deliveries=None, backoff=None, window=None, start="earliest", dead_letter=None, max_age=None, dead_letter_expired=false))]
    #[allow(clippy::too_many_arguments)]
    fn worker(
        &self,
        py: Python<'_>,
        group: &str,
        visibility_timeout: Option<f64>,
        max_deliveries: Option<u32>,
        backoff: Option<&Bound<'_, PyAny>>,
        window: Option<u32>,
        start: &str,
        dead_letter: Option<std::path::PathBuf>,
        max_age: Option<f64>,
        dead_letter_expired: bool,
    ) -> PyResult<Worker> {
        let options = Settings {
            visibility_timeout,
            max_deliveries,
            backoff,
            window,
            start,
            dead_letter,
            max_age,
            dead_letter_expired,
        }
        .options()?;
        Worker::join(py, &self.get()?, group, &options)
    }

    /// The unsettled records of work group `group`, oldest first (a snapshot, as Redis's
    /// `XPENDING`).
    fn pending(&self, py: Python<'_>, group: &str) -> PyResult<Vec<PendingInfo>> {
        let queue = self.get()?;
        let pending = py.detach(|| queue.pending(group)).py_err()?;
        Ok(pending.into_iter().map(PendingInfo).collect())
    }

    /// The counters and window of work group `group`.
    fn work_info(&self, py: Python<'_>, group: &str) -> PyResult<WorkInfo> {
        let queue = self.get()?;
        py.detach(|| queue.work_info(group)).py_err().map(WorkInfo)
    }

    /// Every consumer group with its committed offset, lag and holder (a snapshot).
    fn groups(&self) -> PyResult<Vec<GroupInfo>> {
        Ok(self
            .get()?
            .groups()
            .into_iter()
            .map(GroupInfo)
            .collect())
    }

    /// Moves group `group`'s committed offset to `to` ("earliest", "latest", an offset, or a
    /// time as a datetime or seconds since the epoch) and returns it. Raises `Busy` while a
    /// live member holds the group.
    fn reset_group(&self, py: Python<'_>, group: &str, to: &Bound<'_, PyAny>) -> PyResult<u64> {
        let to = options::seek_to(to)?;
        let queue = self.get()?;
        py.detach(|| queue.reset_group(group, to)).py_err()
    }

    /// Deletes a consumer group that no live member holds.
    fn delete_group(&self, py: Python<'_>, group: &str) -> PyResult<()> {
        let queue = self.get()?;
        py.detach(|| queue.delete_group(group)).py_err()
    }

    /// Flushes every committed record to disk now and returns the durable offset.
    fn flush(&self, py: Python<'_>) -> PyResult<u64> {
        let queue = self.get()?;
        py.detach(|| queue.flush()).py_err()
    }

    /// Checks now, rather than at the next round of the process's file watcher (about once a
    /// second), that the file is whole and still the one its path names; raises `Stale`
    /// otherwise, as every later call on this queue then does.
    fn check_file(&self) -> PyResult<()> {
        self.get()?.check_file().py_err()
    }

    /// Faults every page of the queue file into this process's page tables now, so that the
    /// first lap of its publishes and polls takes no page fault (see `shmq::Queue::prefault`).
    /// Raises `IoError` if the kernel refuses (Linux before 5.14), `Stale` if the file was
    /// cut or replaced.
    fn prefault(&self, py: Python<'_>) -> PyResult<()> {
        let queue = self.get()?;
        py.detach(|| queue.prefault()).py_err()
    }

    /// The queue's state and parameters as a dict (a snapshot): offsets, `protected_bytes`,
    /// `live_producers` and the creation options. `fill` and `producers` are older names of
    /// `protected_bytes` and `live_producers`, kept so existing callers do not break.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let q = self.get()?;
        let g = q.geometry();
        let d = PyDict::new(py);
        d.set_item("path", q.path().to_string_lossy())?;
        d.set_item("tail_offset", q.tail_offset())?;
        d.set_item("oldest_offset", q.oldest_offset())?;
        d.set_item("durable_offset", q.durable_offset())?;
        let protected = q.protected_bytes();
        let live = q.live_producers();
        d.set_item("protected_bytes", protected)?;
        d.set_item("live_producers", live)?;
        d.set_item("fill", protected)?;
        d.set_item("producers", live)?;
        d.set_item("producers_waiting", q.producers_waiting())?;
        d.set_item("capacity", g.capacity)?;
        d.set_item("max_message", g.max_message)?;
        d.set_item("full", g.full_policy.name())?;
        d.set_item("durability", g.durability.name())?;
        d.set_item("group_slots", g.group_slots)?;
        d.set_item("producer_slots", g.producer_slots)?;
        d.set_item("claim_timeout", g.claim_timeout.as_secs_f64())?;
        d.set_item("checksums", g.checksums)?;
        Ok(d)
    }

    /// The next offset a producer will be given.
    #[getter]
    fn tail_offset(&self) -> PyResult<u64> {
        Ok(self.get()?.tail_offset())
    }

    /// The queue file's path.
    #[getter]
    fn path(&self) -> PyResult<String> {
        Ok(self.get()?.path().to_string_lossy().into_owned())
    }

    /// Closes this handle (producers and consumers made from it stay usable).
    fn close(&self) {
        lock(&self.queue).take();
    }

    /// Pickles as "open the same path", so a queue passed to a `multiprocessing` worker (spawn
    /// or forkserver) is opened anew there.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        crate::reopen::<Queue>(py, self.get()?.path())
    }

    fn __repr__(&self) -> String {
        match lock(&self.queue).as_ref() {
            Some(q) => format!("<shmq.Queue {:?}>", q.path()),
            None => "<shmq.Queue (closed)>".into(),
        }
    }
}
}

/// Publishes records to a queue. A context manager; `close()` frees its producer slot.
#[pyclass(module = "shmq", frozen)]
pub struct Producer {
    inner: Mutex<Option<shmq::Producer>>,
    timeout: Option<Duration>,
    /// The queue flushes on publish (`Batch`, `Sync`): every publish releases the GIL.
    flushes: bool,
}

/// A payload as bytes: `bytes` without a copy, any other buffer copied.
pub enum Data<'py> {
    /// A `bytes` object (immutable: its bytes may be read without the GIL).
    Bytes(Bound<'py, PyBytes>),
    /// A copy of another buffer (bytearray, memoryview, ...), which could change under a
    /// reader without the GIL.
    Copied(Vec<u8>),
}

impl Data<'_> {
    /// Reads `obj` as a payload.
    pub fn from<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Data<'py>> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Data::Bytes(b.clone()));
        }
        let buf = pyo3::buffer::PyBuffer::<u8>::get(obj)?;
        Ok(Data::Copied(buf.to_vec(obj.py())?))
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Data::Bytes(b) => b.as_bytes(),
            Data::Copied(v) => v,
        }
    }
}

/// Runs one publish-like call in GIL-released slices of at most [`crate::SLICE`] with a
/// signal check between them, retrying while it times out before the overall `timeout`.
/// `call(slice)` must be safe to repeat after `Error::Timeout` (nothing published).
///
/// `fast`: try once with the GIL held and no waiting first (the call does no I/O).
pub fn publish_sliced<T: Send>(
    py: Python<'_>,
    timeout: Option<Duration>,
    fast: bool,
    mut call: impl FnMut(Duration) -> shmq::Result<T> + Send,
) -> PyResult<T> {
    if fast {
        match call(Duration::ZERO) {
            Err(shmq::Error::Timeout { .. }) if timeout != Some(Duration::ZERO) => {}
            other => return other.py_err(),
        }
    }
    let started = Instant::now();
    let wait = Wait::new(timeout);
    loop {
        let slice = wait.slice();
        match py.detach(|| call(slice)) {
            Err(shmq::Error::Timeout { .. }) if wait.more(py)? => continue,
            // The error reports the whole wait, not the last slice.
            Err(shmq::Error::Timeout {
                path,
                waiting_for,
                blocked_by,
                ..
            }) => {
                return Err(shmq::Error::Timeout {
                    path,
                    waiting_for,
                    waited: started.elapsed(),
                    blocked_by,
                })
                .py_err()
            }
            other => return other.py_err(),
        }
    }
}

pymethods_closing! {
#[pymethods]
impl Producer {
    /// Publishes `data` (bytes or any buffer) and returns its offset. Under durability "sync"
    /// it returns once the record is on disk. `delay` (seconds): work groups deliver it no
    /// earlier than that after its timestamp; `ttl` (seconds): they expire it rather than
    /// deliver it later than that (plain consumer groups read it at once either way; whole
    /// milliseconds, the delay below 2^32 ms, the ttl below 2^31 ms). Raises `Full` (policy "reject"), `Timeout` (policy
    /// "block" with a timeout), `TooBig`, ... (see the exception classes).
    #[pyo3(signature = (data, *, delay=None, ttl=None))]
    fn publish(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        delay: Option<f64>,
        ttl: Option<f64>,
    ) -> PyResult<u64> {
        let schedule = match (delay, ttl) {
            (None, None) => None,
            _ => Some(shmq::Schedule {
                delay: delay
                    .map(|s| options::seconds("delay", s))
                    .transpose()?
                    .unwrap_or_default(),
                ttl: ttl.map(|s| options::seconds("ttl", s)).transpose()?,
            }),
        };
        let data = Data::from(data)?;
        let bytes = data.bytes();
        let mut guard = lock_handle(py, &self.inner);
        let producer = guard.as_mut().ok_or_else(|| closed("producer"))?;
        let result = publish_sliced(py, self.timeout, !self.flushes, |slice| {
            producer.set_timeout(Some(slice));
            match &schedule {
                None => producer.publish(bytes),
                Some(s) => producer.publish_scheduled(bytes, s),
            }
        });
        match result {
            // Published; only the wait for its flush ran out of slice: confirm it in slices
            // (so Ctrl-C still works) within what is left of the caller's timeout.
            Err(e) if e.is_instance_of::<crate::errors::NotDurable>(py) => {
                let value = e.value(py);
                if value.getattr("op")?.extract::<String>()? != "wait for the flush" {
                    return Err(e);
                }
                let offset: u64 = value.getattr("offset")?.extract()?;
                let confirmed = publish_sliced(py, self.timeout, false, |slice| {
                    producer.wait_durable(offset, Some(slice))
                });
                match confirmed {
                    Ok(()) => Ok(offset),
                    Err(t) if t.is_instance_of::<crate::errors::Timeout>(py) => Err(e),
                    Err(other) => Err(other),
                }
            }
            other => other,
        }
    }

    /// Waits until record `offset` and every record before it are on disk (flushing if no
    /// other process is): a publisher confirm. `timeout` in seconds, `None` for no limit.
    #[pyo3(signature = (offset, timeout=None))]
    fn wait_durable(&self, py: Python<'_>, offset: u64, timeout: Option<f64>) -> PyResult<()> {
        let timeout = crate::timeout(timeout)?;
        let mut guard = lock_handle(py, &self.inner);
        let producer = guard.as_mut().ok_or_else(|| closed("producer"))?;
        publish_sliced(py, timeout, false, |slice| {
            producer.wait_durable(offset, Some(slice))
        })
    }

    /// Frees the producer slot.
    fn close(&self, py: Python<'_>) {
        lock_handle(py, &self.inner).take();
    }
}
}

/// One consumer group as `Queue.groups()` saw it: the library's record, read through getters.
#[pyclass(module = "shmq", frozen)]
pub struct GroupInfo(pub shmq::GroupInfo);

#[pymethods]
impl GroupInfo {
    /// The group's name.
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }

    /// The next offset the group reads after a restart.
    #[getter]
    fn committed(&self) -> u64 {
        self.0.committed
    }

    /// Records published but not committed by the group.
    #[getter]
    fn lag(&self) -> u64 {
        self.0.lag
    }

    /// Ring bytes from the committed position to the tail.
    #[getter]
    fn lag_bytes(&self) -> u64 {
        self.0.lag_bytes
    }

    /// Whether the group holds producers back.
    #[getter]
    fn gating(&self) -> bool {
        self.0.gating
    }

    /// The process id of the member holding it, if any.
    #[getter]
    fn holder(&self) -> Option<u32> {
        self.0.holder
    }

    /// Whether that holder is alive.
    #[getter]
    fn holder_alive(&self) -> bool {
        self.0.holder_alive
    }

    fn __repr__(&self) -> String {
        format!(
            "GroupInfo(name={:?}, committed={}, lag={}, gating={}, holder={})",
            self.0.name,
            self.0.committed,
            self.0.lag,
            if self.0.gating { "True" } else { "False" },
            self.0.holder.map_or("None".into(), |pid| pid.to_string())
        )
    }
}
