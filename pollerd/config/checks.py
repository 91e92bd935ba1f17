"""Checks across the keys of one table, run by the loader after each key converted: a schedule that never
runs, a password of the wrong shape for its encoding, a client certificate that does not load."""

from __future__ import annotations

import datetime as _dt
import time as _time
from typing import Any as _Any

from pollerd.config.fields import _Ctx
from pollerd.config.locate import KeyPath as _Path
from pollerd.config.model import MeterConfig
from pollerd.schedule import Schedule
from pollerd.units import format_duration


def _check_schedule_runs(ctx: _Ctx, path: _Path, meter: MeterConfig, spread: float) -> None:
    """Refuse a schedule that never runs: an interval grid can miss every allowed day (a 7-day interval
    lands on one weekday). The daemon would otherwise fail at start, with every other meter."""
    if meter.period_type != "interval" or not (meter.days_of_week or meter.days_of_month
                                               or meter.last_day_of_month):
        return
    sched = Schedule.from_meter(meter, spread)
    now = _time.time()
    try:
        sched.next_run(now)
    except ValueError:
        pass
    else:
        return
    free = Schedule(sched.period_type, sched.interval, sched.at, frozenset(), frozenset(), False, sched.tz,
                    sched.offset)
    runs, t = [], now
    for _ in range(3):
        t = free.next_run(t)
        runs.append(_dt.datetime.fromtimestamp(t, sched.tz).strftime("%a %Y-%m-%d"))
    key = "days_of_week" if meter.days_of_week else "days_of_month"
    ctx.fail(path + (key,), f"this schedule never runs: every {format_duration(meter.interval_time)} "
             f"(+{format_duration(round(sched.offset))} spread) never falls on an allowed day; its runs would "
             f"be {', '.join(runs)}, ... ({meter.timezone}). For runs on chosen days use period_type = "
             f'"daily" or "weekly" with at')


def _check_password(ctx: _Ctx, path: _Path, value: str, encoding: str, size: int | None) -> None:
    # Never echo the password itself: only its shape.
    if encoding == "digits":
        if not (value.isascii() and value.isdigit() and len(value) == 6):
            ctx.fail(path, f"with password_encoding \"digits\" the password must be exactly 6 digits "
                     f"(got {len(value)} characters)")
    elif encoding == "hex":
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            ctx.fail(path, "with password_encoding \"hex\" the password must be hex digits")
        if size is not None and len(raw) != size:
            ctx.fail(path, f"with password_encoding \"hex\" the password must be {size} bytes "
                     f"({size * 2} hex digits), got {len(raw)} bytes")
    else:
        if not value.isascii():
            ctx.fail(path, "with password_encoding \"ascii\" the password must be ASCII")
        if size is not None and len(value) != size:
            ctx.fail(path, f"with password_encoding \"ascii\" the password must be {size} characters, "
                     f"got {len(value)}")


def _check_client_cert(ctx: _Ctx, path: _Path, f: dict[str, _Any]) -> None:
    """A client certificate that does not load fails now, at startup, not at the first TLS handshake."""
    if "client_key" in f and "client_cert" not in f:
        ctx.fail(path + ("client_key",), "client_key needs client_cert too")
    if "client_cert" not in f:
        return
    import ssl
    try:
        ssl.create_default_context().load_cert_chain(f["client_cert"], f.get("client_key"))
    except (OSError, ssl.SSLError) as exc:
        what = "client_cert and client_key do not" if "client_key" in f else "client_cert does not"
        ctx.fail(path + ("client_cert",), f"{what} load as a PEM certificate and its private key "
                 f"(an encrypted key is not supported): {getattr(exc, 'reason', None) or exc}")
