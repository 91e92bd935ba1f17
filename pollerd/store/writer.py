"""Group-committed writes (DESIGN.md §4): :meth:`write` queues its rows and returns only after the
transaction holding them committed with ``synchronous=FULL``, so whatever a caller was told is stored survives
a power cut or a ``kill -9``. One writer task per store batches the queued writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import aiosqlite

from ..compat import timeout
from ..errors import StoreError
from ..model import Event, Reading
from .base import StoreBase, sql_errors

log = logging.getLogger("pollerd.store")


# A reading's row in `samples` (schema 6) refers to its series (meter, channel, archive) by id. Each write first
# makes sure its series exist (INSERT OR IGNORE: an existing one costs one probe of the series key and writes
# nothing), then inserts its rows joined to their series; CROSS JOIN keeps the rows in write order, so seqs follow
# the order of the readings. Keeping the ids in Python instead would save the probes and cost ~100 B of RAM per
# series (half a million series at 10 000 meters).
#
# INSERT OR IGNORE alone would still burn an AUTOINCREMENT value for every ignored duplicate (SQLite
# allocates the rowid before the UNIQUE check), leaving gaps that inflate sink lag; the NOT EXISTS
# guard skips duplicates before a rowid is allocated, OR IGNORE stays as the safety net.
#
# A reading at or before its series' pruned mark (see retention.py) was stored, delivered and pruned: it counts as
# a duplicate too, so a meter re-reporting old archive records does not have them sent again.
#
# One multi-row statement per write (up to _CHUNK rows), not executemany: sqlite3's executemany releases and
# re-takes the GIL around every row's step, and while the event loop thread is busy each hand-over costs a
# futex round trip: 94 us of CPU per row in the 1000-meter daemon bench against 5-11 us for the same rows as
# one statement (issue 18). Rows repeated within one statement would all pass the NOT EXISTS guards (the VALUES
# are read before the first insert); _reading_rows drops such repeats, and OR IGNORE would drop any left over, at
# the price of a seq gap.
_ReadingRow = tuple[str, str, str, int, float, str, str, int]
_CHUNK = 100  # 800 bound parameters: under the 999 of older SQLite builds
_INSERT_READINGS = (
    "INSERT OR IGNORE INTO samples (series, ts, value, quality, delay, unit) "
    "SELECT x.id, v.column4, v.column5, NULLIF(v.column7, 'good'), v.column8 - v.column4, NULLIF(v.column6, x.unit) "
    "FROM (VALUES {values}) AS v CROSS JOIN series x "
    "ON x.meter = v.column1 AND x.channel = v.column2 AND x.archive = v.column3 "
    "WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.ts = v.column4 AND s.series = x.id) "
    "AND NOT EXISTS (SELECT 1 FROM pruned_marks p WHERE p.meter = v.column1 AND p.channel = v.column2 "
    "AND p.archive = v.column3 AND p.ts >= v.column4)"
)
_SeriesRow = tuple[str, str, str, str]
_SERIES_CHUNK = 200  # 4 parameters each
_INSERT_SERIES = "INSERT OR IGNORE INTO series (meter, channel, archive, unit) VALUES {values}"


def _series_rows(batch: Sequence[_Pending]) -> list[_SeriesRow]:
    """The distinct series of a batch's readings, each with the unit of its first reading."""
    seen: dict[tuple[str, str, str], str] = {}
    for item in batch:
        for row in item.rows:
            seen.setdefault(row[:3], row[5])
    return [(*key, unit) for key, unit in seen.items()]


@functools.lru_cache(maxsize=2 * _CHUNK + _SERIES_CHUNK)
def _statement(template: str, width: int, n: int) -> str:
    """``template`` with its ``{values}`` as n row placeholders of ``width`` values each: one text per statement
    and row count, built once here and prepared once by sqlite3's statement cache."""
    one = "(" + ",".join("?" * width) + ")"
    return template.format(values=",".join([one] * n))


def _chunks(rows: Sequence[tuple[object, ...]], template: str, size: int = _CHUNK,
            ) -> Iterator[tuple[str, list[object]]]:
    """``template`` as multi-row statements of at most ``size`` rows each, with their flattened arguments."""
    for i in range(0, len(rows), size):
        part = rows[i:i + size]
        yield _statement(template, len(part[0]), len(part)), list(itertools.chain.from_iterable(part))


# An event is often first seen open (no end yet) and later closed: the re-read fills in the end and
# text instead of being dropped as a duplicate.
# Several rows per statement, like the readings (one GIL hand-over per statement instead of per row); a row that
# repeats an earlier one of the same statement updates it as a second statement would.
_UPSERT_EVENTS = (
    "INSERT INTO events (meter, code, ts_start, ts_end, text, received) VALUES {values} "
    "ON CONFLICT (meter, code, ts_start) DO UPDATE SET "
    "ts_end = COALESCE(excluded.ts_end, events.ts_end), "
    "text = CASE WHEN excluded.text != '' THEN excluded.text ELSE events.text END"
)


