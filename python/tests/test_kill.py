"""A Python producer SIGKILLed mid-publish, many times, leaves the queue healthy: later producers
and consumers work, and every acknowledged record is delivered intact."""

import os
import random
import signal
import subprocess
import textwrap
import time

import shmq

ROUNDS = 25

CHILD = textwrap.dedent(
    """
    import itertools, os, sys, shmq
    q = shmq.Queue.open(sys.argv[1])
    who = sys.argv[2]
    ack = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    p = q.producer()
    print("ready", flush=True)
    for n in itertools.count():
        payload = b"%s %d " % (who.encode(), n) + bytes([97 + (n + j) % 26 for j in range(n % 40)])
        offset = p.publish(payload)
        os.write(ack, b"%d %s\\n" % (offset, payload))
    """
)


def well_formed(payload):
    who, n, filler = payload.split(b" ", 2)
    n = int(n)
    return who.startswith(b"k") and filler == bytes([97 + (n + j) % 26 for j in range(n % 40)])


def test_sigkill_mid_publish(tmp_path, python):
    path = str(tmp_path / "kill.q")
    rng = random.Random(7)
    acked = {}
    with shmq.Queue.create(path, capacity=32 << 20, max_message=1024, claim_timeout=0.2) as q:
        q.consumer("all").close()
        for r in range(ROUNDS):
            log = tmp_path / f"k{r}.log"
            child = subprocess.Popen(
                [python, "-c", CHILD, path, f"k{r}", str(log)],
                stdout=subprocess.PIPE,
                env=os.environ,
            )
            try:
                assert child.stdout.readline().strip() == b"ready"
                # The child publishes until it is killed, so every kill lands in its publish
                # loop, some inside a publish (the ring has room for what 25 children publish
                # in this time).
                time.sleep(rng.uniform(0, 0.03))
                child.send_signal(signal.SIGKILL)
                child.wait(30)
            finally:
                child.kill()
            assert child.returncode == -signal.SIGKILL
            if log.exists():
                # Only lines with their newline: a kill can cut the child's last write short
                # (a write that crosses a page of the file stops between pages).
                for line in log.read_bytes().split(b"\n")[:-1]:
                    offset, payload = line.split(b" ", 1)
                    acked[int(offset)] = payload
        assert len(acked) > 0
        # Every killed producer's slot is free again, and a new producer works.
        info = q.info()
        assert info["live_producers"] == 0
        # The older key stays an alias of the new one.
        assert info["producers"] == info["live_producers"]
        assert info["fill"] == info["protected_bytes"]
        with q.producer() as p:
            last = p.publish(b"k-final 0 ")
        # A consumer receives every acknowledged record intact, and nothing torn.
        with q.consumer("all", create=False) as c:
            previous = -1
            seen = {}
            while True:
                msg = c.poll(30)
                assert msg is not None, f"stalled after offset {previous}"
                assert msg.offset == previous + 1 + msg.aborted_before
                previous = msg.offset
                if msg.offset == last:
                    break
                assert well_formed(msg.payload), msg.payload
                seen[msg.offset] = msg.payload
                c.commit(msg)
        missing = {o: p for o, p in acked.items() if seen.get(o) != p}
        assert not missing, f"{len(missing)} acknowledged records not delivered intact"
