"""rstech cloud source (seed 000) against the local fake server pollerd/sim/rstech.py: token rotation where a
replayed token fails, pagination, incremental archives, session expiry, refused sign-in, bad pages of every
kind (nothing stored from them, retried next cycle), sign-out, and the daemon / `pollerd poll` end to end."""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from pollerd.commands import cli
from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.drivers.base import CloudDriverContext
from pollerd.drivers.rstech import RstechDriver, RstechSession, normalise_unit, parse_page
from pollerd.errors import CloudError
from pollerd.metrics import Registry
from pollerd.sim.rstech import RstechServer, seed_dictionaries
from pollerd.state import MeterState
from pollerd.store import Store

PASSWORD = "Str0ngPas$-x9"
DAY = 86400
NOW = int(time.time()) // 3600 * 3600   # an hour boundary in the past: the CLI and daemon use the real clock


def populate(server: RstechServer) -> None:
    """Station 1 (БК, type 1) with three hourly records, a daily one, an abnormal event and settings;
    station 2 (Флоугаз, type 2) with three hourly records."""
    seed_dictionaries(server)
    server.add_station(1, equipment_type_id=1, customer_id=1, name="boiler house", brand="БК")
    server.add_station(2, equipment_type_id=2, customer_id=2, name="bakery", brand="Флоугаз")
    for h in (3, 2, 1):
        t = NOW - h * 3600
        server.add_record(1, "hourly", t, {"P": 1.02, "T": 20.0 + h, "Vnakwork": 1000.0 + h, "Vnakpriv": 900.0})
        server.add_record(2, "hourly", t, {"P": 101.3, "T": 5.0, "Vwork": 50.0 + h, "Vst": 40.0 + h})
    server.add_record(1, "daily", NOW - 12 * 3600, {"P": 1.0, "T": 21.5, "Vwork": 24.0, "Vpriv": 23.0,
                                                     "Vnakwork": 1003.0, "Vnakpriv": 900.0})
    server.add_record(1, "nesht", NOW - 2 * 3600, {"Tmax": 1})
    server.settings[1] = [{"channel_name": "Наличие датчика температуры окружающей среды",
                           "channel_data_value": "0", "unit_name": None},
                          {"channel_name": "Договорной расход", "channel_data_value": "25", "unit_name": "м3/ч"}]


@pytest.fixture
async def server() -> Any:
    srv = RstechServer(password=PASSWORD)
    populate(srv)
    await srv.start()
    yield srv
    await srv.stop()


def meter_toml(name: str, url: str, *, password: str = PASSWORD, extra: str = "", waiting: str = "3s") -> str:
    return f'[[meters]]\nname = "{name}"\nprotocol = "rstech"\nurl = "{url}"\nemail = "api@local.net"\n' \
           f'password = "{password}"\ninterval_time = "1s"\nwaiting_time = "{waiting}"\n{extra}\n'


def make_driver(tmp_path: Path, url: str, *, store: Store | None = None, clock: float = NOW,
                **kw: Any) -> RstechDriver:
    p = tmp_path / "pollerd.toml"
    p.write_text(meter_toml("acct", url, **kw))
    mc = load_config(p, environ={}).meters[0]
    st = MeterState(mc.name, mc.protocol, mc.line, 0, mc.interval_time)
    return RstechDriver(CloudDriverContext(mc, st, Registry(), lambda: clock, logging.getLogger("t"), store))


ALL = 'read = ["hourly", "daily", "monthly", "yearly", "nesht", "settings"]\nper_page = 2\n'