# SQLite's INTEGER is 64-bit; sqlite3 refuses a larger Python int with OverflowError at bind time.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


_EventRow = tuple[str, str, int, "int | None", str, int]


@dataclass(slots=True, eq=False)
class _Pending:
    rows: list[_ReadingRow]
    events: list[_EventRow]
    fut: asyncio.Future[int]
    t0: float
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.rows) + len(self.events)


def _reading_rows(readings: Sequence[Reading], received: int) -> list[_ReadingRow]:
    # Validated here, in the caller's task, so one bad reading fails only its own write and not
    # the whole group-commit batch it would have shared with other writers.
    rows: list[_ReadingRow] = []
    append = rows.append
    for r in readings:
        try:
            ts = int(r.ts)
            value = float(r.value)
            bad = ts != r.ts or not _INT64_MIN <= ts <= _INT64_MAX or not math.isfinite(value)
        except (TypeError, ValueError, OverflowError):
            bad = True
        if bad:
            # SQLite would store NaN as NULL, silently truncate a fractional ts and refuse a ts beyond 64
            # bits; an infinite value would go upstream as JSON null.
            raise StoreError(f"cannot store reading: expected a 64-bit integer ts and a finite numeric "
                             f"value, got ts={r.ts!r} value={r.value!r} in {r!r}")
        append((r.meter, r.channel, str(r.archive), ts, value, r.unit, str(r.quality), received))
    if len(rows) > 1 and len({row[:4] for row in rows}) < len(rows):
        # A key twice in one write: the first stays, as if the rows were inserted one by one. In one statement
        # both would pass the NOT EXISTS guards and the later one, dropped by OR IGNORE, would burn a seq.
        seen: set[tuple[object, ...]] = set()
        unique: list[_ReadingRow] = []
        for row in rows:
            if row[:4] not in seen:
                seen.add(row[:4])
                unique.append(row)
        rows = unique
    return rows


async def _event_counter(w: aiosqlite.Connection) -> int:
    async with w.execute("SELECT n FROM event_counter") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _event_rows(events: Sequence[Event], received: int) -> list[_EventRow]:
    rows: list[_EventRow] = []
    for e in events:
        try:
            ts_start = int(e.ts_start)
            ts_end = None if e.ts_end is None else int(e.ts_end)
            bad = (ts_start != e.ts_start or (ts_end is not None and ts_end != e.ts_end)
                   or not all(_INT64_MIN <= t <= _INT64_MAX for t in (ts_start, ts_end) if t is not None))
        except (TypeError, ValueError, OverflowError):
            bad = True
        if bad:
            raise StoreError(f"cannot store event: expected 64-bit integer timestamps, got "
                             f"ts_start={e.ts_start!r} ts_end={e.ts_end!r} in {e!r}")
        rows.append((e.meter, e.code, ts_start, ts_end, e.text, received))
    return rows


def _fail(fut: asyncio.Future[int], message: str, cause: BaseException | None) -> None:
    if fut.done():
        return
    err = StoreError(message)  # one instance per waiter: tracebacks are per raise
    err.__cause__ = cause
    fut.set_exception(err)


