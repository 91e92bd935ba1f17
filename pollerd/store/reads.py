"""Reading the store: the outbox in seq order for sinks, paged queries for the local API and the CLI, and
the single-pass reads of the status pages (pollerd/web).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import StoreError
from ..model import Event, Reading
from .base import StoreBase, sql_errors

# Schema 6 keeps a reading as a `samples` row referring to its `series`; the `readings` view joins them for
# everyone else. The queries here use the tables: `samples` always the outer loop (its ts key gives the order),
# the series found by id, and a filter on meter, channel or archive turned into the set of series ids it names,
# so a count or a scan reads only the ts key and looks up no series for the rows it skips.
_FROM = "samples s CROSS JOIN series x ON x.id = s.series"
_COLS = "x.meter, x.channel, x.archive, s.ts, s.value, coalesce(s.unit, x.unit), coalesce(s.quality, 'good')"
_ORDER = "s.ts, x.meter, x.channel, x.archive"


def _reading_conds(meter: str | None, channel: str | None, archive: str | None, ts_from: int | None,
                   ts_to: int | None) -> list[tuple[str, Any]]:
    named = [(sql, v) for sql, v in (("meter = ?", meter), ("channel = ?", channel),
                                     ("archive = ?", None if archive is None else str(archive))) if v is not None]
    conds: list[tuple[str, Any]] = [("s.ts >= ?", ts_from), ("s.ts < ?", ts_to)]
    if named:
        sub = " AND ".join(sql for sql, _ in named)
        conds.append((f"s.series IN (SELECT id FROM series WHERE {sub})", [v for _, v in named]))
    return conds


def _series_of(meters: Sequence[str], channels: Sequence[str], archive: str) -> tuple[str, list[Any]]:
    """The condition "a sample of one of these meters' channels in ``archive``" as a set of series ids, and its
    arguments (a chart's or a report's selection)."""
    marks_m, marks_c = ",".join("?" * len(meters)), ",".join("?" * len(channels))
    sql = (f"s.series IN (SELECT id FROM series WHERE meter IN ({marks_m}) AND channel IN ({marks_c}) "
           f"AND archive = ?)")
    return sql, [*meters, *channels, str(archive)]


def _where_flat(conds: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    """Like _where, where a condition may bind a list of values."""
    where, values = _where(conds)
    args: list[Any] = []
    for v in values:
        args.extend(v if isinstance(v, list) else [v])
    return where, args


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
                    "SELECT (SELECT min(seq) FROM samples), "
                    "(SELECT seq FROM sqlite_sequence WHERE name = 'samples')") as cur:
                row = await cur.fetchone()
        assert row is not None
        return int(row[0] or 0), int(row[1] or 0)

    async def fetch_after(self, seq: int, limit: int) -> list[tuple[int, Reading]]:
        """Up to ``limit`` readings with seq > ``seq``, in seq order."""
        if limit < 1:
            return []
        with sql_errors(f"fetch readings after seq {seq}"):
            async with self._rc.execute(
                    f"SELECT s.seq, {_COLS} FROM {_FROM} WHERE s.seq > ? ORDER BY s.seq LIMIT ?",
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
        where, args = _where_flat(_reading_conds(meter, channel, archive, ts_from, ts_to))
        with sql_errors("query readings"):
            async with self._rc.execute(f"SELECT count(*) FROM samples s{where}", args) as cur:
                total = _count(await cur.fetchone())
            async with self._rc.execute(f"SELECT {_COLS} FROM {_FROM}{where} ORDER BY {_ORDER} LIMIT ? OFFSET ?",
                                        [*args, per_page, offset]) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows], total

    async def _page(self, table: str, cols: str, where: str, args: list[Any], order: str, per_page: int,
                    offset: int) -> tuple[Iterable[sqlite3.Row], int]:
        """One page of ``table`` (the API's and the status page's paging) and the total count matching ``where``."""
        with sql_errors(f"query {table}"):
            async with self._rc.execute(f"SELECT count(*) FROM {table}{where}", args) as cur:
                total = _count(await cur.fetchone())
            async with self._rc.execute(f"SELECT {cols} FROM {table}{where} ORDER BY {order} LIMIT ? OFFSET ?",
                                        [*args, per_page, offset]) as cur:
                rows = await cur.fetchall()
        return rows, total

    async def readings_after(self, after: tuple[int, str, str, str] | None = None, *, meter: str | None = None,
                             channel: str | None = None, archive: str | None = None, limit: int = 1000,
                             ts_from: int | None = None, ts_to: int | None = None) -> list[Reading]:
        """Up to ``limit`` readings ordered by ts, meter, channel, archive, starting after the reading whose
        key ``(ts, meter, channel, archive)`` is ``after`` (from the start when None).

        For walking through everything while the daemon writes and prunes (``pollerd readings``): pages
        by OFFSET shift when older rows are pruned or a backfill lands before the page, and rows are then
        skipped or printed twice; a key stays put."""
        if limit < 1:
            return []
        where, args = _where_flat(_reading_conds(meter, channel, archive, ts_from, ts_to))
        if after is not None:
            # s.ts >= first: the order within one ts is by the names, from the series table; the plain bound lets
            # the ts key of `samples` start at the right place.
            where += (" AND " if where else " WHERE ") + "s.ts >= ? AND (s.ts, x.meter, x.channel, x.archive) > (?, ?, ?, ?)"
            args += [int(after[0]), int(after[0]), after[1], after[2], str(after[3])]
        with sql_errors("query readings"):
            async with self._rc.execute(
                    f"SELECT {_COLS} FROM {_FROM}{where} ORDER BY {_ORDER} LIMIT ?", [*args, limit]) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def fetch_events_after(self, seq: int, limit: int) -> list[tuple[int, Event]]:
        """Up to ``limit`` events with event seq > ``seq``, in seq order: the events outbox. An event changed
        since (closed, its text filled in) has moved to a later seq and comes again there."""
        with sql_errors("fetch events"):
            async with self._rc.execute(
                    "SELECT seq, meter, code, ts_start, ts_end, text FROM events WHERE seq > ? "
                    "ORDER BY seq LIMIT ?", (seq, limit)) as cur:
                rows = await cur.fetchall()
        return [(int(r[0]), Event(*r[1:])) for r in rows]

    async def last_event_seq(self) -> int:
        with sql_errors("read last event seq"):
            async with self._rc.execute("SELECT n FROM event_counter") as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def newest_readings(self, limit: int, *, meter: str | None = None, channel: str | None = None,
                              archive: str | None = None, ts_from: int | None = None,
                              ts_to: int | None = None) -> list[Reading]:
        """The newest ``limit`` matching readings, oldest of them first (``pollerd readings``: a screenful
        ending with the latest). ``ts_from`` inclusive, ``ts_to`` exclusive. Walks the ts-led unique key
        backwards, so the newest rows are found without reading the rest of the table."""
        if limit < 1:
            return []
        where, args = _where_flat(_reading_conds(meter, channel, archive, ts_from, ts_to))
        with sql_errors("query readings"):
            async with self._rc.execute(
                    f"SELECT {_COLS} FROM {_FROM}{where} "
                    f"ORDER BY s.ts DESC, x.meter DESC, x.channel DESC, x.archive DESC LIMIT ?", [*args, limit]) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in list(rows)[::-1]]

    async def meters_with_readings(self) -> list[str]:
        """Every meter name in the readings table (a full scan: for a message when a name matches nothing)."""
        with sql_errors("query readings"):
            # One pass over the series ids of the ts key, then the names of those series.
            async with self._rc.execute("SELECT DISTINCT meter FROM series WHERE id IN (SELECT series FROM samples) "
                                        "ORDER BY meter") as cur:
                return [str(r[0]) for r in await cur.fetchall()]

    async def latest_readings(self, meter: str, archive: str, *, since: int, limit: int = 2000) -> list[Reading]:
        """The newest readings of one meter and archive with ``ts >= since``, newest first, at most ``limit``
        (the status page keeps the first of each channel). Walks the ts-led key backwards from now, so it
        reads only what was stored after ``since``, not the meter's whole history."""
        with sql_errors("query latest readings"):
            async with self._rc.execute(
                    f"SELECT {_COLS} FROM {_FROM} WHERE s.ts >= ? AND s.series IN "
                    f"(SELECT id FROM series WHERE meter = ? AND archive = ?) "
                    f"ORDER BY s.ts DESC LIMIT ?", (int(since), meter, str(archive), max(1, limit))) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def readings_between(self, *, meters: Sequence[str], archive: str, channels: Sequence[str],
                               ts_from: int, ts_to: int, limit: int = 100_000) -> list[Reading]:
        """Readings of some meters' channels in one archive with ``ts_from <= ts < ts_to``, ordered by ts, at
        most ``limit``: one pass over the ts-led key for all of them (a status-page chart or report), where
        paging per meter and channel would walk the same range again for each, and count it too."""
        if not meters or not channels:
            return []
        in_series, args = _series_of(meters, channels, archive)
        with sql_errors("query readings"):
            async with self._rc.execute(
                    f"SELECT {_COLS} FROM {_FROM} WHERE s.ts >= ? AND s.ts < ? AND {in_series} ORDER BY s.ts LIMIT ?",
                    (int(ts_from), int(ts_to), *args, max(1, limit))) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def first_readings(self, *, meters: Sequence[str], archive: str, channels: Sequence[str],
                             ts_from: int, ts_to: int) -> list[Reading]:
        """The earliest reading of each (meter, channel) with ``ts_from <= ts < ts_to``: a counter near a
        period boundary, for reports where no archive was read. One pass; SQLite takes a bare column's value
        from the row that gave min(), so only one row per series leaves the database."""
        if not meters or not channels:
            return []
        in_series, args = _series_of(meters, channels, archive)
        with sql_errors("query first readings"):
            async with self._rc.execute(
                    f"SELECT x.meter, x.channel, x.archive, min(s.ts), s.value, coalesce(s.unit, x.unit), "
                    f"coalesce(s.quality, 'good') FROM {_FROM} WHERE s.ts >= ? AND s.ts < ? AND {in_series} "
                    f"GROUP BY s.series ORDER BY x.meter, x.channel",
                    (int(ts_from), int(ts_to), *args)) as cur:
                rows = await cur.fetchall()
        return [Reading(*r) for r in rows]

    async def event_codes(self, meter: str) -> list[str]:
        """The event codes one meter has stored (the status page's filter); the events' unique key leads with
        the meter, so this reads that meter's entries only."""
        with sql_errors("query event codes"):
            async with self._rc.execute("SELECT DISTINCT code FROM events WHERE meter = ? ORDER BY code",
                                        (meter,)) as cur:
                rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

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
        rows, total = await self._page("events", "meter, code, ts_start, ts_end, text", where, args, order,
                                       per_page, offset)
        return [Event(*r) for r in rows], total