async def test_a_cycle_reads_every_station_page_by_page_with_rotating_tokens(tmp_path: Path,
                                                                            server: RstechServer) -> None:
    drv = make_driver(tmp_path, server.url, extra=ALL)
    res = await drv.poll(NOW)
    await drv.close()
    assert res.ok, res.error
    got = {(r.meter, r.channel, r.archive, r.ts): (r.value, r.unit) for r in res.readings}
    assert got[("acct:1", "Vnakwork", "hourly", NOW - 3600)] == (1001.0, "m³")
    assert got[("acct:1", "T", "hourly", NOW - 2 * 3600)] == (22.0, "°C")
    assert got[("acct:1", "P", "hourly", NOW - 3600)] == (1.02, "kgf/cm²")
    assert got[("acct:2", "P", "hourly", NOW - 3600)] == (101.3, "kPa")
    assert got[("acct:1", "Vpriv", "daily", NOW - 12 * 3600)] == (23.0, "m³")
    assert len(res.readings) == 3 * 4 + 3 * 4 + 6
    assert [(e.meter, e.code, e.ts_start) for e in res.events] == [("acct:1", "nesht.Tmax", NOW - 7200)]
    dev = drv.ctx.state.devices
    assert dev["1"]["name"] == "boiler house" and dev["1"]["equipment_type"] == "БК"
    assert dev["1"]["customer"] == "O'ZBEKISTON YENGIL ATLETIKA FEDERATSIYASI"
    assert dev["1"]["settings"] == {"Наличие датчика температуры окружающей среды": "0",
                                    "Договорной расход": "25 m³/h"}
    # every request carried the newest token: one sign-in, no 401, never two requests at once
    assert server.sign_ins == 1 and server.rejected == 0 and server.replays == 0 and server.max_in_flight == 1
    assert server.sign_outs == 1
    # pagination: per_page=2 -> station 1 and 2 hourly (3 records) take two pages each
    hourly = [q for p, q in server.log if p == "channel_data" and q["archive_type"] == "hourly"]
    assert [(q["station_id"], q["page"], q["per_page"]) for q in hourly] == \
        [("1", "1", "2"), ("1", "2", "2"), ("2", "1", "2"), ("2", "2", "2")]
    # the request count is the page count: nothing asked twice
    assert drv.session.requests == server.pages_served + server.sign_ins + server.sign_outs
    positions = dict(res.state)["rstech.positions:acct"]
    assert positions["1"]["hourly"] == NOW - 3600 and positions["1"]["seen"] == NOW - 3600


async def test_a_replayed_token_is_refused_and_requests_never_overlap(server: RstechServer,
                                                                     tmp_path: Path) -> None:
    drv = make_driver(tmp_path, server.url)
    s: RstechSession = drv.session
    await s.sign_in()
    old = dict(s._token)
    await s.get("customers", {}, "customers")
    # the token of the first reply is dead now
    async with aiohttp.ClientSession() as http, http.get(server.url + "/customers", headers={k: old[k] for k in
                                                             ("access-token", "client", "uid")}) as r:
        assert r.status == 401
    assert server.replays == 1
    # concurrent callers on one session are serialised by the session, so all succeed
    docs = await asyncio.gather(*(s.get("stations", {"page": 1}, f"stations {i}") for i in range(8)))
    assert all(len(d["data"]) == 2 for d in docs) and server.max_in_flight == 1
    assert server.replays == 1 and s.sign_ins == 1
    await drv.close()


async def test_archives_are_read_incrementally_and_quiet_stations_are_skipped(tmp_path: Path,
                                                                             server: RstechServer) -> None:
    store = await Store.open(tmp_path / "p.db")
    try:
        drv = make_driver(tmp_path, server.url, store=store, clock=NOW)
        res = await drv.poll(NOW)
        await store.write(res.readings, res.events)
        for k, v in res.state:
            await store.set_state(k, v)
        first = len(res.readings)
        # a new hour arrives at station 1 only; station 2 has had no session since
        server.add_record(1, "hourly", NOW, {"P": 1.03, "T": 19.0, "Vnakwork": 1004.0, "Vnakpriv": 901.0})
        server.log.clear()
        drv.ctx.clock = lambda: NOW + 600
        res2 = await drv.poll(NOW + 600)
        assert res2.ok, res2.error
        # the overlap window is read again and goes to the store, which drops what it has (natural key)
        assert {(r.meter, r.channel, r.ts) for r in res2.readings} >= \
            {("acct:1", c, NOW) for c in ("P", "T", "Vnakpriv", "Vnakwork")}
        assert {r.meter for r in res2.readings} == {"acct:1"}
        asked = [(q["station_id"], q["archive_type"], q["fp_start"]) for p, q in server.log if p == "channel_data"]
        # from the last stored record's day minus the one-day overlap
        day_before = _dt.datetime.fromtimestamp(NOW - 3600 - DAY, _dt.timezone.utc).date().isoformat()
        assert all(sid == "1" for sid, _, _ in asked), asked
        assert ("1", "hourly", day_before) in asked
        await store.write(res2.readings, res2.events)
        for k, v in res2.state:
            await store.set_state(k, v)
        rows, total = await store.query_readings(meter="acct:1", archive="hourly", per_page=1000)
        assert total == 16 and first == 3 * 4 + 3 * 4 + 6
        # A record the server got late (the station called in after a gap): older than the saved position,
        # inside the overlap, so it is stored.
        late = NOW - 5 * 3600
        server.add_record(1, "hourly", late, {"P": 0.5, "T": 18.0, "Vnakwork": 990.0, "Vnakpriv": 890.0})
        server.station(1)["seances_event_time"] = NOW + 1200
        res3 = await drv.poll(NOW + 1200)
        assert res3.ok, res3.error
        await store.write(res3.readings, res3.events)
        rows, total = await store.query_readings(meter="acct:1", archive="hourly", ts_from=late, ts_to=late + 1)
        assert total == 4 and {r.channel for r in rows} == {"P", "T", "Vnakwork", "Vnakpriv"}
    finally:
        await store.close()