class GroupCommitWriter(StoreBase):
    """The store's write path: queued rows, the writer task and its batches."""

    _pending: list[_Pending]
    _inflight: list[_Pending]
    _wake: asyncio.Event
    _flush_wanted: bool

    async def write(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> int:
        """Store readings and events; return once they are committed.

        Returns the number of new reading rows: a reading whose natural key
        ``(meter, channel, archive, ts)`` is already stored is ignored and keeps its original seq; so is an
        archive reading at or before what :meth:`prune` deleted of its series (pruned means gone).
        An event with an existing ``(meter, code, ts_start)`` updates ``ts_end``/``text`` if given.
        Raises StoreError if the transaction holding these rows failed (nothing was stored then).
        """
        self._check_writable()
        if not readings and not events:
            return 0
        received = int(time.time())
        rows = _reading_rows(readings, received)
        ev_rows = _event_rows(events, received)
        loop = asyncio.get_running_loop()
        item = _Pending(rows, ev_rows, loop.create_future(), loop.time())
        was_idle = not self._pending
        self._pending.append(item)
        self._pending_rows += item.size
        if was_idle or self._pending_rows >= self._max_rows:
            self._wake.set()
        # Not shielded: if the caller is cancelled its rows may still commit, which is harmless
        # (the poll is repeated and the natural key drops the duplicate).
        return await item.fut

    @property
    def commit_interval(self) -> float:
        return self._interval

    @commit_interval.setter
    def commit_interval(self, seconds: float) -> None:
        """Applied from the next batch on (a reload changing ``[store] commit_interval``)."""
        if not seconds >= 0:
            raise StoreError(f"commit_interval must be >= 0 seconds, got {seconds!r}")
        self._interval = seconds

    async def flush(self) -> None:
        """Commit everything queued so far now, without waiting for ``commit_interval``."""
        self._check_writable()
        futs = [p.fut for p in self._inflight] + [p.fut for p in self._pending]
        if not futs:
            return
        if self._pending:
            self._flush_wanted = True
            self._wake.set()
        results = await asyncio.gather(*(asyncio.shield(f) for f in futs), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                raise StoreError(f"flush: a queued write failed: {res}") from res

    @property
    def writer_running(self) -> bool:
        """False once the group-commit writer task has ended: no write can commit until the store is reopened
        (the watchdog's probe tells this apart from a write that fails, such as a full disk)."""
        return self._writer_task is not None and not self._writer_task.done()

    async def _run_writer(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not self._pending:
                    self._flush_wanted = False
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                urgent = self._closing or self._flush_wanted or self._pending_rows >= self._max_rows
                if not urgent:
                    remaining = self._pending[0].t0 + self._interval - loop.time()
                    if remaining > 0:
                        self._wake.clear()
                        # Both names: on 3.10 asyncio.TimeoutError is not the builtin one.
                        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                            async with timeout(remaining):
                                await self._wake.wait()
                        continue
                await self._commit(self._take_batch())
        except asyncio.CancelledError:
            self._fail_all("store writer stopped before these rows were committed")
            raise
        except BaseException as exc:  # a bug here must not leave writers waiting forever
            self._fail_all(f"store writer crashed: {type(exc).__name__}: {exc}")
            if isinstance(exc, Exception):
                log.error("store writer crashed (%s: %s); no write commits until pollerd restarts",
                          type(exc).__name__, exc)
            raise

    def _take_batch(self) -> list[_Pending]:
        # Whole writes only, so each writer's rows commit or fail together.
        n, rows = 0, 0
        for item in self._pending:
            if n and rows + item.size > self._max_rows:
                break
            n += 1
            rows += item.size
        batch, self._pending = self._pending[:n], self._pending[n:]
        self._pending_rows -= rows
        return batch

    async def _commit(self, batch: list[_Pending]) -> None:
        assert self._w is not None
        w = self._w
        self._inflight = batch
        try:
            async with self._wlock:
                try:
                    counts: list[int] = []
                    has_events = any(item.events for item in batch)
                    events_changed = False
                    with sql_errors(f"write batch of {sum(p.size for p in batch)} rows "
                                 f"to {str(self.path)!r}"):
                        await w.execute("BEGIN IMMEDIATE")
                        # Events are re-read every cycle and mostly unchanged; the event counter says whether
                        # one was new or changed, i.e. whether the sinks have events to send.
                        before = await _event_counter(w) if has_events else 0
                        for sql, args in _chunks(_series_rows(batch), _INSERT_SERIES, _SERIES_CHUNK):
                            await w.execute(sql, args)
                        for item in batch:
                            added = 0
                            for sql, args in _chunks(item.rows, _INSERT_READINGS):
                                # Not closed: an INSERT has run to its end in execute(), and a close()
                                # would be one more round trip to aiosqlite's thread.
                                added += (await w.execute(sql, args)).rowcount
                            for sql, args in _chunks(item.events, _UPSERT_EVENTS):
                                await w.execute(sql, args)
                            counts.append(added)
                        if has_events:
                            events_changed = await _event_counter(w) != before
                        await w.execute("COMMIT")
                except StoreError as exc:
                    await self._rollback()
                    log.error("%s", exc)
                    for item in batch:
                        _fail(item.fut, str(exc), exc.__cause__)
                    return
                except Exception as exc:
                    # sqlite3 raises some binding failures as plain Python errors (OverflowError for an int
                    # beyond 64 bits). Fail this batch like an sqlite error: letting it out would end the
                    # writer task, and with it every later write of every meter until a restart.
                    await self._rollback()
                    log.exception("write batch of %d rows failed", sum(p.size for p in batch))
                    for item in batch:
                        _fail(item.fut, f"write batch failed ({type(exc).__name__}: {exc}); nothing of it "
                                        f"was committed", exc)
                    return
                except BaseException as exc:
                    await self._rollback()
                    for item in batch:
                        _fail(item.fut, f"write batch interrupted ({type(exc).__name__}); "
                                        f"nothing of it was committed", None)
                    raise
            self.commits += 1
            if any(counts) or events_changed:
                self.new_data.set()
            for item, added in zip(batch, counts):
                if not item.fut.done():
                    item.fut.set_result(added)
        finally:
            # An error escaping the handlers above (the ROLLBACK itself failing on a dead connection) ends the
            # writer task; its _fail_all no longer sees this batch, whose writers would then wait for ever.
            for item in batch:
                if not item.fut.done():
                    _fail(item.fut, "store writer crashed; nothing of this batch was committed", None)
            self._inflight = []

    def _fail_all(self, message: str) -> None:
        for item in self._inflight + self._pending:
            _fail(item.fut, message, None)
        self._pending.clear()
        self._pending_rows = 0
