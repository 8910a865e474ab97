//! `TransactionalProducer`: transactions across a topic's partitions, and `TransactionInfo`,
//! a transactional id as `Topic.transactions()` reads it.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::consumer::Consumer;
use crate::errors::IntoPy;
use crate::queue::{closed, lock_handle, Data};

/// Holds one transactional id of a topic: records sent through it become visible, in every
/// partition, when `commit` returns, or never. One holder per id at a time, in every process.
#[pyclass(module = "shmq", frozen)]
pub struct TransactionalProducer {
    inner: Mutex<Option<shmq::TransactionalProducer>>,
}

impl TransactionalProducer {
    /// The handle of a producer the topic made.
    pub fn wrap(producer: shmq::TransactionalProducer) -> TransactionalProducer {
        TransactionalProducer {
            inner: Mutex::new(Some(producer)),
        }
    }

    /// Runs `f` on the open producer (`ValueError` once closed).
    fn with<T>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut shmq::TransactionalProducer) -> shmq::Result<T>,
    ) -> PyResult<T> {
        let mut guard = lock_handle(py, &self.inner);
        let producer = guard
            .as_mut()
            .ok_or_else(|| closed("transactional producer"))?;
        f(producer).py_err()
    }
}

pymethods_closing! {
#[pymethods]
impl TransactionalProducer {
    /// Adds `value` to the open transaction and returns its partition: crc32c(key) mod N with
    /// a `key`, round-robin without one. Nothing is written until `commit`.
    #[pyo3(signature = (value, key=None))]
    fn send(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u32> {
        let value = Data::from(value)?;
        let key = key.map(Data::from).transpose()?;
        self.with(py, |p| match &key {
            Some(k) => p.send_keyed(k.bytes(), value.bytes()),
            None => p.send(value.bytes()),
        })
    }

    /// Adds `value` (with `key`, if given) to the open transaction, for `partition`.
    #[pyo3(signature = (partition, value, key=None))]
    fn send_to(
        &self,
        py: Python<'_>,
        partition: u32,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let value = Data::from(value)?;
        let key = key.map(Data::from).transpose()?;
        self.with(py, |p| {
            p.send_to(partition, key.as_ref().map(Data::bytes), value.bytes())
        })
    }

    /// Commits the open transaction: its records become visible at once, in every partition.
    /// Returns `(partition, offset)` per record, in send order. Raises `Aborted` when the
    /// transaction was aborted (none of it is visible); the records are dropped either way.
    fn commit(&self, py: Python<'_>) -> PyResult<Vec<(u32, u64)>> {
        let placed = self.with(py, |p| py.detach(|| p.commit()))?;
        Ok(placed.into_iter().map(|p| (p.partition, p.offset)).collect())
    }

    /// Commits the open transaction together with `consumer`'s commit of `offset` (the last
    /// input record processed): consume-transform-produce. Open this producer before the
    /// consumer, one transactional id per input queue or partition. Raises `TakenOver` before
    /// anything is written if the group's offset moved since the consumer read it.
    fn commit_consumed(
        &self,
        py: Python<'_>,
        consumer: &Consumer,
        offset: u64,
    ) -> PyResult<Vec<(u32, u64)>> {
        let mut guard = lock_handle(py, &self.inner);
        let p = guard
            .as_mut()
            .ok_or_else(|| closed("transactional producer"))?;
        let placed = consumer.handle().with(py, |c| p.commit_consumed(c, offset))?;
        Ok(placed.into_iter().map(|p| (p.partition, p.offset)).collect())
    }

    /// Drops the open transaction's records: nothing of them was written.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |p| {
            p.abort();
            Ok(())
        })
    }

    /// Records sent since the last commit or abort.
    #[getter]
    fn pending(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |p| Ok(p.pending()))
    }

    /// The transactional id.
    #[getter]
    fn id(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |p| Ok(p.id().to_string()))
    }

    /// Frees the id for its next holder; an open transaction's records are dropped.
    fn close(&self, py: Python<'_>) {
        lock_handle(py, &self.inner).take();
    }
}
}

/// One transactional id of a topic as `Topic.transactions()` read it (a snapshot).
#[pyclass(module = "shmq", frozen, get_all)]
pub struct TransactionInfo {
    /// The transactional id (`None` when its name in the file is unreadable).
    pub id: Option<String>,
    /// Its slot in the topic's transaction file.
    pub slot: u32,
    /// Process id of its holder, if any.
    pub holder: Option<u32>,
    /// Whether that holder is running.
    pub holder_alive: bool,
    /// The epoch of its last transaction (one per commit).
    pub epoch: u64,
    /// That transaction's state: "none", "preparing", "committed" or "aborted".
    pub state: &'static str,
    /// The last epoch whose records are all settled.
    pub settled: u64,
}

impl From<shmq::TransactionInfo> for TransactionInfo {
    fn from(t: shmq::TransactionInfo) -> Self {
        TransactionInfo {
            id: t.id,
            slot: t.slot,
            holder: t.holder,
            holder_alive: t.holder_alive,
            epoch: t.epoch,
            state: match t.state {
                shmq::TransactionState::None => "none",
                shmq::TransactionState::Preparing => "preparing",
                shmq::TransactionState::Committed => "committed",
                shmq::TransactionState::Aborted => "aborted",
            },
            settled: t.settled,
        }
    }
}
