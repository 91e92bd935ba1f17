"""Logging: structured journald records under systemd, plain stderr otherwise, and a filter that folds
repeated identical warnings into one line with a count.

**Journald.** systemd sets ``$JOURNAL_STREAM=dev:inode`` for a service whose stderr is connected to the
journal. When it names pollerd's actual stderr (not an inherited variable with stderr redirected elsewhere),
records go to journald's native socket, ``/run/systemd/journal/socket``, with fields:
``MESSAGE``, ``PRIORITY``, ``SYSLOG_IDENTIFIER=pollerd``, ``LOGGER``, ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC``,
and ``METER=``, ``LINE=``, ``SINK=`` when the call site passed them as ``extra={"meter": ...}`` -- so
``journalctl -u pollerd METER=m17`` shows one meter's story.

The native protocol is written here rather than through systemd-python's ``JournalHandler``: it is ~40 lines
(``KEY=value\\n`` per field, a length-prefixed form for values with newlines, a sealed memfd passed with
SCM_RIGHTS for records too large for one datagram), and systemd-python is a C extension that needs
libsystemd-dev and a compiler to install into a venv -- not something a Raspberry Pi gateway should need.
If the socket cannot be written (journald restarting, a stricter sandbox), records fall back to stderr with
a ``<N>`` syslog-priority prefix, which journald's stream reader also understands.

**Repeats.** :class:`RepeatFilter` lets the first of a run of identical records (same logger, level and
rendered message) through, counts the copies for ``window`` seconds (5 min), and lets the next copy after the
window through as "... (repeated 57 times in the last 5 min)". A dead meter on a 1-minute schedule therefore
logs once per five minutes, not 1440 times a day. Records below WARNING are not limited. The summary rides on
the next copy; copies still being counted when pollerd exits are logged then, once per message
("... (repeated 12 more times in the last 3 min, until exit)").
"""

from __future__ import annotations

import atexit
import collections
import errno
import fcntl
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO

__all__ = ["JournalHandler", "RepeatFilter", "setup_logging", "under_journald", "FIELDS"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Record attributes (from ``extra=``) that become journal fields.
FIELDS = {"meter": "METER", "line": "LINE", "sink": "SINK"}
STDERR_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Not under journald (a terminal, a container log, a file): nothing else stamps the lines, and a wire trace
# needs milliseconds. UTC, as the store and the API keep time.
STAMPED_FORMAT = "%(asctime)s " + STDERR_FORMAT


class StampedFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(STAMPED_FORMAT)

_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def syslog_priority(levelno: int) -> int:
    for level, prio in _PRIORITY:
        if levelno >= level:
            return prio
    return 7


def under_journald(environ: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> bool:
    """True when $JOURNAL_STREAM names the device and inode of our stderr."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not dev or not ino:
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (OSError, ValueError, AttributeError):
        return False


def encode_fields(fields: Mapping[str, object]) -> bytes:
    """The journal's native wire format for one entry."""
    out = bytearray()
    for key, value in fields.items():
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


_SEALS = (getattr(fcntl, "F_SEAL_SHRINK", 2) | getattr(fcntl, "F_SEAL_GROW", 4)
          | getattr(fcntl, "F_SEAL_WRITE", 8) | getattr(fcntl, "F_SEAL_SEAL", 1))


class JournalHandler(logging.Handler):
    """Writes records to journald's native socket. ``fallback`` gets the record when the socket fails."""

    def __init__(self, address: str = JOURNAL_SOCKET, *, identifier: str = "pollerd",
                 fallback: logging.Handler | None = None, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.address = address
        self.identifier = identifier
        self.fallback = fallback
        self._sock: socket.socket | None = None
        self.setFormatter(logging.Formatter("%(message)s"))

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        f: dict[str, object] = {
            "MESSAGE": self.format(record),
            "PRIORITY": syslog_priority(record.levelno),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
        }
        for attr, key in FIELDS.items():
            value = getattr(record, attr, None)
            if value is not None:
                f[key] = value
        return f

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            # Too big for one datagram (long tracebacks): journald takes a sealed memfd instead.
            fd = os.memfd_create("pollerd-journal", os.MFD_CLOEXEC | getattr(os, "MFD_ALLOW_SEALING", 2))
            try:
                os.write(fd, data)
                fcntl.fcntl(fd, getattr(fcntl, "F_ADD_SEALS", 1033), _SEALS)
                self._sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))],
                                   0, self.address)
            finally:
                os.close(fd)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(encode_fields(self.fields(record)))
        except OSError:
            if self.fallback is not None:
                self.fallback.handle(record)
            else:
                self.handleError(record)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


