"""Keep the cyclic garbage collector's pauses short on a gateway with thousands of meters (issue 18).

CPython's full (generation 2) collection walks every container object the collector tracks. At 10 000 meters
that is ~365 000 objects (configs, drivers, states, tasks, metric keys), almost all of them built at start-up and
alive until the daemon stops, and a full collection took 100-370 ms of the event loop's thread: every meter due
meanwhile started that much late (schedule lateness p99 120-170 ms, `scripts/bench_daemon.py --diag`).

So the long-lived objects are moved out of the collector's sight (:func:`gc.freeze`): once the daemon has
started, and again after each housekeeping round (a collection first, so only objects still alive are frozen;
what survived ten seconds is nearly always a long-lived object: a meter's identity, a session, a metric key).
A full collection then walks only what was allocated since the last freeze. Frozen objects are still freed by
reference counting; only a *cycle* of frozen objects that becomes garbage would stay (a replaced connection, the
driver of a meter removed by a reload). :meth:`GcPolicy.full` gives the collector the whole heap back, collects,
and freezes again: after a reload, and once an hour (the one long pause left, a few hundred ms an hour).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("pollerd.daemon")

# A full collection over the whole heap (frozen objects included) at most this often.
FULL_EVERY = 3600.0


class GcPolicy:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last_full = clock()

    def full(self) -> None:
        """Unfreeze, collect the whole heap, freeze what is left (start-up, reloads, hourly)."""
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.last_full = self.clock()

    def tick(self) -> None:
        """Collect what is not frozen yet and freeze what survived; hourly, the whole heap instead."""
        if self.clock() - self.last_full >= FULL_EVERY:
            self.full()
            return
        gc.collect()
        gc.freeze()
