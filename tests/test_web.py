"""The status pages without a browser: the vector diagram's geometry, the profile chart's gaps, the tariff
report's arithmetic and sources, access (login cookie, read vs admin, CSRF), language choice, and the
overview's live part. tests/test_web_browser.py loads the same pages in Chromium against a running daemon."""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from zoneinfo import ZoneInfo

import aiohttp
import orjson
import pytest
from helpers import serve

from pollerd.api import make_app
from pollerd.config import ApiToken, Secret
from pollerd.metrics import Registry
from pollerd.model import Event, Reading
from pollerd.state import LineState, MeterState, Runtime, SinkState
from pollerd.store import Store
from pollerd.web import reports
from pollerd.web.access import safe_next
from pollerd.web.i18n import TEXT, choose
from pollerd.web.svg import interval_of, phasors, profile_chart

UTC = ZoneInfo("UTC")
ADMIN, READER = "web-admin-0123456789", "web-read-0123456789"


# ---- i18n ---------------------------------------------------------------------------------------------------

def test_every_text_has_both_languages_and_the_same_placeholders():
    for key, (en, ru) in TEXT.items():
        assert en.strip() and ru.strip(), key
        assert en.count("{}") == ru.count("{}"), key


@pytest.mark.parametrize(("cookie", "header", "want"), [
    (None, "ru-RU,ru;q=0.9,en;q=0.8", "ru"),
    (None, "en-GB,en;q=0.9,ru;q=0.8", "en"),
    (None, "de-DE,ru;q=0.5,en;q=0.4", "ru"),
    (None, "fr", "en"),
    (None, None, "en"),
    ("en", "ru", "en"),
    ("xx", "ru", "ru"),
])
def test_language_choice(cookie, header, want):
    assert choose(cookie, header) == want


@pytest.mark.parametrize(("target", "want"), [
    ("/meters/m1?range=7d", "/meters/m1?range=7d"), ("//evil.example/x", "/"), ("http://evil.example", "/"),
    ("/\\evil.example", "/"), ("/x\r\nSet-Cookie: a=b", "/"), ("", "/"), (None, "/"),
])
def test_redirects_stay_on_this_site(target, want):
    assert safe_next(target) == want


# ---- vector diagram -----------------------------------------------------------------------------------------

HEALTHY = {"U.L1": 230.0, "U.L2": 231.0, "U.L3": 229.5, "angle.L1-L2": 120.0, "angle.L1-L3": 240.0,
           "I.L1": 4.43, "I.L2": 6.5, "I.L3": 2.19, "P.L1": 1000.0, "Q.L1": 200.0, "P.L2": 1500.0,
           "Q.L2": -100.0, "P.L3": 500.0, "Q.L3": 50.0}


def _by_name(values):
    ps, missing = phasors(values)
    return {p.name: p for p in ps}, missing


def test_phasors_follow_the_measured_angles_and_power_angles():
    ps, missing = _by_name(HEALTHY)
    assert missing == []
    assert ps["U.L1"].angle == 0 and ps["U.L2"].angle == pytest.approx(-120) and ps["U.L3"].angle == pytest.approx(120)
    for ph, u in (("L1", 0.0), ("L2", -120.0), ("L3", 120.0)):
        phi = math.degrees(math.atan2(HEALTHY[f"Q.{ph}"], HEALTHY[f"P.{ph}"]))
        assert ps[f"I.{ph}"].phi == pytest.approx(phi)
        want = (u - phi + 180) % 360 - 180
        assert ps[f"I.{ph}"].angle == pytest.approx(want)
        assert ps[f"I.{ph}"].magnitude == HEALTHY[f"I.{ph}"]
    # L2 capacitive (Q < 0): its current leads its voltage
    assert ps["I.L2"].angle > ps["U.L2"].angle


def test_a_reversed_current_points_against_its_voltage():
    ps, _ = _by_name({**HEALTHY, "P.L2": -1500.0, "Q.L2": 100.0})
    diff = (ps["I.L2"].angle - ps["U.L2"].angle + 180) % 360 - 180
    assert abs(diff) > 90 and abs(ps["I.L2"].phi) > 90
    assert abs(ps["I.L1"].phi) < 90