async def test_channel_codes_spelled_as_in_the_seed_example_get_the_dictionary_unit(tmp_path: Path,
                                                                                    server: RstechServer) -> None:
    # Seed 000 §3.3's hourly record says "VNakwork"/"VNakpriv"; its dictionary (§3.4.2, БК hourly) says
    # "Vnakwork"/"Vnakpriv" for the same channels. The code is stored as sent, the unit is the dictionary's.
    server.add_record(1, "hourly", NOW, {"T": 25.193481, "VNakpriv": 89519.01, "VNakwork": 292537.06,
                                         "P": 0.9954071})
    drv = make_driver(tmp_path, server.url, extra='read = ["hourly"]\n')
    res = await drv.poll(NOW)
    await drv.close()
    assert res.ok, res.error
    got = {(r.channel, r.ts): (r.value, r.unit) for r in res.readings if r.meter == "acct:1"}
    assert got[("VNakwork", NOW)] == (292537.06, "m³") and got[("VNakpriv", NOW)] == (89519.01, "m³")
    assert got[("Vnakwork", NOW - 3600)] == (1001.0, "m³") and got[("T", NOW)] == (25.193481, "°C")


async def test_expired_session_signs_in_again_and_the_cycle_completes(tmp_path: Path,
                                                                     server: RstechServer) -> None:
    drv = make_driver(tmp_path, server.url)
    server.fail("channel_data", "expire", station_id=2)
    res = await drv.poll(NOW)
    await drv.close()
    assert res.ok, res.error
    assert {r.meter for r in res.readings} == {"acct:1", "acct:2"}
    assert server.sign_ins == 2 and server.rejected == 1


async def test_refused_sign_in_is_an_auth_alarm_without_secrets(tmp_path: Path, server: RstechServer) -> None:
    drv = make_driver(tmp_path, server.url, password="wrong-Pa55word")
    res = await drv.poll(NOW)
    assert not res.answered and not res.readings
    assert "sign-in: HTTP 401" in res.error and "Invalid login credentials" in res.error
    assert "wrong-Pa55word" not in res.error
    assert "auth" in drv.ctx.state.alarms and not await drv.probe()
    server.password = "wrong-Pa55word"  # the account's password was put right
    assert await drv.probe() and "auth" not in drv.ctx.state.alarms
    assert (await drv.poll(NOW)).ok
    await drv.close()


BAD = {
    "html500": "HTTP 500 (text/html): \"Internal Server Error | We're sorry",
    "html200": "expected JSON, got text/html (HTTP 200): \"Internal Server Error",
    "truncated": "truncated JSON",
    "wrong_type": "channel 'T' is 'twenty', expected a number",
    "missing_field": "a record without 'event_time'",
    "repeat": "asked for page 2, the server sent page 1 (a page that repeats)",
}


@pytest.mark.parametrize("kind", sorted(BAD))
async def test_a_bad_page_fails_its_archive_only_and_is_retried(tmp_path: Path, server: RstechServer,
                                                                kind: str) -> None:
    drv = make_driver(tmp_path, server.url, extra="per_page = 2\n")
    server.fail("channel_data", kind, station_id=2, archive_type="hourly", page=2)
    res = await drv.poll(NOW)
    assert res.answered and res.error and "station 2 hourly page 2: " in res.error
    assert BAD[kind] in res.error
    if kind.startswith("html"):   # the page echoed the token and the password: both cut out
        assert "access-token=*** password=***" in res.error
    for secret in (PASSWORD, *drv.session._token.values()):
        if len(secret) > 6:
            assert secret not in res.error
    assert not [r for r in res.readings if r.meter == "acct:2" and r.archive == "hourly"]
    assert {r.meter for r in res.readings} == {"acct:1"}
    pos = dict(res.state)["rstech.positions:acct"]
    assert "hourly" not in pos["2"] and "seen" not in pos["2"]
    res2 = await drv.poll(NOW + 60)   # the next cycle retries it
    assert res2.ok, res2.error
    assert len([r for r in res2.readings if r.meter == "acct:2" and r.archive == "hourly"]) == 12
    await drv.close()


