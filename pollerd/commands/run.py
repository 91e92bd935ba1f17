"""`pollerd run`: the daemon in the foreground (what systemd starts)."""

from __future__ import annotations

import argparse
import asyncio

from .common import add_config, add_state_dir, load, state_dir


def configure_parser(p: argparse.ArgumentParser) -> None:
    add_config(p)
    add_state_dir(p)


def run(args: argparse.Namespace) -> int:
    from ..daemon import Daemon, install_signal_handlers
    cfg = load(args.config)
    sd = state_dir(args)

    async def main() -> int:
        d = Daemon(cfg, sd)
        install_signal_handlers(d)
        return await d.run()

    return asyncio.run(main())