def test_swapped_phase_sequence_shows_and_nothing_is_assumed_when_angles_are_missing():
    ps, _ = _by_name({**HEALTHY, "angle.L1-L2": 240.0, "angle.L1-L3": 120.0})
    assert ps["U.L2"].angle == pytest.approx(120) and ps["U.L3"].angle == pytest.approx(-120)
    # only L1-L2 and L2-L3 measured: L3 from their sum
    ps, _ = _by_name({k: v for k, v in HEALTHY.items() if k != "angle.L1-L3"} | {"angle.L2-L3": 120.0})
    assert ps["U.L3"].angle == pytest.approx(120)
    ps, missing = _by_name({k: v for k, v in HEALTHY.items() if not k.startswith("angle")})
    assert set(ps) == {"U.L1", "I.L1"} and "angle.L1-L2" in missing and "angle.L1-L3" in missing
    ps, missing = _by_name({k: v for k, v in HEALTHY.items() if k != "Q.L3"})
    assert "I.L3" not in ps and "Q.L3" in missing


# ---- profile chart ------------------------------------------------------------------------------------------

def test_profile_chart_draws_gaps_as_gaps_and_zero_as_a_value():
    start = 1_790_000_000 // 1800 * 1800
    ap = {start + k * 1800: float(k) for k in range(48) if k not in (10, 11, 12, 40)}
    am = {start + 40 * 1800: 5.0}
    svg = profile_chart({"A+": ap, "A-": am}, start, start + 48 * 1800, 1800, UTC, "en")
    gaps = re.findall(r'<rect [^>]*data-t="(\d+)" data-n="(\d+)"', svg)
    assert gaps == [(str(start + 10 * 1800), "3")]  # slot 40 has A- only: not a gap
    bars = re.findall(r'<g class="ap"[^>]*>(.*?)</g>', svg)[0]
    values = dict(re.findall(r'data-t="(\d+)" data-v="([^"]+)"', bars))
    assert values[str(start)] == "0" and len(values) == 44  # the zero interval is a (flat) bar, not a gap
    assert 'data-v="5"' in re.findall(r'<g class="am"[^>]*>(.*?)</g>', svg)[0]


