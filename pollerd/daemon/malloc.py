"""Keep glibc from holding on to the memory of an API burst (issue 14, observation 7).

glibc raises its mmap threshold every time a block that was mmap'd is freed (up to 32 MB). After the first
JSON reply of a full page (a few hundred KB) goes back, every later reply is carved out of the brk heap
instead; small long-lived objects land above them, so the heap can never shrink from the top and a burst of
500 requests left ~30 MB in [heap] that no live object used (tracemalloc: +0.3 MB of Python objects). A fixed
threshold keeps large blocks in their own mappings, returned to the kernel when freed; setting it through
mallopt() also turns the dynamic raise off. The systemd unit sets the same values as MALLOC_*_ variables so
they apply from the first allocation; this covers a daemon started any other way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks from 64 KiB up get their own mapping: a full-page reply or its row list, never the many small objects.
MMAP_THRESHOLD = 64 * 1024
# Free space above this at the top of the heap goes back to the kernel at once (default 128 KiB, but the
# dynamic threshold raises it to twice the mmap threshold; fixing the latter keeps this one fixed too).
TRIM_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; False where the C library is not glibc (nothing to tune)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, and no dynamic threshold either
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not ok:
        log.warning("mallopt() refused the mmap/trim thresholds; API bursts may leave memory behind")
    return ok
