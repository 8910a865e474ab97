"""Ctrl-C interrupts a poll or a publish blocked with the GIL released."""

import os
import signal
import subprocess
import textwrap
import time

CHILD = textwrap.dedent(
    """
    import sys, time, shmq
    q = shmq.Queue.open(sys.argv[1])
    c = q.consumer("sig")
    print("polling", flush=True)
    start = time.monotonic()
    try:
        %s
    except KeyboardInterrupt:
        print("interrupted after %%.3f" %% (time.monotonic() - start), flush=True)
        sys.exit(0)
    print("returned", flush=True)
    sys.exit(3)
    """
)


def run(queue, python, call):
    child = subprocess.Popen(
        [python, "-c", CHILD % call, queue.path],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ,
    )
    try:
        assert child.stdout.readline().strip() == "polling"
        time.sleep(0.5)  # well into the blocked poll
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        child.kill()
    assert child.returncode == 0, out
    assert out.startswith("interrupted"), out
    # The wait is cut in 0.1 s slices; allow for a loaded machine.
    assert took < 5, f"KeyboardInterrupt took {took:.2f} s"


def test_sigint_interrupts_a_blocked_poll(queue, python):
    run(queue, python, "c.poll(None)")


def test_sigint_interrupts_a_poll_with_a_long_timeout(queue, python):
    run(queue, python, "c.poll(3600)")


def test_sigint_interrupts_a_publish_waiting_for_room(queue, python):
    # The gating group "sig" never commits, so the 64 KiB ring fills and the publish blocks.
    run(queue, python, "p = q.producer()\n    while True: p.publish(bytes(1000))")
