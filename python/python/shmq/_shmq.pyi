"""Type stubs of the native module `shmq._shmq` (re-exported by `shmq`)."""

import datetime
import os
from collections.abc import Iterator
from typing import Any, Literal, Optional, Self, Union

FORMAT_VERSION: int

_Buffer = Union[bytes, bytearray, memoryview]
_Target = Union[Literal["earliest", "latest", "committed"], int, float, datetime.datetime]
_Start = Literal["earliest", "latest"]

class Error(Exception):
    """Base class of every error shmq raises."""

class IoError(Error):
    path: str
    op: str
    errno: Optional[int]

class CorruptFile(Error):
    path: str
    kind: str

class Exists(Error):
    path: str

class NotFound(Error):
    path: str

class Untrusted(Error):
    path: str
    mode: int

class InvalidArgument(Error):
    argument: str
    path: Optional[str]

class Unsupported(Error): ...

class TooBig(Error):
    len: int
    max: int

class WrongKind(InvalidArgument):
    path: str
    found: str
    expected: str

class Full(Error):
    path: str

class Timeout(Error):
    path: str
    waited: float

class TooMany(Error):
    slots: int

class UnknownGroup(Error):
    group: str

class Busy(Error):
    group: str
    pid: int

class TakenOver(Error):
    group: str
    found: int

class NotHeld(Error):
    group: str
    partition: int

class Lagged(Error):
    lost: int

class Aborted(Error):
    offset: int

class NotDurable(Error):
    path: str
    offset: int
    op: str

class Forked(Error):
    path: str
    pid: int

class Poisoned(Error):
    path: str
    offset: int

class Stale(Error):
    path: str
    why: str

class OffsetOutOfRange(Error):
    requested: int
    earliest: int
    latest: int

class LeaseExpired(Error):
    path: str
    group: str
    offset: int

class WrongGroupKind(InvalidArgument):
    path: str
    group: str
    expected: str

class Message:
    """One record. `payload` is bytes, or a read-only memoryview for a zero-copy consumer."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def aborted_before(self) -> int: ...
    @property
    def partition(self) -> Optional[int]: ...
    @property
    def key(self) -> Optional[bytes]: ...
    @property
    def payload(self) -> Union[bytes, memoryview]: ...

class Payload:
    """The buffer exporter behind a zero-copy payload's memoryview."""

class Messages(Iterator[Message]):
    """Messages until none comes within the timeout."""

    def __iter__(self) -> Self: ...
    def __next__(self) -> Message: ...

class GroupInfo:
    name: str
    committed: int
    lag: int
    lag_bytes: int
    gating: bool
    holder: Optional[int]
    holder_alive: bool

