"""``pollerd sim dlms``: СПОДЭС meters speaking DLMS/COSEM over HDLC (TCP or a pty) or the IEC 62056-47 wrapper.

HDLC meters share one bus and answer only frames addressed to them (upper address 1, lower address their
physical address in the 2- or 4-byte form); the wrapper serves one meter per TCP connection (a meter on
Ethernet or GSM). The first line printed says where it listens, for scripts to parse::

    dlms sim listening on tcp 127.0.0.1:40123 hdlc meters 17=012345678
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import sys
from collections.abc import Iterable

from pollerd.errors import FrameError
from pollerd.protocols.dlms import hdlc, wrapper
from pollerd.protocols.dlms.hdlc import Deframer, HdlcServer, LinkParams, ServerAddress
from pollerd.sim.common import FramedPtySim, host_port, serve_connections, serve_framed_tcp
from pollerd.sim.dlms_meter import Association, SimSpodesMeter

__all__ = ["HdlcBus", "HdlcSplitter", "PtySim", "configure_parser", "main", "serve_hdlc_tcp", "serve_wrapper_tcp"]


def physical_address(serial: str) -> int:
    """The lower HDLC address СПОДЭС meters take from their serial number: its last four digits + 16
    (docs/protocols/dlms.md says where this comes from and how far it is confirmed)."""
    digits = "".join(ch for ch in serial if ch.isdigit())
    return int(digits[-4:] or "0") + 16


class _HdlcMeter:
    """One meter on the bus: its link per address form and its association (tied to the link: SNRM and
    DISC end it, as on a real meter)."""

    def __init__(self, meter: SimSpodesMeter, physical: int, params: LinkParams) -> None:
        self.meter = meter
        self.physical = physical
        self.links = {size: HdlcServer(ServerAddress(1, physical, size), params)
                      for size in ((2, 4) if physical < 0x80 else (4,))}
        self.assoc: Association | None = None

    def handle(self, link: HdlcServer, frame: hdlc.Frame) -> bytes | None:
        out, apdu = link.on_frame(frame)
        if frame.kind in ("SNRM", "DISC"):
            self.assoc = Association(link.client_sap or 0) if frame.kind == "SNRM" else None
        if apdu is None:
            return out
        if self.assoc is None:
            self.assoc = Association(link.client_sap or 0)
        return link.reply(self.meter.handle(apdu, self.assoc))


class HdlcBus:
    """``handle_frame(raw frame) -> reply`` for :class:`FramedPtySim` / serve_framed_tcp."""

    def __init__(self, meters: Iterable[tuple[SimSpodesMeter, int]], params: LinkParams | None = None) -> None:
        self.params = params or LinkParams(512, 512, 1, 1)
        self.meters = [_HdlcMeter(m, phys, self.params) for m, phys in meters]
        self.frames = 0
        self.bad_frames = 0
        self.silent = 0            # frames no meter answers (another address, a broken link)

    def handle_frame(self, raw: bytes) -> bytes | None:
        self.frames += 1
        try:
            frame = hdlc.parse_frame(raw[1:-1])
        except FrameError:
            self.bad_frames += 1
            return None
        for m in self.meters:
            for link in m.links.values():
                if link.addressed(frame):
                    try:
                        return m.handle(link, frame)
                    except FrameError:
                        self.bad_frames += 1
                        return None
        self.silent += 1
        return None


class HdlcSplitter:
    """Whole frames (flags included) out of the byte stream; bad frames are dropped, as a meter does."""

    def __init__(self) -> None:
        self._d = Deframer()

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[hdlc.Frame] = []
        while True:
            try:
                frames += self._d.feed(data)
                break
            except FrameError:
                data = b""
        return [hdlc.encode_frame(f.dest, f.src, f.control, f.info, f.segmented) for f in frames]


class PtySim(FramedPtySim):
    def __init__(self, bus: HdlcBus, *, latency: float = 0.0, baud: int | None = None,
                 link: str | None = None) -> None:
        super().__init__(bus, HdlcSplitter(), latency=latency, baud=baud, link=link, name="dlms sim pty")


async def serve_hdlc_tcp(bus: HdlcBus, host: str, port: int, *, latency: float = 0.0,
                         baud: int | None = None) -> asyncio.Server:
    return await serve_framed_tcp(bus, HdlcSplitter, host, port, latency=latency, baud=baud)


async def serve_wrapper_tcp(meter: SimSpodesMeter, host: str, port: int, *, latency: float = 0.0) -> asyncio.Server:
    """The wrapper: one association per connection; wPort 1 is the management logical device."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = wrapper.WrapperDeframer()
        assoc: Association | None = None
        while data := await reader.read(4096):
            try:
                pdus = frames.feed(data)
            except FrameError:
                return                     # a meter drops a connection that sends garbage
            for pdu in pdus:
                if pdu.dest != 1:
                    continue
                if assoc is None or assoc.client_sap != pdu.source:
                    assoc = Association(pdu.source)
                reply = meter.handle(pdu.apdu, assoc)
                if latency:
                    await asyncio.sleep(latency)
                writer.write(wrapper.encode_wrapper(1, pdu.source, reply))
                await writer.drain()

    return await serve_connections(session, host, port)


