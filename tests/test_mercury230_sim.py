"""Mercury 230 simulator: codec <-> simulator round trips, the bus splitter, faults, TCP, pty and the CLI."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import signal
import sys
import tty
from pathlib import Path

import pytest

from pollerd.compat import timeout
from pollerd.errors import AddressMismatch, CrcError, FrameError, MeterError, SessionClosed
from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import check_crc
from pollerd.sim import cli as sim_cli
from pollerd.sim.mercury230 import FAULTS, Phase, RequestSplitter, SimBus, SimMeter, _paced_send, open_pty, serve_tcp

REPO = Path(__file__).resolve().parents[1]
PW1 = m.password_bytes("111111")
PW2 = m.password_bytes("222222")
T0 = 1_764_000_000.0  # a fixed gateway time (late 2025), so the meter clock is a valid 20xx date


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ask(bus: SimBus, req: m.Request) -> m.Reply:
    """One exchange through the sans-I/O bus and the codec's framer, byte for byte."""
    chunks = bus.feed(req.encode())
    assert len(chunks) == 1, f"expected one reply to {req.encode().hex(' ')}, got {chunks}"
    framer = m.ReplyFramer(req)
    reply = None
    for i in range(len(chunks[0])):
        reply = framer.feed(chunks[0][i : i + 1])
    assert reply is not None and framer.pending == b""
    return reply


def call(bus: SimBus, req: m.Request) -> m.Reply:
    return m.check_status(ask(bus, req))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def meter(clock: FakeClock) -> SimMeter:
    return SimMeter(7, serial="47567135", manufactured=dt.date(2022, 11, 16), constant=500, ku=2, ki=40,
                    energy={1: (1_000_000, 5_000, 200_000, 1_000), 2: (300_000, 0, 40_000, 0)},
                    session_timeout=60.0, clock=clock)


@pytest.fixture
def bus(meter: SimMeter) -> SimBus:
    return SimBus([meter])


# -------------------------------------------------------------------------------------- sessions


def test_open_with_right_password_then_read(bus, meter):
    assert call(bus, m.test_channel(7)).status == 0
    with pytest.raises(SessionClosed):  # nothing but test/open/close before a session
        call(bus, m.read_serial(7))
    assert call(bus, m.open_channel(7, 1, PW1)).status == 0
    assert meter.level == 1
    assert m.decode_serial(call(bus, m.read_serial(7)).data) == (meter.serial, meter.manufactured)


def test_wrong_password_is_refused(bus, meter):
    with pytest.raises(MeterError) as info:
        call(bus, m.open_channel(7, 1, PW2))
    assert info.value.status == 1 and not isinstance(info.value, SessionClosed)
    assert meter.level == 0
    with pytest.raises(MeterError):
        call(bus, m.open_channel(7, 2, PW1))
    with pytest.raises(SessionClosed):
        call(bus, m.read_energy(7))


def test_ascii_password_meter():
    meter = SimMeter(3, passwords={1: "abcdef"}, password_encoding="ascii", clock=FakeClock())
    bus = SimBus([meter])
    with pytest.raises(MeterError):
        call(bus, m.open_channel(3, 1, m.password_bytes("111111")))
    assert call(bus, m.open_channel(3, 1, m.password_bytes("abcdef", "ascii"))).status == 0


def test_session_times_out_when_idle(bus, meter, clock):
    call(bus, m.open_channel(7, 1, PW1))
    clock.now += meter.session_timeout  # exactly at the limit: still open, and the read refreshes it
    call(bus, m.read_ratios(7))
    clock.now += meter.session_timeout + 1
    with pytest.raises(SessionClosed):
        call(bus, m.read_ratios(7))
    # status 5 closed it for good: a reopen is needed, after which reads work again
    with pytest.raises(SessionClosed):
        call(bus, m.read_ratios(7))
    call(bus, m.open_channel(7, 1, PW1))
    assert m.decode_ratios(call(bus, m.read_ratios(7)).data) == (meter.ku, meter.ki)


def test_close_channel_ends_the_session(bus):
    call(bus, m.open_channel(7, 1, PW1))
    call(bus, m.close_channel(7))
    with pytest.raises(SessionClosed):
        call(bus, m.read_serial(7))


