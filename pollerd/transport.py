"""Byte pipes to the bus: a TCP connection (RS-485-to-Ethernet converter, GSM modem) or a serial port.

A :class:`Link` only moves bytes. It keeps one receive buffer, hands it out in chunks and reports a lost
connection as :class:`TransportError`; reconnecting with capped, jittered backoff is the line's job
(:mod:`pollerd.line`), because only the line knows when the bus is idle.
"""

from __future__ import annotations

import asyncio
import random

from .backoff import backoff_delay
from .compat import timeout
from .config.model import LineConfig
from .errors import TransportError

# A reply never legitimately exceeds a few hundred bytes; a buffer growing past this means a babbling
# device or the wrong baud rate, and is dropped rather than grown without bound.
MAX_BUFFER = 64 * 1024

_PARITY = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S"}


class _Pipe(asyncio.Protocol):
    """asyncio protocol shared by TCP and serial: a bytearray buffer plus one waiter."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.BaseTransport | None = None
        self.lost: BaseException | None = None
        self.overflowed = 0
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if len(self.buf) + len(data) > MAX_BUFFER:
            self.overflowed += len(self.buf)
            self.buf.clear()
            if len(data) > MAX_BUFFER:  # one TCP read can bring up to 256 KiB: keep only the newest bytes
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

    async def wait_data(self) -> None:
        if self.buf or self.lost is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None


def _keepalive(sock: object) -> None:
    """TCP keepalive after 60 s idle, 3 probes 10 s apart: a converter or GSM modem that vanished without
    closing the connection (power cut, mobile session dropped) shows as a lost link within ~90 s of silence
    instead of after the kernel's default two hours."""
    if sock is None:
        return
    import socket
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # type: ignore[attr-defined]
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)  # type: ignore[attr-defined]
    except OSError:  # not fatal: the silent-reconnect rule in line.py still catches a half-open link
        pass


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
        try:
            async with timeout(c.connect_timeout):
                if c.type == "tcp":
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

    async def _open_serial(self, pipe: _Pipe) -> asyncio.BaseTransport:
        try:
            import serial_asyncio_fast as serial_asyncio
        except ImportError:  # pragma: no cover - the classic package has the same API
            import serial_asyncio  # type: ignore[no-redef]
        c = self.cfg
        stopbits = int(c.stopbits) if c.stopbits in (1, 2) else c.stopbits
        transport, _ = await serial_asyncio.create_serial_connection(
            asyncio.get_running_loop(), lambda: pipe, url=c.device, baudrate=c.baudrate,
            bytesize=c.bytesize, parity=_PARITY[c.parity], stopbits=stopbits,
        )
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
        p.transport.write(data)  # type: ignore[attr-defined]

    @property
    def serial(self) -> object | None:
        """The pyserial port behind a serial link (None for TCP or when closed)."""
        p = self._pipe
        return getattr(p.transport, "serial", None) if p is not None and p.transport is not None else None

    @property
    def baudrate(self) -> int | None:
        """The serial port's current speed (None for TCP)."""
        ser = self.serial
        return getattr(ser, "baudrate", None) if ser is not None else None

    def set_baudrate(self, baud: int) -> None:
        """Change a serial port's speed mid-connection (IEC 62056-21 baud switch). No-op on TCP, where a
        transparent converter has a fixed speed."""
        ser = self.serial
        if ser is not None and getattr(ser, "baudrate", None) != baud:
            ser.baudrate = baud  # type: ignore[attr-defined]  # pyserial reconfigures the open port

    async def drain_output(self, limit: float = 5.0) -> None:
        """Wait until everything written has left the serial port's UART, not just the asyncio buffer:
        a speed change before that garbles the tail of the last request. No-op on TCP."""
        p = self._pipe
        ser = self.serial
        if p is None or ser is None:
            return
        transport = p.transport
        async with timeout(limit):
            while transport is not None and transport.get_write_buffer_size():  # type: ignore[attr-defined]
                await asyncio.sleep(0.002)
            # tcdrain() blocks until the kernel has shifted the last stop bit out.
            await asyncio.to_thread(ser.flush)  # type: ignore[attr-defined]

    def discard_input(self) -> bytes:
        """Drop whatever arrived unasked (late replies, echoes, noise) and return it for logging."""
        p = self._pipe
        if p is None or not p.buf:
            return b""
        stale = bytes(p.buf)
        p.buf.clear()
        return stale

    async def read_chunk(self) -> bytes:
        """Wait for bytes and return everything buffered. Raises TransportError once the pipe is lost and
        its buffer is empty: bytes that arrived before the peer closed (the tail of a reply, then FIN) are
        still handed out first."""
        p = self._pipe
        if p is None:
            raise TransportError(f"{self.describe} is not open")
        await p.wait_data()
        if p.buf:
            chunk = bytes(p.buf)
            p.buf.clear()
            return chunk
        raise TransportError(f"{self.describe} lost: {p.lost}")

    async def close(self) -> None:
        p, self._pipe = self._pipe, None
        if p is not None and p.transport is not None:
            p.transport.close()
            await asyncio.sleep(0)  # let the transport finish closing its fd


def reconnect_delay(attempt: int, lo: float, hi: float, rng: random.Random | None = None) -> float:
    """A line's delay before reconnect try ``attempt + 1``: pollerd.backoff with half jitter."""
    return backoff_delay(attempt, lo, hi, (rng or random).random())
