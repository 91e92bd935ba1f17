"""A store that notices harm (issue 14): a bounded check at start that moves a corrupt store aside, and a watch
on the database file that notices it being deleted or replaced while the daemon runs and saves what the open
connection still holds back into the path.

Why both halves matter on a gateway: the store is the only copy of readings not yet delivered. A file deleted
under a running daemon (a clean-up script, an operator's ``rm``) stays readable and writable through the open
connection, so nothing fails -- until the restart, which creates an empty store and everything is gone without
one log line. A store corrupted in the middle (a power cut on a card that lies about flushes) is accepted by
``open`` and fails much later, on whatever query first touches the bad page.

Evidence is never deleted: a corrupt store, or a file found in place of ours, is renamed next to the store
with a UTC timestamp, its ``-wal``/``-shm`` renamed along with it (SQLite finds a WAL by name, so the copy
stays openable for inspection, and a new store at the path cannot mistake a stale WAL for its own: a WAL file
does not say which database it belongs to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from .base import StoreBase

log = logging.getLogger("pollerd.store")

# How long a notice of harm fails /health (a 503 with the notice as its reason) before it turns into a warning
# that stays until pollerd restarts. A day: long enough for a daily look at the monitoring to see it, short
# enough that the gateway's health does not stay failed for ever over something already dealt with.
NOTICE_FAIL_SECONDS = 24 * 3600.0

# How often the watch looks at the database file: one stat() call. Nothing committed is lost in between (the
# open connection holds it all); this only bounds how long writes go into a file nobody will ever open again.
WATCH_EVERY = 2.0

# The check at start gives up after this long (then the store is opened as it is, and the log says so):
# quick_check reads every page (0.45-0.75 s for an 80 MB store of 1 M readings on the dev machine, page cache
# warm; a cold SD card reads slower) and systemd waits for READY=1 (TimeoutStartSec=120s).
START_CHECK_SECONDS = 30.0

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_SQLITE_INTERRUPT = 9

_SIDE_SUFFIXES = ("-wal", "-shm")


@dataclass(frozen=True, slots=True)
class StoreNotice:
    """Harm the store noticed. ``fails_until``: /health fails with ``text`` until then, then warns."""

    kind: str          # corrupt, deleted, replaced, restore-failed, check-unfinished, kept-aside
    text: str
    at: float
    fails_until: float


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool | None    # None: not finished within the time it was given
    detail: str        # "ok", SQLite's first problems, or how far the check got
    seconds: float


def utc_stamp(ts: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts))


def _errcode(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def is_corruption(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's content is wrong (not: locked, read-only, out of space)."""
    code = _errcode(exc)
    if code is not None:
        return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def quick_check(path: Path, seconds: float) -> CheckResult:
    """``PRAGMA quick_check`` of the store at ``path``, stopped after ``seconds`` (blocking: run it in a thread).

    quick_check reads every page and checks each b-tree's structure, but skips integrity_check's cross-check of
    every index against its table, which is O(N log N) and would hold a large store's start for minutes. The
    time bound is a progress handler: SQLite calls it every few thousand VM steps and stops the statement when
    it answers non-zero, so a store too large for the bound is checked in part and opened as it is."""
    t0 = time.monotonic()
    if not path.exists() or path.stat().st_size == 0:
        return CheckResult(True, "ok (no store yet)", 0.0)
    deadline = t0 + seconds
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        try:
            rows = conn.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.DatabaseError as exc:
            took = time.monotonic() - t0
            if _errcode(exc) == _SQLITE_INTERRUPT or str(exc) == "interrupted":
                return CheckResult(None, f"stopped after {took:.1f} s of {path.stat().st_size} bytes", took)
            if is_corruption(exc):
                return CheckResult(False, f"{type(exc).__name__}: {exc}", took)
            raise
        took = time.monotonic() - t0
        problems = [str(r[0]) for r in rows]
        if problems == ["ok"]:
            return CheckResult(True, "ok", took)
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return CheckResult(False, "; ".join(problems[:3]) + more, took)
    finally:
        conn.close()


