"""The byte pipes against real peers: a loopback TCP server and a pty pair."""

from __future__ import annotations

import asyncio

import pytest

from pollerd.compat import timeout
from pollerd.config import LineConfig
from pollerd.errors import TransportError
from pollerd.transport import Link


async def _until(cond, limit: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with timeout(limit):
        while not cond():
            await asyncio.sleep(0.005)


async def test_bytes_received_before_the_peer_closed_are_read_before_the_loss() -> None:
    # A converter that sends the rest of a reply and closes at once: the tail is part of the reply and
    # must reach the framer; only the next read reports the lost connection.
    go = asyncio.Event()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(1)
        w.write(b"ab")
        await go.wait()
        w.write(b"cd")
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    link = Link(LineConfig(name="t", type="tcp", host="127.0.0.1", port=port))
    try:
        await link.open()
        link.write(b"q")
        assert await link.read_chunk() == b"ab"
        go.set()
        await _until(lambda: not link.connected)
        assert await link.read_chunk() == b"cd"
        with pytest.raises(TransportError, match="lost"):
            await link.read_chunk()
    finally:
        await link.close()
        srv.close()
        await srv.wait_closed()


async def test_tcp_reads_go_into_one_kept_buffer_and_arrive_whole() -> None:
    # Issue 18: a TCP read must not allocate the transport's 256 KiB maximum per reply (above the fixed mmap
    # threshold, that was an mmap + mremap + munmap each time); the pipe is read into one buffer of its own.
    # A peer sending more than that buffer holds, in pieces, must still arrive complete and in order.
    from pollerd.transport import RECV_SIZE
    payload = bytes(range(256)) * (3 * RECV_SIZE // 256) + b"tail"

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(1)
        for i in range(0, len(payload), 1000):
            w.write(payload[i:i + 1000])
            await w.drain()
        await r.read()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    link = Link(LineConfig(name="t", type="tcp", host="127.0.0.1", port=srv.sockets[0].getsockname()[1]))
    try:
        await link.open()
        pipe = link._live()
        buffers = []
        get_buffer = pipe.get_buffer
        pipe.get_buffer = lambda hint: buffers.append(b := get_buffer(hint)) or b  # type: ignore[method-assign]
        link.write(b"q")
        got = bytearray()
        async with timeout(5):
            while len(got) < len(payload):
                got += await link.read_chunk()
        assert bytes(got) == payload
        assert buffers and all(b.obj is buffers[0].obj and len(b) == RECV_SIZE for b in buffers)
    finally:
        await link.close()
        srv.close()
        await srv.wait_closed()


def test_receive_buffer_is_capped_even_for_one_huge_read() -> None:
    # A babbling converter at the wrong speed: one socket read may be larger than the cap by itself.
    from pollerd.transport import MAX_BUFFER, _Pipe
    pipe = _Pipe()
    pipe.data_received(b"\x55" * 100)
    pipe.data_received(b"\xaa" * (MAX_BUFFER * 3))
    assert len(pipe.buf) <= MAX_BUFFER
    assert pipe.overflowed == 100 + 2 * MAX_BUFFER
    pipe.data_received(b"\x01\x02")
    assert len(pipe.buf) <= MAX_BUFFER and pipe.buf.endswith(b"\x01\x02")


async def test_tcp_links_use_keepalive() -> None:
    # So a converter or modem that vanished without closing shows as lost after ~90 s idle, not 2 hours.
    import socket
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    link = Link(LineConfig(name="t", type="tcp", host="127.0.0.1", port=srv.sockets[0].getsockname()[1]))
    try:
        await link.open()
        sock = link._live().transport.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
    finally:
        await link.close()
        srv.close()


async def test_reply_deadlines_share_one_lazy_timer_and_still_fire_on_time() -> None:
    # Issue 18: a read with a deadline must not put a timer into asyncio's heap per exchange. Many quick
    # exchanges with later and later deadlines keep one pending timer between them; a read that gets no
    # reply still ends at its own deadline (not at an earlier exchange's, not later).
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            req = await r.read(1)
            if not req:
                return
            if req != b"s":  # "s": stay silent
                w.write(req)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    link = Link(LineConfig(name="t", type="tcp", host="127.0.0.1", port=port))
    loop = asyncio.get_running_loop()
    try:
        await link.open()
        timers = []
        for _ in range(50):
            link.write(b"q")
            assert await link.read_chunk(loop.time() + 0.5) == b"q"
            timers.append(len([h for h in loop._scheduled if not h.cancelled()]))  # type: ignore[attr-defined]
        assert max(timers) <= 2, timers  # the pipe's one timer (plus none per exchange)
        t0 = loop.time()
        link.write(b"s")
        with pytest.raises(TimeoutError):
            await link.read_chunk(t0 + 0.2)
        took = loop.time() - t0
        assert 0.2 <= took < 0.4, took
        # A timer armed for a far deadline (a slow meter's waiting_time) does not delay a nearer one.
        link.write(b"q")
        assert await link.read_chunk(loop.time() + 5.0) == b"q"
        t0 = loop.time()
        link.write(b"s")
        with pytest.raises(TimeoutError):
            await link.read_chunk(t0 + 0.05)
        assert loop.time() - t0 < 1.0
    finally:
        await link.close()
        srv.close()
        await srv.wait_closed()
