"""Simulated wired M-Bus slaves: a heat meter and a water meter, primary and secondary addressing (selection
with wildcards, collisions when several slaves answer), multi-telegram readouts with FCB handling, served over
TCP (an M-Bus level converter behind a serial-to-Ethernet box) and a pty.

The values are fixed, so tests know exactly what must arrive in the store: :meth:`SimMeter.expected` gives
them as ``{(channel, archive, ts or None): value}`` in the driver's naming (``ts`` None = current reading).

``pollerd sim mbus --tcp 127.0.0.1:0`` prints where it listens as its first line::

    mbus sim listening on tcp 127.0.0.1:40123 meters 1=12345678 2=87654321
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from pollerd.protocols import mbus as m
from pollerd.sim.common import FramedPtySim, host_port, run_until_signal, serve_framed_tcp

# Replies on the bus when two slaves answer at once: overlapping UART frames read back as garbage.
COLLISION = b"\xf7"
FAULTS = ("silence", "checksum")


@dataclass
class SimMeter:
    """One slave. ``telegrams`` are the record bytes of each telegram (all but the last end in DIF 1F)."""

    primary: int
    ident: str
    manufacturer: str
    medium: int
    version: int = 1
    telegrams: list[bytes] = field(default_factory=list)
    values: dict[tuple[str, str, dt.date | None], float] = field(default_factory=dict)
    status: int = 0
    selected: bool = False
    access_no: int = 0
    readouts: int = 0                   # RSP_UD sent, repeats included
    _fcb: bool | None = None            # None after SND_NKE / selection: the next REQ_UD2 is new whatever its FCB
    _sent: int | None = None            # index of the telegram sent last

    @property
    def secondary(self) -> str:
        code = m.encode_manufacturer(self.manufacturer)
        return f"{self.ident}{code.to_bytes(2, 'little').hex().upper()}{self.version:02X}{self.medium:02X}"

    def matches(self, mask: m.SecondaryAddress) -> bool:
        return mask.matches(self.ident, m.encode_manufacturer(self.manufacturer), self.version, self.medium)

    def reset(self) -> None:
        self._fcb = None
        self._sent = None

    def rsp_ud(self, fcb: bool) -> bytes:
        if self._fcb is not None and fcb == self._fcb and self._sent is not None:
            index = self._sent                       # FCB not toggled: the master lost our reply; repeat it
        elif self._sent is not None and self.telegrams[self._sent].endswith(b"\x1f"):
            index = self._sent + 1
        else:
            index = 0
        if index != self._sent or self._fcb is None or fcb != self._fcb:
            self.access_no = (self.access_no + 1) & 0xFF
        self._fcb, self._sent = fcb, index
        self.readouts += 1
        head = m.encode_header(self.ident, self.manufacturer, self.version, self.medium, self.access_no,
                               self.status)
        address = m.ADDRESS_SELECTED if self.selected else self.primary
        return m.encode_long(m.C_RSP_UD, address, 0x72, head + self.telegrams[index])

    def expected(self, tz: dt.tzinfo = dt.timezone.utc) -> dict[tuple[str, str, int | None], float]:
        out: dict[tuple[str, str, int | None], float] = {}
        for (channel, archive, when), value in self.values.items():
            ts = None if when is None else int(dt.datetime.combine(when, dt.time(), tz).timestamp())
            out[(channel, archive, ts)] = value
        return out


def heat_meter(primary: int = 1, ident: str = "12345678", *, split: bool = True) -> SimMeter:
    """A heat meter (medium 04): energy, volume, power, flow, temperatures, a tariff register, two monthly
    due-date values; two telegrams when ``split``."""
    t1 = (m.storage_dib(0xC) + b"\x78" + m.encode_bcd(int(ident), 4)                 # fabrication no
          + m.storage_dib(0x4) + b"\x06" + (12345).to_bytes(4, "little")             # 12345 kWh
          + m.storage_dib(0xC) + b"\x14" + m.encode_bcd(456789, 4)                   # 4567.89 m³
          + m.storage_dib(0xB) + b"\x2D" + m.encode_bcd(123, 3)                      # 12.3 kW
          + m.storage_dib(0xB) + b"\x3B" + m.encode_bcd(1234, 3)                     # 1.234 m³/h
          + m.storage_dib(0xA) + b"\x5A" + m.encode_bcd(705, 2)                      # 70.5 °C
          + m.storage_dib(0xA) + b"\x5E" + m.encode_bcd(452, 2)                      # 45.2 °C
          + m.storage_dib(0xA) + b"\x62" + m.encode_bcd(253, 2)                      # 25.3 K
          + m.storage_dib(0x4) + b"\x6D" + m.encode_date_f(dt.datetime(2025, 3, 14, 9, 26)))
    t2 = (m.storage_dib(0x4, tariff=1) + b"\x06" + (2345).to_bytes(4, "little")      # 2345 kWh in tariff 1
          + m.storage_dib(0x2, storage=1) + b"\x6C" + m.encode_date_g(dt.date(2025, 2, 28))
          + m.storage_dib(0x4, storage=1) + b"\x06" + (12000).to_bytes(4, "little")
          + m.storage_dib(0xC, storage=1) + b"\x14" + m.encode_bcd(440000, 4)
          + m.storage_dib(0x2, storage=2) + b"\x6C" + m.encode_date_g(dt.date(2025, 1, 31))
          + m.storage_dib(0x4, storage=2) + b"\x06" + (11000).to_bytes(4, "little")
          + b"\x2f\x2f")
    telegrams = [t1 + b"\x1f", t2] if split else [t1 + t2]
    cur = "current"
    values: dict[tuple[str, str, dt.date | None], float] = {
        ("E.heat", cur, None): 12_345_000.0, ("V", cur, None): 4567.89, ("P", cur, None): 12300.0,
        ("flow", cur, None): 1.234, ("T.flow", cur, None): 70.5, ("T.return", cur, None): 45.2,
        ("dT", cur, None): 25.3, ("E.heat.T1", cur, None): 2_345_000.0,
        ("E.heat", "monthly", dt.date(2025, 2, 28)): 12_000_000.0, ("V", "monthly", dt.date(2025, 2, 28)): 4400.0,
        ("E.heat", "monthly", dt.date(2025, 1, 31)): 11_000_000.0,
    }
    return SimMeter(primary, ident, "KAM", 0x04, 8, telegrams, values)


def water_meter(primary: int = 2, ident: str = "87654321") -> SimMeter:
    """A cold-water meter (medium 16): volume, flow, a due-date value and error flags."""
    t = (m.storage_dib(0xC) + b"\x13" + m.encode_bcd(123456, 4)                      # 123.456 m³
         + m.storage_dib(0xB) + b"\x3B" + m.encode_bcd(500, 3)                       # 0.5 m³/h
         + m.storage_dib(0x4) + b"\x6D" + m.encode_date_f(dt.datetime(2025, 3, 14, 9, 26))
         + m.storage_dib(0x2, storage=1) + b"\x6C" + m.encode_date_g(dt.date(2024, 12, 31))
         + m.storage_dib(0xC, storage=1) + b"\x13" + m.encode_bcd(100000, 4)
         + m.storage_dib(0x2) + b"\xFD\x17" + (0).to_bytes(2, "little"))             # error flags
    cur = "current"
    values: dict[tuple[str, str, dt.date | None], float] = {
        ("V.cold", cur, None): 123.456, ("flow", cur, None): 0.5, ("mbus.FD17", cur, None): 0.0,
        ("V.cold", "monthly", dt.date(2024, 12, 31)): 100.0,
    }
    return SimMeter(primary, ident, "SEN", 0x16, 2, [t], values)


class SimBus:
    """Slaves on one bus; ``handle_frame`` answers one master frame as the bus would."""

    def __init__(self, meters: Iterable[SimMeter]) -> None:
        self.meters = list(meters)
        self.requests = 0
        self.collisions = 0
        self._faults: deque[str] = deque()

    def inject(self, fault: str, count: int = 1) -> None:
        """Queue ``fault`` for the next ``count`` replies: "silence" (the slave acts, its reply is lost) or
        "checksum" (one bit of the checksum flipped)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")
        self._faults.extend([fault] * count)

    def _answer(self, replies: list[bytes]) -> bytes | None:
        if not replies:
            return None
        if len(replies) > 1:
            self.collisions += 1
            return COLLISION
        reply = replies[0]
        if self._faults:
            fault = self._faults.popleft()
            if fault == "silence":
                return None
            return reply[:-2] + bytes((reply[-2] ^ 0x01,)) + reply[-1:] if len(reply) > 1 else b"\xe4"
        return reply

    def handle_frame(self, raw: bytes) -> bytes | None:
        self.requests += 1
        try:
            frame = m.decode_frame(raw)
        except m.MbusFrameError:
            return None  # slaves ignore what they cannot read
        a = frame.a
        if frame.kind == "short" and frame.c == m.C_SND_NKE:
            targets = self._targets(a)
            for meter in targets:
                meter.reset()
                if a == m.ADDRESS_SELECTED:
                    meter.selected = False
            return None if a == m.ADDRESS_BROADCAST else self._answer([m.encode_ack() for _ in targets])
        if frame.kind == "short" and frame.c & ~m.FCB == m.C_REQ_UD2:
            targets = self._targets(a)
            if a == m.ADDRESS_BROADCAST:
                return None
            return self._answer([meter.rsp_ud(bool(frame.c & m.FCB)) for meter in targets])
        if frame.kind in ("long", "control") and frame.c & ~m.FCB == m.C_SND_UD and a == m.ADDRESS_SELECTED \
                and frame.ci == m.CI_SELECT and len(frame.data) == 8:
            mask = m.SecondaryAddress(frame.data[3::-1].hex().upper() + frame.data[4:].hex().upper())
            hits = []
            for meter in self.meters:
                meter.selected = meter.matches(mask)
                if meter.selected:
                    meter.reset()
                    hits.append(m.encode_ack())
            return self._answer(hits)
        return None

    def _targets(self, a: int) -> list[SimMeter]:
        if a == m.ADDRESS_SELECTED:
            return [mt for mt in self.meters if mt.selected]
        if a in (m.ADDRESS_BROADCAST, m.ADDRESS_BROADCAST_REPLY):
            return list(self.meters)
        return [mt for mt in self.meters if mt.primary == a]


