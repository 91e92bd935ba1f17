"""Routes of the status pages, mounted on the local API's aiohttp app (pollerd.api.make_app).

    GET  /                          overview; ``?part=1`` is its live part, which the page re-fetches
    GET  /meters/{name}             one meter (``range=24h|7d``; events ``code``, ``from``, ``to``)
    GET  /meters/{name}/profile     its load-profile chart (``range``), which the meter page loads after itself
    POST /meters/{name}/poll        poll now (admin, CSRF token)
    POST /meters/{name}/raw         one HEX frame (admin, CSRF token)
    GET  /reports                   energy per tariff, HTML
    GET  /reports.csv               the same as CSV (``bom=1``, ``semicolon=1``)
    GET  /api/reports               the same as JSON (in the OpenAPI document)
    GET  /login, POST /login, POST /logout, GET /lang/{en|ru}, GET /static/{file}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiohttp import web

from pollerd.errors import ConfigError, MeterBusy, PollerdError
from pollerd.metrics import Registry
from pollerd.state import Runtime

from . import meter_page, overview, report_page, reports
from .access import OPEN, Access, TokenRoles, safe_next, same_origin
from .activity import Activity
from .html import e, meter_url, page, url
from .i18n import LANG_COOKIE, LANGS, choose, t
from .svg import interval_of

if TYPE_CHECKING:
    from pollerd.config.model import MeterConfig
    from pollerd.store import Store

log = logging.getLogger(__name__)

HealthReport = Callable[[], Awaitable[tuple[list[str], list[str]]]]
PollHandler = Callable[[str], Awaitable[dict[str, Any]]]
RawHandler = Callable[[str, str], Awaitable[dict[str, Any]]]
MeterConfigs = Callable[[str], "MeterConfig | None"]

# The pages load nothing from elsewhere and run only their own script file: an injected string in a meter
# name or an event text stays text even if escaping were ever missed.
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC_TYPES = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class _Static:
    body: bytes
    etag: str
    content_type: str


def _load_static() -> dict[str, _Static]:
    out = {}
    for name, ctype in _STATIC_TYPES.items():
        body = resources.files("pollerd.web").joinpath("static").joinpath(name).read_bytes()
        out[name] = _Static(body, '"' + hashlib.sha256(body).hexdigest()[:16] + '"', ctype)
    return out


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={**_HEADERS, "Location": location})


class WebPages:
    def __init__(self, *, runtime: Runtime, store: Store, metrics: Registry, clock: Callable[[], float],
                 health: HealthReport,
                 roles: TokenRoles, poll: PollHandler | None, raw: RawHandler | None,
                 meter_config: MeterConfigs | None) -> None:
        self.runtime = runtime
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.health = health
        self.access = Access(roles)
        self.poll = poll
        self.raw = raw
        self.meter_config = meter_config or (lambda name: None)
        self.activity = Activity(runtime, clock)
        self.static = _load_static()

    # ---- helpers ------------------------------------------------------------------------------------------

    def tz(self, meter: str) -> ZoneInfo:
        cfg = self.meter_config(meter)
        try:
            return ZoneInfo(cfg.timezone if cfg is not None else "UTC")
        except (ZoneInfoNotFoundError, ValueError):  # config validation checked it; a reload may race
            return ZoneInfo("UTC")

    @staticmethod
    def lang(request: web.Request) -> str:
        return choose(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))

    def html(self, request: web.Request, lang: str, title: str, body: str, role: str | None,
             status: int = 200, back: str = "/") -> web.Response:
        # The language switch returns to this page; after a POST, to ``back`` (a GET of the POST's URL is 405).
        here = request.path_qs if request.method in ("GET", "HEAD") else back
        text = page(lang=lang, title=title, body=body, path=here, gateway=self.runtime.gateway,
                    role=role, csrf=self.access.csrf(request) if role is not None else None,
                    login_enabled=self.access.login_enabled)
        resp = web.Response(text=text, status=status, content_type="text/html", headers=_HEADERS)
        resp.enable_compression()
        return resp

    def _need_login(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        role = self.access.role(request)
        if role is not None:
            return role, None
        if request.query.get("part"):  # the refresh script reloads the page, which then asks for the token
            return None, web.Response(status=401, text="log in again", headers=_HEADERS)
        return None, _redirect(url("/login", next=request.path_qs))

    # ---- overview -----------------------------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        role, denied = self._need_login(request)
        if denied is not None:
            return denied
        lang = self.lang(request)
        f = overview.Filters.parse(request.query)
        reasons, warnings = await self.health()
        now = self.clock()
        counts, covered = self.activity.last_hour(now)
        errors = overview.line_errors(self.metrics, self.runtime)
        live = overview.render_live(self.runtime, now, lang, f, reasons, warnings, counts, covered, errors)
        if request.query.get("part"):
            resp = web.Response(text=live, content_type="text/html", headers=_HEADERS)
            resp.enable_compression()
            return resp
        return self.html(request, lang, t(lang, "overview"), overview.render_page_body(f, live),
                         role)

    # ---- meter page ---------------------------------------------------------------------------------------

    async def meter(self, request: web.Request, result: Mapping[str, Any] | None = None,
                    status: int = 200) -> web.Response:
        role, denied = self._need_login(request)
        if denied is not None:
            return denied
        assert role is not None
        lang = self.lang(request)
        name = request.match_info["name"]
        ms = self.runtime.meters.get(name)
        if ms is None:
            return self.html(request, lang, name, f'<p class="warn">{e(t(lang, "no_meter", name))}</p>', role, 404)
        tz = self.tz(name)
        now = self.clock()
        rng = request.query.get("range", "24h")
        rng = rng if rng in meter_page.RANGES else "24h"
        # From two periods before the last good cycle: the walk back over the ts-led key then stops at what
        # was stored since (all meters' rows of that time), not at two days of the whole gateway's history.
        # Never more than two days back (a meter polled daily); 600 rows hold a Mercury cycle (44 channels)
        # many times over.
        since = int(now) - 2 * 86400
        if ms.last_ok is not None:
            since = max(since, int(ms.last_ok - 2 * ms.interval) - 60)
        latest = meter_page.latest_by_channel(
            await self.store.latest_readings(name, "current", since=since, limit=600))
        ef = meter_page.EventFilter.parse(request.query)
        ev_from, ev_to = ef.bounds(tz)
        events, ev_total = await self.store.query_events(meter=name, code=ef.code or None, ts_from=ev_from,
                                                         ts_to=ev_to, per_page=meter_page.EVENTS_SHOWN,
                                                         newest_first=True)
        body = meter_page.render(ms=ms, cfg=self.meter_config(name), tz=tz, latest=latest, rng=rng, now=now,
                                 events=events, events_total=ev_total,
                                 codes=await self.store.event_codes(name), ef=ef,
                                 role=role, csrf=self.access.csrf(request), lang=lang, result=result)
        return self.html(request, lang, name, body, role, status, back=meter_url(name))

    async def profile(self, request: web.Request) -> web.Response:
        """GET /meters/{name}/profile?range=24h|7d: the chart alone (the meter page loads it after itself)."""
        role, denied = self._need_login(request)
        if denied is not None:
            return denied
        lang = self.lang(request)
        name = request.match_info["name"]
        if name not in self.runtime.meters:
            return self.html(request, lang, name, f'<p class="warn">{e(t(lang, "no_meter", name))}</p>', role, 404)
        rng = request.query.get("range", "24h")
        rng = rng if rng in meter_page.RANGES else "24h"
        now = self.clock()
        profile: dict[str, dict[int, float]] = {"A+": {}, "A-": {}}
        # 7 days of 1-minute intervals are 20,160 rows; the limit only guards against a broken clock.
        for r in await self.store.readings_between(meters=[name], archive="profile", channels=list(profile),
                                                   ts_from=int(now) - meter_page.RANGES[rng] - 3600,
                                                   ts_to=int(now) + 3600, limit=25_000):
            profile[r.channel][r.ts] = r.value
        period = interval_of(sorted(set(profile["A+"]) | set(profile["A-"])))
        part = meter_page.profile_part(profile, period, rng, now, self.tz(name), lang)
        if request.headers.get("X-Requested-With") == "pollerd":  # the page's script: the chart alone
            resp = web.Response(text=part, content_type="text/html", headers=_HEADERS)
            resp.enable_compression()
            return resp
        return self.html(request, lang, name, f'<h1>{e(name)}</h1><section>{part}</section>', role)

    async def _admin_action(self, request: web.Request) -> tuple[str, str, web.Response | None]:
        """(meter, language, refusal): the role and the form's CSRF token are checked before anything."""
        lang = self.lang(request)
        role = self.access.role(request)
        name = request.match_info["name"]
        form = await request.post()
        if role != "admin":
            return name, lang, self.html(request, lang, t(lang, "forbidden"),
                                         f'<p class="warn" data-error="403">{e(t(lang, "forbidden"))}</p>',
                                         role, 403)
        csrf = form.get("csrf")
        if not self.access.csrf_ok(request, csrf if isinstance(csrf, str) else None):
            return name, lang, self.html(request, lang, t(lang, "forbidden"),
                                         f'<p class="warn" data-error="csrf">{e(t(lang, "csrf"))}</p>', role, 403)
        if name not in self.runtime.meters:
            return name, lang, self.html(request, lang, name, f'<p class="warn">{e(t(lang, "no_meter", name))}</p>',
                                         role, 404)
        return name, lang, None

    async def poll_now(self, request: web.Request) -> web.Response:
        name, _lang, refused = await self._admin_action(request)
        if refused is not None:
            return refused
        result: dict[str, Any]
        status = 200
        if self.poll is None:
            result, status = {"error": "poll now is not available"}, 503
        else:
            try:
                result = await self.poll(name)
            except MeterBusy as exc:
                result, status = {"error": str(exc)}, 409
            except KeyError:
                result, status = {"error": f"no meter named {name!r}"}, 404
        log.info("web: poll now of %s by an admin token", name)
        return await self.meter(request, result, status)

    async def raw_frame(self, request: web.Request) -> web.Response:
        name, _lang, refused = await self._admin_action(request)
        if refused is not None:
            return refused
        form = await request.post()
        command = form.get("command")
        command = command if isinstance(command, str) else ""
        result: dict[str, Any]
        status = 200
        if self.raw is None:
            result, status = {"error": "raw frames are not available"}, 503
        else:
            try:
                result = await self.raw(name, command)
            except (ValueError, PollerdError) as exc:
                status = 400 if isinstance(exc, (ValueError, ConfigError)) else 502
                result = {"error": str(exc)}
        return await self.meter(request, result, status)

    # ---- reports ------------------------------------------------------------------------------------------

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc).date()

    def _report_query(self, request: web.Request, extra: frozenset[str] = frozenset()) -> reports.ReportQuery:
        return reports.parse_query(request.query, request.query.getall("meter", []), list(self.runtime.meters),
                                   self._today(), extra=extra)

    async def reports_page(self, request: web.Request) -> web.Response:
        role, denied = self._need_login(request)
        if denied is not None:
            return denied
        lang = self.lang(request)
        chosen = [m for m in request.query.getall("meter", []) if m]
        query, rows, error = None, [], None
        if request.query:
            try:
                query = self._report_query(request)
                rows = await reports.build(self.store, query, self.tz)
            except reports.ReportQueryError as exc:
                error = str(exc)
        body = report_page.render(meters=list(self.runtime.meters), query=query, chosen=chosen, rows=rows,
                                  error=error, lang=lang)
        return self.html(request, lang, t(lang, "reports"), body, role, 400 if error else 200)

    async def reports_csv(self, request: web.Request) -> web.Response:
        _role, denied = self._need_login(request)
        if denied is not None:
            return denied
        lang = self.lang(request)
        try:
            query = self._report_query(request, frozenset({"bom", "semicolon"}))
        except reports.ReportQueryError as exc:
            return web.Response(status=400, text=str(exc), headers=_HEADERS)
        rows = await reports.build(self.store, query, self.tz)
        body = reports.to_csv(rows, report_page.csv_header(lang), semicolon=request.query.get("semicolon") == "1",
                              bom=request.query.get("bom") == "1")
        name = f"energy-{query.period}-{query.first.isoformat()}-{query.last.isoformat()}.csv"
        return web.Response(body=body, content_type="text/csv", charset="utf-8",
                            headers={**_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})

    async def reports_json(self, request: web.Request) -> web.Response:
        """GET /api/reports: the JSON twin of the page. Follows the other /api/* GET endpoints' access."""
        try:
            query = self._report_query(request)
        except reports.ReportQueryError as exc:
            return web.Response(body=orjson.dumps({"error": str(exc)}), status=400, content_type="application/json")
        rows = await reports.build(self.store, query, self.tz)
        return web.Response(body=orjson.dumps(reports.to_json(query, rows)), content_type="application/json")

    # ---- access, language, static -------------------------------------------------------------------------

    async def login_form(self, request: web.Request, failed: bool = False) -> web.Response:
        lang = self.lang(request)
        nxt = safe_next(request.query.get("next"))
        msg = f'<p class="warn" data-error="login">{e(t(lang, "login_failed"))}</p>' if failed else ""
        body = (f'<section class="login"><h1>{e(t(lang, "login"))}</h1><p>{e(t(lang, "login_hint"))}</p>{msg}'
                f'<form method="post" action="{e(url("/login", next=nxt))}"><label>{e(t(lang, "token"))} '
                f'<input type="password" name="token" autocomplete="current-password" required autofocus></label>'
                f'<button>{e(t(lang, "login"))}</button></form></section>')
        return self.html(request, lang, t(lang, "login"), body, None, 401 if failed else 200)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        if not same_origin(request) or not isinstance(token, str) or not token:
            return await self.login_form(request, failed=True)
        resp = _redirect(safe_next(request.query.get("next")))
        if self.access.login(request, token.strip(), resp) is None:
            log.warning("web: login with an unknown token from %s", request.remote)
            return await self.login_form(request, failed=True)
        return resp

    async def logout(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        csrf = form.get("csrf")
        if not self.access.csrf_ok(request, csrf if isinstance(csrf, str) else None):
            lang = self.lang(request)
            return self.html(request, lang, t(lang, "forbidden"), f'<p class="warn">{e(t(lang, "csrf"))}</p>',
                             self.access.role(request), 403)
        resp = _redirect("/login" if self.access.login_enabled else "/")
        self.access.logout(resp)
        return resp

    async def set_lang(self, request: web.Request) -> web.StreamResponse:
        code = request.match_info["lang"]
        resp = _redirect(safe_next(request.query.get("next")))
        if code in LANGS:
            resp.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, path="/", samesite="Lax", httponly=True)
        return resp

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        item = self.static.get(request.match_info["file"])
        if item is None:
            raise web.HTTPNotFound()
        headers = {"ETag": item.etag, "Cache-Control": "public, max-age=86400",
                   "X-Content-Type-Options": "nosniff"}
        if request.headers.get("If-None-Match") == item.etag:
            return web.Response(status=304, headers=headers)
        resp = web.Response(body=item.body, headers={**headers, "Content-Type": item.content_type})
        resp.enable_compression()
        return resp


def mount(app: web.Application, pages: WebPages) -> None:
    r = app.router
    r.add_get("/", pages.overview)
    r.add_get("/meters/{name}", pages.meter)
    r.add_get("/meters/{name}/profile", pages.profile)
    r.add_post("/meters/{name}/poll", pages.poll_now)
    r.add_post("/meters/{name}/raw", pages.raw_frame)
    r.add_get("/reports", pages.reports_page)
    r.add_get("/reports.csv", pages.reports_csv)
    r.add_get("/api/reports", pages.reports_json)
    r.add_get("/login", pages.login_form)
    r.add_post("/login", pages.login)
    r.add_post("/logout", pages.logout)
    r.add_get("/lang/{lang}", pages.set_lang)
    r.add_get("/static/{file}", pages.static_file)
    app.cleanup_ctx.append(pages.activity.cleanup_ctx)


__all__ = ["OPEN", "WebPages", "mount"]
