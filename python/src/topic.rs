//! `Topic` (a directory of partitions), `TopicProducer`, `TopicConsumer` (a group member) and
//! their info records.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::{PyTraverseError, PyVisit};

use crate::consumer::{aio, consumer_pymethods, Handle, Message, Messages};
use crate::errors::IntoPy;
use crate::options;
use crate::queue::{closed, lock, lock_handle, publish_sliced, Data, GroupInfo};

/// An open topic: a directory of partitions with keyed routing. A context manager.
#[pyclass(module = "shmq", frozen)]
pub struct Topic {
    topic: Mutex<Option<shmq::Topic>>,
}

impl Topic {
    fn get(&self) -> PyResult<shmq::Topic> {
        lock(&self.topic).clone().ok_or_else(|| closed("topic"))
    }

    fn wrap(t: shmq::Topic) -> Topic {
        Topic {
            topic: Mutex::new(Some(t)),
        }
    }
}

pymethods_closing! {
#[pymethods]
impl Topic {
    /// Creates a topic directory with `partitions` partitions (never replacing one). The other
    /// keyword arguments are `Queue.create`'s, for every partition.
    #[staticmethod]
    #[pyo3(signature = (path, partitions=1, **options))]
    fn create(
        py: Python<'_>,
        path: std::path::PathBuf,
        partitions: u32,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Topic> {
        let options = shmq::TopicOptions {
            partitions,
            queue: options::queue_options(options)?,
        };
        py.detach(|| shmq::Topic::create(&path, &options))
            .py_err()
            .map(Topic::wrap)
    }

    /// Opens an existing topic directory (`trust_owner`, `trust_group` as for `Queue.open`).
    #[staticmethod]
    #[pyo3(signature = (path, *, trust_owner=None, trust_group=None))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        trust_owner: Option<u32>,
        trust_group: Option<u32>,
    ) -> PyResult<Topic> {
        let trust = options::trust(trust_owner, trust_group);
        py.detach(|| shmq::Topic::open_trusting(&path, &trust))
            .py_err()
            .map(Topic::wrap)
    }

    /// Whether `path` is a topic directory (rather than a queue file).
    #[staticmethod]
    fn is_topic(path: std::path::PathBuf) -> bool {
        shmq::Topic::is_topic(path)
    }

    /// A new producer. `timeout` and `coarse_timestamps` as for `Queue.producer`.
    #[pyo3(signature = (*, timeout=None, coarse_timestamps=false))]
    fn producer(&self, timeout: Option<f64>, coarse_timestamps: bool) -> PyResult<TopicProducer> {
        let timeout = crate::timeout(timeout)?;
        let topic = self.get()?;
        let flushes = topic
            .partitions()
            .first()
            .is_some_and(|q| q.geometry().durability != shmq::Durability::None);
        let mut producer = topic.producer().py_err()?;
        producer.set_timestamps(crate::timestamps(coarse_timestamps));
        Ok(TopicProducer {
            inner: Mutex::new(Some(producer)),
            timeout,
            flushes,
        })
    }

    /// Joins consumer group `group` as a member: it gets its share of the partitions, which
    /// move between members as they join, leave or die. `gating` and `start` apply where the
    /// group is created; `heartbeat_interval` and `session_timeout` in seconds.
    #[pyo3(signature = (group, *, gating=true, start="earliest", heartbeat_interval=0.1, session_timeout=1.0))]
    fn consumer(
        &self,
        py: Python<'_>,
        group: &str,
        gating: bool,
        start: &str,
        heartbeat_interval: f64,
        session_timeout: f64,
    ) -> PyResult<TopicConsumer> {
        let topic = self.get()?;
        let member = shmq::MemberOptions {
            heartbeat_interval: options::seconds("heartbeat_interval", heartbeat_interval)?,
            session_timeout: options::seconds("session_timeout", session_timeout)?,
            subscribe: shmq::Subscribe {
                gating,
                start: options::start(start)?,
                session_timeout: None,
            },
        };
        let consumer = py.detach(|| topic.subscribe(group, &member)).py_err()?;
        Ok(TopicConsumer {
            handle: Handle::new(consumer, false, "topic consumer"),
            group: group.into(),
        })
    }

    /// Takes transactional id `id` (1 to 64 bytes): records sent through the producer become
    /// visible, in every partition, when its `commit` returns, or never. Raises `Busy` while
    /// another live process holds the id. A dead holder's transaction is settled first.
    fn transactional_producer(
        &self,
        py: Python<'_>,
        id: &str,
    ) -> PyResult<crate::transaction::TransactionalProducer> {
        let topic = self.get()?;
        py.detach(|| topic.transactional_producer(id))
            .py_err()
            .map(crate::transaction::TransactionalProducer::wrap)
    }

    /// Every transactional id of the topic with the state of its last transaction and its
    /// holder (a snapshot; empty if none was ever used).
    fn transactions(&self) -> PyResult<Vec<crate::transaction::TransactionInfo>> {
        let t = self.get()?.transactions().py_err()?;
        Ok(t.into_iter().map(Into::into).collect())
    }

    /// Adds partitions (keys then route differently: see the README).
    fn grow(&self, py: Python<'_>, partitions: u32) -> PyResult<()> {
        let mut topic = self.get()?;
        py.detach(|| topic.grow(partitions)).py_err()?;
        *lock(&self.topic) = Some(topic);
        Ok(())
    }

    /// `Queue.prefault` for every partition file of the topic.
    fn prefault(&self, py: Python<'_>) -> PyResult<()> {
        let topic = self.get()?;
        py.detach(|| topic.prefault()).py_err()
    }

    /// Checks every partition file and the membership file now (see `Queue.check_file`);
    /// raises `Stale` for the first one that is damaged.
    fn check_file(&self) -> PyResult<()> {
        self.get()?.check_file().py_err()
    }

    /// The number of partitions this handle knows of.
    #[getter]
    fn partitions(&self) -> PyResult<u32> {
        Ok(self.get()?.partition_count())
    }

    /// The topic directory.
    #[getter]
    fn path(&self) -> PyResult<String> {
        Ok(self.get()?.path().to_string_lossy().into_owned())
    }

    /// Per partition: its file, tail offset and groups (a snapshot).
    fn info(&self) -> PyResult<Vec<PartitionInfo>> {
        Ok(self
            .get()?
            .info()
            .into_iter()
            .map(|p| PartitionInfo {
                partition: p.partition,
                path: p.path,
                tail_offset: p.tail_offset,
                groups: p.groups,
            })
            .collect())
    }

    /// The group members in the membership file (a snapshot).
    fn members(&self) -> PyResult<Vec<MemberInfo>> {
        Ok(self
            .get()?
            .members()
            .into_iter()
            .map(|m| MemberInfo {
                group: m.group,
                pid: m.pid,
                alive: m.alive,
                heartbeat_age: m.heartbeat_age.as_secs_f64(),
                session_timeout: m.session_timeout.as_secs_f64(),
                live: m.live,
            })
            .collect())
    }

    /// Moves group `group`'s committed offset in every partition to `to` ("earliest",
    /// "latest", or a time) and returns the new offsets by partition. Raises `Busy` while a
    /// live member holds a partition.
    fn reset_group(
        &self,
        py: Python<'_>,
        group: &str,
        to: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<u64>> {
        let to = options::seek_to(to)?;
        let topic = self.get()?;
        py.detach(|| {
            topic
                .partitions()
                .iter()
                .map(|q| q.reset_group(group, to))
                .collect::<shmq::Result<Vec<u64>>>()
        })
        .py_err()
    }

    /// Closes this handle (producers and consumers made from it stay usable).
    fn close(&self) {
        lock(&self.topic).take();
    }

    /// Pickles as "open the same path" (see `Queue.__reduce__`).
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        crate::reopen::<Topic>(py, self.get()?.path())
    }
}
}

