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
import logging
import os
import sqlite3
import time
from pathlib import Path

import aiosqlite

from ..errors import StoreError
from .base import sql_errors
from .cursors import Cursors
from .driver_state import DriverState
from .guard import NOTICE_FAIL_SECONDS, FileGuard, StoreNotice, kept_aside, move_aside, quick_check
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

log = logging.getLogger("pollerd.store")


async def _connect_pair(p: Path) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
    """The writer connection (migrated, with the write pragmas) and the reader connection of the store at p."""
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
        return writer, reader
    except BaseException:
        for conn in (reader, writer):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        raise


async def _start_check(p: Path, seconds: float) -> list[StoreNotice]:
    """The check at start: a corrupt store is moved aside (kept, with its -wal/-shm) and an empty one starts in
    its place, so the gateway keeps polling; stores kept aside earlier are named in a warning until removed."""
    notices: list[StoreNotice] = []
    now = time.time()
    aside: Path | None = None
    try:
        res = await asyncio.to_thread(quick_check, p, seconds)
    except sqlite3.Error as exc:  # not corruption (locked, unreadable): open() reports it as it always did
        log.warning("store %s: the check at start could not run: %s: %s", p, type(exc).__name__, exc)
        res = None
    if res is not None and res.ok is False:
        aside = move_aside(p, "corrupt", now)
        text = (f"store {str(p)!r} was corrupt at start ({res.detail}); moved aside to {str(aside)!r} (with its "
                f"-wal/-shm, for inspection) and started with an empty store: readings not yet delivered are "
                f"in that file only")
        log.critical("%s", text)
        notices.append(StoreNotice("corrupt", text, now, now + NOTICE_FAIL_SECONDS))
    elif res is not None and res.ok is None:
        log.warning("store %s: quick_check at start %s (the bound is %.0f s); opened without a full check",
                    p, res.detail, seconds)
    elif res is not None:
        log.info("store %s: quick_check at start ok in %.2f s", p, res.seconds)
    old = [a for a in kept_aside(p) if a != aside]
    if old:
        names = ", ".join(a.name for a in old[:5]) + (f" (and {len(old) - 5} more)" if len(old) > 5 else "")
        notices.append(StoreNotice(
            "kept-aside", f"{len(old)} store file(s) moved aside earlier are still in {str(p.parent)!r}: {names}; "
            f"inspect them, then delete them to clear this warning", now, now))
    return notices


class Store(FileGuard, GroupCommitWriter, Reads, Cursors, DriverState, Retention):
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
        self.notices: list[StoreNotice] = []  # harm noticed (guard.py); /health shows them
        self._file_id: tuple[int, int] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._restore_error: str | None = None
        if writer is not None:
            self._writer_task = asyncio.get_running_loop().create_task(
                self._run_writer(), name=f"store-writer:{path.name}")

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"<Store {str(self.path)!r} {mode}{' closed' if self._closed else ''}>"

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, commit_interval: float = 1.0,
                   max_batch_rows: int = 5000, check_seconds: float | None = None,
                   watch: bool = False) -> Store:
        """Open (creating it and its parent directory if needed) and migrate the store.

        The daemon's options (:mod:`.guard`): ``check_seconds`` runs ``PRAGMA quick_check`` first, for at most
        that long, and moves a corrupt store aside (kept for inspection) to start with an empty one; ``watch``
        notices the file being deleted or replaced while open and saves the store back into the path. Both
        leave a notice in :attr:`notices`. One-shot commands leave both off: they must never move the store
        of a running daemon."""
        if not commit_interval >= 0:
            raise StoreError(f"commit_interval must be >= 0 seconds, got {commit_interval!r}")
        if max_batch_rows < 1:
            raise StoreError(f"max_batch_rows must be >= 1, got {max_batch_rows!r}")
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {str(p.parent)!r}: {exc}") from exc
        notices = await _start_check(p, check_seconds) if check_seconds is not None else []
        writer, reader = await _connect_pair(p)
        store = cls(p, writer, reader, commit_interval=commit_interval, max_batch_rows=max_batch_rows)
        store.notices = notices
        if watch:
            store._start_watch()
        return store

    async def _connect(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        return await _connect_pair(self.path)

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
        await self._stop_watch()
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
