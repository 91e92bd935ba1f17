"""systemd readiness, status and watchdog notifications (sd_notify), from inside the daemon.

What systemd hears, and when:

- ``READY=1`` once the daemon's ``ready`` event is set: lines built, store open and migrated, API listening,
  every meter loop started.
- ``STATUS=...`` a one-line summary for ``systemctl status`` ("polling 120 meters on 8 lines, 3 degraded,
  sink lag 12 s"), refreshed every STATUS_EVERY seconds and whenever the watchdog verdict changes.
- ``WATCHDOG=1`` every WATCHDOG_USEC/2, but only while the daemon makes *progress* (below). A daemon that
  stops making progress stops pinging, and systemd kills and restarts it after WatchdogSec.
- ``STOPPING=1`` as soon as shutdown begins.

**Progress**, precisely (checked at every ping):

1. *Event loop*: the pings come from a task on the daemon's own event loop, so a loop blocked by a
   synchronous call sends nothing. No separate check is needed for that.
2. *Store*: a store probe -- ``Store.flush()`` (every queued write committed by the writer connection) followed
   by ``Store.last_seq()`` (a read on the reader connection) -- is started at every ping, unless one is still
   running, and at least one probe must have *completed* within the last watchdog period. A hung disk, a
   writer stuck in a transaction or a dead aiosqlite thread therefore stops the pings; a probe that merely
   fails (SQLITE_BUSY, disk full) still proves the store answers, and is /health's business, not a restart's --
   unless the store's writer task has ended (its connection died under it): then nothing can commit until the
   store is reopened, so that counts as not answering.
3. *Scheduler*: for every line with at least one meter *due* (its scheduled start has passed, so it is in a
   cycle or queued for the bus), the line must show activity within ``stall_after`` (default 10 min, at least
   two watchdog periods): an exchange started, a (re)connect, a finished poll cycle or a rescheduled meter on
   that line. Every exchange is bounded by ``waiting_time`` and a dead link fails its cycles quickly, so a due
   line without activity for minutes is wedged. Time is measured on the monotonic clock as the notifier sees
   it, so an NTP step of the wall clock at boot cannot fake a stall. A single meter stuck while its line
   keeps working is deliberately *not* a watchdog matter: restarting would cut every other meter's session;
   it shows as a silent meter in /health instead. Cloud sources (no line) are not checked here for the same
   reason: a cycle of one blocks no other meter, and a large account's backfill may outlast ``stall_after``.

systemd-python's ``daemon.notify`` is used when installed; otherwise (the common case in a venv) the datagram
goes straight to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) -- the protocol is one
``KEY=VALUE`` per line in one AF_UNIX datagram.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import PollerdError
from ..state import Runtime

__all__ = ["Notifier", "Watchdog", "Progress", "Watched", "status_line", "run_notifier", "watchdog_interval"]

log = logging.getLogger("pollerd.notify")

STATUS_EVERY = 10.0
# Default ping period when there is no watchdog: STATUS still needs refreshing.
IDLE_TICK = 5.0
STALL_AFTER = 600.0


class StoreProbe(Protocol):
    """The two store calls the watchdog's probe makes (see the module docstring)."""

    async def flush(self) -> None: ...

    async def last_seq(self) -> int: ...

    @property
    def writer_running(self) -> bool:
        """False once the store's writer task has ended (nothing can commit until a restart)."""
        ...


class Watched(Protocol):
    """What notifications need of the daemon, and all they may touch: its runtime state (read), its store
    (probed), its wall clock, and the two events that say it is ready and that it is stopping."""

    @property
    def runtime(self) -> Runtime: ...

    @property
    def store(self) -> StoreProbe: ...

    @property
    def ready(self) -> asyncio.Event: ...

    @property
    def stopping(self) -> asyncio.Event: ...

    def clock(self) -> float: ...


