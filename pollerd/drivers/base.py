"""What every driver offers the scheduler, and what one poll cycle returns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

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


class StateReader(Protocol):
    """The store as a driver sees it: it reads back its own committed state (archive positions, last clock
    correction) and never writes; what it wants saved goes out in :attr:`PollResult.state`, which the daemon
    writes after the readings. :class:`pollerd.store.Store` is one."""

    async def get_state(self, key: str) -> object | None:
        """The JSON value stored under ``key``, or None."""
        ...


# Two context types rather than one with ``line: Line | None``: a bus driver can then use its line without a
# None check on every exchange, and the catalog (ProtocolSpec.is_cloud) decides which one a driver gets.


@dataclass(eq=False, slots=True)
class BusDriverContext:
    """Everything a bus driver (a meter on a serial or TCP line) may use; passed explicitly (no module-level
    state)."""

    meter: MeterConfig
    line: Line
    state: MeterState
    metrics: Registry
    clock: Callable[[], float] = time.time
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pollerd.driver"))
    store: StateReader | None = None  # the daemon's store; None one-shot (`pollerd poll`)
    state_dir: Path | None = None     # the daemon's state directory (files a driver saves); None one-shot


@dataclass(eq=False, slots=True)
class CloudDriverContext:
    """Everything a cloud source driver may use. It has no line: it reaches its own ``url``
    (catalog: ProtocolSpec.cloud_keys)."""

    meter: MeterConfig
    state: MeterState
    metrics: Registry
    clock: Callable[[], float] = time.time
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("pollerd.driver"))
    store: StateReader | None = None
    state_dir: Path | None = None


DriverContext = BusDriverContext | CloudDriverContext


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


@runtime_checkable
class RawDriver(Driver, Protocol):
    """A driver that also passes one operator frame through its line (``POST /api/meters/{name}/raw``)."""

    async def raw(self, command: str) -> dict[str, object]:
        """Send one HEX command ahead of scheduled polls; the reply as HEX (and decoded, where known)."""
        ...


_POWER_BASES = frozenset({"P", "Q", "S", "A+", "A-", "R+", "R-"})


def ratio_factor(channel: str, ku: float, ki: float) -> float:
    """Primary-side factor of a channel: ``ku`` (tn1/tn2) for voltages, ``ki`` (tt) for currents, both for
    powers and energies, 1 for the rest (frequency, power factor, angles, temperature)."""
    base = channel.split(".", 1)[0]
    if base == "U":
        return ku
    if base == "I":
        return ki
    if base in _POWER_BASES:
        return ku * ki
    return 1.0
