"""The page of one meter: identity, latest values, vector diagram, load profile, events, service box.

Only rendering here; the handler in :mod:`pollerd.web.app` fetches what it shows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson

from pollerd.model import Event, Reading
from pollerd.state import MeterState

from .html import age, e, meter_url, number, url
from .i18n import t
from .overview import page_state
from .svg import phasors, profile_chart, vector_diagram

if TYPE_CHECKING:
    from pollerd.config.model import MeterConfig

RANGES = {"24h": 86400, "7d": 7 * 86400}
_ENERGY_BASES = ("A+", "A-", "R+", "R-")
EVENTS_SHOWN = 100


@dataclass(frozen=True, slots=True)
class EventFilter:
    code: str = ""
    first: dt.date | None = None   # meter-local dates, inclusive
    last: dt.date | None = None

    @classmethod
    def parse(cls, q: Mapping[str, str]) -> EventFilter:
        def date(raw: str | None) -> dt.date | None:
            try:
                return dt.date.fromisoformat(raw) if raw else None
            except ValueError:
                return None
        return cls(q.get("code", "")[:100], date(q.get("from")), date(q.get("to")))

    def bounds(self, tz: ZoneInfo) -> tuple[int | None, int | None]:
        def mid(d: dt.date) -> int:
            return int(dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp())
        return (mid(self.first) if self.first else None,
                mid(self.last + dt.timedelta(days=1)) if self.last else None)


def _identity(ms: MeterState, cfg: MeterConfig | None, tz: ZoneInfo, lang: str) -> str:
    ident = ms.identity
    rows: list[tuple[str, str]] = [(t(lang, "protocol"), ms.protocol), (t(lang, "line"), ms.line),
                                   (t(lang, "address"), str(ms.address))]
    if ident.get("serial") is not None:
        rows.append((t(lang, "serial"), str(ident["serial"])))
    if cfg is not None and cfg.number_meter:
        rows.append((t(lang, "serial_config"), cfg.number_meter))
    if ident.get("manufactured"):
        rows.append((t(lang, "manufactured"), str(ident["manufactured"])))
    ratios = []
    if ident.get("ku") is not None or ident.get("ki") is not None:
        ratios.append(f"Ku {ident.get('ku', '?')} · Ki {ident.get('ki', '?')} ({t(lang, 'by_meter')})")
    if cfg is not None and (cfg.tn1 or cfg.tt):
        tn = f"TN {number(cfg.tn1)}/{number(cfg.tn2 or 0)}" if cfg.tn1 else ""
        tt = f"TT {number(cfg.tt)}" if cfg.tt else ""
        ratios.append(" · ".join(x for x in (tn, tt) if x) + f" ({t(lang, 'by_config')})")
    if ratios:
        rows.append((t(lang, "ratios"), "; ".join(ratios)))
    if ident.get("constant") is not None:
        rows.append((t(lang, "constant"), f"{ident['constant']} {t(lang, 'imp_kwh')}"))
    rows.append((t(lang, "timezone"), str(tz)))
    rows.append((t(lang, "polls"), f"{ms.polls} / {ms.failures}"))
    for key, value in ident.items():
        if key not in ("serial", "manufactured", "ku", "ki", "constant") and value is not None:
            rows.append((str(key), value if isinstance(value, str) else orjson.dumps(value).decode()))
    return "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)


def latest_by_channel(rows: Sequence[Reading]) -> dict[str, Reading]:
    """The newest reading of each channel (``rows`` come newest first)."""
    out: dict[str, Reading] = {}
    for r in rows:
        out.setdefault(r.channel, r)
    return out


def _channel_key(ch: str) -> tuple[int, str]:
    order = ("A+", "A-", "R+", "R-", "P", "Q", "S", "PF", "U", "I", "angle", "F")
    base = ch.split(".")[0]
    return (order.index(base) if base in order else len(order), ch)


def profile_part(profile: Mapping[str, Mapping[int, float]], period: int, rng: str, now: float, tz: ZoneInfo,
                 lang: str) -> str:
    """The load-profile chart of the range ending with the last closed interval, or a note."""
    if not any(profile.values()):
        return f'<p class="note">{e(t(lang, "profile_none"))}</p>'
    end = int(now) // period * period  # the running interval is not stored yet: not a gap
    return profile_chart(profile, end - RANGES[rng], end, period, tz, lang)


def render(*, ms: MeterState, cfg: MeterConfig | None, tz: ZoneInfo, latest: Mapping[str, Reading], rng: str,
           now: float,
           events: Sequence[Event], events_total: int, codes: Sequence[str], ef: EventFilter, role: str,
           csrf: str, lang: str,
           result: Mapping[str, Any] | None = None) -> str:
    s = page_state(ms)
    out = [(f'<section class="gw"><h1>{e(ms.name)}</h1><p class="st {s}" data-state="{s}">'
           f'{e(t(lang, "st_" + s))}'
           f'{" · " + e(ms.last_error) if ms.last_error else ""} · {e(t(lang, "last_ok"))}: '
           f'{age(ms.last_ok, now, lang)}</p></section>')]
    out.append(f'<div class="cols"><section><h2>{e(t(lang, "identity"))}</h2><table class="kv">'
               f'{_identity(ms, cfg, tz, lang)}</table></section>')

    values = {ch: r.value for ch, r in latest.items()}
    ps, missing = phasors(values)
    # Only for meters that measure phases at all: a water meter's page has no diagram to miss.
    electric = any(ch.startswith(("U.", "I.", "angle.")) for ch in values)
    out.append(f'<section class="vec"><h2>{e(t(lang, "vector"))}</h2>' if electric else "<section>")
    if ps:
        out.append(vector_diagram(ps, lang))
        for p in ps:
            if p.phi is not None and abs(p.phi) > 90:
                out.append(f'<p class="warn" data-reversed="{e(p.name)}">'
                           f'{e(t(lang, "vector_reversed", p.name.split(".")[1]))}</p>')
    if missing and electric:
        out.append(f'<p class="note">{e(t(lang, "vector_missing", ", ".join(missing)))}</p>')
    out.append("</section></div>")

    out.append(f'<section><h2>{e(t(lang, "latest"))}</h2>')
    if latest:
        # Energy counters beside the instantaneous values: two short tables read better than one long one.
        channels = sorted(latest, key=_channel_key)
        groups = [[c for c in channels if c.split(".")[0] in _ENERGY_BASES],
                  [c for c in channels if c.split(".")[0] not in _ENERGY_BASES]]
        out.append('<div class="cols">')
        for group in (g for g in groups if g):
            out.append(f'<div class="scroll"><table class="values"><thead><tr><th>{e(t(lang, "channel"))}</th>'
                       f'<th>{e(t(lang, "value"))}</th><th>{e(t(lang, "age"))}</th></tr></thead><tbody>')
            for ch in group:
                r = latest[ch]
                q = "" if r.quality == "good" else f" ({e(r.quality)})"
                out.append(f'<tr data-channel="{e(ch)}"><td>{e(ch)}</td><td class="num">{e(number(r.value))} '
                           f'{e(r.unit)}{q}</td><td>{age(r.ts, now, lang)}</td></tr>')
            out.append("</tbody></table></div>")
        out.append("</div>")
    else:
        out.append(f'<p class="note">{e(t(lang, "no_values"))}</p>')
    out.append("</section>")

    base = meter_url(ms.name)
    links = " ".join(
        f'<a href="{e(url(base, range=k))}"{" aria-current=page" if k == rng else ""}>{e(t(lang, label))}</a>'
        for k, label in (("24h", "h24"), ("7d", "d7")))
    # The chart comes in a second request, filled in by the page's script: on a full gateway finding one
    # meter's profile walks every meter's readings of the range (docs/status-page.md), and the rest of the
    # page should not wait for it. Without script, the link shows the chart alone.
    src = url(base + "/profile", range=rng)
    out.append(f'<section><h2>{e(t(lang, "profile"))}</h2><p class="tabs">{links} · '
               f'<span class="key ap">A+</span> <span class="key am">A-</span> · {e(t(lang, "per_interval"))} '
               f'<span class="key gap">{e(t(lang, "gap"))}</span></p>'
               f'<div class="chart" data-src="{e(src)}"><p class="note"><a href="{e(src)}">'
               f'{e(t(lang, "show"))}</a></p></div></section>')

    out.append(f'<section><h2>{e(t(lang, "events"))}</h2><form class="filters" method="get" action="{e(base)}">'
               f'<input type="hidden" name="range" value="{e(rng)}">'
               f'<label>{e(t(lang, "code"))} <select name="code"><option value="">{e(t(lang, "all"))}</option>'
               + "".join(f'<option{" selected" if c == ef.code else ""}>{e(c)}</option>' for c in codes)
               + '</select></label>'
               f'<label>{e(t(lang, "from"))} <input type="date" name="from" value="{ef.first or ""}"></label>'
               f'<label>{e(t(lang, "to"))} <input type="date" name="to" value="{ef.last or ""}"></label>'
               f'<button>{e(t(lang, "filter"))}</button></form>')
    if events:
        out.append(f'<div class="scroll"><table class="events"><thead><tr><th>{e(t(lang, "start"))}</th>'
                   f'<th>{e(t(lang, "end"))}</th><th>{e(t(lang, "code"))}</th><th>{e(t(lang, "text"))}</th>'
                   f'</tr></thead><tbody>')
        for ev in events:
            out.append(f'<tr data-code="{e(ev.code)}"><td>{_local(ev.ts_start, tz)}</td>'
                       f'<td>{_local(ev.ts_end, tz)}</td><td>{e(ev.code)}</td><td>{e(ev.text)}</td></tr>')
        out.append("</tbody></table></div>")
        if events_total > len(events):
            out.append(f'<p class="note">{e(t(lang, "more_events", events_total - len(events)))}</p>')
    else:
        out.append(f'<p class="note">{e(t(lang, "no_events"))}</p>')
    out.append("</section>")

    if role == "admin":
        out.append(_admin(ms.name, csrf, lang, result))
    return "".join(out)


def _local(ts: int | None, tz: ZoneInfo) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def _admin(name: str, csrf: str, lang: str, result: Mapping[str, Any] | None) -> str:
    base = meter_url(name)
    hidden = f'<input type="hidden" name="csrf" value="{e(csrf)}">'
    out = [(f'<section class="admin" id="admin"><h2>{e(t(lang, "admin"))}</h2>'
           f'<form method="post" action="{e(base)}/poll" class="inline">{hidden}'
           f'<button data-action="poll">{e(t(lang, "poll_now"))}</button></form>'
           f'<form method="post" action="{e(base)}/raw">{hidden}<label>{e(t(lang, "raw"))} '
           # Not refilled with what was sent: an open-session frame carries the meter's password, and the
           # result shows the command as the driver masked it.
           f'<input name="command" class="hex" autocomplete="off" spellcheck="false"></label>'
           f'<button data-action="raw">{e(t(lang, "send"))}</button></form>')]
    if result is not None:
        shown = dict(result)
        out.append(f'<h3>{e(t(lang, "result"))}</h3><pre class="result" data-result>'
                   f'{e(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())}</pre>')
    out.append("</section>")
    return "".join(out)
