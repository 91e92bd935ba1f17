"""glibc's mmap threshold stays fixed in the daemon (issue 14, obs. 7: memory kept after an API burst).

Checks the mechanism, not RSS: after a large block is freed, the next large block still gets its own mapping
(mallinfo2().hblks counts them) once tune_malloc() ran, and not without it (glibc's dynamic threshold)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from sd_helpers import UNIT, settings

from pollerd.daemon import malloc

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")

_PROBE = """
import ctypes, sys
from pollerd.daemon.malloc import tune_malloc
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    assert tune_malloc()
before = libc.mallinfo2().hblks
libc.free(libc.malloc(3_000_000))  # freeing an mmap'd block raises the dynamic threshold past its size
p = libc.malloc(2_000_000)        # larger than any free space in the heap
print(libc.mallinfo2().hblks - before)
libc.free(p)
"""


def _mapped_blocks(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@glibc
def test_large_blocks_keep_their_own_mapping_once_tuned():
    assert _mapped_blocks("tuned") == 1


@glibc
def test_without_tuning_glibc_moves_them_into_the_heap():
    # The control: shows the probe can tell the two apart on this glibc.
    assert _mapped_blocks("default") == 0


def test_unit_sets_the_same_thresholds_from_the_first_allocation():
    env = " ".join(v for k, v in settings(UNIT.read_text()) if k == "Environment").split()
    assert f"MALLOC_MMAP_THRESHOLD_={malloc.MMAP_THRESHOLD}" in env
    assert f"MALLOC_TRIM_THRESHOLD_={malloc.TRIM_THRESHOLD}" in env
