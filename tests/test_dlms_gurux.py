"""Independent peer: Gurux's DLMS client (gurux-dlms, GPLv2, test-only; never imported by pollerd/) polls
pollerd's СПОДЭС simulator over TCP (HDLC and the wrapper), and Gurux's translator decodes the frames
pollerd's client sends. Gurux's Python server is not used: it is broken in 1.0.203 (issue 15)."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from typing import Any

import pytest
from dlms_helpers import connect

from pollerd.protocols.dlms import axdr, xdlms
from pollerd.protocols.dlms import spodes as sp
from pollerd.sim.dlms import HdlcBus, serve_hdlc_tcp, serve_wrapper_tcp
from pollerd.sim.dlms_meter import SimSpodesMeter, interval_energy

gurux = pytest.importorskip("gurux_dlms")
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSClient, GXDLMSTranslator, GXReplyData  # noqa: E402
from gurux_dlms.enums import Authentication, InterfaceType, ObjectType  # noqa: E402
from gurux_dlms.objects import (  # noqa: E402
    GXDLMSClock,
    GXDLMSData,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)

MSK = dt.timezone(dt.timedelta(hours=3))
NOW = 1_764_720_000.0 + 11 * 3600 + 7   # 2025-12-03 14:00:07 MSK


class _SimThread:
    """The simulator on its own event loop thread, so Gurux's blocking client can drive a socket."""

    def __init__(self, framing: str, meter: SimSpodesMeter) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.framing = framing
        self.meter = meter
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            if self.framing == "hdlc":
                self.server = await serve_hdlc_tcp(HdlcBus([(self.meter, 5694)]), "127.0.0.1", 0)
            else:
                self.server = await serve_wrapper_tcp(self.meter, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class _GuruxSession:
    """Gurux's own read loop (as its examples do it): send, feed bytes to getData until a whole reply,
    receiverReady while more data follows."""

    def __init__(self, client: Any, port: int) -> None:
        self.client = client
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)

    def _packet(self, data: bytes | None, reply: Any) -> None:
        if data:
            self.sock.sendall(bytes(data))
        buf = GXByteBuffer()
        notify = GXReplyData()
        while True:
            chunk = self.sock.recv(4096)
            assert chunk, "simulator closed the connection"
            buf.set(chunk)
            buf.position = 0
            if self.client.getData(buf, reply, notify):
                return

    def read_block(self, frames: Any) -> Any:
        reply = GXReplyData()
        if isinstance(frames, (bytes, bytearray)):
            frames = [frames]
        for frame in frames:
            reply.clear()
            self._packet(frame, reply)
            while reply.isMoreData():
                self._packet(self.client.receiverReady(reply), reply)
        return reply

    def open(self) -> None:
        if self.client.interfaceType == InterfaceType.HDLC:
            reply = self.read_block(self.client.snrmRequest())
            self.client.parseUAResponse(reply.data)
        reply = self.read_block(self.client.aarqRequest())
        self.client.parseAareResponse(reply.data)

    def read(self, obj: Any, attr: int) -> Any:
        reply = self.read_block(self.client.read(obj, attr))
        return self.client.updateValue(obj, attr, reply.value)

    def close(self) -> None:
        try:
            self.read_block(self.client.releaseRequest())
            if self.client.interfaceType == InterfaceType.HDLC:
                self.read_block(self.client.disconnectRequest())
        finally:
            self.sock.close()


def _meter() -> SimSpodesMeter:
    return SimSpodesMeter(serial="012345678", clock=lambda: NOW, timezone=MSK)


@pytest.fixture(params=["hdlc", "wrapper"])
def sim(request):
    s = _SimThread(request.param, _meter())
    yield s
    s.stop()


def _client(framing: str, password: str | None = "12345678") -> Any:
    if framing == "hdlc":
        c = GXDLMSClient(True, 32, GXDLMSClient.getServerAddress(1, 5694, 4), Authentication.LOW, password,
                         InterfaceType.HDLC)
    else:
        c = GXDLMSClient(True, 32, 1, Authentication.LOW, password, InterfaceType.WRAPPER)
    return c


