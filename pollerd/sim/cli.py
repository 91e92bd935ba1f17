"""``pollerd sim mercury230``: run simulated Mercury 230 meters on TCP or a pty until SIGINT/SIGTERM.

The first line printed says where it listens, for scripts to parse::

    mercury230 sim listening on tcp 127.0.0.1:40123 addresses 1,2,3
    mercury230 sim listening on pty /dev/pts/5 addresses 1,2,3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys

from pollerd.sim.common import host_port, run_until_signal
from pollerd.sim.mercury230 import Phase, PtySim, SimBus, SimMeter, serve_tcp


def _addresses(text: str) -> list[int]:
    try:
        out = [int(part, 0) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"addresses must be comma-separated numbers, got {text!r}") from None
    if not out or any(not 1 <= a <= 240 for a in out) or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"addresses must be distinct numbers 1..240, got {text!r}")
    return out


def _password(text: str) -> str:
    if len(text) != 6 or not text.isdigit():
        raise argparse.ArgumentTypeError("the password must be 6 decimal digits")
    return text


def _timezone(text: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r}") from None


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``pollerd sim mercury230 ...`` (``p`` is the mercury230 subparser)."""
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=host_port, metavar="HOST:PORT",
                       help="listen on TCP (port 0 picks a free port)")
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal")
    p.add_argument("--link", metavar="PATH", help="with --pty: make PATH a symlink to the pty device")
    p.add_argument("--addresses", type=_addresses, default=[1, 2, 3], metavar="1,2,3",
                   help="bus addresses of the simulated meters (default 1,2,3)")
    p.add_argument("--password", type=_password, default="111111", help="level-1 password (default 111111)")
    p.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="delay before each reply")
    p.add_argument("--baud", type=int, default=None, metavar="N",
                   help="pace replies as a UART at N baud (8N1) would")
    p.add_argument("--session-timeout", type=float, default=240.0, metavar="S",
                   help="idle seconds after which a session needs reopening (status 5)")
    p.add_argument("--refuse-group-reads", action="store_true", help="answer 08 16 with status 1")
    p.add_argument("--profile-period", type=int, default=30, metavar="MIN",
                   help="load-profile integration period in minutes (default 30)")
    p.add_argument("--profile-days", type=int, default=40, metavar="DAYS",
                   help="load-profile history held in memory 3 (default 40 days)")
    p.add_argument("--clock-drift", type=float, default=0.0, metavar="SECONDS",
                   help="meter clock minus real time (default 0)")
    p.add_argument("--timezone", type=_timezone, default=None, metavar="TZ",
                   help="the meters' local zone (default: this machine's)")


def build_bus(args: argparse.Namespace) -> SimBus:
    meters = []
    for addr in args.addresses:
        # Distinct, recognisable values per meter so a mix-up between meters shows in the data.
        phases = [Phase(230.0 + i, 400.0 + 100.0 * addr + 50.0 * i, 40.0 + 10.0 * addr - 30.0 * i) for i in range(3)]
        meters.append(SimMeter(
            addr, serial=f"{41000000 + addr:08d}", passwords={1: args.password, 2: "222222"},
            energy={1: (1_000_000.0 * addr, 0.0, 100_000.0 * addr, 0.0)}, phases=phases,
            session_timeout=args.session_timeout, refuse_group_reads=args.refuse_group_reads,
            profile_period=getattr(args, "profile_period", 30), profile_days=getattr(args, "profile_days", 40),
            clock_drift=getattr(args, "clock_drift", 0.0), timezone=getattr(args, "timezone", None)))
    return SimBus(meters)


async def main(args: argparse.Namespace) -> int:
    if args.link and not args.pty:
        print("--link needs --pty", file=sys.stderr)
        return 2
    bus = build_bus(args)
    addresses = ",".join(str(a) for a in args.addresses)
    await run_until_signal(
        "mercury230", f"addresses {addresses}", tcp=args.tcp,
        serve=lambda host, port: serve_tcp(bus, host, port, latency=args.latency, baud=args.baud),
        pty=lambda: PtySim(bus, latency=args.latency, baud=args.baud, link=args.link))
    print(f"mercury230 sim stopped: {bus.requests} requests, replies {bus.replies}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - `pollerd sim` is the entry point
    parser = argparse.ArgumentParser(prog="pollerd sim")
    configure_parser(parser)
    sys.exit(asyncio.run(main(parser.parse_args())))
