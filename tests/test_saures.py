"""SAURES (seed 002) against a local fake: login and session reuse, expiry (WrongSIDException and HTTP 401),
types -> channels and units, tariffs, state as quality, controller telemetry, bad pages."""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes_saures import EMAIL, PASSWORD, FakeSaures, sample

from pollerd.config import load_config
from pollerd.drivers import saures as sa
from pollerd.drivers.base import CloudDriverContext
from pollerd.errors import CloudError, ConfigError
from pollerd.metrics import Registry
from pollerd.state import MeterState

TS = 1_764_500_000
MSK = zoneinfo.ZoneInfo("Europe/Moscow")


def msk(text: str) -> int:
    return int(dt.datetime.strptime(text, "%d.%m.%Y %H:%M").replace(tzinfo=MSK).timestamp())


@pytest.fixture
async def fake() -> AsyncIterator[FakeSaures]:
    f = sample(FakeSaures())
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def driver(tmp_path: Path, url: str, *, password: str = PASSWORD, read: str = '["meters", "controllers"]',
           extra: str = "") -> sa.SauresDriver:
    (tmp_path / "pw").write_text(password + "\n", encoding="utf-8")
    p = tmp_path / "pollerd.toml"
    p.write_text(f'''
[[meters]]
name = "flatco"
protocol = "saures"
url = "{url}"
email = "{EMAIL}"
password_file = "pw"
read = {read}
waiting_time = "10s"
timezone = "Europe/Moscow"
{extra}''', encoding="utf-8")
    mc = load_config(p, environ={}).meters[0]
    st = MeterState(mc.name, mc.protocol, mc.line, 0, 3600.0)
    return sa.SauresDriver(CloudDriverContext(mc, st, Registry(), log=logging.getLogger("test")))


def table(readings) -> dict[tuple[str, str], tuple[float, str, str, int]]:  # type: ignore[no-untyped-def]
    return {(r.meter, r.channel): (round(r.value, 6), r.unit, r.quality, r.ts) for r in readings}


EXPECTED = {
    ("flatco:13-02-26472-AB", "V.hot"): (99.896, "m³", "good", msk("15.09.2017 08:55")),   # litres -> m³
    ("flatco:13-04-26051-AB", "V.cold"): (135.494, "m³", "good", msk("15.09.2017 08:55")),
    ("flatco:227714-4", "T"): (25.6, "°C", "good", msk("15.09.2017 08:55")),
    ("flatco:227714-3", "leak"): (0.0, "state", "good", msk("15.09.2017 08:55")),
    ("flatco:AA123-88", "A+"): (5.0, "Wh", "state.1", msk("15.09.2017 08:55")),           # "Обрыв"
    ("flatco:AA123-88", "A+.T1"): (2.3, "Wh", "state.1", msk("15.09.2017 08:55")),
    ("flatco:AA123-88", "A+.T3"): (2.7, "Wh", "state.1", msk("15.09.2017 08:55")),
    ("flatco:692083", "battery"): (75.0, "%", "good", msk("15.09.2017 08:55")),
    ("flatco:692083", "rssi"): (-73.0, "dBm", "good", msk("15.09.2017 08:55")),
    ("flatco:692083", "last_connection"): (float(msk("15.09.2017 09:00")), "s", "good", msk("15.09.2017 08:55")),
    ("flatco:G-1", "V.gas"): (1234.567, "m³", "good", msk("15.09.2017 10:30")),
    ("flatco:700001.2", "valve"): (2.0, "state", "good", msk("15.09.2017 10:30")),   # no sn: controller.place
    ("flatco:700001", "battery"): (100.0, "%", "good", msk("15.09.2017 10:30")),
    ("flatco:700001", "rssi"): (-60.0, "dBm", "good", msk("15.09.2017 10:30")),
    ("flatco:700001", "last_connection"): (float(msk("15.09.2017 10:30")), "s", "good", msk("15.09.2017 10:30")),
}


async def test_poll_reads_flats_meters_and_controllers(tmp_path: Path, fake: FakeSaures) -> None:
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
        assert res.ok, res.error
        assert table(res.readings) == EXPECTED
        assert len(res.readings) == len(EXPECTED)
        assert all(r.archive == "current" for r in res.readings)
        # the disabled flat is not read; one login serves the whole cycle
        assert fake.requests == ["login", "flats", "flat 106", "flat 39"]
        devs = drv.ctx.state.devices
        assert devs["AA123-88"]["state"] == "Обрыв" and devs["AA123-88"]["flat"] == 106
        assert devs["692083"]["kind"] == "controller" and devs["692083"]["firmware"] == "3.4.0004"
        assert devs["N-1"]["type"] == 42          # listed, but an unknown type gives no readings
        # the next cycle reuses the session
        res = await drv.poll(TS + 3600)
        assert res.ok and fake.logins == 1 and fake.requests.count("login") == 1
    finally:
        await drv.close()


