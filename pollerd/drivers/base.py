"""What every driver offers the scheduler, and what one poll cycle returns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config.model import MeterConfig
from ..line import Line
from ..metrics import Registry
from ..model import Event, Reading
from ..quality import Dropped
from ..state import MeterState


@dataclass(frozen=True, slots=True)
class PollResult:
    readings: tuple[Reading, ...]
    events: tuple[Event, ...] = ()
    answered: bool = True          # the meter said something valid during the cycle
    error: str | None = None       # why the cycle is incomplete, if it is
    # Driver state to persist once the readings above are committed (archive positions, last clock
    # correction...): written by the daemon after the store write, so a crash in between re-reads rather
    # than leaves a hole.
    state: tuple[tuple[str, object], ...] = ()
    # Values the codec already found unfit (an IEEE NaN on the wire, a number beyond float range): never
    # readings, but counted and logged with the ones pollerd.quality drops, so no drop goes unseen.
    dropped: tuple[Dropped, ...] = ()

    @property
    def ok(self) -> bool:
        return self.answered and self.error is None


@dataclass(eq=False)
class DriverContext:
    """Everything a driver may use; passed explicitly (no module-level state)."""

    meter: MeterConfig
    line: Line | None              # None for cloud sources (catalog: ProtocolSpec.cloud_keys), which reach their own url
    state: MeterState
    metrics: Registry
    clock: Callable[[], float] = time.time
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pollerd.driver"))
    store: Any = None              # pollerd.store.Store when the driver runs in the daemon; None one-shot
    state_dir: Path | None = None  # the daemon's state directory (files a driver saves); None one-shot


class Driver(Protocol):
    async def poll(self, ts: int) -> PollResult:
        """Run one full poll cycle. ``ts`` is the cycle's timestamp for ``current`` readings.
        Never raises for meter or bus trouble: that is reported in the result."""
        ...

    async def probe(self) -> bool:
        """One cheap request without retries, used while the meter is degraded."""
        ...

    async def close(self) -> None:
        """Close the meter session (best effort, on shutdown)."""
        ...
