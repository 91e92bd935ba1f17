"""`pollerd run`: the daemon in the foreground (what systemd starts)."""

from __future__ import annotations

import argparse
import asyncio

from .common import load, state_dir


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", required=True)
    p.add_argument("--state-dir", help="default: $STATE_DIRECTORY or /var/lib/pollerd")


def run(args: argparse.Namespace) -> int:
    from ..daemon import Daemon, install_signal_handlers
    cfg = load(args.config)
    sd = state_dir(args)

    async def main() -> int:
        d = Daemon(cfg, sd)
        install_signal_handlers(d)
        return await d.run()

    return asyncio.run(main())
