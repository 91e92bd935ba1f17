"""Synthetic readings shared by the store, drain and gzip benchmarks: 50 meters × 14 channels, a poll every
60 s, so the keys look like a real gateway's. Imported by the scripts beside it (run as scripts/NAME.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pollerd.model import Reading
from pollerd.store import Store

CHANNELS = ("A+", "A-", "R+", "R-", "P", "Q", "S", "U.L1", "U.L2", "U.L3", "I.L1", "I.L2", "I.L3", "F")
METERS = 50


def readings(n: int, start: int = 0) -> list[Reading]:
    """Readings number ``start`` .. ``start + n - 1`` of the sequence (the same numbers give the same readings)."""
    out = []
    for i in range(start, start + n):
        cycle, rest = divmod(i, METERS * len(CHANNELS))
        meter, ch = divmod(rest, len(CHANNELS))
        out.append(Reading(f"meter-{meter:03d}", CHANNELS[ch], "current", 1_700_000_000 + cycle * 60,
                           1000.0 + i * 0.25, "Wh"))
    return out


async def fill(store: Store, n: int, chunk: int = 5000) -> None:
    """Write the first ``n`` readings into ``store``, ``chunk`` per write."""
    for start in range(0, n, chunk):
        await store.write(readings(min(chunk, n - start), start))