def test_profile_chart_sums_short_intervals_into_buckets_and_marks_short_ones():
    start = 1_790_000_000 // 3600 * 3600
    ap = {start + 60 * k: 1.0 for k in range(7 * 1440) if k != 5}  # 7 days of 1-minute intervals, one missing
    svg = profile_chart({"A+": ap}, start, start + 7 * 86400, 60, UTC, "en")
    assert len(svg) < 100_000 and 'data-bucket="1560"' in svg  # 26-minute buckets: at most 400 bars
    bars = re.findall(r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" data-t="(\d+)" data-v="([^"]+)"'
                      r'( class="part" data-n="(\d+)")?', svg)
    assert len(bars) == 388 and bars[0] == (str(start), "25", ' class="part" data-n="25"', "25")
    assert bars[1][1] == "26" and bars[1][2] == ""
    assert sum(float(v) for _, v, _, _ in bars) == len(ap)


def test_interval_of_profile():
    assert interval_of([0, 1800, 3600, 9000]) == 1800
    assert interval_of([0, 900, 1800]) == 900
    assert interval_of([]) == 1800


def test_the_overview_stays_under_150_kb_with_1000_failing_meters():
    from pollerd.web.overview import Filters, render_live
    now = time.time()
    rt = Runtime("gw", started=now - 3600)
    for i in range(1000):
        name = f"meter-{i:04d}"
        rt.meters[name] = MeterState(name, "mercury230", f"line{i % 20}", i % 240 + 1, 900, last_poll=now - 60,
                                     consecutive_failures=3, last_error=f"{name}: no complete reply within 0.3s "
                                     "to [01 08 11 00 ** ** ** ** ** ** 63 71] (line down: connection refused)")
    reasons = [f"meter meter-{i:04d} silent 3600 s > 2700 s (no answer: ...)" for i in range(1000)]
    live = render_live(rt, now, "ru", Filters(), reasons, reasons, {}, 3600.0, {})
    assert len(live.encode()) < 140_000  # the page frame, CSS and script add 6 KB
    assert live.count("<li>") == 2 * 21 and "ещё 980: /health" in live
    assert live.count('data-state="failing"') == 250  # one page of the table


def test_line_errors_add_up_the_line_meters_counters():
    from pollerd.web.overview import LineErrors, line_errors
    rt = Runtime("gw")
    rt.lines["a"], rt.lines["b"] = LineState("a", "tcp"), LineState("b", "serial")
    rt.meters["m1"] = MeterState("m1", "mercury230", "a", 1, 60)
    rt.meters["m2"] = MeterState("m2", "mercury230", "a", 2, 60)
    rt.meters["m3"] = MeterState("m3", "mercury230", "b", 3, 60)
    reg = Registry()
    assert line_errors(reg, rt) == {"a": LineErrors(), "b": LineErrors()}  # nothing registered yet
    assert reg.find("pollerd_reply_timeouts_total") is None  # and reading did not register anything
    reg.counter("pollerd_reply_timeouts_total", "", ("meter",)).inc(3, meter="m1")
    reg.counter("pollerd_reply_timeouts_total", "", ("meter",)).inc(2, meter="m2")
    reg.counter("pollerd_reply_timeouts_total", "", ("meter",)).inc(1, meter="gone")  # removed by a reload
    reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).inc(4, meter="m3", kind="crc")
    reg.counter("pollerd_frame_errors_total", "", ("meter", "kind")).inc(1, meter="m3", kind="length")
    reg.counter("pollerd_line_connect_failures_total", "", ("line",)).inc(7, line="a")
    assert line_errors(reg, rt) == {"a": LineErrors(5, 0, 7), "b": LineErrors(0, 5, 0)}


# ---- the store queries the pages add ------------------------------------------------------------------------

async def test_store_latest_readings_between_and_event_filters(store):
    rows = [Reading(m, ch, "current", 1000 + 60 * k, float(k), "V") for k in range(10) for m in ("a", "b")
            for ch in ("U.L1", "U.L2")]
    rows.append(Reading("a", "U.L1", "profile", 5000, 1.0, "V"))
    await store.write(rows, [Event("a", "power_off", 100), Event("a", "cover_open", 200), Event("b", "power_off", 300)])
    got = await store.latest_readings("a", "current", since=1000 + 60 * 7)
    assert [(r.ts, r.channel) for r in got] == [(1540, "U.L2"), (1540, "U.L1"), (1480, "U.L2"), (1480, "U.L1"),
                                                 (1420, "U.L2"), (1420, "U.L1")]
    assert len(await store.latest_readings("a", "current", since=0, limit=3)) == 3
    got = await store.readings_between(meters=["b"], archive="current", channels=["U.L2"], ts_from=1001,
                                       ts_to=1180)
    assert [(r.meter, r.channel, r.ts, r.value) for r in got] == [("b", "U.L2", 1060, 1.0), ("b", "U.L2", 1120, 2.0)]
    assert await store.readings_between(meters=["b"], archive="current", channels=["U.L2"], ts_from=1001,
                                        ts_to=1060) == []
    got = await store.readings_between(meters=["a", "b"], archive="current", channels=["U.L1", "U.L2"],
                                       ts_from=0, ts_to=10_000, limit=5)
    assert len(got) == 5 and all(r.ts == 1000 for r in got[:4])
    assert await store.readings_between(meters=["a"], archive="profile", channels=["U.L1"], ts_from=0,
                                        ts_to=10_000) == [rows[-1]]
    got = await store.first_readings(meters=["a", "b"], archive="current", channels=["U.L2", "X"],
                                     ts_from=1061, ts_to=10_000)
    assert [(r.meter, r.channel, r.ts, r.value) for r in got] == [("a", "U.L2", 1120, 2.0), ("b", "U.L2", 1120, 2.0)]
    assert await store.event_codes("a") == ["cover_open", "power_off"] and await store.event_codes("x") == []
    events, total = await store.query_events(meter="a", code="power_off")
    assert total == 1 and events[0].ts_start == 100
    events, total = await store.query_events(newest_first=True, per_page=2)
    assert total == 3 and [e.ts_start for e in events] == [300, 200]


# ---- reports ------------------------------------------------------------------------------------------------

DAY = 86400
D0 = dt.date(2026, 11, 1)


def _ts(d: dt.date, tz=UTC) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp())


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "r.db", commit_interval=0.01)
    yield s
    await s.close()


