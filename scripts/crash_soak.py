#!/usr/bin/env python3
"""Longer crash-safety and outage runs than the test suite does (same harness: tests/crash_harness.py).

    python scripts/crash_soak.py [--rounds 200] [--seed N] [--fail-rate 0.3] [--backlog 1000000] [--meters 3]

Kills `pollerd run` with SIGKILL at random moments (--rounds times) while it polls simulated Mercury 230
meters and forwards to a local upstream that fails --fail-rate of the requests; then lets it drain and checks
that upstream's de-duplicated set equals the store's, value for value. Then (--backlog > 0) an outage: upstream
answers 503 while --backlog readings queue up, comes back, and everything must drain in order per meter; the
daemon's RSS is printed. Exit status 0 when every check held. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from crash_harness import crash_rounds, outage


async def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    with tempfile.TemporaryDirectory(prefix="pollerd-crash-") as tmp:
        work = Path(tmp)
        if args.rounds:
            (work / "crash").mkdir()
            await crash_rounds(work / "crash", rounds=args.rounds, seed=seed, fail_rate=args.fail_rate,
                               per_converter=args.meters)
        if args.backlog:
            (work / "outage").mkdir()
            res = await outage(work / "outage", backlog=args.backlog, batch_size=args.batch_size)
            growth = max(res.rss_peak_outage_kib, res.rss_peak_drain_kib) - res.rss_start_kib
            print(f"outage: RSS growth {growth} KiB over the start ({res.rss_start_kib} KiB)")
    print("all checks held")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200, help="SIGKILL rounds (0: skip)")
    p.add_argument("--seed", type=int, default=None, help="repeat a run (printed at the start)")
    p.add_argument("--fail-rate", type=float, default=0.3, help="share of upstream requests that fail")
    p.add_argument("--meters", type=int, default=3, help="simulated meters per converter (2 converters)")
    p.add_argument("--backlog", type=int, default=1_000_000, help="readings queued during the outage (0: skip)")
    p.add_argument("--batch-size", type=int, default=2000, help="sink batch_size during the outage drain")
    sys.exit(asyncio.run(main(p.parse_args())))