def _address(raw: str) -> str | bytes:
    # "@name" is the abstract namespace: the kernel address starts with a NUL byte.
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """One sd_notify endpoint. ``send`` never raises: a lost notification must not take the daemon down
    (systemd then notices by itself -- a missing READY=1 times out the start, missing pings trip the
    watchdog)."""

    def __init__(self, address: str, *, use_libsystemd: bool | None = None) -> None:
        self.address = address
        self._sd: Any = None
        if use_libsystemd is not False:
            try:
                # By name: systemd-python is optional and ships no type information.
                self._sd = importlib.import_module("systemd.daemon")
            except ImportError:
                if use_libsystemd:
                    raise
        self._sock: socket.socket | None = None
        self._warned = False
        self.sent = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        addr = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
        return cls(addr) if addr else None

    def send(self, *lines: str) -> bool:
        state = "\n".join(lines)
        try:
            if self._sd is not None and os.environ.get("NOTIFY_SOCKET") == self.address:
                ok = bool(self._sd.notify(state))
            else:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    # Never block the event loop on a busy systemd: a dropped datagram is the lesser evil.
                    self._sock.setblocking(False)
                self._sock.sendto(state.encode(), _address(self.address))
                ok = True
        except OSError as exc:
            ok = False
            if not self._warned:
                self._warned = True
                log.warning("systemd notification to %s failed (further failures not logged): %s",
                            self.address, exc)
        if ok:
            self.sent += 1
        return ok

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when there is no watchdog for this
    process. WATCHDOG_PID names the process the watchdog is meant for (a forking wrapper may pass the
    variables on to a child that is not it)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    if value <= 0:
        return None
    return value / 2e6


@dataclass(frozen=True, slots=True)
class Progress:
    """The watchdog verdict: ok, and if not, why (shown in STATUS and logged once)."""

    ok: bool
    reason: str = ""


