"""`pollerd check`: a loaded configuration in words (schedules, lines, sinks), secrets only as set/not set."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from pollerd.config.model import Config, MeterConfig
from pollerd.schedule import Schedule
from pollerd.text import address_text, safe_url
from pollerd.units import format_duration, format_size

__all__ = ["describe_schedule", "summary"]

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def describe_schedule(meter: MeterConfig, spread: float) -> str:
    """A meter's schedule in words, with its spread offset: what `pollerd check` shows."""
    sched = Schedule.from_meter(meter, spread)
    filters = []
    if meter.days_of_week:
        filters.append("on " + ", ".join(_DAY_NAMES[d - 1] for d in sorted(meter.days_of_week)))
    if meter.days_of_month or meter.last_day_of_month:
        days = [str(d) for d in sorted(meter.days_of_month)]
        text = ("on days " if len(days) > 1 else "on day ") + ", ".join(days) if days else "on"
        if meter.last_day_of_month:
            text += (" and" if days else "") + " the last day"
        filters.append(text + " of the month")
    where = (" " + " and ".join(filters)) if filters else ""
    if meter.period_type == "interval":
        text = f"every {format_duration(meter.interval_time)}{where}"
    else:
        at = meter.at.strftime("%H:%M:%S" if meter.at.second else "%H:%M")
        text = f"{meter.period_type}{where} at {at} {meter.timezone}"
    return f"{text} (+{format_duration(round(sched.offset))} spread)"


def _shown_url(url: str | None) -> str:
    """`pollerd check`'s form of a URL: safe_url(), saying so when a query was left out."""
    if not url:
        return str(url)
    return safe_url(url) + (" (query hidden)" if urlsplit(url).query else "")


def summary(config: Config) -> str:
    """Human-readable overview for `pollerd check`. Secrets are shown only as set/not set."""
    g, s, a = config.gateway, config.store, config.api
    out = [
        f"config:  {config.source}",
        f"gateway: {g.name} (calendar polls spread over {format_duration(g.spread)})",
        f"store:   {s.path or '<state dir>/pollerd.db'} (keep {format_duration(s.keep)}, "
        f"commit every {format_duration(s.commit_interval)}"
        + (f", max size {format_size(s.max_size)}" if s.max_size else "")
        + (f", max age {format_duration(s.max_age)}" if s.max_age else "") + ")",
        f"api:     {'http://' + a.listen if a.enabled else 'disabled'}",
        f"lines:   {len(config.lines)}",
    ]
    for ln in config.lines:
        if ln.type == "serial":
            where = f"serial {ln.device} {ln.baudrate} {ln.bytesize}{ln.parity}{ln.stopbits:g}"
        else:
            where = f"tcp {ln.host}:{ln.port}" + (" (implicit)" if ln.implicit else "")
        members = [m for m in config.meters if m.line == ln.name]
        out.append(f"  {ln.name}: {where}, {len(members)} meter(s)")
        for m in members:
            state = "" if m.enabled else " [disabled]"
            pw = ", password set" if m.password is not None else ""
            serial = f" #{m.number_meter}" if m.number_meter else ""
            out.append(f"    {m.name}{state}: {m.protocol}{serial} @ {address_text(m.connection_address)}{pw}; "
                       f"{describe_schedule(m, g.spread)}; reads {', '.join(m.read)}")
    clouds = [m for m in config.meters if m.is_cloud]
    if clouds:
        out.append(f"cloud sources: {len(clouds)}")
    for m in clouds:
        state = "" if m.enabled else " [disabled]"
        who = f" as {m.email}" if m.email else (", api key set" if m.api_key is not None else "")
        out.append(f"  {m.name}{state}: {m.protocol} {_shown_url(m.url)}{who}; {describe_schedule(m, g.spread)}; "
                   f"reads {', '.join(m.read)}")
    out.append(f"sinks:   {len(config.sinks)}")
    for sk in config.sinks:
        auth = "bearer token" if sk.token else (f"basic auth as {sk.username}" if sk.username else "no auth")
        extra = f", headers: {', '.join(k for k, _ in sk.headers)}" if sk.headers else ""
        tls = "" if sk.verify_tls else ", TLS NOT verified"
        if sk.type == "sioi" and sk.options is not None:  # the sioi document's own fields: its form and period
            o: Any = sk.options
            out.append(f"  {sk.name}: sioi {_shown_url(sk.url)} (login {sk.username}, form {o.form_code}, "
                       f"{o.period.kind} document at {o.period.at.strftime('%H:%M')} {o.period.tz}, template "
                       f"{os.path.basename(o.template_path)}{tls})")
            continue
        out.append(f"  {sk.name}: {sk.type} {_shown_url(sk.url)} ({auth}, batch {sk.batch_size}{extra}{tls})")
    return "\n".join(out)
