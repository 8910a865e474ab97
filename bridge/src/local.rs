//! The local side of a bridge: a topic directory or a plain queue file behind one interface.
//! A queue is a topic of one partition (0) whose records have no key.

use std::path::Path;
use std::time::Duration;

/// An open topic or queue file.
pub(crate) enum Endpoint {
    /// A plain queue file: partition 0, no keys.
    Queue(shmq::Queue),
    /// A topic directory.
    Topic(shmq::Topic),
}

/// A record read from an [`Endpoint`], borrowed until the next poll.
pub(crate) struct Read<'a> {
    /// Its partition (0 for a queue).
    pub(crate) partition: u32,
    /// Its offset in that partition.
    pub(crate) offset: u64,
    /// When it was published, nanoseconds since the Unix epoch.
    pub(crate) timestamp_ns: u64,
    /// Its key (always `None` for a queue).
    pub(crate) key: Option<&'a [u8]>,
    /// Its value.
    pub(crate) value: &'a [u8],
}

/// A member of a consumer group of an [`Endpoint`].
pub(crate) enum Reader {
    /// The group's one member in a queue file.
    Queue(shmq::Consumer),
    /// A member of the group in a topic.
    Topic(shmq::TopicConsumer),
}

/// A producer of an [`Endpoint`].
pub(crate) enum Writer {
    /// Publishes to a queue file.
    Queue(shmq::Producer),
    /// Publishes to a topic's partitions.
    Topic(shmq::TopicProducer),
}

impl Endpoint {
    /// Opens `path` as a topic if it is a topic directory (what `shmq info` checks), as a queue
    /// file otherwise.
    pub(crate) fn open(path: &Path) -> shmq::Result<Endpoint> {
        if shmq::Topic::is_topic(path) {
            shmq::Topic::open(path).map(Endpoint::Topic)
        } else {
            shmq::Queue::open(path).map(Endpoint::Queue)
        }
    }

    /// The partitions: the queue itself, or the topic's queue files.
    pub(crate) fn partitions(&self) -> &[shmq::Queue] {
        match self {
            Endpoint::Queue(q) => std::slice::from_ref(q),
            Endpoint::Topic(t) => t.partitions(),
        }
    }

    /// Whether records carry keys (a topic's do, a queue's do not).
    pub(crate) fn keyed(&self) -> bool {
        matches!(self, Endpoint::Topic(_))
    }

    /// Joins consumer group `group`, created (gating) at `start` if it is missing. A topic
    /// member is counted out `session` after its last poll; a queue's member holds the group
    /// for as long as its process lives (the kernel's lease).
    pub(crate) fn reader(
        &self,
        group: &str,
        start: shmq::Start,
        session: Duration,
    ) -> shmq::Result<Reader> {
        let subscribe = shmq::Subscribe {
            start,
            ..shmq::Subscribe::default()
        };
        match self {
            Endpoint::Queue(q) => q.subscribe(group, &subscribe).map(Reader::Queue),
            Endpoint::Topic(t) => {
                let options = shmq::MemberOptions {
                    session_timeout: session,
                    subscribe,
                    ..shmq::MemberOptions::default()
                };
                t.subscribe(group, &options).map(Reader::Topic)
            }
        }
    }

    /// A producer.
    pub(crate) fn writer(&self) -> shmq::Result<Writer> {
        match self {
            Endpoint::Queue(q) => q.producer().map(Writer::Queue),
            Endpoint::Topic(t) => t.producer().map(Writer::Topic),
        }
    }

    /// Where a message with `key` from partition `source_partition` of the far side goes, and
    /// the key it is stored with: a topic routes by key (`partition_for_key`), or by the source
    /// partition for a message without one; a queue has one partition and stores no key.
    pub(crate) fn route<'k>(
        &self,
        key: Option<&'k [u8]>,
        source_partition: u32,
    ) -> (u32, Option<&'k [u8]>) {
        match self {
            Endpoint::Queue(_) => (0, None),
            Endpoint::Topic(t) => {
                let n = t.partition_count();
                match key {
                    Some(k) => (shmq::partition_for_key(k, n), Some(k)),
                    None => (source_partition % n, None),
                }
            }
        }
    }
}

