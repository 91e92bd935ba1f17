"""The per-meter side of the daemon: a meter's schedule (a timer between turns), one cycle (probe while degraded, poll, store
the result), and what a cycle leaves in the meter's state and metrics."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import MeterConfig
from ..drivers.base import Driver, PollResult
from ..errors import StoreError
from ..line import Line
from ..metrics import Registry
from ..quality import describe, screen
from ..schedule import Schedule, next_run
from ..state import MeterState, Runtime
from ..store import Store

log = logging.getLogger("pollerd.daemon")

# A meter is degraded after this many failed cycles in a row; it is then only probed, with the number of
# skipped cycles doubling up to DEGRADED_MAX_SKIP (so a dead meter costs one timeout every few cycles).
DEGRADED_AFTER = 3
DEGRADED_MAX_SKIP = 16
# The runner compares the wall clock with the event loop's monotonic clock this often; when the two moved apart
# by more than CLOCK_TOLERANCE (NTP stepped or slewed the wall clock), every sleeping meter wakes and plans its
# sleep again. One timer for the daemon instead of each meter waking every minute to look (10 000 meters: 167
# wake-ups a second for nothing).
CLOCK_RECHECK = 60.0
CLOCK_TOLERANCE = 0.5


class StopFlag:
    """A meter's stop request; it also holds the timer its schedule sleeps on, so that setting it ends the
    sleep (a meter stopped while sleeping has nothing left to run)."""

    __slots__ = ("_set", "_timer")

    def __init__(self) -> None:
        self._set = False
        self._timer: asyncio.TimerHandle | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        self.wake()

    @property
    def sleeping(self) -> bool:
        return self._timer is not None

    def sleep(self, delay: float, then: Callable[[MeterRun], None], run: MeterRun) -> None:
        """Call ``then(run)`` in ``delay`` seconds, unless set or woken first; ``then`` calls :meth:`rang`
        first. (The timer calls it directly: a wrapper would add a bound method and a longer argument tuple
        to every sleeping meter.)"""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, then, run)

    def rang(self) -> None:
        """The sleep's timer fired: nothing to cancel any more."""
        self._timer = None

    def wake(self) -> bool:
        """End the sleep in progress without its callback; True when there was one."""
        t, self._timer = self._timer, None
        if t is None:
            return False
        t.cancel()
        return True


@dataclass(eq=False, slots=True)
class MeterRun:
    """One running meter: its driver (which holds the protocol session), its schedule, the flag that stops
    the schedule after the cycle in flight, and the lock that keeps one cycle at a time (a scheduled cycle
    and a poll-now request never interleave on one meter).

    A sleeping meter holds no task (issue 18: a task and its coroutine per meter were 1.4 KB each, 14 MB at
    10 000 meters): only the timer in ``stop``. When it rings, a task runs one turn (the cycle, or a skip
    while degraded) and plans the next sleep; ``task`` is that turn's task while it runs."""

    cfg: MeterConfig
    driver: Driver
    stop: StopFlag = field(default_factory=StopFlag)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    state: MeterState | None = None
    # The schedule (MeterRunner.start), the slot it sleeps until, the cycles still to skip while degraded,
    # and the line's recovery count at the last turn (a recovery ends the skipping).
    sched: Schedule | None = None
    due: float = 0.0
    skip: int = 0
    recoveries: int = 0

    @property
    def scheduled(self) -> bool:
        """Its schedule is alive: sleeping until its next slot, or in a turn (which may be its last one, when
        ``stop`` is set)."""
        return self.stop.sleeping or self.task is not None


