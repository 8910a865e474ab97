"""Work groups from Python: competing workers with ack, nack, reject and extend, leases that
run out (LeaseExpired), dead letters, delayed and expiring records, the pending list and
counters, and worker processes (fork and spawn) sharing a group, each job acked once."""

import multiprocessing
import os
import threading
import time

import pytest

import shmq
from mp_workers import work


@pytest.fixture
def dlq(tmp_path):
    """An empty dead-letter queue and its path."""
    path = str(tmp_path / "dead.q")
    with shmq.Queue.create(path, capacity=1 << 16, max_message=4096) as q:
        yield path, q


def test_ack_nack_reject_and_dead_letters(queue, dlq):
    dlq_path, dead = dlq
    dead.consumer("audit").close()
    with queue.worker(
        "jobs", visibility_timeout=10, max_deliveries=2, backoff=0.01, dead_letter=dlq_path
    ) as w:
        p = queue.producer()
        for i in range(3):
            assert p.publish(b"job %d" % i) == i
        first = w.poll(5)
        assert (first.offset, first.deliveries, first.payload) == (0, 1, b"job 0")
        assert first.ticket.offset == 0 and first.ticket.deliveries == 1
        assert first.ticket.deadline_ms > time.time() * 1000
        w.ack(first)
        second = w.poll(5)
        assert second.offset == 1
        w.nack(second, delay=0)
        again = w.poll(5)
        assert (again.offset, again.deliveries) == (1, 2)
        w.nack(again.ticket)  # the second delivery of 2: dead-lettered
        third = w.poll(5)
        assert third.offset == 2
        w.reject(third)
        assert w.poll(0.2) is None
        info = queue.work_info("jobs")
        assert (info.delivered, info.redelivered, info.acked, info.dead_lettered) == (3, 1, 1, 2)
        assert (info.in_flight, info.waiting, info.base, info.next) == (0, 0, 3, 3)
        assert info.workers == 1 and info.window == 4096
    with dead.consumer("audit") as c:
        letters = [shmq.DeadLetter.parse(m.payload) for m in c.iter(timeout=0.5)]
    assert [(d.offset, d.reason, d.deliveries, d.payload) for d in letters] == [
        (1, "max_deliveries", 2, b"job 1"),
        (2, "rejected", 1, b"job 2"),
    ]
    assert all(d.source == os.path.abspath(queue.path) for d in letters)
    assert all(d.dead_at_ns >= d.timestamp_ns for d in letters)


def test_lease_expired_and_extend(queue):
    with queue.worker("lease", visibility_timeout=0.3) as w:
        queue.producer().publish(b"slow")
        job = w.poll(5)
        time.sleep(0.6)
        with pytest.raises(shmq.LeaseExpired) as e:
            w.ack(job)
        assert (e.value.group, e.value.offset, e.value.path) == ("lease", 0, queue.path)
        assert "record 0" in str(e.value)
        again = w.poll(5)
        assert (again.offset, again.deliveries) == (0, 2)
        old = again.ticket.deadline_ms
        stale = shmq.Ticket(again.offset, again.deliveries, again.ticket.deadline_ms)
        assert stale == again.ticket
        deadline = w.extend(again, 5)
        assert deadline > old and again.ticket.deadline_ms == deadline
        with pytest.raises(shmq.LeaseExpired):
            w.ack(stale)  # the ticket from before the extension
        with pytest.raises(shmq.LeaseExpired):
            w.ack(shmq.Ticket(0, 7, deadline))  # made-up parts
        [pending] = queue.pending("lease")
        assert (pending.offset, pending.state, pending.deliveries) == (0, "in_flight", 2)
        assert pending.holder == os.getpid() and pending.holder_alive
        assert pending.deadline_ms == deadline
        time.sleep(0.6)  # past the first lease, within the extension
        w.ack(again)
        with pytest.raises(shmq.LeaseExpired):
            w.ack(again)
        assert queue.pending("lease") == []
        with pytest.raises(TypeError):
            w.ack(0)
        with pytest.raises(ValueError):
            w.extend(again, -1)


