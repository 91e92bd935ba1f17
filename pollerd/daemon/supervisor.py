"""The supervisor: lines, meters, the store, sinks and the local API under one TaskGroup; start and stop
one meter or sink; apply a reload; poll-now and raw frames for the API's write endpoints."""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..compat import TaskGroup, timeout
from ..config import Config, MeterConfig, SinkConfig, load_config
from ..config.source import store_path_problem
from ..drivers.base import Driver, RawDriver
from ..errors import ConfigError, MeterBusy, PollerdError, StoreError
from ..line import Line, line_priority
from ..metrics import Registry
from ..push.registry import SinkRegistry, builtin_sinks
from ..state import LineState, MeterState, Runtime, SinkState
from ..store import Store
from ..store.guard import START_CHECK_SECONDS
from ..store.quota import StoreQuota
from .gcpolicy import GcPolicy
from .lock import StateLock
from .notify import Notifier, run_notifier, status_line
from .reload import ReloadRefused, plan_reload
from .runner import MeterRun, MeterRunner, bare_task
from .wiring import build_driver, build_lines, cursor_sinks, db_path, meter_state, sink_spec

log = logging.getLogger("pollerd.daemon")

# Opening the store may migrate it, and a migration that rebuilds the readings (schema 6) takes seconds per million
# readings on the dev machine, minutes on a slow SD card: longer than the unit's TimeoutStartSec (120 s). systemd
# would kill the start, the transaction would roll back, and every restart would begin the migration again. While
# the open runs, pollerd asks systemd for more time (EXTEND_TIMEOUT_USEC: a window from now in which the next word
# must come; it never shortens TimeoutStartSec).
OPEN_EXTEND_EVERY = 20.0
_OPEN_EXTEND_USEC = 60_000_000


async def _extend_start_while_opening(notifier: Notifier) -> None:
    while True:
        await asyncio.sleep(OPEN_EXTEND_EVERY)
        notifier.send(f"EXTEND_TIMEOUT_USEC={_OPEN_EXTEND_USEC}",
                      "STATUS=opening the store (a schema migration can take minutes)")

