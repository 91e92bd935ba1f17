"""A local fake of the RS-Tech "universal data collection server" Web API (seed 000), for tests and benchmarks.

It implements what the document says and what pollerd must cope with:

* sign-in with e-mail and password returns the token headers (access-token, client, uid, token-type, expiry);
  every authenticated reply carries a NEW access-token and the previous one is dead at once, so a client
  that sends two requests at the same time, or replays an old token, gets 401 (counted in ``replays``);
* customers, stations, equipment_types, channel_archive_types and channel_data (archives hourly, daily,
  monthly, yearly, nesht and settings) paginated with ``page`` / ``per_page`` (at most 1000) and
  ``total_pages``, ``current_page``, ``next_page`` (null on the last page); archive records newest first
  and filtered by ``fp_start`` .. ``fp_end`` (dates, inclusive, UTC);
* sign_out invalidates the session;
* faults injected per request (:meth:`RstechServer.fail`): an HTML error page (that echoes the caller's
  token and password, as careless servers do), HTML with status 200, truncated JSON, wrong types, missing
  fields, a page that repeats itself, an expired session, a hang.

Loopback only; nothing here reaches the internet.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as _dt
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

MAX_PER_PAGE = 1000
FAULTS = ("html500", "html200", "truncated", "wrong_type", "missing_field", "repeat", "expire", "hang")


@dataclass
class Fault:
    path: str                        # "stations", "channel_data", ...
    kind: str                        # one of FAULTS
    match: Mapping[str, str] = field(default_factory=dict)   # query parameters that must all match
    times: int = 1


def _date(text: str | None, default: _dt.date) -> _dt.date:
    return _dt.date.fromisoformat(text) if text else default


class RstechServer:
    def __init__(self, *, email: str = "api@local.net", password: str = "Str0ngPas$", base: str = "/api/v1",
                 default_per_page: int = 25) -> None:
        self.email, self.password, self.base = email, password, base
        self.default_per_page = default_per_page
        self.customers: list[dict[str, Any]] = []
        self.stations: list[dict[str, Any]] = []
        self.equipment_types: list[dict[str, Any]] = []
        self.channels: list[dict[str, Any]] = []
        # (station id, archive) -> {event_time: channel_data list}
        self.archives: dict[tuple[int, str], dict[int, list[dict[str, Any]]]] = collections.defaultdict(dict)
        self.settings: dict[int, list[dict[str, Any]]] = {}
        self.faults: list[Fault] = []
        self._tokens: dict[str, str] = {}        # client -> current access-token
        self._dead: set[str] = set()             # tokens already used (rotated away)
        self.requests: collections.Counter[str] = collections.Counter()   # path -> count
        self.log: list[tuple[str, dict[str, str]]] = []                    # (path, query) of every GET
        self.pages_served = 0                    # replies with a page of data (status 200, paginated)
        self.sign_ins = self.sign_outs = self.rejected = self.replays = 0
        self.in_flight = self.max_in_flight = 0  # per server; pollerd's session must keep this at 1
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url = ""

    # -- data -------------------------------------------------------------------------------------------

    def add_station(self, sid: int, *, equipment_id: int | None = None, equipment_type_id: int = 1,
                    customer_id: int = 1, name: str | None = None, last_session: int | None = None,
                    brand: str = "БК") -> dict[str, Any]:
        st = {"id": sid, "name": name or f"station {sid}", "seances_event_time": last_session,
              "equipment_type_id": equipment_type_id, "equipment_brand_name": brand, "phone": "",
              "equipment_id": equipment_id if equipment_id is not None else 1000 + sid,
              "customer_id": customer_id}
        self.stations.append(st)
        return st

    def station(self, sid: int) -> dict[str, Any]:
        return next(s for s in self.stations if s["id"] == sid)

    def add_record(self, sid: int, archive: str, event_time: int, values: Mapping[str, Any]) -> None:
        self.archives[(sid, archive)][event_time] = [{k: v} for k, v in values.items()]
        st = self.station(sid)
        # a record arrives in a communication session
        st["seances_event_time"] = max(st["seances_event_time"] or 0, event_time)

    def fail(self, path: str, kind: str, times: int = 1, **match: object) -> None:
        assert kind in FAULTS, kind
        self.faults.append(Fault(path, kind, {k: str(v) for k, v in match.items()}, times))

    def expire_sessions(self) -> None:
        """The server forgets every token (restart, expiry): the next request gets 401."""
        self._dead.update(self._tokens.values())
        self._tokens.clear()

    # -- server -----------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        b = self.base
        app.router.add_post(f"{b}/auth/sign_in", self._sign_in)
        app.router.add_delete(f"{b}/auth/sign_out", self._sign_out)
        for name in ("customers", "stations", "equipment_types", "channel_archive_types", "channel_data"):
            app.router.add_get(f"{b}/{name}", self._handler(name))
        app.router.add_get(f"{b}/_stats", self._stats)   # for benchmarks in another process; not in the API
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        real = self._runner.addresses[0]  # the bound (host, port) when port 0 asked for a free one
        self.url = f"http://{real[0]}:{real[1]}{b}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _stats(self, request: web.Request) -> web.Response:
        if request.query.get("add_hour"):  # benchmark: one more hourly record at every station
            t = int(request.query["add_hour"])
            for st in self.stations:
                self.archives[(st["id"], "hourly")][t] = [{"P": 1.0}, {"T": 20.0}, {"Vnakwork": 1.0},
                                                         {"Vnakpriv": 1.0}]
                st["seances_event_time"] = t
        return web.json_response({"requests": dict(self.requests), "pages_served": self.pages_served,
                                  "sign_ins": self.sign_ins, "sign_outs": self.sign_outs,
                                  "rejected": self.rejected, "max_in_flight": self.max_in_flight})

    def _token_headers(self, client: str) -> dict[str, str]:
        tok = secrets.token_urlsafe(16)
        self._tokens[client] = tok
        return {"access-token": tok, "token-type": "Bearer", "client": client,
                "expiry": str(int(_dt.datetime.now().timestamp()) + 14 * 86400), "uid": self.email}

    async def _sign_in(self, request: web.Request) -> web.Response:
        self.requests["sign_in"] += 1
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"errors": ["bad request"]}, status=400)
        if not isinstance(body, dict) or body.get("email") != self.email or body.get("password") != self.password:
            self.rejected += 1
            return web.json_response({"success": False,
                                      "errors": ["Invalid login credentials. Please try again."]}, status=401)
        self.sign_ins += 1
        client = secrets.token_urlsafe(12)
        return web.json_response({"data": {"id": 6, "email": self.email, "provider": "email", "uid": self.email,
                                           "name": "API user"}}, headers=self._token_headers(client))

    def _authenticate(self, request: web.Request) -> str | None:
        h = request.headers
        client, token = h.get("client", ""), h.get("access-token", "")
        if h.get("uid") != self.email or self._tokens.get(client) != token or not token:
            self.rejected += 1
            if token in self._dead:
                self.replays += 1
            return None
        # rotate now, before any await: a second request carrying the same token is a replay
        self._dead.add(token)
        return client

    async def _sign_out(self, request: web.Request) -> web.Response:
        self.requests["sign_out"] += 1
        client = self._authenticate(request)
        if client is None:
            return web.json_response({"success": False, "errors": ["User was not found or was not logged in."]},
                                     status=404)
        del self._tokens[client]
        self.sign_outs += 1
        return web.json_response({"success": True})

    def _fault(self, name: str, query: Mapping[str, str]) -> str | None:
        for f in self.faults:
            if f.path == name and f.times > 0 and all(query.get(k) == v for k, v in f.match.items()):
                f.times -= 1
                return f.kind
        return None

    def _handler(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests[name] += 1
            self.log.append((name, dict(request.query)))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                return await self._serve(name, request)
            finally:
                self.in_flight -= 1
        return handle

    async def _serve(self, name: str, request: web.Request) -> web.StreamResponse:
        q = request.query
        fault = self._fault(name, q)
        if fault == "expire":
            self.expire_sessions()
        client = self._authenticate(request)
        if client is None:
            return web.json_response({"errors": ["You need to sign in or sign up before continuing."]},
                                     status=401)
        headers = self._token_headers(client)
        if fault == "hang":  # until the server stops
            await self._stopping.wait()
        if fault in ("html500", "html200"):
            # a proxy error page that echoes the request, token and all
            echo = f"access-token={request.headers.get('access-token')} password={self.password} " \
                   f"{request.path_qs}"
            html = f"<html><head><title>Internal Server Error</title></head><body><h1>We're sorry, but " \
                   f"something went wrong.</h1><pre>{echo}</pre></body></html>"
            return web.Response(status=500 if fault == "html500" else 200, text=html, content_type="text/html",
                                headers=headers)
        try:
            page = int(q.get("page", "1"))
            per_page = min(int(q.get("per_page", str(self.default_per_page))), MAX_PER_PAGE)
        except ValueError:
            return web.json_response({"errors": ["page and per_page are integers"]}, status=422,
                                     headers=headers)
        if page < 1 or per_page < 1:
            return web.json_response({"errors": ["page and per_page start at 1"]}, status=422, headers=headers)
        try:
            items = self._items(name, q)
        except (KeyError, ValueError) as exc:
            return web.json_response({"errors": [f"bad parameter: {exc}"]}, status=422, headers=headers)
        total = max(1, math.ceil(len(items) / per_page))
        doc: dict[str, Any] = {"data": items[(page - 1) * per_page: page * per_page], "total_pages": total,
                               "current_page": page, "next_page": page + 1 if page < total else None}
        if fault == "repeat":
            doc["current_page"], doc["next_page"] = max(1, page - 1), page
            doc["data"] = items[max(0, page - 2) * per_page: max(1, page - 1) * per_page]
        elif fault == "wrong_type":
            if doc["data"] and isinstance(doc["data"][0], dict) and "channel_data" in doc["data"][0]:
                doc["data"][0] = {**doc["data"][0], "channel_data": [{"T": "twenty"}]}
            elif doc["data"]:
                doc["data"][0] = {**doc["data"][0], "id": "eighteen"}
            else:
                doc["data"] = "none"
        elif fault == "missing_field":
            if doc["data"]:
                doc["data"][0] = {k: v for k, v in doc["data"][0].items() if k not in ("event_time", "id")}
            else:
                del doc["data"]
        body = orjson.dumps(doc)
        if fault == "truncated":
            body = body[: max(1, len(body) // 2)]
        self.pages_served += 1
        return web.Response(body=body, content_type="application/json", headers=headers)

    def _items(self, name: str, q: Mapping[str, str]) -> list[Any]:
        if name == "customers":
            return self.customers
        if name == "stations":
            return self.stations
        if name == "equipment_types":
            return self.equipment_types
        if name == "channel_archive_types":
            tid = int(q["equipment_type_id"])
            return [c for c in self.channels if c["equipment_type_id"] == tid]
        # channel_data
        archive, sid, eid = q["archive_type"], int(q["station_id"]), int(q["equipment_id"])
        st = self.station(sid)
        if st["equipment_id"] != eid:
            raise ValueError(f"equipment {eid} is not at station {sid}")
        if archive == "settings":
            return self.settings.get(sid, [])
        if archive not in ("hourly", "daily", "monthly", "yearly", "nesht"):
            raise ValueError(f"unknown archive_type {archive!r}")
        start = _date(q.get("fp_start"), _dt.date.min)
        end = _date(q.get("fp_end"), _dt.date.max)
        recs = self.archives.get((sid, archive), {})
        out = []
        for t in sorted(recs, reverse=True):  # newest first, as the document's example
            d = _dt.datetime.fromtimestamp(t, _dt.timezone.utc).date()
            if start <= d <= end:
                out.append({"event_time": t, "channel_data": recs[t]})
        return out


# The channel dictionary of seed 000 §3.4.2 (corrector БК = type 1, Флоугаз = type 2).
SEED_CHANNELS: list[tuple[int, str, str, str, str]] = [
    (1, "monthly", "Vwork", "Рабочий объем", "м<sup>3</sup>"),
    (1, "monthly", "Vpriv", "Приведенный объем", "м<sup>3</sup>"),
    (1, "monthly", "Vnakwork", "Накопленный рабочий объем", "м<sup>3</sup>"),
    (1, "monthly", "Vnakpriv", "Накопленный приведенный объем", "м<sup>3</sup>"),
    (1, "daily", "P", "Давление", "кгс/см<sup>2</sup>"),
    (1, "daily", "T", "Температура", "°С"),
    (1, "daily", "Vwork", "Рабочий объем", "м<sup>3</sup>"),
    (1, "daily", "Vpriv", "Приведенный объем", "м<sup>3</sup>"),
    (1, "daily", "Vnakwork", "Накопленный рабочий объем", "м<sup>3</sup>"),
    (1, "daily", "Vnakpriv", "Накопленный приведенный объем", "м<sup>3</sup>"),
    (1, "hourly", "P", "Давление", "кгс/см<sup>2</sup>"),
    (1, "hourly", "T", "Температура", "°С"),
    (1, "hourly", "Vnakwork", "Накопленный рабочий объем", "м<sup>3</sup>"),
    (1, "hourly", "Vnakpriv", "Накопленный приведенный объем", "м<sup>3</sup>"),
    (2, "daily", "P", "Среднее давление", "кПа"),
    (2, "daily", "T", "Средняя температура", "°С"),
    (2, "daily", "Vwork", "Общий накопленный объем РУ", "м<sup>3</sup>"),
    (2, "daily", "Vst", "Общий накопленный объем СУ", "м<sup>3</sup>"),
    (2, "hourly", "P", "Среднее давление", "кПа"),
    (2, "hourly", "T", "Средняя температура", "°С"),
    (2, "hourly", "Vwork", "Общий накопленный объем РУ", "м<sup>3</sup>"),
    (2, "hourly", "Vst", "Общий накопленный объем СУ", "м<sup>3</sup>"),
]
_ARCHIVE_NAMES = {"hourly": "Часовой архив показаний", "daily": "Суточный архив показаний",
                  "monthly": "Месячный архив показаний", "yearly": "Годовой архив показаний",
                  "nesht": "Архив нештатных ситуаций"}


def seed_dictionaries(server: RstechServer) -> None:
    """Customers, equipment types and channels as in the document's examples."""
    server.customers = [{"id": 1, "name": "O'ZBEKISTON YENGIL ATLETIKA FEDERATSIYASI",
                         "subdivision_type_name": "Владелец ПУУ", "inn": "0204875446",
                         "contact_number": "+998-91-381-18-88"},
                        {"id": 2, "name": "Coca-Cola Ichimligi Uzbekistan", "subdivision_type_name": "Владелец ПУУ",
                         "inn": "0300943875", "contact_number": ""}]
    server.equipment_types = [
        {"id": 1, "name": "БК", "equipment_kind_name": "Корректор", "telemetry_type_name": "ББТ-3",
         "resource_name": "Газ", "description": "Корректор объема газа БК"},
        {"id": 2, "name": "Флоугаз", "equipment_kind_name": "Корректор", "telemetry_type_name": "ББТ-3",
         "resource_name": "Газ", "description": "Корректор объема газа Флоугаз"}]
    server.channels = [{"equipment_type_id": t, "archive_type_name": _ARCHIVE_NAMES[a], "archive_type_varname": a,
                        "channel_name": n, "channel_varname": c, "unit_name": u}
                       for t, a, c, n, u in SEED_CHANNELS]


def hourly_account(server: RstechServer, *, stations: int, hours: int, end: int) -> None:
    """``stations`` БК stations, each with ``hours`` hourly records ending at ``end`` (an hour boundary)."""
    seed_dictionaries(server)
    for sid in range(1, stations + 1):
        server.add_station(sid, customer_id=1 + sid % 2)
        rec = server.archives[(sid, "hourly")]
        for h in range(hours):
            t = end - h * 3600
            rec[t] = [{"P": round(1.0 + sid * 1e-4, 6)}, {"T": 20.0 + h / 10}, {"Vnakwork": 1000.0 + sid + h},
                      {"Vnakpriv": 900.0 + sid + h}]
        server.station(sid)["seances_event_time"] = end
