"""Freed host memory kept in the process for the next batch, where the C library is glibc.

glibc's malloc hands each block above its mmap threshold (at most 32 MiB) to the kernel with
`mmap` and gives it back with `munmap` when freed, and trims the top of its heap. A CPU run
allocates activations of that size on every micro-batch (frame-wise MobileNetV2 on the digits:
64 frames x 32 channels x 112 x 112 floats is 100 MiB), so every batch's memory is fresh pages
that the kernel faults in and zeroes: measured on that run, 50 million page faults and 76 of
its 184 CPU-seconds in the kernel. `mallopt(M_MMAP_MAX, 0)` serves large blocks from the heap
and a trim threshold of 2 GiB keeps what is freed there, so the next batch reuses it. Only where
memory lives changes, not a number (the same records, tested); peak memory grows by what the
heap keeps (about 0.5 GB on that run). `benchmarks/measure.py memory` measures it side by side.

Called once per process by the commands that compute (`run`, `pretrain`, `demo` and its
workers, `watch`, `audit`, launched jobs); a DataLoader's forked workers inherit it. Set
HARNESS_KEEP_FREED_MEMORY=0 to leave malloc as it is.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger("harness.host_memory")

ENV = "HARNESS_KEEP_FREED_MEMORY"
# mallopt's parameter numbers (glibc malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
TRIM_THRESHOLD = 2 ** 31 - 1  # mallopt takes an int: the largest, about 2 GiB

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (once per process); True when set."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success.
    _applied = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not _applied:
        log.debug("mallopt refused the settings; malloc is left as it is")
    return _applied
