"""WebMeters (seed 001) against a local XML-RPC fake: the org -> group -> device walk, units and tariffs, fault
codes, bad replies, the Ellis export and `pollerd webmeters-key`."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import xmlrpc.client
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fakes_webmeters import KEY, PHONE, SMS, FakeWebmeters, sample

from pollerd.config import load_config
from pollerd.drivers import webmeters as wm
from pollerd.drivers.base import CloudDriverContext
from pollerd.errors import CloudError
from pollerd.metrics import Registry
from pollerd.state import MeterState

TS = 1_764_500_000


@pytest.fixture
async def fake() -> AsyncIterator[FakeWebmeters]:
    f = sample(FakeWebmeters())
    await f.start()
    try:
        yield f
    finally:
        await f.stop()


def driver(tmp_path: Path, url: str, *, key: str = KEY, read: str = '["values"]') -> wm.WebmetersDriver:
    p = tmp_path / "pollerd.toml"
    p.write_text(f'''
[[meters]]
name = "acct"
protocol = "webmeters"
url = "{url}"
api_key = "{key}"
read = {read}
waiting_time = "10s"
timezone = "Europe/Moscow"
''', encoding="utf-8")
    mc = load_config(p, environ={}).meters[0]
    st = MeterState(mc.name, mc.protocol, mc.line, 0, 3600.0)
    return wm.WebmetersDriver(CloudDriverContext(mc, st, Registry(), log=logging.getLogger("test"),
                                                 state_dir=tmp_path / "state"))


def table(readings) -> dict[tuple[str, str], tuple[float, str]]:  # type: ignore[no-untyped-def]
    return {(r.meter, r.channel): (r.value, r.unit) for r in readings}


async def test_poll_walks_orgs_groups_and_devices(tmp_path: Path, fake: FakeWebmeters) -> None:
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.ok, res.error
    assert table(res.readings) == {
        ("acct:1001", "A+.T1"): (1_234_500.0, "Wh"),       # кВтч -> Wh
        ("acct:1001", "A+.T2"): (567_250.0, "Wh"),         # "567,25" кВт*ч
        ("acct:1002.1", "V"): (10.0, "m³"),                # one id, two channels: two meters
        ("acct:1002.2", "V"): (20.0, "m³"),
        ("acct:2001", "Показание"): (1.5, "m³"),           # other kinds keep their names; litres -> m³
    }
    # the child group listed meter 1001 again: no duplicate rows; the empty value is no reading
    assert len(res.readings) == 5
    assert all(r.archive == "current" and r.ts == TS for r in res.readings)
    # one orgs call, one groups call per org, one values call per group: nothing more
    assert fake.calls == ["userGetOrgList", "userGetGroups", "deviceGetValues", "deviceGetValues",
                          "userGetGroups", "deviceGetValues"]
    devs = drv.ctx.state.devices
    assert devs["1001"] == {"type": "Меркурий 200", "channel": 0, "flat": "12", "org": "ТСЖ Ромашка",
                            "group": "Дом 1"}
    assert set(devs) == {"1001", "1002.1", "1002.2", "2001"}


async def test_bad_api_key_stops_the_source_with_a_health_reason(tmp_path: Path, fake: FakeWebmeters) -> None:
    wrong = "x" * 40
    drv = driver(tmp_path, fake.url, key=wrong)
    try:
        res = await drv.poll(TS)
        assert not res.answered and res.readings == ()
        assert "ERR_BAD_APIKEY" in res.error and "webmeters-key" in res.error
        assert wrong not in res.error                           # the fake echoed it; scrubbed
        assert "api key" in drv.ctx.state.alarms["auth"]
        calls = len(fake.calls)
        again = await drv.poll(TS + 60)
        assert not again.answered and len(fake.calls) == calls   # stopped: the server is not asked again
        assert not await drv.probe()
    finally:
        await drv.close()


async def test_denied_and_missing_groups_fail_only_themselves(tmp_path: Path, fake: FakeWebmeters) -> None:
    fake.denied_groups = {20}
    fake.missing_groups = {11}
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.answered and not res.ok
    assert "org 2 group 20: deviceGetValues: error 3 ERR_ACCESS_DENIED" in res.error
    assert "org 1 group 11: deviceGetValues: error 2 ERR_ITEM_NOT_FOUND" in res.error
    assert {r.meter for r in res.readings} == {"acct:1001", "acct:1002.1", "acct:1002.2"}
    assert "auth" not in drv.ctx.state.alarms


@pytest.mark.parametrize("mode, expect", [
    ("html", "502 Bad Gateway"),
    ("truncated", "not an XML-RPC reply"),
    ("garbage", "expected an array of structs"),
    ("http500", "HTTP 500"),
])
async def test_a_bad_page_is_a_clear_error_and_the_next_cycle_retries(
        tmp_path: Path, fake: FakeWebmeters, mode: str, expect: str) -> None:
    fake.broken["deviceGetValues"] = mode
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
        assert res.readings == () and not res.ok
        assert expect in res.error, res.error
        assert KEY not in res.error
        del fake.broken["deviceGetValues"]
        res = await drv.poll(TS + 60)
        assert res.ok and len(res.readings) == 5
    finally:
        await drv.close()


async def test_a_malformed_group_list_skips_that_org_only(tmp_path: Path, fake: FakeWebmeters) -> None:
    fake.groups[2].append({"parentId": 20, "name": "no id"})
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.answered and "org 2" in res.error and "missing or invalid 'id'" in res.error
    assert {r.meter for r in res.readings} == {"acct:1001", "acct:1002.1", "acct:1002.2"}
    assert fake.calls.count("deviceGetValues") == 2               # org 2's groups were not read


async def test_server_gone_mid_walk_keeps_what_was_read(tmp_path: Path, fake: FakeWebmeters) -> None:
    fake.broken["deviceGetValues 11"] = "hangup"
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.answered and "deviceGetValues" in res.error
    assert {r.meter for r in res.readings} == {"acct:1001", "acct:1002.1", "acct:1002.2"}
    assert "userGetGroups" not in fake.calls[3:]          # org 2 is not tried against a server that is gone


def test_device_names_do_not_depend_on_the_other_records() -> None:
    assert wm.device_id({"id": 7}) == "7"
    assert wm.device_id({"id": "7", "channelNumber": 0}) == "7"
    assert wm.device_id({"id": 7, "channelNumber": 2}) == "7.2"
    assert wm.device_id({"id": 7, "channelNumber": "3"}) == "7.3"
    with pytest.raises(CloudError, match="channelNumber is list"):
        wm.device_id({"id": 7, "channelNumber": [1]})
    with pytest.raises(CloudError, match="missing or invalid 'id'"):
        wm.device_id({"id": None})


async def test_a_broken_org_list_fails_the_cycle(tmp_path: Path, fake: FakeWebmeters) -> None:
    fake.broken["userGetOrgList"] = "html"
    drv = driver(tmp_path, fake.url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert not res.answered and "userGetOrgList: expected an XML-RPC reply (text/xml), got text/html" in res.error
    assert KEY not in res.error  # the fake put the key into its HTML page


async def test_unreachable_server_is_one_error(tmp_path: Path, fake: FakeWebmeters) -> None:
    url = fake.url
    await fake.stop()
    drv = driver(tmp_path, url)
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert not res.answered and "userGetOrgList" in res.error


async def test_ellis_export_is_saved_into_the_state_directory(tmp_path: Path, fake: FakeWebmeters) -> None:
    drv = driver(tmp_path, fake.url, read='["values", "ellis"]')
    try:
        res = await drv.poll(TS)
    finally:
        await drv.close()
    assert res.ok, res.error
    day = dt.datetime.fromtimestamp(TS, dt.timezone(dt.timedelta(hours=3))).date().isoformat()
    path = tmp_path / "state" / "webmeters" / f"acct-{day}.txt"
    assert path.read_bytes() == fake.ellis            # saved as sent (cp1251 here), not re-encoded
    assert drv.ctx.state.identity["ellis_file"] == str(path)
    assert "exportEllisFile" in fake.calls and len(res.readings) == 5


async def test_ellis_only_entry_and_a_failed_export(tmp_path: Path, fake: FakeWebmeters) -> None:
    drv = driver(tmp_path, fake.url, read='["ellis"]')
    try:
        fake.broken["exportEllisFile"] = "html"
        res = await drv.poll(TS)
        assert not res.ok and "exportEllisFile" in res.error and "text/plain" in res.error
        assert not (tmp_path / "state" / "webmeters").exists()
        del fake.broken["exportEllisFile"]
        res = await drv.poll(TS)
        assert res.ok and fake.calls == ["exportEllisFile", "exportEllisFile"]
    finally:
        await drv.close()


# -- codec ---------------------------------------------------------------------------------------------

def test_decode_reply_values_faults_and_garbage() -> None:
    assert wm.decode_reply(xmlrpc.client.dumps(([1, 2],), methodresponse=True).encode()) == [1, 2]
    f = wm.decode_reply(xmlrpc.client.dumps(xmlrpc.client.Fault(3, "denied"), methodresponse=True).encode())
    assert f == wm.Fault(3, "denied") and "ERR_ACCESS_DENIED" in f.describe()
    assert wm.Fault(9, "odd").describe() == "error 9: odd"
    with pytest.raises(CloudError, match="not an XML-RPC reply"):
        wm.decode_reply(b"<html><title>oops SECRET</title></html>", scrub=("SECRET",))
    try:
        wm.decode_reply(b"<methodResponse><params><param><value><string>SECRET", scrub=("SECRET",))
    except CloudError as exc:
        assert "SECRET" not in str(exc)
    else:
        pytest.fail("truncated reply accepted")


def test_call_encoding_round_trips() -> None:
    params, method = xmlrpc.client.loads(wm.encode_call("deviceGetValues", KEY, 20))
    assert method == "deviceGetValues" and params == (KEY, 20)


@pytest.mark.parametrize("units, expect", [
    ("кВтч", ("Wh", 1000.0)), ("кВт*ч", ("Wh", 1000.0)), ("кВт·ч", ("Wh", 1000.0)), ("Вт*ч", ("Wh", 1.0)),
    ("м3", ("m³", 1.0)), ("м³", ("m³", 1.0)), ("л", ("m³", 0.001)), ("Гкал", ("Wh", 1_163_000.0)),
    ("°C", ("°C", 1.0)), ("°С", ("°C", 1.0)), ("попугаи", ("попугаи", 1.0)), ("", ("", 1.0)),
    ("с", ("с", 1.0)), ("c", ("c", 1.0)),   # "с" is the second in Russian units, not a temperature
])
def test_units(units: str, expect: tuple[str, float]) -> None:
    assert wm.normalise_unit(units) == expect


def test_tariffs_only_for_energy() -> None:
    dev = {"id": 5, "values": [{"name": "T1", "value": 1, "units": "кВтч"}, {"name": "T1", "value": 2, "units": "м3"},
                               {"name": "Т2", "value": 3, "units": "кВтч"}]}  # Cyrillic Т
    got = [(r.channel, r.value, r.unit) for r in wm.device_readings("a:5", dev, TS)]
    assert got == [("A+.T1", 1000.0, "Wh"), ("T1", 2.0, "m³"), ("A+.T2", 3000.0, "Wh")]


@pytest.mark.parametrize("dev, expect", [
    ({"id": 1, "values": "T1=5"}, "'values' is str"),
    ({"id": 1, "values": [5]}, "values\\[0\\] is int"),
    ({"id": 1, "values": [{"value": 5}]}, "has no name"),
    ({"id": 1, "values": [{"name": "T1", "value": "five", "units": "кВтч"}]}, "could not convert"),
    ({"id": 1, "values": [{"name": "T1", "value": True, "units": "кВтч"}]}, "boolean"),
    ({"id": 1, "values": [{"name": "T1", "value": "nan", "units": "кВтч"}]}, "finite"),
    ({"id": 1, "values": [{"name": "T1", "value": 1, "units": 7}]}, "units is int"),
])
def test_malformed_devices(dev: dict, expect: str) -> None:
    with pytest.raises(CloudError, match=expect):
        wm.device_readings("a:1", dev, TS)


# -- pollerd webmeters-key -----------------------------------------------------------------------------

async def test_request_key(fake: FakeWebmeters) -> None:
    async def code() -> str:
        return SMS + "\n"
    assert await wm.request_key(fake.url, PHONE, code) == KEY
    assert fake.calls == ["apiSendKeyRequest", "apiGetKey"]

    async def wrong() -> str:
        return "0000"
    with pytest.raises(CloudError, match="apiGetKey: error 3"):
        await wm.request_key(fake.url, PHONE, wrong)
    with pytest.raises(CloudError, match="10 digits"):
        await wm.request_key(fake.url, "+79181234567", code)


async def test_webmeters_key_command(fake: FakeWebmeters) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollerd", "webmeters-key", "--url", fake.url, "--phone", PHONE,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(SMS.encode() + b"\n"), 60)
    assert proc.returncode == 0, err
    assert f'api_key = "{KEY}"' in out.decode()
    assert "SMS code:" in err.decode() and KEY not in err.decode()
