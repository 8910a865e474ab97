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