class MeterRunner:
    """Runs meters' cycles for one daemon. Shares the daemon's runtime, metrics, clock, stop event and
    lateness window; the store is handed over once the daemon has opened it."""

    def __init__(self, runtime: Runtime, metrics: Registry, clock: Callable[[], float],
                 stopping: asyncio.Event, lateness: collections.deque[float],
                 line_of: Callable[[str], Line | None] = lambda _name: None,
                 runs: Callable[[], Iterable[MeterRun]] = tuple,
                 spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None] | None] | None = None,
                 ) -> None:
        self.runtime = runtime
        self._due_cb = self._due  # one bound method for every meter's timer, not one per sleep
        # How a turn's task is made: the daemon's TaskGroup (a bug in a turn then stops the daemon as any
        # other task's would, instead of being lost; None once it is being torn down); a bare task by default.
        self._spawn = spawn or bare_task
        # The running meters (watch_clock wakes the sleeping ones to plan again).
        self.runs = runs
        # The line a meter is on, looked up each cycle: a reload may replace it.
        self.line_of = line_of
        self.clock = clock
        self.stopping = stopping
        self.lateness = lateness
        self.store: Store | None = None
        m = metrics
        self._m_polls = m.counter("pollerd_polls_total", "Poll cycles by meter and outcome",
                                  ("meter", "outcome"))
        self._m_readings = m.counter("pollerd_readings_total", "Readings received from meters", ("meter",))
        self._m_skipped = m.counter("pollerd_cycles_skipped_total",
                                    "Scheduled cycles skipped because the previous one overran", ("meter",))
        self._m_late = m.gauge("pollerd_schedule_lateness_seconds",
                               "Lateness of cycle starts against their schedule (recent window)", ("quantile",))
        self._m_degraded = m.gauge("pollerd_meter_degraded",
                                   "1 while a meter is degraded, 0 once it recovered (absent: never degraded)",
                                   ("meter",))
        self._m_store_err = m.counter("pollerd_store_write_errors_total", "Failed store writes")
        self._m_dropped = m.counter("pollerd_values_dropped_total",
                                    "Readings dropped before the store (not finite, not a number, implausible)",
                                    ("meter", "reason"))

    def publish_lateness(self) -> None:
        """Quantiles of the recent cycle starts' lateness, for /metrics (the daemon's housekeeping calls it)."""
        if self.lateness:
            s = sorted(self.lateness)
            for q in (0.5, 0.9, 0.99):
                self._m_late.set(s[min(len(s) - 1, int(q * len(s)))], quantile=q)

    def forget(self, name: str) -> None:
        """Drop a meter that left the config: its state, and its degraded gauge in /metrics."""
        self.runtime.meters.pop(name, None)
        self.runtime.status_changes += 1
        self._m_degraded.remove(meter=name)

    async def watch_clock(self) -> None:
        """Wake every sleeping meter when the wall clock moved against the monotonic one (a step or a slew
        beyond CLOCK_TOLERANCE): each then plans its sleep from the wall clock as it is now. The daemon runs
        this for as long as meters run."""
        loop = asyncio.get_running_loop()
        base = self.clock() - loop.time()
        while True:
            await asyncio.sleep(CLOCK_RECHECK)
            off = self.clock() - loop.time()
            if abs(off - base) > CLOCK_TOLERANCE:
                base = off
                for run in list(self.runs()):
                    if run.stop.wake():
                        self._due(run)

    def plan(self, sched: Schedule, t: float, st: MeterState) -> tuple[float, float]:
        """The run to sleep until, planned at ``t``, and how long until it (<= 0: due now).

        When the wall clock was stepped back meanwhile, ``t`` was planned by a clock that was ahead: waiting
        for it would leave the meter silent for as long as the step (a year for a gateway that booted with a
        bad RTC). The first slot after the clock as it is now comes first then. Without a step this is
        ``t`` itself: no slot lies between the one ``t`` was planned from and ``t``. The meter sleeps on one
        timer until then; watch_clock() ends the sleep early when the wall clock moves, and it plans again."""
        now = self.clock()
        earlier = next_run(sched, now)
        if earlier < t:
            log.warning("%s: the clock went back; next run at %s instead of %s", st.name,
                        _iso(earlier), _iso(t), extra={"meter": st.name})
            t = st.next_run = earlier
        return t, t - now

    def start(self, run: MeterRun, spread: float) -> None:
        """Start the meter's schedule: sleep until its first slot; at each slot a task runs one turn, which
        plans the next sleep."""
        mc = run.cfg
        run.sched = Schedule.from_meter(mc, spread)
        run.due = next_run(run.sched, self.clock())
        run.skip = 0
        line = self.line_of(mc.line)
        run.recoveries = line.recoveries if line is not None else 0
        self._sleep_until_due(run)

    def _sleep_until_due(self, run: MeterRun) -> None:
        self._state(run).next_run = run.due
        self._due(run)

    def _state(self, run: MeterRun) -> MeterState:
        return run.state or self.runtime.meters[run.cfg.name]

    def _due(self, run: MeterRun) -> None:
        """The meter's timer rang (or the clock moved): plan again; run a turn when the slot has come."""
        run.stop.rang()
        if run.stop.is_set():
            return
        assert run.sched is not None, "MeterRunner.start() plans the schedule"
        run.due, delay = self.plan(run.sched, run.due, self._state(run))
        if delay > 0:
            self.sleep(run, delay)
        else:
            run.task = self._spawn(self._turn(run), f"meter:{run.cfg.name}")

    def sleep(self, run: MeterRun, delay: float) -> None:
        """Sleep ``delay`` seconds, then plan again: the one place a schedule waits, so tests can run the
        schedule on a fake clock."""
        run.stop.sleep(delay, self._due_cb, run)

    async def _turn(self, run: MeterRun) -> None:
        try:
            await self.turn(run)
        finally:
            run.task = None
        if not run.stop.is_set():
            self._sleep_until_due(run)

    async def turn(self, run: MeterRun) -> None:
        """One slot of the meter's schedule: a cycle under its lock (or a skip while degraded), then the next
        slot in ``run.due``."""
        mc, drv, t = run.cfg, run.driver, run.due
        assert run.sched is not None, "MeterRunner.start() plans the schedule"
        st = self._state(run)
        self.lateness.append(self.clock() - t)
        line = self.line_of(mc.line)
        if st.degraded and run.skip > 0 and line is not None and (line.dark or line.recoveries != run.recoveries):
            # Recovery is measured in time, not in skipped cycles (issue 14): while nothing on the line
            # answers, probes are what find it healthy again and cost no other meter anything; once the
            # line carries replies again after an outage, every degraded meter on it tries at once.
            run.skip = 0
        if line is not None:
            run.recoveries = line.recoveries
        if st.degraded and run.skip > 0:
            run.skip -= 1
        else:
            async with run.lock:
                await self.cycle(mc, drv, st)
            if st.degraded:
                run.skip = min(DEGRADED_MAX_SKIP, 2 ** max(0, st.consecutive_failures - DEGRADED_AFTER)) - 1
        end = self.clock()
        nxt = next_run(run.sched, t)
        missed = 0
        while nxt <= end and missed < 100_000:
            missed += 1
            nxt = next_run(run.sched, nxt)
        if nxt <= end:
            # The clock jumped far ahead (an RTC-less gateway booting in 1970, then NTP): go on from now
            # rather than running cycle after cycle for slots that are all in the past.
            nxt = next_run(run.sched, end)
        if missed:
            st.skipped += missed
            self._m_skipped.inc(missed, meter=mc.name)
            log.warning("%s: cycle overran its period; %d scheduled cycle(s) skipped", mc.name, missed,
                        extra={"meter": mc.name, "line": mc.line})
        run.due = nxt

    async def cycle(self, mc: MeterConfig, drv: Driver, st: MeterState) -> PollResult | None:
        """One cycle; None when the meter is degraded and its probe went unanswered."""
        started = self.clock()
        if st.degraded:
            try:
                answered = await drv.probe()
            except Exception as exc:  # like poll() below: a driver bug fails this meter's cycle, not the daemon
                log.exception("%s: internal error in the %s driver's probe", mc.name, mc.protocol,
                              extra={"meter": mc.name, "line": mc.line})
                st.last_error = f"internal error: {type(exc).__name__}: {exc}"
                answered = False
            if not answered:
                self._record(mc, st, PollResult((), (), False, st.last_error or "no answer"), started)
                return None
        try:
            result = await drv.poll(int(started))
        except Exception as exc:  # a driver bug must not take the other meters down with it
            log.exception("%s: internal error in the %s driver", mc.name, mc.protocol,
                          extra={"meter": mc.name, "line": mc.line})
            result = PollResult((), (), False, f"internal error: {type(exc).__name__}: {exc}")
        result = self._screen(mc, st, result)
        if result.readings or result.events or result.state:
            try:
                await self._store(result)
                self.runtime.store_ok, self.runtime.store_error = True, None
                if result.readings:
                    self.runtime.last_stored = self.clock()
            except StoreError as exc:
                self.runtime.store_ok, self.runtime.store_error = False, str(exc)
                self._m_store_err.inc()
                log.error("store: cannot write %d readings of %s: %s", len(result.readings), mc.name, exc,
                          extra={"meter": mc.name})
        self._record(mc, st, result, started)
        return result

    def _screen(self, mc: MeterConfig, st: MeterState, result: PollResult) -> PollResult:
        """Drop the readings unfit for the store (quality.screen), counted and logged; the rest goes on."""
        screened = screen(result.readings)
        dropped = result.dropped + screened.dropped
        st.last_dropped = describe(dropped) if dropped else None
        if not dropped:
            return result
        st.dropped += len(dropped)
        for d in dropped:
            self._m_dropped.inc(meter=mc.name, reason=d.reason)
        log.warning("%s: dropped %d of %d value(s), not stored: %s", mc.name, len(dropped),
                    len(result.readings) + len(result.dropped), st.last_dropped,
                    extra={"meter": mc.name, "line": mc.line})
        return replace(result, readings=screened.kept, dropped=())

    async def _store(self, result: PollResult) -> None:
        store = self.store
        if store is None:  # a cycle before the daemon opened its store: a failed write, never a silent drop
            raise StoreError("the store is not open")
        await store.write(result.readings, result.events)
        for key, value in result.state:
            await store.set_state(key, value)

    def _record(self, mc: MeterConfig, st: MeterState, result: PollResult, started: float) -> None:
        was = st.online
        st.polls += 1
        st.last_poll = started
        if result.ok or (result.answered and result.readings):
            st.last_ok = started
        if st.online is not was:  # the sinks publish it (Daemon._meter_status)
            self.runtime.status_changes += 1
        st.readings += len(result.readings)
        if result.readings:
            self._m_readings.inc(len(result.readings), meter=mc.name)
        if result.ok:
            self._m_polls.inc(meter=mc.name, outcome="ok")
            if st.degraded:
                log.info("%s: answering again; leaving degraded mode", mc.name,
                         extra={"meter": mc.name, "line": mc.line})
                # Only a meter that was degraded has the gauge (10 000 zeros were 1.5 MB of labels and floats).
                self._m_degraded.set(0, meter=mc.name)
            st.consecutive_failures, st.degraded, st.degraded_reason, st.last_error = 0, False, None, None
            return
        self._m_polls.inc(meter=mc.name, outcome="partial" if result.answered else "failed")
        st.failures += 1
        st.consecutive_failures += 1
        if self.stopping.is_set():
            log.info("%s: cycle cut short by shutdown: %s", mc.name, result.error)
        elif st.last_error != result.error:
            log.warning("%s: poll %s: %s", mc.name, "incomplete" if result.answered else "failed",
                        (result.error or "").removeprefix(f"{mc.name}: "),
                        extra={"meter": mc.name, "line": mc.line})
        st.last_error = result.error
        if not st.degraded and st.consecutive_failures >= DEGRADED_AFTER:
            st.degraded = True
            st.degraded_reason = f"{st.consecutive_failures} failed cycles: {result.error}"
            self._m_degraded.set(1, meter=mc.name)
            log.warning("%s: degraded after %d failed cycles; probing with backoff", mc.name,
                        st.consecutive_failures, extra={"meter": mc.name, "line": mc.line})


def bare_task(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A turn's task outside a running daemon (tests, tools): not in any TaskGroup."""
    return asyncio.get_running_loop().create_task(coro, name=name)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
