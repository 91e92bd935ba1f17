"""A local SAURES API (seed 002) for tests: form login -> sid, flats, controllers and meters per flat, on
127.0.0.1. Sessions expire on demand (or after a number of requests) the way the real server says so:
HTTP 200 with ``status = "bad"`` and a ``WrongSIDException`` error."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from helpers import serve

EMAIL = "demo@example.org"
PASSWORD = "pa55 w0rd: any text"


def ok(data: Any) -> web.Response:
    return web.json_response({"status": "ok", "errors": [], "data": data})


def bad(name: str, msg: str) -> web.Response:
    return web.json_response({"status": "bad", "errors": [{"name": name, "msg": msg}], "data": {}})


@dataclass
class FakeSaures:
    email: str = EMAIL
    password: str = PASSWORD
    flats: list[dict[str, Any]] = field(default_factory=list)
    sensors: dict[int, list[dict[str, Any]]] = field(default_factory=dict)   # flat id -> sensors
    sid_lifetime: int | None = None          # requests a sid serves before it expires
    expire_with_401: bool = False            # say "expired" with HTTP 401 instead of WrongSIDException
    # path or "flat <id>" -> "html" | "truncated" | "wrongtype" | "http500": those replies misbehave
    broken: dict[str, str] = field(default_factory=dict)
    sids: dict[str, int] = field(default_factory=dict)    # live sid -> requests served
    requests: list[str] = field(default_factory=list)
    logins: int = 0

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/api/auth/login", self.login)
        self.app.router.add_get("/api/company/flats", self.get_flats)
        self.app.router.add_get("/api/meter/meters/", self.get_meters)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self.runner, self.url = await serve(self.app)
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def expire_all(self) -> None:
        self.sids.clear()

    async def login(self, request: web.Request) -> web.Response:
        self.requests.append("login")
        form = await request.post()
        if form.get("email") != self.email or form.get("password") != self.password:
            # echo the password back, as careless servers do: the driver must scrub it
            return bad("WrongCredentialsException", f"Неверный логин или пароль {form.get('password')}")
        self.logins += 1
        sid = str(uuid.uuid4())
        self.sids[sid] = 0
        return ok({"role": 1, "sid": sid})

    def _session(self, request: web.Request) -> web.Response | None:
        sid = request.query.get("sid", "")
        if sid not in self.sids:
            if self.expire_with_401:
                return web.Response(status=401, text="Unauthorized")
            return bad("WrongSIDException", f"Неверный sid {sid}")
        self.sids[sid] += 1
        if self.sid_lifetime is not None and self.sids[sid] > self.sid_lifetime:
            del self.sids[sid]
            return bad("WrongSIDException", "Неверный sid")
        return None

    def _broken(self, key: str, data: Any, request: web.Request) -> web.Response | None:
        mode = self.broken.get(key)
        if mode == "html":
            # like a proxy's error page that repeats the request line, session id included
            return web.Response(text="<html><head><title>503 Service Unavailable</title></head>"
                                     f"<body>{request.path_qs} try later</body></html>", content_type="text/html")
        if mode == "http500":
            return web.Response(status=500, text="boom", content_type="text/plain")
        if mode == "truncated":
            whole = ok(data).body
            return web.Response(body=whole[: len(whole) * 2 // 3], content_type="application/json")  # type: ignore
        if mode == "wrongtype":
            return ok({"flats": "many"} if key == "flats" else {"sensors": [{"sn": "1", "meters": [
                {"sn": "x", "type": {"number": 1}, "value": "12 litres"}]}]})
        return None

    async def get_flats(self, request: web.Request) -> web.Response:
        self.requests.append("flats")
        data = {"flats": self.flats}
        return self._session(request) or self._broken("flats", data, request) or ok(data)

    async def get_meters(self, request: web.Request) -> web.Response:
        fid = int(request.query.get("flat_id", "-1"))
        self.requests.append(f"flat {fid}")
        data = {"sensors": copy.deepcopy(self.sensors.get(fid, []))}
        return self._session(request) or self._broken(f"flat {fid}", data, request) or ok(data)


def sample(fake: FakeSaures) -> FakeSaures:
    """The seed's example: flat 106 with a controller holding hot and cold water, temperature, leak and a
    multi-tariff electricity meter in state 1 ("Обрыв"); flat 39 with a gas meter and a valve; flat 7
    disabled."""
    fake.flats = [
        {"house": "Город Москва, улица Большая Черемушкинская, дом 13с4", "enable": True,
         "personal_account": "12345678", "id": 106, "number": "25"},
        {"house": "Город Москва, улица Партизанская, дом 51 корпус 2", "enable": True,
         "personal_account": "", "id": 39, "number": "офис 25"},
        {"house": "x", "enable": False, "personal_account": "", "id": 7, "number": "1"},
    ]
    ok0 = {"name": "Ошибок нет", "number": 0}
    fake.sensors = {
        106: [{
            "last_connection": "15.09.2017 09:00", "hardware": "3.4", "request_dt": "15.09.2017 09:00",
            "readout_dt": "15.09.2017 08:55", "bat": 75, "ssid": "kv200", "local_ip": "192.168.1.50",
            "firmware": "3.4.0004", "state": ok0, "sn": "692083", "rssi": "-73",
            "meters": [
                {"meter_name": "Горячая вода / Ванная комната", "value": "99896", "state": ok0,
                 "sn": "13-02-26472-AB", "vals": [], "type": {"name": "Горячая вода", "number": 2}},
                {"meter_name": "", "value": "135494", "state": ok0, "sn": "13-04-26051-AB", "vals": [],
                 "type": {"name": "Холодная вода", "number": 1}},
                {"meter_name": "", "value": "25.6", "state": ok0, "sn": "227714-4", "vals": [],
                 "type": {"name": "Температура", "number": 5}},
                {"meter_name": "", "value": "0", "state": ok0, "sn": "227714-3", "vals": [],
                 "type": {"name": "Протечка", "number": 4}},
                {"meter_name": "Многотарифный счетчик электричества", "value": "5.0",
                 "state": {"name": "Обрыв", "number": 1}, "sn": "AA123-88",
                 "vals": [{"type": "T1", "value": "2.3"}, {"type": "T3", "value": "2.7"}],
                 "type": {"name": "Электричество", "number": 8}},
            ],
        }],
        39: [{
            "last_connection": "15.09.2017 10:30", "readout_dt": "15.09.2017 10:30", "bat": 100, "rssi": -60,
            "state": ok0, "sn": "700001",
            "meters": [
                {"meter_name": "Газ", "value": 1234567, "state": ok0, "sn": "G-1", "vals": [],
                 "type": {"name": "Газ", "number": 3}},
                {"meter_name": "Кран", "value": "2", "state": ok0, "sn": "", "vals": [],
                 "type": {"name": "Кран состояние", "number": 10}},
                {"meter_name": "?", "value": "1", "state": ok0, "sn": "N-1", "vals": [],
                 "type": {"name": "Новый тип", "number": 42}},
            ],
        }],
        7: [{"sn": "should-not-be-read", "meters": []}],
    }
    return fake
