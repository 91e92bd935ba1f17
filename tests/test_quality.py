"""Values are checked before the store (issue 14, observation 2): a non-finite, out-of-type or implausible value
is dropped per record with a counted, logged reason; the rest of the cycle is stored; the store is not blamed;
the meter's state says what happened."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import aiohttp
import pytest
from helpers import free_port, until
from iec_helpers import IecLink, make_driver

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.drivers.iec62056 import PROFILES, decode_sets
from pollerd.model import Reading
from pollerd.protocols import iec62056 as iec
from pollerd.protocols import mbus as m
from pollerd.quality import screen
from pollerd.sim.mbus import SimBus, SimMeter, serve_tcp
from pollerd.store import Store

# The field telegram of observation 2: 32-bit real flow temperature (VIF 5B) = NaN (00 00 C0 7F), a valid
# volume (VIF 13, 123.456 m³) before it.
NAN_TELEGRAM = bytes.fromhex("68 1b 1b 68 08 01 72 78 56 34 12 43 04 01 07 01 00 00 00 04 13 40 e2 01 00"
                             " 05 5b 00 00 c0 7f b8 16")


def r(channel: str, value: object, ts: int = 1_790_000_000) -> Reading:
    return Reading("m", channel, "current", ts, value, "x")  # type: ignore[arg-type]


def test_screen_drops_per_record_and_keeps_the_rest_in_order() -> None:
    readings = [r("V", 1.5), r("T.flow", math.nan), r("A+", math.inf), r("A-", -math.inf), r("P", "12"),
                r("Q", None), r("S", True), r("E.heat", 2e15), r("PF", -0.87), r("PF.L1", 4194.3), r("F", 50),
                r("U.L1", 230.0, ts=-5), r("U.L2", 231.0)]
    out = screen(readings)
    assert [x.channel for x in out.kept] == ["V", "PF", "F", "U.L2"]
    assert [(d.reading.channel, d.reason) for d in out.dropped] == [
        ("T.flow", "non_finite"), ("A+", "non_finite"), ("A-", "non_finite"), ("P", "not_a_number"),
        ("Q", "not_a_number"), ("S", "not_a_number"), ("E.heat", "implausible"), ("PF.L1", "implausible"),
        ("U.L1", "bad_timestamp")]


def test_iec_value_beyond_float_range_is_no_inf_and_is_counted_as_dropped() -> None:
    sets = iec.parse_data_block("1.8.0(1e308*kWh)\r\n2.8.0(000123.4*kWh)\r\n")
    decoded = {d.channel: d.value for d in decode_sets(sets, PROFILES["generic"])}
    assert decoded["A+"] == "1e308"     # was inf: 1e308 kWh in Wh, stored as A+ = inf
    assert decoded["A-"] == 123400.0



async def test_iec_driver_reports_the_value_beyond_float_range_as_dropped() -> None:
    def respond(req: bytes) -> list[tuple[float, bytes]]:
        if req.startswith(b"/?"):
            return [(0.0005, b"/LGZ5ZMD\r\n")]
        if req[:1] == b"\x06":
            return [(0.0005, iec.encode_message(b"\x021.8.0(1e308*kWh)\r\n2.8.0(12.5*kWh)\r\n!\r\n\x03"))]
        return []
    driver, _ = make_driver(IecLink(respond))
    result = await driver.poll(1_790_000_000)
    assert result.ok, result.error
    assert [(r.channel, r.value) for r in result.readings] == [("A-", 12500.0)]
    assert [(d.reading.channel, d.reason) for d in result.dropped] == [("A+", "non_finite")]


def _nan_meter() -> SimMeter:
    frame = m.decode_frame(NAN_TELEGRAM)
    t = m.decode_telegram(frame)
    h = t.header
    # The codec never hands out a NaN: the record has no value and says why.
    assert t.records[1].value is None and t.records[1].error == m.NON_FINITE
    meter = SimMeter(1, h.id, h.manufacturer, h.medium, h.version, [bytes(frame.data[12:])])
    # The simulator rebuilds the frame from these parts: the field telegram byte for byte.
    assert meter.rsp_ud(True) == NAN_TELEGRAM
    meter.reset()
    meter.access_no = 0
    return meter


async def test_a_nan_costs_only_its_value_and_never_blames_the_store(tmp_path: Path) -> None:
    bus = SimBus([_nan_meter()])
    server = await serve_tcp(bus, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg_path = tmp_path / "p.toml"
    cfg_path.write_text(
        f'[gateway]\nname = "gw"\n\n[store]\ncommit_interval = "50ms"\n\n[api]\nlisten = "127.0.0.1:{free_port()}"\n\n'
        f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        '[[meters]]\nname = "w"\nprotocol = "mbus"\nline = "conv"\nconnection_address = 1\n'
        'interval_time = "1s"\nwaiting_time = "300ms"\ntimezone = "UTC"\n')
    daemon = Daemon(load_config(cfg_path), tmp_path)
    task = asyncio.ensure_future(daemon.run())
    try:
        await until(lambda: daemon.ready.is_set() or task.done(), what="daemon ready")
        st = daemon.runtime.meters["w"]
        await until(lambda: st.polls >= 2, what="two cycles")
        assert daemon.runtime.store_ok, daemon.runtime.store_error
        assert st.status == "partial"
        assert st.dropped >= 2 and st.last_dropped and "non_finite" in st.last_dropped
        assert st.consecutive_failures == 0 and not st.degraded  # a bad value is not a dead meter
        metrics = daemon.metrics.render()
        assert 'pollerd_values_dropped_total{meter="w",reason="non_finite"}' in metrics
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{daemon.api_port}"
            async with http.get(f"{base}/health") as resp:
                health = await resp.json()
            async with http.get(f"{base}/api/meters/w") as resp:
                meter = (await resp.json())["data"]
        assert not any("store" in reason for reason in health["reasons"]), health
        assert any("values dropped" in w for w in health["warnings"]), health
        assert meter["state"] == "partial" and meter["dropped"] >= 2
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
        server.close()
    store = await Store.open_readonly(tmp_path / "pollerd.db")
    rows, _ = await store.query_readings(per_page=1000)
    await store.close()
    assert rows and {x.channel for x in rows} == {"V"}      # the volume of the same cycle is stored
    assert all(x.value == pytest.approx(123.456) for x in rows)


def test_the_fast_path_agrees_with_the_full_check() -> None:
    # quality._check takes a shortcut for the common case (a float in range, an int ts); for every kind of
    # value and channel it must keep exactly what check_value and the ts rule keep.
    from pollerd.quality import TS_MAX, _check, check_value
    values: list[object] = [0.0, -0.0, 1.0, 1.0005, 1.001, 1.0011, -1.0011, 2.0, -2.0, 1e15, 1e15 * 1.0000001, -1e16,
                            float("nan"), float("inf"), float("-inf"), 5, True, False, "1.0", None, 10**400]
    for channel in ("PF", "PF.L1", "P", "A+.T1", "U.L1", "PFX", "I"):
        for value in values:
            for ts in (0, 1_700_000_000, TS_MAX, TS_MAX + 1, -1, True, 1.5):
                r = Reading("m", channel, "current", ts, value, "u")  # type: ignore[arg-type]
                full = check_value(channel, value)
                if full is None and (isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts <= TS_MAX):
                    full = ("bad_timestamp", "")
                got = _check(r)
                assert (got is None) == (full is None), (channel, value, ts, got, full)
                if got is not None:
                    assert full is not None and got[0] == full[0], (channel, value, ts, got, full)