async def test_no_reply_ends_the_cycle_and_the_next_one_signs_in_afresh(tmp_path: Path,
                                                                       server: RstechServer) -> None:
    drv = make_driver(tmp_path, server.url, waiting="1s")
    server.fail("channel_data", "hang", station_id=1, archive_type="hourly")
    res = await drv.poll(NOW)
    assert not res.ok and "station 1 hourly page 1: no reply within 1 s" in res.error
    res2 = await drv.poll(NOW)
    assert res2.ok and server.sign_ins == 2
    await drv.close()


async def test_no_reply_mid_cycle_keeps_the_stations_already_read_and_the_silent_one_goes_last(
        tmp_path: Path, server: RstechServer) -> None:
    # Station 2's archive never answers (a query the server cannot finish): the stations read before it are
    # kept with their positions, and the next cycle reads it last so it cannot starve the ones after it.
    server.add_station(3, equipment_type_id=1)
    server.add_record(3, "hourly", NOW - 3600, {"P": 1.0, "T": 2.0, "Vnakwork": 3.0, "Vnakpriv": 4.0})
    server.fail("channel_data", "hang", times=100, station_id=2, archive_type="hourly")
    drv = make_driver(tmp_path, server.url, waiting="1s", extra='read = ["hourly"]\n')
    res = await drv.poll(NOW)
    assert res.answered and "station 2 hourly page 1: no reply within 1 s" in res.error
    assert {r.meter for r in res.readings} == {"acct:1"} and len(res.readings) == 12
    pos = dict(res.state)["rstech.positions:acct"]
    assert pos["1"]["hourly"] == NOW - 3600 and pos["1"]["seen"] == NOW - 3600
    assert "hourly" not in pos.get("2", {}) and "hourly" not in pos.get("3", {})
    drv._positions = pos
    res2 = await drv.poll(NOW + 60)
    assert "station 2 hourly page 1: no reply within 1 s" in res2.error
    assert {r.meter for r in res2.readings} == {"acct:3"}   # station 1 is quiet, station 3 is read now
    order = [q["station_id"] for p, q in server.log if p == "channel_data"]
    assert order[-2:] == ["3", "2"], order
    await drv.close()


async def test_many_failing_stations_end_the_cycle_early(tmp_path: Path, server: RstechServer) -> None:
    for sid in range(3, 12):
        server.add_station(sid)
    server.fail("channel_data", "html500", times=100)
    drv = make_driver(tmp_path, server.url, extra='read = ["hourly"]\n')
    res = await drv.poll(NOW)
    await drv.close()
    assert res.error.startswith("5 stations failed in a row, 6 station(s) left for the next cycle; "
                                "5 failed request(s): station 1 hourly page 1: HTTP 500")
    assert server.requests["channel_data"] == 5


async def test_records_sharing_a_time_are_all_kept_and_an_exact_repeat_once(tmp_path: Path,
                                                                           server: RstechServer) -> None:
    # Two abnormal situations in one second are two records with one event_time; failing on them (as "a page
    # that repeats") stopped the archive for good. A record served twice (pages overlapping) counts once.
    from pollerd.drivers.rstech import Record, Station
    drv = make_driver(tmp_path, server.url, extra=ALL)
    served = [Record(100, (("Tmax", 1.0),)), Record(100, (("Pmin", 1.0),)), Record(100, (("Tmax", 1.0),))]

    async def pages(*args: Any, **kw: Any) -> list[Record]:
        return list(served)
    drv.session.pages = pages  # type: ignore[method-assign]
    st = Station(1, 1, 1, "boiler house", "БК", 1, None)
    try:
        got = await drv._archive(st, "nesht", None, NOW)
    finally:
        await drv.close()
    assert got == served[:2]


