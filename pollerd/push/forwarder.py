"""The forwarder: moves one sink's outbox cursor through the store (DESIGN.md §4).

One forwarder per sink. It reads the rows after the sink's cursor, hands them to the sink's client and moves
the cursor only after the client confirmed the batch, so a crash or a cancel at any moment re-sends at most
one batch (at-least-once; the natural key lets the receiver de-duplicate).

* Transient failures retry the *same* batch after a capped exponential backoff with full jitter in
  ``[retry_min, min(retry_max, retry_min * 2**n)]``; the outage is logged once when it starts and once
  when it ends, not on every try.
* A permanent refusal parks the batch in the store (it stays there, listed by ``store.parked()``), moves
  the cursor past it and logs one error for that batch.
* ``connect()`` failures (broker down, credentials refused) are retried with the same backoff and shown in
  the sink's state (``last_error``, ``failing_since``; /health), never raised: a sink that cannot reach its
  upstream must not take the polling down with it.
* Linger: a batch shorter than ``batch_size`` waits up to ``linger`` seconds for more rows before it is
  sent, so a trickle of readings (a poll cycle commits meter by meter) becomes a few full requests instead
  of one request per meter. A backlog is sent in full batches without waiting; ``linger = 0`` sends at once.
* Events go the same way through a second outbox of the same sink: their own cursor (event seq), the same
  batch size, retries, backoff and parking (``kind = "events"``). Each loop turn sends at most one batch of
  each, so a readings backlog does not hold events back and the client still gets one call at a time. A
  client without ``send_events``, or whose ``accepts_events`` is false, declines them.
* Lag (rows and seconds behind) is refreshed on every loop turn and at least every ``idle_wait`` seconds
  while idle, so gauges and /health stay current when nothing is written.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pollerd.backoff import backoff_delay
from pollerd.compat import timeout
from pollerd.config.model import SinkConfig
from pollerd.errors import StoreError
from pollerd.metrics import Registry
from pollerd.model import Event, Reading
from pollerd.push import PermanentSinkError, PushClient, TransientSinkError
from pollerd.state import SinkState

if TYPE_CHECKING:
    from pollerd.store import Store

log = logging.getLogger(__name__)

# Failure kinds that mean the upstream is not reachable at all (as opposed to a slow or refusing reply);
# clients reconnect inside send(), so the forwarder learns of a lost connection only from these.
_CONNECTION_KINDS = frozenset({"network", "tls", "auth", "refused"})
_T = TypeVar("_T")

IDLE_WAIT = 5.0     # longest sleep on an empty outbox; bounds how stale the lag gauges get
# Arrival samples kept for the lag estimate. During a long outage the cursor stands still and a sample is
# added on every retry; beyond this many every other one is dropped, so memory stays flat and the estimate
# only gets coarser.
_SEEN_MAX = 1024


def retry_delay(sink: SinkConfig, attempt: int, rng: Callable[[], float]) -> float:
    """A sink's delay before retry number ``attempt + 1``: uniform between ``retry_min`` and
    ``min(retry_max, retry_min * 2**attempt)`` (full jitter over a capped exponential)."""
    return backoff_delay(attempt, sink.retry_min, sink.retry_max, rng(), floor=sink.retry_min)


class Forwarder:
    def __init__(
        self,
        store: Store,
        client: PushClient,
        sink: SinkConfig,
        state: SinkState,
        metrics: Registry,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        idle_wait: float = IDLE_WAIT,
        monotonic: Callable[[], float] = time.monotonic,
        meter_status: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._sink = sink
        self._state = state
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._idle_wait = idle_wait
        self._monotonic = monotonic
        name = sink.name
        self._name = name
        self._m_sent = metrics.counter("pollerd_sink_sent_total", "Readings confirmed by the sink.", ("sink",))
        self._m_fail = metrics.counter(
            "pollerd_sink_failures_total", "Failed batch deliveries, by kind.", ("sink", "kind"))
        self._m_parked = metrics.counter(
            "pollerd_sink_parked_batches_total", "Batches the sink refused for good, set aside in the store.",
            ("sink",))
        self._m_lag_rows = metrics.gauge("pollerd_sink_lag_rows", "Stored readings not yet confirmed.", ("sink",))
        self._m_lag_s = metrics.gauge(
            "pollerd_sink_lag_seconds", "Age of the oldest reading not yet confirmed.", ("sink",))
        self._m_last_ok = metrics.gauge(
            "pollerd_sink_last_success_timestamp", "Unix time of the last confirmed batch.", ("sink",))
        # Make the series exist from the start, so a scrape shows 0 rather than nothing.
        self._m_sent.inc(0, sink=name)
        self._m_parked.inc(0, sink=name)
        self._m_lag_rows.set(0, sink=name)
        self._m_lag_s.set(0, sink=name)
        # (last_seq, clock) samples: when a row became visible to us. The store keeps no arrival time and a
        # reading's ts may be weeks old (archive backfill), which would fake a lag; rows already there at
        # start fall back to ts because when they arrived is unknown.
        self._seen: collections.deque[tuple[int, float]] = collections.deque()
        self._start_seq: int | None = None
        self._attempt = 0
        self._failing = False
        self._events = bool(getattr(client, "accepts_events", callable(getattr(client, "send_events", None))))
        # Each meter's online/offline state, for clients with send_status: state, not history, so no cursor;
        # what the client last took is kept and only a change is handed over.
        self._meter_status = meter_status if callable(getattr(client, "send_status", None)) else None
        self._status_sent: dict[str, str] = {}
        self._status_seen: Mapping[str, str] | None = None  # the last mapping meter_status() returned and was sent
        self._m_events_sent = metrics.counter(
            "pollerd_sink_events_sent_total", "Events confirmed by the sink.", ("sink",))
        if self._events:
            self._m_events_sent.inc(0, sink=name)

    @property
    def name(self) -> str:
        return self._name

    async def run(self) -> None:
        """Forward until cancelled. Never returns otherwise; cancellation propagates."""
        store = self._store
        await self._connect()
        cursor = await self._store_retry("read the cursor", lambda: store.cursor(self._name))
        ev_cursor = 0
        if self._events:
            ev_cursor = await self._store_retry("read the event cursor", lambda: store.event_cursor(self._name))
            log.info("sink %s: forwarding from seq %d, events from event seq %d", self._name, cursor, ev_cursor,
                     extra={"sink": self._name})
        else:
            log.info("sink %s: forwarding from seq %d", self._name, cursor, extra={"sink": self._name})
        while True:
            await self._publish_status()
            # Clear before fetching: a commit that lands after the fetch sets the event again and the wait
            # below returns at once. new_data is shared by all sinks; a clear by another forwarder can at
            # worst delay this one by idle_wait.
            store.new_data.clear()
            try:
                batch = await store.fetch_after(cursor, self._sink.batch_size)
                if batch and len(batch) < self._sink.batch_size and self._sink.linger > 0:
                    batch = await self._linger(batch)
                await self._update_lag(cursor, batch)
                events = (await store.fetch_events_after(ev_cursor, self._sink.batch_size)
                          if self._events else [])
            except StoreError as exc:
                # The daemon reports the store through /health; stopping here would take every other task
                # down with this one, so wait and read again.
                self._state.last_error = str(exc)
                self._m_fail.inc(kind="store", sink=self._name)
                log.warning("sink %s: cannot read the outbox, retrying: %s", self._name, exc,
                            extra={"sink": self._name})
                await self._sleep(max(self._sink.retry_min, 1.0))
                continue
            if not batch and not events:
                try:
                    async with timeout(self._idle_wait):
                        await store.new_data.wait()
                except (TimeoutError, asyncio.TimeoutError):
                    pass
                continue
            if batch:
                cursor = await self._deliver(batch, cursor)
            if events:
                ev_cursor = await self._deliver(events, ev_cursor, kind="events")

    async def _publish_status(self) -> None:
        """Hand the meters' online/offline state to the client when it changed. A failure is retried on the
        next loop turn (at least every idle_wait), never in the way of readings."""
        if self._meter_status is None:
            return
        current = self._meter_status()
        if current is self._status_seen:  # the daemon hands out the same mapping until a meter's state changes
            return
        status = dict(current)
        if status == self._status_sent:
            self._status_seen = current
            return
        try:
            await self._client.send_status(status)  # type: ignore[attr-defined]  # optional; checked in __init__
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a status is re-sent next turn; readings go on meanwhile
            log.debug("sink %s: meter status not delivered: %s", self._name, exc, extra={"sink": self._name})
            return
        self._status_sent, self._status_seen = status, current

    async def _connect(self) -> None:
        """Connect the client, retrying with backoff until it works (or the task is cancelled)."""
        while True:
            try:
                await self._client.connect()
            except TransientSinkError as exc:
                await self._on_transient(exc, None, None)
                continue
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a client bug: logged with its traceback, retried like a network error
                log.exception("sink %s: unexpected error while connecting", self._name)
                await self._on_transient(
                    TransientSinkError(f"{type(exc).__name__}: {exc}", kind="error"), None, None, logged=True)
                continue
            self._state.connected = True
            if self._failing:
                log.info("sink %s: connected after %d failed tries", self._name, self._attempt)
                self._failing = False
                self._state.failing_since = None
            self._attempt = 0
            return

    async def _linger(self, batch: list[tuple[int, Reading]]) -> list[tuple[int, Reading]]:
        """Top ``batch`` up to batch_size with rows committed within ``linger`` seconds of now."""
        store, size = self._store, self._sink.batch_size
        deadline = self._monotonic() + self._sink.linger
        batch = list(batch)
        while len(batch) < size:
            left = deadline - self._monotonic()
            if left <= 0:
                break
            # Clear, then look again: a commit between the last fetch and the clear is found by the fetch,
            # one after the clear sets the event.
            store.new_data.clear()
            more = await store.fetch_after(batch[-1][0], size - len(batch))
            if more:
                batch.extend(more)
                continue
            try:
                async with timeout(left):
                    await store.new_data.wait()
            except (TimeoutError, asyncio.TimeoutError):
                break
        return batch

    async def _deliver(self, batch: Sequence[tuple[int, Reading]] | Sequence[tuple[int, Event]], cursor: int,
                       kind: str = "readings") -> int:
        """Send one batch of ``kind`` (readings or events) until it is confirmed or parked; return the new
        cursor of that outbox."""
        items: list[Any] = [r for _, r in batch]  # Readings or Events, as ``kind`` says
        first, last = batch[0][0], batch[-1][0]
        what = "" if kind == "readings" else "event "
        # send_events is optional in the client interface; _events says this client has it.
        send: Callable[[list[Any]], Awaitable[None]] = (
            self._client.send if kind == "readings" else self._client.send_events)  # type: ignore[attr-defined]  # optional, see above
        while True:
            try:
                await send(items)
            except TransientSinkError as exc:
                if exc.kind in _CONNECTION_KINDS:
                    self._state.connected = False  # /health says "(not connected)" until a send gets through
                await self._on_transient(exc, first, last, what=what)
                if kind == "readings":
                    try:
                        await self._update_lag(cursor, batch)  # type: ignore[arg-type]  # kind == readings: Reading rows
                    except StoreError:
                        pass  # only the gauges; the outbox read in run() reports a store that stays broken
                continue
            except PermanentSinkError as exc:
                reason = str(exc)
                # One transaction: a crash between a separate park and advance would park the batch twice.
                await self._store_retry(f"park {what}seq {first}..{last}",
                                        functools.partial(self._store.park, self._name, first, last, reason,
                                                          advance=True, kind=kind))
                self._state.parked += 1
                self._state.failures += 1
                self._state.last_error = reason
                self._m_parked.inc(sink=self._name)
                self._m_fail.inc(kind=exc.kind, sink=self._name)
                log.error("sink %s: batch %sseq %d..%d (%d %s) refused and parked: %s",
                          self._name, what, first, last, len(items), kind, reason, extra={"sink": self._name})
                self._attempt = 0
                return last
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a client bug must not stop delivery for good; retry with backoff
                log.exception("sink %s: unexpected error from the client", self._name, extra={"sink": self._name})
                await self._on_transient(
                    TransientSinkError(f"{type(exc).__name__}: {exc}", kind="error"), first, last, logged=True,
                    what=what)
                continue
            break
        # The batch is confirmed: a store failure here retries the cursor write only, never the send (an
        # exception out of run() would take the whole daemon down through its task group).
        if kind == "readings":
            await self._store_retry(f"move the cursor to seq {last}", lambda: self._store.advance(self._name, last))
        else:
            await self._store_retry(f"move the event cursor to event seq {last}",
                                    lambda: self._store.advance_events(self._name, last))
        now = self._clock()
        self._state.connected = True
        if kind == "readings":
            self._state.sent += len(items)
            self._m_sent.inc(len(items), sink=self._name)
        else:
            self._m_events_sent.inc(len(items), sink=self._name)
        self._state.last_success = now
        self._m_last_ok.set(now, sink=self._name)
        if self._failing:
            log.info("sink %s: delivering again after %d failed tries", self._name, self._attempt,
                     extra={"sink": self._name})
            self._failing = False
        self._state.failing_since = None
        self._attempt = 0
        return last

    async def _store_retry(self, what: str, op: Callable[[], Awaitable[_T]]) -> _T:
        """``await op()`` until it does not raise StoreError (a full disk, a lock held past busy_timeout),
        waiting between tries; the sink's state shows the failure meanwhile."""
        tries = 0
        while True:
            try:
                return await op()
            except StoreError as exc:
                self._state.last_error = str(exc)
                self._m_fail.inc(kind="store", sink=self._name)
                if tries == 0:
                    log.warning("sink %s: cannot %s in the store, retrying: %s", self._name, what, exc,
                                extra={"sink": self._name})
                tries += 1
                await self._sleep(max(self._sink.retry_min, 1.0))

    async def _on_transient(self, exc: TransientSinkError, first: int | None, last: int | None, *,
                            logged: bool = False, what: str = "") -> None:
        self._state.failures += 1
        self._state.last_error = str(exc)
        if self._state.failing_since is None:
            self._state.failing_since = self._clock()
        self._m_fail.inc(kind=exc.kind, sink=self._name)
        delay = self.backoff(self._attempt)
        self._attempt += 1
        if not self._failing and not logged:
            if first is None:
                log.warning("sink %s: cannot connect, retrying with backoff: %s", self._name, exc,
                            extra={"sink": self._name})
            else:
                log.warning("sink %s: batch %sseq %d..%d not delivered, retrying with backoff: %s",
                            self._name, what, first, last, exc, extra={"sink": self._name})
        else:
            log.debug("sink %s: try %d failed, next in %.1f s: %s", self._name, self._attempt, delay, exc)
        self._failing = True
        await self._sleep(delay)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1``: full jitter between retry_min and the capped exponential."""
        return retry_delay(self._sink, attempt, self._rng)

    async def _update_lag(self, cursor: int, batch: Sequence[tuple[int, Reading]]) -> None:
        first_seq, last_seq = await self._store.seq_range()
        now = self._clock()
        if self._start_seq is None:
            self._start_seq = last_seq
        seen = self._seen
        if not seen or last_seq > seen[-1][0]:
            seen.append((last_seq, now))
            if len(seen) > _SEEN_MAX:
                newest = seen[-1]
                thinned = list(seen)[::2]
                if thinned[-1] is not newest:
                    thinned.append(newest)
                self._seen = seen = collections.deque(thinned)
        # Samples wholly at or below the cursor describe delivered rows; keep the one that covers cursor+1.
        while len(seen) > 1 and seen[0][0] <= cursor:
            seen.popleft()
        # The batch in hand plus what is stored after it, counted from the first row still stored: the
        # quota (pollerd.store.quota) evicts the oldest rows, delivered or not, and those will never be sent.
        rows = len(batch) + max(0, last_seq - max(batch[-1][0], first_seq - 1)) if batch else 0
        lag_s = 0.0
        if batch:
            head_seq, head = batch[0]
            lag_s = now - head.ts
            if head_seq > self._start_seq:
                arrived = next((t for s, t in seen if s >= head_seq), now)
                lag_s = min(lag_s, now - arrived)
            lag_s = max(0.0, lag_s)
        self._state.lag_rows = rows
        self._state.lag_seconds = lag_s
        self._m_lag_rows.set(rows, sink=self._name)
        self._m_lag_s.set(lag_s, sink=self._name)
