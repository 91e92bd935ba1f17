"""A line is one physical or logical bus: one exchange on the wire at a time.

The line owns the link (connect, reconnect with capped jittered backoff), keeps `pause_time` of silence before
each request, waits for the reply until the codec's framer says it is complete (never a fixed sleep), and is the
one place that counts, logs and resynchronises after a bad frame. Drivers decide what to retry.

Stale replies (issue 14). After a timeout, a bad frame or bytes nobody asked for, the reply to that request
may still be on its way. The line then waits for silence (:func:`quiet_window`) and drops what arrives. That
catches a reply that is a little late, not one a converter holds back and delivers right after the next
request. Where the codec cannot tell replies apart (Mercury replies carry no command code: two reads with
replies of one length look alike), its framer names the reply's ``shape``; the line keeps the shapes in doubt
and, before it writes a request whose reply has a shape in doubt, first sends the framer's ``fence()``: a
request whose reply has another shape. Replies from one meter come in order, so once the fence's reply is in,
the reply in doubt has come (and was refused by the fence's framer) or never will.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Protocol, TypeVar

from .config.model import LineConfig
from .errors import FrameError, LineStopping, PollerdError, ReplyTimeout, TransportError
from .metrics import Registry
from .state import LineState
from .transport import Link, reconnect_delay

log = logging.getLogger("pollerd.line")
# Every frame on the wire, for commissioning: DEBUG here (`--log-level DEBUG`, `pollerd poll --trace`), or
# INFO for the lines whose config says `trace = true`. Requests appear as the driver shows them (passwords
# masked); replies carry no secrets of the protocols on a line.
wire = logging.getLogger("pollerd.wire")

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)  # a framer only produces its reply type

# The quiet window after a request in doubt (see quiet_window): silence for QUIET_CHARS character times at the
# line's speed (the inter-frame gap of any bus protocol is far below it, so a reply still streaming in keeps
# the window open), and at least QUIET_FRACTION of waiting_time, because a meter that overran its
# waiting_time is most often late by a fraction of it. A full waiting_time would make every timeout of a meter
# that is off cost double; what the window misses, the shapes and fences below catch.
QUIET_CHARS = 12
QUIET_FRACTION = 0.25
# A babbling bus does not hold the line for ever: the silence wait ends after waiting_time plus one window
# whatever still arrives (the next framer then judges).

# Fences tried before a request whose reply shape is in doubt; without a fence reply the request is not sent.
FENCE_ATTEMPTS = 2

# How many times unasked bytes arriving during pause_time restart it before a request goes out anyway.
QUIET_ROUNDS = 3

# A TCP link with not one byte back for this long, over at least SILENT_REQUESTS requests, is reopened
# (see _count_silence): measured in time, because degraded meters probe rarely, and a count of requests left
# a half-open socket in place for minutes.
SILENT_SECONDS = 10.0
SILENT_REQUESTS = 2


# Set in a task whose every exchange should go ahead of scheduled ones (poll-now runs a whole driver cycle,
# and drivers do not pass priority= themselves). Task-local: a task copies the context it was created in.
line_priority: contextvars.ContextVar[bool] = contextvars.ContextVar("line_priority", default=False)


class Framer(Protocol[R_co]):
    """Sans-I/O receiver for one reply: None while incomplete, the reply once complete; raises FrameError.

    Optional, for codecs whose replies cannot be told apart (see the module docstring): ``shape``, a
    hashable ``(source, form)``, equal for two requests whose replies look alike (source: the answering
    address), and ``fence()``, returning ``(request, framer)`` of a harmless request to the same source whose
    reply has another form, or None."""

    def feed(self, data: bytes) -> R_co | None: ...

    @property
    def pending(self) -> bytes: ...


def quiet_window(waiting_time: float, baudrate: int) -> float:
    """Silence that ends a wait for a late reply: QUIET_CHARS characters of 11 bits (start, 8 data, parity or
    a second stop, stop) at ``baudrate``, and at least QUIET_FRACTION of ``waiting_time``."""
    return max(QUIET_CHARS * 11 / max(baudrate, 1), QUIET_FRACTION * waiting_time)


def _shape(framer: object) -> Hashable | None:
    return getattr(framer, "shape", None)


class BusLock:
    """Who gets the bus next: FIFO, except that priority requests (raw frames, poll-now) go before every
    waiting scheduled one. The exchange in progress is never interrupted. After PRIORITY_RUN priority
    hand-overs in a row with a scheduled request waiting, that one goes next, so a stream of raw requests
    or overlapping poll-now cycles cannot starve the schedule for ever."""

    PRIORITY_RUN = 8

    def __init__(self) -> None:
        self._busy = False
        self._run = 0   # priority hand-overs in a row while scheduled requests waited
        self._high: collections.deque[asyncio.Future[None]] = collections.deque()
        self._low: collections.deque[asyncio.Future[None]] = collections.deque()

    def try_acquire(self) -> bool:
        """Take the bus if it is free and nobody waits for it; never suspends."""
        if self._busy or self._high or self._low:
            return False
        self._busy = True
        return True

    async def acquire(self, priority: bool = False) -> None:
        if self.try_acquire():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._high if priority else self._low
        queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the bus was handed to us just as we were cancelled: pass it on
            elif fut in queue:
                # release() may already have popped (and skipped) our cancelled future when the holder let
                # go between our cancel() and our wake-up: several tasks cancelled at once on shutdown.
                queue.remove(fut)
            raise

    def release(self) -> None:
        self._drop_cancelled()
        if self._high and not (self._low and self._run >= self.PRIORITY_RUN):
            queue = self._high
            self._run = self._run + 1 if self._low else 0
        else:
            queue = self._low
            self._run = 0
        if queue:
            queue.popleft().set_result(None)  # hand over: the bus stays busy
            return
        self._busy = False

    def _drop_cancelled(self) -> None:
        for queue in (self._high, self._low):
            while queue and queue[0].done():
                queue.popleft()

    @property
    def waiting(self) -> int:
        return len(self._high) + len(self._low)


class Line:
    def __init__(self, cfg: LineConfig, state: LineState, metrics: Registry, *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 one_shot: bool = False) -> None:
        self.cfg = cfg
        # A command that talks to a meter once (poll, raw, scan) reports a failed connect itself and exits;
        # "retrying with backoff" would promise something it does not do.
        self.one_shot = one_shot
        self.name = cfg.name
        self.state = state
        self.link = Link(cfg)
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = BusLock()
        self._owner: asyncio.Task[object] | None = None   # the task holding the bus for a session
        self._last_activity = 0.0
        self._failures = 0
        self._next_connect = 0.0
        self._proven = False   # the current connection has carried an exchange to its end
        self._silent = 0       # requests in a row that got not a single byte back (reset by any byte)
        self._last_rx = 0.0    # clock time of the last byte received (or of the connect) on this link
        # Reply shapes (see Framer) whose late reply may still come; and the shape of the last exchange, put in
        # doubt when unasked bytes turn up before the next request.
        self._doubt: set[Hashable] = set()
        self._last_shape: Hashable | None = None
        self.recoveries = 0    # times the link carried a reply again after being lost or silent (see daemon)
        self._dark = False     # lost, or closed for silence, and no reply since
        # Wall clock (like /health's) of the first failure since the link last carried an exchange; shown
        # as state.down_since while the link is not connected.
        self._down_since: float | None = None
        self.accepting = True
        # Meters being stopped one by one (reload): their next exchange is refused, others go on.
        self.refused: set[str] = set()
        self._m_exchanges = metrics.counter(
            "pollerd_line_exchanges_total", "Request/reply exchanges started on a line", ("line",))
        self._m_bus = metrics.counter(
            "pollerd_line_bus_seconds_total", "Time a line spent in exchanges (request out to reply in)",
            ("line",))
        self._m_reconnects = metrics.counter(
            "pollerd_line_connects_total", "Successful (re)connections of a line", ("line",))
        self._m_connect_fail = metrics.counter(
            "pollerd_line_connect_failures_total", "Failed connection attempts of a line", ("line",))
        self._m_frame_err = metrics.counter(
            "pollerd_frame_errors_total", "Bad frames received, by meter and kind", ("meter", "kind"))
        self._m_timeouts = metrics.counter(
            "pollerd_reply_timeouts_total", "Requests without a complete reply within waiting_time",
            ("meter",))
        self._m_stale = metrics.counter(
            "pollerd_line_stale_bytes_total", "Unasked bytes dropped before a request", ("line",))
        self._m_discards = metrics.counter(
            "pollerd_line_discards_total",
            "Times unasked bytes (late replies, tails of bad frames) were dropped before a request", ("line",))
        self._m_fences = metrics.counter(
            "pollerd_line_fences_total",
            "Fence requests sent before a request whose reply could not be told from a late one", ("line",))
        self._m_connected = metrics.gauge("pollerd_line_up", "1 when the line's link is open", ("line",))
        self._m_connected.set(0, line=self.name)
        # Per-exchange updates go through label-bound children: this is the hottest path of the daemon.
        self._c_exchanges = self._m_exchanges.child(line=self.name)
        self._c_bus = self._m_bus.child(line=self.name)

    async def _ensure_connected(self) -> None:
        if self.link.connected:
            return
        if self.state.connected:
            self.state.connected = False
            self._m_connected.set(0, line=self.name)
        now = self._clock()
        if now < self._next_connect:
            # No countdown in the text: it is the meter's error in logs and /health, and one stable text per
            # outage folds into "(repeated N times)" instead of a new line every cycle.
            raise TransportError(f"line {self.name} is down ({self.state.last_error})"
                                 + ("" if self.one_shot else "; reconnecting with backoff"))
        try:
            await self.link.open()
        except TransportError as exc:
            self._failures += 1
            self._m_connect_fail.inc(line=self.name)
            delay = reconnect_delay(self._failures - 1, self.cfg.reconnect_min, self.cfg.reconnect_max, self._rng)
            self._next_connect = self._clock() + delay
            if self.state.last_error != str(exc) and not self.one_shot:
                log.warning("line %s: %s (retrying with backoff)", self.name, exc, extra={"line": self.name})
            self.state.last_error = str(exc)
            self._mark_down()
            raise
        if self._failures or self.state.reconnects:
            log.info("line %s: connected to %s", self.name, self.link.describe, extra={"line": self.name})
        # _failures and _down_since are cleared only once an exchange proves the link (_healthy): a peer that
        # accepts and hangs up at once must neither reset the backoff nor restart /health's down time.
        self._proven = False
        self._last_rx = self._clock()
        self._silent = 0
        self.state.connected = True
        self.state.last_error = None
        self.state.down_since = None
        self.state.reconnects += 1
        self._m_reconnects.inc(line=self.name)
        self._m_connected.set(1, line=self.name)

    async def exchange(self, request: bytes, framer: Framer[R], *, waiting_time: float, pause: float,
                       meter: str, shown: str | None = None, priority: bool = False,
                       after_write: Callable[[], Awaitable[None]] | None = None) -> R:
        """Send one request and return the framer's reply. Raises ReplyTimeout, FrameError (already counted
        and logged here), TransportError or LineStopping.

        ``shown`` is how the request appears in logs and errors; a driver passes a redacted form for
        requests that carry a password (the default is the request as hex). ``after_write`` runs once the
        request is handed to the link and before the reply is awaited (IEC 62056-21 switches the baud
        rate there, after the option select has left the UART)."""
        if shown is None:
            shown = request.hex(" ")
        # session() inlined, and the free bus taken without a coroutine: this is the daemon's hottest path
        # (issue 18), and every await layer here is walked again on each resumption of the exchange.
        held = self._try_hold()
        if held is None:
            held = await self._hold(priority)
        try:
            shape = _shape(framer)
            if shape is not None and shape in self._doubt:
                await self._fence(framer, shape, waiting_time, pause, meter, shown)
            return await self._transact(request, framer, waiting_time, pause, meter, shown, after_write)
        finally:
            if held:
                self._let_go()

    @contextlib.asynccontextmanager
    async def session(self, meter: str, *, priority: bool = False) -> AsyncIterator[None]:
        """Hold the bus: around one exchange, or around several exchanges of one meter where a protocol
        session (IEC mode C: sign-on, option select, password, reads, break) must not be interleaved with
        other meters' requests. The task holding it goes straight through; re-entering is a no-op."""
        held = await self._hold(priority)
        try:
            yield
        finally:
            if held:
                self._let_go()

    def _try_hold(self) -> bool | None:
        """Without suspending: False when the current task already holds the bus (nothing to release then),
        True when it was free and is now taken, None when the task has to wait for it (:meth:`_hold`)."""
        me = asyncio.current_task()
        if self._owner is not None and self._owner is me:
            return False
        if self._lock.try_acquire():
            self._owner = me
            return True
        return None

    async def _hold(self, priority: bool) -> bool:
        """Take the bus for the current task; False when it already holds it (nothing to release then)."""
        held = self._try_hold()
        if held is not None:
            return held
        await self._lock.acquire(priority or line_priority.get())
        self._owner = asyncio.current_task()
        return True

    def _let_go(self) -> None:
        self._owner = None
        self._lock.release()

    def _trace_level(self) -> int:
        """The level wire frames are logged at, 0 for none. Asked per exchange: cheap (the logging module
        caches isEnabledFor) and a level changed at run time applies to the next frame."""
        if self.cfg.trace:
            return logging.INFO
        return logging.DEBUG if wire.isEnabledFor(logging.DEBUG) else 0

    async def send(self, request: bytes, *, pause: float, meter: str, shown: str | None = None,
                   priority: bool = False) -> None:
        """Send a request that has no reply (IEC break B0, ACK after a partial block's last one)."""
        async with self.session(meter, priority=priority):
            await self._ready(pause, meter, drop_stale=False)
            if trace := self._trace_level():
                wire.log(trace, "%s %s TX %s (no reply expected)", self.name, meter,
                         request.hex(" ") if shown is None else shown, extra={"line": self.name, "meter": meter})
            try:
                self.link.write(request)
            except TransportError as exc:
                await self._lost(exc)
                raise
            self._last_activity = self._clock()

    async def _ready(self, pause: float, meter: str, *, drop_stale: bool = True) -> None:
        """Before anything goes on the wire: not stopping, connected, nothing stale (before a request that
        expects a reply), pause_time kept."""
        if not self.accepting:
            raise LineStopping(f"line {self.name} is stopping")
        if meter in self.refused:
            raise LineStopping(f"meter {meter} is stopping")
        if not self.link.connected:
            await self._ensure_connected()
        # The stale check comes after the pause, right before the write: a late reply to a timed-out request
        # that lands during the pause would otherwise be fed to this request's framer. Bytes found there
        # mean the line was not silent, so the pause starts again from when they were seen (pause_time
        # counts from the last byte). A babbling bus gets QUIET_ROUNDS restarts, then the framer judges.
        for _ in range(QUIET_ROUNDS):
            wait = self._last_activity + pause - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            stale = self.link.discard_input() if drop_stale else b""
            if not stale:
                break
            # Unasked bytes: the previous reply may have come twice, or a late one is on its way.
            if self._last_shape is not None:
                self._doubt.add(self._last_shape)
            self._dropped(stale, meter, "before the request")
            self._last_activity = self._clock()

    def _dropped(self, data: bytes, meter: str, where: str) -> None:
        """Count and log once what was dropped (the hex is the evidence; replies hold no secrets)."""
        self._m_stale.inc(len(data), line=self.name)
        self._m_discards.inc(line=self.name)
        shown = data[:64].hex(" ") + (" ..." if len(data) > 64 else "")
        log.info("line %s: dropped %d unasked bytes %s to %s: %s", self.name, len(data), where, meter, shown,
                 extra={"line": self.name, "meter": meter})

    def _healthy(self) -> None:
        """An exchange ran to its end (reply, bad frame or timeout) without losing the link."""
        self._proven = True
        self._failures = 0
        self._down_since = None
        self.state.down_since = None

    def _mark_down(self) -> None:
        if self._down_since is None:
            self._down_since = time.time()
        self.state.down_since = self._down_since

    async def _lost(self, exc: TransportError) -> None:
        if not self._proven:
            # Lost before a single exchange completed on it (a converter that accepts and hangs up, a port
            # already taken by another client): a failed connect in all but name, so the backoff grows
            # instead of every request reconnecting at once. A proven link that drops reconnects at once.
            self._failures += 1
            delay = reconnect_delay(self._failures - 1, self.cfg.reconnect_min, self.cfg.reconnect_max, self._rng)
            self._next_connect = self._clock() + delay
        self._proven = False
        self._dark = True
        self.state.last_error = str(exc)
        self._mark_down()
        log.warning("line %s: %s", self.name, exc, extra={"line": self.name})
        await self._close_link()

    async def _fence(self, framer: object, shape: Hashable, waiting_time: float, pause: float, meter: str,
                     shown: str) -> None:
        """Make sure no late reply of ``shape`` can still arrive before the request goes out (module
        docstring). Raises ReplyTimeout when the fence gets no valid reply: then the request is not sent."""
        make = getattr(framer, "fence", None)
        last: PollerdError | None = None
        for _ in range(FENCE_ATTEMPTS):
            fence = make() if make is not None else None
            if fence is None or _shape(fence[1]) == shape:
                # No fence of another shape (Mercury acknowledgements: the fence's reply looks like them):
                # these replies carry no value, so the silence already kept is all the line can do.
                self._doubt.discard(shape)
                return
            f_request, f_framer = fence
            self._m_fences.inc(line=self.name)
            try:
                await self._transact(f_request, f_framer, waiting_time, pause, meter,
                                     "fence " + f_request.hex(" "), None)
            except ReplyTimeout as exc:
                last = exc
                if not exc.partial:
                    break  # not a byte back: the meter is not answering; a second fence would only cost time
                continue
            except FrameError as exc:
                last = exc
                continue
            if shape not in self._doubt:
                return
        if isinstance(last, FrameError):
            raise last  # already counted and logged; it says what is wrong on the bus better than we could
        raise ReplyTimeout(f"{meter}: not sending [{shown}]: a late reply to an earlier request of its shape "
                           f"may still come and the fence got no reply ({last})")

    async def _transact(self, request: bytes, framer: Framer[R], waiting_time: float, pause: float, meter: str,
                        shown: str, after_write: Callable[[], Awaitable[None]] | None) -> R:
        await self._ready(pause, meter)
        shape = self._last_shape = _shape(framer)
        trace = self._trace_level()
        rx = bytearray() if trace else None  # what came back, kept only while tracing
        if trace:
            wire.log(trace, "%s %s TX %s", self.name, meter, shown, extra={"line": self.name, "meter": meter})
        t0 = self._clock()
        self.state.exchanges += 1
        self._c_exchanges.inc()
        try:
            self.link.write(request)
            if after_write is not None:
                await after_write()
            # A deadline, not asyncio.timeout(): the link keeps one lazy timer for it (Link.read_chunk).
            deadline = asyncio.get_running_loop().time() + waiting_time
            while True:
                chunk = await self.link.read_chunk(deadline)
                if rx is not None:
                    rx += chunk
                reply = framer.feed(chunk)
                if reply is not None:
                    self._healthy()
                    self._answered()
                    if rx is not None:
                        wire.log(trace, "%s %s RX %s (%.0f ms)", self.name, meter, rx.hex(" "),
                                 (self._clock() - t0) * 1000, extra={"line": self.name, "meter": meter})
                    if shape is not None:
                        got = getattr(framer, "reply_shape", shape)
                        self._settled(got, leftover=bool(framer.pending))
                        if got != shape:
                            # A reply of another form (a status where data was asked): the one asked
                            # for may still come.
                            self._doubt.add(shape)
                    return reply
        except (TimeoutError, asyncio.TimeoutError):
            if rx is not None:
                wire.log(trace, "%s %s RX %s (no complete reply within %gs)", self.name, meter,
                         rx.hex(" ") if rx else "nothing", waiting_time,
                         extra={"line": self.name, "meter": meter})
            self._healthy()
            self._m_timeouts.inc(meter=meter)
            heard = bool(framer.pending)
            if heard:
                self._answered(reply=False)
            await self._count_silence(heard)
            await self._in_doubt(shape, waiting_time, meter)
            raise ReplyTimeout(
                f"{meter}: no complete reply within {waiting_time:g}s to [{shown}]",
                framer.pending) from None
        except FrameError as exc:
            if rx is not None:
                wire.log(trace, "%s %s RX %s (bad frame after %.0f ms: %s)", self.name, meter, rx.hex(" "),
                         (self._clock() - t0) * 1000, exc.kind, extra={"line": self.name, "meter": meter})
            self._healthy()
            self._answered(reply=False)
            self._m_frame_err.inc(meter=meter, kind=exc.kind)
            log.warning("line %s: %s: bad reply to [%s]: %s", self.name, meter, shown, exc,
                        extra={"line": self.name, "meter": meter})
            await self._in_doubt(shape, waiting_time, meter)
            raise
        except TransportError as exc:
            if framer.pending:
                # Part of a reply came before the connection dropped (a converter resetting some
                # connections): the link works, so this loss reconnects at once instead of backing off.
                self._healthy()
                self._answered(reply=False)
            await self._lost(exc)
            raise
        finally:
            end = self._clock()
            self._last_activity = end
            self.state.bus_time += end - t0
            self._c_bus.inc(end - t0)

    def _answered(self, *, reply: bool = True) -> None:
        """Bytes came back on the link; a complete reply after the link was lost or silent is a recovery."""
        self._last_rx = self._clock()
        self._silent = 0
        if reply and self._dark:
            self._dark = False
            self.recoveries += 1

    def _settled(self, shape: Hashable, *, leftover: bool) -> None:
        """A valid reply of ``shape`` came in: earlier replies of the same source have all arrived, so other
        forms of it are no longer in doubt. Bytes after the reply were not asked for: its own shape is."""
        if self._doubt:
            source = shape[0] if isinstance(shape, tuple) and shape else shape
            self._doubt = {d for d in self._doubt
                           if d == shape or (d[0] if isinstance(d, tuple) and d else d) != source}
        if leftover:
            self._doubt.add(shape)

    async def _in_doubt(self, shape: Hashable | None, waiting_time: float, meter: str) -> None:
        """The request just made may still be answered: remember its shape, wait for silence and drop what
        arrives meanwhile, so it is not fed to the next request's framer."""
        if shape is not None:
            self._doubt.add(shape)
        if not self.link.connected:
            return
        quiet = quiet_window(waiting_time, self.cfg.baudrate)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + waiting_time + quiet
        dropped = bytearray()
        while loop.time() < give_up:
            try:
                dropped += await self.link.read_chunk(loop.time() + quiet)
            except (TimeoutError, asyncio.TimeoutError):
                break
            except TransportError:
                break  # the next request reconnects and learns why
        dropped += self.link.discard_input()
        if dropped:
            self._last_rx = self._clock()
            self._dropped(bytes(dropped), meter, "after a request in doubt")

    async def _count_silence(self, heard: bool) -> None:
        """A TCP link that gave not one byte back for SILENT_SECONDS, over SILENT_REQUESTS requests or more,
        may be half open (a GSM modem whose session dropped, a converter that hung while the socket stays
        up): it is closed, so the next request connects afresh. A serial port is left alone (reopening it
        would not reach a meter that is off)."""
        if heard:
            return
        self._silent += 1
        quiet_for = self._clock() - self._last_rx
        if self._silent < SILENT_REQUESTS or quiet_for < SILENT_SECONDS or self.cfg.type != "tcp":
            return
        log.warning("line %s: no byte back for %.0fs (%d requests); reconnecting (a half-open connection?)",
                    self.name, quiet_for, self._silent, extra={"line": self.name})
        self._silent = 0
        self._dark = True
        await self._close_link()

    async def _close_link(self) -> None:
        await self.link.close()
        self.state.connected = False
        self._m_connected.set(0, line=self.name)

    @property
    def dark(self) -> bool:
        """No reply since the link was lost or closed for silence (or not a single byte for SILENT_SECONDS):
        nothing on this line is answering, so meters on it probe every cycle (the daemon)."""
        return self._dark or (self.link.connected and self._silent >= SILENT_REQUESTS
                              and self._clock() - self._last_rx >= SILENT_SECONDS)

    async def probe(self) -> None:
        """Open the link now, before any meter is due (start-up), so a missing device or an unreachable
        converter shows in /health at once rather than at the first cycle of its meters, which may be
        hours away for daily meters. Failures are recorded in the line's state (and backed off) only."""
        async with self.session("(start-up)"):
            if not self.accepting:
                return
            with contextlib.suppress(TransportError):
                await self._ensure_connected()

    async def close(self) -> None:
        await self._lock.acquire(priority=True)
        try:
            await self._close_link()
        finally:
            self._lock.release()