def _daily(meter: str, d: dt.date, t1: float, t2: float, tz=UTC) -> list[Reading]:
    ts = _ts(d, tz)
    return [Reading(meter, "A+.T1", "daily", ts, t1, "Wh"), Reading(meter, "A+.T2", "daily", ts, t2, "Wh"),
            Reading(meter, "A+.T3", "daily", ts, 0.0, "Wh"), Reading(meter, "A+.T4", "daily", ts, 0.0, "Wh"),
            Reading(meter, "A+", "daily", ts, t1 + t2, "Wh")]


async def test_report_by_day_uses_archives_then_counters_and_says_which(store):
    rows = _daily("m1", D0, 1000, 500) + _daily("m1", D0 + dt.timedelta(days=1), 1200, 300)
    # Day 3 has no archive: counters polled 10 min after midnight of day 3 and 5 min after day 4's.
    for day, minutes, t1, t2 in ((2, 10, 50_000, 7_000), (3, 5, 52_500, 7_250)):
        ts = _ts(D0 + dt.timedelta(days=day)) + minutes * 60
        rows += [Reading("m1", "A+.T1", "current", ts, t1, "Wh"), Reading("m1", "A+.T2", "current", ts, t2, "Wh"),
                 Reading("m1", "A+", "current", ts, t1 + t2, "Wh")]
    # Day 4: a counter 3 h after midnight is too far from the boundary to stand for the day.
    ts = _ts(D0 + dt.timedelta(days=5)) + 3 * 3600
    rows.append(Reading("m1", "A+.T1", "current", ts, 60_000, "Wh"))
    await store.write(rows)
    q = reports.parse_query({"from": "2026-11-01", "to": "2026-11-05"}, ["m1"], ["m1", "m2"], D0)
    got = await reports.build(store, q, lambda m: UTC)
    assert [(r.period, r.source) for r in got] == [("2026-11-01", "daily"), ("2026-11-02", "daily"),
                                                   ("2026-11-03", "counters"), ("2026-11-04", "missing"),
                                                   ("2026-11-05", "missing")]
    assert got[0].tariffs == (1000, 500, 0, 0) and got[0].total == 1500
    c = got[2]
    assert c.tariffs == (2500, 250, None, None) and c.total == 2750
    assert c.span == (_ts(D0 + dt.timedelta(days=2)) + 600, _ts(D0 + dt.timedelta(days=3)) + 300)
    assert got[3].tariffs == (None,) * 4 and got[3].total is None  # never a zero for no data
    assert sum(r.total for r in got if r.source == "daily") == 1500 + 1500


async def test_report_by_month_from_monthly_archive_or_every_day_of_the_month(store):
    tz = ZoneInfo("Europe/Moscow")
    rows = [Reading("m1", f"A+.T{n}", "monthly", _ts(dt.date(2026, 9, 1), tz), 1000.0 * n, "Wh") for n in (1, 2)]
    rows += [Reading("m1", "A+", "monthly", _ts(dt.date(2026, 9, 1), tz), 3000.0, "Wh")]
    for k in range(30):  # every day of November, no monthly archive
        rows += _daily("m1", dt.date(2026, 11, 1) + dt.timedelta(days=k), 10.0, 1.0, tz)
    for k in range(30):  # October lacks its 31st day
        rows += _daily("m1", dt.date(2026, 10, 1) + dt.timedelta(days=k), 10.0, 1.0, tz)
    await store.write(rows)
    q = reports.parse_query({"period": "month", "from": "2026-09", "to": "2026-11"}, [], ["m1"], D0)
    got = await reports.build(store, q, lambda m: tz)
    assert [(r.period, r.source, r.total) for r in got] == [("2026-09", "monthly", 3000.0),
                                                            ("2026-10", "missing", None),
                                                            ("2026-11", "daily", 330.0)]
    assert got[2].tariffs == (300.0, 30.0, 0.0, 0.0)
    assert got[0].start == _ts(dt.date(2026, 9, 1), tz) and got[0].end == _ts(dt.date(2026, 10, 1), tz)