async def test_the_units_the_server_sends_are_an_entry_key(tmp_path: Path, fake: FakeSaures) -> None:
    # Seed 002's text says litres and Wh, its examples read like m³ and kWh: an installer checks one meter's
    # display and says which; the stored channels keep their units (m³, Wh).
    drv = driver(tmp_path, fake.url, extra='volume_unit = "m3"\nenergy_unit = "kWh"\n')
    try:
        res = await drv.poll(TS)
        got = table(res.readings)
    finally:
        await drv.close()
    assert got[("flatco:13-02-26472-AB", "V.hot")][:2] == (99896.0, "m³")
    assert got[("flatco:AA123-88", "A+")][:2] == (5000.0, "Wh")
    assert got[("flatco:AA123-88", "A+.T3")][:2] == (2700.0, "Wh")
    assert got[("flatco:227714-4", "T")] == EXPECTED[("flatco:227714-4", "T")]
    with pytest.raises(ConfigError, match=r"meters\[0\]\.volume_unit: expected one of 'l', 'm3', got 'litre'"):
        driver(tmp_path, fake.url, extra='volume_unit = "litre"\n')


async def test_repeated_flats_and_meters_are_read_once(tmp_path: Path, fake: FakeSaures) -> None:
    fake.flats.append(dict(fake.flats[0]))                       # the flat list repeats flat 106
    fake.sensors[39] = fake.sensors[39] + fake.sensors[106]      # and flat 39 repeats its controller
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.ok and table(res.readings) == EXPECTED and len(res.readings) == len(EXPECTED)
    assert fake.requests == ["login", "flats", "flat 106", "flat 39"]


async def test_read_selects_meters_or_controllers(tmp_path: Path, fake: FakeSaures) -> None:
    drv = driver(tmp_path, fake.url, read='["controllers"]')
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.ok and {r.channel for r in res.readings} == {"battery", "rssi", "last_connection"}


@pytest.mark.parametrize("how", ["wrongsid", "http401"])
async def test_expired_session_signs_in_again_and_repeats_the_request(
        tmp_path: Path, fake: FakeSaures, how: str) -> None:
    fake.expire_with_401 = how == "http401"
    drv = driver(tmp_path, fake.url)
    try:
        assert (await drv.poll(TS)).ok
        fake.expire_all()                      # between cycles: the server forgot the session
        res = await drv.poll(TS + 3600)
        assert res.ok, res.error
        assert table(res.readings) == EXPECTED
        assert fake.logins == 2
        assert fake.requests[4:] == ["flats", "login", "flats", "flat 106", "flat 39"]
    finally:
        await drv.close()


async def test_session_expiring_mid_cycle(tmp_path: Path, fake: FakeSaures) -> None:
    fake.sid_lifetime = 2                      # flats, flat 106; flat 39 finds the session gone
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.ok and table(res.readings) == EXPECTED
    assert fake.requests == ["login", "flats", "flat 106", "flat 39", "login", "flat 39"]


async def test_wrong_password_is_an_auth_alarm_and_never_echoed(tmp_path: Path, fake: FakeSaures) -> None:
    drv = driver(tmp_path, fake.url, password="wrong secret")
    try:
        res = await drv.poll(TS)
        assert not res.answered and res.readings == ()
        assert "sign-in refused" in res.error and "WrongCredentialsException" in res.error
        assert "wrong secret" not in res.error             # the fake echoed it back
        assert "sign-in refused" in drv.ctx.state.alarms["auth"]
        assert "wrong secret" not in drv.ctx.state.alarms["auth"]
        assert not await drv.probe()
        fake.password = "wrong secret"                      # fixed on the server side: the next cycle recovers
        res = await drv.poll(TS + 3600)
        assert res.ok and "auth" not in drv.ctx.state.alarms
    finally:
        await drv.close()


@pytest.mark.parametrize("mode, expect", [
    ("html", "expected JSON, got text/html"),
    ("truncated", "truncated JSON"),
    ("wrongtype", "expected a number, got '12 litres'"),
    ("http500", "HTTP 500"),
])
async def test_a_bad_flat_page_stores_nothing_of_it_and_the_next_cycle_retries(
        tmp_path: Path, fake: FakeSaures, mode: str, expect: str) -> None:
    fake.broken["flat 39"] = mode
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
        assert res.answered and not res.ok
        assert "flat 39" in res.error and expect in res.error, res.error
        assert all(r.ts == msk("15.09.2017 08:55") for r in res.readings)  # flat 106 only
        assert len(res.readings) == 10
        del fake.broken["flat 39"]
        res = await drv.poll(TS + 3600)
        assert res.ok and table(res.readings) == EXPECTED
    finally:
        await drv.close()


