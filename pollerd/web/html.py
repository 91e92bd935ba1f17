"""Small building blocks of the server-rendered pages: escaping, the page frame, numbers and times.

No template engine: pages are a few tables, and f-strings over escaped values keep the daemon free of a
dependency and the overview at 1,000 meters inside its time budget (scripts/bench_web.py).
"""

from __future__ import annotations

import math
import time
from html import escape
from urllib.parse import quote, urlencode

from pollerd import __version__

from .i18n import t

STATIC_VERSION = __version__  # cache-busting query of the static files


def e(value: object) -> str:
    return escape(str(value), quote=True)


def url(path: str, **query: object) -> str:
    """A same-site URL with the query parameters that are not None or empty."""
    q = {k: v for k, v in query.items() if v is not None and v != ""}
    return path + ("?" + urlencode(q, doseq=True) if q else "")


def meter_url(name: str) -> str:
    return "/meters/" + quote(name, safe="")


def duration(seconds: float, lang: str) -> str:
    """``3 d 4 h``, ``5 min 2 s``: two units at most, a person reads it at a glance."""
    s = max(0, int(seconds))
    d, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    units = ("д", "ч", "мин", "с") if lang == "ru" else ("d", "h", "min", "s")
    parts = [(d, units[0]), (h, units[1]), (m, units[2]), (s, units[3])]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{n} {u}" for n, u in parts[:2])


def age(ts: float | None, now: float, lang: str) -> str:
    """``<time>`` with the absolute UTC time as its tooltip and the age as text."""
    if ts is None:
        return e(t(lang, "never"))
    # One gmtime per call, no strftime: the overview renders one of these per meter row.
    g = time.gmtime(ts)
    day = f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}"
    clock = f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}"
    return (f'<time datetime="{day}T{clock}Z" title="{day} {clock} UTC">'
            f'{e(t(lang, "ago", duration(now - ts, lang)))}</time>')


def number(value: float, digits: int | None = None) -> str:
    """A value as stored (no rounding the meter did not do) unless ``digits`` is asked for."""
    if not math.isfinite(value):
        return str(value)
    if digits is not None:
        return f"{value:.{digits}f}"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


_CSS_LINK = f'<link rel="stylesheet" href="/static/app.css?v={STATIC_VERSION}">'
_JS = f'<script src="/static/app.js?v={STATIC_VERSION}" defer></script>'


def page(*, lang: str, title: str, body: str, path: str, gateway: str, role: str | None,
         csrf: str | None, login_enabled: bool) -> str:
    """The frame around every page: navigation, language switch, login state."""
    other = "en" if lang == "ru" else "ru"
    nav = (f'<a href="/">{e(t(lang, "overview"))}</a>'
           f'<a href="/reports">{e(t(lang, "reports"))}</a>'
           f'<a class="lang" href="{e(url("/lang/" + other, next=path))}" hreflang="{other}">'
           f'{other.upper()}</a>')
    if login_enabled and role is not None and csrf is not None:
        nav += (f'<form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" '
                f'value="{e(csrf)}"><button>{e(t(lang, "logout"))}</button></form>'
                f'<span class="role" data-role="{e(role)}">{e(role)}</span>')
    return (f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{e(title)} · {e(gateway)}</title>{_CSS_LINK}{_JS}</head>'
            f'<body><header><strong>{e(gateway)}</strong><nav>{nav}</nav></header>'
            f'<main>{body}</main></body></html>')
