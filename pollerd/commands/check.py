"""`pollerd check` (is this config valid, and what does it describe) and `pollerd version` (what this
install runs on)."""

from __future__ import annotations

import argparse
import sys

import orjson

from .. import __version__
from .common import load


def configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("config")


def run_check(args: argparse.Namespace) -> int:
    from .summary import summary
    cfg = load(args.config)
    print(summary(cfg))
    enabled = [m for m in cfg.meters if m.enabled]
    if not enabled:
        print("warning: no enabled meters: the daemon would poll nothing")
    if enabled and not cfg.sinks:
        print("warning: no sinks: readings stay on this gateway (the local API and `pollerd readings` only)")
    print(f"{args.config}: OK")
    return 0


def run_version(args: argparse.Namespace) -> int:
    import aiohttp
    import aiosqlite

    from ..protocols.crc import crc_extension_in_use
    try:
        import serial_asyncio_fast as sa
        serial_name = f"pyserial-asyncio-fast {getattr(sa, '__version__', '?')}"
    except ImportError:  # pragma: no cover
        serial_name = "pyserial-asyncio"
    print(f"pollerd {__version__}")
    print(f"python {sys.version.split()[0]}")
    print(f"crcmod C extension: {'in use' if crc_extension_in_use() else 'NOT in use (pure Python, slower)'}")
    print(f"aiohttp {aiohttp.__version__}, aiosqlite {aiosqlite.__version__}, {serial_name}, "
          f"orjson {orjson.__version__}")
    return 0