def test_access_level_for_time_set(bus, meter, clock):
    call(bus, m.open_channel(7, 1, PW1))
    target = dt.datetime(2025, 6, 1, 12, 0, 0)
    set_time = m.raw_request(7, b"\x03\x0c" + m.encode_time(target))
    with pytest.raises(MeterError) as info:
        call(bus, set_time)
    assert info.value.status == 3
    assert call(bus, m.raw_request(7, b"\x03\x08")).status == 0  # freezing is a level-1 write
    call(bus, m.open_channel(7, 2, PW2))
    call(bus, set_time)
    assert m.decode_time(call(bus, m.read_time(7)).data)[0] == target
    clock.now += 30
    assert m.decode_time(call(bus, m.read_time(7)).data)[0] == target + dt.timedelta(seconds=30)


def test_time_correction_once_a_day_and_within_the_limit(clock):
    zone = dt.timezone(dt.timedelta(hours=3))
    meter = SimMeter(7, timezone=zone, clock=clock, clock_drift=100.0, session_timeout=1e9)
    bus = SimBus([meter])
    call(bus, m.open_channel(7, 1, PW1))  # level 1 is enough for a correction
    true_local = dt.datetime.fromtimestamp(int(clock.now), zone).replace(tzinfo=None)
    assert m.decode_time(call(bus, m.read_time(7)).data)[0] == true_local + dt.timedelta(seconds=100)
    with pytest.raises(MeterError) as info:  # beyond the limit: refused, and the day's correction not spent
        call(bus, m.correct_time(7, true_local - dt.timedelta(seconds=200)))
    assert info.value.status == 1
    call(bus, m.correct_time(7, true_local))
    assert m.decode_time(call(bus, m.read_time(7)).data)[0] == true_local
    assert meter.corrections == [(clock.now, -100.0)]
    clock.now += 3600
    with pytest.raises(MeterError) as info:  # the same meter-local day: status 4
        call(bus, m.correct_time(7, true_local))
    assert info.value.status == m.STATUS_CLOCK_ONCE_A_DAY
    clock.now += 86400
    call(bus, m.correct_time(7, dt.datetime.fromtimestamp(int(clock.now) - 5, zone)))
    assert meter.corrections[-1] == (clock.now, -5.0)


def test_unknown_commands_get_status_1(bus):
    call(bus, m.open_channel(7, 1, PW1))
    for body, reply_len in ((b"\x08\x7f", 3), (b"\x0a\x00", 3), (b"\x05\x70\x00", 16), (b"\x08\x11\xf0", 3)):
        with pytest.raises(MeterError) as info:
            call(bus, m.raw_request(7, body, reply_len))
        assert info.value.status == 1, body.hex()


def test_identity_and_clock(bus, meter, clock):
    call(bus, m.open_channel(7, 1, PW1))
    assert m.decode_variant(call(bus, m.read_variant(7)).data) == meter.constant
    assert m.decode_ratios(call(bus, m.read_ratios(7)).data) == (2, 40)
    when, season = m.decode_time(call(bus, m.read_time(7)).data)
    assert (when, season) == meter.meter_time(clock.now)
    assert when == dt.datetime.fromtimestamp(int(clock.now))


def test_meter_time_in_a_given_zone(clock):
    zone = dt.timezone(dt.timedelta(hours=3))
    meter = SimMeter(1, timezone=zone, clock=clock)
    bus = SimBus([meter])
    call(bus, m.open_channel(1, 1, PW1))
    when, _ = m.decode_time(call(bus, m.read_time(1)).data)
    assert when == dt.datetime.fromtimestamp(int(clock.now), dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=3)


# ---------------------------------------------------------------------------------------- values


