"""An IEC 62056-21 mode C meter simulator (generic OBIS readout, Neva MT3xx, Energomera CE102M/CE30x) that
speaks the protocol byte for byte over TCP and a pty, for tests, the demo and benchmarks.

:class:`SimIecMeter` is sans-I/O (``handle(message) -> reply``); :class:`SimIecBus` cuts the byte stream
into messages, routes sign-ons by device address and injects faults; :func:`serve_tcp` and
:class:`IecPtySim` move the bytes. On a pty the simulator reads the terminal's speed, so a client that
forgets the baud switch (or switches too early) gets no answer, as from a real meter.

Every value is predictable: :meth:`SimIecMeter.expected` gives exactly what the driver must produce.

``pollerd sim iec62056`` prints ``iec62056 sim listening on tcp HOST:PORT addresses A,B`` (or ``on pty
DEVICE``) first, for scripts to parse.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import termios
from collections.abc import Iterable

from pollerd.protocols import iec62056 as iec
from pollerd.sim.common import PtyPair, host_port, run_until_signal, serve_connections

__all__ = ["FAULTS", "IecPtySim", "SimIecBus", "SimIecMeter", "configure_parser", "main", "serve_tcp"]

FAULTS = ("crc", "silence", "garbage", "nak")

_CHECKSUM = {"generic": "xor", "neva": "xor", "energomera": "sum7"}
_MANUFACTURER = {"generic": ("LGZ", "ZMD4054459.B40"), "neva": ("TPC", "NEVAMT324.2307"),
                 "energomera": ("EKT", "CE102Mv01")}
_TERMIOS_SPEED = {300: termios.B300, 600: termios.B600, 1200: termios.B1200, 2400: termios.B2400,
                  4800: termios.B4800, 9600: termios.B9600, 19200: termios.B19200}


class SimIecMeter:
    """One meter. ``n`` makes its values distinct from other meters' on the bus."""

    def __init__(self, address: str = "", *, profile: str = "generic", n: int = 1, serial: str | None = None,
                 password: str | None = None, baud_char: str = "5", block_lines: int = 0) -> None:
        self.address = address
        self.profile = profile
        self.n = n
        self.serial = serial or f"{43000000 + n:08d}"
        self.password = password if password is not None else {"neva": "00000000", "energomera": "777777"}.get(
            profile, "")
        self.baud_char = baud_char
        self.block_lines = block_lines   # extra unknown lines in the readout (size for benchmarks)
        self.checksum = _CHECKSUM[profile]
        self.state = "idle"              # idle | ident | prog | auth
        self.sessions = 0

    # values ------------------------------------------------------------------------------------------
    def _energy(self) -> tuple[float, float, float]:
        return (1234.567 + self.n, 1000.125 + self.n, 234.442)

    def _phases(self) -> list[tuple[float, float]]:
        return [(230.1 + i + self.n / 10, 1.25 + i + self.n) for i in range(3)]

    def readout_block(self) -> bytes:
        a, t1, t2 = self._energy()
        lines = [f"0.0.0({self.address or self.serial})", f"C.1.0({self.serial})",
                 f"1.8.0({a:010.3f}*kWh)", f"1.8.1({t1:010.3f}*kWh)", f"1.8.2( {t2:09.3f}*kWh)",
                 "2.8.0(000012.5*)", f"1.8.0*12({a - 100:010.3f}*kWh)"]
        for i, (u, cur) in enumerate(self._phases()):
            lines.append(f"{32 + 20 * i}.7.0({u:.1f}*V)")
            lines.append(f"1-0:{31 + 20 * i}.7.0*255({cur:.2f}*A)")
        lines += ["14.7.0(50.00*Hz)", "F.F(00000000)"]
        lines += [f"0.9.{i}(12345{i:03d})" for i in range(self.block_lines)]
        return ("\r\n".join(lines) + "\r\n!\r\n").encode("ascii")

    def expected(self) -> dict[str, tuple[float, str]]:
        """channel -> (value, unit) the driver must produce with the default read kinds."""
        a, t1, t2 = self._energy()
        if self.profile in ("neva", "energomera"):   # these reply with 2 decimals of kWh
            a, t1, t2 = round(a, 2), round(t1, 2), round(t2, 2)
        if self.profile == "neva":
            return {"A.abs": (round(a * 1000, 6), "Wh"), "A.abs.T1": (round(t1 * 1000, 6), "Wh"),
                    "A.abs.T2": (round(t2 * 1000, 6), "Wh"), "A.abs.T3": (0.0, "Wh"), "A.abs.T4": (0.0, "Wh"),
                    "P": (5.3 + self.n, "W"), "PF.L1": (0.717, ""), "T.meter": (29.0, "°C")}
        if self.profile == "energomera":
            out = {"A+": (round(a * 1000, 6), "Wh"), "A+.T1": (round(t1 * 1000, 6), "Wh"),
                   "A+.T2": (round(t2 * 1000, 6), "Wh")}
            out.update({f"A+.T{i}": (0.0, "Wh") for i in (3, 4, 5)})
            out.update({f"U.L{i + 1}": (round(u, 2), "V") for i, (u, _) in enumerate(self._phases())})
            out.update({f"I.L{i + 1}": (round(c, 3), "A") for i, (_, c) in enumerate(self._phases())})
            out["F"] = (49.97, "Hz")
            return out
        out = {"A+": (round(a * 1000, 6), "Wh"), "A+.T1": (round(t1 * 1000, 6), "Wh"),
               "A+.T2": (round(t2 * 1000, 6), "Wh"), "A-": (12500.0, "Wh"),
               "1.8.0*12": (round((a - 100) * 1000, 6), "Wh"), "F": (50.0, "Hz"), "F.F": (0.0, "")}
        for i, (u, cur) in enumerate(self._phases()):
            out[f"U.L{i + 1}"] = (round(u, 1), "V")
            out[f"I.L{i + 1}"] = (round(cur, 2), "A")
        out["0.0.0"] = (float(self.address or self.serial), "")
        out.update({f"0.9.{i}": (float(f"12345{i:03d}"), "") for i in range(self.block_lines)})
        return out

    def register(self, address: str) -> str | None:
        """The R1 reply body for ``address`` (None: unknown address)."""
        a, t1, t2 = self._energy()
        phases = self._phases()
        if self.profile == "neva":
            return {
                "0F0880FF": f"0F0880FF({a:09.2f},{t1:09.2f},{t2:09.2f},000000.00,000000.00)",
                "100700FF": f"100700FF({5.3 + self.n:07.1f})", "2107FFFF": "2107FFFF(00.717)",
                "600900FF": "600900FF(029)",
            }.get(address)
        if self.profile == "energomera":
            return {
                "ET0PE": f"ET0PE({a:.2f})\r\n({t1:.2f})\r\n({t2:.2f})\r\n(0.00)\r\n(0.00)\r\n(0.00)\r\n",
                "VOLTA": "VOLTA" + "".join(f"({u:.2f})\r\n" for u, _ in phases),
                "CURRE": "CURRE" + "".join(f"({c:.3f})\r\n" for _, c in phases),
                "FREQU": "FREQU(49.97)\r\n", "400D": "400D(49.97)", "5003": f"5003({self.serial})",
            }.get(address)
        return None

    # protocol ----------------------------------------------------------------------------------------
    def _msg(self, head: bytes) -> bytes:
        return iec.encode_message(head, self.checksum)

    def handle(self, kind: str, data: bytes) -> bytes | None:
        """``kind``: "sign_on" (data = address), "option" (data = V Z Y), "command" (the SOH message),
        "ack", "nak". Returns the reply bytes, or None for no reply."""
        if kind == "sign_on":
            self.state = "ident"
            self.sessions += 1
            manufacturer, ident = _MANUFACTURER[self.profile]
            return f"/{manufacturer}{self.baud_char}{ident}\r\n".encode("ascii")
        if kind == "option" and self.state == "ident":
            mode = data[2:3]
            if mode == b"0":
                self.state = "idle"
                return self._msg(b"\x02" + self.readout_block() + b"\x03")
            if mode == b"1":
                self.state = "prog"
                return self._msg(b"\x01P0\x02(" + self.serial.encode() + b")\x03")
            return None
        if kind == "command":
            cmd = data[1:3]
            if cmd == b"B0":
                self.state = "idle"
                return None
            body = data[4:-2] if data[3:4] == b"\x02" else b""
            if cmd == b"P1" and self.state in ("prog", "auth"):
                ok = body == b"(" + self.password.encode() + b")"
                self.state = "auth" if ok else "prog"
                return b"\x06" if ok else b"\x15"
            if cmd == b"R1" and (self.state == "auth" or (self.state == "prog" and not self.password)):
                return self._read(body.decode("ascii", "replace"))
        return None

    def _read(self, body: str) -> bytes:
        address = body.split("(", 1)[0]
        if address == "GROUP":
            inner = body[len("GROUP("):-1]
            parts = [p.split("(", 1)[0] for p in inner.split(")") if p]
            text = "".join(self.register(p) or f"{p}(E12)" for p in parts)
        else:
            text = self.register(address) or "(01)"
        return self._msg(b"\x02" + text.encode("ascii") + b"\x03")