class _PrefixFormatter(logging.Formatter):
    """``<N>`` syslog priority first: journald's stream reader turns it into PRIORITY=N."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


class RepeatFilter(logging.Filter):
    """Folds identical WARNING+ records (see the module docstring). Bounded: at most ``max_keys`` distinct
    messages are tracked, the least recently seen forgotten first."""

    def __init__(self, window: float = 300.0, *, min_level: int = logging.WARNING, max_keys: int = 2048,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.min_level = min_level
        self.max_keys = max_keys
        self._clock = clock
        # key -> [time the last copy was let through, copies suppressed since]
        self._seen: collections.OrderedDict[tuple[str, int, str], list[float]] = collections.OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        msg = record.getMessage()
        key = (record.name, record.levelno, msg)
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None:
            self._seen[key] = [now, 0]
            if len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            return True
        self._seen.move_to_end(key)
        if now - entry[0] < self.window:
            entry[1] += 1
            return False
        count, since = int(entry[1]), now - entry[0]
        entry[0], entry[1] = now, 0
        if count:
            record.msg = f"{msg} (repeated {count} time{'s' if count != 1 else ''} in the last {_ago(since)})"
            record.args = None
        return True


    def summaries(self) -> list[logging.LogRecord]:
        """Records for the copies counted but not yet logged (at exit), and forget them."""
        now, out = self._clock(), []
        for (name, level, msg), entry in self._seen.items():
            count = int(entry[1])
            if count:
                text = (f"{msg} (repeated {count} more time{'s' if count != 1 else ''} in the last "
                        f"{_ago(now - entry[0])}, until exit)")
                out.append(logging.LogRecord(name, level, __file__, 0, text, None, None))
                entry[1] = 0
        return out


# The handler setup_logging() installed last, with its filter: flushed at exit, before logging's own exit
# hook closes it (atexit runs last in, first out, and `logging` registered first, at its import).
_installed: list[tuple[logging.Handler, RepeatFilter]] = []
_HANDLER_NAME = "pollerd"  # marks the handler setup_logging() installed, whichever logger it went to


@atexit.register
def _flush_repeats() -> None:
    for handler, repeats in _installed:
        # A stream already closed (the process's stderr gone, a test's capture) has no reader left, and
        # emit() would print a "--- Logging error ---" report of its own instead of the summary.
        out = getattr(handler, "fallback", None) or handler
        if getattr(getattr(out, "stream", None), "closed", False):
            continue
        for record in repeats.summaries():
            try:
                handler.emit(record)  # past the filter: it would fold the summary again
            except Exception:  # at exit: a closed stream must not turn a clean stop into a traceback
                pass


def setup_logging(level: str | int = "INFO", *, environ: Mapping[str, str] | None = None,
                  stream: IO[str] | None = None, journal_socket: str = JOURNAL_SOCKET,
                  logger: logging.Logger | None = None, window: float = 300.0) -> logging.Handler:
    """Configure ``logger`` (the root logger by default) once for the process: journald when running under
    it, stderr otherwise, with repeat folding either way. Returns the installed handler."""
    stream = stream or sys.stderr
    logger = logger or logging.getLogger()
    lvl = level if isinstance(level, int) else getattr(logging, str(level).upper(), logging.INFO)
    for h in list(logger.handlers):
        if h.get_name() == _HANDLER_NAME:
            logger.removeHandler(h)
            h.close()
    journald = under_journald(environ, stream)
    fallback = logging.StreamHandler(stream)
    fallback.setFormatter(_PrefixFormatter(STDERR_FORMAT) if journald else StampedFormatter())
    handler: logging.Handler = JournalHandler(journal_socket, fallback=fallback) if journald else fallback
    repeats = RepeatFilter(window)
    handler.addFilter(repeats)
    _installed[:] = [(handler, repeats)]
    handler.set_name(_HANDLER_NAME)  # so that a second call replaces it
    logger.addHandler(handler)
    logger.setLevel(lvl)
    return handler
