"""`pollerd readings`: the stored readings, straight from the database file; by default the newest screenful,
oldest of them first (what a commissioning engineer wants after `pollerd poll`)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import shutil
import sys
import time
from pathlib import Path

from .common import STATE_DIR_HELP, reading_line, state_dir

TIME_HELP = ("UTC date/time (2026-12-03, '2026-12-03 14:00', an ISO offset such as +03:00 is honoured), "
             "unix seconds, or a duration before now (15m, 2h, 7d)")


def parse_when(text: str, now: float | None = None) -> int:
    """A moment typed by a person -> unix seconds. Naive dates and times are UTC, as the store keeps them."""
    from ..units import parse_duration
    s = text.strip()
    if re.fullmatch(r"\d{9,}", s):  # unix seconds (a duration of 9+ digits of seconds is not what anyone types)
        return int(s)
    if not re.fullmatch(r"\d{4}-\d\d-\d\d.*", s):
        try:
            return int((time.time() if now is None else now) - parse_duration(s))
        except ValueError:
            pass
    try:
        moment = dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: {TIME_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return n


def screenful() -> int:
    return max(5, shutil.get_terminal_size().lines - 2)  # room for the prompt and the "more" note


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", metavar="DIR", help=STATE_DIR_HELP + "; the database is DIR/pollerd.db")
    p.add_argument("--db", metavar="FILE", help="path of the database (default: STATE_DIR/pollerd.db)")
    p.add_argument("--meter", help="only this meter (its name in the config)")
    p.add_argument("--channel", help="only this channel, e.g. A+ or U.L1")
    p.add_argument("--archive", help="only this archive: current, profile, hourly, daily, monthly, yearly")
    p.add_argument("--since", type=parse_when, metavar="TIME", help="readings at or after TIME: " + TIME_HELP)
    p.add_argument("--until", type=parse_when, metavar="TIME", help="readings before TIME (same forms)")
    p.add_argument("--limit", type=_limit, metavar="N", help="the newest N readings, oldest of them first "
                   "(default on a terminal: a screenful; into a pipe or file: all; 0: all)")
    p.add_argument("--json", action="store_true", help="JSON lines")


def run(args: argparse.Namespace) -> int:
    from ..store import Store
    db = Path(args.db) if args.db else state_dir(args) / "pollerd.db"
    # A screenful only where someone reads it: a script reading a pipe would otherwise lose rows silently.
    limit = (screenful() if sys.stdout.isatty() else 0) if args.limit is None else args.limit
    where = {"meter": args.meter, "channel": args.channel, "archive": args.archive, "ts_from": args.since,
             "ts_to": args.until}

    async def main() -> int:
        store = await Store.open_readonly(db)
        try:
            printed = 0
            if limit:
                rows = await store.newest_readings(limit + 1, **where)
                more = len(rows) > limit
                for r in rows[-limit:]:
                    print(reading_line(r, args.json))
                printed = len(rows)
                if more:
                    print(f"(the newest {limit}; older ones with --limit N, --since TIME, or --limit 0 for all)",
                          file=sys.stderr)
            else:
                # By key, not by page: the daemon prunes and backfills meanwhile, which shifts pages.
                after = None
                while rows := await store.readings_after(after, limit=1000, **where):
                    for r in rows:
                        print(reading_line(r, args.json))
                    printed += len(rows)
                    last = rows[-1]
                    after = (last.ts, last.meter, last.channel, str(last.archive))
            if not printed and args.meter is not None:
                known = await store.meters_with_readings()
                if args.meter not in known:
                    print(f"pollerd readings: no meter named {args.meter!r} in {db} (meters with readings: "
                          f"{', '.join(known) or 'none'})", file=sys.stderr)
                    return 1
        finally:
            await store.close()
        return 0

    return asyncio.run(main())