def test_parsers() -> None:
    assert normalise_unit("м<sup>3</sup>") == "m³" and normalise_unit("°С") == "°C"
    assert normalise_unit("кгс/см<sup>2</sup>") == "kgf/cm²" and normalise_unit(None) == ""
    assert normalise_unit("furlong") == "furlong"
    assert normalise_unit("с") == "с"   # the second (GOST 8.417), e.g. an operating time: not °C
    p = parse_page({"data": [1], "total_pages": 3, "current_page": 2, "next_page": 3}, "x", 2)
    assert p.items == (1,) and p.next_page == 3
    assert parse_page({"data": [], "next_page": None}, "x", 1).next_page is None
    for bad, msg in [({"data": {}}, "'data' is dict"), ([], "expected a JSON object"),
                     ({"total_pages": 1}, "no 'data'"), ({"data": [], "next_page": 1}, "repeats"),
                     ({"data": [], "next_page": "two"}, "expected an integer")]:
        with pytest.raises(CloudError, match=msg):
            parse_page(bad, "x", 1)


def test_options_are_checked_with_file_line_and_key(tmp_path: Path) -> None:
    from pollerd.errors import ConfigError
    for extra, msg in [("per_page = 5000\n", "meters[0].per_page: expected an integer 1..1000"),
                       ('stations = ["a"]\n', "meters[0].stations[0]: expected a station id"),
                       ('archive_overlap = "soon"\n', "meters[0].archive_overlap:"),
                       ('read = ["profile"]\n', "rstech cannot read 'profile'")]:
        p = tmp_path / "c.toml"
        p.write_text(meter_toml("a", "http://127.0.0.1:1/api", extra=extra))
        with pytest.raises(ConfigError, match=re.escape(msg)) as ei:
            load_config(p, environ={})
        assert ei.value.line == 9 and PASSWORD not in str(ei.value)


# -- end to end ----------------------------------------------------------------------------------------------

@pytest.fixture
def threaded_server() -> Iterator[RstechServer]:
    """The fake on its own loop in a thread, for the synchronous CLI."""
    srv = RstechServer(password=PASSWORD)
    populate(srv)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(srv.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10)
    yield srv
    asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


def test_poll_command_prints_every_station(tmp_path: Path, threaded_server: RstechServer,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "pollerd.toml"
    p.write_text(meter_toml("acct", threaded_server.url, extra='read = ["hourly"]\n'))
    assert cli.main(["poll", "--config", str(p), "acct", "--json"]) == 0
    out = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["meter"] for r in out} == {"acct:1", "acct:2"} and len(out) == 24
    assert all(r["archive"] == "hourly" for r in out)
    assert threaded_server.sign_outs == 1


async def test_daemon_polls_two_accounts_and_a_hanging_one_delays_neither(tmp_path: Path, server: RstechServer,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    hang = RstechServer(password=PASSWORD)
    populate(hang)
    hang.fail("stations", "hang", times=100)
    await hang.start()
    other = RstechServer(password="another-Secret1")
    populate(other)
    other.fail("channel_data", "html500", station_id=2, archive_type="hourly")
    await other.start()
    text = '[gateway]\nname = "gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n[api]\nenabled = false\n\n'
    text += meter_toml("a", server.url, extra='read = ["hourly", "daily"]\n')
    text += meter_toml("b", other.url, password="another-Secret1", extra='read = ["hourly"]\n')
    text += meter_toml("stuck", hang.url)
    p = tmp_path / "pollerd.toml"
    p.write_text(text)
    cfg = load_config(p, environ={})
    daemon = Daemon(cfg, tmp_path / "state")
    caplog.set_level(logging.DEBUG)
    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(400):
            await asyncio.sleep(0.05)
            st = daemon.runtime.meters
            if st.get("a") and st["a"].readings >= 30 and st.get("b") and st["b"].polls >= 2 and \
                    st["b"].last_error is None:
                break
        else:
            pytest.fail(f"accounts not polled: {[m.as_dict() for m in daemon.runtime.meters.values()]}")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        await hang.stop()
        await other.stop()
    assert daemon.runtime.meters["stuck"].readings == 0
    assert server.sign_outs >= 1 and other.sign_outs >= 1
    async with await Store.open_readonly(tmp_path / "state" / "pollerd.db") as store:
        rows, n_b2 = await store.query_readings(meter="b:2", archive="hourly", per_page=1000)
        _, n_a1 = await store.query_readings(meter="a:1", archive="hourly", per_page=1000)
    assert n_a1 == 12 and n_b2 == 12   # b's bad page was retried the next cycle
    logs = caplog.text
    assert "station 2 hourly page 1: HTTP 500" in logs
    for secret in (PASSWORD, "another-Secret1"):
        assert secret not in logs
