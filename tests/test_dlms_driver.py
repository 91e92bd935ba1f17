"""The DLMS driver on a real Line against the СПОДЭС simulator: association, identity, clock drift and opt-in
clock set, energy/instant with scaler/unit, load profile (capture order read from the meter), daily and
monthly archives with resume from the stored position, journals -> events, re-association after the meter
drops it, and the config keys that must be refused (HLS, ciphering)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging

import pytest

from pollerd.config import LineConfig, MeterConfig, Secret
from pollerd.drivers.base import BusDriverContext
from pollerd.drivers.dlms import DlmsDriver
from pollerd.drivers.dlms_options import DlmsOptions, parse_address, parse_options, physical_from_serial
from pollerd.errors import OptionError
from pollerd.line import Line
from pollerd.metrics import Registry
from pollerd.sim.dlms import HdlcBus, serve_hdlc_tcp, serve_wrapper_tcp
from pollerd.sim.dlms_meter import SimSpodesMeter, interval_energy
from pollerd.state import LineState, MeterState

TZ = "Europe/Moscow"
MSK = dt.timezone(dt.timedelta(hours=3))
NOW = 1_764_720_000 + 11 * 3600 + 7   # 2025-12-03 14:00:07 MSK


class _Store:
    def __init__(self) -> None:
        self.data: dict[str, object] = {}

    async def get_state(self, key: str) -> object:
        return self.data.get(key)


def _meter(read: tuple[str, ...], **kw: object) -> MeterConfig:
    base: dict[str, object] = {
        "name": "m", "protocol": "dlms", "line": "bus", "connection_address": 5694, "number_meter": "012345678",
        "password": Secret("12345678"), "waiting_time": 1.0, "pause_time": 0.0, "retries": 1, "read": read,
        "timezone": TZ, "package_size": 16, "data_polling_length": 2 * 86400.0, "time_difference": 30.0,
        "options": DlmsOptions()}
    base.update(kw)
    return MeterConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
async def sim():
    meter = SimSpodesMeter(serial="012345678", clock=lambda: float(NOW), timezone=MSK)
    bus = HdlcBus([(meter, 5694)])
    server = await serve_hdlc_tcp(bus, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    line = Line(LineConfig("bus", "tcp", host="127.0.0.1", port=port), LineState("bus", "tcp"), Registry())
    yield meter, line, bus
    await line.close()
    server.close()
    await asyncio.sleep(0.02)


def _ctx(mc: MeterConfig, line: Line, store: _Store | None = None) -> BusDriverContext:
    return BusDriverContext(mc, line, MeterState(mc.name, mc.protocol, mc.line, 0, 900.0), Registry(),
                            clock=lambda: float(NOW), log=logging.getLogger("test.dlms"), store=store)


async def test_energy_instant_clock_with_scalers(sim) -> None:
    meter, line, _ = sim
    driver = DlmsDriver(_ctx(_meter(("clock", "energy", "instant")), line))
    r = await driver.poll(NOW)
    assert r.ok, r.error
    got = {x.channel: (x.value, x.unit) for x in r.readings}
    assert got["A+"] == (meter.cumulative("A+", NOW), "Wh")
    t1 = meter.cumulative("A+", NOW) * 6 // 10
    assert got["A+.T1"][0] == t1 and got["A+.T2"][0] == meter.cumulative("A+", NOW) - t1
    assert got["U.L1"] == (230.12, "V") and got["I.L1"] == (5.123, "A") and got["F"] == (50.02, "Hz")
    assert got["P"] == (2281.5, "W") and got["Q"] == (-312.0, "var") and got["PF.L1"] == (0.99, "")
    assert got["clock.drift"] == (0.0, "s")
    assert driver.ctx.state.identity["serial"] == "012345678"
    # The association stays open: a second cycle sends no SNRM/AARQ.
    before = meter.requests
    r = await driver.poll(NOW)
    # clock, then one GET-with-list each for energy and instant values (scalers are known by now)
    assert r.ok and meter.requests - before == 3


async def test_identity_mismatch_is_an_event(sim) -> None:
    _, line, _ = sim
    r = await DlmsDriver(_ctx(_meter(("energy",), number_meter="999"), line)).poll(NOW)
    assert not r.ok and r.events[0].code == "identity_mismatch" and "999" in (r.error or "")


async def test_wrong_password_names_the_reason(sim) -> None:
    _, line, _ = sim
    r = await DlmsDriver(_ctx(_meter(("energy",), password=Secret("bad")), line)).poll(NOW)
    assert not r.ok and "authentication-failure" in (r.error or "") and "bad" not in (r.error or "")


async def test_profile_daily_monthly_events_resume(sim) -> None:
    meter, line, _ = sim
    store = _Store()
    driver = DlmsDriver(_ctx(_meter(("profile", "daily", "monthly", "events"),
                                    data_polling_length=86400.0), line, store))
    r = await driver.poll(NOW)
    assert r.ok, r.error
    prof = sorted((x.ts, x.value) for x in r.readings if x.archive == "profile" and x.channel == "A+")
    assert len(prof) == 48                                # one day back at 30 min
    for ts, value in prof:
        assert value == interval_energy("A+", ts // 1800), ts
    assert {x.channel for x in r.readings if x.archive == "profile"} == {"A+", "A-", "R+", "R-"}
    daily = {x.ts: x.value for x in r.readings if x.archive == "daily" and x.channel == "A+"}
    midnight = int(dt.datetime(2025, 12, 3, tzinfo=MSK).timestamp())
    assert daily == {midnight: meter.cumulative("A+", midnight)}
    assert any(e.code.startswith("voltage:") for e in r.events)
    ((key, state),) = r.state
    store.data[key] = state
    # The next cycle, an hour later, reads only what is new.
    later = NOW + 3600
    meter.clock = lambda: float(later)
    driver.ctx.clock = lambda: float(later)
    r2 = await driver.poll(later)
    assert r2.ok, r2.error
    new = sorted(x.ts for x in r2.readings if x.archive == "profile" and x.channel == "A+")
    assert new == [prof[-1][0] + 1800, prof[-1][0] + 3600]
    assert not [x for x in r2.readings if x.archive == "daily"]


async def test_clock_set_opt_in(sim) -> None:
    meter, line, _ = sim
    meter.clock_drift = 95.0
    r = await DlmsDriver(_ctx(_meter(("clock",)), line)).poll(NOW)
    assert r.ok and {x.channel: x.value for x in r.readings}["clock.drift"] == 95.0 and not meter.clock_sets
    opts = DlmsOptions(clock_set=True)
    driver = DlmsDriver(_ctx(_meter(("clock",), options=opts), line))
    r = await driver.poll(NOW)
    assert r.ok and meter.clock_sets == [NOW] and r.events[0].code == "clock_set"
    assert "clock" not in driver.ctx.state.alarms


async def test_reassociates_after_the_meter_drops_it(sim) -> None:
    meter, line, _ = sim
    driver = DlmsDriver(_ctx(_meter(("energy",)), line))
    assert (await driver.poll(NOW)).ok
    # The meter's inactivity timeout: it forgets the link; our next I-frame is answered with DM.
    _, _, bus = sim
    for link in bus.meters[0].links.values():
        link.connected = False
    before = meter.requests
    r = await driver.poll(NOW)
    assert r.ok, r.error
    assert meter.requests - before == 2                  # AARQ again, then the energy GET
    assert {x.channel for x in r.readings} >= {"A+", "R-"}

async def test_wrapper_framing() -> None:
    meter = SimSpodesMeter(serial="012345678", clock=lambda: float(NOW), timezone=MSK)
    server = await serve_wrapper_tcp(meter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    line = Line(LineConfig("w", "tcp", host="127.0.0.1", port=port), LineState("w", "tcp"), Registry())
    try:
        mc = _meter(("energy",), line="w", options=DlmsOptions(framing="wrapper"))
        r = await DlmsDriver(_ctx(mc, line)).poll(NOW)
        assert r.ok, r.error
        assert {x.channel for x in r.readings} >= {"A+", "R+"}
    finally:
        await line.close()
        server.close()


def test_options_refuse_hls_and_ciphering() -> None:
    with pytest.raises(OptionError, match="HLS"):
        parse_options({"authentication": "high"}, ".")
    with pytest.raises(OptionError, match="ciphering"):
        parse_options({"block_cipher_key": "00" * 16}, ".")
    assert parse_options({"dlms_framing": "wrapper", "clock_set": True}, ".") == DlmsOptions(framing="wrapper",
                                                                                               clock_set=True)
    assert parse_address("serial") == "serial" and physical_from_serial("012345678") == 5694
    with pytest.raises(OptionError):
        parse_address(20000)
    assert dataclasses.is_dataclass(DlmsOptions)


async def test_raw_apdu_through_the_association(sim) -> None:
    meter, line, _ = sim
    driver = DlmsDriver(_ctx(_meter(("energy",)), line))
    out = await driver.raw("C0 01 C1 00 03 01 00 01 08 00 FF 02 00")
    assert out["decoded"]["results"] == [meter.cumulative("A+", NOW)]  # type: ignore[index]
    with pytest.raises(ValueError, match="not an HDLC frame"):
        await driver.raw("7E A0 08 02 23 21 93 BD 64 7E")
    with pytest.raises(ValueError, match="AARQ"):
        await driver.raw("60 1D A1 09")


async def test_idle_association_is_reopened_not_tried(sim) -> None:
    meter, line, _ = sim
    t = [float(NOW)]
    ctx = _ctx(_meter(("energy",)), line)
    ctx.clock = lambda: t[0]
    driver = DlmsDriver(ctx)
    assert (await driver.poll(NOW)).ok
    before = meter.requests
    t[0] += 60
    assert (await driver.poll(NOW)).ok and meter.requests - before == 1          # kept: just the GET
    before = meter.requests
    t[0] += 300
    assert (await driver.poll(NOW)).ok and meter.requests - before == 2          # idle: AARQ again, then GET


async def test_clock_of_the_wrong_type_is_a_declared_error(sim) -> None:
    meter, line, _ = sim
    original = meter.read
    meter.read = lambda attr, access, client: (b"\x06\x00\x00\x00\x01" if attr.class_id == 8  # type: ignore[method-assign]
                                               else original(attr, access, client))
    r = await DlmsDriver(_ctx(_meter(("clock",)), line)).poll(NOW)
    assert not r.ok and "12-byte date-time octet string expected" in (r.error or "")


def test_every_dlms_key_is_in_the_protocol_docs() -> None:
    from pathlib import Path

    from pollerd.config import known_keys

    text = (Path(__file__).resolve().parents[1] / "docs" / "protocols" / "dlms.md").read_text(encoding="utf-8")
    for key in known_keys()["meters.dlms"]:
        assert f"`{key}`" in text or f"{key} =" in text, key


async def test_a_register_without_scaler_is_dropped_not_guessed(sim) -> None:
    meter, line, _ = sim
    original = meter.read
    meter.read = lambda attr, access, client: (3 if attr.attr == 3 and attr.obis[2] == 32  # type: ignore[method-assign]
                                               else original(attr, access, client))
    r = await DlmsDriver(_ctx(_meter(("instant",)), line)).poll(NOW)
    got = {x.channel for x in r.readings}
    assert r.ok and "U.L1" not in got and "U.L2" in got and "I.L1" in got


async def test_reassociates_when_the_meter_refuses_the_service(sim) -> None:
    """The link is up but the meter forgot the association (it answers with an exception response,
    service-not-allowed): pollerd sends AARQ again and retries the step once."""
    meter, line, bus = sim
    driver = DlmsDriver(_ctx(_meter(("energy",)), line))
    assert (await driver.poll(NOW)).ok
    assoc = bus.meters[0].assoc
    assert assoc is not None
    assoc.accepted = False
    before = meter.requests
    r = await driver.poll(NOW)
    assert r.ok, r.error
    assert meter.requests - before == 3                  # refused GET, AARQ, GET again


async def test_a_held_back_reply_is_refused_and_the_association_is_opened_again_at_once() -> None:
    # Issue 14: a converter holds the reply to a GET and hands it over right after the next request. The
    # GET times out, the association is dropped; the next cycle's SNRM meets the stale I-frame first. It
    # must be refused (not a UA), and the SNRM sent again in that same cycle: before, that cycle was lost.
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from fakes import FakeLink

    from pollerd.protocols.dlms import hdlc
    meter = SimSpodesMeter(serial="012345678", clock=lambda: float(NOW), timezone=MSK)
    bus = HdlcBus([(meter, 5694)])
    held: list[bytes] = []
    hold_next_get = False

    def plan(req: bytes) -> list[tuple[float, bytes]]:
        nonlocal hold_next_get
        out = [(0.0, h) for h in held]
        held.clear()
        reply = bus.handle_frame(req) or b""
        if hold_next_get and hdlc.parse_frame(req[1:-1]).kind == "I":
            hold_next_get = False
            held.append(reply)
            return out
        return out + [(0.005, reply)]

    line = Line(LineConfig("bus", "tcp", host="127.0.0.1", port=1), LineState("bus", "tcp"), Registry())
    line.link = FakeLink(plan)  # type: ignore[assignment]
    driver = DlmsDriver(_ctx(_meter(("energy", "instant"), waiting_time=0.1), line))
    first = await driver.poll(NOW)
    assert first.ok, first.error
    truth = {x.channel: x.value for x in first.readings}
    hold_next_get = True
    second = await driver.poll(NOW)
    assert not second.ok and "no complete reply" in (second.error or "")
    third = await driver.poll(NOW)
    assert third.ok, third.error                     # before: "I in answer to SNRM (UA expected)"
    assert {x.channel: x.value for x in third.readings} == truth
    for r in (first, second, third):
        assert all(truth[x.channel] == x.value for x in r.readings)   # never a wrong value


async def test_a_held_back_reply_over_the_wrapper_is_refused_by_the_next_aarq_and_it_is_sent_again() -> None:
    # The wrapper has no N(S): the late GET-Response meets the next cycle's AARQ, whose parser refuses it.
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from fakes import FakeLink

    from pollerd.protocols.dlms import wrapper
    from pollerd.sim.dlms_meter import Association
    meter = SimSpodesMeter(serial="012345678", clock=lambda: float(NOW), timezone=MSK)
    assoc: list[Association] = []
    held: list[bytes] = []
    hold_next_get = False

    def plan(req: bytes) -> list[tuple[float, bytes]]:
        nonlocal hold_next_get
        out = [(0.0, h) for h in held]
        held.clear()
        pdu = wrapper.WrapperDeframer().feed(req)[0]
        if not assoc or pdu.apdu[0] == 0x60:
            assoc[:] = [Association(pdu.source)]
        reply = wrapper.encode_wrapper(1, pdu.source, meter.handle(pdu.apdu, assoc[0]))
        if hold_next_get and pdu.apdu[0] == 0xC0:
            hold_next_get = False
            held.append(reply)
            return out
        return out + [(0.005, reply)]

    line = Line(LineConfig("w", "tcp", host="127.0.0.1", port=1), LineState("w", "tcp"), Registry())
    line.link = FakeLink(plan)  # type: ignore[assignment]
    driver = DlmsDriver(_ctx(_meter(("energy",), line="w", waiting_time=0.1,
                                    options=DlmsOptions(framing="wrapper")), line))
    first = await driver.poll(NOW)
    assert first.ok, first.error
    truth = {x.channel: x.value for x in first.readings}
    hold_next_get = True
    assert not (await driver.poll(NOW)).ok
    third = await driver.poll(NOW)
    assert third.ok, third.error
    assert {x.channel: x.value for x in third.readings} == truth
