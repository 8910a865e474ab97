#!/usr/bin/env python3
"""Forks hundreds of shmq producers from one open queue with multiprocessing (fork start
method), killing most of them with SIGKILL. Run by ffi/tests/interop.rs.

usage: SHMQ_LIB=target/debug/libshmq.so \\
       python3 ffi/tests/python/fork_workers.py PATH ACK_DIR WORKERS SLOTS SEED KILL_MAX_MS

PATH is an existing queue with SLOTS producer slots and the group "g". The parent opens it,
makes a producer P0 and joins group "p" with a consumer C0, then starts WORKERS worker
processes, at most MAX_ALIVE at a time. Each worker:

  1. checks that P0 and C0 (made by its parent) fail with SHMQ_EFORKED, and frees them;
  2. makes a producer of its own from the inherited queue handle (a producer slot leaked by an
     earlier killed worker would show here as SHMQ_EBUSY once SLOTS workers were killed);
  3. if it has the "g" role, joins group "g" (the parent starts a "g" worker whenever none is
     alive, so there is at most one at a time);
  4. publishes records, logging each acknowledged one to ACK_DIR/w<index>.log with one
     os.write ("<offset> <payload>\\n"); a "g" worker also reads and commits "g".

Three in four workers (seven in eight "g" workers) are killed with os.kill(pid, SIGKILL) at a
random moment, uniform in 0..KILL_MAX_MS after their start (after their joining "g" for a "g"
worker), and publish until then (stopping at KILL_RECORDS); the others publish at most
FINISH_RECORDS records and exit. Workers report progress in a shared array (FORKED_OK once
the EFORKED checks passed, JOINED once they joined "g"). After each worker is gone, the parent
checks that it can make a producer, that it can join "g" if the worker was a "g" worker (a
takeover if it held "g" when it was killed), and that P0 and C0 still work (a publish
acknowledged in ACK_DIR/parent.log, polls and commits). At the end it makes producers until
SHMQ_EBUSY: exactly SLOTS - 1 (P0 holds one) means no slot leaked.

Payload of record SEQ of writer WHO ("w<index>" or "parent"): "WHO SEQ " followed by
(SEQ * 7 + sum of WHO's bytes) % 61 filler letters, letter j being 'a' + (SEQ + j) % 26.

Prints one line of counts on success ("fork_workers: workers=... killed=..."); exits 1 after
printing every failure to stderr.
"""

import ctypes
import multiprocessing
import os
import random
import signal
import sys
import time

# The ctypes binding of the examples, examples/python/shmq_ctypes.py.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "examples", "python"))
from shmq_ctypes import EBUSY, EFORKED, OK, TIMEOUT, Message, check, lib  # noqa: E402

MAX_ALIVE = 4
FINISH_RECORDS = 200
# Records a worker to be killed publishes at most (the ring holds them all); one that gets there
# before its kill time waits for it.
KILL_RECORDS = 400
PUBLISH_TIMEOUT_NS = 10_000_000_000
# SHMQ_TIMEOUT from a publish also means the call stalled past the claim timeout and its record
# was aborted: retried, up to this many times in a row.
PUBLISH_RETRIES = 100
# How long a worker may take to join "g" or to finish its records (a loaded machine).
WORKER_DEADLINE_S = 60.0
# After this many failures no more workers are started: the rest would say the same.
MAX_FAILURES = 20
# Flags a worker sets in the shared array.
FORKED_OK, JOINED = 1, 2


def name(status):
    return lib.shmq_status_name(status).decode()


def last_error():
    return lib.shmq_last_error().decode(errors="replace")


def payload(who, seq):
    """The payload of record `seq` of writer `who` (see the module docs)."""
    w = who.encode()
    fill = (seq * 7 + sum(w)) % 61
    return b"%s %d " % (w, seq) + bytes(ord("a") + (seq + j) % 26 for j in range(fill))


def log_ack(fd, offset, data):
    """Appends "<offset> <payload>\\n" with one write: a kill leaves at most a torn last line."""
    line = b"%d %s\n" % (offset, data)
    if os.write(fd, line) != len(line):
        raise OSError("short write to an ack log")


def open_log(ack_dir, who):
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    return os.open(os.path.join(ack_dir, who + ".log"), flags, 0o644)


