#!/usr/bin/env python3
"""Reads COUNT messages from consumer group GROUP of the shmq queue at PATH, using ctypes only.

usage: SHMQ_LIB=target/release/libshmq.so python3 examples/python/subscriber.py PATH GROUP COUNT
"""

import ctypes
import sys

from shmq_ctypes import Message, check, lib


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, group, count = sys.argv[1].encode(), sys.argv[2].encode(), int(sys.argv[3])
    queue = ctypes.c_void_p()
    check("open", lib.shmq_open(path, ctypes.byref(queue)))
    consumer = ctypes.c_void_p()
    try:
        check("consumer", lib.shmq_consumer_new(queue, group, ctypes.byref(consumer)))
        msg = Message()
        for i in range(count):
            check("poll", lib.shmq_poll(consumer, 10_000_000_000, ctypes.byref(msg)))
            # msg.data is valid only until the next call on the consumer: copy it now.
            payload = ctypes.string_at(msg.data, msg.len)
            if payload != b"message %d" % i:
                sys.exit(f"message {i} at offset {msg.offset} is wrong: {payload!r}")
            if i % 256 == 255 or i + 1 == count:
                check("commit", lib.shmq_commit(consumer, msg.offset))
        print(f"received {count} messages")
    finally:
        lib.shmq_consumer_free(consumer)
        lib.shmq_close(queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
