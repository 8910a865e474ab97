"""multiprocessing with the fork and spawn start methods: workers make their own handles,
and a handle inherited from the parent raises a clear error in the child."""

import multiprocessing

import pytest

import shmq
from mp_workers import consume, publish

WORKERS = 3
COUNT = 300


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_workers(qpath, method):
    ctx = multiprocessing.get_context(method)
    with shmq.Queue.create(qpath, capacity=1 << 20, max_message=1024) as q:
        p0 = q.producer()
        c0 = q.consumer("parent")
        q.consumer("workers", create=True).close()
        # Forked workers inherit the parent's handles (and check they refuse to work); spawned
        # ones get the queue pickled, i.e. reopened by path, and handles cannot be sent.
        inherited = (p0, c0) if method == "fork" else None
        results = ctx.Queue()
        reader = ctx.Process(target=consume, args=(qpath, "workers", WORKERS * COUNT, results))
        reader.start()
        writers = [
            ctx.Process(target=publish, args=(q, f"w{i}", COUNT, inherited))
            for i in range(WORKERS)
        ]
        for w in writers:
            w.start()
        got = results.get(timeout=120)
        for w in writers + [reader]:
            w.join(60)
            assert w.exitcode == 0, f"{w.name} exited with {w.exitcode}"
        # Every record exactly once, each writer's in its own order.
        for i in range(WORKERS):
            mine = [m for m in got if m.startswith(b"w%d " % i)]
            assert mine == [b"w%d %d" % (i, n) for n in range(COUNT)]
        assert len(got) == WORKERS * COUNT
        # The parent's handles still work, and see what the workers published.
        assert p0.publish(b"parent") == WORKERS * COUNT
        seen = [m.payload for m in c0.iter(timeout=0.5)]
        assert sorted(seen) == sorted(got + [b"parent"])
        assert {g.name: g.committed for g in q.groups()}["workers"] == WORKERS * COUNT


def test_handles_do_not_pickle(queue):
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(queue.producer())
