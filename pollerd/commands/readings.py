"""`pollerd readings`: the stored readings, oldest first, straight from the database file."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from .common import reading_line, state_dir


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir")
    p.add_argument("--db", help="path of the database (default: STATE_DIR/pollerd.db)")
    p.add_argument("--meter")
    p.add_argument("--channel")
    p.add_argument("--archive")
    p.add_argument("--json", action="store_true", help="JSON lines")


def run(args: argparse.Namespace) -> int:
    from ..store import Store
    db = Path(args.db) if args.db else state_dir(args) / "pollerd.db"

    async def main() -> int:
        store = await Store.open_readonly(db)
        try:
            # By key, not by page: the daemon prunes and backfills meanwhile, which shifts pages.
            after = None
            while rows := await store.readings_after(after, meter=args.meter, channel=args.channel,
                                                     archive=args.archive, limit=1000):
                for r in rows:
                    print(reading_line(r, args.json))
                last = rows[-1]
                after = (last.ts, last.meter, last.channel, str(last.archive))
        finally:
            await store.close()
        return 0

    return asyncio.run(main())