async def test_report_keeps_the_meters_order_across_time_zones(store):
    zones = {"a": UTC, "b": ZoneInfo("Asia/Tashkent"), "c": UTC}
    rows: list[Reading] = []
    for m, tz in zones.items():
        rows += _daily(m, D0, 100.0 * (1 + "abc".index(m)), 0.0, tz)
    await store.write(rows)
    q = reports.parse_query({"from": "2026-11-01", "to": "2026-11-01"}, ["c", "b", "a"], ["a", "b", "c"], D0)
    got = await reports.build(store, q, zones.__getitem__)
    assert [(r.meter, r.source, r.total, r.start) for r in got] == [
        ("c", "daily", 300.0, _ts(D0)), ("b", "daily", 200.0, _ts(D0, zones["b"])), ("a", "daily", 100.0, _ts(D0))]


@pytest.mark.parametrize(("q", "needle"), [
    ({"period": "week"}, "period"), ({"energy": "X"}, "energy"), ({"from": "2026-13-01"}, "from"),
    ({"from": "2026-11-05", "to": "2026-11-01"}, "after"), ({"frm": "1"}, "unknown"),
    ({"from": "2000-01-01", "to": "2026-01-01"}, "rows"),
])
def test_report_query_errors(q, needle):
    with pytest.raises(reports.ReportQueryError, match=needle):
        reports.parse_query(q, [], ["m1"], D0)
    with pytest.raises(reports.ReportQueryError, match="no meter"):
        reports.parse_query({}, ["nope"], ["m1"], D0)


def test_report_page_shows_300_rows_and_sends_to_csv_for_more():
    from pollerd.web import report_page
    rows = [reports.ReportRow(f"meter-{i:04d}", "2026-11-01", 0, DAY, (1.0, 2.0, 3.0, 4.0), 10.0, "Wh", "daily")
            for i in range(1000)]
    q = reports.ReportQuery(tuple(r.meter for r in rows), "day", D0, D0)
    html = report_page.render(meters=[r.meter for r in rows], query=q, chosen=[], rows=rows, error=None, lang="en")
    assert html.count("<tr data-meter=") == 300 and 'data-more="700"' in html and len(html) < 140_000


def test_report_csv_bom_and_semicolon():
    row = reports.ReportRow("m1", "2026-11-01", 0, DAY, (1234.5, 0.0, None, None), 1234.5, "Wh", "daily")
    plain = reports.to_csv([row], ["meter", "period", "T1", "T2", "T3", "T4", "total", "unit", "source"],
                           semicolon=False, bom=False)
    assert plain.decode().splitlines()[1] == "m1,2026-11-01,1.234,0.000,,,1.234,kWh,daily"
    ru = reports.to_csv([row], ["Счётчик", "b"], semicolon=True, bom=True)
    assert ru.startswith(b"\xef\xbb\xbf") and ru.decode("utf-8-sig").splitlines() == [
        "Счётчик;b", "m1;2026-11-01;1,234;0,000;;;1,234;kWh;daily"]


# ---- the pages over HTTP ------------------------------------------------------------------------------------

class Env:
    def __init__(self, rt: Runtime, store: Store, base: str, polls: list[str]) -> None:
        self.rt, self.store, self.base, self.polls = rt, store, base, polls


