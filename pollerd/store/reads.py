"""Reading the store: the outbox in seq order for sinks, and paged queries for the local API and the CLI.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..errors import StoreError
from ..model import Event, Reading
from .base import StoreBase, sql_errors

_READING_COLS = "meter, channel, archive, ts, value, unit, quality"


def _where(conds: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    used = [(sql, v) for sql, v in conds if v is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [v for _, v in used]


def _count(row: sqlite3.Row | None) -> int:
    """The one value of a ``SELECT count(*)`` row (which always returns one row)."""
    if row is None:
        raise StoreError("count(*) returned no row")
    return int(row[0])


def _page_args(page: int, per_page: int) -> int:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise StoreError(f"page must be an integer >= 1, got {page!r}")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or per_page < 1:
        raise StoreError(f"per_page must be an integer >= 1, got {per_page!r}")
    return (page - 1) * per_page


class Reads(StoreBase):
    """Queries on the reader connection (never sees an uncommitted row)."""

    async def seq_range(self) -> tuple[int, int]:
        """(lowest seq still stored or 0 when empty, highest seq ever given), in one cheap query: the
        forwarder's lag skips what pruning or the quota removed."""
        with sql_errors("read the seq range"):
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
        with sql_errors(f"fetch readings after seq {seq}"):
            async with self._rc.execute(
                    f"SELECT seq, {_READING_COLS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
                    (seq, limit)) as cur:
                rows = await cur.fetchall()
        return [(r[0], Reading(*r[1:])) for r in rows]

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
        with sql_errors("query readings"):
            async with self._rc.execute(f"SELECT count(*) FROM readings{where}", args) as cur:
                total = _count(await cur.fetchone())
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
        with sql_errors("query readings"):
            async with self._rc.execute(
                    f"SELECT {_READING_COLS} FROM readings{where} "
                    f"ORDER BY ts, meter, channel, archive LIMIT ?", [*args, limit]) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def query_events(self, *, meter: str | None = None, ts_from: int | None = None,
                           ts_to: int | None = None, page: int = 1, per_page: int = 100,
                           ) -> tuple[list[Event], int]:
        """One page of events ordered by ts_start, meter, code (``ts_from`` inclusive, ``ts_to``
        exclusive, on ts_start); and the total matching count."""
        offset = _page_args(page, per_page)
        where, args = _where([("meter = ?", meter), ("ts_start >= ?", ts_from),
                              ("ts_start < ?", ts_to)])
        with sql_errors("query events"):
            async with self._rc.execute(f"SELECT count(*) FROM events{where}", args) as cur:
                total = _count(await cur.fetchone())
            async with self._rc.execute(
                    f"SELECT meter, code, ts_start, ts_end, text FROM events{where} "
                    f"ORDER BY ts_start, meter, code LIMIT ? OFFSET ?",
                    [*args, per_page, offset]) as cur:
                rows = await cur.fetchall()
        return [Event(*r) for r in rows], total
