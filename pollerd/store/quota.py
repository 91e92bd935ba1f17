"""Bounded buffer: the store's disk quota (``[store] max_size``) and age limit (``[store] max_age``).

When upstream is down for long, readings pile up in the store. Both limits evict the oldest readings first,
delivered or not, in short transactions, so the gateway keeps polling and keeps the newest data instead of
filling the SD card or crashing. Every eviction is counted (``pollerd_store_evicted_total{reason}``, and for
every sink that had not confirmed the evicted readings ``pollerd_sink_evicted_total{sink}``), logged once
per run, and shown by /health: a warning while the quota is holding, a failure while a sink lost readings to
it in the last 24 h (that data is gone, someone has to look at why upstream was away so long).

What counts toward ``max_size``: the pages that hold data, ``(page_count - freelist_count) * page_size``.
Deleting rows does not shrink an SQLite file; the freed pages go on the freelist and the next inserts reuse
them, so the file stops growing at about ``max_size`` and stays there. Giving pages back after every run
(``incremental_vacuum``) would rewrite pages only to have the file grow again a moment later, which is wear
on an SD card for nothing; pages are given back only when the file is larger than ``max_size`` (the quota
was lowered, or a burst overshot it). The WAL is not counted: it is bounded on its own (checkpointed every
~4 MiB, trimmed to 32 MiB), so the disk holds at most ``max_size`` plus the WAL.

The age limit uses the reading's ``ts`` (the time it describes), like ``keep`` does; it must be longer than
every meter's ``data_polling_length`` or a backfill would be evicted as it arrives (``pollerd check``
refuses such a config).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config.model import StoreConfig
from ..errors import StoreError
from ..metrics import Registry
from ..state import Runtime
from ..units import format_duration, format_size

if TYPE_CHECKING:
    from .core import Store

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0        # the size is looked at this often, and only after something was committed
AGE_EVERY = 60.0         # the age limit is enforced this often (readings age by the minute, not faster)
ALERT_WINDOW = 86400.0   # a sink that lost readings fails /health this long after the last loss
LOW_WATER = 0.98         # evict down to this share of max_size, so the next run is not one write away
FIRST_BATCH = 2000       # readings per eviction transaction before the bytes per reading are known
MAX_BATCH = 20000        # bounds one transaction, so writers wait at most a few tens of milliseconds
STATE_KEY = "store.evictions"


@dataclass(frozen=True, slots=True)
class Eviction:
    """One eviction run: when, why (``quota`` | ``age``), how many rows, and undelivered rows per sink."""

    ts: float
    reason: str
    rows: int
    lost: tuple[tuple[str, int], ...] = ()

    def as_json(self) -> list[object]:
        return [self.ts, self.reason, self.rows, dict(self.lost)]

    @classmethod
    def from_json(cls, raw: object) -> Eviction | None:
        if not isinstance(raw, (list, tuple)) or len(raw) != 4:
            return None
        try:
            ts, reason, rows, lost = raw
            return cls(float(ts), str(reason), int(rows),
                       tuple((str(k), int(v)) for k, v in dict(lost).items()))
        except (TypeError, ValueError):
            return None


class StoreQuota:
    """Enforces ``max_size`` and ``max_age`` on one store. ``await run()`` until cancelled, or call
    :meth:`check` directly (tests, benchmarks)."""

    def __init__(self, store: Store, cfg: StoreConfig, sinks: Sequence[str], metrics: Registry,
                 runtime: Runtime | None = None, *, clock: Callable[[], float] = time.time,
                 check_every: float = CHECK_EVERY, age_every: float = AGE_EVERY) -> None:
        self._store = store
        self._cfg = cfg
        self._sinks = tuple(sinks)
        self._runtime = runtime
        self._clock = clock
        self._check_every = check_every
        self._age_every = age_every
        self._history: list[Eviction] = []
        self._bytes_per_row: float | None = None
        self._last_error: str | None = None
        self._over_warned = False
        self._reconfigured = False
        self.used_bytes = 0
        self._m_store = metrics.counter("pollerd_store_evicted_total",
                                        "Readings evicted from the store by the quota or the age limit.",
                                        ("reason",))
        self._m_sink = metrics.counter("pollerd_sink_evicted_total",
                                       "Readings evicted before this sink confirmed them (lost for it).",
                                       ("sink",))
        self._m_used = metrics.gauge("pollerd_store_used_bytes",
                                     "Bytes of database pages holding data (what max_size limits).")
        self._m_max = metrics.gauge("pollerd_store_max_bytes", "The store quota, max_size (0: none).")
        for reason in ("quota", "age"):
            self._m_store.inc(0, reason=reason)
        for sink in self._sinks:
            self._m_sink.inc(0, sink=sink)
        self._m_max.set(cfg.max_size or 0)

    def reconfigure(self, cfg: StoreConfig, sinks: Sequence[str]) -> None:
        """New limits and sinks after a reload; the next loop turn enforces them."""
        self._cfg = cfg
        self._sinks = tuple(sinks)
        for sink in self._sinks:
            self._m_sink.inc(0, sink=sink)
        self._m_max.set(cfg.max_size or 0)
        self._reconfigured = True

    @property
    def history(self) -> list[Eviction]:
        return list(self._history)

    async def run(self) -> None:
        """Check after commits (at most every ``check_every`` s) and the age every ``age_every`` s."""
        await self.load()
        last_commits = -1
        last_age = -math.inf
        while True:
            now = self._clock()
            commits = self._store.commits
            if self._reconfigured:
                self._reconfigured = False
                last_commits, last_age = -1, -math.inf
            size_due = self._cfg.max_size is not None and commits != last_commits
            age_due = self._cfg.max_age is not None and now - last_age >= self._age_every
            if size_due or age_due:
                try:
                    await self.check(now, size=size_due, age=age_due)
                    self._last_error = None
                except StoreError as exc:
                    # The store is reported through /health by its writers; say it here once, keep trying.
                    if str(exc) != self._last_error:
                        log.error("store quota: %s", exc)
                    self._last_error = str(exc)
                last_commits = commits
                if age_due:
                    last_age = now
            self._publish(now)
            await asyncio.sleep(self._check_every)

    async def check(self, now: float | None = None, *, size: bool = True, age: bool = True) -> dict[str, int]:
        """Enforce the limits once; returns rows evicted by reason."""
        now = self._clock() if now is None else now
        done: dict[str, int] = {}
        if age and self._cfg.max_age is not None:
            n = await self._evict_age(now)
            if n:
                done["age"] = n
        if size and self._cfg.max_size is not None:
            n = await self._evict_quota(now)
            if n:
                done["quota"] = n
        elif size or age:
            self.used_bytes = await self._used()
            self._m_used.set(self.used_bytes)
        self._publish(now)
        return done

    # ------------------------------------------------------------------ the two limits

    async def _used(self) -> int:
        page_size, pages, free = await self._store.space()
        return (pages - free) * page_size

    async def _evict_age(self, now: float) -> int:
        assert self._cfg.max_age is not None
        cutoff = now - self._cfg.max_age
        total, lost = 0, dict.fromkeys(self._sinks, 0)
        while True:
            n, batch_lost = await self._store.evict(sinks=self._sinks, limit=MAX_BATCH, ts_before=cutoff)
            total += n
            for k, v in batch_lost.items():
                lost[k] += v
            if n < MAX_BATCH:
                break
            await asyncio.sleep(0)  # queued group commits take the write lock between batches
        if total:
            await self._record(Eviction(now, "age", total, tuple(lost.items())),
                         f"evicted {total} readings older than {format_duration(self._cfg.max_age)}")
        return total

    async def _evict_quota(self, now: float) -> int:
        assert self._cfg.max_size is not None
        limit = self._cfg.max_size
        used = await self._used()
        self.used_bytes = used
        self._m_used.set(used)
        if used <= limit:
            self._over_warned = False
            await self._shrink_file(limit)
            return 0
        target = int(limit * LOW_WATER)
        before = used
        total, lost = 0, dict.fromkeys(self._sinks, 0)
        while used > target:
            bpr = self._bytes_per_row
            batch = FIRST_BATCH if bpr is None else math.ceil((used - target) / bpr * 1.1)
            batch = max(100, min(MAX_BATCH, batch))
            n, batch_lost = await self._store.evict(sinks=self._sinks, limit=batch)
            if n == 0:
                # Only events and driver state left: they are small and never evicted, so say it once.
                if not self._over_warned:
                    log.warning("store quota: %s used > max_size %s with no readings left to evict",
                                format_size(used), format_size(limit))
                    self._over_warned = True
                break
            total += n
            for k, v in batch_lost.items():
                lost[k] += v
            after = await self._used()
            if after < used:
                # Rows free whole pages only in steps; a running estimate keeps the batches near the need.
                est = (used - after) / n
                self._bytes_per_row = est if bpr is None else 0.5 * bpr + 0.5 * est
            used = after
            await asyncio.sleep(0)
        self.used_bytes = used
        self._m_used.set(used)
        if total:
            await self._record(Eviction(now, "quota", total, tuple(lost.items())),
                         f"over its quota ({format_size(before)} used > max_size {format_size(limit)}): "
                         f"evicted the {total} oldest readings, now {format_size(used)}")
        await self._shrink_file(limit)
        return total

    async def _shrink_file(self, limit: int) -> None:
        page_size, pages, free = await self._store.space()
        excess = pages - limit // page_size
        if excess > 0 and free > 0:
            released = await self._store.give_back(min(free, excess))
            if released:
                log.info("store quota: file was larger than max_size; released %s to the file system",
                         format_size(released * page_size))

    # ------------------------------------------------------------------ bookkeeping and health

    async def _record(self, ev: Eviction, what: str) -> None:
        self._m_store.inc(ev.rows, reason=ev.reason)
        lost_parts = []
        for sink, n in ev.lost:
            if n:
                self._m_sink.inc(n, sink=sink)
                lost_parts.append(f"{sink} {n}")
        self._history.append(ev)
        tail = (f"; not yet delivered, lost for sink(s): {', '.join(lost_parts)}" if lost_parts
                else "; all of them had been delivered")
        log.warning("store: %s%s", what, tail)
        await self._save_history()
        self._trim(ev.ts)

    def _trim(self, now: float) -> None:
        self._history = [e for e in self._history if now - e.ts < ALERT_WINDOW]

    async def _save_history(self) -> None:
        # Persisted so a restart (or a crash loop) does not clear the alarm about lost readings.
        try:
            await self._store.set_state(STATE_KEY, [e.as_json() for e in self._history])
        except StoreError as exc:
            log.warning("store quota: cannot save the eviction history: %s", exc)

    async def load(self) -> None:
        """Read the evictions of the last ALERT_WINDOW saved by an earlier run (run() does this first)."""
        try:
            raw = await self._store.get_state(STATE_KEY)
        except StoreError as exc:
            log.warning("store quota: cannot read the eviction history: %s", exc)
            return
        if isinstance(raw, list):
            self._history = [e for e in map(Eviction.from_json, raw) if e is not None]
            self._trim(self._clock())

    def report(self, now: float | None = None) -> tuple[list[str], list[str]]:
        """(reasons, warnings) for /health from the evictions of the last ``ALERT_WINDOW``."""
        now = self._clock() if now is None else now
        recent = [e for e in self._history if now - e.ts < ALERT_WINDOW]
        reasons: list[str] = []
        warnings: list[str] = []
        hours = f"{ALERT_WINDOW / 3600:g} h"
        lost: dict[tuple[str, str], int] = {}
        by_reason: dict[str, int] = {}
        for e in recent:
            by_reason[e.reason] = by_reason.get(e.reason, 0) + e.rows
            for sink, n in e.lost:
                if n:
                    lost[(sink, e.reason)] = lost.get((sink, e.reason), 0) + n
        what = {"quota": "the store quota (max_size)", "age": "the store age limit (max_age)"}
        for (sink, reason), n in sorted(lost.items()):
            reasons.append(f"sink {sink} lost {n} undelivered readings to {what.get(reason, reason)} "
                           f"in the last {hours}")
        for reason, n in sorted(by_reason.items()):
            if reason == "quota":
                used = f" (used {format_size(self.used_bytes)} of {format_size(self._cfg.max_size or 0)})"
                warnings.append(f"store quota holding: {n} oldest readings evicted in the last {hours}{used}")
            else:
                warnings.append(f"store age limit: {n} readings evicted in the last {hours}")
        return reasons, warnings

    def _publish(self, now: float) -> None:
        if self._runtime is not None:
            self._runtime.store_reasons, self._runtime.store_warnings = self.report(now)
