"""`pollerd poll` (one cycle of one meter now, for commissioning) and `pollerd raw` (one HEX frame to a
meter and its reply): both talk to a meter directly, without the daemon."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

import orjson

from ..errors import ConfigError
from ..text import about
from .common import add_config, load, reading_line


def configure_poll(p: argparse.ArgumentParser) -> None:
    add_config(p)
    p.add_argument("meter", help="the meter's name in the config")
    p.add_argument("--json", action="store_true", help="JSON lines")
    p.add_argument("--trace", action="store_true", help="print every frame on the wire to stderr: TX/RX in hex "
                   "with a timestamp and the reply time, passwords masked")


def identity_line(identity: dict[str, object]) -> str:
    """What the meter said about itself (serial, type/variant, ratios, constant): what goes into number_meter."""
    shown = {k: v for k, v in identity.items() if v is not None and v != ""}
    return "identity: " + (", ".join(f"{k} {v}" for k, v in shown.items()) if shown else "(none read)")


def run_poll(args: argparse.Namespace) -> int:
    from ..daemon import build_driver, build_lines
    from ..metrics import Registry
    from ..state import Runtime
    cfg = load(args.config)
    try:
        mc = cfg.meter(args.meter)
    except KeyError:
        names = ", ".join(m.name for m in cfg.meters) or "none"
        raise ConfigError(f"no meter named {args.meter!r} (meters: {names})", path=args.config) from None

    if args.trace:
        # The root handler passes DEBUG records of a logger that asks for them; others stay at --log-level.
        logging.getLogger("pollerd.wire").setLevel(logging.DEBUG)

    async def main() -> int:
        runtime, metrics = Runtime(cfg.gateway.name), Registry()
        line = None if mc.is_cloud else build_lines(cfg, runtime, metrics, one_shot=True)[mc.line]  # cloud: its own url
        drv = build_driver(mc, line, runtime, metrics)
        try:
            result = await drv.poll(int(time.time()))
        finally:
            try:
                await drv.close()  # also when poll raised: a cloud driver holds an HTTP session
            finally:
                if line is not None:
                    await line.close()
        # Text mode: the first line of the output. --json keeps stdout to reading and event lines (what
        # scripts parse), so the identity goes to stderr there, for the person watching.
        print(identity_line(runtime.meters[mc.name].identity), file=sys.stderr if args.json else sys.stdout)
        for r in result.readings:
            print(reading_line(r, args.json))
        for e in result.events:
            print(orjson.dumps(e.as_dict()).decode() if args.json else f"event {e.code}: {e.text}")
        if result.error:
            print(about(mc.name, result.error), file=sys.stderr)
        return 0 if result.answered else 1

    return asyncio.run(main())


def configure_raw(p: argparse.ArgumentParser) -> None:
    add_config(p)
    p.add_argument("meter", help="the meter's name in the config")
    p.add_argument("hex", nargs="+", help='the frame, e.g. "01 08 00" or 010800')


def run_raw(args: argparse.Namespace) -> int:
    from ..daemon import build_driver, build_lines
    from ..drivers.base import RawDriver
    from ..metrics import Registry
    from ..state import Runtime
    cfg = load(args.config)
    try:
        mc = cfg.meter(args.meter)
    except KeyError:
        raise ConfigError(f"no meter named {args.meter!r}", path=args.config) from None

    if mc.is_cloud:
        print(f"pollerd: {mc.name} is a {mc.protocol} cloud source; it takes no raw frames", file=sys.stderr)
        return 1

    async def main() -> int:
        runtime, metrics = Runtime(cfg.gateway.name), Registry()
        line = build_lines(cfg, runtime, metrics, one_shot=True)[mc.line]
        drv = build_driver(mc, line, runtime, metrics)
        if not isinstance(drv, RawDriver):
            print(f"pollerd: {mc.protocol} meters do not take raw frames", file=sys.stderr)
            return 1
        try:
            result = await drv.raw(" ".join(args.hex))
            await drv.close()
        finally:
            await line.close()
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0

    try:
        return asyncio.run(main())
    except ValueError as exc:
        print(f"pollerd: {exc}", file=sys.stderr)
        return 1
