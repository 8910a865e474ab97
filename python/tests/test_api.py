"""The Python API over one process: queues, producers, consumers, groups, topics, errors."""

import datetime
import os
import pickle
import time

import pytest

import shmq


def test_publish_poll_commit_resume(queue):
    producer = queue.producer()
    offsets = [producer.publish(b"m%d" % i) for i in range(5)]
    assert offsets == [0, 1, 2, 3, 4]
    with queue.consumer("billing") as consumer:
        got = []
        for msg in consumer.iter(timeout=0.2):
            got.append((msg.offset, msg.payload))
            assert isinstance(msg.payload, bytes)
            assert abs(msg.timestamp - time.time()) < 60
            assert msg.partition is None and msg.key is None
            if msg.offset == 2:
                consumer.commit(msg)
                break
        assert got == [(0, b"m0"), (1, b"m1"), (2, b"m2")]
        assert consumer.committed == 3
    # A new member resumes after the committed offset (at-least-once).
    with queue.consumer("billing") as consumer:
        assert consumer.poll(1).payload == b"m3"
        assert consumer.poll(1).payload == b"m4"
        consumer.commit(4)
    assert {g.name: g.committed for g in queue.groups()} == {"billing": 5}


def test_buffers_and_poll_timeout(queue):
    producer = queue.producer()
    producer.publish(bytearray(b"ba"))
    producer.publish(memoryview(b"xmv")[1:])
    consumer = queue.consumer("g")
    assert consumer.poll(0).payload == b"ba"
    assert consumer.poll(0).payload == b"mv"
    start = time.monotonic()
    assert consumer.poll(0.3) is None
    assert time.monotonic() - start >= 0.29
    assert consumer.poll(0) is None
    with pytest.raises(TypeError):
        producer.publish("a str is not bytes")


def test_group_admin(queue):
    producer = queue.producer()
    for i in range(10):
        producer.publish(b"%d" % i)
    c = queue.consumer("audit")
    for _ in range(4):
        c.commit(c.poll(1))
    info = {g.name: g for g in queue.groups()}["audit"]
    assert (info.committed, info.lag, info.gating, info.holder_alive) == (4, 6, True, True)
    with pytest.raises(shmq.Busy) as err:
        queue.reset_group("audit", "earliest")
    assert err.value.group == "audit" and err.value.pid > 0
    c.close()
    assert queue.reset_group("audit", "earliest") == 0
    assert queue.reset_group("audit", 7) == 7
    assert queue.reset_group("audit", "latest") == 10
    assert queue.reset_group("audit", datetime.datetime(2000, 1, 1)) == 0
    with pytest.raises(shmq.OffsetOutOfRange) as err:
        queue.reset_group("audit", 99)
    assert (err.value.requested, err.value.latest) == (99, 10)
    queue.delete_group("audit")
    assert queue.groups() == []
    with pytest.raises(shmq.UnknownGroup) as err:
        queue.consumer("audit", create=False)
    assert err.value.group == "audit"
    info = queue.info()
    assert info["tail_offset"] == 10 and info["capacity"] == 1 << 16


def test_errors_carry_path_and_fields(qpath, tmp_path):
    missing = str(tmp_path / "missing.q")
    with pytest.raises(shmq.NotFound) as err:
        shmq.Queue.open(missing)
    assert err.value.path == missing and missing in str(err.value)
    assert isinstance(err.value, shmq.Error)
    with shmq.Queue.create(qpath, capacity=4096, max_message=100, full="reject") as q:
        with pytest.raises(shmq.Exists) as err:
            shmq.Queue.create(qpath)
        assert err.value.path == qpath
        p = q.producer()
        with pytest.raises(shmq.TooBig) as err:
            p.publish(b"x" * 101)
        assert (err.value.len, err.value.max) == (101, 100)
        q.consumer("holder")  # gating, never commits
        with pytest.raises(shmq.Full) as err:
            for _ in range(1000):
                p.publish(b"y" * 64)
        assert err.value.path == qpath
        assert '"holder"' in str(err.value)
    with pytest.raises(shmq.WrongKind) as err:
        shmq.Queue.open(str(tmp_path))
    assert isinstance(err.value, shmq.InvalidArgument)
    assert err.value.argument == "path"
    assert err.value.expected == "a queue file"
    (tmp_path / "junk.q").write_bytes(b"\0" * 8192)
    with pytest.raises(shmq.CorruptFile) as err:
        shmq.Queue.open(str(tmp_path / "junk.q"))
    assert err.value.path.endswith("junk.q")
    with pytest.raises(shmq.InvalidArgument) as err:
        shmq.Queue.create(str(tmp_path / "bad.q"), capacity=1000)
    assert err.value.argument == "options"
    assert err.value.path is None
    assert "capacity 1000" in str(err.value)
    (tmp_path / "link.q").symlink_to(tmp_path / "junk.q")
    with pytest.raises(shmq.InvalidArgument) as err:
        shmq.Queue.open(str(tmp_path / "link.q"))
    assert err.value.argument == "path"
    assert err.value.path == str(tmp_path / "link.q")
    with pytest.raises(TypeError):
        shmq.Queue.create(str(tmp_path / "bad.q"), capacityy=4096)
    with pytest.raises(ValueError):
        shmq.Queue.create(str(tmp_path / "bad.q"), durability="maybe")


