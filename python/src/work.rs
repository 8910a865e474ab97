//! Work groups: `Worker` (a member of a queue's work group), `Job`, `Ticket`, the
//! `PendingInfo` and `WorkInfo` records of `Queue.pending` and `Queue.work_info`, and
//! `DeadLetter` (a dead-letter queue's record).

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors::{to_py, IntoPy};
use crate::options;
use crate::queue::{closed, lock_handle};
use crate::Wait;

/// The settings of `Queue.worker`, as Python passed them (`None`: the library's default).
pub struct Settings<'a, 'py> {
    /// Seconds a worker holds a delivery.
    pub visibility_timeout: Option<f64>,
    /// Deliveries before a record is dead-lettered (0: unlimited).
    pub max_deliveries: Option<u32>,
    /// Seconds (a fixed back-off) or `(initial, max)` seconds (an exponential one).
    pub backoff: Option<&'a Bound<'py, PyAny>>,
    /// Window entries.
    pub window: Option<u32>,
    /// `"earliest"` or `"latest"`.
    pub start: &'a str,
    /// The dead-letter queue's path.
    pub dead_letter: Option<std::path::PathBuf>,
    /// Seconds after which a record expires.
    pub max_age: Option<f64>,
    /// Whether expired records are dead-lettered.
    pub dead_letter_expired: bool,
}

impl Settings<'_, '_> {
    /// The library's options for these settings.
    pub fn options(self) -> PyResult<shmq::WorkOptions> {
        let d = shmq::WorkOptions::default();
        let backoff = match self.backoff {
            None => d.backoff,
            Some(b) => backoff(b)?,
        };
        Ok(shmq::WorkOptions {
            visibility_timeout: self
                .visibility_timeout
                .map(|s| options::seconds("visibility_timeout", s))
                .transpose()?
                .unwrap_or(d.visibility_timeout),
            max_deliveries: self.max_deliveries.unwrap_or(d.max_deliveries),
            backoff,
            window: self.window.unwrap_or(d.window),
            start: options::start(self.start)?,
            dead_letter: self.dead_letter,
            max_age: self
                .max_age
                .map(|s| options::seconds("max_age", s))
                .transpose()?,
            dead_letter_expired: self.dead_letter_expired,
        })
    }
}

/// A back-off: seconds (fixed), or a tuple `(initial, max)` of seconds (exponential).
fn backoff(b: &Bound<'_, PyAny>) -> PyResult<shmq::Backoff> {
    if let Ok(t) = b.cast::<PyTuple>() {
        let (initial, max): (f64, f64) = t.extract()?;
        return Ok(shmq::Backoff::Exponential {
            initial: options::seconds("backoff", initial)?,
            max: options::seconds("backoff", max)?,
        });
    }
    let s: f64 = b.extract().map_err(|_| {
        PyTypeError::new_err("backoff must be seconds (fixed) or (initial, max) (exponential)")
    })?;
    Ok(shmq::Backoff::Fixed(options::seconds("backoff", s)?))
}

/// What settles a delivery: `Worker.ack`, `nack`, `reject` and `extend` take it (or the
/// `Job` that carries it). `Ticket(offset, deliveries, deadline_ms)` rebuilds one from its
/// parts, e.g. after passing them to another thread; one whose parts name no delivery the
/// worker holds settles nothing (`LeaseExpired`). `extend` moves its deadline in place.
#[pyclass(module = "shmq", eq)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ticket(shmq::Ticket);

#[pymethods]
impl Ticket {
    #[new]
    fn new(offset: u64, deliveries: u32, deadline_ms: u64) -> Ticket {
        Ticket(shmq::Ticket::from_parts(offset, deliveries, deadline_ms))
    }

    /// The record's offset.
    #[getter]
    fn offset(&self) -> u64 {
        self.0.offset()
    }

    /// Which delivery of the record this is (1 the first time).
    #[getter]
    fn deliveries(&self) -> u32 {
        self.0.deliveries()
    }

    /// When the lease ends, wall-clock milliseconds since the Unix epoch.
    #[getter]
    fn deadline_ms(&self) -> u64 {
        self.0.deadline_ms()
    }

