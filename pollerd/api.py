"""The local HTTP endpoint (aiohttp): health, Prometheus metrics and read access to meters and readings.

Endpoints (DESIGN.md §5)::

    GET /health                      200 {"status": "ok", ...} | 503 {"status": "fail", "reasons": [...]}
    GET /metrics                     Prometheus text format 0.0.4
    GET /api/meters                  {"data": [meter, ...]}
    GET /api/meters/{name}           {"data": meter} | 404
    GET /api/readings?meter=&channel=&archive=&from=&to=&page=&per_page=
    GET /api/events?meter=&from=&to=&page=&per_page=
    GET /api/openapi.json            the OpenAPI 3 document of all of these (pollerd/openapi.py)
    POST /api/meters/{name}/poll     one cycle now, ahead of scheduled requests (admin); 409 while one runs
    POST /api/meters/{name}/raw      one HEX frame to the meter (admin)
    GET /api/reports?meter=&period=&from=&to=&energy=   energy per tariff (pollerd/web/reports.py)
    GET /, /meters/{name}, /reports  the status pages (pollerd/web/)

Paged replies follow seed 000: ``{"data": [...], "total": N, "total_pages": N, "current_page": P,
"next_page": P + 1 | null}``; ``per_page`` defaults to 100 and may not exceed 1000. ``from``/``to`` are unix
seconds or ISO 8601 (a time without an offset is UTC); ``from`` is inclusive and ``to`` exclusive, so
consecutive ranges never overlap. Errors are
``{"error": "..."}`` with a 4xx/5xx status. Nothing in a reply is secret: the runtime state holds no
passwords or tokens.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from pollerd.config.model import ApiToken, MeterConfig
from pollerd.errors import ConfigError, MeterBusy, PollerdError, StoreError
from pollerd.metrics import Registry
from pollerd.model import Archive
from pollerd.openapi import document
from pollerd.state import METER_STATES, Runtime
from pollerd.web.app import WebPages
from pollerd.web.app import mount as mount_pages

if TYPE_CHECKING:
    from pollerd.store import Store

log = logging.getLogger(__name__)

PER_PAGE_DEFAULT = 100
PER_PAGE_MAX = 1000                # seed 000's limit; also bounds one reply's memory
_PAGE_MAX = 10**9                  # keeps OFFSET inside SQLite's int64
# Data queries (readings, events) built at once. Each holds up to PER_PAGE_MAX rows as objects and their JSON
# (~1 MB); 500 at once held ~200 MB, which the allocator kept after the burst (RSS 47 -> 249 MB). Queued
# ones wait for a slot at the cost of their request only; one reader connection serialises them anyway.
QUERY_SLOTS = 2
_TS_MAX = 1e13                     # far past any date; keeps the bound inside SQLite's int64
_READINGS_PARAMS = frozenset({"meter", "channel", "archive", "from", "to", "page", "per_page"})
_EVENTS_PARAMS = frozenset({"meter", "from", "to", "page", "per_page"})
_ARCHIVES = tuple(a.value for a in Archive)
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class HealthLimits:
    """What /health counts as a failure.

    A meter is silent when ``now - (last_ok or runtime.started) > max(silent_factor * interval, silent_min)``:
    a few missed cycles are normal on a noisy RS-485 bus, and ``silent_min`` keeps fast-polled meters from
    flapping the health on one bad minute.

    The whole gateway is stale when no reading was stored for ``max(silent_factor * shortest period,
    silent_min)``: this catches what per-meter checks cannot (e.g. every meter answering with nothing).

    A degraded meter (answering, but e.g. with an identity mismatch or a clock it cannot set) is listed under
    ``warnings`` and does not fail the health unless ``degraded_is_failure``: it still delivers data, and a
    503 from /health is meant to make someone act on the gateway, not on one meter.
    """

    silent_factor: float = 3.0
    silent_min: float = 300.0
    sink_lag_seconds: float = 3600.0
    sink_failing_seconds: float = 300.0   # a sink failing (every try) this long fails the health
    degraded_is_failure: bool = False
    # A line may drop for a converter reboot or a GSM re-attach; it fails the health once it stays down
    # longer than this (a warning before).
    line_down_seconds: float = 120.0


class BadRequest(ValueError):
    """A query parameter is malformed; the message goes to the client as is."""


def _json(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


def _shown(raw: str, limit: int = 40) -> str:
    """A parameter as quoted in an error: a 5000-digit page number is not echoed back whole."""
    return repr(raw) if len(raw) <= limit else f"{raw[:limit]!r}... ({len(raw)} characters)"


def parse_time(name: str, raw: str) -> int:
    """Unix seconds (``1718000000``, ``1718000000.5``) or ISO 8601 (``2024-06-10T06:13:20Z``).

    Rounded up to whole seconds: readings have integer ts, and for both ``ts >= from`` and ``ts < to``
    the ceiling selects exactly the same rows as the fractional bound."""
    s = raw.strip()
    if not s:
        raise BadRequest(f"{name}: empty, expected unix seconds or ISO 8601")
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(v) or abs(v) > _TS_MAX:
            raise BadRequest(f"{name}: {_shown(raw)} is not a plausible unix time")
        return math.ceil(v)
    iso = s[:-1] + "+00:00" if s[-1] in "Zz" else s
    dt = None
    # An unescaped "+" in a query string arrives as a space: "...T10:00:00 03:00".
    for candidate in (iso, iso.replace(" ", "+")):
        try:
            dt = _dt.datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    if dt is None:
        raise BadRequest(f"{name}: {_shown(raw)} is neither unix seconds nor ISO 8601")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.timezone.utc)
    return math.ceil(dt.timestamp())


def _parse_int(name: str, raw: str | None, default: int, lo: int, hi: int, hint: str = "") -> int:
    if raw is None:
        return default
    text = raw.strip()
    # int() alone would also take "1_000" and non-ASCII digits.
    if not (text.isascii() and text.lstrip("+-").isdigit() and text.count("-") + text.count("+") <= 1):
        raise BadRequest(f"{name}: {_shown(raw)} is not an integer")
    # More digits than the bound has cannot be in range; and int() refuses over 4300 digits with a ValueError
    # (a 500 before this check), after quadratic work on the way.
    digits = text.lstrip("+-").lstrip("0") or "0"
    if len(digits) > len(str(max(abs(lo), abs(hi)))):
        raise BadRequest(f"{name}: {_shown(raw)} out of range, expected {lo}..{hi}{hint}")
    v = -int(digits) if text.startswith("-") else int(digits)
    if v < lo or v > hi:
        raise BadRequest(f"{name}: {v} out of range, expected {lo}..{hi}{hint}")
    return v


@dataclass(frozen=True, slots=True)
class _Query:
    filters: dict[str, Any]
    page: int
    per_page: int


def _parse_query(q: Mapping[str, str], allowed: frozenset[str], text_keys: tuple[str, ...]) -> _Query:
    # Unknown keys are refused: a typo such as `form=` would otherwise silently return everything.
    unknown = sorted(set(q) - allowed)
    if unknown:
        raise BadRequest(f"unknown parameter(s) {unknown}, expected some of {sorted(allowed)}")
    getall = getattr(q, "getall", None)
    if getall is not None:
        for key in sorted(set(q)):
            n = len(getall(key))
            if n > 1:  # only the first would count: meter=a&meter=b would quietly show meter a alone
                raise BadRequest(f"{key}: given {n} times, expected once")
    filters: dict[str, Any] = {}
    for key in text_keys:
        if key in q:
            value = q[key]
            if not value:
                raise BadRequest(f"{key}: empty")
            filters[key] = value
    if " " in filters.get("channel", ""):
        # `channel=A+` typed into a URL arrives as "A " ('+' is a space in a query string). Channel names
        # never contain a space, so the only thing the client can have meant is a '+'.
        filters["channel"] = filters["channel"].replace(" ", "+")
    if "archive" in filters and filters["archive"] not in _ARCHIVES:
        raise BadRequest(f"archive: {filters['archive']!r}, expected one of {list(_ARCHIVES)}")
    ts_from = parse_time("from", q["from"]) if "from" in q else None
    ts_to = parse_time("to", q["to"]) if "to" in q else None
    if ts_from is not None and ts_to is not None and ts_from > ts_to:
        raise BadRequest(f"from ({ts_from}) is after to ({ts_to})")
    filters["ts_from"] = ts_from
    filters["ts_to"] = ts_to
    page = _parse_int("page", q.get("page"), 1, 1, _PAGE_MAX)
    per_page = _parse_int("per_page", q.get("per_page"), PER_PAGE_DEFAULT, 1, PER_PAGE_MAX,
                          f" (the limit is {PER_PAGE_MAX})")
    return _Query(filters, page, per_page)


def _paged(data: list[object], total: int, page: int, per_page: int) -> dict[str, object]:
    total_pages = -(-total // per_page)
    return {
        "data": data,
        "total": total,
        "total_pages": total_pages,
        "current_page": page,
        "next_page": page + 1 if page < total_pages else None,
    }


class _Api:
    def __init__(self, runtime: Runtime, store: Store, metrics: Registry, clock: Callable[[], float],
                 limits: HealthLimits) -> None:
        self.runtime = runtime
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.limits = limits
        self._query_slots = asyncio.Semaphore(QUERY_SLOTS)

    # ---- health -------------------------------------------------------------------------------------------

    async def health_report(self) -> tuple[list[str], list[str]]:
        """(reasons, warnings). Reasons fail the health; warnings are shown only."""
        rt, lim, now = self.runtime, self.limits, self.clock()
        reasons: list[str] = []
        warnings: list[str] = []
        if not rt.store_ok:
            reasons.append(f"store not writable: {rt.store_error or 'unknown error'}")
        reasons.extend(rt.store_reasons)
        warnings.extend(rt.store_warnings)
        # Harm the store noticed (deleted, replaced, corrupt at start): a reason for a day, then a warning.
        for n in getattr(self.store, "notices", ()):
            (reasons if now < n.fails_until else warnings).append(f"store {n.kind}: {n.text}")
        # Parked batches are counted in the store, not in SinkState: they stay a failure across restarts
        # until someone looks at them and unparks them.
        parked: dict[str, int] = {}
        if rt.sinks:
            try:
                for p in await self.store.parked():
                    parked[p["sink"]] = parked.get(p["sink"], 0) + 1
            except Exception as exc:  # report it; the rest of the health is still worth answering
                reasons.append(f"store not readable: {exc}")
                parked = {s.name: s.parked for s in rt.sinks.values()}
        warnings.extend(rt.warnings.values())
        if rt.meters:
            budget = max(lim.silent_factor * min(m.interval for m in rt.meters.values()), lim.silent_min)
            since = rt.last_stored if rt.last_stored is not None else rt.started
            if now - since > budget:
                reasons.append(f"no reading stored for {now - since:.0f} s > {budget:.0f} s")
        lines_in_use = {m.line for m in rt.meters.values()}
        for ln in rt.lines.values():
            # A line that has not tried yet (no last_error) is starting, not down.
            if not ln.connected and ln.last_error and ln.name in lines_in_use:
                down = now - (ln.down_since if ln.down_since is not None else rt.started)
                msg = f"line {ln.name} down: {ln.last_error}"
                if down > lim.line_down_seconds:
                    reasons.append(f"{msg} (for {down:.0f} s > {lim.line_down_seconds:.0f} s)")
                else:
                    warnings.append(f"{msg} (for {max(down, 0):.0f} s)")
        for m in rt.meters.values():
            budget = max(lim.silent_factor * m.interval, lim.silent_min)
            since = m.last_ok if m.last_ok is not None else (m.added or rt.started)
            silent = now - since
            if silent > budget:
                what = "no answer" if m.last_ok is not None else "never answered"
                reasons.append(f"meter {m.name} silent {silent:.0f} s > {budget:.0f} s ({what}"
                               + (f": {m.last_error})" if m.last_error else ")"))
            for kind, text in m.alarms.items():
                reasons.append(f"meter {m.name} {kind}: {text}")
            if m.last_dropped:  # the meter answers; a value it sent was unfit to store (pollerd.quality)
                warnings.append(f"meter {m.name} values dropped: {m.last_dropped}")
            if m.degraded:
                msg = f"meter {m.name} degraded: {m.degraded_reason or 'no reason given'}"
                (reasons if lim.degraded_is_failure else warnings).append(msg)
        for s in rt.sinks.values():
            if s.lag_seconds > lim.sink_lag_seconds:
                reasons.append(f"sink {s.name} lag {s.lag_seconds:.0f} s > {lim.sink_lag_seconds:.0f} s"
                               f" ({s.lag_rows} rows)")
            if s.failing_since is not None:
                # A blip is a warning; an upstream that answers garbage or nothing for minutes is a reason,
                # even before the lag budget runs out (an idle gateway has no lag to show it).
                failing = now - s.failing_since
                msg = (f"sink {s.name} failing for {failing:.0f} s"
                       + ("" if s.connected else " (not connected)") + f": {s.last_error or 'no reason given'}")
                (reasons if failing > lim.sink_failing_seconds else warnings).append(msg)
            n = parked.get(s.name, 0)
            if n > 0:
                reasons.append(f"sink {s.name} has {n} parked (refused) batch(es): pollerd parked")
            for kind, text in s.alarms.items():
                reasons.append(f"sink {s.name} {kind}: {text}")
        return reasons, warnings

    async def health(self, request: web.Request) -> web.Response:
        reasons, warnings = await self.health_report()
        body = {"status": "fail" if reasons else "ok", "reasons": reasons, "warnings": warnings}
        return _json(body, status=503 if reasons else 200)

    # ---- metrics ------------------------------------------------------------------------------------------

    async def metrics_text(self, request: web.Request) -> web.Response:
        m, rt = self.metrics, self.runtime
        try:
            stats = await self.store.stats()
        except Exception as exc:  # a broken store must not take the scrape down with it
            log.warning("metrics: store stats unavailable: %s", exc)
            stats = None
        if stats is not None:
            rows = stats.get("rows")
            if rows is not None:
                m.gauge("pollerd_store_rows", "Readings held in the local store.").set(rows)
            size = stats.get("db_bytes")
            if size is not None:
                m.gauge("pollerd_store_bytes", "Size of the local store on disk.").set(size)
        # The same states as /api/meters (MeterState.status), every one present, zeros included, so a
        # dashboard's sum is the meter count and a state that empties drops to 0 rather than going stale.
        by_state = collections.Counter(ms.status for ms in rt.meters.values())
        g = m.gauge("pollerd_meters", "Configured meters by state (as /api/meters reports it).", ("state",))
        for state in METER_STATES:
            g.set(by_state[state], state=state)
        m.gauge("pollerd_up_seconds", "Seconds since the daemon started.").set(
            max(0.0, self.clock() - rt.started))
        return web.Response(body=m.render().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    # ---- data ---------------------------------------------------------------------------------------------

    async def meters(self, request: web.Request) -> web.Response:
        return _json({"data": [ms.as_dict() for ms in self.runtime.meters.values()]})

    async def meter(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ms = self.runtime.meters.get(name)
        if ms is None:
            return _error(404, f"no meter named {name!r}")
        return _json({"data": ms.as_dict()})

    async def sinks(self, request: web.Request) -> web.Response:
        return _json({"data": [s.as_dict() for s in self.runtime.sinks.values()]})

    async def readings(self, request: web.Request) -> web.Response:
        q = _parse_query(request.query, _READINGS_PARAMS, ("meter", "channel", "archive"))
        async with self._query_slots:
            rows, total = await self.store.query_readings(**q.filters, page=q.page, per_page=q.per_page)
            return _json(_paged([r.as_dict() for r in rows], total, q.page, q.per_page))

    async def events(self, request: web.Request) -> web.Response:
        q = _parse_query(request.query, _EVENTS_PARAMS, ("meter",))
        async with self._query_slots:
            rows, total = await self.store.query_events(**q.filters, page=q.page, per_page=q.per_page)
            return _json(_paged([e.as_dict() for e in rows], total, q.page, q.per_page))


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, str(exc))
    except UnicodeError:
        # Percent-escapes that are not UTF-8 arrive as lone surrogates, which SQLite cannot bind.
        return _error(400, "the request is not valid UTF-8")
    except web.HTTPException as exc:
        if exc.status >= 400:
            resp = _error(exc.status, exc.reason)
            if "Allow" in exc.headers:  # 405 must say which methods are allowed (RFC 9110)
                resp.headers["Allow"] = exc.headers["Allow"]
            return resp
        raise
    except StoreError as exc:
        log.warning("api: %s %s: %s", request.method, request.path, exc)
        return _error(503, f"store unavailable: {exc}")
    except Exception:
        # CancelledError is a BaseException and passes through untouched.
        log.exception("api: %s %s failed", request.method, request.path)
        return _error(500, "internal error, see the daemon log")


RawHandler = Callable[[str, str], Awaitable[dict[str, Any]]]
PollHandler = Callable[[str], Awaitable[dict[str, Any]]]
_AUTH_KEY: web.AppKey[_Auth] = web.AppKey("pollerd.auth")  # aiohttp >= 3.9 (the floor in pyproject)
MAX_BODY = 64 * 1024   # a raw frame is a few hundred hex characters; nothing here needs more


class _Auth:
    """Bearer tokens with roles. Tokens are compared in constant time and never logged."""

    def __init__(self, tokens: Sequence[ApiToken], open_monitoring: bool = True) -> None:
        self.set(tokens, open_monitoring)

    def set(self, tokens: Sequence[ApiToken], open_monitoring: bool = True) -> None:
        """Replace the tokens (a reload applies them live; requests in flight keep the list they saw)."""
        self._tokens = [(t.token.reveal().encode(), t.role) for t in tokens]
        self.open_monitoring = open_monitoring

    def guard(self, handler: Callable[[web.Request], Awaitable[web.Response]], *,
              monitoring: bool = False) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A read endpoint: open while no token is configured (a gateway on 127.0.0.1 with no API users);
        once there is one, it needs a token of role read or admin, because whoever "enabled the API with a
        token" takes the data to be protected. Monitoring endpoints stay open unless open_monitoring is off:
        a Prometheus scraper or a health check rarely carries a token."""
        async def guarded(request: web.Request) -> web.Response:
            if self._tokens and not (monitoring and self.open_monitoring):
                denied = self.check(request, "read")
                if denied is not None:
                    return denied
            return await handler(request)
        return guarded

    @staticmethod
    def _unauthorized(message: str) -> web.Response:
        resp = _error(401, message)
        resp.headers["WWW-Authenticate"] = 'Bearer realm="pollerd"'  # RFC 6750 section 3
        return resp

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def role_of(self, given: str) -> str | None:
        """The role of ``given`` (the status pages' login cookie uses the same tokens), or None."""
        raw = given.encode("utf-8", "replace")
        found = None
        for token, token_role in self._tokens:  # no early exit: the time does not tell which token matched
            if hmac.compare_digest(raw, token):
                found = token_role
        return found

    def check(self, request: web.Request, role: str) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 9110 section 11.1)
            return self._unauthorized("this endpoint needs 'Authorization: Bearer <token>'")
        found = self.role_of(credentials.strip())
        if found is None:
            return self._unauthorized("unknown token")
        if role == "admin" and found != "admin":
            return _error(403, "this endpoint needs a token with role admin")
        return None