@pytest.mark.parametrize("mode, expect", [
    ("html", "expected JSON, got text/html"),
    ("truncated", "truncated JSON"),
    ("wrongtype", "'flats' is str"),
])
async def test_a_bad_flat_list_fails_the_cycle(tmp_path: Path, fake: FakeSaures, mode: str, expect: str) -> None:
    fake.broken["flats"] = mode
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert not res.answered and res.readings == () and expect in res.error
    assert "flat 106" not in fake.requests


async def test_unreachable_server(tmp_path: Path, fake: FakeSaures) -> None:
    url = fake.url
    await fake.stop()
    drv = driver(tmp_path, url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert not res.answered and "login" in res.error


async def test_sid_is_never_in_errors(tmp_path: Path, fake: FakeSaures) -> None:
    fake.broken["flat 39"] = "html"            # the error page repeats the request, sid included
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    sid = next(iter(fake.sids))
    assert "flat 39" in res.error and "try later" in res.error and "sid=***" in res.error
    assert sid not in res.error


# -- parsing -------------------------------------------------------------------------------------------

def test_envelope() -> None:
    assert sa.envelope({"status": "ok", "errors": [], "data": {"a": 1}}, "x") == {"a": 1}
    with pytest.raises(sa.SessionExpired):
        sa.envelope({"status": "bad", "errors": [{"name": "WrongSIDException", "msg": "no"}], "data": {}}, "x")
    with pytest.raises(CloudError, match=r"x: status 'bad': Boom: oh SECRET"):
        sa.envelope({"status": "bad", "errors": [{"name": "Boom", "msg": "oh SECRET"}]}, "x")
    with pytest.raises(CloudError, match=r"\*\*\*"):
        sa.envelope({"status": "bad", "errors": ["leaked SECRET"]}, "x", ("SECRET",))
    with pytest.raises(CloudError, match="expected a JSON object, got list"):
        sa.envelope([], "x")
    with pytest.raises(CloudError, match="'data' is NoneType"):
        sa.envelope({"status": "ok"}, "x")


@pytest.mark.parametrize("sensor, expect", [
    ({"meters": []}, "missing controller serial number"),
    ({"sn": "1", "meters": {}}, "'meters' is dict"),
    ({"sn": "1", "readout_dt": "yesterday", "meters": []}, "cannot read the date and time 'yesterday'"),
    ({"sn": "1", "bat": "full", "meters": []}, "bat: expected a number, got 'full'"),
    ({"sn": "1", "meters": [{"sn": "m", "value": "1"}]}, "'type' is NoneType"),
    ({"sn": "1", "meters": [{"sn": "m", "value": "1", "type": {"number": "two"}}]}, "'type.number' is 'two'"),
    ({"sn": "1", "meters": [{"sn": "m", "type": {"number": 1}}]}, "missing 'value'"),
    ({"sn": "1", "meters": [{"sn": "m", "value": [], "type": {"number": 1}}]}, "expected a number, got list"),
    ({"sn": "1", "meters": [{"sn": "m", "value": "1", "vals": [{"value": "1"}], "type": {"number": 8}}]},
     "missing tariff 'type'"),
    ({"sn": "1", "meters": [{"sn": "m", "value": "1", "vals": {}, "type": {"number": 8}}]}, "'vals' is dict"),
    ({"sn": "1", "meters": [{"sn": ["m"], "value": "1", "type": {"number": 8}}]}, "'sn' is list"),
])
def test_malformed_pages(sensor: dict, expect: str) -> None:
    with pytest.raises(CloudError, match=expect):
        sa.parse_meters("e", 1, {"sensors": [sensor]}, ts=TS, tz=MSK, controllers=True, meters=True)


def test_missing_times_fall_back_to_the_poll_time() -> None:
    page = sa.parse_meters("e", 1, {"sensors": [{"sn": 5, "bat": 50, "meters": [
        {"sn": "m", "value": "2000", "vals": [], "type": {"number": 1, "name": "ХВС"}}]}]},
        ts=TS, tz=MSK, controllers=True, meters=True)
    assert [(r.meter, r.channel, r.value, r.ts) for r in page.readings] == [
        ("e:5", "battery", 50.0, TS), ("e:m", "V.cold", 2.0, TS)]


def test_time_formats() -> None:
    assert sa.parse_time("15.09.2017 09:00", MSK, "t") == msk("15.09.2017 09:00")
    assert sa.parse_time("2017-09-15 09:00:00", MSK, "t") == msk("15.09.2017 09:00")
    assert sa.parse_time("", MSK, "t") is None
    with pytest.raises(CloudError):
        sa.parse_time(17, MSK, "t")
