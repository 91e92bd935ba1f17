"""Byte pipes to the bus: a TCP connection (RS-485-to-Ethernet converter, GSM modem) or a serial port.

A :class:`Link` only moves bytes. It keeps one receive buffer, hands it out in chunks and reports a lost
connection as :class:`TransportError`; reconnecting with capped, jittered backoff is the line's job
(:mod:`pollerd.line`), because only the line knows when the bus is idle.
"""

from __future__ import annotations

import asyncio
import importlib
import random
import socket
from typing import Any, Protocol

from .backoff import backoff_delay
from .compat import timeout
from .config.model import LineConfig
from .errors import TransportError

# A reply never legitimately exceeds a few hundred bytes; a buffer growing past this means a babbling
# device or the wrong baud rate, and is dropped rather than grown without bound.
MAX_BUFFER = 64 * 1024

_PARITY = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S"}


class SerialPort(Protocol):
    """What a link uses of the pyserial port behind a serial transport (pyserial has no type hints)."""

    baudrate: int

    def flush(self) -> None: ...


# What one read from a TCP socket may bring: more than most replies (a longer one takes two reads); kept per
# pipe, so small (200 converters hold 200 of them).
RECV_SIZE = 1024


class _Pipe(asyncio.BufferedProtocol):
    """asyncio protocol shared by TCP and serial: a bytearray buffer plus one waiter.

    A buffered protocol for TCP: the transport reads into one buffer of RECV_SIZE kept for the pipe's life. A
    plain protocol gets a fresh bytes object per read, allocated at the transport's 256 KiB maximum and then
    shrunk; with the mmap threshold tune_malloc() fixes at 64 KiB, that was an mmap, an mremap and a munmap
    per reply (issue 18: a third of the daemon's system time against the floor's). Serial transports
    (pyserial-asyncio) call data_received() whatever the protocol is, so the pipe keeps that too."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._rx = memoryview(bytearray(RECV_SIZE))
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self.overflowed = 0
        self._waiter: asyncio.Future[None] | None = None
        # The reply deadline of the wait in progress, and one lazy timer for it (see wait_data).
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # TCP and serial transports are both read-write asyncio.Transports; open() also sets it, at once.
        if isinstance(transport, asyncio.Transport):
            self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rx

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._rx[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if len(self.buf) + len(data) > MAX_BUFFER:
            self.overflowed += len(self.buf)
            self.buf.clear()
            if len(data) > MAX_BUFFER:  # a serial read of a babbling line: keep only the newest bytes
                self.overflowed += len(data) - MAX_BUFFER
                data = data[-MAX_BUFFER:]
        self.buf += data
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by peer")
        self._wake()

    def eof_received(self) -> bool | None:
        self.lost = ConnectionResetError("peer closed the connection")
        self._wake()
        return False

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def wait_data(self, deadline: float | None = None) -> None:
        """Wait until bytes are buffered, the connection is lost, or the loop clock reaches ``deadline``.

        The deadline needs no timer of its own per wait (issue 18: a reply timeout per exchange put a timer
        into asyncio's heap and cancelled it again, hundreds of times a second). One lazy timer per pipe is
        armed for the earliest deadline; when it fires and the wait in progress has a later deadline (a
        newer exchange), it is re-armed for that one. A line makes ~40 exchanges a second and its
        deadlines only move forward, so the timer fires about once per waiting_time instead of being
        created and cancelled per exchange."""
        if self.buf or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        if deadline is not None:
            if loop.time() >= deadline:
                return
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(deadline, self._expire)
        self._deadline = deadline
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._deadline = None

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._waiter is None:
            return  # the wait it was armed for is over; the next wait arms a new one
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._wake()
        else:
            self._timer = loop.call_at(deadline, self._expire)

    def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _keepalive(sock: socket.socket | None) -> None:
    """TCP keepalive after 60 s idle, 3 probes 10 s apart: a converter or GSM modem that vanished without
    closing the connection (power cut, mobile session dropped) shows as a lost link within ~90 s of silence
    instead of after the kernel's default two hours."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):  # Linux names; other systems keep their defaults
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
    except OSError:  # not fatal: the silent-reconnect rule in line.py still catches a half-open link
        pass


def _serial_asyncio() -> Any:
    """pyserial-asyncio-fast (a dependency), or the classic pyserial-asyncio a distribution may ship instead:
    the same create_serial_connection() API. Imported on the first serial open: TCP-only gateways skip it."""
    try:
        return importlib.import_module("serial_asyncio_fast")
    except ImportError:  # pragma: no cover - only where the fast package is missing
        return importlib.import_module("serial_asyncio")


class Link:
    """One connection to a bus. Not thread-safe; the owning line serialises use."""

    def __init__(self, cfg: LineConfig) -> None:
        self.cfg = cfg
        self._pipe: _Pipe | None = None

    @property
    def describe(self) -> str:
        c = self.cfg
        if c.type == "tcp":
            return f"tcp {c.host}:{c.port}"
        return f"serial {c.device} {c.baudrate} {c.bytesize}{c.parity}{c.stopbits:g}"

    @property
    def connected(self) -> bool:
        p = self._pipe
        return p is not None and p.lost is None and p.transport is not None

    async def open(self) -> None:
        await self.close()
        pipe = _Pipe()
        c = self.cfg
        transport: asyncio.Transport
        try:
            async with timeout(c.connect_timeout):
                if c.type == "tcp":
                    if c.host is None or c.port is None:  # the loader requires both; a hand-made config may not
                        raise TransportError(f"cannot open {self.describe}: a tcp line needs host and port")
                    loop = asyncio.get_running_loop()
                    transport, _ = await loop.create_connection(lambda: pipe, c.host, c.port)
                    _keepalive(transport.get_extra_info("socket"))
                else:
                    transport = await self._open_serial(pipe)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            raise TransportError(f"cannot open {self.describe}: {exc or type(exc).__name__}") from exc
        except Exception as exc:  # pyserial raises SerialException (an OSError subclass on most versions)
            if type(exc).__name__ == "SerialException":
                raise TransportError(f"cannot open {self.describe}: {exc}") from exc
            raise
        # connection_made() may run only on the next loop iteration; the transport is usable now.
        pipe.transport = transport
        self._pipe = pipe

    async def _open_serial(self, pipe: _Pipe) -> asyncio.Transport:
        c = self.cfg
        if c.device is None:  # the loader requires it; a hand-made config may not
            raise TransportError(f"cannot open {self.describe}: a serial line needs a device")
        stopbits = int(c.stopbits) if c.stopbits in (1, 2) else c.stopbits
        transport, _ = await _serial_asyncio().create_serial_connection(
            asyncio.get_running_loop(), lambda: pipe, url=c.device, baudrate=c.baudrate,
            bytesize=c.bytesize, parity=_PARITY[c.parity], stopbits=stopbits,
        )
        if not isinstance(transport, asyncio.Transport):
            raise TransportError(f"{self.describe}: the serial package returned {type(transport).__name__}, "
                                 "not an asyncio transport")
        return transport

    def _live(self) -> _Pipe:
        p = self._pipe
        if p is None:
            raise TransportError(f"{self.describe} is not open")
        if p.lost is not None:
            raise TransportError(f"{self.describe} lost: {p.lost}")
        return p

    def write(self, data: bytes) -> None:
        p = self._live()
        assert p.transport is not None
        p.transport.write(data)

    @property
    def serial(self) -> SerialPort | None:
        """The pyserial port behind a serial link (None for TCP or when closed)."""
        p = self._pipe
        port: SerialPort | None = (getattr(p.transport, "serial", None)
                                   if p is not None and p.transport is not None else None)
        return port

    @property
    def baudrate(self) -> int | None:
        """The serial port's current speed (None for TCP)."""
        ser = self.serial
        return ser.baudrate if ser is not None else None

    def set_baudrate(self, baud: int) -> None:
        """Change a serial port's speed mid-connection (IEC 62056-21 baud switch). No-op on TCP, where a
        transparent converter has a fixed speed."""
        ser = self.serial
        if ser is not None and ser.baudrate != baud:
            ser.baudrate = baud  # pyserial reconfigures the open port

    async def drain_output(self, limit: float = 5.0) -> None:
        """Wait until everything written has left the serial port's UART, not just the asyncio buffer:
        a speed change before that garbles the tail of the last request. No-op on TCP."""
        p = self._pipe
        ser = self.serial
        if p is None or ser is None:
            return
        transport = p.transport
        async with timeout(limit):
            # asyncio signals a drained buffer only through flow control (pause/resume_writing above a
            # high-water mark), which the line does not use; a short poll, bounded by the timeout, it is.
            while transport is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            # tcdrain() blocks until the kernel has shifted the last stop bit out.
            await asyncio.to_thread(ser.flush)

    def discard_input(self) -> bytes:
        """Drop whatever arrived unasked (late replies, echoes, noise) and return it for logging."""
        p = self._pipe
        if p is None or not p.buf:
            return b""
        stale = bytes(p.buf)
        p.buf.clear()
        return stale

    async def read_chunk(self, deadline: float | None = None) -> bytes:
        """Wait for bytes and return everything buffered. Raises TimeoutError when nothing came by
        ``deadline`` (the event loop's clock), TransportError once the pipe is lost and its buffer is empty:
        bytes that arrived before the peer closed (the tail of a reply, then FIN) are still handed out
        first."""
        p = self._pipe
        if p is None:
            raise TransportError(f"{self.describe} is not open")
        await p.wait_data(deadline)
        if p.buf:
            chunk = bytes(p.buf)
            p.buf.clear()
            return chunk
        if p.lost is not None:
            raise TransportError(f"{self.describe} lost: {p.lost}")
        raise TimeoutError

    async def close(self) -> None:
        p, self._pipe = self._pipe, None
        if p is not None:
            p.stop_timer()
        if p is not None and p.transport is not None:
            p.transport.close()
            await asyncio.sleep(0)  # let the transport finish closing its fd


def reconnect_delay(attempt: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """A line's delay before reconnect try ``attempt + 1``: pollerd.backoff with half jitter."""
    return backoff_delay(attempt, lo, hi, (rng or random).random())
