"""`pollerd sim PROTOCOL` and `pollerd decode PROTOCOL`: the per-protocol tools, each a module named in its
catalog (pollerd.sim.TOOLS, pollerd.decode.TOOLS) that configures its own sub-parser."""

from __future__ import annotations

import argparse
import asyncio
import importlib


def configure_sim(p: argparse.ArgumentParser) -> None:
    from ..sim import TOOLS
    sub = p.add_subparsers(dest="sim_protocol", required=True)
    for proto, (module, text) in TOOLS.items():
        importlib.import_module(module).configure_parser(sub.add_parser(proto, help=text))


def run_sim(args: argparse.Namespace) -> int:
    from ..sim import TOOLS
    return int(asyncio.run(importlib.import_module(TOOLS[args.sim_protocol][0]).main(args)))


def has_decoders() -> bool:
    from ..decode import TOOLS
    return bool(TOOLS)


def configure_decode(p: argparse.ArgumentParser) -> None:
    from ..decode import TOOLS
    sub = p.add_subparsers(dest="decode_protocol", required=True)
    for proto, module in TOOLS.items():
        importlib.import_module(module).configure_parser(sub.add_parser(proto))


def run_decode(args: argparse.Namespace) -> int:
    from ..decode import TOOLS
    return int(importlib.import_module(TOOLS[args.decode_protocol]).run(args))
