"""Retention and space: pruning delivered readings older than the age limit, the quota's primitives (space,
eviction of the oldest rows, giving pages back) and the store's statistics. The quota policy is in
:mod:`pollerd.store.quota`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import aiosqlite

from ..errors import StoreError
from ..text import utc_text
from .base import StoreBase, sql_errors

log = logging.getLogger("pollerd.store")

_PRUNE_BATCH = 5000

# Pruned means gone: per series, the newest ts prune() deleted; the writer refuses readings at or before it.
# Only archives: a `current` reading is stamped by the gateway's clock at poll time and is never re-reported,
# and a mark from a clock that ran ahead (a gateway booted with a bad RTC) would refuse fresh readings until
# the clock caught up. Quota evictions set no mark: what they drop was not (all) delivered, and a re-read
# bringing it back is a second chance, not a duplicate.
_MARK_PRUNED = (
    "INSERT INTO pruned_marks (meter, channel, archive, ts) "
    "SELECT x.meter, x.channel, x.archive, max(s.ts) FROM samples s JOIN series x ON x.id = s.series "
    "WHERE s.seq IN ({pick}) AND x.archive != 'current' "
    "GROUP BY s.series "
    "ON CONFLICT (meter, channel, archive) DO UPDATE SET ts = max(ts, excluded.ts)"
)


class Retention(StoreBase):
    """Deleting rows by age or by the quota, and measuring the file."""

    async def prune(self, *, keep: float, sinks: Sequence[str], now: float) -> int:
        """Delete readings with ts older than ``now - keep`` that every sink in ``sinks`` has
        confirmed (and that no parked batch holds), in short transactions so writers are not held
        up. With no sinks, age alone decides. Returns the number of rows deleted.

        Pruned means gone: the newest pruned ts of each archive series is kept as a mark, and a re-reported
        reading at or before it is not stored (and so not delivered) again."""
        self._check_writable()
        cutoff = now - keep
        if sinks:
            upto = min([await self.cursor(s) for s in sinks])
        else:
            upto = await self.last_seq()
        if upto <= 0:
            return 0
        deleted = 0

        pick = ("SELECT seq FROM samples r WHERE r.seq <= ? AND r.ts < ? AND NOT EXISTS ("
                " SELECT 1 FROM parked p WHERE p.kind = 'readings' AND r.seq BETWEEN p.first_seq AND p.last_seq)"
                " ORDER BY seq LIMIT ?")
        args = (upto, cutoff, _PRUNE_BATCH)

        async def body(w: aiosqlite.Connection) -> int:
            # The same pick in the same write transaction selects the same rows for the marks and the delete.
            await (await w.execute(_MARK_PRUNED.format(pick=pick), args)).close()
            async with w.execute(f"DELETE FROM samples WHERE seq IN ({pick})", args) as cur:
                return cur.rowcount

        while True:
            n = await self._write_tx(f"prune readings before ts {cutoff:.0f} up to seq {upto}", body)
            deleted += n
            if n < _PRUNE_BATCH:
                break
            await asyncio.sleep(0)  # let queued writes take the lock between batches
        if deleted:
            log.info("store: pruned %d readings older than %s (the retention, keep), delivered to %s", deleted,
                     utc_text(cutoff), ", ".join(sinks) or "(no sinks)")
        return deleted

    async def space(self) -> tuple[int, int, int]:
        """(page_size, page_count, freelist_count) of the main database file as last committed.

        ``(page_count - freelist_count) * page_size`` is what the data takes; freed pages stay in the
        file (and are reused) until :meth:`give_back` returns them."""
        with sql_errors("read store page counts"):
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
            pick = "SELECT seq FROM samples ORDER BY seq LIMIT ?"
            args: tuple[Any, ...] = (limit,)
        else:
            # The ts-led unique index gives the rows in ts order without sorting the table.
            pick = "SELECT seq FROM samples WHERE ts < ? ORDER BY ts LIMIT ?"
            args = (math.ceil(ts_before), limit)

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
            async with w.execute(f"DELETE FROM samples WHERE seq IN ({pick})", args) as cur:
                n = cur.rowcount
            return n, lost

        what = "evict oldest readings" if ts_before is None else f"evict readings before ts {ts_before:.0f}"
        return await self._write_tx(what, body)

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
            with sql_errors(f"release {max_pages} free pages"):
                await self._w.executescript(f"PRAGMA incremental_vacuum({int(max_pages)})")
        return max(0, before - (await self.space())[1])

    async def stats(self) -> dict[str, Any]:
        """rows, events, parked, oldest_ts, last_seq, db_bytes (main file + WAL), pending rows."""
        with sql_errors("read store stats"):
            async with self._rc.execute(
                    "SELECT (SELECT count(*) FROM samples), (SELECT count(*) FROM events), "
                    "(SELECT count(*) FROM parked), (SELECT min(ts) FROM samples)") as cur:
                row = await cur.fetchone()
        if row is None:  # an aggregate SELECT always returns one row
            raise StoreError("store stats returned no row")
        rows, events, parked, oldest = row
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