class Watchdog:
    """Tracks the store probe and per-line activity of one daemon (see the module docstring)."""

    def __init__(self, daemon: Watched, interval: float, *, stall_after: float = STALL_AFTER,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.daemon = daemon
        self.interval = interval          # between pings: WATCHDOG_USEC / 2
        self.timeout = 2 * interval       # systemd's WatchdogSec
        self.stall_after = max(stall_after, 2 * self.timeout)
        self._mono = monotonic
        self._probe: asyncio.Task[None] | None = None
        self.store_ok_at = monotonic()  # the store was just opened (a migration and a read happened)
        self._lines: dict[str, tuple[tuple[float, ...], float]] = {}

    def start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_store(), name="watchdog:store")

    async def _probe_store(self) -> None:
        store = self.daemon.store
        try:
            await store.flush()
            await store.last_seq()
        except PollerdError as exc:
            if not store.writer_running:
                # Not an answer: with its writer task gone nothing can ever commit again; a restart reopens it.
                log.debug("watchdog store probe: the writer is gone: %s", exc)
                return
            # It answered, with an error: the store is alive, its health is /health's concern.
            log.debug("watchdog store probe: %s", exc)
        self.store_ok_at = self._mono()

    def cancel(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    def _line_tokens(self) -> dict[str, tuple[tuple[float, ...], bool]]:
        rt = self.daemon.runtime
        now = self.daemon.clock()
        acc: dict[str, list[float]] = {}
        due: dict[str, bool] = {}
        for st in rt.meters.values():
            if not st.line:
                # A cloud source (no line) shares no bus: a long cycle of it (a large account's backfill,
                # each request bounded by waiting_time) holds up no other meter. A silent meter for
                # /health, not a restart, which would only start that backfill again.
                continue
            a = acc.setdefault(st.line, [0.0, 0.0])
            a[0] += st.polls
            a[1] += st.next_run or 0.0
            if st.next_run is not None and st.next_run <= now:
                due[st.line] = True
        out: dict[str, tuple[tuple[float, ...], bool]] = {}
        for name, (polls, runs) in acc.items():
            ls = rt.lines.get(name)
            token = (polls, runs, float(ls.exchanges), float(ls.reconnects)) if ls else (polls, runs)
            out[name] = (token, due.get(name, False))
        return out

    def check(self) -> Progress:
        now = self._mono()
        if now - self.store_ok_at > self.timeout:
            return Progress(False, f"store not answering for {now - self.store_ok_at:.0f} s")
        stuck = []
        for name, (token, due) in self._line_tokens().items():
            prev = self._lines.get(name)
            if prev is None or prev[0] != token or not due:
                self._lines[name] = (token, now)
            elif now - prev[1] > self.stall_after:
                stuck.append(name)
        if stuck:
            return Progress(False, f"no progress on line(s) {', '.join(sorted(stuck))} "
                                   f"for over {self.stall_after:.0f} s")
        return Progress(True)


def status_line(rt: Runtime, verdict: Progress | None = None) -> str:
    meters = len(rt.meters)
    degraded = sum(1 for m in rt.meters.values() if m.degraded)
    parts = [(f"polling {meters} meter{'s' if meters != 1 else ''} on {len(rt.lines)} "
              f"line{'s' if len(rt.lines) != 1 else ''}")]
    if degraded:
        parts.append(f"{degraded} degraded")
    down = sum(1 for ln in rt.lines.values() if ln.last_error and not ln.connected)
    if down:
        parts.append(f"{down} line{'s' if down != 1 else ''} down")
    if rt.sinks:
        lag = max(s.lag_seconds for s in rt.sinks.values())
        parts.append(f"sink lag {lag:.0f} s")
    if not rt.store_ok:
        parts.append("store failing")
    if verdict is not None and not verdict.ok:
        parts.append(f"WATCHDOG: {verdict.reason}")
    # STATUS is one line; systemd shows it verbatim.
    return ", ".join(parts).replace("\n", " ")


async def run_notifier(daemon: Watched, notifier: Notifier, environ: Mapping[str, str] | None = None, *,
                       stall_after: float = STALL_AFTER) -> None:
    """The daemon's notification task: READY=1, STATUS=, WATCHDOG=1 while making progress, STOPPING=1.
    Runs until the daemon stops (it is cancelled with the other background tasks), then closes
    ``notifier``."""
    period = watchdog_interval(environ)
    wd = Watchdog(daemon, period, stall_after=stall_after) if period else None
    stop_task = asyncio.get_running_loop().create_task(_notify_stopping(daemon, notifier), name="notify:stop")
    try:
        await daemon.ready.wait()
        notifier.send("READY=1", f"STATUS={status_line(daemon.runtime)}")
        log.debug("systemd notified: ready")
        tick = min(period, STATUS_EVERY) if period else STATUS_EVERY
        last_status = time.monotonic()
        healthy = True
        while not daemon.stopping.is_set():
            if wd is not None:
                wd.start_probe()
            await asyncio.sleep(tick)
            if daemon.stopping.is_set():
                break
            verdict = wd.check() if wd is not None else Progress(True)
            if verdict.ok:
                if wd is not None:
                    notifier.send("WATCHDOG=1")
                if not healthy:
                    log.warning("watchdog: progress again; pinging systemd")
            elif healthy:
                log.error("watchdog: %s; no longer pinging systemd, which will restart pollerd", verdict.reason)
            now = time.monotonic()
            if verdict.ok != healthy or now - last_status >= STATUS_EVERY:
                notifier.send(f"STATUS={status_line(daemon.runtime, verdict)}")
                last_status = now
            healthy = verdict.ok
        await stop_task
    finally:
        stop_task.cancel()
        if wd is not None:
            wd.cancel()
        notifier.close()


async def _notify_stopping(daemon: Watched, notifier: Notifier) -> None:
    await daemon.stopping.wait()
    notifier.send("STOPPING=1", "STATUS=stopping: finishing exchanges in flight, draining sinks")
