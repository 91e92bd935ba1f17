"""Wiring: lines, drivers, per-meter schedules, the store, sinks and the local API under one TaskGroup."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .compat import TaskGroup, timeout
from .config import Config, MeterConfig, SinkConfig, load_config
from .drivers.base import Driver, DriverContext, PollResult
from .drivers.registry import make_driver
from .errors import ConfigError, MeterBusy, PollerdError, StoreError
from .line import Line, line_priority
from .metrics import Registry
from .notify import Notifier, run_notifier
from .push.plugins import load_entry_points
from .push.registry import SinkRegistry, SinkSpec, builtin_sinks
from .schedule import Schedule, next_run
from .state import LineState, MeterState, Runtime, SinkState
from .store import Store
from .store.quota import StoreQuota

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
# A sleep until a scheduled run wakes at least this often to look at the wall clock again (NTP may step it).
CLOCK_RECHECK = 60.0


def _sink_spec(sinks: SinkRegistry, sink_type: str) -> SinkSpec:
    if sink_type not in sinks:
        load_entry_points(sinks)   # a plugin type the config was loaded with elsewhere (a test, `pollerd run`)
    return sinks[sink_type]


def _cursor_sinks(config: Config, sinks: SinkRegistry) -> list[str]:
    """Sinks that deliver through an outbox cursor (a document sink keeps none)."""
    return [s.name for s in config.sinks if _sink_spec(sinks, s.type).kind == "batch"]


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


def build_driver(mc: MeterConfig, line: Line | None, runtime: Runtime, metrics: Registry,
                 clock: Callable[[], float] = time.time, store: Store | None = None,
                 state_dir: Path | None = None) -> Driver:
    st = runtime.meters.setdefault(mc.name, meter_state(mc))
    return make_driver(DriverContext(mc, line, st, metrics, clock, logging.getLogger("pollerd.driver"),
                                     store, state_dir))


@dataclass(eq=False)
class MeterRun:
    """One running meter: its driver (which holds the protocol session), its schedule task, the event that
    asks that task to stop after the cycle in flight, and the lock that keeps one cycle at a time (a
    scheduled cycle and a poll-now request never interleave on one meter)."""

    cfg: MeterConfig
    driver: Driver
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    state: MeterState | None = None


class ReloadRefused(PollerdError):
    """The new config is valid but cannot be applied to a running daemon (e.g. another store path)."""


def _same(a: object, b: object) -> bool:
    """Config equality ignoring where in the file a table sits (moving a table is not a change)."""
    return replace(a, line_no=None) == replace(b, line_no=None)  # type: ignore[type-var]


@dataclass(eq=False)
class Daemon:
    config: Config
    state_dir: Path
    clock: Callable[[], float] = time.time
    metrics: Registry = field(default_factory=Registry)
    lateness: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8192))
    config_path: Path | None = None   # what a reload re-reads; default: the file the config came from
    sinks: SinkRegistry = field(default_factory=builtin_sinks)   # sink types, plugins included, by kind

    def __post_init__(self) -> None:
        self.runtime = Runtime(self.config.gateway.name, started=self.clock())
        self.stopping = asyncio.Event()
        self.api_port: int | None = None
        self.ready = asyncio.Event()
        self.notifier: Notifier | None = None   # set by the notify task while systemd listens
        self._quota: StoreQuota | None = None   # set in run(); apply() hands it the reloaded limits
        if self.config_path is None and self.config.source:
            self.config_path = Path(self.config.source)
        # The supervisor's state: everything below is keyed by name so that one meter, line or sink can be
        # started, stopped or replaced without touching the others (reload, and future sink/meter kinds).
        self.lines: dict[str, Line] = {}
        self.meters: dict[str, MeterRun] = {}
        self.sink_tasks: dict[str, asyncio.Task[None]] = {}
        self._sink_cfgs: dict[str, SinkConfig] = {}
        self._tg: TaskGroup | None = None
        self._poll_tasks: set[asyncio.Task[dict[str, object]]] = set()   # poll-now cycles in flight
        self._app = None
        self._reload_wanted = asyncio.Event()
        self._reload_lock = asyncio.Lock()
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
        self._m_reloads = m.counter("pollerd_reloads_total", "Config reloads by outcome (ok, failed, refused)",
                                    ("outcome",))

    @property
    def meter_tasks(self) -> dict[str, asyncio.Task[None]]:
        return {name: run.task for name, run in self.meters.items() if run.task is not None}

    # -- lifecycle -------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: letting exchanges in flight finish")
            self.stopping.set()

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file; the supervisor applies it between other work, one at a time."""
        log.info("reload requested")
        self._reload_wanted.set()

    async def run(self) -> int:
        cfg = self.config
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {str(self.state_dir)!r}: {exc}") from exc
        self.store = store = await Store.open(db_path(cfg, self.state_dir),
                                              commit_interval=cfg.store.commit_interval)
        self.lines = build_lines(cfg, self.runtime, self.metrics)
        self._serving_api = (cfg.api.enabled, cfg.api.host, cfg.api.port)
        runner = None
        try:
            if cfg.api.enabled:
                from .api import make_app, start_api
                app = self._app = make_app(runtime=self.runtime, store=store, metrics=self.metrics,
                                           clock=self.clock, tokens=cfg.api.tokens, raw=self._raw,
                                           poll=self.poll_now, meter_config=self._meter_config)
                try:
                    runner, self.api_port = await start_api(app, cfg.api.host, cfg.api.port)
                except OSError as exc:  # the port is taken (another service, a second pollerd), no such address
                    raise PollerdError(f"api: cannot listen on {cfg.api.host}:{cfg.api.port} ([api] listen): "
                                       f"{exc.strerror or exc}") from exc
                log.info("API listening on http://%s:%d", cfg.api.host, self.api_port)
            async with TaskGroup() as tg:
                self._tg = tg
                for s in cfg.sinks:
                    self.start_sink(s)
                housekeeping = tg.create_task(self._housekeeping(), name="housekeeping")
                # Always running (idle without limits), so a reload can switch max_size/max_age on. Document
                # sinks (sioi) keep no outbox cursor, so evictions are not losses counted against them.
                self._quota = StoreQuota(store, cfg.store, _cursor_sinks(cfg, self.sinks), self.metrics,
                                         self.runtime, clock=self.clock)
                quota_task = tg.create_task(self._quota.run(), name="store-quota")
                # READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 to systemd (a no-op without $NOTIFY_SOCKET).
                notify_task = tg.create_task(run_notifier(self), name="notify")
                for mc in cfg.meters:
                    if mc.enabled:
                        self.start_meter(mc)
                # Open every line in use now: a missing serial device or a dead converter is in /health at
                # once, not at its meters' first cycle (hours away for daily meters). In the background: a
                # hanging connect must not hold READY=1.
                probes = [tg.create_task(self.lines[name].probe(), name=f"probe:{name}")
                          for name in sorted({m.line for m in cfg.meters if m.enabled and m.line} & self.lines.keys())]
                log.info("pollerd started: %d meters on %d lines, %d sinks", len(self.meters),
                         len(self.lines), len(cfg.sinks))
                self.ready.set()
                await self._supervise()
                await self._shutdown()
                housekeeping.cancel()
                notify_task.cancel()
                quota_task.cancel()
                for probe in probes:
                    probe.cancel()
        finally:
            self._tg = None
            if runner is not None:
                await runner.cleanup()
            for ln in self.lines.values():
                await ln.link.close()
            await store.close()
        log.info("pollerd stopped")
        return 0

    async def _supervise(self) -> None:
        """Wait for a stop, applying reloads as they are asked for (one at a time, in this task, so a
        reload never races another reload or the shutdown)."""
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                wanted = asyncio.ensure_future(self._reload_wanted.wait())
                try:
                    await asyncio.wait((stop, wanted), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    wanted.cancel()
                if self._reload_wanted.is_set() and not self.stopping.is_set():
                    self._reload_wanted.clear()
                    await self.reload()
        finally:
            stop.cancel()

    async def _shutdown(self) -> None:
        lines = list(self.lines.values())
        for ln in lines:
            ln.accepting = False
        runs = list(self.meters.values())
        for run in runs:
            run.stop.set()
        # Poll-now cycles too: closing a session (a cloud driver's HTTP session) under a running cycle
        # would cut it short mid-request.
        tasks = [run.task for run in runs if run.task is not None] + list(self._poll_tasks)
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
        for ln in lines:
            ln.accepting = True  # only the session-close requests below go out now
        await asyncio.gather(*(self._close_driver(run.driver) for run in runs))
        for ln in lines:
            ln.accepting = False
        await self._drain_sinks()
        for name in list(self.sink_tasks):
            await self.stop_sink(name)

    # -- one meter, one sink ---------------------------------------------------------------------------

    def start_meter(self, mc: MeterConfig, state: MeterState | None = None) -> MeterRun:
        """Build the meter's driver on its (existing) line and start its schedule task."""
        assert self._tg is not None, "start_meter needs a running daemon"
        if state is not None:
            self.runtime.meters[mc.name] = state
        # A cloud source has no line (None here); its driver talks to its account's endpoint itself.
        drv = build_driver(mc, self.lines.get(mc.line), self.runtime, self.metrics,  # type: ignore[arg-type]
                           self.clock, self.store, self.state_dir)
        run = self.meters[mc.name] = MeterRun(mc, drv, state=self.runtime.meters[mc.name])
        run.task = self._tg.create_task(self._meter_loop(mc, drv, run), name=f"meter:{mc.name}")
        return run

    async def stop_meter(self, name: str, *, forget: bool = True) -> None:
        """Stop one meter gracefully: the exchange in flight finishes, the next one of this meter is refused
        by its line (so the cycle ends at once), then its session is closed. ``forget`` drops its state."""
        run = self.meters.pop(name, None)
        if run is None:
            return
        line = self.lines.get(run.cfg.line)
        run.stop.set()
        if line is not None:
            line.refused.add(name)
        try:
            if run.task is not None:
                done, pending = await asyncio.wait({run.task}, timeout=STOP_GRACE)
                if pending:
                    run.task.cancel()
                    await asyncio.wait(pending)
            # A poll-now cycle may still hold the meter: wait for it (it ends at its next exchange).
            async with run.lock:
                pass
        finally:
            if line is not None:
                line.refused.discard(name)
        await self._close_driver(run.driver)
        if forget:
            self.runtime.meters.pop(name, None)
            self._m_degraded.set(0, meter=name)

    def start_sink(self, sink_cfg: SinkConfig) -> asyncio.Task[None]:
        assert self._tg is not None, "start_sink needs a running daemon"
        self._sink_cfgs[sink_cfg.name] = sink_cfg
        task = self.sink_tasks[sink_cfg.name] = self._tg.create_task(self._forward(sink_cfg),
                                                                     name=f"sink:{sink_cfg.name}")
        return task

    async def stop_sink(self, name: str, *, forget: bool = False) -> None:
        """Stop one forwarder. Cancelling is safe at any point: the cursor moves only after upstream
        confirmed a batch, so at most that batch is sent again by the next forwarder."""
        task = self.sink_tasks.pop(name, None)
        self._sink_cfgs.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        if forget:
            self.runtime.sinks.pop(name, None)

    # -- reload ----------------------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the config file and apply it. An invalid or inapplicable file leaves the running config
        in place; the reason is logged and shown in /health warnings until a reload succeeds."""
        async with self._reload_lock:
            notifier = self.notifier
            if notifier is not None:
                # systemd's reload protocol: RELOADING=1 with the monotonic time, then READY=1 once applied
                # (also after a failed reload: the previous config keeps running).
                notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                              "STATUS=reloading the configuration")
            try:
                return await self._reload()
            finally:
                if notifier is not None:
                    from .notify import status_line
                    notifier.send("READY=1", f"STATUS={status_line(self)}")

    async def _reload(self) -> bool:
        path = self.config_path
        try:
            if path is None:
                raise ConfigError("the daemon was not started from a file; nothing to re-read")
            new = await asyncio.to_thread(load_config, path, sinks=self.sinks)
            summary = await self.apply(new)
        except ReloadRefused as exc:
            return self._reload_failed("refused", str(exc))
        except ConfigError as exc:
            return self._reload_failed("failed", str(exc))
        except Exception as exc:  # a bug while applying: keep what runs running, and say so loudly
            log.exception("reload of %s failed while applying it", path)
            self._m_reloads.inc(outcome="error")
            self.runtime.warnings["reload"] = (
                f"reload failed while applying it ({type(exc).__name__}: {exc}); part of the new config may "
                f"be in effect: restart pollerd to run the file as it is")
            return False
        self.runtime.warnings.pop("reload", None)
        self._m_reloads.inc(outcome="ok")
        log.info("reloaded %s: %s", path, summary or "no changes")
        return True

    def _reload_failed(self, outcome: str, why: str) -> bool:
        self._m_reloads.inc(outcome=outcome)
        self.runtime.warnings["reload"] = f"reload {outcome}, still running the previous config: {why}"
        log.error("reload %s, keeping the running config: %s", outcome, why)
        return False

    async def apply(self, new: Config) -> str:
        """Apply the difference between the running config and ``new``: unchanged meters keep their driver,
        task, session and state; changed and removed meters stop gracefully; a changed line restarts with
        every meter on it; changed sinks restart their forwarder (the cursor is in the store). Returns a
        short summary of what changed."""
        old = self.config
        if old.store.path != new.store.path:
            raise ReloadRefused(f"store.path changed ({old.store.path or 'default'} -> "
                                f"{new.store.path or 'default'}); that needs a restart")
        old_lines = {ln.name: ln for ln in old.lines}
        new_lines = {ln.name: ln for ln in new.lines}
        changed_lines = {n for n in old_lines.keys() & new_lines.keys() if not _same(old_lines[n], new_lines[n])}
        gone_lines = old_lines.keys() - new_lines.keys()
        old_m = {m.name: m for m in old.meters if m.enabled and m.name in self.meters}
        new_m = {m.name: m for m in new.meters if m.enabled}
        spread_changed = old.gateway.spread != new.gateway.spread

        def changed(name: str) -> bool:
            a, b = old_m[name], new_m[name]
            return (not _same(a, b) or b.line in changed_lines
                    or (spread_changed and b.period_type != "interval"))  # calendar slots use spread

        removed = old_m.keys() - new_m.keys()
        for n in set(self.runtime.meters) - self.meters.keys() - new_m.keys():
            del self.runtime.meters[n]  # not started by an earlier reload, and no longer in the file
        restarted = {n for n in old_m.keys() & new_m.keys() if changed(n)}
        added = new_m.keys() - old_m.keys()
        # Meters first (their sessions close over the old lines), then the lines.
        kept_state = {n: self.runtime.meters.get(n) for n in restarted}
        await asyncio.gather(*(self.stop_meter(n) for n in removed | restarted))
        for n in gone_lines | changed_lines:
            ln = self.lines.pop(n, None)
            self.runtime.lines.pop(n, None)
            if ln is not None:
                ln.accepting = False
                await ln.link.close()
        for n in (new_lines.keys() - old_lines.keys()) | changed_lines:
            lc = new_lines[n]
            st = self.runtime.lines[n] = LineState(lc.name, lc.type)
            self.lines[n] = Line(lc, st, self.metrics)
        self.config = new
        self.store.commit_interval = new.store.commit_interval
        if self._quota is not None:
            self._quota.reconfigure(new.store, _cursor_sinks(new, self.sinks))
        self.runtime.gateway = new.gateway.name
        not_started: set[str] = set()
        for n in sorted(added | restarted):
            st = meter_state(new_m[n])
            st.added = self.clock()
            old_st = kept_state.get(n)
            if old_st is not None:  # the meter is the same device: its history stays with it
                st.last_ok, st.last_poll, st.polls, st.failures, st.readings = (
                    old_st.last_ok, old_st.last_poll, old_st.polls, old_st.failures, old_st.readings)
            try:
                self.start_meter(new_m[n], st)
            except Exception as exc:  # one driver that cannot be built must not stop the others (or the daemon)
                log.exception("reload: meter %s not started", n, extra={"meter": n})
                # Its state stays, with an alarm (a /health reason); the next reload tries it again.
                st.alarms["start"] = f"not started after a reload: {type(exc).__name__}: {exc}"
                not_started.add(n)
        # Sinks: the gateway name is part of every payload, so renaming the gateway restarts them all.
        old_s = dict(self._sink_cfgs)
        new_s = {s.name: s for s in new.sinks}
        regateway = old.gateway.name != new.gateway.name
        s_removed = old_s.keys() - new_s.keys()
        s_changed = {n for n in old_s.keys() & new_s.keys() if regateway or not _same(old_s[n], new_s[n])}
        s_added = new_s.keys() - old_s.keys()
        for n in s_removed:
            await self.stop_sink(n, forget=True)
        for n in s_changed:
            await self.stop_sink(n)
        for n in sorted(s_added | s_changed):
            self.start_sink(new_s[n])
        self._apply_api(old, new)
        parts = [f"{what} {', '.join(sorted(names))}" for what, names in (
            ("meters added:", added), ("meters removed:", removed), ("meters restarted:", restarted),
            ("lines restarted:", changed_lines), ("lines removed:", gone_lines),
            ("sinks added:", s_added), ("sinks removed:", s_removed), ("sinks restarted:", s_changed),
            ("meters NOT started (see /health):", not_started)) if names]
        return "; ".join(parts)

    def _apply_api(self, old: Config, new: Config) -> None:
        if self._app is not None:
            from .api import set_tokens
            set_tokens(self._app, new.api.tokens)
        # Compared with what is being served, not with the previous file: reverting the change clears it.
        if self._serving_api != (new.api.enabled, new.api.host, new.api.port):
            msg = (f"api: listen/enabled changed to {new.api.listen} (enabled={str(new.api.enabled).lower()}); "
                   f"still serving the old address until pollerd restarts")
            log.warning("%s", msg)
            self.runtime.warnings["api"] = msg
        else:
            self.runtime.warnings.pop("api", None)

    # -- poll now and raw frames (the API's write endpoints) -------------------------------------------

    async def poll_now(self, name: str) -> dict[str, object]:
        """Run one cycle of meter ``name`` now, ahead of scheduled requests on its line, and store its
        readings as usual. Raises KeyError for an unknown meter and MeterBusy while a cycle of that meter
        is already running (the caller gets 409 and may retry: waiting could hold an HTTP request for
        minutes behind a profile backfill)."""
        run = self.meters.get(name)
        if run is None:
            raise KeyError(name)
        if self.stopping.is_set() or run.stop.is_set():
            raise MeterBusy(f"meter {name} is stopping")
        if run.lock.locked():
            raise MeterBusy(f"a cycle of meter {name} is running; try again when it has finished")
        assert self._tg is not None
        # Taken here, before any await (an uncontended acquire does not suspend), and handed to the task: had
        # the task taken it, a second request arriving before the task first ran would also pass the check
        # above and then wait behind the first cycle instead of getting its 409.
        await run.lock.acquire()
        try:
            # In its own task so that a client hanging up does not cut the cycle (and its store write) short.
            task = self._tg.create_task(self._poll_now(run), name=f"poll-now:{name}")
        except BaseException:
            run.lock.release()
            raise
        self._poll_tasks.add(task)  # shutdown waits for it before closing the meter's session
        task.add_done_callback(self._poll_tasks.discard)
        return await asyncio.shield(task)

    async def _poll_now(self, run: MeterRun) -> dict[str, object]:
        """One cycle of ``run`` under its lock, which poll_now() has already taken for this task."""
        line_priority.set(True)  # this task's exchanges go before scheduled ones (a task-local setting)
        mc = run.cfg
        st = run.state or self.runtime.meters[mc.name]
        try:
            started = self.clock()
            result = await self._cycle(mc, run.driver, st)
            ended = self.clock()
        finally:
            run.lock.release()
        if result is None:  # degraded and the probe went unanswered
            return {"meter": mc.name, "ok": False, "answered": False, "error": st.last_error or "no answer",
                    "readings": 0, "events": 0, "started": started, "duration": round(ended - started, 3)}
        return {"meter": mc.name, "ok": result.ok, "answered": result.answered, "error": result.error,
                "readings": len(result.readings), "events": len(result.events), "started": started,
                "duration": round(ended - started, 3)}

    def _meter_config(self, name: str) -> MeterConfig | None:
        """The meter's current configuration (after reloads), for the status pages."""
        return next((mc for mc in self.config.meters if mc.name == name), None)

    async def _raw(self, name: str, command: str) -> dict:  # type: ignore[type-arg]
        run = self.meters.get(name)
        drv = run.driver if run is not None else None
        if drv is None or not hasattr(drv, "raw"):
            raise ValueError(f"meter {name} does not take raw frames")
        return await drv.raw(command)  # type: ignore[no-any-return]

    async def _drain_sinks(self) -> None:
        """Give sinks a short moment to deliver the last cycle's readings; whatever is left is sent after
        the next start (the cursors are durable), so this only shortens upstream's wait. A failing store
        (disk full, I/O error) skips the drain: the shutdown must still stop the sinks and exit cleanly."""
        try:
            await self.store.flush()
            deadline = self.clock() + DRAIN_GRACE
            last = await self.store.last_seq()
            while self.config.sinks and self.clock() < deadline:
                cursors = [await self.store.cursor(s.name) for s in self.config.sinks
                           if s.name in self.sink_tasks and _sink_spec(self.sinks, s.type).kind == "batch"]
                if not cursors:
                    return
                if min(cursors) >= last:
                    return
                await asyncio.sleep(0.1)
        except StoreError as exc:
            log.error("store: %s; not waiting for the sinks to drain", exc)

    async def _close_driver(self, drv: Driver) -> None:
        try:
            async with timeout(2.0):
                await drv.close()
        except (TimeoutError, asyncio.TimeoutError, PollerdError):
            pass
        except Exception:  # a driver bug here would otherwise abort a reload half-way or the shutdown
            log.exception("internal error closing a %s session", type(drv).__name__)

    async def _sleep_until_run(self, sched: Schedule, t: float, stop: asyncio.Event,
                               st: MeterState) -> float | None:
        """Sleep until the scheduled run ``t``; return the run that is due, or None once ``stop`` is set.

        When the wall clock is stepped back meanwhile, ``t`` was planned by a clock that was ahead: waiting
        for it would leave the meter silent for as long as the step (a year for a gateway that booted with a
        bad RTC). The first slot after the clock as it is now comes first then. Without a step this is
        ``t`` itself: no slot lies between the one ``t`` was planned from and ``t``."""
        while True:
            now = self.clock()
            earlier = next_run(sched, now)
            if earlier < t:
                log.warning("%s: the clock went back; next run at %s instead of %s", st.name,
                            _iso(earlier), _iso(t), extra={"meter": st.name})
                t = st.next_run = earlier
            delay = t - now
            if delay <= 0:
                return None if stop.is_set() else t
            if await self._wait(stop, min(delay, CLOCK_RECHECK)):
                return None

    async def _wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for ``event``; True when it is set. The one place the daemon's
        schedule sleeps, so tests can run it on a fake clock."""
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except (TimeoutError, asyncio.TimeoutError):
            return False

    # -- per meter -------------------------------------------------------------------------------------

    async def _meter_loop(self, mc: MeterConfig, drv: Driver, run: MeterRun | None = None) -> None:
        sched = Schedule.from_meter(mc, self.config.gateway.spread)
        # The run is passed in: by the time this task first runs, a reload may already have replaced the
        # entry of the same name in self.meters.
        run = run or self.meters.get(mc.name) or MeterRun(mc, drv)
        st = run.state or self.runtime.meters[mc.name]
        t = next_run(sched, self.clock())
        skip = 0  # cycles still to skip while degraded
        while True:
            st.next_run = t
            due = await self._sleep_until_run(sched, t, run.stop, st)
            if due is None:
                return
            t = due
            self.lateness.append(self.clock() - t)
            if st.degraded and skip > 0:
                skip -= 1
            else:
                async with run.lock:
                    await self._cycle(mc, drv, st)
                if st.degraded:
                    skip = min(DEGRADED_MAX_SKIP, 2 ** max(0, st.consecutive_failures - DEGRADED_AFTER)) - 1
            end = self.clock()
            nxt = next_run(sched, t)
            missed = 0
            while nxt <= end and missed < 100_000:
                missed += 1
                nxt = next_run(sched, nxt)
            if nxt <= end:
                # The clock jumped far ahead (an RTC-less gateway booting in 1970, then NTP): go on from now
                # rather than running cycle after cycle for slots that are all in the past.
                nxt = next_run(sched, end)
            if missed:
                st.skipped += missed
                self._m_skipped.inc(missed, meter=mc.name)
                log.warning("%s: cycle overran its period; %d scheduled cycle(s) skipped", mc.name, missed,
                            extra={"meter": mc.name, "line": mc.line})
            t = nxt

    async def _cycle(self, mc: MeterConfig, drv: Driver, st: MeterState) -> PollResult | None:
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
        if result.readings or result.events or result.state:
            try:
                await self.store.write(result.readings, result.events)
                for key, value in result.state:
                    await self.store.set_state(key, value)
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
                log.info("%s: answering again; leaving degraded mode", mc.name,
                         extra={"meter": mc.name, "line": mc.line})
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
            log.warning("%s: poll %s: %s", mc.name, "incomplete" if result.answered else "failed", result.error,
                        extra={"meter": mc.name, "line": mc.line})
        st.last_error = result.error
        if not st.degraded and st.consecutive_failures >= DEGRADED_AFTER:
            st.degraded = True
            st.degraded_reason = f"{st.consecutive_failures} failed cycles: {result.error}"
            self._m_degraded.set(1, meter=mc.name)
            log.warning("%s: degraded after %d failed cycles; probing with backoff", mc.name,
                        st.consecutive_failures, extra={"meter": mc.name, "line": mc.line})

    # -- sinks and housekeeping ------------------------------------------------------------------------

    async def _forward(self, sink_cfg) -> None:  # type: ignore[no-untyped-def]
        from .push import make_client
        from .push.forwarder import Forwarder
        st = self.runtime.sinks[sink_cfg.name] = SinkState(sink_cfg.name, sink_cfg.type)
        spec = _sink_spec(self.sinks, sink_cfg.type)
        if spec.kind == "document":  # a scheduled document sink, not a batch client: no outbox cursor
            assert spec.runner is not None
            await spec.runner(self.store, sink_cfg, self.config.gateway.name, st, self.metrics,
                              clock=self.clock).run()
            return
        client = make_client(sink_cfg, self.config.gateway.name, self.sinks)
        try:  # the forwarder connects (with retries); close even if it never did
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
                    # A document sink has no cursor: for its readings, keep alone decides.
                    n = await self.store.prune(keep=self.config.store.keep,
                                               sinks=_cursor_sinks(self.config, self.sinks),
                                               now=self.clock())
                    if n:
                        log.info("store: pruned %d readings older than the retention", n)
                except StoreError as exc:
                    log.error("store: prune failed: %s", exc)


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
