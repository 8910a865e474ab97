"""shmq: a persistent, lock-free, multi-process message queue over a shared memory-mapped file.

Processes on one host map the same queue file and exchange records through atomics in it: no
broker, no socket. This package is a native extension over the Rust library (see README.md).

    import shmq

    with shmq.Queue.create("/dev/shm/orders.q", capacity=4 << 20) as q:
        producer = q.producer()
        producer.publish(b"order 42 paid")
        consumer = q.consumer("billing")
        for msg in consumer.iter(timeout=0.1):
            print(msg.offset, msg.payload)
            consumer.commit(msg)
"""

from ._shmq import (
    FORMAT_VERSION,
    Aborted,
    Busy,
    Consumer,
    CorruptFile,
    Error,
    Exists,
    Forked,
    Full,
    GroupInfo,
    InvalidArgument,
    IoError,
    Lagged,
    MemberInfo,
    Message,
    Messages,
    NotDurable,
    NotFound,
    NotHeld,
    OffsetOutOfRange,
    PartitionInfo,
    Payload,
    Poisoned,
    Producer,
    Queue,
    Stale,
    TakenOver,
    Timeout,
    TooBig,
    TooMany,
    Topic,
    TopicConsumer,
    TopicProducer,
    UnknownGroup,
    Unsupported,
    Untrusted,
    WrongKind,
)

__all__ = [
    "FORMAT_VERSION",
    "Aborted",
    "Busy",
    "Consumer",
    "CorruptFile",
    "Error",
    "Exists",
    "Forked",
    "Full",
    "GroupInfo",
    "InvalidArgument",
    "IoError",
    "Lagged",
    "MemberInfo",
    "Message",
    "Messages",
    "NotDurable",
    "NotFound",
    "NotHeld",
    "OffsetOutOfRange",
    "PartitionInfo",
    "Payload",
    "Poisoned",
    "Producer",
    "Queue",
    "Stale",
    "TakenOver",
    "Timeout",
    "TooBig",
    "TooMany",
    "Topic",
    "TopicConsumer",
    "TopicProducer",
    "UnknownGroup",
    "Unsupported",
    "Untrusted",
    "WrongKind",
]
