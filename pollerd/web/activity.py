"""Readings per meter in the last hour, for the overview, without a query per meter.

Each meter's state counts the readings it stored since start (``MeterState.readings``); snapshots of
those counters once a minute give the last hour's count as a difference. Counting in SQLite instead would
scan every reading of the hour on each refresh of the overview (tens of thousands of rows at 1,000
meters), which the 50 ms budget of the overview does not allow.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from pollerd.state import Runtime

WINDOW = 3600.0
STEP = 60.0


class Activity:
    def __init__(self, runtime: Runtime, clock: Callable[[], float]) -> None:
        self._runtime = runtime
        self._clock = clock
        # (time, {meter: readings counter}); one more than the window holds, so a full hour is covered
        self._snaps: deque[tuple[float, dict[str, int]]] = deque(maxlen=int(WINDOW / STEP) + 2)

    def sample(self) -> None:
        now = self._clock()
        if self._snaps and now - self._snaps[-1][0] < STEP:
            return
        self._snaps.append((now, {name: ms.readings for name, ms in self._runtime.meters.items()}))

    def last_hour(self, now: float) -> tuple[dict[str, int], float]:
        """(readings per meter, seconds covered). Covers less than an hour while the daemon (or this page's
        sampler) is younger than that; the page says so rather than call it an hour."""
        self.sample()
        base_t, base = self._snaps[0]
        for ts, snap in self._snaps:
            if now - ts <= WINDOW:
                base_t, base = ts, snap
                break
        counts = {name: ms.readings - base.get(name, 0) for name, ms in self._runtime.meters.items()}
        return counts, max(0.0, now - base_t)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(STEP)

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: samples while the app is served."""
        task = asyncio.create_task(self._run(), name="web-activity")
        try:
            yield
        finally:
            task.cancel()
            # wait() neither raises the task's CancelledError nor hides a cancellation of this cleanup.
            await asyncio.wait([task])