    fn __repr__(&self) -> String {
        format!(
            "Ticket(offset={}, deliveries={}, deadline_ms={})",
            self.0.offset(),
            self.0.deliveries(),
            self.0.deadline_ms()
        )
    }
}

/// One delivery of a work group: `payload` (bytes), `offset`, `timestamp_ns`, `deliveries`
/// (1 the first time) and the `ticket` that settles it.
#[pyclass(module = "shmq", frozen)]
pub struct Job {
    /// The payload.
    #[pyo3(get)]
    payload: Py<PyBytes>,
    /// The record's offset.
    #[pyo3(get)]
    offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    #[pyo3(get)]
    timestamp_ns: u64,
    /// How many times it has been delivered, this time included.
    #[pyo3(get)]
    deliveries: u32,
    /// What settles this delivery.
    #[pyo3(get)]
    ticket: Py<Ticket>,
}

#[pymethods]
impl Job {
    fn __repr__(&self) -> String {
        format!(
            "Job(offset={}, deliveries={})",
            self.offset, self.deliveries
        )
    }
}

/// The ticket of `obj`: a `Ticket`, or a `Job`'s.
fn ticket_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, Ticket>> {
    if let Ok(job) = obj.cast::<Job>() {
        return Ok(job.get().ticket.bind(obj.py()).clone());
    }
    obj.cast::<Ticket>()
        .cloned()
        .map_err(|_| PyTypeError::new_err("expected a Ticket or a Job"))
}

/// A member of a work group (`Queue.worker`): competing consumers that each receive disjoint
/// records and settle each one (`ack`, `nack`, `reject`; `extend` its lease). A context
/// manager; `close()` leaves the group (unsettled deliveries go to another worker once their
/// leases end).
#[pyclass(module = "shmq", frozen)]
pub struct Worker {
    inner: Mutex<Option<shmq::Worker>>,
    group: String,
}

impl Worker {
    /// Joins work group `group` of `queue` with `options`.
    pub fn join(
        py: Python<'_>,
        queue: &shmq::Queue,
        group: &str,
        options: &shmq::WorkOptions,
    ) -> PyResult<Worker> {
        let worker = py.detach(|| queue.worker(group, options)).py_err()?;
        Ok(Worker {
            inner: Mutex::new(Some(worker)),
            group: group.into(),
        })
    }

    /// Runs `f` on the open worker.
    fn with<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut shmq::Worker) -> shmq::Result<T>,
    ) -> PyResult<T> {
        let mut guard = lock_handle(py, &self.inner);
        let worker = guard.as_mut().ok_or_else(|| closed("worker"))?;
        f(worker).py_err()
    }
}

/// A `Job` of the library's.
fn job(py: Python<'_>, j: shmq::Job<'_>) -> PyResult<Job> {
    Ok(Job {
        payload: PyBytes::new(py, j.payload).unbind(),
        offset: j.offset,
        timestamp_ns: j.timestamp_ns,
        deliveries: j.deliveries,
        ticket: Py::new(py, Ticket(j.ticket))?,
    })
}