/// Publishes to a topic: keyed (per-key order), to a partition, or round-robin.
#[pyclass(module = "shmq", frozen)]
pub struct TopicProducer {
    inner: Mutex<Option<shmq::TopicProducer>>,
    timeout: Option<Duration>,
    flushes: bool,
}

pymethods_closing! {
#[pymethods]
impl TopicProducer {
    /// Publishes `value` and returns `(partition, offset)`: with a `key` to partition
    /// crc32c(key) mod N (so one key's records stay in order), without one round-robin.
    #[pyo3(signature = (value, key=None))]
    fn publish(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(u32, u64)> {
        let value = Data::from(value)?;
        let key = key.map(Data::from).transpose()?;
        let (value, key) = (value.bytes(), key.as_ref().map(Data::bytes));
        let mut guard = lock_handle(py, &self.inner);
        let producer = guard.as_mut().ok_or_else(|| closed("producer"))?;
        let sent = publish_sliced(py, self.timeout, !self.flushes, |slice| {
            producer.set_timeout(Some(slice));
            match key {
                Some(k) => producer.publish_keyed(k, value),
                None => producer.publish(value),
            }
        })?;
        Ok((sent.partition, sent.offset))
    }

    /// Publishes `value` to `partition` and returns its offset.
    #[pyo3(signature = (partition, value, key=None))]
    fn publish_to(
        &self,
        py: Python<'_>,
        partition: u32,
        value: &Bound<'_, PyAny>,
        key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let value = Data::from(value)?;
        let key = key.map(Data::from).transpose()?;
        let (value, key) = (value.bytes(), key.as_ref().map(Data::bytes));
        let mut guard = lock_handle(py, &self.inner);
        let producer = guard.as_mut().ok_or_else(|| closed("producer"))?;
        publish_sliced(py, self.timeout, !self.flushes, |slice| {
            producer.set_timeout(Some(slice));
            producer.publish_to(partition, key, value)
        })
    }

    /// Frees the producer's slots.
    fn close(&self, py: Python<'_>) {
        lock_handle(py, &self.inner).take();
    }
}
}

/// A member of a topic's consumer group. Heartbeats and rebalances happen inside `poll`, so
/// poll at least every heartbeat interval. Iterable, awaitable and a context manager like
/// `Consumer`; messages carry `.partition` and `.key`.
#[pyclass(module = "shmq", frozen)]
pub struct TopicConsumer {
    handle: Handle<shmq::TopicConsumer>,
    group: String,
}

consumer_pymethods! {
#[pymethods]
impl TopicConsumer {
    /// The next message of a held partition, waiting up to `timeout` seconds (`None`:
    /// forever); `None` if none came.
    poll;
    /// A coroutine: the next message within `timeout` seconds, without blocking the loop.
    next;
    /// Leaves the group: its partitions move to the other members.
    close;

    /// Commits `msg` (a topic `Message`), or `offset` of `partition` when called as
    /// `commit(partition, offset)`. Raises `NotHeld` if the partition moved to another member.
    #[pyo3(signature = (msg, offset=None))]
    fn commit(&self, py: Python<'_>, msg: &Bound<'_, PyAny>, offset: Option<u64>) -> PyResult<()> {
        let (partition, offset) = match offset {
            Some(offset) => (msg.extract::<u32>()?, offset),
            None => {
                let m = msg.cast::<Message>()?;
                let partition: Option<u32> = m.getattr("partition")?.extract()?;
                let partition = partition.ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err("not a topic message (no partition)")
                })?;
                (partition, m.getattr("offset")?.extract()?)
            }
        };
        self.handle.with(py, |c| c.commit(partition, offset))
    }

    /// The partitions this member holds now.
    #[getter]
    fn assignment(&self, py: Python<'_>) -> PyResult<Vec<u32>> {
        self.handle.query(py, |c| c.assignment())
    }

    /// The group's committed offset in `partition`, if this member holds it.
    fn committed(&self, py: Python<'_>, partition: u32) -> PyResult<Option<u64>> {
        self.handle.query(py, |c| c.committed(partition))
    }
}
}