def test_block_timeout(qpath):
    with shmq.Queue.create(qpath, capacity=4096, max_message=100) as q:
        q.consumer("slow")
        p = q.producer(timeout=0.2)
        with pytest.raises(shmq.Timeout) as err:
            for _ in range(1000):
                p.publish(b"z" * 64)
        assert err.value.path == qpath
        assert err.value.waited >= 0.2


def test_lagged_reports_lost(qpath):
    with shmq.Queue.create(qpath, capacity=4096, max_message=100, full="overwrite") as q:
        c = q.consumer("lappy", gating=False)
        p = q.producer()
        for i in range(500):
            p.publish(b"%03d" % i + b"-" * 60)
        with pytest.raises(shmq.Lagged) as err:
            c.poll(0)
        assert err.value.lost > 0
        msg = c.poll(0)
        assert msg.offset == err.value.lost
        assert msg.payload.startswith(b"%03d" % msg.offset)


def test_zero_copy_views(queue):
    p = queue.producer()
    p.publish(b"first")
    p.publish(b"second")
    c = queue.consumer("zc", zero_copy=True)
    m1 = c.poll(1)
    view = m1.payload
    assert isinstance(view, memoryview) and view.readonly and bytes(view) == b"first"
    part = view[1:3]
    del view
    # A slice is one more view of the same export: it holds the consumer too.
    with pytest.raises(BufferError):
        c.poll(0)
    with pytest.raises(BufferError):
        c.commit(m1)
    del part
    with m1.payload as v:
        assert v.tobytes() == b"first"
    c.commit(m1)
    # Committing moved on: the old payload is gone, not silently changed.
    with pytest.raises(BufferError):
        m1.payload
    m2 = c.poll(1)
    assert bytes(m2.payload) == b"second"
    with pytest.raises(ValueError):
        queue.consumer("zc2", zero_copy=True, session_timeout=1.0)


def test_closed_handles(queue):
    p = queue.producer()
    p.close()
    with pytest.raises(ValueError):
        p.publish(b"x")
    c = queue.consumer("g")
    c.close()
    with pytest.raises(ValueError):
        c.poll(0)
    queue.close()
    with pytest.raises(ValueError):
        queue.producer()


def test_pickle_reopens(queue):
    again = pickle.loads(pickle.dumps(queue))
    assert again.path == queue.path
    queue.producer().publish(b"seen by both")
    assert again.tail_offset == 1


def test_topic_keys_and_groups(tmp_path):
    path = str(tmp_path / "orders.topic")
    with shmq.Topic.create(path, partitions=8, capacity=1 << 16, max_message=1024) as topic:
        assert shmq.Topic.is_topic(path) and topic.partitions == 8
        members = topic.consumer("billing")
        producer = topic.producer()
        # crc32c("order-42") % 8 == 6 (FORMAT.md's test vector).
        assert producer.publish(b"paid", key=b"order-42") == (6, 0)
        assert producer.publish(b"shipped", key=b"order-42") == (6, 1)
        assert producer.publish_to(3, b"direct") == 0
        got = []
        for msg in members.iter(timeout=0.5):
            got.append((msg.partition, msg.offset, msg.key, msg.payload))
            members.commit(msg)
        assert sorted(got) == [(3, 0, None, b"direct"), (6, 0, b"order-42", b"paid"),
                               (6, 1, b"order-42", b"shipped")]
        assert sorted(members.assignment) == list(range(8))
        assert members.committed(6) == 2
        assert [m.group for m in topic.members()] == ["billing"]
        info = topic.info()
        assert info[6].tail_offset == 2 and info[6].groups[0].name == "billing"
        members.close()
        assert topic.reset_group("billing", "earliest") == [0] * 8
    with pytest.raises(shmq.NotFound):
        shmq.Topic.open(str(tmp_path / "none.topic"))