class RequestSplitter:
    """Master frames out of a byte stream (short 10..16 and long 68..16 frames); junk is skipped."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while buf:
            if buf[0] == m.START_SHORT:
                need = 5
            elif buf[0] == m.START_LONG:
                if len(buf) < 2:
                    break
                need = buf[1] + 6
            else:
                del buf[0]
                continue
            if len(buf) < need:
                break
            out.append(bytes(buf[:need]))
            del buf[:need]
        return out


# --------------------------------------------------------------------------------------- transports

_BITS_PER_BYTE = 11  # 8E1: start, 8 data, parity, stop


async def serve_tcp(bus: SimBus, host: str, port: int, *, latency: float = 0.0,
                    baud: int | None = None) -> asyncio.Server:
    """Serve ``bus`` over TCP; port 0 picks a free port (``server.sockets[0].getsockname()[1]``)."""
    return await serve_framed_tcp(bus, RequestSplitter, host, port, latency=latency, baud=baud,
                                  bits=_BITS_PER_BYTE)


class PtySim(FramedPtySim):
    """Serve ``bus`` on a pseudo-terminal; the daemon opens :attr:`device` as its serial port. Replies are
    paced as 8E1 at ``baud``."""

    def __init__(self, bus: SimBus, *, latency: float = 0.0, baud: int | None = None,
                 link: str | None = None) -> None:
        super().__init__(bus, RequestSplitter(), latency=latency, baud=baud, bits=_BITS_PER_BYTE, link=link,
                         name="mbus-sim-pty")


# --------------------------------------------------------------------------------------- CLI


def _primary(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 250:
        raise argparse.ArgumentTypeError(f"a primary address is 0..250, got {text!r}")
    return int(text)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``pollerd sim mbus ...``."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=host_port, metavar="HOST:PORT", help="listen on TCP (port 0: any free port)")
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal")
    p.add_argument("--link", metavar="PATH", help="with --pty: make PATH a symlink to the pty device")
    p.add_argument("--heat", type=_primary, default=1, metavar="ADDR", help="primary address of the heat meter "
                   "(id 12345678, default 1)")
    p.add_argument("--water", type=_primary, default=2, metavar="ADDR", help="primary address of the water meter "
                   "(id 87654321, default 2)")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each reply")
    p.add_argument("--baud", type=int, default=None, metavar="N", help="pace replies as 8E1 at N baud would")


def build_bus(args: argparse.Namespace) -> SimBus:
    return SimBus([heat_meter(args.heat), water_meter(args.water)])


async def main(args: argparse.Namespace) -> int:
    if args.link and not args.pty:
        print("--link needs --pty", file=sys.stderr)
        return 2
    bus = build_bus(args)
    who = " ".join(f"{mt.primary}={mt.ident}" for mt in bus.meters)
    await run_until_signal(
        "mbus", f"meters {who}", tcp=args.tcp,
        serve=lambda host, port: serve_tcp(bus, host, port, latency=args.latency, baud=args.baud),
        pty=lambda: PtySim(bus, latency=args.latency, baud=args.baud, link=args.link))
    print(f"mbus sim stopped: {bus.requests} requests, {bus.collisions} collisions", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - `pollerd sim mbus` is the entry point
    parser = argparse.ArgumentParser(prog="pollerd sim mbus")
    configure_parser(parser)
    sys.exit(asyncio.run(main(parser.parse_args())))