def make_app(*, runtime: Runtime, store: Store, metrics: Registry, clock: Callable[[], float] = time.time,
             health_limits: HealthLimits | None = None, tokens: Sequence[ApiToken] = (),
             open_monitoring: bool = True, raw: RawHandler | None = None, poll: PollHandler | None = None,
             meter_config: Callable[[str], MeterConfig | None] | None = None) -> web.Application:
    """``meter_config`` gives the status pages a meter's configured serial, ratios and time zone."""
    api = _Api(runtime, store, metrics, clock, health_limits or HealthLimits())
    auth = _Auth(tokens, open_monitoring)

    async def poll_now(request: web.Request) -> web.Response:
        """POST /api/meters/{name}/poll -> {"meter", "ok", "error", "readings": n, ...} (admin).
        One cycle now, ahead of scheduled requests on the meter's line; 409 while a cycle of that meter is
        already running."""
        denied = auth.check(request, "admin")
        if denied is not None:
            return denied
        name = request.match_info["name"]
        if name not in runtime.meters:
            return _error(404, f"no meter named {name!r}")
        if poll is None:
            return _error(503, "poll now is not available")
        try:
            return _json(await poll(name))
        except KeyError:
            return _error(404, f"no meter named {name!r}")
        except MeterBusy as exc:
            return _error(409, str(exc))

    async def raw_frame(request: web.Request) -> web.Response:
        """POST /api/meters/{name}/raw {"command": "HEX"} -> {"response": "HEX", "decoded": {...}} (admin)."""
        denied = auth.check(request, "admin")
        if denied is not None:
            return denied
        name = request.match_info["name"]
        if name not in runtime.meters:
            return _error(404, f"no meter named {name!r}")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, 'expected a JSON body like {"command": "00 08 11 11"}')
        command = body.get("command") if isinstance(body, dict) else None
        if not isinstance(command, str):
            return _error(400, 'expected a JSON body like {"command": "00 08 11 11"}')
        if raw is None:
            return _error(503, "raw frames are not available")
        try:
            return _json(await raw(name, command))
        except (ValueError, PollerdError) as exc:
            return _error(400 if isinstance(exc, (ValueError, ConfigError)) else 502, str(exc))

    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app[_AUTH_KEY] = auth
    app.router.add_post("/api/meters/{name}/raw", raw_frame)
    app.router.add_post("/api/meters/{name}/poll", poll_now)
    app.router.add_get("/health", auth.guard(api.health, monitoring=True))
    app.router.add_get("/metrics", auth.guard(api.metrics_text, monitoring=True))
    app.router.add_get("/api/meters", auth.guard(api.meters))
    app.router.add_get("/api/meters/{name}", auth.guard(api.meter))
    app.router.add_get("/api/sinks", auth.guard(api.sinks))
    app.router.add_get("/api/readings", auth.guard(api.readings))
    app.router.add_get("/api/events", auth.guard(api.events))

    async def openapi(request: web.Request) -> web.Response:
        return _json(document())

    app.router.add_get("/api/openapi.json", openapi)
    mount_pages(app, WebPages(runtime=runtime, store=store, metrics=metrics, clock=clock, health=api.health_report, roles=auth,
                              poll=poll, raw=raw, meter_config=meter_config))
    return app


def set_tokens(app: web.Application, tokens: Sequence[ApiToken], open_monitoring: bool = True) -> None:
    """Apply new API tokens (and whether monitoring needs one) to a running app (config reload)."""
    app[_AUTH_KEY].set(tokens, open_monitoring)


async def start_api(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; returns the runner (``await runner.cleanup()`` to stop) and the bound
    port, which is the real one when ``port`` is 0."""
    # A request still running at shutdown gets 5 s, not aiohttp's 60: the unit's TimeoutStopSec is 30 s and
    # the meters, the store and the sinks need their share of it.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, bound
