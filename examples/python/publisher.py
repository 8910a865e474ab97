#!/usr/bin/env python3
"""Publishes COUNT messages "message <i>" to the shmq queue at PATH, using ctypes only.

usage: SHMQ_LIB=target/release/libshmq.so python3 examples/python/publisher.py PATH COUNT
The queue is created (1 MiB ring) if it does not exist.
"""

import ctypes
import sys

from shmq_ctypes import OK, Options, check, lib

ENOENT = -6


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    path, count = sys.argv[1].encode(), int(sys.argv[2])
    queue = ctypes.c_void_p()
    status = lib.shmq_open(path, ctypes.byref(queue))
    if status == ENOENT:
        options = Options()
        check("options", lib.shmq_options_default(ctypes.byref(options)))
        options.capacity_bytes = 1 << 20
        options.max_message_bytes = 4096
        status = lib.shmq_create(path, ctypes.byref(options), ctypes.byref(queue))
    check("open", status)
    producer = ctypes.c_void_p()
    try:
        check("producer", lib.shmq_producer_new(queue, ctypes.byref(producer)))
        offset = ctypes.c_uint64()
        for i in range(count):
            payload = b"message %d" % i
            # Block up to 30 s while the ring is full.
            check("publish", lib.shmq_publish(producer, payload, len(payload), 30_000_000_000,
                                              ctypes.byref(offset)))
        if count:
            check("wait_durable", lib.shmq_wait_durable(producer, offset.value, -1))
        print(f"published {count} messages, last offset {offset.value}")
    finally:
        lib.shmq_producer_free(producer)  # NULL-safe
        lib.shmq_close(queue)
    return OK


if __name__ == "__main__":
    sys.exit(main())