/// One partition as `Topic.info()` saw it.
#[pyclass(module = "shmq", frozen)]
pub struct PartitionInfo {
    partition: u32,
    path: std::path::PathBuf,
    tail_offset: u64,
    groups: Vec<shmq::GroupInfo>,
}

#[pymethods]
impl PartitionInfo {
    /// The partition's index.
    #[getter]
    fn partition(&self) -> u32 {
        self.partition
    }

    /// Its queue file.
    #[getter]
    fn path(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    /// The next offset a producer will be given in it.
    #[getter]
    fn tail_offset(&self) -> u64 {
        self.tail_offset
    }

    /// Its consumer groups (the holder is the member reading this partition).
    #[getter]
    fn groups(&self) -> Vec<GroupInfo> {
        self.groups.iter().cloned().map(GroupInfo).collect()
    }
}

/// One member in a topic's membership file.
#[pyclass(module = "shmq", frozen, get_all)]
pub struct MemberInfo {
    /// Its group.
    pub group: String,
    /// Its process id.
    pub pid: u32,
    /// Whether its process holds its lease lock.
    pub alive: bool,
    /// Seconds since its last heartbeat.
    pub heartbeat_age: f64,
    /// Seconds its heartbeat may age before it is counted out.
    pub session_timeout: f64,
    /// Whether it counts as a member (alive with a fresh heartbeat).
    pub live: bool,
}
