"""`pollerd sim PROTOCOL` and `pollerd decode PROTOCOL`: the per-protocol tools, each a module named by its
protocol's catalog entry (pollerd.catalog) that configures its own sub-parser."""

from __future__ import annotations

import argparse
import asyncio
import importlib

from ..catalog import CATALOG


def configure_sim(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sim_protocol", required=True)
    for proto, spec in CATALOG.items():
        if spec.simulator is not None:
            importlib.import_module(spec.simulator.module).configure_parser(
                sub.add_parser(str(proto), help=spec.simulator.help))


def run_sim(args: argparse.Namespace) -> int:
    tool = CATALOG[args.sim_protocol].simulator
    assert tool is not None  # argparse offered only protocols with a simulator
    return int(asyncio.run(importlib.import_module(tool.module).main(args)))


def has_decoders() -> bool:
    return any(spec.decoder is not None for spec in CATALOG.values())


def configure_decode(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="decode_protocol", required=True)
    for proto, spec in CATALOG.items():
        if spec.decoder is not None:
            importlib.import_module(spec.decoder.module).configure_parser(sub.add_parser(str(proto)))


def run_decode(args: argparse.Namespace) -> int:
    from ..decode import run_guarded
    tool = CATALOG[args.decode_protocol].decoder
    assert tool is not None  # argparse offered only protocols with a decode tool
    module = importlib.import_module(tool.module)
    return run_guarded(args.decode_protocol, lambda: int(module.run(args)))