# How long shutdown waits for exchanges in flight before cancelling them.
STOP_GRACE = 10.0
DRAIN_GRACE = 3.0
PRUNE_EVERY = 3600.0
HOUSEKEEPING_EVERY = 10.0


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
        self.notifier: Notifier | None = None   # while systemd listens ($NOTIFY_SOCKET)
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
        self._app: Any = None   # the aiohttp application while the API serves
        self._reload_wanted = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._gc = GcPolicy()
        self._status: tuple[tuple[int, int], Mapping[str, str]] = ((-1, -1), MappingProxyType({}))
        self.runner = MeterRunner(self.runtime, self.metrics, self.clock, self.stopping, self.lateness,
                                  line_of=lambda name: self.lines.get(name),
                                  runs=lambda: self.meters.values(), spawn=self._spawn_turn)
        self._m_reloads = self.metrics.counter("pollerd_reloads_total", "Config reloads by outcome (ok, failed, refused)",
                                    ("outcome",))

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
        db = db_path(cfg, self.state_dir)
        problem = store_path_problem(str(db))  # [store] path was checked by the loader; the default was not
        if problem:
            raise ConfigError(problem, key="store.path")
        lock = StateLock.acquire(self.state_dir, db)  # before the store opens: a second daemon touches nothing
        opening = Notifier.from_env()
        extend = (asyncio.get_running_loop().create_task(_extend_start_while_opening(opening), name="notify:open")
                  if opening is not None else None)
        try:
            # The daemon's store checks itself at start (a corrupt one is moved aside) and watches its file.
            self.store = self.runner.store = store = await Store.open(
                db, commit_interval=cfg.store.commit_interval, check_seconds=START_CHECK_SECONDS, watch=True)
        except BaseException:
            lock.release()
            raise
        finally:
            if extend is not None:
                extend.cancel()
                await asyncio.wait([extend])
            if opening is not None:
                opening.close()
        self.lines = build_lines(cfg, self.runtime, self.metrics)
        self._serving_api = (cfg.api.enabled, cfg.api.host, cfg.api.port)
        api_runner = None
        try:
            if cfg.api.enabled:
                from ..api import make_app, start_api
                app = self._app = make_app(runtime=self.runtime, store=store, metrics=self.metrics,
                                           clock=self.clock, tokens=cfg.api.tokens,
                                           open_monitoring=cfg.api.open_monitoring, raw=self._raw,
                                           poll=self.poll_now, meter_config=self._meter_config)
                try:
                    api_runner, self.api_port = await start_api(app, cfg.api.host, cfg.api.port)
                except OSError as exc:  # the port is taken (another service, a second pollerd), no such address
                    raise PollerdError(f"api: cannot listen on {cfg.api.host}:{cfg.api.port} ([api] listen): "
                                       f"{exc.strerror or exc}") from exc
                log.info("API listening on http://%s:%d", cfg.api.host, self.api_port)
            async with TaskGroup() as tg:
                self._tg = tg
                for s in cfg.sinks:
                    self.start_sink(s)
                housekeeping = tg.create_task(self._housekeeping(), name="housekeeping")
                clock_watch = tg.create_task(self.runner.watch_clock(), name="clock-watch")
                # Always running (idle without limits), so a reload can switch max_size/max_age on. Document
                # sinks (sioi) keep no outbox cursor, so evictions are not losses counted against them.
                self._quota = StoreQuota(store, cfg.store, cursor_sinks(cfg, self.sinks), self.metrics,
                                         self.runtime, clock=self.clock)
                quota_task = tg.create_task(self._quota.run(), name="store-quota")
                # READY=1 / STATUS= / WATCHDOG=1 / STOPPING=1 to systemd, when it listens ($NOTIFY_SOCKET).
                self.notifier = Notifier.from_env()
                notify_task = (tg.create_task(run_notifier(self, self.notifier), name="notify")
                               if self.notifier is not None else None)
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
                # Everything built so far lives as long as the daemon: out of the cyclic GC's sight.
                self._gc.full()
                self.ready.set()
                await self._supervise()
                await self._shutdown()
                housekeeping.cancel()
                clock_watch.cancel()
                if notify_task is not None:
                    notify_task.cancel()
                quota_task.cancel()
                for probe in probes:
                    probe.cancel()
        finally:
            self._tg = None
            self.notifier = None
            if api_runner is not None:
                await api_runner.cleanup()
            for ln in self.lines.values():
                await ln.link.close()
            try:
                await store.close()
            finally:
                lock.release()
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
            _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
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
        """Build the meter's driver on its (existing) line and start its schedule."""
        assert self._tg is not None, "start_meter needs a running daemon"
        if state is not None:
            self.runtime.meters[mc.name] = state
        # A cloud source has no line (None here); its driver talks to its account's endpoint itself.
        drv = build_driver(mc, self.lines.get(mc.line), self.runtime, self.metrics,
                           self.clock, self.store, self.state_dir)
        run = self.meters[mc.name] = MeterRun(mc, drv, state=self.runtime.meters[mc.name])
        self.runner.start(run, self.config.gateway.spread)
        return run

    def _spawn_turn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        """A meter's turn runs in the daemon's TaskGroup: a bug there stops the daemon, never silently. (Outside
        a running daemon, where tests drive the runner, a bare task.)"""
        if self._tg is None:
            return bare_task(coro, name)
        try:
            return self._tg.create_task(coro, name=name)
        except RuntimeError:  # the TaskGroup is being torn down by another task's error: the daemon is ending
            coro.close()
            return None

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
                _done, pending = await asyncio.wait({run.task}, timeout=STOP_GRACE)
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
            self.runner.forget(name)

    def start_sink(self, sink_cfg: SinkConfig) -> asyncio.Task[None]:
        assert self._tg is not None, "start_sink needs a running daemon"
        self._sink_cfgs[sink_cfg.name] = sink_cfg
        task: asyncio.Task[None] = self._tg.create_task(self._forward(sink_cfg), name=f"sink:{sink_cfg.name}")
        self.sink_tasks[sink_cfg.name] = task
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
                    notifier.send("READY=1", f"STATUS={status_line(self.runtime)}")

    async def _reload(self) -> bool:
        path = self.config_path
        try:
            if path is None:
                raise ConfigError("the daemon was not started from a file; nothing to re-read")
            new = await asyncio.to_thread(load_config, path, sinks=self.sinks)
            summary = await self.apply(new)
            self._gc.full()  # stopped meters' drivers and sessions may be frozen cycles now
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
        plan = plan_reload(old, new, running=self.meters.keys(), states=self.runtime.meters.keys(),
                           sinks=self._sink_cfgs)
        new_lines = {ln.name: ln for ln in new.lines}
        new_m = {m.name: m for m in new.meters if m.enabled}
        new_s = {s.name: s for s in new.sinks}
        for n in plan.states_dropped:
            del self.runtime.meters[n]  # not started by an earlier reload, and no longer in the file
        # Meters first (their sessions close over the old lines), then the lines.
        kept_state = {n: self.runtime.meters.get(n) for n in plan.meters_restarted}
        await asyncio.gather(*(self.stop_meter(n) for n in plan.meters_removed | plan.meters_restarted))
        for n in plan.lines_removed | plan.lines_changed:
            ln = self.lines.pop(n, None)
            self.runtime.lines.pop(n, None)
            if ln is not None:
                ln.accepting = False
                await ln.link.close()
        for n in plan.lines_added | plan.lines_changed:
            lc = new_lines[n]
            st = self.runtime.lines[n] = LineState(lc.name, lc.type)
            self.lines[n] = Line(lc, st, self.metrics)
        self.config = new
        self.store.commit_interval = new.store.commit_interval
        if self._quota is not None:
            self._quota.reconfigure(new.store, cursor_sinks(new, self.sinks))
        self.runtime.gateway = new.gateway.name
        not_started: set[str] = set()
        for n in sorted(plan.meters_added | plan.meters_restarted):
            ms = meter_state(new_m[n])
            ms.added = self.clock()
            old_st = kept_state.get(n)
            if old_st is not None:  # the meter is the same device: its history stays with it
                ms.last_ok, ms.last_poll, ms.polls, ms.failures, ms.readings = (
                    old_st.last_ok, old_st.last_poll, old_st.polls, old_st.failures, old_st.readings)
            try:
                self.start_meter(new_m[n], ms)
            except Exception as exc:  # one driver that cannot be built must not stop the others (or the daemon)
                log.exception("reload: meter %s not started", n, extra={"meter": n})
                # Its state stays, with an alarm (a /health reason); the next reload tries it again.
                ms.alarms["start"] = f"not started after a reload: {type(exc).__name__}: {exc}"
                not_started.add(n)
        for n in plan.sinks_removed:
            await self.stop_sink(n, forget=True)
        for n in plan.sinks_restarted:
            await self.stop_sink(n)
        for n in sorted(plan.sinks_added | plan.sinks_restarted):
            self.start_sink(new_s[n])
        self._apply_api(old, new)
        return plan.summary(not_started)

    def _apply_api(self, old: Config, new: Config) -> None:
        if self._app is not None:
            from ..api import set_tokens
            set_tokens(self._app, new.api.tokens, new.api.open_monitoring)
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
            result = await self.runner.cycle(mc, run.driver, st)
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

    async def _raw(self, name: str, command: str) -> dict[str, object]:
        run = self.meters.get(name)
        drv = run.driver if run is not None else None
        if not isinstance(drv, RawDriver):  # None too: an unknown meter
            raise ValueError(f"meter {name} does not take raw frames")
        return await drv.raw(command)

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
                           if s.name in self.sink_tasks and sink_spec(self.sinks, s.type).kind == "batch"]
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

    # -- sinks and housekeeping ------------------------------------------------------------------------

    async def _forward(self, sink_cfg: SinkConfig) -> None:
        from ..push import make_client
        from ..push.forwarder import Forwarder
        st = self.runtime.sinks[sink_cfg.name] = SinkState(sink_cfg.name, sink_cfg.type)
        spec = sink_spec(self.sinks, sink_cfg.type)
        if spec.kind == "document":  # a scheduled document sink, not a batch client: no outbox cursor
            assert spec.runner is not None
            await spec.runner(self.store, sink_cfg, self.config.gateway.name, st, self.metrics,
                              clock=self.clock).run()
            return
        client = make_client(sink_cfg, self.config.gateway.name, self.sinks)
        try:  # the forwarder connects (with retries); close even if it never did
            await Forwarder(self.store, client, sink_cfg, st, self.metrics, clock=self.clock,
                            meter_status=self._meter_status).run()
        finally:
            await client.close()

    def _meter_status(self) -> Mapping[str, str]:
        """Each polled meter's online/offline state as the sinks publish it (meters not polled yet: none).
        The same object until a meter's state changes (Runtime.status_changes), so a forwarder that already
        sent it knows by identity, without comparing every meter's entry on each of its turns."""
        rt = self.runtime
        key = (rt.status_changes, len(rt.meters))
        if self._status[0] != key:
            out: dict[str, str] = {}
            for name, ms in rt.meters.items():
                online = ms.online
                if online is not None:
                    out[name] = "online" if online else "offline"
            self._status = (key, MappingProxyType(out))
        return self._status[1]

    async def _housekeeping(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            self.runner.publish_lateness()
            self._gc.tick()
            if self.clock() - last_prune >= PRUNE_EVERY:
                last_prune = self.clock()
                try:
                    # A document sink has no cursor: for its readings, keep alone decides.
                    # The store logs what it pruned (how many, before when, confirmed by which sinks), once.
                    await self.store.prune(keep=self.config.store.keep,
                                           sinks=cursor_sinks(self.config, self.sinks), now=self.clock())
                except StoreError as exc:
                    log.error("store: prune failed: %s", exc)


def install_signal_handlers(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)