# ------------------------------------------------------------------------------------------------------ CLI


def _serials(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    if not out or any(not s.isdigit() for s in out) or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"serials must be distinct digit strings, got {text!r}")
    return out


def _timezone(text: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}") from None


def configure_parser(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=host_port, metavar="HOST:PORT", help="listen on TCP (port 0: a free port)")
    where.add_argument("--pty", action="store_true", help="serve HDLC on a pseudo-terminal")
    p.add_argument("--link", metavar="PATH", help="with --pty: make PATH a symlink to the pty device")
    p.add_argument("--framing", choices=("hdlc", "wrapper"), default="hdlc",
                   help="hdlc (default) or the IEC 62056-47 TCP wrapper (one meter, --tcp only)")
    p.add_argument("--serials", type=_serials, default=["012345678"], metavar="S1,S2",
                   help="serial numbers; each meter's physical address is its last 4 digits + 16")
    p.add_argument("--password", default="12345678", help="LLS password of the reader client 32")
    p.add_argument("--timezone", type=_timezone, default=dt.timezone(dt.timedelta(hours=3)), metavar="TZ",
                   help="the meters' local zone (default UTC+3)")
    p.add_argument("--max-pdu", type=int, default=512, metavar="N", help="server max PDU size (default 512)")
    p.add_argument("--max-info", type=int, default=128, metavar="N",
                   help="HDLC max information field length the meter accepts (default 128)")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each reply")
    p.add_argument("--baud", type=int, default=None, metavar="N", help="pace replies as a UART at N baud")
    p.add_argument("--clock-drift", type=float, default=0.0, metavar="SECONDS", help="meter clock minus real time")


def build(args: argparse.Namespace) -> list[tuple[SimSpodesMeter, int]]:
    return [(SimSpodesMeter(serial=s, password=args.password.encode(), timezone=args.timezone,
                            max_pdu=args.max_pdu, clock_drift=args.clock_drift), physical_address(s))
            for s in args.serials]


async def main(args: argparse.Namespace) -> int:
    if args.link and not args.pty:
        print("--link needs --pty", file=sys.stderr)
        return 2
    if args.framing == "wrapper" and args.pty:
        print("the wrapper runs over TCP only", file=sys.stderr)
        return 2
    meters = build(args)
    shown = " ".join(f"{phys}={m.serial}" for m, phys in meters)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server: asyncio.Server | None = None
    pty: PtySim | None = None
    bus = HdlcBus(meters, LinkParams(args.max_info, args.max_info, 1, 1))
    try:
        if args.tcp:
            host, port = args.tcp
            if args.framing == "wrapper":
                server = await serve_wrapper_tcp(meters[0][0], host, port, latency=args.latency)
                shown = f"1={meters[0][0].serial}"
            else:
                server = await serve_hdlc_tcp(bus, host, port, latency=args.latency, baud=args.baud)
            bound = server.sockets[0].getsockname()
            print(f"dlms sim listening on tcp {bound[0]}:{bound[1]} {args.framing} meters {shown}", flush=True)
        else:
            pty = PtySim(bus, latency=args.latency, baud=args.baud, link=args.link)
            where = pty.device + (f" (link {pty.link})" if pty.link else "")
            print(f"dlms sim listening on pty {where} hdlc meters {shown}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if pty is not None:
            pty.close()
        if server is not None:
            server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
    requests = sum(m.requests for m, _ in meters)
    print(f"dlms sim stopped: {requests} requests, {bus.bad_frames} bad frames", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - `pollerd sim dlms` is the entry point
    parser = argparse.ArgumentParser(prog="pollerd sim dlms")
    configure_parser(parser)
    sys.exit(asyncio.run(main(parser.parse_args())))
