"""Wiring: lines, drivers, per-meter schedules, the store, sinks and the local API under one TaskGroup."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .compat import TaskGroup, timeout
from .config import Config, MeterConfig
from .drivers.base import Driver, DriverContext, PollResult
from .drivers.registry import make_driver
from .errors import PollerdError, StoreError
from .line import Line
from .metrics import Registry
from .schedule import Schedule, next_run
from .state import LineState, MeterState, Runtime, SinkState
from .store import Store

log = logging.getLogger("pollerd.daemon")

# A meter is degraded after this many failed cycles in a row; it is then only probed, with the number of
# skipped cycles doubling up to DEGRADED_MAX_SKIP (so a dead meter costs one timeout every few cycles).
DEGRADED_AFTER = 3
DEGRADED_MAX_SKIP = 16
# How long shutdown waits for exchanges in flight before cancelling them.
STOP_GRACE = 10.0
DRAIN_GRACE = 3.0
PRUNE_EVERY = 3600.0
HOUSEKEEPING_EVERY = 10.0


def default_state_dir() -> Path:
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/pollerd").split(":")[0])


def db_path(config: Config, state_dir: Path) -> Path:
    return Path(config.store.path) if config.store.path else state_dir / "pollerd.db"


def build_lines(config: Config, runtime: Runtime, metrics: Registry) -> dict[str, Line]:
    lines = {}
    for lc in config.lines:
        st = runtime.lines[lc.name] = LineState(lc.name, lc.type)
        lines[lc.name] = Line(lc, st, metrics)
    return lines


def meter_state(mc: MeterConfig) -> MeterState:
    period = mc.interval_time if mc.period_type == "interval" else {
        "daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 31 * 86400.0}[mc.period_type]
    return MeterState(mc.name, mc.protocol, mc.line, mc.connection_address, period)


def build_driver(mc: MeterConfig, line: Line, runtime: Runtime, metrics: Registry,
                 clock: Callable[[], float] = time.time, store: Store | None = None) -> Driver:
    st = runtime.meters.setdefault(mc.name, meter_state(mc))
    return make_driver(DriverContext(mc, line, st, metrics, clock, logging.getLogger("pollerd.driver"),
                                     store))


@dataclass(eq=False)
class Daemon:
    config: Config
    state_dir: Path
    clock: Callable[[], float] = time.time
    metrics: Registry = field(default_factory=Registry)
    lateness: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8192))

    def __post_init__(self) -> None:
        self.runtime = Runtime(self.config.gateway.name, started=self.clock())
        self.stopping = asyncio.Event()
        self.api_port: int | None = None
        self.ready = asyncio.Event()
        m = self.metrics
        self._m_polls = m.counter("pollerd_polls_total", "Poll cycles by meter and outcome",
                                  ("meter", "outcome"))
        self._m_readings = m.counter("pollerd_readings_total", "Readings received from meters", ("meter",))
        self._m_skipped = m.counter("pollerd_cycles_skipped_total",
                                    "Scheduled cycles skipped because the previous one overran", ("meter",))
        self._m_late = m.gauge("pollerd_schedule_lateness_seconds",
                               "Lateness of cycle starts against their schedule (recent window)", ("quantile",))
        self._m_degraded = m.gauge("pollerd_meter_degraded", "1 while a meter is degraded", ("meter",))
        self._m_store_err = m.counter("pollerd_store_write_errors_total", "Failed store writes")

    # -- lifecycle -------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: letting exchanges in flight finish")
            self.stopping.set()

    async def run(self) -> int:
        cfg = self.config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = store = await Store.open(db_path(cfg, self.state_dir),
                                              commit_interval=cfg.store.commit_interval)
        lines = build_lines(cfg, self.runtime, self.metrics)
        drivers = {mc.name: build_driver(mc, lines[mc.line], self.runtime, self.metrics, self.clock, store)
                   for mc in cfg.meters if mc.enabled}
        runner = None
        try:
            if cfg.api.enabled:
                from .api import make_app, start_api
                async def raw(name: str, command: str) -> dict:  # type: ignore[type-arg]
                    drv = drivers.get(name)
                    if drv is None or not hasattr(drv, "raw"):
                        raise ValueError(f"meter {name} does not take raw frames")
                    return await drv.raw(command)  # type: ignore[no-any-return]

                app = make_app(runtime=self.runtime, store=store, metrics=self.metrics, clock=self.clock,
                               tokens=cfg.api.tokens, raw=raw)
                runner, self.api_port = await start_api(app, cfg.api.host, cfg.api.port)
                log.info("API listening on http://%s:%d", cfg.api.host, self.api_port)
            async with TaskGroup() as tg:
                background = [tg.create_task(self._forward(s), name=f"sink:{s.name}") for s in cfg.sinks]
                background.append(tg.create_task(self._housekeeping(), name="housekeeping"))
                if cfg.store.max_size is not None or cfg.store.max_age is not None:
                    from .quota import StoreQuota
                    quota = StoreQuota(store, cfg.store, [s.name for s in cfg.sinks], self.metrics, self.runtime,
                                       clock=self.clock)
                    background.append(tg.create_task(quota.run(), name="store-quota"))
                meters = [tg.create_task(self._meter_loop(mc, drivers[mc.name]), name=f"meter:{mc.name}")
                          for mc in cfg.meters if mc.enabled]
                log.info("pollerd started: %d meters on %d lines, %d sinks", len(meters), len(lines),
                         len(cfg.sinks))
                self.ready.set()
                await self.stopping.wait()
                for ln in lines.values():
                    ln.accepting = False
                if meters:
                    done, pending = await asyncio.wait(meters, timeout=STOP_GRACE)
                    for t in pending:
                        t.cancel()
                for ln in lines.values():
                    ln.accepting = True  # only the session-close requests below go out now
                await asyncio.gather(*(self._close_driver(d) for d in drivers.values()))
                for ln in lines.values():
                    ln.accepting = False
                await self._drain_sinks()
                for t in background:
                    t.cancel()
        finally:
            if runner is not None:
                await runner.cleanup()
            for ln in lines.values():
                await ln.link.close()
            await store.close()
        log.info("pollerd stopped")
        return 0

    async def _drain_sinks(self) -> None:
        """Give sinks a short moment to deliver the last cycle's readings; whatever is left is sent after
        the next start (the cursors are durable), so this only shortens upstream's wait."""
        await self.store.flush()
        deadline = self.clock() + DRAIN_GRACE
        last = await self.store.last_seq()
        while self.config.sinks and self.clock() < deadline:
            cursors = [await self.store.cursor(s.name) for s in self.config.sinks]
            if min(cursors) >= last:
                return
            await asyncio.sleep(0.1)

    async def _close_driver(self, drv: Driver) -> None:
        try:
            async with timeout(2.0):
                await drv.close()
        except (TimeoutError, asyncio.TimeoutError, PollerdError):
            pass

    async def _sleep_until(self, t: float) -> bool:
        """Sleep until wall-clock time t (re-checking the clock, which may be stepped by NTP at boot).
        Returns False if the daemon is stopping."""
        while True:
            delay = t - self.clock()
            if delay <= 0:
                return not self.stopping.is_set()
            try:
                await asyncio.wait_for(self.stopping.wait(), min(delay, 60.0))
                return False
            except (TimeoutError, asyncio.TimeoutError):
                continue

    # -- per meter -------------------------------------------------------------------------------------

    async def _meter_loop(self, mc: MeterConfig, drv: Driver) -> None:
        sched = Schedule.from_meter(mc, self.config.gateway.spread)
        st = self.runtime.meters[mc.name]
        t = next_run(sched, self.clock())
        skip = 0  # cycles still to skip while degraded
        while True:
            st.next_run = t
            if not await self._sleep_until(t):
                return
            self.lateness.append(self.clock() - t)
            if st.degraded and skip > 0:
                skip -= 1
            else:
                await self._cycle(mc, drv, st)
                if st.degraded:
                    skip = min(DEGRADED_MAX_SKIP, 2 ** max(0, st.consecutive_failures - DEGRADED_AFTER)) - 1
            end = self.clock()
            nxt = next_run(sched, t)
            missed = 0
            while nxt <= end and missed < 100_000:
                missed += 1
                nxt = next_run(sched, nxt)
            if missed:
                st.skipped += missed
                self._m_skipped.inc(missed, meter=mc.name)
                log.warning("%s: cycle overran its period; %d scheduled cycle(s) skipped", mc.name, missed)
            t = nxt

    async def _cycle(self, mc: MeterConfig, drv: Driver, st: MeterState) -> PollResult | None:
        started = self.clock()
        if st.degraded and not await drv.probe():
            self._record(mc, st, PollResult((), (), False, st.last_error or "no answer"), started)
            return None
        try:
            result = await drv.poll(int(started))
        except Exception as exc:  # a driver bug must not take the other meters down with it
            log.exception("%s: internal error in the %s driver", mc.name, mc.protocol)
            result = PollResult((), (), False, f"internal error: {type(exc).__name__}: {exc}")
        if result.readings or result.events or result.state:
            try:
                await self.store.write(result.readings, result.events)
                for key, value in result.state:
                    await self.store.set_state(key, value)
                self.runtime.store_ok, self.runtime.store_error = True, None
            except StoreError as exc:
                self.runtime.store_ok, self.runtime.store_error = False, str(exc)
                self._m_store_err.inc()
                log.error("store: cannot write %d readings of %s: %s", len(result.readings), mc.name, exc)
        self._record(mc, st, result, started)
        return result

    def _record(self, mc: MeterConfig, st: MeterState, result: PollResult, started: float) -> None:
        st.polls += 1
        st.last_poll = started
        st.readings += len(result.readings)
        if result.readings:
            self._m_readings.inc(len(result.readings), meter=mc.name)
        if result.ok:
            self._m_polls.inc(meter=mc.name, outcome="ok")
            st.last_ok = started
            if st.degraded:
                log.info("%s: answering again; leaving degraded mode", mc.name)
            st.consecutive_failures, st.degraded, st.degraded_reason, st.last_error = 0, False, None, None
            self._m_degraded.set(0, meter=mc.name)
            return
        self._m_polls.inc(meter=mc.name, outcome="partial" if result.answered else "failed")
        if result.answered and result.readings:
            st.last_ok = started
        st.failures += 1
        st.consecutive_failures += 1
        if self.stopping.is_set():
            log.info("%s: cycle cut short by shutdown: %s", mc.name, result.error)
        elif st.last_error != result.error:
            log.warning("%s: poll %s: %s", mc.name, "incomplete" if result.answered else "failed", result.error)
        st.last_error = result.error
        if not st.degraded and st.consecutive_failures >= DEGRADED_AFTER:
            st.degraded = True
            st.degraded_reason = f"{st.consecutive_failures} failed cycles: {result.error}"
            self._m_degraded.set(1, meter=mc.name)
            log.warning("%s: degraded after %d failed cycles; probing with backoff", mc.name,
                        st.consecutive_failures)

    # -- sinks and housekeeping ------------------------------------------------------------------------

    async def _forward(self, sink_cfg) -> None:  # type: ignore[no-untyped-def]
        from .push import make_client
        from .push.forwarder import Forwarder
        st = self.runtime.sinks[sink_cfg.name] = SinkState(sink_cfg.name, sink_cfg.type)
        client = make_client(sink_cfg, self.config.gateway.name)
        await client.connect()
        try:
            await Forwarder(self.store, client, sink_cfg, st, self.metrics, clock=self.clock).run()
        finally:
            await client.close()

    async def _housekeeping(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            if self.lateness:
                s = sorted(self.lateness)
                for q in (0.5, 0.9, 0.99):
                    self._m_late.set(s[min(len(s) - 1, int(q * len(s)))], quantile=q)
            if self.clock() - last_prune >= PRUNE_EVERY:
                last_prune = self.clock()
                try:
                    n = await self.store.prune(keep=self.config.store.keep,
                                               sinks=[s.name for s in self.config.sinks], now=self.clock())
                    if n:
                        log.info("store: pruned %d readings older than the retention", n)
                except StoreError as exc:
                    log.error("store: prune failed: %s", exc)


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