def test_wrong_group_kind_and_options(queue):
    queue.consumer("plain").close()
    with pytest.raises(shmq.WrongGroupKind) as e:
        queue.worker("plain")
    assert isinstance(e.value, shmq.InvalidArgument)
    assert (e.value.group, e.value.expected, e.value.argument) == ("plain", "work", "group")
    queue.worker("w", backoff=(0.01, 1.0), start="latest").close()
    with pytest.raises(shmq.WrongGroupKind) as e:
        queue.consumer("w")
    assert e.value.expected == "plain"
    with pytest.raises(shmq.InvalidArgument) as e:
        queue.worker("bad", window=100)
    assert "window" in str(e.value)
    with pytest.raises(TypeError):
        queue.worker("bad", backoff="fast")
    with pytest.raises(ValueError):
        queue.worker("bad", start="middle")
    with pytest.raises(shmq.UnknownGroup):
        queue.work_info("nope")


def test_delay_and_ttl(queue):
    with queue.worker("s") as w:
        p = queue.producer()
        assert p.publish(b"stale", ttl=0.001) == 0
        time.sleep(0.05)  # past its time to live before a poll sees it
        sent = time.monotonic()
        assert p.publish(b"later", delay=0.4) == 1
        assert w.poll(0.1) is None
        job = w.poll(10)
        assert job.payload == b"later" and time.monotonic() - sent >= 0.35
        w.ack(job)
        info = queue.work_info("s")
        assert (info.expired, info.acked, info.base) == (1, 1, 2)
        with pytest.raises(shmq.InvalidArgument):
            p.publish(b"x", delay=2.0**32 / 1000)
        with pytest.raises(ValueError):
            p.publish(b"x", ttl=-1)


def test_dead_letter_parse_refuses_other_bytes():
    with pytest.raises(shmq.CorruptFile) as e:
        shmq.DeadLetter.parse(b"not a dead letter")
    assert "too short" in str(e.value)
    with pytest.raises(shmq.CorruptFile):
        shmq.DeadLetter.parse(bytearray(64))


def test_poll_releases_the_gil_and_close(queue):
    w = queue.worker("g")
    got = []
    poller = threading.Thread(target=lambda: got.append(w.poll(10)))
    poller.start()
    time.sleep(0.2)  # the poller waits with the GIL released, so this thread runs
    queue.producer().publish(b"late")
    poller.join(20)
    assert not poller.is_alive()
    assert got[0].payload == b"late"
    w.ack(got[0])
    w.close()
    with pytest.raises(ValueError):
        w.poll(0)
    with queue.worker("g") as w2:
        assert w2.group == "g"
    assert queue.work_info("g").workers == 0


WORKERS = 3
COUNT = 400


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_worker_processes_ack_each_job_once(qpath, method):
    ctx = multiprocessing.get_context(method)
    with shmq.Queue.create(qpath, capacity=1 << 20, max_message=1024) as q:
        ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(target=work, args=(q, "jobs", COUNT, ready, go, results))
            for _ in range(WORKERS)
        ]
        for proc in procs:
            proc.start()
        try:
            pids = {ready.get(timeout=120) for _ in procs}
            assert pids == {proc.pid for proc in procs}
            assert q.work_info("jobs").workers == WORKERS
            go.set()
            with q.producer() as p:
                for i in range(COUNT):
                    p.publish(b"job %d" % i)
            done = [results.get(timeout=120) for _ in procs]
        finally:
            for proc in procs:
                proc.join(60)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        assert [proc.exitcode for proc in procs] == [0] * WORKERS
        offsets = sorted(o for _, mine, _ in done for o in mine)
        assert offsets == list(range(COUNT)), "every job acked exactly once"
        for _, mine, payloads in done:
            assert payloads == [b"job %d" % o for o in mine]
        info = q.work_info("jobs")
        assert (info.acked, info.redelivered, info.base) == (COUNT, 0, COUNT)
        assert q.pending("jobs") == []