def test_gurux_reads_clock_registers_and_serial(sim) -> None:
    g = _GuruxSession(_client(sim.framing), sim.port)
    g.open()
    try:
        clock = GXDLMSClock("0.0.1.0.0.255")
        when = g.read(clock, 2)
        assert isinstance(when, GXDateTime)
        assert when.value.replace(tzinfo=None) == dt.datetime(2025, 12, 3, 14, 0, 7)
        reg = GXDLMSRegister("1.0.32.7.0.255")
        g.read(reg, 3)
        assert reg.scaler == 0.01 and int(reg.unit) == 35
        assert g.read(reg, 2) == pytest.approx(230.12)
        energy = GXDLMSRegister("1.0.1.8.0.255")
        g.read(energy, 3)
        assert g.read(energy, 2) == sim.meter.cumulative("A+", int(NOW))
        serial = GXDLMSData("0.0.96.1.0.255")
        assert bytes(g.read(serial, 2)) == b"012345678"
    finally:
        g.close()


def test_gurux_reads_load_profile_with_blocks_by_range_and_entry(sim) -> None:
    g = _GuruxSession(_client(sim.framing), sim.port)
    g.open()
    try:
        pg = GXDLMSProfileGeneric(sp.LOAD_PROFILES[0])
        g.read(pg, 3)                                     # capture objects
        names = [(int(o.objectType), o.logicalName) for o, _ in pg.captureObjects]
        assert names[2] == (int(ObjectType.CLOCK), "0.0.1.0.0.255") and names[0][1] == "1.0.1.29.0.255"
        pg.sortObject = pg.captureObjects[2][0]           # range over the clock column, wherever it is
        day = dt.datetime(2025, 12, 2, 0, 30)
        reply = g.read_block(g.client.readRowsByRange(pg, day, day + dt.timedelta(hours=23, minutes=30)))
        g.client.updateValue(pg, 2, reply.value)
        rows = pg.buffer
        assert len(rows) == 48
        k0 = int(dt.datetime(2025, 12, 2, tzinfo=MSK).timestamp()) // 1800
        assert [r[0] for r in rows[:3]] == [interval_energy("A+", k0 + i) for i in range(3)]
        reply = g.read_block(g.client.readRowsByEntry(pg, 1, 5))
        g.client.updateValue(pg, 2, reply.value)
        assert len(pg.buffer) == 5
    finally:
        g.close()


def test_gurux_wrong_password_is_refused(sim) -> None:
    g = _GuruxSession(_client(sim.framing, "nope"), sim.port)
    with pytest.raises(Exception, match="(?i)auth"):
        g.open()
    g.sock.close()


async def test_gurux_translator_decodes_what_pollerd_sends() -> None:
    """Every frame pollerd's client puts on the wire (SNRM, AARQ with LLS, GET normal/with-list/next/selective,
    SET clock, RLRQ, DISC) is decoded by Gurux's translator to the same request."""
    meter = _meter()
    server = await serve_hdlc_tcp(HdlcBus([(meter, 5694)]), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client, ex = await connect(port, physical=5694, client_sap=32, password=b"12345678", max_info=128)
        await client.open()
        await client.get(sp.CLOCK)
        await client.get_list([xdlms.Attr.of(3, "1.0.1.8.0.255"), xdlms.Attr.of(3, "1.0.1.8.0.255", 3)])
        await client.get(xdlms.Attr.of(7, sp.LOAD_PROFILES[0], 2), xdlms.entry_access(1, 48))
        await client.set(sp.CLOCK, axdr.CosemDateTime.from_datetime(dt.datetime(2025, 12, 3, 14, 5)))
        await client.close()
        ex.close()
    finally:
        server.close()
    # A fresh translator per frame: one translator keeps state across frames and shows an I-frame after
    # an RR as a "NextFrame" continuation.
    xml = [GXDLMSTranslator().messageToXml(GXByteBuffer(frame)) for frame in ex.requests]
    text = "\n".join(xml)
    assert "<Snrm" in text and "<Disc" in text
    assert "<AssociationRequest" in text or "<aarq" in text.lower()
    assert "CallingAuthentication" in text and "3132333435363738" in text
    assert "<GetRequestNormal" in text and "<GetRequestWithList" in text and "<GetRequestForNextDataBlock" in text
    assert "0000010000FF" in text.upper() and "0100630100FF" in text.upper()
    assert "<SetRequestNormal" in text and "07E90C03030E050000800000" in text.upper()
    assert all(f'<BlockNumber Value="0000000{n}"' in text for n in (1, 2, 3))
    assert "<ReleaseRequest" in text