pymethods_closing! {
#[pymethods]
impl Worker {
    /// The next delivery (a due redelivery first, else a fresh record), waiting up to
    /// `timeout` seconds (`None`: for as long as it takes) with the GIL released; `None` if
    /// nothing came in time. Settle it before `job.ticket.deadline_ms`, or it is delivered
    /// again to any worker.
    #[pyo3(signature = (timeout=None))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Job>> {
        let timeout = crate::timeout(timeout)?;
        let mut guard = lock_handle(py, &self.inner);
        let worker = guard.as_mut().ok_or_else(|| closed("worker"))?;
        // With the GIL held when a record is ready: releasing it costs more than the read.
        match worker.poll(Some(Duration::ZERO)) {
            Ok(Some(j)) => return job(py, j).map(Some),
            Ok(None) if timeout == Some(Duration::ZERO) => return Ok(None),
            Ok(None) => {}
            Err(e) => return Err(to_py(e)),
        }
        let wait = Wait::new(timeout);
        loop {
            let slice = wait.slice();
            match py.detach(|| worker.poll(Some(slice))) {
                Ok(Some(j)) => return job(py, j).map(Some),
                Ok(None) if wait.more(py)? => {}
                Ok(None) => return Ok(None),
                Err(e) => return Err(to_py(e)),
            }
        }
    }

    /// Acks a delivery (a `Ticket` or a `Job`): the record is done. Raises `LeaseExpired`
    /// (nothing changed) if its lease ran out or it was settled already.
    fn ack(&self, py: Python<'_>, ticket: &Bound<'_, PyAny>) -> PyResult<()> {
        let t = ticket_of(ticket)?.borrow().0;
        self.with(py, |w| w.ack(t))
    }

    /// Gives a delivery back: delivered again after `delay` seconds, or after the group's
    /// back-off for `None`; dead-lettered instead once it was delivered the group's
    /// `max_deliveries`. Raises `LeaseExpired` as `ack`.
    #[pyo3(signature = (ticket, delay=None))]
    fn nack(&self, py: Python<'_>, ticket: &Bound<'_, PyAny>, delay: Option<f64>) -> PyResult<()> {
        let t = ticket_of(ticket)?.borrow().0;
        let delay = delay.map(|s| options::seconds("delay", s)).transpose()?;
        self.with(py, |w| w.nack(t, delay))
    }

    /// Rejects a delivery: the record is dead-lettered (reason "rejected"). Raises
    /// `LeaseExpired` as `ack`.
    fn reject(&self, py: Python<'_>, ticket: &Bound<'_, PyAny>) -> PyResult<()> {
        let t = ticket_of(ticket)?.borrow().0;
        self.with(py, |w| w.reject(t))
    }

    /// Extends a delivery's lease to `seconds` from now, updating its ticket (also the one of
    /// the `Job` given) in place, and returns the new `deadline_ms`. Raises `LeaseExpired`
    /// as `ack` (the ticket unchanged).
    fn extend(&self, py: Python<'_>, ticket: &Bound<'_, PyAny>, seconds: f64) -> PyResult<u64> {
        let ticket = ticket_of(ticket)?;
        let by = options::seconds("seconds", seconds)?;
        let mut t = ticket.borrow().0;
        self.with(py, |w| w.extend(&mut t, by))?;
        ticket.borrow_mut().0 = t;
        Ok(t.deadline_ms())
    }

    /// The group's name.
    #[getter]
    fn group(&self) -> &str {
        &self.group
    }

    /// Leaves the group.
    fn close(&self, py: Python<'_>) {
        let worker = lock_handle(py, &self.inner).take();
        py.detach(|| drop(worker));
    }

    fn __repr__(&self) -> String {
        format!("<shmq.Worker group={:?}>", self.group)
    }
}
}

/// One unsettled record of a work group (`Queue.pending`).
#[pyclass(module = "shmq", frozen)]
pub struct PendingInfo(pub shmq::PendingInfo);

#[pymethods]
impl PendingInfo {
    /// The record's offset.
    #[getter]
    fn offset(&self) -> u64 {
        self.0.offset
    }

    /// "in_flight" (held by a worker), "waiting" (due again at `deadline_ms`) or
    /// "dead_lettering".
    #[getter]
    fn state(&self) -> &'static str {
        match self.0.state {
            shmq::PendingState::InFlight => "in_flight",
            shmq::PendingState::Waiting => "waiting",
            shmq::PendingState::DeadLettering => "dead_lettering",
        }
    }

    /// The process id of the worker holding it, if any.
    #[getter]
    fn holder(&self) -> Option<u32> {
        self.0.holder
    }

    /// Whether that worker is alive.
    #[getter]
    fn holder_alive(&self) -> bool {
        self.0.holder_alive
    }

    /// When its lease ends or it is due, wall-clock milliseconds since the Unix epoch.
    #[getter]
    fn deadline_ms(&self) -> u64 {
        self.0.deadline_ms
    }

    /// How many times it was delivered.
    #[getter]
    fn deliveries(&self) -> u32 {
        self.0.deliveries
    }

    fn __repr__(&self) -> String {
        format!(
            "PendingInfo(offset={}, state={:?}, deliveries={})",
            self.0.offset,
            self.state(),
            self.0.deliveries
        )
    }
}

