"""Live, in-memory state of meters and lines, read by the API and /health.

This is observation only: nothing here is needed to resume after a restart (that lives in the store).
Slotted: a gateway keeps one MeterState per meter (10 000 of them on a large site), and an instance dict
of 21 fields cost more than the fields themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_NO_DEVICES: Mapping[str, dict[str, object]] = MappingProxyType({})

# What MeterState.status can say; /metrics reports a count for each.
METER_STATES = ("pending", "ok", "partial", "failing", "degraded")


@dataclass(eq=False, slots=True)
class MeterState:
    name: str
    protocol: str
    line: str
    address: int | str              # as the config has it: M-Bus secondary addresses are text
    interval: float                 # nominal period, for the "silent too long" health check
    next_run: float | None = None
    last_poll: float | None = None  # start of the last finished poll cycle
    last_ok: float | None = None    # last cycle in which the meter answered
    last_error: str | None = None
    consecutive_failures: int = 0
    degraded: bool = False
    degraded_reason: str | None = None
    polls: int = 0
    failures: int = 0
    skipped: int = 0                # cycles skipped because the previous one overran
    readings: int = 0
    dropped: int = 0                # readings dropped before the store (pollerd.quality), since start
    last_dropped: str | None = None  # what the last cycle dropped and why; None when it dropped nothing
    identity: dict[str, object] = field(default_factory=dict)  # serial, manufacture date, ratios, constant
    # Conditions that fail /health while they last (e.g. a clock drift too large to correct), by kind.
    alarms: dict[str, str] = field(default_factory=dict)
    added: float | None = None      # when a reload added (or restarted) it: its silence counts from here
    # Cloud sources (line == ""): the account's devices, device id -> metadata (name, model, settings...).
    # Replaced as a whole when an account's list comes in; read-only and shared until then (one empty dict per
    # bus meter was 0.6 MB at 10 000 meters).
    devices: Mapping[str, dict[str, object]] = field(default_factory=lambda: _NO_DEVICES)

    @property
    def status(self) -> str:
        """One word for the API (one of METER_STATES): pending (not polled yet), ok, partial (the last cycle answered but some of
        its values were dropped as not finite or implausible), failing (last cycle failed), degraded."""
        if self.degraded:
            return "degraded"
        if self.last_poll is None:
            return "pending"
        if self.consecutive_failures:
            return "failing"
        return "partial" if self.last_dropped else "ok"

    @property
    def online(self) -> bool | None:
        """What upstream is told: True when the meter's last cycle got an answer, False when it got none,
        None before its first cycle."""
        if self.last_poll is None:
            return None
        return self.last_ok is not None and self.last_ok >= self.last_poll

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.status,
            "protocol": self.protocol,
            "line": self.line,
            "address": self.address,
            "next_run": self.next_run,
            "last_poll": self.last_poll,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "degraded": self.degraded,
            "degraded_reason": self.degraded_reason,
            "polls": self.polls,
            "failures": self.failures,
            "skipped": self.skipped,
            "readings": self.readings,
            "dropped": self.dropped,
            "last_dropped": self.last_dropped,
            "identity": self.identity,
            "alarms": dict(self.alarms),
            **({"devices": dict(self.devices)} if self.line == "" else {}),
        }


@dataclass(eq=False, slots=True)
class LineState:
    name: str
    type: str
    connected: bool = False
    last_error: str | None = None
    down_since: float | None = None  # wall clock of the first failure since the link was last up
    reconnects: int = 0
    exchanges: int = 0
    bus_time: float = 0.0           # seconds the line spent on exchanges (request out .. reply in)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "connected": self.connected,
            "last_error": self.last_error,
            "down_since": self.down_since,
            "reconnects": self.reconnects,
            "exchanges": self.exchanges,
            "bus_time": round(self.bus_time, 3),
        }


@dataclass(eq=False, slots=True)
class SinkState:
    name: str
    type: str
    last_success: float | None = None
    last_error: str | None = None
    failures: int = 0
    sent: int = 0
    parked: int = 0                 # batches refused with a permanent 4xx, set aside
    lag_rows: int = 0
    lag_seconds: float = 0.0
    alarms: dict[str, str] = field(default_factory=dict)  # kind -> text; each is a /health reason
    connected: bool = False         # the client's connect() succeeded (HTTP: session ready)
    failing_since: float | None = None  # first failure of the current run of failures; None while delivering

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "type": self.type,
            "alarms": dict(self.alarms),
            "last_success": self.last_success,
            "last_error": self.last_error,
            "failures": self.failures,
            "sent": self.sent,
            "parked": self.parked,
            "lag_rows": self.lag_rows,
            "lag_seconds": round(self.lag_seconds, 3),
            "connected": self.connected,
            "failing_since": self.failing_since,
        }


@dataclass(eq=False)
class Runtime:
    """Everything the API reads: one instance per daemon, passed explicitly."""

    gateway: str
    meters: dict[str, MeterState] = field(default_factory=dict)
    lines: dict[str, LineState] = field(default_factory=dict)
    sinks: dict[str, SinkState] = field(default_factory=dict)
    started: float = 0.0
    store_ok: bool = True
    store_error: str | None = None
    # /health lines about the store's quota and age limit (pollerd.store.quota keeps them current).
    store_reasons: list[str] = field(default_factory=list)
    store_warnings: list[str] = field(default_factory=list)
    last_stored: float | None = None  # last time a cycle's readings were written to the store
    # Bumped whenever a meter's online/offline state changed or a meter left: the sinks' meter status is
    # rebuilt only then (a dict over every meter per forwarder turn was ~1.5 % of a core at 10 000 meters).
    status_changes: int = 0
    # Shown under /health "warnings" while they last (a failed reload, an API change awaiting a restart).
    warnings: dict[str, str] = field(default_factory=dict)