def test_energy_matches_expected_and_moves_over_time(bus, meter, clock):
    call(bus, m.open_channel(7, 1, PW1))
    before = {t: m.decode_energy(call(bus, m.read_energy(7, tariff=t)).data) for t in range(5)}
    for t in range(5):
        assert before[t] == meter.expected_energy(t, clock.now)
    assert before[0] == tuple(sum(before[t][i] for t in (1, 2, 3, 4)) for i in range(4))

    clock.now += 1800
    call(bus, m.open_channel(7, 1, PW1))
    after = {t: m.decode_energy(call(bus, m.read_energy(7, tariff=t)).data) for t in range(5)}
    for t in range(5):
        assert after[t] == meter.expected_energy(t, clock.now)
    # Only the active tariff moves, by the configured load over half an hour.
    p = sum(ph.power for ph in meter.phases)
    q = sum(ph.reactive for ph in meter.phases)
    assert p > 0 and q > 0
    assert after[1][0] - before[1][0] in (int(p / 2), int(p / 2) + 1)
    assert after[1][2] - before[1][2] in (int(q / 2), int(q / 2) + 1)
    assert after[1][1] == before[1][1] and after[1][3] == before[1][3]
    assert after[2] == before[2]


def test_export_moves_a_minus_and_set_phases_keeps_what_was_counted(bus, meter, clock):
    call(bus, m.open_channel(7, 1, PW1))
    clock.now += 30
    counted = meter.expected_energy(1, clock.now)
    meter.set_phases([Phase(230.0, -2000.0, -300.0)] * 3, clock.now)
    assert meter.expected_energy(1, clock.now) == counted
    clock.now += 30
    values = m.decode_energy(call(bus, m.read_energy(7, tariff=1)).data)
    assert values == meter.expected_energy(1, clock.now)
    assert values[0] == counted[0] and values[1] > counted[1] and values[3] > counted[3]
    assert m.decode_aux(0x00, call(bus, m.read_aux(7, 0x00)).data) == meter.expected_instant()["P"] < 0


def test_one_direction_meter_reports_absent_export(clock):
    meter = SimMeter(2, bidirectional=False, clock=clock)
    bus = SimBus([meter])
    call(bus, m.open_channel(2, 1, PW1))
    a_plus, a_minus, r_plus, r_minus = m.decode_energy(call(bus, m.read_energy(2)).data)
    assert a_minus is None and r_minus is None and a_plus is not None and r_plus is not None


def test_per_phase_energy(bus, meter, clock):
    call(bus, m.open_channel(7, 1, PW1))
    clock.now += 40
    got = m.decode_phase_energy(call(bus, m.read_energy(7, array=6)).data)
    assert got == meter.expected_phase_energy(clock.now)


def test_instant_single_and_group_reads_match_expected(bus, meter):
    call(bus, m.open_channel(7, 1, PW1))
    expected = meter.expected_instant()
    singles = {f"{b}{s}": bw | i for b, bw in (("P", 0x00), ("Q", 0x04), ("S", 0x08), ("PF", 0x30))
               for s, i in (("", 0), (".L1", 1), (".L2", 2), (".L3", 3))}
    singles.update({f"U.L{i}": 0x10 | i for i in (1, 2, 3)})
    singles.update({f"I.L{i}": 0x20 | i for i in (1, 2, 3)})
    singles.update({"angle.L1-L2": 0x51, "angle.L1-L3": 0x52, "angle.L2-L3": 0x53, "F": 0x40, "T.meter": 0x70})
    assert set(singles) == set(expected)
    for name, bwri in singles.items():
        assert m.decode_aux(bwri, call(bus, m.read_aux(7, bwri)).data) == expected[name], name
    groups = {0x00: ("P", "P.L1", "P.L2", "P.L3"), 0x04: ("Q", "Q.L1", "Q.L2", "Q.L3"),
              0x08: ("S", "S.L1", "S.L2", "S.L3"), 0x30: ("PF", "PF.L1", "PF.L2", "PF.L3"),
              0x11: ("U.L1", "U.L2", "U.L3"), 0x21: ("I.L1", "I.L2", "I.L3"),
              0x51: ("angle.L1-L2", "angle.L1-L3", "angle.L2-L3"), 0x40: ("F",)}
    for bwri, names in groups.items():
        got = m.decode_aux_group(bwri, call(bus, m.read_aux_group(7, bwri)).data)
        assert got == tuple(expected[n] for n in names), hex(bwri)
    # the physics hold together: S >= |P|, PF = P/S within resolution
    assert expected["S"] >= abs(expected["P"])
    assert expected["PF"] == pytest.approx(expected["P"] / expected["S"], abs=0.001)


