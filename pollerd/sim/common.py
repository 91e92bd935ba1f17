"""Plumbing the meter simulators share: the pseudo-terminal pair, UART pacing, the ``HOST:PORT`` argument and
the run-until-signal loop behind `pollerd sim PROTOCOL`.

Each simulator (:mod:`pollerd.sim.mercury230`, :mod:`pollerd.sim.mbus`, :mod:`pollerd.sim.iec62056`) keeps
only what its protocol needs; how bytes get on and off a pty and how fast a UART would deliver them is the
same for all of them, so it lives here once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import tty
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing.Self is 3.11+, and pollerd still runs on 3.10
    from typing_extensions import Self

__all__ = ["FramedPtySim", "PtyPair", "host_port", "paced_send", "run_until_signal", "serve_connections",
           "serve_framed_tcp", "turnaround"]


# ------------------------------------------------------------------------------------------- pacing


async def paced_send(write: Callable[[bytes], object], data: bytes, baud: int | None, *,
                     start: float | None = None, clock: Callable[[], float] | None = None,
                     sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, bits: int = 10) -> None:
    """Write ``data`` as a UART at ``baud`` (``bits`` a byte: 10 for 8N1 and 7E1, 11 for 8E1) would deliver
    it: each byte when its stop bit ends; at once without ``baud``. Deadlines count from ``start`` (default:
    now), one timeline per reply, so sleep overshoot never accumulates, not even across the turnaround
    before the first byte."""
    now = clock or asyncio.get_running_loop().time
    if start is not None and start > now():
        await sleep(start - now())
    if not baud:
        write(data)
        return
    byte_time = bits / baud
    start = now() if start is None else start
    sent, n = 0, len(data)
    while sent < n:
        due = min(n, int((now() - start) / byte_time + 1e-9))  # float error must not stall a due byte
        if due > sent:
            write(data[sent:due])
            sent = due
        if sent < n:
            await sleep(max(0.0, start + (sent + 1) * byte_time - now()))


def turnaround(request: bytes, latency: float, baud: int | None, *, bits: int = 10) -> float:
    """Time from the request's arrival here to the first reply byte. TCP and a pty hand over the request
    at once, but on the bus it takes its wire time to arrive, so with ``baud`` set that time is added."""
    return latency + (len(request) * bits / baud if baud else 0.0)


# ----------------------------------------------------------------------------------------------- pty


class PtyPair:
    """A pseudo-terminal whose slave side the daemon opens as its serial port (:attr:`device`).

    The simulator keeps its own slave descriptor open: without it the master reads EIO whenever no client
    has the device open, and the raw-mode settings would not persist between clients. Subclasses set up
    their state before calling ``super().__init__`` (the reader and the serving task start here) and
    implement :meth:`_received` (bytes from the client) and :meth:`_serve` (the task answering them).
    """

    def __init__(self, *, link: str | os.PathLike[str] | None = None, name: str = "sim-pty") -> None:
        self._loop = asyncio.get_running_loop()
        self._master, self._slave = os.openpty()
        try:
            tty.setraw(self._slave)
            self.device = os.ttyname(self._slave)
            os.set_blocking(self._master, False)
            self.link = os.fspath(link) if link is not None else None
            if self.link is not None:
                if os.path.islink(self.link):  # a stale link from an earlier run
                    os.unlink(self.link)
                os.symlink(self.device, self.link)
        except BaseException:
            os.close(self._master)
            os.close(self._slave)
            raise
        self.dropped = 0  # reply bytes nobody read (pty buffer full), as on a line nobody listens to
        self._closed = False
        self._loop.add_reader(self._master, self._on_readable)
        self._task: asyncio.Task[None] | None = self._loop.create_task(self._serve(), name=f"{name} {self.device}")

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError:  # nothing after all, or EIO while no client holds the device
            return
        self._received(data)

    def _received(self, data: bytes) -> None:
        raise NotImplementedError

    async def _serve(self) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        self.dropped += len(data) - written

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._master)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        os.close(self._master)
        os.close(self._slave)
        if self.link is not None and os.path.islink(self.link):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.link)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class FramedPtySim(PtyPair):
    """A bus of request/reply meters on a pty: ``splitter.feed(bytes)`` cuts requests out of the stream,
    ``bus.handle_frame(request)`` answers one (None: silence), and replies go out paced as the wire would."""

    def __init__(self, bus: Any, splitter: Any, *, latency: float = 0.0, baud: int | None = None,
                 bits: int = 10, link: str | os.PathLike[str] | None = None, name: str = "sim-pty") -> None:
        self.bus = bus
        self.latency = latency
        self.baud = baud
        self._bits = bits
        self._splitter = splitter
        self._frames: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        super().__init__(link=link, name=name)

    def _received(self, data: bytes) -> None:
        arrived = self._loop.time()
        for frame in self._splitter.feed(data):
            self._frames.put_nowait((arrived, frame))

    async def _serve(self) -> None:
        while True:
            arrived, frame = await self._frames.get()
            reply = self.bus.handle_frame(frame)
            if reply is None:
                continue
            await paced_send(self._write, reply, self.baud, bits=self._bits,
                             start=arrived + turnaround(frame, self.latency, self.baud, bits=self._bits))


# ----------------------------------------------------------------------------------------------- CLI


def host_port(text: str) -> tuple[str, int]:
    """argparse type of ``--tcp``: ``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` (127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


# ----------------------------------------------------------------------------------------------- TCP


async def serve_connections(session: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                            host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port`` (0: a free port) and run ``session`` per connection. A client hanging up
    mid-reply is normal for a simulator, not an error; the socket is closed whatever happened."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await session(reader, writer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(client, host, port)


async def serve_framed_tcp(bus: Any, splitter: Callable[[], Any], host: str, port: int, *,
                           latency: float = 0.0, baud: int | None = None, bits: int = 10) -> asyncio.Server:
    """Serve a request/reply ``bus`` (as in :class:`FramedPtySim`) over TCP, as an RS-485-to-Ethernet
    converter in transparent mode would; ``splitter()`` makes one request splitter per connection. Requests
    on one connection are answered in order, one at a time, as on a half-duplex bus."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = splitter()
        loop = asyncio.get_running_loop()
        while data := await reader.read(4096):
            arrived = loop.time()
            for frame in frames.feed(data):
                reply = bus.handle_frame(frame)
                if reply is None:
                    continue
                await paced_send(writer.write, reply, baud, bits=bits,
                                 start=arrived + turnaround(frame, latency, baud, bits=bits))
                await writer.drain()

    return await serve_connections(session, host, port)


# ------------------------------------------------------------------------------------- the command


async def run_until_signal(name: str, what: str, *, tcp: tuple[str, int] | None,
                           serve: Callable[[str, int], Awaitable[asyncio.Server]],
                           pty: Callable[[], PtyPair]) -> None:
    """Serve a simulator on TCP (``tcp`` given) or on a new pty until SIGINT or SIGTERM, then close it.

    The first line printed says where it listens, for scripts to parse::

        NAME sim listening on tcp 127.0.0.1:40123 WHAT
        NAME sim listening on pty /dev/pts/5 WHAT
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    server: asyncio.Server | None = None
    pair: PtyPair | None = None
    try:
        if tcp is not None:
            server = await serve(*tcp)
            host, port = server.sockets[0].getsockname()[:2]
            print(f"{name} sim listening on tcp {host}:{port} {what}", flush=True)
        else:
            pair = pty()
            where = pair.device + (f" (link {pair.link})" if pair.link else "")
            print(f"{name} sim listening on pty {where} {what}", flush=True)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if pair is not None:
            pair.close()
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                # 3.12+ waits for open connections here; a client that never hangs up must not block exit.
                await asyncio.wait_for(server.wait_closed(), 1.0)