def _fsync_dir(d: Path) -> None:
    # A rename is durable only once its directory is: after a power cut the old name could come back.
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def move_aside(path: Path, tag: str, now: float, parts: tuple[str, ...] = (*_SIDE_SUFFIXES, "")) -> Path:
    """Rename the store at ``path`` and whichever of its -wal/-shm exist to ``<name>.<tag>-<UTC stamp>`` (plus
    the same suffixes); return the new main path. ``parts`` limits what moves ("" is the main file). The -wal
    and -shm go first: a main file left at the path without its WAL is an older but consistent store, a WAL
    left without its main file would be applied to the next store created there."""
    base = path.with_name(f"{path.name}.{tag}-{utc_stamp(now)}")
    n = 1
    while any(Path(f"{base}{s}").exists() for s in ("", *_SIDE_SUFFIXES)):
        base = path.with_name(f"{path.name}.{tag}-{utc_stamp(now)}-{n}")
        n += 1
    for suffix in parts:
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.rename(src, f"{base}{suffix}")
    _fsync_dir(path.parent)
    return base


def kept_aside(path: Path) -> list[Path]:
    """Files moved aside earlier (corrupt, replaced, stale) and still there, oldest first: each main file, and a
    -wal/-shm only where it stands alone."""
    try:
        found = [p for p in path.parent.glob(f"{path.name}.*-*") if not p.name.endswith(".restoring")]
    except OSError:
        return []
    return sorted(p for p in found if not p.name.endswith(_SIDE_SUFFIXES)
                  or not Path(str(p)[:-len("-wal")]).exists())


