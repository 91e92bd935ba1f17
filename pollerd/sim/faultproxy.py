"""A fault-injecting TCP proxy for loopback tests and the fault campaign (``scripts/fault_campaign.py``).

It sits where an RS-485-to-Ethernet converter would, between pollerd and a simulator: every chunk the client
writes is taken as one request and forwarded; the next chunk the simulator sends back is taken as that
request's reply (the simulators answer unpaced, one write per reply). With probability ``rate`` a reply to
a request that ``target`` selects is damaged by one of ``kinds``; everything else passes unchanged.

Faults (:class:`Fault`) are the ones seen in the field: a reply later than ``waiting_time``, a reply held back
and delivered right after the next request went out (a packetising GSM modem), bit flips, truncation,
duplicated bytes and whole frames, a checksum-valid reply from another address, checksum-valid garbage, a
close in the middle of a reply, a TCP reset, and a half-open connection that swallows everything.
:meth:`FaultProxy.outage` makes the whole converter hang (every connection, old and new) until it heals;
connections that hung stay dead afterwards, as a converter that rebooted has forgotten them.

Checksum-valid damage needs the protocol's framing: a :class:`Reframer` (see :data:`REFRAMERS`).
The proxy binds to loopback only; it carries no secrets and logs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass

from pollerd.protocols.crc import append_crc

__all__ = ["REFRAMERS", "Fault", "FaultProxy", "Reframer"]


class Fault(str, enum.Enum):
    DELAY = "delay"            # the reply arrives `delay` seconds late (beyond waiting_time)
    LATE = "late"              # held back, delivered right after the next request went out
    BITFLIP = "bitflip"        # one bit of the reply inverted
    TRUNCATE = "truncate"      # the reply's tail never comes
    DUP_BYTES = "dup_bytes"    # one byte of the reply doubled
    DUP_FRAME = "dup_frame"    # the whole reply sent twice
    FOREIGN = "foreign"        # a checksum-valid reply from another bus address
    GARBAGE = "garbage"        # a checksum-valid frame of random content and another length
    MIDCLOSE = "midclose"      # half the reply, then the connection closed (FIN)
    RST = "rst"                # part of the reply, then a TCP reset
    HALFOPEN = "halfopen"      # the connection swallows everything from now on and never closes


@dataclass(frozen=True, slots=True)
class Reframer:
    """Checksum-correct damage for one protocol; either may return None where the protocol has no such
    thing (IEC 62056-21 replies carry no bus address)."""

    readdress: Callable[[bytes], bytes | None]
    garbage: Callable[[bytes, random.Random], bytes | None]


def _mercury_readdress(reply: bytes) -> bytes | None:
    if len(reply) < 4:
        return None
    other = reply[0] % 240 + 1
    return append_crc(bytes((other,)) + reply[1:-2])


def _mercury_garbage(reply: bytes, rng: random.Random) -> bytes | None:
    if not reply:
        return None
    # Same address, valid CRC, but a length no reply to this request has: neither the data length nor the
    # 4-byte status form (a same-length random body is indistinguishable from a true reading by any codec).
    lengths = [n for n in range(5, 40) if n not in (len(reply), 4)]
    n = rng.choice(lengths)
    return append_crc(bytes((reply[0],)) + rng.randbytes(n - 3))


def _mbus_checksum(body: bytes | bytearray) -> int:
    return sum(body) & 0xFF


def _mbus_readdress(reply: bytes) -> bytes | None:
    # Long frame: 68 L L 68 C A CI ... CS 16. The single-byte ack E5 has no address.
    if len(reply) < 9 or reply[0] != 0x68:
        return None
    body = bytearray(reply[4:-2])
    body[1] = (body[1] + 1) % 250
    return reply[:4] + bytes(body) + bytes((_mbus_checksum(body), 0x16))


def _mbus_garbage(reply: bytes, rng: random.Random) -> bytes | None:
    if len(reply) < 9 or reply[0] != 0x68:
        return None
    n = rng.choice([k for k in range(4, 60) if k != reply[1]])
    body = bytes((reply[4], reply[5])) + rng.randbytes(n - 2)
    return bytes((0x68, n, n, 0x68)) + body + bytes((_mbus_checksum(body), 0x16))


def _iec_garbage(reply: bytes, rng: random.Random) -> bytes | None:
    # STX data ETX BCC: printable random text with a correct block check (XOR after STX, up to ETX).
    if len(reply) < 4 or reply[0] != 0x02:
        return None
    text = bytes(rng.choice(b"0123456789ABCDEF.*()") for _ in range(rng.randint(3, 40)))
    block = text + b"\x03"
    bcc = 0
    for b in block:
        bcc ^= b
    return b"\x02" + block + bytes((bcc,))


REFRAMERS: dict[str, Reframer] = {
    "mercury230": Reframer(_mercury_readdress, _mercury_garbage),
    "mbus": Reframer(_mbus_readdress, _mbus_garbage),
    "iec62056": Reframer(lambda _reply: None, _iec_garbage),
}

_NO_REFRAMER = Reframer(lambda _reply: None, lambda _reply, _rng: None)


class _Conn:
    """One client connection and its upstream twin."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.faults: deque[Fault | None] = deque()   # per request in flight, in order
        self.held: list[bytes] = []                 # LATE replies waiting for the next request
        self.dead = False                           # half-open: swallow everything, close nothing


