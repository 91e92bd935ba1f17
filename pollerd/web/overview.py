"""The overview page ``/``: health in words, lines, meters with filters, sinks.

Rendered in one pass over the runtime state, without a store query per meter (the readings of the last
hour come from :mod:`pollerd.web.activity`): at 1,000 meters the page must render within 50 ms on the
gateway (scripts/bench_web.py). The meter table is paged so the page stays under 150 KB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pollerd import __version__
from pollerd.metrics import Registry
from pollerd.state import MeterState, Runtime

from .html import age, duration, e, meter_url, url
from .i18n import t

PER_PAGE = 250
# A gateway whose 1,000 meters all went silent has 1,000 reasons; the meter table shows them anyway, and the
# page must stay under its 150 KB.
HEALTH_SHOWN = 20
STATES = ("failing", "degraded", "pending", "ok")


@dataclass(frozen=True, slots=True)
class Filters:
    state: str = ""
    line: str = ""
    protocol: str = ""
    page: int = 1

    @classmethod
    def parse(cls, q: Mapping[str, str]) -> Filters:
        state = q.get("state", "")
        raw_page = q.get("page", "1")
        page = int(raw_page) if raw_page.isascii() and raw_page.isdigit() and 0 < len(raw_page) < 7 else 1
        return cls(state if state in STATES else "", q.get("line", "")[:200], q.get("protocol", "")[:200],
                   max(1, page))

    def query(self, **override: object) -> dict[str, object]:
        d: dict[str, object] = {"state": self.state, "line": self.line, "protocol": self.protocol}
        d.update(override)
        return d


def page_state(ms: MeterState) -> str:
    """The state a person should see. Unlike the API's ``state``, a meter that is not answering is
    ``failing`` even after the daemon marked it degraded (it then probes with backoff): for someone at the
    gateway, "no answer" is the news, and degraded is kept for meters that answer with a problem."""
    if ms.consecutive_failures and ms.last_poll is not None:
        return "failing"
    return ms.status


def _select(name: str, current: str, options: list[str], lang: str, labels: Mapping[str, str] | None = None) -> str:
    opts = [f'<option value="">{e(t(lang, "all"))}</option>']
    for o in options:
        sel = " selected" if o == current else ""
        opts.append(f'<option value="{e(o)}"{sel}>{e((labels or {}).get(o, o))}</option>')
    return f'<select name="{name}" data-autosubmit>{"".join(opts)}</select>'


@dataclass(frozen=True, slots=True)
class LineErrors:
    timeouts: int = 0          # requests of the line's meters without a complete reply
    frames: int = 0            # bad frames (CRC, length, address) from the line's meters
    connects: int = 0          # failed connection attempts of the line


def line_errors(metrics: Registry, rt: Runtime) -> dict[str, LineErrors]:
    """Errors per line since start, from the counters /metrics exports (timeouts and bad frames are counted
    per meter there; a meter belongs to its line)."""
    line_of = {ms.name: ms.line for ms in rt.meters.values()}
    acc: dict[str, list[int]] = {name: [0, 0, 0] for name in rt.lines}
    for metric, index, label in (("pollerd_reply_timeouts_total", 0, "meter"),
                                 ("pollerd_frame_errors_total", 1, "meter"),
                                 ("pollerd_line_connect_failures_total", 2, "line")):
        m = metrics.find(metric)
        if m is None or label not in m.labels:
            continue
        pos = m.labels.index(label)
        for key, value in m.values.items():
            line = key[pos] if label == "line" else line_of.get(key[pos])
            if line in acc:
                acc[line][index] += int(value)
    return {name: LineErrors(*v) for name, v in acc.items()}


def render_live(rt: Runtime, now: float, lang: str, f: Filters, reasons: list[str], warnings: list[str],
                last_hour: Mapping[str, int], covered: float, errors: Mapping[str, LineErrors]) -> str:
    """The part of the overview that the page refreshes in place every few seconds."""
    tr = {k: t(lang, k) for k in ("up", "down", "not_open", "never", "none")}
    st_label = {s: e(t(lang, "st_" + s)) for s in STATES}  # escaped once, used per row
    out: list[str] = [(f'<section class="gw"><h1>{e(rt.gateway)}</h1><p>{e(t(lang, "version"))} '
                      f'{e(__version__)} · {e(t(lang, "uptime"))} <span data-uptime>'
                      f'{e(duration(now - rt.started, lang))}</span></p></section>')]
    ok = not reasons
    out.append(f'<section class="health {"ok" if ok else "fail"}" data-health="{"ok" if ok else "fail"}">'
               f'<h2>{e(t(lang, "health"))}: {e(t(lang, "health_ok" if ok else "health_fail"))}</h2>')
    for key, items in (("reasons", reasons), ("warnings", warnings)):
        if items:
            out.append(f'<h3>{e(t(lang, key))}</h3><ul class="{key}">')
            out.extend(f"<li>{e(x)}</li>" for x in items[:HEALTH_SHOWN])
            if len(items) > HEALTH_SHOWN:
                out.append(f'<li><a href="/health">{e(t(lang, "more_reasons", len(items) - HEALTH_SHOWN))}</a></li>')
            out.append("</ul>")
    out.append("</section>")

    up = max(now - rt.started, 1e-9)
    out.append(f'<section><h2>{e(t(lang, "lines"))}</h2><div class="scroll"><table class="lines"><thead><tr>'
               f'<th>{e(t(lang, "line"))}</th><th>{e(t(lang, "type"))}</th><th>{e(t(lang, "state"))}</th>'
               f'<th>{e(t(lang, "bus_share"))}</th><th>{e(t(lang, "exchanges"))}</th>'
               f'<th>{e(t(lang, "reconnects"))}</th><th>{e(t(lang, "errors"))}</th>'
               f'<th>{e(t(lang, "last_error"))}</th></tr></thead><tbody>')
    err_text = t(lang, "line_errors")
    for ln in rt.lines.values():
        er = errors.get(ln.name, LineErrors())
        if ln.connected:
            state, cls = tr["up"], "ok"
        elif ln.last_error:
            state, cls = tr["down"], "failing"
        else:
            state, cls = tr["not_open"], "pending"
        out.append(f'<tr data-line="{e(ln.name)}"><td>{e(ln.name)}</td><td>{e(ln.type)}</td>'
                   f'<td class="st {cls}">{e(state)}</td><td>{100 * ln.bus_time / up:.1f} %</td>'
                   f'<td>{ln.exchanges}</td><td>{ln.reconnects}</td>'
                   f'<td data-errors="{er.timeouts + er.frames + er.connects}">'
                   f'{e(err_text.format(er.timeouts, er.frames, er.connects))}</td>'
                   f'<td>{e(ln.last_error or "")}</td></tr>')
    out.append("</tbody></table></div></section>")

    meters = list(rt.meters.values())
    counts = dict.fromkeys(STATES, 0)
    states = {ms.name: page_state(ms) for ms in meters}
    for s in states.values():
        counts[s] += 1
    shown = [ms for ms in meters if (not f.state or states[ms.name] == f.state) and (not f.line or ms.line == f.line)
             and (not f.protocol or ms.protocol == f.protocol)]
    pages = max(1, -(-len(shown) // PER_PAGE))
    page = min(f.page, pages)
    chunk = shown[(page - 1) * PER_PAGE: page * PER_PAGE]
    summary = " ".join(
        f'<a class="st {s}" href="{e(url("/", **f.query(state=s)))}" data-count="{s}">'
        f'{st_label[s]}: {counts.get(s, 0)}</a>' for s in STATES)
    hour_label = t(lang, "readings_hour")
    if covered < 3590:
        hour_label = t(lang, "readings_since", max(1, round(covered / 60)))
    out.append(f'<section><h2>{e(t(lang, "meters"))}</h2><p class="summary">{summary}</p>{_filter_form(rt, lang, f)}'
               f'<p>{e(t(lang, "shown_of", len(shown), len(meters)))}</p>'
               f'<div class="scroll"><table class="meters"><thead><tr><th>{e(t(lang, "meter"))}</th>'
               f'<th>{e(t(lang, "state"))}</th><th>{e(t(lang, "protocol"))}</th><th>{e(t(lang, "line"))}</th>'
               f'<th>{e(t(lang, "last_ok"))}</th><th>{e(hour_label)}</th><th>{e(t(lang, "last_error"))}</th>'
               f'</tr></thead><tbody>')
    for ms in chunk:
        s = states[ms.name]
        out.append(f'<tr data-meter="{e(ms.name)}" data-state="{s}"><td><a href="{e(meter_url(ms.name))}">'
                   f'{e(ms.name)}</a></td><td class="st {s}">{st_label[s]}</td><td>{e(ms.protocol)}</td>'
                   f'<td>{e(ms.line)}</td><td>{age(ms.last_ok, now, lang)}</td><td>{last_hour.get(ms.name, 0)}</td>'
                   f'<td>{e(ms.last_error or "")}</td></tr>')
    out.append("</tbody></table></div>")
    if pages > 1:
        prev = (f'<a href="{e(url("/", **f.query(page=page - 1)))}">{e(t(lang, "prev"))}</a>' if page > 1 else "")
        nxt = (f'<a href="{e(url("/", **f.query(page=page + 1)))}">{e(t(lang, "next"))}</a>'
               if page < pages else "")
        out.append(f'<p class="pager">{prev} {e(t(lang, "page"))} {page} / {pages} {nxt}</p>')
    out.append("</section>")

    if rt.sinks:
        out.append(f'<section><h2>{e(t(lang, "sinks"))}</h2><div class="scroll"><table class="sinks"><thead><tr>'
                   f'<th>{e(t(lang, "sink"))}</th><th>{e(t(lang, "type"))}</th><th>{e(t(lang, "lag"))}</th>'
                   f'<th>{e(t(lang, "state"))}</th><th>{e(t(lang, "parked"))}</th>'
                   f'<th>{e(t(lang, "last_error"))}</th></tr></thead><tbody>')
        for sk in rt.sinks.values():
            if sk.failing_since is not None:
                state, cls = t(lang, "failing_for", duration(now - sk.failing_since, lang)), "failing"
            else:
                state, cls = t(lang, "delivering"), "ok"
            out.append(f'<tr data-sink="{e(sk.name)}"><td>{e(sk.name)}</td><td>{e(sk.type)}</td>'
                       f'<td>{duration(sk.lag_seconds, lang)} ({sk.lag_rows} {e(t(lang, "rows"))})</td>'
                       f'<td class="st {cls}">{e(state)}</td><td>{sk.parked}</td>'
                       f'<td>{e(sk.last_error or "")}</td></tr>')
        out.append("</tbody></table></div></section>")
    return "".join(out)


def _filter_form(rt: Runtime, lang: str, f: Filters) -> str:
    lines = sorted({ms.line for ms in rt.meters.values() if ms.line})  # cloud sources have no line
    protocols = sorted({ms.protocol for ms in rt.meters.values()})
    states = {s: t(lang, "st_" + s) for s in STATES}
    return (f'<form class="filters" method="get" action="/">'
            f'<label>{e(t(lang, "state"))} {_select("state", f.state, list(STATES), lang, states)}</label>'
            f'<label>{e(t(lang, "line"))} {_select("line", f.line, lines, lang)}</label>'
            f'<label>{e(t(lang, "protocol"))} {_select("protocol", f.protocol, protocols, lang)}</label>'
            f'<button>{e(t(lang, "filter"))}</button></form>')


def render_page_body(f: Filters, live: str) -> str:
    """The live part in the element the page's script refreshes in place."""
    part = url("/", **f.query(page=f.page if f.page > 1 else None, part=1))
    return f'<div id="live" data-refresh="{e(part)}" aria-live="polite">{live}</div>'