class FileGuard(StoreBase):
    """The watch on the database file (see the module docstring). ``Store.open(watch=True)`` starts it."""

    notices: list[StoreNotice]
    _file_id: tuple[int, int] | None
    _watch_task: asyncio.Task[None] | None
    _watch_stop: asyncio.Event
    _restore_error: str | None

    async def _connect(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        raise NotImplementedError  # Store provides it: the writer and reader connections as open() makes them

    def notice(self, kind: str, text: str, *, fails: bool = True) -> StoreNotice:
        now = time.time()
        n = StoreNotice(kind, text, now, now + NOTICE_FAIL_SECONDS if fails else now)
        self.notices = [x for x in self.notices if x.kind != kind] + [n]
        return n

    def _identify(self) -> tuple[int, int]:
        st = os.stat(self.path)
        return st.st_dev, st.st_ino

    def file_harm(self) -> str | None:
        """"deleted" or "replaced" when the path no longer leads to the file this store has open, else None."""
        if self._file_id is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        except OSError:  # cannot tell (a permission change on the directory): not evidence of harm
            return None
        return None if (st.st_dev, st.st_ino) == self._file_id else "replaced"

    def _start_watch(self) -> None:
        self._file_id = self._identify()
        self._watch_stop = asyncio.Event()
        self._watch_task = asyncio.get_running_loop().create_task(
            self._watch(), name=f"store-watch:{self.path.name}")

    async def _stop_watch(self) -> None:
        if self._watch_task is not None:
            self._watch_stop.set()
            with contextlib.suppress(Exception):
                await self._watch_task
            self._watch_task = None

    async def _watch(self) -> None:
        while not self._watch_stop.is_set():
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._watch_stop.wait(), WATCH_EVERY)
            if self._watch_stop.is_set():
                return
            try:
                await self.check_file()
            except Exception:  # a bug here must not end the watch (or anything else) silently
                log.exception("store watch: checking %s failed", self.path)

    async def check_file(self) -> str | None:
        """Look at the database file now; if it was deleted or replaced, save the store back into the path.
        Returns the harm found ("deleted", "replaced") or None."""
        if self.file_harm() is None or self._closing or self._closed:
            return None
        async with self._wlock:  # no write transaction runs while the connections are swapped
            harm = self.file_harm()
            if harm is None or self._closing or self._closed:
                return None
            await self._save(harm)
        return harm

    async def _save(self, harm: str) -> None:
        last = await self._last_seq(self._r)
        log.critical("store %s was %s while pollerd runs: saving what the open connection holds (last seq %d) "
                     "back into the path", self.path, harm, last)
        try:
            aside = await self._restore(harm)
        except (OSError, sqlite3.Error, ValueError) as exc:
            text = (f"store file {str(self.path)!r} was {harm} while pollerd runs and could not be saved back "
                    f"({type(exc).__name__}: {exc}); new readings go into a file that is lost when pollerd "
                    f"stops: free the directory and restart pollerd")
            if text != self._restore_error:  # retried every WATCH_EVERY: log each new failure once
                log.critical("%s", text)
                self._restore_error = text
            self.notice("restore-failed", text)
            return
        self._restore_error = None
        self.notices = [x for x in self.notices if x.kind != "restore-failed"]
        text = (f"store file {str(self.path)!r} was {harm} while pollerd ran ({utc_stamp(time.time())}); saved back "
                f"from the open connection, nothing committed lost (last seq {last})")
        if aside is not None:
            text += f"; what was found at the path is kept as {str(aside)!r}"
        log.critical("%s", text)
        self.notice(harm, text)

    async def _restore(self, harm: str) -> Path | None:
        """Back the open store up into the path and reopen the connections on it. Returns where a file found
        at the path (or a stale -wal/-shm) was moved, if any.

        Every step that can fail (a full disk, a directory gone) comes before the old connections close: they
        hold the only copy of the store, so a failure leaves them running and the next check tries again."""
        p = self.path
        assert self._w is not None
        tmp = p.with_name(p.name + ".restoring")
        await asyncio.to_thread(_clear_tmp, tmp)
        # check_same_thread=False: the backup runs in the writer connection's thread, the rest in to_thread.
        target = sqlite3.connect(tmp, isolation_level=None, check_same_thread=False)
        try:
            # SQLite's online backup through the writer connection: it sees every committed row, whether in
            # the deleted main file or the WAL (both stay readable through the open descriptors).
            await self._w.backup(target)
            await asyncio.to_thread(lambda: target.execute("PRAGMA journal_mode = WAL").fetchall())
        finally:
            await asyncio.to_thread(target.close)
        old_id, old = self._file_id, (self._r, self._w)
        aside = await asyncio.to_thread(_swap_in, p, tmp, time.time())
        self._file_id = self._identify()
        try:
            self._w, self._r = await self._connect()
        except BaseException:
            self._file_id = old_id  # still writing into the lost file: the next check saves it again
            raise
        # Closing the old connections now does not touch the names at the path: SQLite neither checkpoints nor
        # removes the -wal/-shm of a database file that has moved (SQLITE_READONLY_DBMOVED).
        for conn in old:
            with contextlib.suppress(Exception):
                await conn.close()
        return aside


def _clear_tmp(tmp: Path) -> None:
    tmp.parent.mkdir(parents=True, exist_ok=True)  # an `rm -r` of the state directory
    for suffix in ("", "-journal", *_SIDE_SUFFIXES):
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def _swap_in(p: Path, tmp: Path, now: float) -> Path | None:
    """Put the saved copy ``tmp`` at ``p``. What stands there goes aside first: the -wal/-shm left at the path
    are the running store's (all of it is in the copy by now), and left there the copy would take them for its
    own (a WAL names no database); a main file there is a replacement, kept for whoever put it there."""
    aside = None
    if any(Path(f"{p}{s}").exists() for s in _SIDE_SUFFIXES):
        aside = move_aside(p, "stale", now, parts=_SIDE_SUFFIXES)
    if p.exists():
        aside = move_aside(p, "replaced", now, parts=("",))
    os.rename(tmp, p)
    _fsync_dir(p.parent)
    return aside
