#!/usr/bin/env python3
"""Publish and poll throughput of 64-byte messages in one process: the `shmq` package (PyO3),
the C ABI through ctypes (`examples/python/shmq_ctypes.py`), and the Rust API
(`throughput.rs`, the same loop), in interleaved rounds. BENCHMARKS.md ("Python") has the
figures and the command.

usage: SHMQ_LIB=target/release/libshmq.so python3 python/bench/throughput.py \\
           --rust target/release/examples/throughput [--count 500000] [--rounds 5]

Each round makes a new queue (64 MiB ring) in /dev/shm with a gating group, publishes COUNT
records with one producer (timed), then polls them all with `poll(0)`, turning each payload
into a `bytes` object and committing every 256th (timed). Prints the median of the rounds
in millions of messages per second.
"""

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "python"))

import shmq  # noqa: E402

PAYLOAD = b"x" * 64


def run_package(path, count):
    with shmq.Queue.create(path, capacity=64 << 20, max_message=1024) as q:
        consumer = q.consumer("bench")
        producer = q.producer()
        publish = producer.publish
        start = time.perf_counter()
        for _ in range(count):
            publish(PAYLOAD)
        t_pub = time.perf_counter() - start
        poll, commit = consumer.poll, consumer.commit
        start = time.perf_counter()
        for i in range(count):
            msg = poll(0)
            msg.payload
            if i % 256 == 255:
                commit(msg)
        t_poll = time.perf_counter() - start
        consumer.close()
        producer.close()
    os.unlink(path)
    return t_pub, t_poll


def run_ctypes(path, count):
    from shmq_ctypes import OK, Message, Options, check, lib

    opts = Options()
    check("options", lib.shmq_options_default(ctypes.byref(opts)))
    opts.capacity_bytes, opts.max_message_bytes = 64 << 20, 1024
    q, p, c = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    check("create", lib.shmq_create(path.encode(), ctypes.byref(opts), ctypes.byref(q)))
    check("consumer", lib.shmq_consumer_new(q, b"bench", ctypes.byref(c)))
    check("producer", lib.shmq_producer_new(q, ctypes.byref(p)))
    offset = ctypes.c_uint64()
    publish, poll, commit = lib.shmq_publish, lib.shmq_poll, lib.shmq_commit
    start = time.perf_counter()
    ref = ctypes.byref(offset)
    for _ in range(count):
        if publish(p, PAYLOAD, 64, -1, ref) != OK:
            check("publish", publish(p, PAYLOAD, 64, -1, ref))
    t_pub = time.perf_counter() - start
    msg = Message()
    mref = ctypes.byref(msg)
    start = time.perf_counter()
    for i in range(count):
        if poll(c, 0, mref) != OK:
            raise RuntimeError("poll found no record")
        ctypes.string_at(msg.data, msg.len)
        if i % 256 == 255:
            check("commit", commit(c, msg.offset))
    t_poll = time.perf_counter() - start
    lib.shmq_consumer_free(c)
    lib.shmq_producer_free(p)
    lib.shmq_close(q)
    os.unlink(path)
    return t_pub, t_poll


def run_rust(exe, path, count):
    out = subprocess.run([exe, path, str(count)], check=True, capture_output=True, text=True)
    words = out.stdout.split()
    return float(words[1]), float(words[3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rust", required=True, help="the built throughput example")
    ap.add_argument("--count", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if not os.environ.get("SHMQ_LIB"):
        sys.exit("set SHMQ_LIB to the path of libshmq.so (cargo build --release -p shmq-ffi)")
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    modes = {
        "rust": lambda p: run_rust(args.rust, p, args.count),
        "python (shmq package)": lambda p: run_package(p, args.count),
        "python (ctypes)": lambda p: run_ctypes(p, args.count),
    }
    results = {m: ([], []) for m in modes}
    for r in range(args.rounds):
        for mode, fn in modes.items():
            path = os.path.join(base, f"shmq-bench-{os.getpid()}-{r}.q")
            t_pub, t_poll = fn(path)
            results[mode][0].append(args.count / t_pub / 1e6)
            results[mode][1].append(args.count / t_poll / 1e6)
    print(f"{args.count} x 64 B, median of {args.rounds} interleaved rounds (M msgs/s)")
    print(f"{'mode':<24}{'publish':>10}{'poll':>10}")
    for mode, (pub, pol) in results.items():
        print(f"{mode:<24}{statistics.median(pub):>10.2f}{statistics.median(pol):>10.2f}")


if __name__ == "__main__":
    main()
