"""Per-sink delivery records: the cursors (last reading seq and last event seq a sink confirmed) and parked
ranges (readings or events a sink refused for good, kept for an operator to look at and release).
"""

from __future__ import annotations

import time
from typing import Any

import aiosqlite

from ..errors import StoreError
from .base import StoreBase, sql_errors

_ADVANCE_EVENTS = ("INSERT INTO event_cursors (sink, seq, updated) VALUES (?, ?, ?) "
                   "ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq), updated = excluded.updated")


class Cursors(StoreBase):
    """Sink cursors and parked ranges."""

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

    async def event_cursor(self, sink: str) -> int:
        """The last event seq ``sink`` confirmed; 0 for a sink never seen (it gets every stored event)."""
        with sql_errors(f"read event cursor of sink {sink!r}"):
            async with self._rc.execute("SELECT seq FROM event_cursors WHERE sink = ?", (sink,)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def advance_events(self, sink: str, seq: int) -> None:
        """Record that ``sink`` confirmed every event up to event seq ``seq`` (never moves back)."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise StoreError(f"advance_events({sink!r}): seq must be an integer >= 0, got {seq!r}")

        async def body(w: aiosqlite.Connection) -> None:
            await w.execute(_ADVANCE_EVENTS, (sink, seq, int(time.time())))

        await self._write_tx(f"advance event cursor of sink {sink!r} to {seq}", body)

    async def park(self, sink: str, first_seq: int, last_seq: int, reason: str, *,
                   advance: bool = False, kind: str = "readings") -> None:
        """Record a batch ``sink`` refused for good. The readings stay (pruning skips parked
        ranges) so they can be inspected or replayed; :meth:`unpark` releases them. With
        ``advance`` the sink's cursor moves to ``last_seq`` in the same transaction, so a crash
        cannot leave the batch parked but still due (and parked again on the next try). ``kind`` is the
        outbox: "readings" (seqs of readings) or "events" (event seqs; the event cursor moves)."""
        if first_seq > last_seq:
            raise StoreError(f"park({sink!r}): first_seq {first_seq} > last_seq {last_seq}")
        if kind not in ("readings", "events"):
            raise StoreError(f"park({sink!r}): kind must be 'readings' or 'events', got {kind!r}")

        async def body(w: aiosqlite.Connection) -> None:
            await w.execute("INSERT INTO parked (sink, first_seq, last_seq, reason, ts, kind) "
                            "VALUES (?, ?, ?, ?, ?, ?)",
                            (sink, first_seq, last_seq, reason, int(time.time()), kind))
            if advance and kind == "events":
                await w.execute(_ADVANCE_EVENTS, (sink, last_seq, int(time.time())))
            elif advance:
                await w.execute(
                    "INSERT INTO sink_cursors (sink, seq, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (sink) DO UPDATE SET seq = max(seq, excluded.seq), "
                    "updated = excluded.updated", (sink, last_seq, int(time.time())))

        await self._write_tx(f"park seqs {first_seq}..{last_seq} of sink {sink!r}", body)

    async def parked(self, sink: str | None = None) -> list[dict[str, Any]]:
        """Parked batches, oldest first: dicts with id, sink, first_seq, last_seq, reason, ts, kind."""
        sql = "SELECT id, sink, first_seq, last_seq, reason, ts, kind FROM parked"
        args: tuple[Any, ...] = ()
        if sink is not None:
            sql += " WHERE sink = ?"
            args = (sink,)
        with sql_errors("list parked batches"):
            async with self._rc.execute(sql + " ORDER BY id", args) as cur:
                rows = await cur.fetchall()
        keys = ("id", "sink", "first_seq", "last_seq", "reason", "ts", "kind")
        return [dict(zip(keys, r)) for r in rows]

    async def unpark(self, park_id: int) -> bool:
        """Forget one parked batch (its readings become prunable). False if there was none."""

        async def body(w: aiosqlite.Connection) -> int:
            async with w.execute("DELETE FROM parked WHERE id = ?", (park_id,)) as cur:
                return cur.rowcount

        return bool(await self._write_tx(f"unpark batch {park_id}", body))