/// A work group's counters and window (`Queue.work_info`).
#[pyclass(module = "shmq", frozen)]
pub struct WorkInfo(pub shmq::WorkInfo);

#[pymethods]
impl WorkInfo {
    /// First deliveries.
    #[getter]
    fn delivered(&self) -> u64 {
        self.0.delivered
    }

    /// Deliveries after the first.
    #[getter]
    fn redelivered(&self) -> u64 {
        self.0.redelivered
    }

    /// Acks.
    #[getter]
    fn acked(&self) -> u64 {
        self.0.acked
    }

    /// Records dead-lettered.
    #[getter]
    fn dead_lettered(&self) -> u64 {
        self.0.dead_lettered
    }

    /// Records expired before they were delivered.
    #[getter]
    fn expired(&self) -> u64 {
        self.0.expired
    }

    /// Records held by a worker now.
    #[getter]
    fn in_flight(&self) -> u64 {
        self.0.in_flight
    }

    /// Records waiting to be delivered (again).
    #[getter]
    fn waiting(&self) -> u64 {
        self.0.waiting
    }

    /// The committed offset: every record before it is settled.
    #[getter]
    fn base(&self) -> u64 {
        self.0.base
    }

    /// The next record to dispatch for the first time.
    #[getter]
    fn next(&self) -> u64 {
        self.0.next
    }

    /// The window (entries).
    #[getter]
    fn window(&self) -> u32 {
        self.0.window
    }

    /// Live workers.
    #[getter]
    fn workers(&self) -> u32 {
        self.0.workers
    }

    fn __repr__(&self) -> String {
        let w = &self.0;
        format!(
            "WorkInfo(delivered={}, redelivered={}, acked={}, dead_lettered={}, expired={}, \
             in_flight={}, waiting={}, base={}, next={}, workers={})",
            w.delivered,
            w.redelivered,
            w.acked,
            w.dead_lettered,
            w.expired,
            w.in_flight,
            w.waiting,
            w.base,
            w.next,
            w.workers
        )
    }
}

/// A record of a dead-letter queue: `DeadLetter.parse(payload)`.
#[pyclass(module = "shmq", frozen)]
pub struct DeadLetter {
    /// The record's offset in its source queue.
    #[pyo3(get)]
    offset: u64,
    /// Its timestamp, nanoseconds since the Unix epoch.
    #[pyo3(get)]
    timestamp_ns: u64,
    /// When it was dead-lettered, nanoseconds since the Unix epoch.
    #[pyo3(get)]
    dead_at_ns: u64,
    /// How many times it was delivered.
    #[pyo3(get)]
    deliveries: u32,
    /// "rejected", "max_deliveries" or "expired".
    #[pyo3(get)]
    reason: &'static str,
    /// The source queue file's path.
    #[pyo3(get)]
    source: String,
    /// The original payload.
    #[pyo3(get)]
    payload: Py<PyBytes>,
}

#[pymethods]
impl DeadLetter {
    /// Reads a dead-letter queue record's payload (bytes or any buffer). Raises
    /// `CorruptFile` for bytes that are not one.
    #[staticmethod]
    fn parse(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<DeadLetter> {
        let data = crate::queue::Data::from(data)?;
        let d = shmq::DeadLetter::parse(data.bytes()).py_err()?;
        Ok(DeadLetter {
            offset: d.offset,
            timestamp_ns: d.timestamp_ns,
            dead_at_ns: d.dead_at_ns,
            deliveries: d.deliveries,
            reason: match d.reason {
                shmq::DeadReason::Rejected => "rejected",
                shmq::DeadReason::MaxDeliveries => "max_deliveries",
                shmq::DeadReason::Expired => "expired",
            },
            source: d.source.into(),
            payload: PyBytes::new(py, d.payload).unbind(),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "DeadLetter(offset={}, reason={:?}, deliveries={}, source={:?})",
            self.offset, self.reason, self.deliveries, self.source
        )
    }
}
