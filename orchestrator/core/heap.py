"""Keep freed heap memory mapped in processes that write the queue (glibc only).

SQLite drops a connection's whole page cache whenever another process has written the database
since the connection's last transaction, which on a busy queue is before almost every one. With
glibc's default trim threshold (128 KiB) the freed pages go back to the kernel at once (`brk`),
and the next transaction faults fresh zeroed pages in again. Four `orch worker` processes on two
cores spent more time in that churn than in SQL: raising the threshold lifted their drain rate
from about 2,200 to 3,600-4,100 tasks/s on the development machine (reports/bench/soak.md has the
current figures). A process keeps at most TRIM_THRESHOLD of freed memory it could have returned.

The soak's own processes call it (`orch worker`, the supervisor, the shipper, the chaos agent);
opening a queue does not, so `ops` commands and the on-call server keep glibc's default.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_TOP_PAD = -2
TRIM_THRESHOLD = 4 * 2**20  # above SQLite's default page cache (2 MB), which is what churns
TOP_PAD = 2**19


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's trim threshold and top pad for this process, once. False where the C
    library has no `mallopt` (musl, macOS): nothing changes there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on (no ldconfig lookup)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(M_TOP_PAD, TOP_PAD) == 1