def worker(index, g_role, finish, records, flags, queue, p0, c0, ack_dir):
    """The body of worker `index`, in a process forked from the parent (see the module docs).
    A failure raises: multiprocessing prints it and the exit code is 1."""
    who = "w%d" % index
    # 1. The parent's handles: refused here, and freeing them leaves the parent's producer slot
    #    and group lease alone.
    msg = Message()
    for what, status in (
        ("publish through the parent's producer", lib.shmq_publish(p0, b"x", 1, 0, None)),
        ("wait_durable on the parent's producer", lib.shmq_wait_durable(p0, 0, 0)),
        ("poll through the parent's consumer", lib.shmq_poll(c0, 0, ctypes.byref(msg))),
        ("commit through the parent's consumer", lib.shmq_commit(c0, 0)),
    ):
        if status != EFORKED:
            raise SystemExit("%s: %s: %s instead of SHMQ_EFORKED" % (who, what, name(status)))
    lib.shmq_producer_free(p0)
    lib.shmq_consumer_free(c0)
    flags[index] |= FORKED_OK

    # 2. A producer of its own, from the inherited queue handle.
    producer = ctypes.c_void_p()
    check("%s: producer" % who, lib.shmq_producer_new(queue, ctypes.byref(producer)))

    # 3. Group "g", whose previous holder (if any) is dead or gone.
    g = ctypes.c_void_p()
    if g_role:
        check("%s: join g" % who, lib.shmq_consumer_new(queue, b"g", ctypes.byref(g)))
        flags[index] |= JOINED

    # 4. Publish, log what was acknowledged, read "g".
    log = open_log(ack_dir, who)
    offset = ctypes.c_uint64()
    for seq in range(records):
        data = payload(who, seq)
        for _ in range(PUBLISH_RETRIES):
            status = lib.shmq_publish(producer, data, len(data), PUBLISH_TIMEOUT_NS,
                                      ctypes.byref(offset))
            if status != TIMEOUT:
                break
        check("%s: publish" % who, status)
        log_ack(log, offset.value, data)
        if g:
            status = lib.shmq_poll(g, 0, ctypes.byref(msg))
            if status == OK:
                status = lib.shmq_commit(g, msg.offset)
            if status != TIMEOUT:
                check("%s: read g" % who, status)
    while not finish:
        time.sleep(1)  # until the parent's SIGKILL
    lib.shmq_consumer_free(g)  # NULL-safe
    lib.shmq_producer_free(producer)
    lib.shmq_close(queue)
    os.close(log)


class Worker:
    def __init__(self, index, g_role, finish, kill_delay, process):
        self.index, self.g_role, self.finish = index, g_role, finish
        self.kill_delay, self.process = kill_delay, process
        now = time.monotonic()
        self.deadline = now + WORKER_DEADLINE_S
        # A "g" worker is killed only after it joined: a random moment of its holding "g".
        self.kill_at = None if finish or g_role else now + kill_delay