class FaultProxy:
    """``async with FaultProxy(port, ...) as proxy``: listen on 127.0.0.1:``proxy.port``, forward to
    127.0.0.1:``upstream_port``. :attr:`injected` counts faults by kind."""

    def __init__(self, upstream_port: int, *, kinds: Iterable[Fault | str] = (), rate: float = 0.0,
                 target: Callable[[bytes], bool] | None = None, protocol: str | None = None,
                 delay: float = 1.0, seed: int = 1) -> None:
        self.upstream_port = upstream_port
        self.kinds: tuple[Fault, ...] = tuple(Fault(k) for k in kinds)
        self.rate = rate
        self.target = target
        self.delay = delay
        self.reframer = REFRAMERS.get(protocol or "", _NO_REFRAMER)
        self.rng = random.Random(seed)
        self.injected: Counter[Fault] = Counter()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._hung = False

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def configure(self, kinds: Iterable[Fault | str] = (), rate: float = 0.0) -> None:
        """Change the fault mix for the requests from now on."""
        self.kinds = tuple(Fault(k) for k in kinds)
        self.rate = rate

    def outage(self, hung: bool = True) -> None:
        """Hang the converter (every connection swallows everything) or heal it. Connections that were
        open while it hung stay dead: only a new connection works again."""
        self._hung = hung
        if hung:
            for c in self._conns:
                c.dead = True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for c in list(self._conns):
            self._drop(c)
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    # -- plumbing ----------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        t = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        conn = _Conn(writer, up_w)
        conn.dead = self._hung
        self._conns.add(conn)
        self._spawn(self._requests(reader, conn), "faultproxy requests")
        self._spawn(self._replies(up_r, conn), "faultproxy replies")

    def _drop(self, c: _Conn, *, reset: bool = False) -> None:
        self._conns.discard(c)
        if reset:
            sock = c.client.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.client.transport.abort()
        else:
            c.client.close()
        c.upstream.close()

    def _pick(self, request: bytes) -> Fault | None:
        if not self.kinds or self.rate <= 0 or (self.target is not None and not self.target(request)):
            return None
        if self.rng.random() >= self.rate:
            return None
        return self.rng.choice(self.kinds)

    async def _requests(self, reader: asyncio.StreamReader, c: _Conn) -> None:
        try:
            while data := await reader.read(4096):
                if c.dead:
                    continue
                fault = self._pick(data)
                if fault is Fault.HALFOPEN:
                    self.injected[fault] += 1
                    c.dead = True
                    continue
                c.faults.append(fault)
                c.upstream.write(data)
                if c.held:
                    # The held reply goes out once the next request is on its way, ahead of that request's
                    # own reply (which needs at least the meter's turnaround).
                    await asyncio.sleep(0.002)
                    for late in c.held:
                        c.client.write(late)
                    c.held.clear()
        except (ConnectionError, OSError):
            pass
        finally:
            # The client hung up (a dead, half-open connection is kept until then: it never says goodbye).
            self._drop(c)

    async def _replies(self, reader: asyncio.StreamReader, c: _Conn) -> None:
        try:
            while data := await reader.read(4096):
                fault = c.faults.popleft() if c.faults else None
                if c.dead:
                    continue
                if fault is None:
                    c.client.write(data)
                    continue
                self.injected[fault] += 1
                if not await self._damage(fault, data, c):
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            if c in self._conns and not c.dead:
                self._drop(c)

    async def _damage(self, fault: Fault, data: bytes, c: _Conn) -> bool:
        """Send ``data`` damaged by ``fault``; False once the connection is gone."""
        rng = self.rng
        out: bytes | None = data
        if fault is Fault.DELAY:
            await asyncio.sleep(self.delay)   # later replies queue behind it, as on the wire
        elif fault is Fault.LATE:
            c.held.append(data)
            return True
        elif fault is Fault.BITFLIP:
            i = rng.randrange(len(data) * 8)
            b = bytearray(data)
            b[i // 8] ^= 1 << (i % 8)
            out = bytes(b)
        elif fault is Fault.TRUNCATE:
            out = data[: rng.randrange(len(data))] if len(data) > 1 else b""
        elif fault is Fault.DUP_BYTES:
            i = rng.randrange(len(data))
            out = data[: i + 1] + data[i:]
        elif fault is Fault.DUP_FRAME:
            out = data + data
        elif fault is Fault.FOREIGN:
            out = self.reframer.readdress(data) or self.reframer.garbage(data, rng) or data[::-1]
        elif fault is Fault.GARBAGE:
            out = self.reframer.garbage(data, rng) or rng.randbytes(len(data))
        elif fault in (Fault.MIDCLOSE, Fault.RST):
            c.client.write(data[: max(1, len(data) // 2)] if len(data) > 1 else b"")
            with contextlib.suppress(Exception):
                await c.client.drain()
            self._drop(c, reset=fault is Fault.RST)
            return False
        if out:
            c.client.write(out)
        return True
