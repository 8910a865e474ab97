"""Worker functions for test_fork.py (a module of its own so that spawned workers import it)."""

import os

import shmq


def publish(queue, who, count, inherited=None):
    """Publishes `who i` for i in range(count) through a producer of this process. With
    `inherited` (handles made by the parent before a fork), first checks they raise Forked."""
    if inherited is not None:
        for call in (lambda: inherited[0].publish(b"nope"), lambda: inherited[1].poll(0)):
            try:
                call()
            except shmq.Forked as e:
                assert e.pid == os.getppid() and e.path == queue.path, (e.pid, e.path)
                assert "before a fork" in str(e)
            else:
                raise AssertionError("an inherited handle worked in the child")
    with queue.producer() as producer:
        for i in range(count):
            producer.publish(b"%s %d" % (who.encode(), i))


def consume(path, group, count, results):
    """Opens `path` anew, reads and commits `count` records of `group`, and puts their
    payloads on `results`."""
    with shmq.Queue.open(path) as queue, queue.consumer(group) as consumer:
        got = []
        while len(got) < count:
            msg = consumer.poll(60)
            assert msg is not None, f"timed out after {len(got)} records"
            got.append(msg.payload)
            consumer.commit(msg)
        results.put(got)


def work(queue, group, count, ready, go, results):
    """Joins work group `group` of `queue` (inherited across a fork, or reopened by path when
    spawned), says it is `ready`, waits for `go`, then acks jobs until the group counts
    `count` acks, and puts (pid, offsets acked, payloads) on `results`."""
    with queue.worker(group, visibility_timeout=60) as worker:
        ready.put(os.getpid())
        assert go.wait(60), "never told to start"
        offsets, payloads = [], []
        while queue.work_info(group).acked < count:
            job = worker.poll(0.2)
            if job is None:
                continue
            worker.ack(job)
            offsets.append(job.offset)
            payloads.append(job.payload)
        results.put((os.getpid(), offsets, payloads))
