"""The durable local store: SQLite in WAL mode through aiosqlite (DESIGN.md §4).

Two connections per daemon store: one *writer* that owns every write transaction, and one *reader*
for queries. The split is deliberate: a reader on the same connection as an open write transaction
would see rows that are not committed yet, and a sink must never forward a reading that a failed
commit could still take back. The reader also keeps queries from queueing behind a large batch.

Writes are group-committed: :meth:`Store.write` queues its rows and returns only after the
transaction holding them committed with ``synchronous=FULL``, so whatever a caller was told is
stored survives a power cut or a ``kill -9``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from .compat import timeout
from .errors import StoreError
from .model import Event, Reading

__all__ = ["Store", "SCHEMA_VERSION", "MIGRATIONS"]

log = logging.getLogger(__name__)

# Each step runs in its own transaction together with the bump of PRAGMA user_version, so a crash
# mid-migration leaves the file at the previous version, never half-migrated. Append only: never
# edit a step that has shipped.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: initial schema
        # AUTOINCREMENT so a seq is never reused after pruning: sink cursors compare against it.
        """CREATE TABLE readings (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            meter    TEXT    NOT NULL,
            channel  TEXT    NOT NULL,
            archive  TEXT    NOT NULL,
            ts       INTEGER NOT NULL,
            value    REAL    NOT NULL,
            unit     TEXT    NOT NULL,
            quality  TEXT    NOT NULL DEFAULT 'good',
            received INTEGER NOT NULL,
            UNIQUE (meter, channel, archive, ts)
        )""",
        "CREATE INDEX readings_meter_ts ON readings (meter, ts)",
        "CREATE INDEX readings_ts ON readings (ts)",
        """CREATE TABLE events (
            id       INTEGER PRIMARY KEY,
            meter    TEXT    NOT NULL,
            code     TEXT    NOT NULL,
            ts_start INTEGER NOT NULL,
            ts_end   INTEGER,
            text     TEXT    NOT NULL DEFAULT '',
            received INTEGER NOT NULL,
            UNIQUE (meter, code, ts_start)
        )""",
        "CREATE INDEX events_ts ON events (ts_start)",
        """CREATE TABLE sink_cursors (
            sink    TEXT    PRIMARY KEY,
            seq     INTEGER NOT NULL,
            updated INTEGER NOT NULL
        )""",
        """CREATE TABLE state (
            key     TEXT    PRIMARY KEY,
            value   TEXT    NOT NULL,
            updated INTEGER NOT NULL
        )""",
        """CREATE TABLE parked (
            id        INTEGER PRIMARY KEY,
            sink      TEXT    NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq  INTEGER NOT NULL,
            reason    TEXT    NOT NULL,
            ts        INTEGER NOT NULL
        )""",
        "CREATE INDEX parked_sink ON parked (sink)",
    ),
    (  # 2: the unique key led by ts. Keyed (meter, channel, ...) every commit touched one index leaf page per
        # series (a 1000-reading batch of 700 series wrote ~5.8 KB per reading to the SD card); led by ts,
        # new readings append at the right edge of the index: ~0.9 KB per reading and twice the ingest rate
        # (scripts/bench_store.py). The ts-led key also serves the ts range queries, so readings_ts goes.
        # SQLite cannot change a table's UNIQUE constraint in place: the table is rebuilt, seqs kept, and
        # the AUTOINCREMENT high-water mark carried over so a seq is never reused (sink cursors).
        "CREATE TABLE readings_seq_keep AS SELECT seq FROM sqlite_sequence WHERE name = 'readings'",
        """CREATE TABLE readings_v2 (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            meter    TEXT    NOT NULL,
            channel  TEXT    NOT NULL,
            archive  TEXT    NOT NULL,
            ts       INTEGER NOT NULL,
            value    REAL    NOT NULL,
            unit     TEXT    NOT NULL,
            quality  TEXT    NOT NULL DEFAULT 'good',
            received INTEGER NOT NULL,
            UNIQUE (ts, meter, channel, archive)
        )""",
        "INSERT INTO readings_v2 (seq, meter, channel, archive, ts, value, unit, quality, received) "
        "SELECT seq, meter, channel, archive, ts, value, unit, quality, received FROM readings ORDER BY seq",
        "DROP TABLE readings",
        "ALTER TABLE readings_v2 RENAME TO readings",
        "CREATE INDEX readings_meter_ts ON readings (meter, ts)",
        "DELETE FROM sqlite_sequence WHERE name IN ('readings', 'readings_v2')",
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'readings', max(coalesce((SELECT max(seq) FROM "
        "readings_seq_keep), 0), coalesce((SELECT max(seq) FROM readings), 0))",
        "DROP TABLE readings_seq_keep",
    ),
    # 3: no (meter, ts) index. Every meter's readings land at that meter's own place in such an index, so each
    # poll cycle of each meter dirtied an index page of its own: measured in the 1000-meter daemon bench,
    # 586 bytes written to the disk per stored reading with it, 222 without (SD-card wear). Queries by meter
    # (local API, `pollerd readings`) walk the ts-led unique key instead: 2 -> 47 ms for one meter's page out
    # of 1 M readings on the dev machine, and as fast as before with a time range.
    ("DROP INDEX readings_meter_ts",),
]

SCHEMA_VERSION = len(MIGRATIONS)

# A gateway has 256 MB-1 GB RAM and an SD card: 2 MiB of page cache per connection is plenty for the
# hot index pages; the WAL is trimmed back after checkpoints so it does not squat on the card.
_CACHE_KIB = 2048
_BUSY_TIMEOUT_MS = 5000
_JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024
_PRUNE_BATCH = 5000

# INSERT OR IGNORE alone would still burn an AUTOINCREMENT value for every ignored duplicate (SQLite
# allocates the rowid before the UNIQUE check), leaving gaps that inflate sink lag; the NOT EXISTS
# guard skips duplicates before a rowid is allocated, OR IGNORE stays as the safety net.
_INSERT_READING = (
    "INSERT OR IGNORE INTO readings (meter, channel, archive, ts, value, unit, quality, received) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE NOT EXISTS ("
    "SELECT 1 FROM readings WHERE meter = ?1 AND channel = ?2 AND archive = ?3 AND ts = ?4)"
)
# An event is often first seen open (no end yet) and later closed: the re-read fills in the end and
# text instead of being dropped as a duplicate.
_UPSERT_EVENT = (
    "INSERT INTO events (meter, code, ts_start, ts_end, text, received) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (meter, code, ts_start) DO UPDATE SET "
    "ts_end = COALESCE(excluded.ts_end, events.ts_end), "
    "text = CASE WHEN excluded.text != '' THEN excluded.text ELSE events.text END"
)
_READING_COLS = "meter, channel, archive, ts, value, unit, quality"

_ReadingRow = tuple[str, str, str, int, float, str, str, int]
# SQLite's INTEGER is 64-bit; sqlite3 refuses a larger Python int with OverflowError at bind time.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EventRow = tuple[str, str, int, "int | None", str, int]


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn sqlite failures into StoreError saying what was being done."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc


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
    return rows


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


def _where(conds: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    used = [(sql, v) for sql, v in conds if v is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [v for _, v in used]


def _page_args(page: int, per_page: int) -> int:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise StoreError(f"page must be an integer >= 1, got {page!r}")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
        raise StoreError(f"per_page must be an integer >= 1, got {per_page!r}")
    return (page - 1) * per_page


class Store:
    """The SQLite buffer between pollers and sinks. Create with :meth:`open` or :meth:`open_readonly`."""

    new_data: asyncio.Event
    commits: int

    def __init__(self, path: Path, writer: aiosqlite.Connection | None, reader: aiosqlite.Connection,
                 *, commit_interval: float, max_batch_rows: int) -> None:
        # Use Store.open() / Store.open_readonly(); the constructor only wires parts together.
        self.path = path
        self.readonly = writer is None
        self.new_data = asyncio.Event()
        self.commits = 0  # group-commit transactions committed by the writer task (tests, metrics)
        self._w = writer
        self._r = reader
        self._interval = commit_interval
        self._max_rows = max_batch_rows
        self._wlock = asyncio.Lock()  # one write transaction at a time on the writer connection
        self._pending: list[_Pending] = []
        self._pending_rows = 0
        self._inflight: list[_Pending] = []
        self._wake = asyncio.Event()
        self._flush_wanted = False
        self._closing = False
        self._closed = False
        self._writer_task: asyncio.Task[None] | None = None
        if writer is not None:
            self._writer_task = asyncio.get_running_loop().create_task(
                self._run_writer(), name=f"store-writer:{path.name}")

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<Store {str(self.path)!r} {mode}{' closed' if self._closed else ''}>"

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, commit_interval: float = 1.0,
                   max_batch_rows: int = 5000) -> Store:
        """Open (creating it and its parent directory if needed) and migrate the store."""
        if not commit_interval >= 0:
            raise StoreError(f"commit_interval must be >= 0 seconds, got {commit_interval!r}")
        if max_batch_rows < 1:
            raise StoreError(f"max_batch_rows must be >= 1, got {max_batch_rows!r}")
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {str(p.parent)!r}: {exc}") from exc
        writer: aiosqlite.Connection | None = None
        reader: aiosqlite.Connection | None = None
        try:
            with _errors(f"open store {str(p)!r}"):
                writer = await aiosqlite.connect(str(p), isolation_level=None,
                                                 timeout=_BUSY_TIMEOUT_MS / 1000)
                await _migrate(writer, p)
                for pragma in ("synchronous = FULL", "foreign_keys = ON",
                               f"busy_timeout = {_BUSY_TIMEOUT_MS}", f"cache_size = -{_CACHE_KIB}",
                               f"journal_size_limit = {_JOURNAL_SIZE_LIMIT}"):
                    await writer.execute(f"PRAGMA {pragma}")
                reader = await _connect_reader(str(p), uri=False)
            return cls(p, writer, reader, commit_interval=commit_interval,
                       max_batch_rows=max_batch_rows)
        except BaseException:
            for conn in (reader, writer):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            raise

    @classmethod
    async def open_readonly(cls, path: str | os.PathLike[str]) -> Store:
        """Open an existing store for queries only (``pollerd readings`` while the daemon runs).

        No migrations run; the file must exist and be at exactly the schema version this code knows.
        """
        p = Path(path)
        if not p.is_file():
            raise StoreError(f"store file does not exist: {str(p)!r}")
        uri = p.resolve().as_uri() + "?mode=ro"
        reader: aiosqlite.Connection | None = None
        try:
            with _errors(f"open store {str(p)!r} read-only"):
                reader = await _connect_reader(uri, uri=True)
                async with reader.execute("PRAGMA user_version") as cur:
                    row = await cur.fetchone()
            version = row[0] if row else 0
            if version != SCHEMA_VERSION:
                hint = ("it is newer than this pollerd; upgrade pollerd" if version > SCHEMA_VERSION
                        else "start the daemon once to migrate it")
                raise StoreError(f"store {str(p)!r} has schema version {version}, this pollerd "
                                 f"reads version {SCHEMA_VERSION}: {hint}")
            return cls(p, None, reader, commit_interval=0.0, max_batch_rows=1)
        except BaseException:
            if reader is not None:
                with contextlib.suppress(Exception):
                    await reader.close()
            raise

    async def close(self) -> None:
        """Commit every queued write, stop the writer task and close the connections."""
        if self._closed:
            return
        self._closing = True
        try:
            if self._writer_task is not None:
                self._wake.set()
                try:
                    await self._writer_task
                except Exception:  # its crash was logged and failed every write; closing must still work
                    pass
        finally:
            self._closed = True
            for conn in (self._r, self._w):
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ group-committed writes

    async def write(self, readings: Sequence[Reading], events: Sequence[Event] = ()) -> int:
        """Store readings and events; return once they are committed.

        Returns the number of new reading rows: a reading whose natural key
        ``(meter, channel, archive, ts)`` is already stored is ignored and keeps its original seq.
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

    def _check_writable(self) -> None:
        if self._w is None:
            raise StoreError(f"store {str(self.path)!r} is open read-only")
        if self._closing or self._closed:
            raise StoreError(f"store {str(self.path)!r} is closed")
        if self._writer_task is not None and self._writer_task.done():
            raise StoreError(f"store {str(self.path)!r}: the writer task is not running")

    @property
    def _rc(self) -> aiosqlite.Connection:
        # aiosqlite would raise a bare ValueError on a closed connection.
        if self._closed:
            raise StoreError(f"store {str(self.path)!r} is closed")
        return self._r

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
                    with _errors(f"write batch of {sum(p.size for p in batch)} rows "
                                 f"to {str(self.path)!r}"):
                        await w.execute("BEGIN IMMEDIATE")
                        for item in batch:
                            added = 0
                            if item.rows:
                                async with w.executemany(_INSERT_READING, item.rows) as cur:
                                    added = cur.rowcount
                            if item.events:
                                await (await w.executemany(_UPSERT_EVENT, item.events)).close()
                            counts.append(added)
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
            if any(counts):
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

    async def _rollback(self) -> None:
        assert self._w is not None
        # A failed COMMIT may leave the transaction open (SQLITE_BUSY) or already rolled back;
        # either way the next BEGIN needs a clean connection.
        with contextlib.suppress(sqlite3.Error):
            await self._w.execute("ROLLBACK")

    def _fail_all(self, message: str) -> None:
        for item in self._inflight + self._pending:
            _fail(item.fut, message, None)
        self._pending.clear()
        self._pending_rows = 0

    async def _write_tx(self, what: str, body: Callable[[aiosqlite.Connection], Any]) -> Any:
        """Run ``body`` in its own committed transaction on the writer connection."""
        self._check_writable()
        assert self._w is not None
        w = self._w
        async with self._wlock:
            try:
                with _errors(what):
                    await w.execute("BEGIN IMMEDIATE")
                    result = await body(w)
                    await w.execute("COMMIT")
                return result
            except BaseException:
                await self._rollback()
                raise

    # ------------------------------------------------------------------ outbox for sinks

    async def last_seq(self) -> int:
        """Highest seq ever given to a reading (0 if none). Pruning does not lower it."""
        return await self._last_seq(self._rc)

    @staticmethod
    async def _last_seq(conn: aiosqlite.Connection) -> int:
        with _errors("read last seq"):
            async with conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'readings'") as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def seq_range(self) -> tuple[int, int]:
        """(lowest seq still stored or 0 when empty, highest seq ever given), in one cheap query: the
        forwarder's lag skips what pruning or the quota removed."""
        with _errors("read the seq range"):
            async with self._rc.execute(
                    "SELECT (SELECT min(seq) FROM readings), "
                    "(SELECT seq FROM sqlite_sequence WHERE name = 'readings')") as cur:
                row = await cur.fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    async def fetch_after(self, seq: int, limit: int) -> list[tuple[int, Reading]]:
        """Up to ``limit`` readings with seq > ``seq``, in seq order."""
        if limit < 1:
            return []
        with _errors(f"fetch readings after seq {seq}"):
            async with self._rc.execute(
                    f"SELECT seq, {_READING_COLS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit)) as cur:
                rows = await cur.fetchall()
        return [(r[0], Reading(*r[1:])) for r in rows]

    async def cursor(self, sink: str) -> int:
        """The last seq ``sink`` confirmed; 0 for a sink never seen."""
        with _errors(f"read cursor of sink {sink!r}"):
            async with self._rc.execute("SELECT seq FROM sink_cursors WHERE sink = ?",
                                       (sink,)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def advance(self, sink: str, seq: int) -> None:
        """Record that ``sink`` confirmed everything up to ``seq``. Committed before returning;
        a lower seq than the stored one leaves the cursor where it is."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise StoreError(f"advance({sink!r}): seq must be an integer >= 0, got {seq!r}")

        async def body(w: aiosqlite.Connection) -> None:
            last = await self._last_seq(w)
            if seq > last:
                # A cursor past the newest row would silently skip rows not written yet.
                raise StoreError(f"advance({sink!r}, {seq}): beyond the last stored seq {last}")
            await w.execute(
                "INSERT INTO sink_cursors (sink, seq, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq), "
                "updated = excluded.updated", (sink, seq, int(time.time())))

        await self._write_tx(f"advance cursor of sink {sink!r} to {seq}", body)

    async def park(self, sink: str, first_seq: int, last_seq: int, reason: str, *,
                   advance: bool = False) -> None:
        """Record a batch ``sink`` refused for good. The readings stay (pruning skips parked
        ranges) so they can be inspected or replayed; :meth:`unpark` releases them. With
        ``advance`` the sink's cursor moves to ``last_seq`` in the same transaction, so a crash
        cannot leave the batch parked but still due (and parked again on the next try)."""
        if first_seq > last_seq:
            raise StoreError(f"park({sink!r}): first_seq {first_seq} > last_seq {last_seq}")

        async def body(w: aiosqlite.Connection) -> None:
            await w.execute("INSERT INTO parked (sink, first_seq, last_seq, reason, ts) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (sink, first_seq, last_seq, reason, int(time.time())))
            if advance:
                await w.execute(
                    "INSERT INTO sink_cursors (sink, seq, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq), "
                    "updated = excluded.updated", (sink, last_seq, int(time.time())))

        await self._write_tx(f"park seqs {first_seq}..{last_seq} of sink {sink!r}", body)

    async def parked(self, sink: str | None = None) -> list[dict]:
        """Parked batches, oldest first: dicts with id, sink, first_seq, last_seq, reason, ts."""
        sql = "SELECT id, sink, first_seq, last_seq, reason, ts FROM parked"
        args: tuple[Any, ...] = ()
        if sink is not None:
            sql += " WHERE sink = ?"
            args = (sink,)
        with _errors("list parked batches"):
            async with self._rc.execute(sql + " ORDER BY id", args) as cur:
                rows = await cur.fetchall()
        keys = ("id", "sink", "first_seq", "last_seq", "reason", "ts")
        return [dict(zip(keys, r)) for r in rows]

    async def unpark(self, park_id: int) -> bool:
        """Forget one parked batch (its readings become prunable). False if there was none."""

        async def body(w: aiosqlite.Connection) -> int:
            async with w.execute("DELETE FROM parked WHERE id = ?", (park_id,)) as cur:
                return cur.rowcount

        return bool(await self._write_tx(f"unpark batch {park_id}", body))

    # ------------------------------------------------------------------ queries (local API, CLI)

    async def query_readings(self, *, meter: str | None = None, channel: str | None = None,
                             archive: str | None = None, ts_from: int | None = None,
                             ts_to: int | None = None, page: int = 1, per_page: int = 100,
                             ) -> tuple[list[Reading], int]:
        """One page of readings ordered by ts, meter, channel; and the total matching count.

        ``ts_from`` is inclusive, ``ts_to`` exclusive, so consecutive ranges never overlap."""
        offset = _page_args(page, per_page)
        where, args = _where([("meter = ?", meter), ("channel = ?", channel),
                              ("archive = ?", None if archive is None else str(archive)),
                              ("ts >= ?", ts_from), ("ts < ?", ts_to)])
        with _errors("query readings"):
            async with self._rc.execute(f"SELECT count(*) FROM readings{where}", args) as cur:
                total = int((await cur.fetchone())[0])  # type: ignore[index]
            async with self._rc.execute(
                    f"SELECT {_READING_COLS} FROM readings{where} "
                    f"ORDER BY ts, meter, channel, archive LIMIT ? OFFSET ?",
                    [*args, per_page, offset]) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows], total

    async def readings_after(self, after: tuple[int, str, str, str] | None = None, *, meter: str | None = None,
                             channel: str | None = None, archive: str | None = None, limit: int = 1000,
                             ) -> list[Reading]:
        """Up to ``limit`` readings ordered by ts, meter, channel, archive, starting after the reading whose
        key ``(ts, meter, channel, archive)`` is ``after`` (from the start when None).

        For walking through everything while the daemon writes and prunes (``pollerd readings``): pages
        by OFFSET shift when older rows are pruned or a backfill lands before the page, and rows are then
        skipped or printed twice; a key stays put."""
        if limit < 1:
            return []
        conds: list[tuple[str, Any]] = [("meter = ?", meter), ("channel = ?", channel),
                                        ("archive = ?", None if archive is None else str(archive))]
        where, args = _where(conds)
        if after is not None:
            where += (" AND " if where else " WHERE ") + "(ts, meter, channel, archive) > (?, ?, ?, ?)"
            args += [int(after[0]), after[1], after[2], str(after[3])]
        with _errors("query readings"):
            async with self._rc.execute(
                    f"SELECT {_READING_COLS} FROM readings{where} "
                    f"ORDER BY ts, meter, channel, archive LIMIT ?", [*args, limit]) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def query_events(self, *, meter: str | None = None, ts_from: int | None = None,
                           ts_to: int | None = None, page: int = 1, per_page: int = 100,
                           code: str | None = None, newest_first: bool = False,
                           ) -> tuple[list[Event], int]:
        """One page of events ordered by ts_start, meter, code (``ts_from`` inclusive, ``ts_to``
        exclusive, on ts_start; the status page lists the newest first); and the total matching count."""
        offset = _page_args(page, per_page)
        where, args = _where([("meter = ?", meter), ("code = ?", code), ("ts_start >= ?", ts_from),
                              ("ts_start < ?", ts_to)])
        order = "ts_start DESC, meter, code" if newest_first else "ts_start, meter, code"
        with _errors("query events"):
            async with self._rc.execute(f"SELECT count(*) FROM events{where}", args) as cur:
                total = int((await cur.fetchone())[0])  # type: ignore[index]
            async with self._rc.execute(
                    f"SELECT meter, code, ts_start, ts_end, text FROM events{where} "
                    f"ORDER BY {order} LIMIT ? OFFSET ?",
                    [*args, per_page, offset]) as cur:
                rows = await cur.fetchall()
        return [Event(*r) for r in rows], total

    async def latest_readings(self, meter: str, archive: str, *, since: int, limit: int = 2000) -> list[Reading]:
        """The newest readings of one meter and archive with ``ts >= since``, newest first, at most ``limit``
        (the status page keeps the first of each channel). Walks the ts-led key backwards from now, so it
        reads only what was stored after the meter's last poll, not its whole history."""
        with _errors("query latest readings"):
            async with self._rc.execute(
                    f"SELECT {_READING_COLS} FROM readings WHERE ts >= ? AND meter = ? AND archive = ? "
                    f"ORDER BY ts DESC LIMIT ?", (int(since), meter, str(archive), max(1, limit))) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def readings_between(self, *, meters: Sequence[str], archive: str, channels: Sequence[str],
                               ts_from: int, ts_to: int, limit: int = 100_000) -> list[Reading]:
        """Readings of some meters' channels in one archive with ``ts_from <= ts < ts_to``, ordered by ts, at
        most ``limit``: one pass over the ts-led key for all of them (a status-page chart or report), where
        paging per meter and channel would walk the same range again for each, and count it too."""
        if not meters or not channels:
            return []
        marks_m, marks_c = ",".join("?" * len(meters)), ",".join("?" * len(channels))
        with _errors("query readings"):
            async with self._rc.execute(
                    f"SELECT {_READING_COLS} FROM readings WHERE ts >= ? AND ts < ? AND meter IN ({marks_m}) "
                    f"AND channel IN ({marks_c}) AND archive = ? ORDER BY ts LIMIT ?",
                    (int(ts_from), int(ts_to), *meters, *channels, str(archive), max(1, limit))) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    # ------------------------------------------------------------------ driver state

    async def get_state(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None."""
        with _errors(f"read state {key!r}"):
            async with self._rc.execute("SELECT value FROM state WHERE key = ?", (key,)) as cur:
                row = await cur.fetchone()
        if row is None:
            return None
        try:
            return orjson.loads(row[0])
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"state {key!r} holds invalid JSON: {exc}") from exc

    async def states(self, prefix: str) -> dict[str, Any]:
        """Every state value whose key starts with ``prefix``, by key (an operator's listing)."""
        with _errors(f"read states {prefix!r}*"):
            async with self._rc.execute("SELECT key, value FROM state WHERE substr(key, 1, ?) = ? ORDER BY key",
                                        (len(prefix), prefix)) as cur:
                rows = await cur.fetchall()
        out = {}
        for key, text in rows:
            try:
                out[key] = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise StoreError(f"state {key!r} holds invalid JSON: {exc}") from exc
        return out

    async def set_state(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key``; committed before returning."""
        text = _state_json(key, value)

        async def body(w: aiosqlite.Connection) -> None:
            await w.execute(_UPSERT_STATE, (key, text, int(time.time())))

        await self._write_tx(f"write state {key!r}", body)

    async def set_state_if(self, key: str, value: Any, expected: Any | None) -> bool:
        """Store ``value`` under ``key`` only if the stored value still equals ``expected`` (None: no value),
        read and written in one IMMEDIATE transaction; False, and nothing written, if someone changed it
        meanwhile (another process on the same database: `pollerd sioi` beside the daemon)."""
        text = _state_json(key, value)

        async def body(w: aiosqlite.Connection) -> bool:
            async with w.execute("SELECT value FROM state WHERE key = ?", (key,)) as cur:
                row = await cur.fetchone()
            try:
                current = None if row is None else orjson.loads(row[0])
            except orjson.JSONDecodeError:
                return False  # not what anyone expects; set_state() can still replace it
            if current != expected:
                return False
            await w.execute(_UPSERT_STATE, (key, text, int(time.time())))
            return True

        return bool(await self._write_tx(f"write state {key!r}", body))

    # ------------------------------------------------------------------ retention

    async def prune(self, *, keep: float, sinks: Sequence[str], now: float) -> int:
        """Delete readings with ts older than ``now - keep`` that every sink in ``sinks`` has
        confirmed (and that no parked batch holds), in short transactions so writers are not held
        up. With no sinks, age alone decides. Returns the number of rows deleted."""
        self._check_writable()
        cutoff = now - keep
        if sinks:
            upto = min([await self.cursor(s) for s in sinks])
        else:
            upto = await self.last_seq()
        if upto <= 0:
            return 0
        deleted = 0

        async def body(w: aiosqlite.Connection) -> int:
            async with w.execute(
                    "DELETE FROM readings WHERE seq IN ("
                    " SELECT seq FROM readings r WHERE r.seq <= ? AND r.ts < ? AND NOT EXISTS ("
                    "  SELECT 1 FROM parked p WHERE r.seq BETWEEN p.first_seq AND p.last_seq)"
                    " ORDER BY seq LIMIT ?)", (upto, cutoff, _PRUNE_BATCH)) as cur:
                return cur.rowcount

        while True:
            n = await self._write_tx(f"prune readings before ts {cutoff:.0f} up to seq {upto}", body)
            deleted += n
            if n < _PRUNE_BATCH:
                break
            await asyncio.sleep(0)  # let queued writes take the lock between batches
        if deleted:
            log.info("pruned %d readings older than ts %.0f confirmed by %s", deleted, cutoff,
                     ", ".join(sinks) or "(no sinks)")
        return deleted

    # ------------------------------------------------------------------ quota (policy in pollerd/quota.py)

    async def space(self) -> tuple[int, int, int]:
        """(page_size, page_count, freelist_count) of the main database file as last committed.

        ``(page_count - freelist_count) * page_size`` is what the data takes; freed pages stay in the
        file (and are reused) until :meth:`give_back` returns them."""
        with _errors("read store page counts"):
            async with self._rc.execute(
                    "SELECT * FROM pragma_page_size, pragma_page_count, pragma_freelist_count") as cur:
                row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    async def evict(self, *, sinks: Sequence[str], limit: int, ts_before: float | None = None,
                    ) -> tuple[int, dict[str, int]]:
        """Delete up to ``limit`` readings in one transaction, delivered or not: with ``ts_before`` the
        ones with the oldest ``ts`` below it, otherwise the oldest stored (lowest seq).

        Returns (rows deleted, {sink: how many of them sink had not confirmed}). Cursors stay where
        they are: fetch_after() simply skips the missing seqs. Parked batches are evicted too (the
        quota is a hard bound); their parked records stay as the evidence of the refusal."""
        self._check_writable()
        if limit < 1:
            return 0, {}
        if ts_before is None:
            pick = "SELECT seq FROM readings ORDER BY seq LIMIT ?"
            args: tuple[Any, ...] = (limit,)
        else:
            # The ts-led unique index gives the rows in ts order without sorting the table.
            pick = "SELECT seq FROM readings WHERE ts < ? ORDER BY ts LIMIT ?"
            args = (int(math.ceil(ts_before)), limit)

        async def body(w: aiosqlite.Connection) -> tuple[int, dict[str, int]]:
            async with w.execute(pick, args) as cur:
                seqs = [r[0] for r in await cur.fetchall()]
            if not seqs:
                return 0, {}
            lost: dict[str, int] = {}
            for sink in sinks:
                async with w.execute("SELECT seq FROM sink_cursors WHERE sink = ?", (sink,)) as cur:
                    row = await cur.fetchone()
                c = int(row[0]) if row else 0
                lost[sink] = sum(1 for q in seqs if q > c)
            # The same query in the same write transaction selects the same rows again.
            async with w.execute(f"DELETE FROM readings WHERE seq IN ({pick})", args) as cur:
                n = cur.rowcount
            return n, lost

        what = "evict oldest readings" if ts_before is None else f"evict readings before ts {ts_before:.0f}"
        return await self._write_tx(what, body)  # type: ignore[no-any-return]

    async def give_back(self, max_pages: int) -> int:
        """Return up to ``max_pages`` free pages to the file system (auto_vacuum = INCREMENTAL moves
        pages from the end of the file into free slots and truncates it). Returns pages released."""
        if max_pages < 1:
            return 0
        self._check_writable()
        assert self._w is not None
        before = (await self.space())[1]
        async with self._wlock:
            # The pragma frees one page per step and Python's execute() steps once, so it runs through
            # executescript (sqlite3_exec steps to the end), in autocommit: its own transaction.
            with _errors(f"release {max_pages} free pages"):
                await self._w.executescript(f"PRAGMA incremental_vacuum({int(max_pages)})")
        return max(0, before - (await self.space())[1])

    async def stats(self) -> dict:
        """rows, events, parked, oldest_ts, last_seq, db_bytes (main file + WAL), pending rows."""
        with _errors("read store stats"):
            async with self._rc.execute(
                    "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events), "
                    "(SELECT count(*) FROM parked), (SELECT min(ts) FROM readings)") as cur:
                rows, events, parked, oldest = await cur.fetchone()  # type: ignore[misc]
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return {
            "rows": rows,
            "events": events,
            "parked": parked,
            "oldest_ts": oldest,
            "last_seq": await self.last_seq(),
            "db_bytes": size,
            "pending_rows": self._pending_rows,
            "commits": self.commits,
        }


def _fail(fut: asyncio.Future[int], message: str, cause: BaseException | None) -> None:
    if fut.done():
        return
    err = StoreError(message)  # one instance per waiter: tracebacks are per raise
    err.__cause__ = cause
    fut.set_exception(err)


async def _connect_reader(target: str, *, uri: bool) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(target, uri=uri, isolation_level=None,
                                   timeout=_BUSY_TIMEOUT_MS / 1000)
    try:
        # query_only: this connection exists to read; a stray write through it is a bug.
        for pragma in ("query_only = ON", f"busy_timeout = {_BUSY_TIMEOUT_MS}",
                       f"cache_size = -{_CACHE_KIB}"):
            await conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    version = await _user_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(f"store {str(path)!r} has schema version {version}, newer than the "
                         f"version {SCHEMA_VERSION} this pollerd knows; refusing to touch it")
    if version == 0:
        # Only settable before the first table exists; lets a later quota pass give pages
        # back to the SD card with PRAGMA incremental_vacuum instead of a full VACUUM.
        await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    async with conn.execute("PRAGMA journal_mode = WAL") as cur:
        mode = (await cur.fetchone() or ("?",))[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"store {str(path)!r}: expected journal_mode wal, got {mode!r}")
    await conn.execute("PRAGMA synchronous = FULL")
    while True:
        # IMMEDIATE takes the write lock first, so two processes opening a fresh file at once
        # cannot both apply the same step; the version is re-read under the lock.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            version = await _user_version(conn)
            if version >= SCHEMA_VERSION:
                await conn.execute("COMMIT")
                return
            target = version + 1
            try:
                for stmt in MIGRATIONS[version]:
                    await conn.execute(stmt)
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(path)!r}: migration {version} -> {target} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
            await conn.execute(f"PRAGMA user_version = {target}")
            await conn.execute("COMMIT")
            log.info("store %s migrated to schema version %d", path, target)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise


_UPSERT_STATE = ("INSERT INTO state (key, value, updated) VALUES (?, ?, ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated")


def _state_json(key: str, value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise StoreError(f"state {key!r}: value is not JSON-serialisable: {exc}") from exc