def test_group_reads_can_be_refused(bus, meter):
    meter.refuse_group_reads = True
    call(bus, m.open_channel(7, 1, PW1))
    with pytest.raises(MeterError) as info:
        call(bus, m.read_aux_group(7, 0x11))
    assert info.value.status == 1
    assert m.decode_aux(0x11, call(bus, m.read_aux(7, 0x11)).data) == meter.expected_instant()["U.L1"]


def test_silent_cases(bus, meter):
    assert bus.feed(m.test_channel(8).encode()) == []  # another address
    bad = bytearray(m.test_channel(7).encode())
    bad[-1] ^= 0x40
    assert meter.handle(bytes(bad)) is None
    assert bus.feed(m.raw_request(m.ADDRESS_BROADCAST, b"\x00").encode()) == []
    assert meter.requests == 1  # the broadcast was processed, silently


def test_universal_address_only_with_a_lone_meter(clock):
    lone = SimBus([SimMeter(5, clock=clock)])
    assert ask(lone, m.test_channel(0)) == m.Reply(0, b"\x00")
    crowd = SimBus([SimMeter(5, clock=clock), SimMeter(6, clock=clock)])
    assert crowd.feed(m.test_channel(0).encode()) == []


def test_several_meters_counters(clock):
    meters = [SimMeter(a, serial=f"{a:08d}", clock=clock) for a in (1, 2, 3)]
    bus = SimBus(meters)
    for a in (1, 2, 3):
        call(bus, m.open_channel(a, 1, PW1))
    assert m.decode_serial(call(bus, m.read_serial(2)).data)[0] == "00000002"
    foreign = m.test_channel(9).encode()
    assert bus.feed(foreign) == []
    assert bus.requests == 4  # a frame for an address not on this bus is skipped like noise
    call(bus, m.read_ratios(1))  # and the next request is still found behind it
    assert bus._splitter.garbage == len(foreign)
    assert bus.replies == {1: 2, 2: 2, 3: 1}
    with pytest.raises(ValueError):
        SimBus([SimMeter(1), SimMeter(1)])


# ------------------------------------------------------------------------------------ the splitter


def test_splitter_bytewise_and_chunked():
    frames = [m.open_channel(1, 1, PW1).encode(), m.read_energy(1, tariff=2).encode(), m.read_serial(1).encode(),
              m.read_aux(1, 0x11).encode(), m.read_variant(1).encode(), m.test_channel(1).encode()]
    stream = b"".join(frames)
    sp = RequestSplitter({1})
    got = []
    for i in range(len(stream)):
        got += sp.feed(stream[i : i + 1])
    assert got == frames and sp.garbage == 0
    assert RequestSplitter({1}).feed(stream) == frames


def test_splitter_keeps_a_profile_read_whose_prefix_has_a_valid_crc():
    # `05 06 03 34 10` happens to end in bytes that are its own CRC: the 4-byte-body candidate used to
    # win, the meter answered status 1 to a cut request and a long profile backfill stopped there.
    req = m.read_profile(5, 0x3410).encode()
    assert req[:7].hex(" ") == "05 06 03 34 10 0f 84"
    assert RequestSplitter({5}).feed(req) == [req]


def test_splitter_skips_garbage():
    req = m.read_serial(1).encode()
    sp = RequestSplitter({1})
    assert sp.feed(b"\x55\xaa\x01\x08" + req) == [req]
    assert sp.garbage == 4
    # garbage that looks like the start of a frame is given up when a whole frame follows
    sp = RequestSplitter({1})
    assert sp.feed(b"\x01\x05\x00" + req) == [req]
    assert sp.garbage == 3


def test_splitter_buffer_is_capped():
    sp = RequestSplitter(None, max_buffer=64)
    assert sp.feed(b"\x01\x77" + b"\x00" * 300) == []  # unknown code at the head: scanned, never a frame
    assert len(sp._buf) <= 64
    assert sp.garbage >= 300 - 64


def test_unknown_code_is_answered(bus):
    call(bus, m.open_channel(7, 1, PW1))
    with pytest.raises(MeterError) as info:
        call(bus, m.raw_request(7, b"\x0b\x01\x02", 3))
    assert info.value.status == 1


# -------------------------------------------------------------------------------------------- faults