impl Reader {
    /// The next record, waiting up to `timeout`.
    pub(crate) fn poll(&mut self, timeout: Duration) -> shmq::Result<Option<Read<'_>>> {
        Ok(match self {
            Reader::Queue(c) => c.poll(Some(timeout))?.map(|m| Read {
                partition: 0,
                offset: m.offset,
                timestamp_ns: m.timestamp_ns,
                key: None,
                value: m.payload,
            }),
            Reader::Topic(c) => c.poll(Some(timeout))?.map(|m| Read {
                partition: m.partition,
                offset: m.offset,
                timestamp_ns: m.timestamp_ns,
                key: m.key,
                value: m.value,
            }),
        })
    }

    /// Commits `offset` (the last record processed) of `partition`.
    pub(crate) fn commit(&mut self, partition: u32, offset: u64) -> shmq::Result<()> {
        match self {
            Reader::Queue(c) => c.commit(offset),
            Reader::Topic(c) => c.commit(partition, offset),
        }
    }

    /// The partitions this member holds now.
    pub(crate) fn assignment(&self) -> Vec<u32> {
        match self {
            Reader::Queue(_) => vec![0],
            Reader::Topic(c) => c.assignment(),
        }
    }

    /// The group's committed offset in `partition` (the next record to read), if this member
    /// holds it.
    pub(crate) fn committed(&self, partition: u32) -> Option<u64> {
        match self {
            Reader::Queue(c) => (partition == 0).then(|| c.committed()),
            Reader::Topic(c) => c.committed(partition),
        }
    }
}

impl Writer {
    /// Publishes `value` with `key` to `partition` (as [`Endpoint::route`] chose them): its
    /// offset.
    pub(crate) fn publish(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> shmq::Result<u64> {
        match self {
            Writer::Queue(p) => p.publish(value),
            Writer::Topic(p) => p.publish_to(partition, key, value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;
    use std::time::Duration;

    fn options() -> shmq::Options {
        shmq::Options {
            capacity: 1 << 20,
            max_message: 4096,
            ..shmq::Options::default()
        }
    }

    #[test]
    fn a_queue_is_one_partition_without_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("q");
        shmq::Queue::create(&path, &options()).expect("create the queue");
        let queue = Endpoint::open(&path).expect("open the queue");
        assert!(matches!(queue, Endpoint::Queue(_)) && !queue.keyed());
        assert_eq!(queue.partitions().len(), 1);
        assert_eq!(queue.route(Some(b"k"), 5), (0, None));

        let mut writer = queue.writer().expect("producer");
        let mut reader = queue
            .reader("g", shmq::Start::Earliest, Duration::from_secs(1))
            .expect("join");
        assert_eq!(writer.publish(0, None, b"v").expect("publish"), 0);
        let read = reader
            .poll(Duration::from_secs(5))
            .expect("poll")
            .expect("a record");
        assert_eq!(
            (read.partition, read.offset, read.key, read.value),
            (0, 0, None, &b"v"[..])
        );
        reader.commit(0, 0).expect("commit");
        assert_eq!(reader.assignment(), vec![0]);
        assert_eq!((reader.committed(0), reader.committed(1)), (Some(1), None));
    }

    #[test]
    fn a_topic_routes_by_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t");
        let topic_options = shmq::TopicOptions {
            partitions: 4,
            queue: options(),
        };
        shmq::Topic::create(&path, &topic_options).expect("create the topic");
        let topic = Endpoint::open(&path).expect("open the topic");
        assert!(matches!(topic, Endpoint::Topic(_)) && topic.keyed());
        assert_eq!(topic.partitions().len(), 4);
        let p = shmq::partition_for_key(b"k", 4);
        assert_eq!(topic.route(Some(b"k"), 9), (p, Some(&b"k"[..])));
        assert_eq!(topic.route(None, 6), (2, None));
    }
}
