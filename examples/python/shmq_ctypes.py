"""Minimal ctypes binding of libshmq (the C ABI in ffi/include/shmq.h), used by the examples.

The library is found through $SHMQ_LIB (a path to libshmq.so), else
../../target/release/libshmq.so relative to this file, else the system linker path.
"""

import ctypes
import os

OK, TIMEOUT, FULL, LAGGED = 0, 1, 2, 3
# Errors a caller branches on: a live holder (or no free slot), and a producer or consumer
# handle used in a child forked after it was made (make a new one in the child).
EBUSY, EFORKED = -8, -10
# The queue file was truncated, removed or replaced under this process: reopen it.
ESTALE = -12


class Options(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("capacity_bytes", ctypes.c_uint64),
        ("max_message_bytes", ctypes.c_uint32),
        ("durability", ctypes.c_int),
        ("full_policy", ctypes.c_int),
        ("mode", ctypes.c_uint32),
        ("claim_timeout_ns", ctypes.c_uint64),
        ("group_slots", ctypes.c_uint32),
        ("producer_slots", ctypes.c_uint32),
        ("batch_max_delay_ns", ctypes.c_uint64),
        ("batch_max_bytes", ctypes.c_uint64),
        ("checksums", ctypes.c_uint32),
    ]


class Message(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.POINTER(ctypes.c_uint8)),
        ("len", ctypes.c_size_t),
        ("offset", ctypes.c_uint64),
        ("timestamp_ns", ctypes.c_uint64),
        ("aborted_before", ctypes.c_uint64),
    ]


def _load():
    path = os.environ.get("SHMQ_LIB")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        candidate = os.path.join(here, "..", "..", "target", "release", "libshmq.so")
        path = candidate if os.path.exists(candidate) else "libshmq.so"
    lib = ctypes.CDLL(path)
    vp, c_int, i64, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint64
    pvp = ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "shmq_options_default": (c_int, [ctypes.POINTER(Options)]),
        "shmq_create": (c_int, [ctypes.c_char_p, ctypes.POINTER(Options), pvp]),
        "shmq_open": (c_int, [ctypes.c_char_p, pvp]),
        "shmq_close": (None, [vp]),
        "shmq_producer_new": (c_int, [vp, pvp]),
        "shmq_publish": (c_int, [vp, ctypes.c_char_p, ctypes.c_size_t, i64, ctypes.POINTER(u64)]),
        "shmq_wait_durable": (c_int, [vp, u64, i64]),
        "shmq_producer_free": (None, [vp]),
        "shmq_consumer_new": (c_int, [vp, ctypes.c_char_p, pvp]),
        "shmq_poll": (c_int, [vp, i64, ctypes.POINTER(Message)]),
        "shmq_commit": (c_int, [vp, u64]),
        "shmq_consumer_free": (None, [vp]),
        "shmq_last_error": (ctypes.c_char_p, []),
        "shmq_status_name": (ctypes.c_char_p, [c_int]),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


lib = _load()


class ShmqError(Exception):
    def __init__(self, what, status):
        name = lib.shmq_status_name(status).decode()
        super().__init__(f"{what}: {name}: {lib.shmq_last_error().decode(errors='replace')}")
        self.status = status


def check(what, status):
    if status != OK:
        raise ShmqError(what, status)