def _framed(bus: SimBus, req: m.Request) -> tuple[m.ReplyFramer, list[bytes]]:
    return m.ReplyFramer(req), bus.feed(req.encode())


def test_faults(bus, meter):
    call(bus, m.open_channel(7, 1, PW1))
    req = m.read_aux(7, 0x11)
    good = bus.feed(req.encode())[0]

    bus.inject("crc")
    framer, out = _framed(bus, req)
    with pytest.raises(CrcError):
        framer.feed(out[0])

    bus.inject("truncate")
    framer, out = _framed(bus, req)
    assert framer.feed(out[0]) is None and 0 < len(framer.pending) < len(good)

    bus.inject("silence")
    assert bus.feed(req.encode()) == []

    bus.inject("wrong_address")
    framer, out = _framed(bus, req)
    with pytest.raises(AddressMismatch):
        framer.feed(out[0])
    assert check_crc(out[0])

    bus.inject("echo")
    framer, out = _framed(bus, req)
    assert framer.feed(out[0]) == m.Reply(7, good[1:-2]) and framer.echoed

    bus.inject("garbage")
    framer, out = _framed(bus, req)
    assert len(out[0]) == len(good) and not check_crc(out[0])
    with pytest.raises(FrameError):
        framer.feed(out[0])

    assert bus.pending_faults == 0
    assert bus.faults_applied == dict.fromkeys(FAULTS, 1)
    assert bus.feed(req.encode()) == [good]  # faults are one-shot
    with pytest.raises(ValueError):
        bus.inject("meteor")


def test_fault_waits_for_a_reply(bus):
    bus.inject("crc")
    assert bus.feed(m.test_channel(9).encode()) == []  # no reply: the fault stays queued
    assert bus.pending_faults == 1
    assert not check_crc(bus.feed(m.test_channel(7).encode())[0])


# --------------------------------------------------------------------------------------------- pacing


async def test_paced_send_keeps_deadlines_without_drift():
    """Each byte leaves when its 10 bit times are over; sleeping late never pushes later bytes out."""
    now = [100.0]
    writes: list[tuple[float, bytes]] = []
    overshoot = 0.0003

    async def sleep(delay: float) -> None:
        now[0] += delay + overshoot  # every sleep wakes late

    data = bytes(range(19))
    baud = 9600
    await _paced_send(lambda b: writes.append((now[0], b)), data, baud, clock=lambda: now[0], sleep=sleep)
    assert b"".join(b for _, b in writes) == data
    byte_time = 10 / baud
    offset = 0
    for at, chunk in writes:
        offset += len(chunk)
        assert at >= 100.0 + offset * byte_time - 1e-9  # never before its stop bit
    # finished one overshoot after the last deadline, not 19 overshoots
    assert writes[-1][0] <= 100.0 + len(data) * byte_time + overshoot + 1e-9


# ----------------------------------------------------------------------------------------------- TCP


async def _tcp_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: m.Request) -> m.Reply:
    writer.write(req.encode())
    framer = m.ReplyFramer(req)
    async with timeout(5):
        while True:
            data = await reader.read(64)
            assert data, "connection closed before a reply"
            reply = framer.feed(data)
            if reply is not None:
                return reply


async def test_tcp_server_round_trip():
    meters = [SimMeter(a, serial=f"{40000000 + a:08d}") for a in (1, 2)]
    bus = SimBus(meters)
    server = await serve_tcp(bus, "127.0.0.1", 0, latency=0.001, baud=19200)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for a in (1, 2):
            assert m.check_status(await _tcp_exchange(reader, writer, m.open_channel(a, 1, PW1))).status == 0
        reply = m.check_status(await _tcp_exchange(reader, writer, m.read_serial(2)))
        assert m.decode_serial(reply.data)[0] == "40000002"
        reply = m.check_status(await _tcp_exchange(reader, writer, m.read_aux_group(1, 0x11)))
        assert m.decode_aux_group(0x11, reply.data) == tuple(meters[0].expected_instant()[f"U.L{i}"] for i in (1, 2, 3))
        # two requests in one write are answered in order
        r1, r2 = m.read_ratios(1), m.read_ratios(2)
        writer.write(r1.encode() + r2.encode())
        for req in (r1, r2):
            framer = m.ReplyFramer(req)
            async with timeout(5):
                reply = None
                while reply is None:
                    reply = framer.feed(await reader.read(1))
            assert reply.address == req.address
        bus.inject("echo")
        req = m.read_ratios(1)
        writer.write(req.encode())
        framer = m.ReplyFramer(req)
        async with timeout(5):
            reply = None
            while reply is None:
                reply = framer.feed(await reader.read(64))
        assert framer.echoed and m.decode_ratios(reply.data) == (1, 1)
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
    assert bus.replies == {1: 4, 2: 3}


