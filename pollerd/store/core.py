"""The durable local store: SQLite in WAL mode through aiosqlite (DESIGN.md §4).

Two connections per daemon store: one *writer* that owns every write transaction, and one *reader*
for queries. The split is deliberate: a reader on the same connection as an open write transaction
would see rows that are not committed yet, and a sink must never forward a reading that a failed
commit could still take back. The reader also keeps queries from queueing behind a large batch.

Writes are group-committed: :meth:`Store.write` queues its rows and returns only after the
transaction holding them committed with ``synchronous=FULL``, so whatever a caller was told is
stored survives a power cut or a ``kill -9``.

The class is assembled from its parts, one module each: :mod:`.writer` (group commit), :mod:`.reads`,
:mod:`.cursors`, :mod:`.driver_state` and :mod:`.retention`; :mod:`.schema` holds the migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import aiosqlite

from ..errors import StoreError
from .base import sql_errors
from .cursors import Cursors
from .driver_state import DriverState
from .reads import Reads
from .retention import Retention
from .schema import (
    _BUSY_TIMEOUT_MS,
    _CACHE_KIB,
    _JOURNAL_SIZE_LIMIT,
    _connect_reader,
    _migrate,
    check_readonly_version,
)
from .writer import GroupCommitWriter, _Pending


class Store(GroupCommitWriter, Reads, Cursors, DriverState, Retention):
    """The SQLite buffer between pollers and sinks. Create with :meth:`open` or :meth:`open_readonly`."""

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
            with sql_errors(f"open store {str(p)!r}"):
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
        # Two stat calls once per open, not on a hot path: not worth a thread.
        if not p.is_file():  # noqa: ASYNC240
            raise StoreError(f"store file does not exist: {str(p)!r}")
        uri = p.resolve().as_uri() + "?mode=ro"  # noqa: ASYNC240
        reader: aiosqlite.Connection | None = None
        try:
            with sql_errors(f"open store {str(p)!r} read-only"):
                reader = await _connect_reader(uri, uri=True)
                await check_readonly_version(reader, p)
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