class Run:
    def __init__(self, argv):
        path, self.ack_dir = argv[1].encode(), argv[2]
        self.workers, self.slots = int(argv[3]), int(argv[4])
        self.rng = random.Random(int(argv[5]))
        self.kill_max = float(argv[6]) / 1000
        self.failures = []
        self.counts = dict.fromkeys(
            ["workers", "killed", "finished", "eforked", "joined", "takeovers",
             "parent_publishes", "final_producers"], 0)
        self.queue, self.p0, self.c0 = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        check("open", lib.shmq_open(path, ctypes.byref(self.queue)))
        check("P0", lib.shmq_producer_new(self.queue, ctypes.byref(self.p0)))
        check("C0", lib.shmq_consumer_new(self.queue, b"p", ctypes.byref(self.c0)))
        self.parent_log = open_log(self.ack_dir, "parent")
        self.parent_seq = 0
        self.ctx = multiprocessing.get_context("fork")
        self.flags = self.ctx.RawArray(ctypes.c_uint8, self.workers)

    def fail(self, what):
        print("fork_workers: FAIL: " + what, file=sys.stderr, flush=True)
        self.failures.append(what)

    def spawn(self, index, g_alive):
        g_role = not g_alive  # one "g" worker at a time, whenever there is none
        finish = self.rng.randrange(8 if g_role else 4) == 0  # most "g" workers are killed
        records = 20 + self.rng.randrange(FINISH_RECORDS) if finish else KILL_RECORDS
        kill_delay = self.rng.uniform(0, self.kill_max)
        process = self.ctx.Process(
            target=worker,
            args=(index, g_role, finish, records, self.flags, self.queue, self.p0, self.c0,
                  self.ack_dir),
        )
        sys.stdout.flush()  # nothing buffered is written twice
        process.start()
        self.counts["workers"] += 1
        return Worker(index, g_role, finish, kill_delay, process)

    def check_worker(self, w, now):
        """Reaps worker `w` if it exited (or kills it if its time came); True once it is gone."""
        flags = self.flags[w.index]
        if w.g_role and not w.finish and flags & JOINED and w.kill_at is None:
            w.kill_at = now + w.kill_delay
        killing = w.kill_at is not None and now >= w.kill_at
        if now >= w.deadline:
            self.fail("worker w%d did not %s within %d s"
                      % (w.index, "finish" if w.finish else "join g", WORKER_DEADLINE_S))
            killing = True
        # `exitcode` reaps the process if it ended; until it is reaped its pid stays ours, so
        # the kill cannot hit another process.
        if killing and w.process.exitcode is None:
            os.kill(w.process.pid, signal.SIGKILL)
            w.process.join(30)
            if w.process.exitcode is None:
                raise SystemExit("worker w%d survived SIGKILL for 30 s" % w.index)
        code = w.process.exitcode
        if code is None:
            return False
        flags = self.flags[w.index]
        killed = code == -signal.SIGKILL and killing
        if killed:
            self.counts["killed"] += 1
        elif code == 0:
            self.counts["finished"] += 1
        else:
            self.fail("worker w%d ended with exit code %d (see its message above)"
                      % (w.index, code))
        w.process.close()
        self.after_reap(w, killed, flags)
        return True

    def after_reap(self, w, killed, flags):
        """What the parent checks after each worker is gone."""
        if flags & FORKED_OK:
            self.counts["eforked"] += 1
        if flags & JOINED:
            self.counts["joined"] += 1

        # No slot leaks: a producer can be made (at most MAX_ALIVE workers and P0 hold slots).
        p = ctypes.c_void_p()
        status = lib.shmq_producer_new(self.queue, ctypes.byref(p))
        if status != OK:
            self.fail("no producer after worker w%d: %s: %s"
                      % (w.index, name(status), last_error()))
        lib.shmq_producer_free(p)

        # "g" is free again: taken over if the worker held it when it was killed.
        if w.g_role:
            g = ctypes.c_void_p()
            status = lib.shmq_consumer_new(self.queue, b"g", ctypes.byref(g))
            if status != OK:
                self.fail("group g not taken over after worker w%d (%s, joined: %s): %s: %s"
                          % (w.index, "killed" if killed else "exited", bool(flags & JOINED),
                             name(status), last_error()))
            else:
                if killed and flags & JOINED:
                    self.counts["takeovers"] += 1
                self.read(g, 16, "g after worker w%d" % w.index)
            lib.shmq_consumer_free(g)

        # The parent's own handles are untouched by the worker freeing its copies.
        data = payload("parent", self.parent_seq)
        offset = ctypes.c_uint64()
        status = lib.shmq_publish(self.p0, data, len(data), PUBLISH_TIMEOUT_NS,
                                  ctypes.byref(offset))
        if status == OK:
            log_ack(self.parent_log, offset.value, data)
            self.counts["parent_publishes"] += 1
            self.parent_seq += 1
        elif status != TIMEOUT:  # TIMEOUT: aborted after a stall; the next one retries
            self.fail("publish through P0 after worker w%d: %s: %s"
                      % (w.index, name(status), last_error()))
        self.read(self.c0, 8, "p through C0 after worker w%d" % w.index)

    def read(self, consumer, count, what):
        """Polls (without waiting) and commits up to `count` records."""
        msg = Message()
        for _ in range(count):
            status = lib.shmq_poll(consumer, 0, ctypes.byref(msg))
            if status == OK:
                status = lib.shmq_commit(consumer, msg.offset)
            if status == TIMEOUT:
                return
            if status != OK:
                self.fail("reading %s: %s: %s" % (what, name(status), last_error()))
                return

    def main(self):
        alive, next_index = [], 0
        while next_index < self.workers or alive:
            if len(self.failures) >= MAX_FAILURES and next_index < self.workers:
                print("fork_workers: %d failures: no more workers" % len(self.failures),
                      file=sys.stderr)
                next_index = self.workers
            g_alive = any(w.g_role for w in alive)
            while len(alive) < MAX_ALIVE and next_index < self.workers:
                w = self.spawn(next_index, g_alive)
                g_alive |= w.g_role
                alive.append(w)
                next_index += 1
            time.sleep(0.001)  # the resolution of the kill times
            now = time.monotonic()
            alive = [w for w in alive if not self.check_worker(w, now)]

        # Every worker is gone: all slots but P0's are free.
        extra, status = [], OK
        while len(extra) < 64:
            p = ctypes.c_void_p()
            status = lib.shmq_producer_new(self.queue, ctypes.byref(p))
            if status != OK:
                break
            extra.append(p)
        self.counts["final_producers"] = len(extra)
        if len(extra) != self.slots - 1 or status not in (OK, EBUSY):
            self.fail("made %d producers next to P0 at the end, expected %d (last status %s: %s)"
                      % (len(extra), self.slots - 1, name(status), last_error()))
        for p in extra:
            lib.shmq_producer_free(p)

        lib.shmq_producer_free(self.p0)
        lib.shmq_consumer_free(self.c0)
        lib.shmq_close(self.queue)
        os.close(self.parent_log)
        print("fork_workers: " + " ".join("%s=%d" % kv for kv in self.counts.items()))
        if self.failures:
            print("fork_workers: %d failure(s)" % len(self.failures), file=sys.stderr)
            return 1
        return 0


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    sys.exit(Run(sys.argv).main())
