"""The local HTTP API, served by start_api on 127.0.0.1:0, against the real Store."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
import re
from dataclasses import dataclass

import aiohttp
import pytest

from pollerd.api import PER_PAGE_MAX, QUERY_SLOTS, HealthLimits, make_app, parse_time, start_api
from pollerd.errors import StoreError
from pollerd.metrics import Registry
from pollerd.model import Event, Reading
from pollerd.state import LineState, MeterState, Runtime, SinkState
from pollerd.store import Store

T0 = 1_700_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    runtime: Runtime
    store: Store
    metrics: Registry
    clock: Clock
    http: aiohttp.ClientSession
    base: str

    async def get(self, path: str, **params: object) -> tuple[int, object, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, params={k: str(v) for k, v in params.items()}) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body, r

    async def get_raw(self, path_and_query: str) -> tuple[int, object]:
        async with self.http.get(self.base + path_and_query) as r:
            return r.status, await r.json()


def make_runtime() -> Runtime:
    rt = Runtime(gateway="gw1", started=T0)
    rt.lines["bus1"] = LineState("bus1", "serial", connected=True)
    rt.meters["m1"] = MeterState("m1", "mercury230", "bus1", 1, interval=60.0, last_ok=T0)
    rt.meters["m2"] = MeterState("m2", "mercury230", "bus1", 2, interval=900.0, last_ok=T0)
    rt.sinks["up"] = SinkState("up", "http")
    return rt


async def serve(tmp_path, store=None, limits: HealthLimits | None = None):
    own_store = store is None
    if store is None:
        store = await Store.open(tmp_path / "api.db", commit_interval=0.01)
    rt, metrics, clock = make_runtime(), Registry(), Clock()
    app = make_app(runtime=rt, store=store, metrics=metrics, clock=clock, health_limits=limits)
    runner, port = await start_api(app, "127.0.0.1", 0)
    http = aiohttp.ClientSession()
    env = Env(rt, store, metrics, clock, http, f"http://127.0.0.1:{port}")

    async def stop() -> None:
        await http.close()
        await runner.cleanup()
        if own_store:
            await store.close()

    return env, stop


@pytest.fixture
async def env(tmp_path):
    e, stop = await serve(tmp_path)
    yield e
    await stop()


def many_readings(n: int) -> list[Reading]:
    out = []
    for i in range(n):
        out.append(Reading("m1", "A+", "profile", int(T0) + 1800 * i, float(i), "Wh"))
    return out


# ---- /health ---------------------------------------------------------------------------------------------

async def test_start_api_reports_the_bound_port(env):
    port = int(env.base.rsplit(":", 1)[1])
    assert port > 0
    status, body, _ = await env.get("/health")
    assert (status, body) == (200, {"status": "ok", "reasons": [], "warnings": []})


async def test_health_store_not_writable(env):
    env.runtime.store_ok = False
    env.runtime.store_error = "disk I/O error"
    status, body, _ = await env.get("/health")
    assert status == 503 and body["status"] == "fail"
    assert body["reasons"] == ["store not writable: disk I/O error"]
    env.runtime.store_ok = True
    assert (await env.get("/health"))[0] == 200


async def test_health_line_down(env):
    line = env.runtime.lines["bus1"]
    line.connected = False
    assert (await env.get("/health"))[0] == 200          # not tried yet: starting, not down
    line.last_error = "ECONNREFUSED"
    line.down_since = T0 - 60
    status, body, _ = await env.get("/health")     # down for less than its budget: a warning only
    assert (status, body["warnings"]) == (200, ["line bus1 down: ECONNREFUSED (for 60 s)"])
    line.down_since = T0 - 121
    status, body, _ = await env.get("/health")
    assert status == 503
    assert body["reasons"] == ["line bus1 down: ECONNREFUSED (for 121 s > 120 s)"]
    env.runtime.lines["spare"] = LineState("spare", "tcp", connected=False, last_error="refused")
    line.connected = True
    assert (await env.get("/health"))[0] == 200          # a line no meter uses does not count


async def test_health_meter_silent_budget(env):
    # m1: interval 60 -> budget max(3*60, 300) = 300; m2: interval 900 -> 2700
    env.clock.now = T0 + 300
    assert (await env.get("/health"))[0] == 200
    env.clock.now = T0 + 301
    env.runtime.last_stored = env.clock.now   # other meters' readings keep arriving
    status, body, _ = await env.get("/health")
    assert status == 503
    assert len(body["reasons"]) == 1 and body["reasons"][0].startswith("meter m1 silent 301 s > 300 s")
    env.clock.now = env.runtime.last_stored = T0 + 2701
    env.runtime.meters["m1"].last_ok = env.clock.now - 10
    status, body, _ = await env.get("/health")
    assert status == 503 and [r.split(" silent")[0] for r in body["reasons"]] == ["meter m2"]


async def test_health_meter_never_answered_counts_from_start(env):
    m = env.runtime.meters["m1"]
    m.last_ok, m.last_error = None, "timeout after 1.0 s"
    env.clock.now = T0 + 299
    assert (await env.get("/health"))[0] == 200
    env.clock.now = env.runtime.last_stored = T0 + 301
    status, body, _ = await env.get("/health")
    assert status == 503
    assert "never answered" in body["reasons"][0] and "timeout after 1.0 s" in body["reasons"][0]


async def test_health_no_reading_stored_budget(env):
    # Every meter answers, yet nothing reaches the store: 3 x the shortest period (60 s), at least 300 s.
    for m in env.runtime.meters.values():
        m.last_ok = T0 + 1000
    env.runtime.last_stored = T0 + 10
    env.clock.now = T0 + 310
    assert (await env.get("/health"))[0] == 200
    env.clock.now = T0 + 311
    status, body, _ = await env.get("/health")
    assert (status, body["reasons"]) == (503, ["no reading stored for 301 s > 300 s"])
    env.runtime.last_stored = None                 # never stored anything: counts from the start
    status, body, _ = await env.get("/health")
    assert body["reasons"] == ["no reading stored for 311 s > 300 s"]
    env.runtime.meters.clear()                     # no meters configured: nothing is expected
    assert (await env.get("/health"))[0] == 200


async def test_health_shows_runtime_warnings(env):
    env.runtime.warnings["reload"] = "reload failed, still running the previous config: p.toml:3: x: bad"
    status, body, _ = await env.get("/health")
    assert (status, body["warnings"]) == (200, [env.runtime.warnings["reload"]])


async def test_health_silent_factor_is_configurable(tmp_path):
    env, stop = await serve(tmp_path, limits=HealthLimits(silent_factor=10.0, silent_min=60.0))
    try:
        env.clock.now = T0 + 599       # m1: 10 * 60 = 600
        assert (await env.get("/health"))[0] == 200
        env.clock.now = T0 + 601
        assert (await env.get("/health"))[0] == 503
    finally:
        await stop()


async def test_health_degraded_is_a_warning_by_default(env, tmp_path):
    m = env.runtime.meters["m2"]
    m.degraded, m.degraded_reason = True, "serial 123 != 456"
    status, body, _ = await env.get("/health")
    assert status == 200
    assert body["warnings"] == ["meter m2 degraded: serial 123 != 456"]
    strict, stop = await serve(tmp_path, store=env.store, limits=HealthLimits(degraded_is_failure=True))
    try:
        strict.runtime.meters["m2"].degraded = True
        status, body, _ = await strict.get("/health")
        assert status == 503 and body["reasons"][0].startswith("meter m2 degraded")
    finally:
        await stop()


async def test_health_sink_lag(env):
    sink = env.runtime.sinks["up"]
    sink.lag_seconds, sink.lag_rows = 3600.0, 10
    assert (await env.get("/health"))[0] == 200
    sink.lag_seconds = 3601.0
    status, body, _ = await env.get("/health")
    assert status == 503 and body["reasons"] == ["sink up lag 3601 s > 3600 s (10 rows)"]


async def test_health_sink_alarms(env):
    env.runtime.sinks["up"].alarms["document 2024-05-01"] = "failed by АС СиОИ: E1"
    status, body, _ = await env.get("/health")
    assert status == 503 and body["reasons"] == ["sink up document 2024-05-01: failed by АС СиОИ: E1"]
    env.runtime.sinks["up"].alarms.clear()
    assert (await env.get("/health"))[0] == 200


async def test_health_parked_batches(env):
    await env.store.write(many_readings(3))
    await env.store.park("other", 1, 3, "HTTP 400")       # a sink not configured any more: ignored
    assert (await env.get("/health"))[0] == 200
    await env.store.park("up", 1, 2, "HTTP 400")
    status, body, _ = await env.get("/health")
    assert status == 503 and body["reasons"] == ["sink up has 1 parked (refused) batch(es): pollerd parked"]
    [p] = await env.store.parked("up")
    assert await env.store.unpark(p["id"])
    assert (await env.get("/health"))[0] == 200


# ---- /metrics --------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_metrics(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        value = float(m.group(4))
        assert not math.isnan(value)
        samples[line.rsplit(" ", 1)[0]] = value
    return samples


async def test_metrics_text(env):
    await env.store.write(many_readings(7))
    env.runtime.meters["m2"].degraded = True
    env.metrics.counter("pollerd_polls_total", "Polls.", ("meter",)).inc(3, meter="m1")
    env.clock.now = T0 + 42
    status, text, resp = await env.get("/metrics")
    assert status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    s = parse_metrics(text)
    assert s["pollerd_store_rows"] == 7
    assert s["pollerd_store_bytes"] > 0
    # The states /api/meters shows, counted the same way (m1 polled fine; m2 degraded).
    shown = collections.Counter(m["state"] for m in (await env.get("/api/meters"))[1]["data"])
    for state in ("pending", "ok", "partial", "failing", "degraded"):
        assert s[f'pollerd_meters{{state="{state}"}}'] == shown[state], state
    assert s['pollerd_meters{state="degraded"}'] == 1
    assert s["pollerd_up_seconds"] == 42
    assert s['pollerd_polls_total{meter="m1"}'] == 3
    # gauges are refreshed at each scrape
    await env.store.write(many_readings(9))
    s = parse_metrics((await env.get("/metrics"))[1])
    assert s["pollerd_store_rows"] == 9


# ---- /api/meters -----------------------------------------------------------------------------------------

async def test_meters(env):
    env.runtime.meters["m1"].identity = {"serial": "12345678"}
    status, body, _ = await env.get("/api/meters")
    assert status == 200
    assert body == {"data": [env.runtime.meters["m1"].as_dict(), env.runtime.meters["m2"].as_dict()]}
    status, body, _ = await env.get("/api/meters/m1")
    assert status == 200 and body["data"]["identity"] == {"serial": "12345678"}
    status, body, _ = await env.get("/api/meters/nope")
    assert status == 404 and "nope" in body["error"]


async def test_sinks(env):
    # The sink state docs/api.md points at (connected, failing_since, last_error, alarms) is served.
    st = env.runtime.sinks["up"]
    st.last_error, st.failing_since, st.alarms["upstream"] = "HTTP 503", T0 - 12, "login refused"
    status, body, _ = await env.get("/api/sinks")
    assert status == 200 and body == {"data": [st.as_dict()]}
    assert body["data"][0]["connected"] is False and body["data"][0]["failing_since"] == T0 - 12
    assert body["data"][0]["alarms"] == {"upstream": "login refused"}


async def test_unknown_path_is_json_404(env):
    status, body, _ = await env.get("/api/nothing")
    assert status == 404 and "error" in body


# ---- /api/readings ---------------------------------------------------------------------------------------

async def test_readings_paging(env):
    rs = many_readings(25)
    await env.store.write(rs)
    got = []
    page, seen_pages = 1, []
    while page is not None:
        status, body, _ = await env.get("/api/readings", page=page, per_page=10)
        assert status == 200
        assert body["total_pages"] == 3 and body["total"] == 25 and body["current_page"] == page
        seen_pages.append((page, len(body["data"]), body["next_page"]))
        got.extend(body["data"])
        page = body["next_page"]
    assert seen_pages == [(1, 10, 2), (2, 10, 3), (3, 5, None)]
    assert got == [r.as_dict() for r in rs]
    status, body, _ = await env.get("/api/readings", page=4, per_page=10)
    assert (status, body["data"], body["next_page"], body["total_pages"]) == (200, [], None, 3)
    # default per_page is 100: everything on one page
    status, body, _ = await env.get("/api/readings")
    assert (len(body["data"]), body["total_pages"], body["next_page"]) == (25, 1, None)
    # exact multiple: the last page has no next
    status, body, _ = await env.get("/api/readings", page=5, per_page=5)
    assert (body["total_pages"], body["next_page"], len(body["data"])) == (5, None, 5)


async def test_readings_empty(env):
    status, body, _ = await env.get("/api/readings")
    assert status == 200
    assert body == {"data": [], "total": 0, "total_pages": 0, "current_page": 1, "next_page": None}


async def test_readings_filters(env):
    rs = many_readings(6) + [Reading("m2", "U.L1", "current", int(T0), 230.1, "V"),
                             Reading("m2", "A+", "current", int(T0), 5.0, "Wh")]
    await env.store.write(rs)
    status, body, _ = await env.get("/api/readings", meter="m2")
    assert {(d["meter"], d["channel"]) for d in body["data"]} == {("m2", "U.L1"), ("m2", "A+")}
    status, body, _ = await env.get("/api/readings", channel="A+", archive="current")
    assert [d["meter"] for d in body["data"]] == ["m2"]
    # from inclusive, to exclusive: profile rows at T0+1800*i
    status, body, _ = await env.get("/api/readings", meter="m1", **{"from": int(T0) + 1800, "to": int(T0) + 5400})
    assert [d["ts"] for d in body["data"]] == [int(T0) + 1800, int(T0) + 3600]
    iso_from = dt.datetime.fromtimestamp(T0 + 1800, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, body, _ = await env.get("/api/readings", meter="m1", **{"from": iso_from})
    assert status == 200 and body["total"] == 5
    # an offset, with "+" correctly escaped and left raw (arrives as a space)
    iso3 = dt.datetime.fromtimestamp(T0 + 1800, dt.timezone(dt.timedelta(hours=3))).isoformat()
    status, body, _ = await env.get("/api/readings", meter="m1", **{"from": iso3})
    assert status == 200 and body["total"] == 5
    status, body = await env.get_raw(f"/api/readings?meter=m1&from={iso3}")
    assert status == 200 and body["total"] == 5


@pytest.mark.parametrize("params, needle", [
    ({"per_page": PER_PAGE_MAX + 1}, "1000"),
    ({"per_page": 0}, "per_page"),
    ({"page": 0}, "page"),
    ({"page": "two"}, "page"),
    ({"archive": "weekly"}, "archive"),
    ({"from": "yesterday"}, "from"),
    ({"from": "nan"}, "from"),
    ({"from": 200, "to": 100}, "after"),
    ({"meter": ""}, "meter"),
    ({"form": 1}, "unknown"),
])
async def test_readings_bad_parameters(env, params, needle):
    status, body, resp = await env.get("/api/readings", **params)
    assert status == 400
    assert resp.content_type == "application/json"
    assert needle in body["error"]


@pytest.mark.parametrize("query, needle", [
    # Repeated keys: the first value was used and the rest ignored, so meter=m1&meter=m2 silently showed m1 only.
    ("meter=m1&meter=m2", "meter: given 2 times"),
    ("page=1&page=2", "page: given 2 times"),
    ("from=100&from=200", "from: given 2 times"),
    # Python's int() took these: 1_000 and Arabic-Indic digits were read as numbers.
    ("per_page=1_000", "per_page: '1_000' is not an integer"),
    ("page=%D9%A1", "page: '\u0661' is not an integer"),
])
async def test_readings_repeated_or_odd_parameters(env, query, needle):
    status, body = await env.get_raw("/api/readings?" + query)
    assert status == 400 and needle in body["error"], body
    status, body = await env.get_raw("/api/events?" + query.replace("per_page", "page"))
    assert status == 400, body


async def test_per_page_limit_is_allowed(env):
    await env.store.write(many_readings(3))
    status, body, _ = await env.get("/api/readings", per_page=PER_PAGE_MAX)
    assert status == 200 and body["total_pages"] == 1


async def test_events_paging(env):
    evs = [Event("m1", "power_off", int(T0) + 60 * i, int(T0) + 60 * i + 30, "phase L1") for i in range(3)]
    await env.store.write([], evs)
    status, body, _ = await env.get("/api/events", meter="m1", per_page=2)
    assert status == 200
    assert (body["total"], body["total_pages"], body["next_page"]) == (3, 2, 2)
    assert body["data"] == [e.as_dict() for e in evs[:2]]
    status, body, _ = await env.get("/api/events", channel="A+")
    assert status == 400


def test_parse_time():
    assert parse_time("from", "1700000000") == 1_700_000_000
    assert parse_time("from", "1700000000.2") == 1_700_000_001      # ceil: same rows for >= and <
    assert parse_time("from", "2023-11-14T22:13:20Z") == 1_700_000_000
    assert parse_time("from", "2023-11-14T22:13:20") == 1_700_000_000   # naive is UTC
    assert parse_time("from", "2023-11-15T01:13:20+03:00") == 1_700_000_000
    assert parse_time("from", "2023-11-15T01:13:20 03:00") == 1_700_000_000


class BrokenStore:
    async def query_readings(self, **kw):
        raise StoreError("query readings: OperationalError: disk I/O error")

    async def stats(self):
        raise StoreError("read store stats: OperationalError: disk I/O error")

    async def parked(self, sink=None):
        raise StoreError("list parked batches: OperationalError: disk I/O error")


async def test_broken_store(tmp_path):
    env, stop = await serve(tmp_path, store=BrokenStore())
    try:
        status, body, _ = await env.get("/api/readings")
        assert status == 503 and "disk I/O error" in body["error"]
        status, text, _ = await env.get("/metrics")          # the rest still renders
        assert status == 200 and "pollerd_up_seconds" in text and "pollerd_store_rows" not in text
        status, body, _ = await env.get("/health")
        assert status == 503 and body["reasons"][0].startswith("store not readable")
    finally:
        await stop()


async def test_bearer_scheme_is_case_insensitive(tmp_path):
    # RFC 9110 section 11.1: the auth scheme is case-insensitive. "bearer <admin token>" got a 401 that said
    # the header was missing.
    from pollerd.config import ApiToken, Secret
    admin, reader = "admin-token-0123456789", "read-token-0123456789"

    async def poll(name: str) -> dict[str, object]:
        return {"meter": name}

    store = await Store.open(tmp_path / "auth.db", commit_interval=0.01)
    app = make_app(runtime=make_runtime(), store=store, metrics=Registry(), poll=poll,
                   tokens=[ApiToken(Secret(admin), "admin"), ApiToken(Secret(reader), "read")])
    runner, port = await start_api(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/api/meters/m1/poll"
    try:
        async with aiohttp.ClientSession() as http:
            for header, status in ((f"bearer {admin}", 200), (f"BEARER  {admin}", 200), (f"Bearer {reader}", 403),
                                   (f"bearer{admin}", 401), (f"Basic {admin}", 401), ("bearer ", 401)):
                async with http.post(url, headers={"Authorization": header}) as r:
                    assert r.status == status, (header, await r.text())
    finally:
        await runner.cleanup()
        await store.close()


# ---- access with tokens ---------------------------------------------------------------------------------------

async def _serve_with_tokens(tmp_path, **kw):  # type: ignore[no-untyped-def]
    from pollerd.config import ApiToken, Secret
    store = await Store.open(tmp_path / "tok.db", commit_interval=0.01)
    app = make_app(runtime=make_runtime(), store=store, metrics=Registry(),
                   tokens=[ApiToken(Secret("admin-token-0123456789"), "admin"),
                           ApiToken(Secret("read-token-0123456789"), "read")], **kw)
    runner, port = await start_api(app, "127.0.0.1", 0)
    return app, store, runner, f"http://127.0.0.1:{port}"


DATA_PATHS = ("/api/readings", "/api/events", "/api/meters", "/api/meters/m1", "/api/sinks")


async def test_with_tokens_the_data_needs_a_read_or_admin_token(tmp_path):
    app, store, runner, base = await _serve_with_tokens(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            for path in DATA_PATHS:
                async with http.get(base + path) as r:
                    assert r.status == 401, path
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
                async with http.get(base + path, headers={"Authorization": "Bearer wrong-token-0123456789"}) as r:
                    assert r.status == 401, path
                for token in ("read-token-0123456789", "admin-token-0123456789"):
                    async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
                        assert r.status == 200, (path, token)
            # Monitoring stays open by default: a scraper or a health check rarely carries a token.
            for path in ("/health", "/metrics", "/api/openapi.json"):
                async with http.get(base + path) as r:
                    assert r.status in (200, 503), path
    finally:
        await runner.cleanup()
        await store.close()


async def test_monitoring_can_be_closed_too_and_reload_applies_it(tmp_path):
    from pollerd.api import set_tokens
    from pollerd.config import ApiToken, Secret
    app, store, runner, base = await _serve_with_tokens(tmp_path, open_monitoring=False)
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/health", "/metrics"):
                async with http.get(base + path) as r:
                    assert r.status == 401, path
                async with http.get(base + path, headers={"Authorization": "Bearer read-token-0123456789"}) as r:
                    assert r.status in (200, 503), path
            # A reload that removes every token opens the data again (a gateway with no API users).
            set_tokens(app, [], False)
            async with http.get(base + "/api/readings") as r:
                assert r.status == 200
            set_tokens(app, [ApiToken(Secret("read-token-0123456789"), "read")], True)
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
            async with http.get(base + "/api/readings") as r:
                assert r.status == 401
    finally:
        await runner.cleanup()
        await store.close()


async def test_no_tokens_keeps_everything_open(env):
    for path in DATA_PATHS:
        assert (await env.get(path))[0] == 200, path


async def test_a_plus_sign_decoded_as_a_space_is_taken_as_plus(env):
    await env.store.write([Reading("m1", "A+", "current", T0, 5.0, "Wh"),
                           Reading("m1", "A+.T1", "current", T0, 3.0, "Wh"),
                           Reading("m1", "A-", "current", T0, 1.0, "Wh")])
    # What `curl '...?channel=A+'` sends: the '+' arrives as a space.
    status, body = await env.get_raw("/api/readings?channel=A+")
    assert status == 200 and [r["value"] for r in body["data"]] == [5.0]
    status, body = await env.get_raw("/api/readings?channel=A+.T1")
    assert status == 200 and [r["value"] for r in body["data"]] == [3.0]
    status, body = await env.get_raw("/api/readings?channel=A%2B")  # --data-urlencode
    assert status == 200 and [r["value"] for r in body["data"]] == [5.0]


@pytest.mark.parametrize("query, needle", [
    # Issue 14 (observation 7): int() refuses over 4300 digits with a ValueError: a 500, not a 400.
    ("page=" + "9" * 5000, "page: '9999999999"),
    ("per_page=" + "1" * 5000, "per_page: '1111111111"),
    ("page=-" + "9" * 5000, "out of range"),
    ("page=" + "0" * 5000 + "7", None),  # leading zeros are still the number 7
    ("from=" + "9" * 5000, "not a plausible unix time"),
    ("to=" + "1" * 400 + ".5", "not a plausible unix time"),
])
async def test_huge_integer_parameters_are_a_400(env, query, needle):
    for path in ("/api/readings", "/api/events"):
        status, body = await env.get_raw(f"{path}?{query}")
        if needle is None:
            assert status == 200, body
            continue
        assert status == 400 and needle in body["error"], body
        assert len(body["error"]) < 200  # the 5000 digits are not echoed back


async def test_data_queries_in_flight_are_bounded(env, monkeypatch):
    # 500 concurrent page requests each held up to 1000 rows and their JSON at once: RSS went 47 -> 249 MB
    # and stayed there (scripts/api_burst_rss.py). Only QUERY_SLOTS of them may build a reply at a time.
    await env.store.write(many_readings(5))
    real = env.store.query_readings
    now = peak = 0

    async def counting(**kw):  # type: ignore[no-untyped-def]
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        try:
            await asyncio.sleep(0.01)
            return await real(**kw)
        finally:
            now -= 1

    monkeypatch.setattr(env.store, "query_readings", counting)
    results = await asyncio.gather(*(env.get("/api/readings", per_page=2) for _ in range(40)))
    assert all(status == 200 for status, _, _ in results)
    assert peak == QUERY_SLOTS
