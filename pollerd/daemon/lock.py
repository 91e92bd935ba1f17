"""One daemon per state directory (issue 14, observation 8): two daemons on one store both forwarded from the
same cursors, and upstream received every batch twice.

``flock(LOCK_EX)`` on ``pollerd.lock`` in the state directory, held for the daemon's lifetime: the kernel drops
it when the process ends however it ends (kill -9 included), so there is no stale lock to clean up, and the
file is never deleted (unlinking a lock file lets a newcomer lock a fresh file while the holder keeps the old
one). flock, not fcntl record locks: SQLite takes fcntl locks on the database, and fcntl locks of one process
vanish when any descriptor of the file closes; flock locks belong to the open file and do not interfere.
A store configured outside the state directory gets a ``<db>.lock`` beside it as well, so two daemons with
different state directories still cannot share one store.

Only the daemon locks. One-shot commands (``pollerd readings``, ``parked``, ``sioi``) open the store through
SQLite's own locking while the daemon runs, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import AlreadyRunning, StoreError

LOCK_NAME = "pollerd.lock"


class StateLock:
    """The held locks; :meth:`release` (or the end of the process) lets go."""

    def __init__(self, fds: list[int], paths: list[Path]) -> None:
        self._fds = fds
        self.paths = paths

    @classmethod
    def acquire(cls, state_dir: Path, db: Path) -> StateLock:
        paths = [state_dir / LOCK_NAME]
        if os.path.realpath(db.parent) != os.path.realpath(state_dir):
            paths.append(db.with_name(db.name + ".lock"))
        fds: list[int] = []
        try:
            for p in paths:
                try:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
                except OSError as exc:
                    raise StoreError(f"cannot open the lock file {str(p)!r}: {exc.strerror or exc}") from exc
                fds.append(fd)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    raise AlreadyRunning(
                        f"another pollerd ({f'pid {holder}' if holder else 'pid unknown'}) is running on "
                        f"{str(p.parent)!r} (it holds {str(p)!r}); one daemon per state directory and store"
                    ) from None
                # Who holds it, for the next one's message; written after locking, so a reader may see it empty.
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(fds, paths)

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
