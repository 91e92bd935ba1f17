"""pollerd's DLMS client against pollerd's СПОДЭС simulator: HDLC over TCP and a pty, the wrapper over TCP,
association rejects, block transfer, selective access by range and by entry, SET clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest
from dlms_helpers import SocketExchange, connect

from pollerd.drivers.dlms_client import DlmsClient
from pollerd.protocols.dlms import axdr, xdlms
from pollerd.protocols.dlms import spodes as sp
from pollerd.protocols.dlms.errors import AssociationRejected, DataAccessError
from pollerd.protocols.dlms.hdlc import LinkParams, ServerAddress
from pollerd.protocols.dlms.session import ClientSession, SessionConfig
from pollerd.sim.dlms import HdlcBus, PtySim, physical_address, serve_hdlc_tcp, serve_wrapper_tcp
from pollerd.sim.dlms_meter import SimSpodesMeter, interval_energy

MSK = dt.timezone(dt.timedelta(hours=3))
NOW = 1_764_720_000.0 + 11 * 3600 + 7   # 2025-12-03 14:00:07 MSK


def _meter(serial: str = "012345678") -> SimSpodesMeter:
    return SimSpodesMeter(serial=serial, clock=lambda: NOW, timezone=MSK)


@pytest.fixture
async def hdlc_port():
    meter = _meter()
    bus = HdlcBus([(meter, physical_address(meter.serial)), (_meter(serial="000000099"), 115)])
    server = await serve_hdlc_tcp(bus, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], meter, bus
    server.close()


def test_physical_address_rule() -> None:
    assert physical_address("012345678") == 5678 + 16
    assert physical_address("1") == 17


async def test_public_client_reads_clock_and_serial_but_not_energy(hdlc_port) -> None:
    port, meter, _ = hdlc_port
    client, ex = await connect(port, physical=5694)
    await client.open()
    clock = axdr.CosemDateTime.parse(await client.get(sp.CLOCK))
    assert clock.to_unix(MSK) == int(NOW) and clock.deviation == -180
    assert await client.get(sp.SERIAL) == b"012345678"
    with pytest.raises(DataAccessError, match="read-write-denied"):
        await client.get(xdlms.Attr.of(3, "1.0.1.8.0.255"))
    await client.close()
    ex.close()


async def test_reader_with_password_reads_registers_with_list(hdlc_port) -> None:
    port, meter, _ = hdlc_port
    client, ex = await connect(port, physical=5694, client_sap=32, password=b"12345678")
    await client.open()
    attrs = [xdlms.Attr.of(3, o, a) for o in ("1.0.1.8.0.255", "1.0.32.7.0.255") for a in (2, 3)]
    a_plus, a_su, u1, u_su = await client.get_list(attrs)
    assert a_plus == meter.cumulative("A+", int(NOW)) and a_su == (0, 30)
    assert sp.scale(u1, u_su[0]) == 230.12 and sp.UNITS[u_su[1]] == "V"
    await client.close()
    ex.close()


async def test_wrong_password_and_unknown_client_are_named(hdlc_port) -> None:
    port, _, _ = hdlc_port
    client, ex = await connect(port, physical=5694, client_sap=32, password=b"00000000")
    with pytest.raises(AssociationRejected, match="authentication-failure .wrong password"):
        await client.open()
    ex.close()
    client, ex = await connect(port, physical=5694, client_sap=32)
    with pytest.raises(AssociationRejected, match="authentication-mechanism-name-required"):
        await client.open()
    ex.close()
    client, ex = await connect(port, physical=5694, client_sap=48)
    with pytest.raises(AssociationRejected, match="unknown client"):
        await client.open()
    ex.close()


async def test_other_meter_on_the_bus_answers_its_own_address_only(hdlc_port) -> None:
    port, _, bus = hdlc_port
    client, ex = await connect(port, physical=115, size=2)
    await client.open()
    assert await client.get(sp.SERIAL) == b"000000099"
    ex.close()
    client, ex = await connect(port, physical=999)
    ex.timeout = 0.3
    with pytest.raises(asyncio.TimeoutError):
        await client.open()
    ex.close()
    assert bus.silent >= 1


async def test_load_profile_by_range_with_blocks_and_small_frames(hdlc_port) -> None:
    port, meter, _ = hdlc_port
    client, ex = await connect(port, physical=5694, client_sap=32, password=b"12345678", max_info=64)
    await client.open()
    lp = xdlms.Attr.of(7, sp.LOAD_PROFILES[0], 2)
    caps = await client.get(xdlms.Attr.of(7, sp.LOAD_PROFILES[0], 3))
    plan = sp.column_plan(caps)
    assert [c.channel for c in plan if not c.clock] == ["A+", "R+", "A-", "R-"]
    day = dt.datetime(2025, 12, 2, tzinfo=MSK)
    access = xdlms.range_access(axdr.CosemDateTime.from_datetime(day + dt.timedelta(minutes=30)),
                                axdr.CosemDateTime.from_datetime(day + dt.timedelta(days=1)))
    rows = await client.get(lp, access)
    assert len(rows) == 48                        # 48 entries: far more than one 512-byte PDU
    clock_col = next(c.index for c in plan if c.clock)
    a_col = next(c.index for c in plan if c.channel == "A+")
    first = axdr.CosemDateTime.parse(rows[0][clock_col]).to_unix(MSK)
    assert first == int(day.timestamp()) + 1800
    assert rows[0][a_col] == interval_energy("A+", int(day.timestamp()) // 1800)
    by_entry = await client.get(lp, xdlms.entry_access(1, 3))
    assert len(by_entry) == 3
    await client.close()
    ex.close()


async def test_set_clock_needs_the_reader(hdlc_port) -> None:
    port, meter, _ = hdlc_port
    target = axdr.CosemDateTime.from_datetime(dt.datetime.fromtimestamp(NOW + 120, MSK).replace(microsecond=0))
    client, ex = await connect(port, physical=5694)
    await client.open()
    with pytest.raises(DataAccessError, match="read-write-denied"):
        await client.set(sp.CLOCK, target)
    ex.close()
    client, ex = await connect(port, physical=5694, client_sap=32, password=b"12345678")
    await client.open()
    await client.set(sp.CLOCK, target)
    assert meter.clock_sets == [int(NOW) + 120]
    assert axdr.CosemDateTime.parse(await client.get(sp.CLOCK)).to_unix(MSK) == int(NOW) + 120
    ex.close()


async def test_wrapper_over_tcp() -> None:
    meter = _meter()
    server = await serve_wrapper_tcp(meter, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client, ex = await connect(port, framing="wrapper", client_sap=32, password=b"12345678", physical=1)
        await client.open()
        rows = await client.get(xdlms.Attr.of(7, sp.DAILY, 2), xdlms.entry_access(1, 0))
        assert len(rows) == 41
        await client.close()
        ex.close()
    finally:
        server.close()


async def test_hdlc_over_a_pty() -> None:
    meter = _meter()
    bus = HdlcBus([(meter, 17)])
    async with PtySim(bus) as pty:
        fd = os.open(pty.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(fd, lambda: queue.put_nowait(os.read(fd, 4096)))
        try:
            async def exchange(data: bytes, framer, shown):
                os.write(fd, data)
                while True:
                    unit = framer.feed(await asyncio.wait_for(queue.get(), 3))
                    if unit is not None:
                        return unit
            client = DlmsClient(ClientSession(SessionConfig("hdlc", ServerAddress(1, 17, 2), 16, None, 0xFFFF,
                                                            LinkParams())), exchange)
            await client.open()
            assert await client.get(sp.TYPE) == meter.meter_type
            await client.close()
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    assert isinstance(SocketExchange, type)


async def test_sim_command_line_prints_where_it_listens() -> None:
    import sys
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pollerd.sim.dlms", "--tcp", "127.0.0.1:0", "--serials", "012345678,000000099",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert line.startswith("dlms sim listening on tcp 127.0.0.1:") and "5694=012345678 115=000000099" in line
        port = int(line.split()[5].rsplit(":", 1)[1])
        client, ex = await connect(port, physical=115)
        await client.open()
        assert await client.get(sp.SERIAL) == b"000000099"
        ex.close()
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert b"dlms sim stopped" in out


async def test_every_frame_of_a_session_refed_one_byte_at_a_time() -> None:
    """All frames of a session with segmentation and block transfer, both ways, through a fresh deframer one
    byte at a time: the same frames come out as from whole writes."""
    from pollerd.protocols.dlms.hdlc import Deframer

    seen: list[bytes] = []

    class Recording(HdlcBus):
        def handle_frame(self, raw: bytes) -> bytes | None:
            reply = super().handle_frame(raw)
            seen.append(raw)
            if reply:
                seen.append(reply)
            return reply

    meter = _meter()
    server = await serve_hdlc_tcp(Recording([(meter, 5694)]), "127.0.0.1", 0)
    try:
        client, ex = await connect(server.sockets[0].getsockname()[1], physical=5694, client_sap=32,
                                   password=b"12345678", max_info=32)
        await client.open()
        await client.get(xdlms.Attr.of(7, sp.LOAD_PROFILES[0], 2), xdlms.entry_access(1, 10))
        await client.close()
        ex.close()
    finally:
        server.close()
    assert len(seen) > 30 and any(Deframer().feed(f)[0].segmented for f in seen)
    stream = b"".join(seen)
    d = Deframer()
    one_by_one = [f for b in stream for f in d.feed(bytes((b,)))]
    assert one_by_one == [Deframer().feed(f)[0] for f in seen]


async def test_password_never_shown_even_in_a_segmented_aarq(hdlc_port) -> None:
    """With 32-byte frames the AARQ's password falls in its second segment: what the line would show in
    logs and errors for every exchange of the association must not hold it."""
    port, _, _ = hdlc_port
    client, ex = await connect(port, physical=5694, client_sap=32, password=b"12345678", max_info=32)
    await client.open()
    aarq_frames = [r for r in ex.requests if b"12345678" in r]
    assert aarq_frames, "the password travels in some frame (this test needs a segmented AARQ)"
    assert not any("31 32 33 34 35 36 37 38" in s for s in ex.shown), ex.shown
    ex.close()