async def test_tcp_silence_fault_then_recovery():
    bus = SimBus([SimMeter(1)])
    server = await serve_tcp(bus, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        bus.inject("silence")
        writer.write(m.test_channel(1).encode())
        # the next request's reply is the first thing to arrive: the silenced one never comes
        reply = await _tcp_exchange(reader, writer, m.open_channel(1, 1, PW1))
        assert reply.status == 0 and bus.faults_applied["silence"] == 1
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


# ----------------------------------------------------------------------------------------------- pty


async def _pty_exchange(fd: int, req: m.Request) -> m.Reply:
    os.write(fd, req.encode())
    framer = m.ReplyFramer(req)
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    loop.add_reader(fd, lambda: got.put_nowait(os.read(fd, 256)))
    try:
        async with timeout(5):
            while True:
                reply = framer.feed(await got.get())
                if reply is not None:
                    return reply
    finally:
        loop.remove_reader(fd)


async def test_pty_round_trip(tmp_path):
    clock = FakeClock()
    meter = SimMeter(3, serial="12345678", clock=clock)
    bus = SimBus([meter])
    link = tmp_path / "ttyMERCURY"
    pty = await open_pty(bus, latency=0.001, baud=38400, link=link)
    fd = -1
    try:
        assert os.path.realpath(link) == os.path.realpath(pty.device)
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        assert (await _pty_exchange(fd, m.open_channel(3, 1, PW1))).status == 0
        reply = m.check_status(await _pty_exchange(fd, m.read_serial(3)))
        assert m.decode_serial(reply.data)[0] == "12345678"
        reply = m.check_status(await _pty_exchange(fd, m.read_energy(3)))
        assert m.decode_energy(reply.data) == meter.expected_energy(0, clock.now)
        bus.inject("wrong_address")
        with pytest.raises(AddressMismatch):
            await _pty_exchange(fd, m.read_ratios(3))
    finally:
        if fd >= 0:
            os.close(fd)
        pty.close()
    assert not link.exists()
    pty.close()  # idempotent


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_arguments():
    p = argparse.ArgumentParser()
    sim_cli.configure_parser(p)
    args = p.parse_args(["--tcp", "127.0.0.1:0", "--addresses", "4,5", "--latency", "0.01", "--baud", "9600",
                         "--session-timeout", "30", "--refuse-group-reads", "--password", "123456"])
    assert args.tcp == ("127.0.0.1", 0) and args.addresses == [4, 5] and args.baud == 9600
    bus = sim_cli.build_bus(args)
    assert sorted(bus.meters) == [4, 5]
    assert all(mt.refuse_group_reads and mt.session_timeout == 30 for mt in bus.meters.values())
    assert call(bus, m.open_channel(4, 1, m.password_bytes("123456"))).status == 0
    assert p.parse_args(["--pty", "--link", "/tmp/x"]).pty
    for bad in (["--tcp", "nohost"], ["--pty", "--addresses", "0"], ["--pty", "--addresses", "1,1"],
                ["--pty", "--password", "12ab56"], []):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


async def test_cli_process_serves_tcp_until_sigterm():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollerd.sim.cli", "--tcp", "127.0.0.1:0", "--addresses", "2,3",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with timeout(10):
            line = (await proc.stdout.readline()).decode()
        assert "listening on tcp 127.0.0.1:" in line, line + (await proc.stderr.read()).decode()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await _tcp_exchange(reader, writer, m.open_channel(3, 1, PW1))).status == 0
        writer.close()
        await writer.wait_closed()
        proc.send_signal(signal.SIGTERM)
        async with timeout(10):
            rest = (await proc.stdout.read()).decode()
            rc = await proc.wait()
        assert rc == 0 and "stopped: 1 requests" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_splitter_uses_the_parameter_not_just_the_crc():
    # `07 08 11 07 CD` happens to be CRC-valid as a 5-byte frame inside the real 6-byte request.
    req = m.read_aux(7, 0x07).encode()
    assert check_crc(req[:5])
    sp = RequestSplitter({7})
    assert [f for i in range(len(req)) for f in sp.feed(req[i : i + 1])] == [req]


