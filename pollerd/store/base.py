"""Parts shared by the store's writer, reads, cursors and retention: the sqlite-error wrapper, the typed
connection attributes, and single write transactions on the writer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiosqlite

from ..errors import StoreError

T = TypeVar("T")


@contextlib.contextmanager
def sql_errors(what: str) -> Iterator[None]:
    """Turn sqlite failures into StoreError saying what was being done."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{what}: {type(exc).__name__}: {exc}") from exc


class StoreBase:
    """What every part of :class:`~pollerd.store.Store` shares: its connections, its lifecycle flags and
    the one-write-transaction-at-a-time rule. :meth:`Store.__init__` sets all of it."""

    path: Path
    readonly: bool
    new_data: asyncio.Event
    commits: int
    _w: aiosqlite.Connection | None
    _r: aiosqlite.Connection
    _interval: float
    _max_rows: int
    _wlock: asyncio.Lock
    _pending_rows: int
    _closing: bool
    _closed: bool
    _writer_task: asyncio.Task[None] | None

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

    async def _rollback(self) -> None:
        assert self._w is not None
        # A failed COMMIT may leave the transaction open (SQLITE_BUSY) or already rolled back;
        # either way the next BEGIN needs a clean connection.
        with contextlib.suppress(sqlite3.Error):
            await self._w.execute("ROLLBACK")

    async def _write_tx(self, what: str, body: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``body`` in its own committed transaction on the writer connection."""
        self._check_writable()
        assert self._w is not None
        w = self._w
        async with self._wlock:
            try:
                with sql_errors(what):
                    await w.execute("BEGIN IMMEDIATE")
                    result = await body(w)
                    await w.execute("COMMIT")
                return result
            except BaseException:
                await self._rollback()
                raise

    async def last_seq(self) -> int:
        """Highest seq ever given to a reading (0 if none). Pruning does not lower it."""
        return await self._last_seq(self._rc)

    @staticmethod
    async def _last_seq(conn: aiosqlite.Connection) -> int:
        with sql_errors("read last seq"):
            async with conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'samples'") as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def cursor(self, sink: str) -> int:
        """The last seq ``sink`` confirmed; 0 for a sink never seen."""
        with sql_errors(f"read cursor of sink {sink!r}"):
            async with self._rc.execute("SELECT seq FROM sink_cursors WHERE sink = ?",
                                       (sink,)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0