class SimIecBus:
    """Several meters on one bus: splits the request stream, routes sign-ons, injects faults."""

    def __init__(self, meters: Iterable[SimIecMeter], *, parity: bool = False) -> None:
        self.meters = list(meters)
        self.parity = parity   # a transparent modem: the 8th bit carries even parity both ways
        self.current: SimIecMeter | None = None
        self.requests = 0
        self.replies = 0
        self._buf = bytearray()
        self._faults: list[str] = []
        self._last_reply = b""

    def inject(self, fault: str, count: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        self._faults += [fault] * count

    def _route(self, address: str) -> SimIecMeter | None:
        for m in self.meters:
            if m.address == address or (address == "" and len(self.meters) == 1):
                return m
        return None

    def feed(self, data: bytes) -> list[bytes]:
        """Bytes from the master -> reply byte strings to send (in order)."""
        if self.parity:
            data = iec.strip_parity(data)
        self._buf += data
        out: list[bytes] = []
        while True:
            item = self._next()
            if item is None:
                break
            reply = self._dispatch(*item)
            if reply is not None:
                out.append(iec.add_parity(reply) if self.parity else reply)
        return out

    def _next(self) -> tuple[str, bytes] | None:
        buf = self._buf
        while buf and buf[0] not in (0x2F, 0x06, 0x15, 0x01):
            del buf[:1]  # noise between messages
        if not buf:
            return None
        first = buf[0]
        if first == 0x2F:
            end = buf.find(b"!")
            if end < 0:
                return None
            address = bytes(buf[2:end]).decode("ascii", "replace")
            if buf[end + 1:end + 3] == b"\r\n":
                del buf[:end + 3]
                return ("sign_on", address.encode())
            if len(buf) < end + 2:
                return None
            del buf[:end + 1]   # Energomera: a command follows the "!" at once
            return ("direct_sign_on", address.encode())
        if first == 0x15:
            del buf[:1]
            return ("nak", b"")
        if first == 0x06:
            if len(buf) < 6:   # the simulator sends no partial blocks, so a lone ACK never comes
                return None
            item = bytes(buf[1:4])
            del buf[:6]
            return ("option", item)
        end = -1
        for i in range(1, len(buf)):
            if buf[i] in (0x03, 0x04):
                end = i
                break
        if end < 0 or len(buf) < end + 2:
            return None
        frame = bytes(buf[:end + 2])
        del buf[:end + 2]
        return ("command", frame)

    def _dispatch(self, kind: str, data: bytes) -> bytes | None:
        self.requests += 1
        if kind in ("sign_on", "direct_sign_on"):
            self.current = self._route(data.decode())
            if self.current is None:
                return None
            if kind == "direct_sign_on":
                self.current.state = "direct"
                self.current.sessions += 1
                return None
        meter = self.current
        if meter is None:
            return None
        if kind == "nak":
            reply = self._last_reply or None
        elif kind == "command" and meter.state == "direct":
            meter.state = "idle"
            reply = meter._read(data[4:-2].decode("ascii", "replace")) if data[1:3] == b"R1" else None
        else:
            reply = meter.handle(kind, data)
        if reply is None:
            return None
        self._last_reply = reply
        if self._faults and reply[:1] in (b"\x02", b"\x01", b"/"):
            fault = self._faults.pop(0)
            if fault == "silence":
                return None
            if fault == "crc":
                reply = reply[:-1] + bytes((reply[-1] ^ 0x01,))
            elif fault == "garbage":
                reply = b"\x7f\x00" + reply
            elif fault == "nak":
                reply = b"\x15"
        self.replies += 1
        return reply


# ------------------------------------------------------------------------------------------- transports


async def serve_tcp(bus: SimIecBus, host: str, port: int, *, latency: float = 0.0) -> asyncio.Server:
    """A transparent converter in front of the bus: no baud switch, requests answered in order."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            for reply in bus.feed(data):
                if latency:
                    await asyncio.sleep(latency)
                writer.write(reply)
                await writer.drain()

    return await serve_connections(session, host, port)


class IecPtySim(PtyPair):
    """Serve ``bus`` on a pseudo-terminal. With ``check_baud`` the meter listens at 300 Bd (or
    ``idle_baud``) until an option select moves it to the proposed speed, and back after the session; a
    request arriving while the terminal runs at another speed is ignored, as garbled bytes would be."""

    def __init__(self, bus: SimIecBus, *, latency: float = 0.0, check_baud: bool = False,
                 idle_baud: int = 300, link: str | None = None) -> None:
        self.bus = bus
        self.latency = latency
        self.check_baud = check_baud
        self.idle_baud = idle_baud
        self.meter_baud = idle_baud
        self.wrong_speed = 0          # requests ignored because the terminal ran at another speed
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        super().__init__(link=link, name="iec-sim-pty")

    def _tty_speed(self) -> int | None:
        speed = termios.tcgetattr(self._slave)[5]
        for baud, const in _TERMIOS_SPEED.items():
            if const == speed:
                return baud
        return None

    def _received(self, data: bytes) -> None:
        # A sign-on must come at the idle speed and, once switched, requests at the session's speed. The
        # option select itself is not checked: the client switches right after it has left.
        if self.check_baud and (data[:1] == b"/" or self.meter_baud != self.idle_baud) and \
                self._tty_speed() != self.meter_baud:
            self.wrong_speed += 1
            return
        self._queue.put_nowait(data)

    async def _serve(self) -> None:
        while True:
            data = await self._queue.get()
            for reply in self.bus.feed(data):
                meter = self.bus.current
                # The meter answers an option select at the new speed; the client switches after its ACK
                # has left, so reply only after the standard's minimum reaction time (200 ms).
                if self.check_baud and meter is not None and meter.state in ("prog", "idle") and \
                        reply[:1] in (b"\x01", b"\x02") and self.meter_baud == self.idle_baud:
                    self.meter_baud = iec.BAUD_CHARS[meter.baud_char]
                    await asyncio.sleep(max(self.latency, 0.2))
                    if self._tty_speed() != self.meter_baud:
                        self.wrong_speed += 1
                        continue
                elif self.latency:
                    await asyncio.sleep(self.latency)
                self._write(reply)
            meter = self.bus.current
            if meter is not None and meter.state == "idle" and not self._queue.qsize():
                self.meter_baud = self.idle_baud   # session over (readout sent or B0)


# ------------------------------------------------------------------------------------------------ CLI


def _addresses(text: str) -> list[str]:
    out = [a.strip() for a in text.split(",")]
    try:
        for a in out:
            iec.check_address(a)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"addresses must be distinct, got {text!r}")
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``pollerd sim iec62056 ...``."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=host_port, metavar="HOST:PORT", help="listen on TCP (port 0: a free port)")
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal")
    p.add_argument("--link", metavar="PATH", help="with --pty: make PATH a symlink to the pty device")
    p.add_argument("--addresses", type=_addresses, default=["00000001"], metavar="A,B",
                   help="device addresses of the simulated meters (default 00000001; '' = point to point)")
    p.add_argument("--profile", choices=sorted(_CHECKSUM), default="generic", help="meter family")
    p.add_argument("--password", default=None, help="P1 password (default: the profile's factory password)")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each reply")
    p.add_argument("--parity-bit", action="store_true", help="TCP: send/expect even parity in the 8th bit")
    p.add_argument("--check-baud", action="store_true",
                   help="pty: answer only at the right speed (300 Bd idle, the proposed speed in a session)")


async def main(args: argparse.Namespace) -> int:
    meters = [SimIecMeter(a, profile=args.profile, n=i + 1, password=args.password)
              for i, a in enumerate(args.addresses)]
    bus = SimIecBus(meters, parity=args.parity_bit)
    names = ",".join(args.addresses)
    await run_until_signal(
        "iec62056", f"addresses {names}", tcp=args.tcp,
        serve=lambda host, port: serve_tcp(bus, host, port, latency=args.latency),
        pty=lambda: IecPtySim(bus, latency=args.latency, check_baud=args.check_baud, link=args.link))
    print(f"iec62056 sim stopped: {bus.requests} requests, {bus.replies} replies", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="pollerd sim iec62056")
    configure_parser(parser)
    sys.exit(asyncio.run(main(parser.parse_args())))