@pytest.fixture
async def env(store, request):
    now = time.time()
    rt = Runtime("gw-test", started=now - 100)
    rt.lines["conv"] = LineState("conv", "tcp", connected=True, bus_time=5.0)
    rt.meters["m1"] = MeterState("m1", "mercury230", "conv", 1, 60, last_poll=now - 5, last_ok=now - 5,
                                 identity={"serial": "41000001"})
    rt.meters["m<2>"] = MeterState("m<2>", "mbus", "conv", 2, 60, last_poll=now - 5, consecutive_failures=1,
                                   last_error="no answer <script>")
    rt.sinks["up"] = SinkState("up", "http")
    p0 = int(now) // 1800 * 1800
    await store.write([Reading("m1", "A+", "profile", p0 - 1800 * k, 100.0 + k, "Wh") for k in range(1, 60)])
    await store.write([Reading("m1", ch, "current", int(now) - 5, v, "V") for ch, v in HEALTHY.items()],
                      [Event("m1", "power_off", int(now) - 7200, None, "Power off")])
    polls: list[str] = []

    async def poll(name: str) -> dict[str, object]:
        polls.append(name)
        return {"meter": name, "ok": True}

    async def raw(name: str, command: str) -> dict[str, object]:
        if command.startswith("zz"):
            raise ValueError(f"not a HEX frame: {command!r}")
        return {"meter": name, "request": "open", "command": "01 01 01 ** ** ** ** ** **", "response": "01 00"}

    tokens = [] if getattr(request, "param", "tokens") == "open" else [
        ApiToken(Secret(ADMIN), "admin"), ApiToken(Secret(READER), "read")]
    app = make_app(runtime=rt, store=store, metrics=Registry(), tokens=tokens, poll=poll, raw=raw)
    runner, base = await serve(app)
    yield Env(rt, store, base, polls)
    await runner.cleanup()


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # the jar skips IP hosts otherwise


async def _login(http: aiohttp.ClientSession, base: str, token: str) -> aiohttp.ClientResponse:
    async with http.post(f"{base}/login?next=/meters/m1", data={"token": token}, allow_redirects=False,
                         headers={"Origin": base}) as r:
        return r


