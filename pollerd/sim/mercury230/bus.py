"""The simulated Mercury 230 bus: :class:`RequestSplitter` cuts a byte stream into request frames, :class:`SimBus`
puts several meters on one bus with fault injection, and :func:`serve_tcp` / :class:`PtySim` move the bytes.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Iterable

from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import append_crc, check_crc
from pollerd.sim.common import FramedPtySim, paced_send, serve_framed_tcp

from .meter import SimMeter

FAULTS = ("crc", "truncate", "silence", "wrong_address", "echo", "garbage")


# Request body lengths (code + params) per code. Codes not listed are tried with every length, but
# only at the head of the buffer, to keep false CRC matches inside a partial frame unlikely.
_BODY_LENGTHS: dict[int, tuple[int, ...]] = {
    m.CODE_TEST: (1,),
    m.CODE_OPEN: (8,),
    m.CODE_CLOSE: (1,),
    m.CODE_WRITE: tuple(range(2, 17)),
    m.CODE_READ_ENERGY: (3,),
    # 5 first, the form pollerd sends (06 03 hi lo len): a shorter candidate can pass its CRC by chance
    # (`05 06 03 34 10 0F 84 ...`), and a cut request is answered with status 1.
    m.CODE_READ_MEMORY: (5, 4, 6),
}
# Where the length depends on the parameter byte. Guessing the length by CRC alone is not enough:
# `07 08 11 07 CD` is a CRC-valid 5-byte frame inside the 6-byte `07 08 11 07 CD 00`.
_PARAM_BODY_LENGTHS: dict[tuple[int, int], tuple[int, ...]] = {
    (m.CODE_READ_TIME, 0x00): (2,),
    (m.CODE_READ_PARAM, m.PARAM_AUX): (3,),
    (m.CODE_READ_PARAM, 0x14): (3,),  # fixed (frozen) values, 08 14 BWRI
    (m.CODE_READ_PARAM, m.PARAM_AUX_GROUP): (3,),
    (m.CODE_READ_PARAM, m.PARAM_VARIANT): (2, 3),  # old and new forms
}
_PARAM_DEFAULT: dict[int, tuple[int, ...]] = {
    m.CODE_READ_TIME: (3,),  # 04 <journal> <record>
    m.CODE_READ_PARAM: (2,),
}
_ANY_LENGTH = tuple(range(1, 30))
_MAX_FRAME = 3 + max(_ANY_LENGTH)


def _body_lengths(buf: bytearray, start: int, unknown: tuple[int, ...]) -> tuple[int, ...]:
    """Candidate body lengths for a frame at ``start`` (needs the address and code bytes there)."""
    code = buf[start + 1]
    lengths = _BODY_LENGTHS.get(code)
    if lengths is not None:
        return lengths
    default = _PARAM_DEFAULT.get(code)
    if default is None:
        return unknown
    if start + 2 >= len(buf):
        return (2,)  # cannot tell yet; 2 is the shortest, and 4 bytes are needed anyway
    return _PARAM_BODY_LENGTHS.get((code, buf[start + 2]), default)


class RequestSplitter:
    """Cuts the master's byte stream into CRC-valid request frames; one per connection.

    Bytes that cannot start a frame (unknown address, or every candidate length fails its CRC) are
    dropped one at a time and counted in ``garbage``; the buffer never exceeds ``max_buffer``.
    """

    def __init__(self, addresses: Iterable[int] | None = None, max_buffer: int = 256) -> None:
        self.addresses = frozenset(addresses) | {m.ADDRESS_UNIVERSAL, m.ADDRESS_BROADCAST} if addresses else None
        self.max_buffer = max_buffer
        self.garbage = 0
        self._buf = bytearray()

    def _can_start(self, addr: int) -> bool:
        return self.addresses is None or addr in self.addresses

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        while buf:
            head = self._head_state()
            if head == "drop":
                del buf[0]
                self.garbage += 1
                continue
            if isinstance(head, int):
                frames.append(bytes(buf[:head]))
                del buf[:head]
                continue
            found = self._search_later()
            if found is None:
                break
            start, length = found
            self.garbage += start
            frames.append(bytes(buf[start : start + length]))
            del buf[: start + length]
        if len(buf) > self.max_buffer:
            drop = len(buf) - _MAX_FRAME
            self.garbage += drop
            del buf[:drop]
        return frames

    def _head_state(self) -> int | str:
        """Frame length at the head, "drop" if the head byte cannot start a frame, "wait" otherwise."""
        buf = self._buf
        n = len(buf)
        if not self._can_start(buf[0]):
            return "drop"
        if n < 4:
            return "wait"
        lengths = _body_lengths(buf, 0, _ANY_LENGTH)
        with memoryview(buf) as view:
            for body in lengths:
                total = body + 3
                if total > n:
                    return "wait"
                if check_crc(view[:total]):
                    return total
        return "drop"

    def _search_later(self) -> tuple[int, int] | None:
        """A complete frame after the head (garbage or a lost partial frame before it)."""
        buf = self._buf
        n = len(buf)
        with memoryview(buf) as view:
            for start in range(1, n - 3):
                if not self._can_start(buf[start]):
                    continue
                for body in _body_lengths(buf, start, ()):
                    total = body + 3
                    if start + total > n:
                        break
                    if check_crc(view[start : start + total]):
                        return start, total
        return None


class SimBus:
    """Several meters on one bus. ``handle_frame`` dispatches one request and applies queued faults."""

    def __init__(self, meters: Iterable[SimMeter]) -> None:
        self.meters: dict[int, SimMeter] = {}
        for meter in meters:
            if meter.address in self.meters:
                raise ValueError(f"two simulated meters share address {meter.address}")
            self.meters[meter.address] = meter
        self.requests = 0
        self.replies: dict[int, int] = dict.fromkeys(self.meters, 0)
        self.faults_applied: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._faults: deque[str] = deque()
        self._splitter = self.splitter()

    def splitter(self) -> RequestSplitter:
        """A new stream splitter (one per connection)."""
        return RequestSplitter(self.meters)

    def inject(self, fault: str, count: int = 1) -> None:
        """Queue ``fault`` for the next ``count`` replies: "crc" (one bit flipped), "truncate" (first half
        only), "silence" (no reply), "wrong_address" (another address, valid CRC), "echo" (our request
        first, then the reply), "garbage" (junk of the reply's length instead of it)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        self._faults.extend([fault] * count)

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    def handle_frame(self, frame: bytes) -> bytes | None:
        self.requests += 1
        addr = frame[0]
        if addr == m.ADDRESS_UNIVERSAL:
            # Every meter would answer at once; a real multi-drop bus collides, so only a lone meter does.
            meters = list(self.meters.values())
            meter = meters[0] if len(meters) == 1 else None
        elif addr == m.ADDRESS_BROADCAST:
            for meter in self.meters.values():
                meter.handle(frame)
            return None
        else:
            meter = self.meters.get(addr)
        if meter is None:
            return None
        reply = meter.handle(frame)
        if reply is None:
            return None
        self.replies[meter.address] += 1
        if not self._faults:
            return reply
        fault = self._faults.popleft()
        self.faults_applied[fault] += 1
        return _apply_fault(fault, frame, reply)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Sans-I/O use of the bus' own splitter: bytes in, reply chunks out."""
        out = []
        for frame in self._splitter.feed(data):
            reply = self.handle_frame(frame)
            if reply is not None:
                out.append(reply)
        return out


def _apply_fault(fault: str, request: bytes, reply: bytes) -> bytes | None:
    if fault == "silence":
        return None
    if fault == "crc":
        return reply[:-1] + bytes((reply[-1] ^ 0x01,))
    if fault == "truncate":
        return reply[: max(1, len(reply) // 2)]
    if fault == "wrong_address":
        other = reply[0] % 0xF0 + 1
        return append_crc(bytes((other,)) + reply[1:-2])
    if fault == "echo":
        return request + reply
    # garbage: starts with a byte that is not the address, so a framer rejects it at once
    junk = bytes((reply[0] ^ 0xFF,)) + bytes((0x5A + 0x3B * i) & 0xFF for i in range(len(reply) - 1))
    return junk if not check_crc(junk) else junk[:-1] + bytes((junk[-1] ^ 0x01,))


# The pacing lives in pollerd.sim.common, shared by all simulators; the old name stays for the tests.
_paced_send = paced_send


async def serve_tcp(bus: SimBus, host: str, port: int, *, latency: float = 0.0,
                    baud: int | None = None) -> asyncio.Server:
    """Serve ``bus`` over TCP (an RS-485-to-Ethernet converter in transparent mode). Port 0 picks a free
    port: read it from ``server.sockets[0].getsockname()[1]``. Requests on one connection are answered
    in order, one at a time, as on a half-duplex bus."""
    return await serve_framed_tcp(bus, bus.splitter, host, port, latency=latency, baud=baud)


class PtySim(FramedPtySim):
    """Serve ``bus`` on a pseudo-terminal; the daemon opens :attr:`device` as a serial port. Replies are
    paced as 8N1 at ``baud``; :attr:`dropped` counts reply bytes nobody read."""

    def __init__(self, bus: SimBus, *, latency: float = 0.0, baud: int | None = None,
                 link: str | os.PathLike[str] | None = None) -> None:
        super().__init__(bus, bus.splitter(), latency=latency, baud=baud, link=link, name="sim-pty")


async def open_pty(bus: SimBus, *, latency: float = 0.0, baud: int | None = None,
                   link: str | os.PathLike[str] | None = None) -> PtySim:
    return PtySim(bus, latency=latency, baud=baud, link=link)