# ============================================================================ issue 3: archives, journals

from zoneinfo import ZoneInfo  # noqa: E402

MSK = ZoneInfo("Europe/Moscow")


@pytest.fixture
def zmeter(clock: FakeClock) -> SimMeter:
    return SimMeter(9, constant=1000, energy={1: (5_000_000, 10_000, 900_000, 2_000), 2: (700_000, 0, 50_000, 0)},
                    session_timeout=1e9, clock=clock, timezone=MSK, profile_days=10)


@pytest.fixture
def zbus(zmeter: SimMeter) -> SimBus:
    b = SimBus([zmeter])
    call(b, m.open_channel(9, 1, PW1))
    return b


def _profile_ts(rec: m.ProfileRecord) -> int:
    return int(rec.start.replace(tzinfo=MSK).timestamp())


def test_profile_descriptor_advances_with_the_clock(zbus, zmeter, clock):
    first = m.decode_last_profile(call(zbus, m.read_last_profile(9)).data)
    assert first.period == 30 and "incomplete" in m.profile_status_flags(first.status)
    clock.now += 1800
    second = m.decode_last_profile(call(zbus, m.read_last_profile(9)).data)
    assert second.address == m.next_profile_address(first.address)
    assert second.start - first.start == dt.timedelta(minutes=30)


def test_profile_walk_matches_expected_and_is_consistent_with_counters(zbus, zmeter, clock):
    clock.now += 7 * 3600 + 600
    zmeter.set_phases([Phase(230.0, 2000.0, 100.0), Phase(230.0, 0.0, 0.0), Phase(230.0, -500.0, -50.0)])
    clock.now += 3 * 3600
    last = m.decode_last_profile(call(zbus, m.read_last_profile(9)).data)
    records = []
    addr = last.address
    for _ in range(24):  # back 12 hours, newest first
        records.append(m.decode_profile_record(call(zbus, m.read_profile(9, addr)).data))
        addr = m.prev_profile_address(addr)
    records.reverse()
    start = _profile_ts(records[0])
    want = zmeter.expected_profile(start, clock.now + 1)
    got = [(_profile_ts(r), *(m.profile_energy_wh(n, 1000) if n is not None else None
                             for n in (r.a_plus, r.a_minus, r.r_plus, r.r_minus)), r.status) for r in records]
    assert got == want
    assert [r[5] for r in got] == [0] * 23 + [2]  # only the running interval is incomplete
    assert len({r[1] for r in got}) > 1  # the load change shows in the profile
    # Whole intervals agree with the counters to within one impulse (1/(2A) kWh = 0.5 Wh) each.
    a0, b0 = zmeter._counter_at(0, want[0][0]), zmeter._counter_at(0, want[-2][0] + 1800)
    total = sum(r[1] for r in want[:-1])
    assert abs((b0[0] - a0[0]) - total) <= 0.5 * 23 + 1


def test_profile_slots_beyond_the_history_are_empty(zbus, zmeter):
    rec = m.decode_profile_record(call(zbus, m.read_profile(9, m.PROFILE_FIRST_ADDRESS)).data)
    assert rec.start is not None  # the first record after the init holds the oldest interval
    empty = m.decode_profile_record(call(zbus, m.read_profile(9, 0x0000)).data)
    assert empty.start is None
    with pytest.raises(MeterError) as info:
        call(zbus, m.read_profile(9, 0x0018))  # not a record boundary
    assert info.value.status == 1