async def test_pages_ask_for_a_token_and_keep_it_in_a_strict_httponly_cookie(env):
    async with _session() as http:
        async with http.get(f"{env.base}/meters/m1", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login?next=%2Fmeters%2Fm1"
        async with http.get(f"{env.base}/?part=1", allow_redirects=False) as r:
            assert r.status == 401
        r = await _login(http, env.base, "wrong")
        assert r.status == 401 and "Set-Cookie" not in r.headers
        r = await _login(http, env.base, READER)
        assert r.status == 303 and r.headers["Location"] == "/meters/m1"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and READER not in r.headers["Location"]
        async with http.get(f"{env.base}/meters/m1") as r:
            page = await r.text()
            assert r.status == 200 and 'data-role="read"' in page
            assert "data-action" not in page and "/poll" not in page  # no admin controls
            assert r.headers["Content-Security-Policy"].startswith("default-src 'none'")


async def test_admin_actions_refuse_read_tokens_and_forged_forms(env):
    async with _session() as http:
        await _login(http, env.base, READER)
        async with http.post(f"{env.base}/meters/m1/poll", data={"csrf": "x"}, headers={"Origin": env.base}) as r:
            assert r.status == 403
        async with http.post(f"{env.base}/api/meters/m1/poll", headers={"Authorization": f"Bearer {READER}"}) as r:
            assert r.status == 403
    async with _session() as http:
        await _login(http, env.base, ADMIN)
        async with http.get(f"{env.base}/meters/m1") as r:
            page = await r.text()
        assert 'data-action="poll"' in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
        for data, headers in (({}, {"Origin": env.base}), ({"csrf": "0" * 64}, {"Origin": env.base}),
                              ({"csrf": csrf}, {"Origin": "http://evil.example"}),
                              ({"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"})):
            async with http.post(f"{env.base}/meters/m1/poll", data=data, headers=headers) as r:
                assert r.status == 403, (data, headers)
        assert env.polls == []
        async with http.post(f"{env.base}/meters/m1/poll", data={"csrf": csrf}, headers={"Origin": env.base}) as r:
            assert r.status == 200 and "data-result" in await r.text()
        assert env.polls == ["m1"]
        async with http.post(f"{env.base}/meters/m1/raw", data={"csrf": csrf, "command": "01 01 01 31 31 31 31 31 31"},
                             headers={"Origin": env.base}) as r:
            page = await r.text()
        assert r.status == 200 and "01 01 01 ** ** ** ** ** **" in page and "31 31 31" not in page
        async with http.post(f"{env.base}/meters/m1/raw", data={"csrf": csrf, "command": "zz"},
                             headers={"Origin": env.base}) as r:
            assert r.status == 400 and "not a HEX frame" in await r.text()
        async with http.post(f"{env.base}/logout", data={"csrf": csrf}, headers={"Origin": env.base},
                             allow_redirects=False) as r:
            assert r.status == 303 and "Max-Age=0" in r.headers["Set-Cookie"]


@pytest.mark.parametrize("env", ["open"], indirect=True)
async def test_without_tokens_the_pages_are_open_and_have_no_admin(env):
    async with _session() as http:
        async with http.get(f"{env.base}/", headers={"Accept-Language": "ru-RU,ru;q=0.9"}) as r:
            page = await r.text()
            assert r.status == 200 and '<html lang="ru">' in page and "Счётчики" in page
        # names and errors are escaped
        assert "m&lt;2&gt;" in page and "<script>" not in page.replace('<script src="/static/app.js', "")
        async with http.get(f"{env.base}/?part=1&state=failing") as r:
            part = await r.text()
        assert 'data-meter="m&lt;2&gt;"' in part and 'data-meter="m1"' not in part and "<html" not in part
        async with http.get(f"{env.base}/meters/m1") as r:
            page = await r.text()
        assert 'data-phasor="I.L2"' in page and "data-action" not in page
        async with http.post(f"{env.base}/meters/m1/poll", data={}) as r:
            assert r.status == 403
        async with http.get(f"{env.base}/lang/ru?next=//evil.example", allow_redirects=False) as r:
            assert r.headers["Location"] == "/" and "pollerd_lang=ru" in r.headers["Set-Cookie"]
        async with http.get(f"{env.base}/meters/m1?code=power_off&from=2000-01-01") as r:
            assert 'data-code="power_off"' in await r.text()
        async with http.get(f"{env.base}/meters/m1?code=other") as r:
            assert 'data-code="power_off"' not in await r.text()
        # the profile chart comes in its own request; the page has only the box the script fills
        assert 'data-src="/meters/m1/profile?range=24h"' in page and "<svg class=\"profile" not in page
        async with http.get(f"{env.base}/meters/m1/profile?range=7d", headers={"X-Requested-With": "pollerd"}) as r:
            part = await r.text()
        assert r.status == 200 and part.startswith('<svg class="profile"') and "<html" not in part
        assert part.count("data-v=") == 59
        async with http.get(f"{env.base}/meters/m1/profile") as r:  # without script: a page with the chart
            page = await r.text()
        assert page.startswith("<!doctype html>") and page.count("data-v=") == 48  # the last 24 h
        async with http.get(f"{env.base}/meters/m%3C2%3E/profile", headers={"X-Requested-With": "pollerd"}) as r:
            text = await r.text()
        assert text.startswith('<p class="note">') and "<svg" not in text
        async with http.get(f"{env.base}/meters/nope/profile") as r:
            assert r.status == 404
        async with http.get(f"{env.base}/meters/m%3C2%3E") as r:  # no phase channels: no diagram to miss
            page = await r.text()
        assert r.status == 200 and "svg" not in page and "vector" not in page.lower()


@pytest.mark.parametrize("env", ["open"], indirect=True)
async def test_report_endpoints_agree(env):
    await env.store.write(_daily("m1", dt.date(2026, 11, 2), 700.0, 300.0))
    params = [("meter", "m1"), ("from", "2026-11-01"), ("to", "2026-11-03")]
    async with _session() as http:
        async with http.get(f"{env.base}/api/reports", params=params) as r:
            body = orjson.loads(await r.read())
        assert r.status == 200 and [x["source"] for x in body["data"]] == ["missing", "daily", "missing"]
        assert body["data"][1]["T1"] == 700.0 and body["data"][1]["total"] == 1000.0
        async with http.get(f"{env.base}/reports", params=params) as r:
            assert 'data-total="1000.0"' in await r.text()
        async with http.get(f"{env.base}/reports.csv", params=[*params, ("bom", "1"), ("semicolon", "1")]) as r:
            csv = await r.read()
        assert r.headers["Content-Disposition"].startswith("attachment") and csv.startswith(b"\xef\xbb\xbf")
        assert b"m1;2026-11-02;0,700;0,300;0,000;0,000;1,000;kWh;daily" in csv
        async with http.get(f"{env.base}/api/reports", params={"meter": "nope"}) as r:
            assert r.status == 400 and "nope" in (await r.json())["error"]
