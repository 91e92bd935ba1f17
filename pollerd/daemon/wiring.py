"""Building the daemon's parts from the config: where the state lives, the lines, a meter's state and its
driver. Used by the supervisor and by the commands that talk to one meter without it (poll, raw, scan)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..catalog import CATALOG
from ..config import Config, MeterConfig
from ..drivers.base import BusDriverContext, CloudDriverContext, Driver, DriverContext
from ..drivers.registry import make_driver
from ..errors import ConfigError
from ..line import Line
from ..metrics import Registry
from ..push.plugins import load_entry_points
from ..push.registry import SinkRegistry, SinkSpec
from ..state import LineState, MeterState, Runtime
from ..store import Store


def default_state_dir() -> Path:
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/pollerd").split(":")[0])


def db_path(config: Config, state_dir: Path) -> Path:
    return Path(config.store.path) if config.store.path else state_dir / "pollerd.db"


def sink_spec(sinks: SinkRegistry, sink_type: str) -> SinkSpec:
    if sink_type not in sinks:
        load_entry_points(sinks)   # a plugin type the config was loaded with elsewhere (a test, `pollerd run`)
    return sinks[sink_type]


def cursor_sinks(config: Config, sinks: SinkRegistry) -> list[str]:
    """Sinks that deliver through an outbox cursor (a document sink keeps none)."""
    return [s.name for s in config.sinks if sink_spec(sinks, s.type).kind == "batch"]


def build_lines(config: Config, runtime: Runtime, metrics: Registry, *,
                one_shot: bool = False) -> dict[str, Line]:
    """``one_shot``: for a command that talks to meters once and exits (see Line)."""
    lines = {}
    for lc in config.lines:
        st = runtime.lines[lc.name] = LineState(lc.name, lc.type)
        lines[lc.name] = Line(lc, st, metrics, one_shot=one_shot)
    return lines


def meter_state(mc: MeterConfig) -> MeterState:
    period = mc.interval_time if mc.period_type == "interval" else {
        "daily": 86400.0, "weekly": 7 * 86400.0, "monthly": 31 * 86400.0}[mc.period_type]
    return MeterState(mc.name, mc.protocol, mc.line, mc.connection_address, period)


def build_driver(mc: MeterConfig, line: Line | None, runtime: Runtime, metrics: Registry,
                 clock: Callable[[], float] = time.time, store: Store | None = None,
                 state_dir: Path | None = None) -> Driver:
    st = runtime.meters.setdefault(mc.name, meter_state(mc))
    log = logging.getLogger("pollerd.driver")
    ctx: DriverContext
    if CATALOG[mc.protocol].is_cloud:  # a cloud source reaches its account's url, never a line
        ctx = CloudDriverContext(mc, st, metrics, clock, log, store, state_dir)
    elif line is None:  # the loader makes sure every bus meter names a line (or gets an implicit one)
        raise ConfigError(f"meter {mc.name!r}: no line {mc.line!r} for a {mc.protocol} meter")
    else:
        ctx = BusDriverContext(mc, line, st, metrics, clock, log, store, state_dir)
    return make_driver(ctx)