def test_energy_arrays_are_consistent_with_the_counters(zbus, zmeter, clock):
    clock.now += 26 * 3600  # into the next day: yesterday is a whole day of the known load
    for tariff in range(5):
        now_counter = m.decode_energy(call(zbus, m.read_energy(9, 0, 0, tariff)).data)
        today = m.decode_energy(call(zbus, m.read_energy(9, 4, 0, tariff)).data)
        at_midnight = m.decode_energy(call(zbus, m.read_energy(9, 12, 0, tariff)).data)
        yesterday = m.decode_energy(call(zbus, m.read_energy(9, 5, 0, tariff)).data)
        at_yesterday = m.decode_energy(call(zbus, m.read_energy(9, 13, 0, tariff)).data)
        assert today == tuple(n - s for n, s in zip(now_counter, at_midnight)), tariff
        assert yesterday == tuple(s - y for s, y in zip(at_midnight, at_yesterday)), tariff
        assert today == zmeter.expected_archive(4, 0, tariff)
    month = zmeter.meter_time()[0].month
    this_month = m.decode_energy(call(zbus, m.read_energy(9, 3, month, 1)).data)
    assert this_month == zmeter.expected_archive(3, month, 1)
    assert this_month[0] > 0
    # T1 carries the load: a whole day at 3 kW total import
    assert m.decode_energy(call(zbus, m.read_energy(9, 5, 0, 1)).data)[0] == 3000 * 24
    assert m.decode_energy(call(zbus, m.read_energy(9, 5, 0, 2)).data)[0] == 0


def test_freeze_then_fixed_values_are_one_snapshot(zbus, zmeter, clock):
    clock.now += 100
    call(zbus, m.freeze(9))
    frozen_at = m.decode_time(call(zbus, m.read_fixed(9, 0xE0)).data)
    zmeter.set_phases([Phase(200.0, 10.0, 1.0)] * 3)  # after the freeze: must not show
    clock.now += 60
    want = zmeter.expected_fixed()
    assert frozen_at == want["frozen_at"] == zmeter.meter_time(clock.now - 60)
    for fr in m.FIXED_READS[1:]:
        values = m.decode_fixed(fr.bwri, call(zbus, m.read_fixed(9, fr.bwri)).data)
        assert dict(zip(fr.channels, values)) == {c: want[c] for c in fr.channels}
    assert want["P"] == 3000.0 and want["U.L1"] == 230.0


def test_journals_deterministic_empty_and_non_empty(zbus, zmeter):
    seen_empty = seen_full = False
    for journal in m.JOURNALS:
        got = [m.decode_journal(call(zbus, m.read_journal(9, journal, r)).data) for r in range(10)]
        assert got == zmeter.expected_journal(journal)
        filled = [g for g in got if g != (None, None)]
        seen_empty |= not filled
        seen_full |= bool(filled)
        assert all(s < e for s, e in filled) and filled == sorted(filled)
    assert seen_empty and seen_full
    with pytest.raises(MeterError):
        call(zbus, m.read_journal(9, 0x02, 0))  # a journal the simulator does not model


def test_clock_drift_and_set_time(clock):
    meter = SimMeter(4, clock=clock, timezone=MSK, clock_drift=95.0, session_timeout=1e9)
    bus = SimBus([meter])
    call(bus, m.open_channel(4, 2, PW2))
    when, _ = m.decode_time(call(bus, m.read_time(4)).data)
    real = dt.datetime.fromtimestamp(int(clock.now), MSK).replace(tzinfo=None)
    assert (when - real).total_seconds() == 95
    call(bus, m.set_time(4, real, 1))
    when, _ = m.decode_time(call(bus, m.read_time(4)).data)
    assert when == real


def test_identity_extras(zbus, zmeter):
    serial, made, version, constant = m.decode_fast_info(call(zbus, m.read_fast_info(9)).data)
    assert (serial, made, version, constant) == (zmeter.serial, zmeter.manufactured, "9.1.0", 1000)
    assert m.decode_net_address(call(zbus, m.read_net_address(9)).data) == 9


def test_cli_profile_options():
    p = argparse.ArgumentParser()
    sim_cli.configure_parser(p)
    args = p.parse_args(["--tcp", "127.0.0.1:0", "--profile-period", "15", "--profile-days", "7",
                         "--clock-drift", "-30", "--timezone", "Europe/Moscow"])
    bus = sim_cli.build_bus(args)
    meter = bus.meters[1]
    assert (meter.profile_period, meter.clock_drift, meter.timezone) == (15, -30.0, MSK)