class Producer:
    def publish(
        self, data: _Buffer, *, delay: Optional[float] = None, ttl: Optional[float] = None
    ) -> int: ...
    def wait_durable(self, offset: int, timeout: Optional[float] = None) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class Consumer:
    def poll(self, timeout: Optional[float] = None) -> Optional[Message]: ...
    def commit(self, msg: Union[Message, int]) -> None: ...
    def seek(self, to: _Target) -> None: ...
    def set_verify_checksums(self, verify: bool) -> None: ...
    @property
    def group(self) -> str: ...
    @property
    def position(self) -> int: ...
    @property
    def committed(self) -> int: ...
    @property
    def lag(self) -> int: ...
    def iter(self, timeout: Optional[float] = None) -> Messages: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Message: ...
    async def next(self, timeout: Optional[float] = None) -> Optional[Message]: ...
    def __aiter__(self) -> Self: ...
    async def __anext__(self) -> Message: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class Queue:
    @staticmethod
    def create(
        path: Union[str, "os.PathLike[str]"],
        *,
        capacity: int = ...,
        max_message: int = ...,
        full: Literal["block", "reject", "overwrite"] = "block",
        durability: Literal["none", "batch", "sync"] = "none",
        batch_delay: float = 0.01,
        batch_bytes: int = ...,
        group_slots: int = 64,
        producer_slots: int = 64,
        claim_timeout: float = 1.0,
        mode: int = 0o600,
        checksums: bool = True,
    ) -> Queue: ...
    @staticmethod
    def open(
        path: Union[str, "os.PathLike[str]"],
        *,
        trust_owner: Optional[int] = None,
        trust_group: Optional[int] = None,
    ) -> Queue: ...
    def producer(
        self, *, timeout: Optional[float] = None, coarse_timestamps: bool = False
    ) -> Producer: ...
    def consumer(
        self,
        group: str,
        *,
        create: bool = True,
        gating: bool = True,
        start: _Start = "earliest",
        session_timeout: Optional[float] = None,
        zero_copy: bool = False,
    ) -> Consumer: ...
    def worker(
        self,
        group: str,
        *,
        visibility_timeout: Optional[float] = None,
        max_deliveries: Optional[int] = None,
        backoff: Union[float, tuple[float, float], None] = None,
        window: Optional[int] = None,
        start: _Start = "earliest",
        dead_letter: Union[str, "os.PathLike[str]", None] = None,
        max_age: Optional[float] = None,
        dead_letter_expired: bool = False,
    ) -> Worker: ...
    def pending(self, group: str) -> list[PendingInfo]: ...
    def work_info(self, group: str) -> WorkInfo: ...
    def groups(self) -> list[GroupInfo]: ...
    def reset_group(self, group: str, to: _Target) -> int: ...
    def delete_group(self, group: str) -> None: ...
    def flush(self) -> int: ...
    def check_file(self) -> None: ...
    def prefault(self) -> None: ...
    def info(self) -> dict[str, Any]: ...
    @property
    def tail_offset(self) -> int: ...
    @property
    def path(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class TransactionalProducer:
    """Holds one transactional id of a topic: what it sends becomes visible at `commit`, or never."""

    def send(self, value: _Buffer, key: Optional[_Buffer] = None) -> int: ...
    def send_to(self, partition: int, value: _Buffer, key: Optional[_Buffer] = None) -> None: ...
    def commit(self) -> list[tuple[int, int]]: ...
    def commit_consumed(self, consumer: Consumer, offset: int) -> list[tuple[int, int]]: ...
    def abort(self) -> None: ...
    @property
    def pending(self) -> int: ...
    @property
    def id(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class TransactionInfo:
    id: Optional[str]
    slot: int
    holder: Optional[int]
    holder_alive: bool
    epoch: int
    state: Literal["none", "preparing", "committed", "aborted"]
    settled: int

class TopicProducer:
    def publish(self, value: _Buffer, key: Optional[_Buffer] = None) -> tuple[int, int]: ...
    def publish_to(self, partition: int, value: _Buffer, key: Optional[_Buffer] = None) -> int: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class TopicConsumer:
    def poll(self, timeout: Optional[float] = None) -> Optional[Message]: ...
    def commit(self, msg: Union[Message, int], offset: Optional[int] = None) -> None: ...
    @property
    def assignment(self) -> list[int]: ...
    def committed(self, partition: int) -> Optional[int]: ...
    @property
    def group(self) -> str: ...
    def iter(self, timeout: Optional[float] = None) -> Messages: ...
    def __iter__(self) -> Self: ...
    def __next__(self) -> Message: ...
    async def next(self, timeout: Optional[float] = None) -> Optional[Message]: ...
    def __aiter__(self) -> Self: ...
    async def __anext__(self) -> Message: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class PartitionInfo:
    @property
    def partition(self) -> int: ...
    @property
    def path(self) -> str: ...
    @property
    def tail_offset(self) -> int: ...
    @property
    def groups(self) -> list[GroupInfo]: ...

class MemberInfo:
    group: str
    pid: int
    alive: bool
    heartbeat_age: float
    session_timeout: float
    live: bool

class Topic:
    @staticmethod
    def create(
        path: Union[str, "os.PathLike[str]"], partitions: int = 1, **options: Any
    ) -> Topic: ...
    @staticmethod
    def open(
        path: Union[str, "os.PathLike[str]"],
        *,
        trust_owner: Optional[int] = None,
        trust_group: Optional[int] = None,
    ) -> Topic: ...
    @staticmethod
    def is_topic(path: Union[str, "os.PathLike[str]"]) -> bool: ...
    def producer(
        self, *, timeout: Optional[float] = None, coarse_timestamps: bool = False
    ) -> TopicProducer: ...
    def consumer(
        self,
        group: str,
        *,
        gating: bool = True,
        start: _Start = "earliest",
        heartbeat_interval: float = 0.1,
        session_timeout: float = 1.0,
    ) -> TopicConsumer: ...
    def grow(self, partitions: int) -> None: ...
    def check_file(self) -> None: ...
    def prefault(self) -> None: ...
    @property
    def partitions(self) -> int: ...
    @property
    def path(self) -> str: ...
    def info(self) -> list[PartitionInfo]: ...
    def members(self) -> list[MemberInfo]: ...
    def transactional_producer(self, id: str) -> TransactionalProducer: ...
    def transactions(self) -> list[TransactionInfo]: ...
    def reset_group(self, group: str, to: _Target) -> list[int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class Ticket:
    """What settles a delivery; `Ticket(offset, deliveries, deadline_ms)` rebuilds one."""

    def __init__(self, offset: int, deliveries: int, deadline_ms: int) -> None: ...
    @property
    def offset(self) -> int: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def deadline_ms(self) -> int: ...

class Job:
    """One delivery of a work group."""

    @property
    def payload(self) -> bytes: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ns(self) -> int: ...
    @property
    def deliveries(self) -> int: ...
    @property
    def ticket(self) -> Ticket: ...

class Worker:
    def poll(self, timeout: Optional[float] = None) -> Optional[Job]: ...
    def ack(self, ticket: Union[Ticket, Job]) -> None: ...
    def nack(self, ticket: Union[Ticket, Job], delay: Optional[float] = None) -> None: ...
    def reject(self, ticket: Union[Ticket, Job]) -> None: ...
    def extend(self, ticket: Union[Ticket, Job], seconds: float) -> int: ...
    @property
    def group(self) -> str: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: Any) -> None: ...

class PendingInfo:
    offset: int
    state: Literal["in_flight", "waiting", "dead_lettering"]
    holder: Optional[int]
    holder_alive: bool
    deadline_ms: int
    deliveries: int

class WorkInfo:
    delivered: int
    redelivered: int
    acked: int
    dead_lettered: int
    expired: int
    in_flight: int
    waiting: int
    base: int
    next: int
    window: int
    workers: int

class DeadLetter:
    offset: int
    timestamp_ns: int
    dead_at_ns: int
    deliveries: int
    reason: Literal["rejected", "max_deliveries", "expired"]
    source: str
    payload: bytes
    @staticmethod
    def parse(data: _Buffer) -> DeadLetter: ...