def test_threads_share_a_consumer(queue):
    """A poll blocked in one thread (GIL released) does not stop another thread's work."""
    import threading

    c = queue.consumer("t")
    got = []
    t = threading.Thread(target=lambda: got.append(c.poll(10)))
    t.start()
    time.sleep(0.2)
    queue.producer().publish(b"from main")
    t.join(10)
    assert not t.is_alive() and got[0].payload == b"from main"


@pytest.mark.parametrize("durability", ["sync", "batch"])
def test_durable_publish_and_confirm(tmp_path, durability):
    path = str(tmp_path / f"{durability}.q")
    with shmq.Queue.create(path, capacity=1 << 16, max_message=1024, durability=durability) as q:
        assert q.info()["durability"] == durability
        p = q.producer(timeout=30)
        offsets = [p.publish(b"d%d" % i) for i in range(20)]
        assert offsets == list(range(20))
        p.wait_durable(19, timeout=30)
        assert q.info()["durable_offset"] == 20
        assert q.flush() == 20
        c = q.consumer("g")
        for i in range(20):
            msg = c.poll(1)
            assert msg.payload == b"d%d" % i
        c.commit(msg)
        assert q.groups()[0].committed == 20
        with pytest.raises(shmq.InvalidArgument):
            p.wait_durable(99, timeout=1)


def test_truncated_and_removed_files_raise_stale(tmp_path):
    truncated = str(tmp_path / "truncated.q")
    removed = str(tmp_path / "removed.q")
    with shmq.Queue.create(truncated, capacity=1 << 16, max_message=4096) as q, shmq.Queue.create(
        removed, capacity=1 << 16, max_message=4096
    ) as other:
        p = q.producer()
        c = q.consumer("g", create=True)
        p.publish(b"before")
        os.truncate(truncated, 0)
        with pytest.raises(shmq.Stale) as err:
            # The first call after the shrink may still see the mapping; every later one fails.
            for _ in range(2):
                p.publish(b"after")
                c.poll(timeout=0)
        assert err.value.path == truncated
        assert err.value.why == "truncated"
        # Another queue in the same process keeps working until its own file goes.
        op = other.producer()
        assert op.publish(b"fine") == 0
        os.remove(removed)
        deadline = time.monotonic() + 10
        with pytest.raises(shmq.Stale) as err:
            while time.monotonic() < deadline:
                other.check_file()
                time.sleep(0.05)
        assert err.value.why == "removed"


def test_coarse_timestamps(queue):
    producer = queue.producer(coarse_timestamps=True)
    before = time.time()
    for i in range(1000):
        producer.publish(b"c%d" % i)
    after = time.time()
    with queue.consumer("stamps") as consumer:
        stamps = [consumer.poll(1).timestamp for _ in range(1000)]
    # The kernel's last tick: at most one tick (10 ms at CONFIG_HZ=100) before the publish,
    # and shared by the records published within it.
    assert all(before - 0.011 <= t <= after for t in stamps), (before, stamps[0], after)
    assert len(set(stamps)) < 100


def test_prefault(tmp_path):
    path = str(tmp_path / "warm.q")
    with shmq.Queue.create(path, capacity=1 << 20, max_message=4096) as q:
        q.prefault()
        p = q.producer()
        c = q.consumer("g", create=True)
        assert p.publish(b"after the prefault") == 0
        assert c.poll(1).payload == b"after the prefault"
        os.truncate(path, 4096)
        with pytest.raises(shmq.Stale) as err:
            q.prefault()
        assert err.value.path == path and err.value.why == "truncated"
    topic_path = str(tmp_path / "warm.topic")
    with shmq.Topic.create(topic_path, partitions=4, capacity=1 << 16, max_message=1024) as t:
        t.prefault()
        assert t.producer().publish_to(2, b"x") == 0
