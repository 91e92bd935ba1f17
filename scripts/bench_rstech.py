#!/usr/bin/env python3
"""rstech cloud source: readings/s ingested from a fake server, and the number of requests it costs.

A helper process serves the fake RS-Tech API (pollerd/sim/rstech.py) with --stations БК stations of --hours
hourly records (4 channels each). The real driver polls it once (first read of every station: sign-in, the
station list, the dictionaries, then every station's hourly archive, per_page = 1000) and the readings are
written into a real Store (SQLite, WAL, synchronous=FULL) and committed. Then two more cycles: one with
nothing new (every station skipped: no communication session since) and one with one new hour at every
station.

    python scripts/bench_rstech.py [--stations 1000] [--hours 24] [--runs 3] [--commit-interval 0]

Prints, per run: readings, seconds for poll and for the store commit, readings/s end to end, and the
driver's request count next to the pages the server served (they must be equal, plus sign-in/sign-out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SERVER = r"""
import asyncio, sys
from pollerd.sim.rstech import RstechServer, hourly_account

async def main(stations, hours, end):
    srv = RstechServer(password="bench-password")
    hourly_account(srv, stations=stations, hours=hours, end=end)
    print(await srv.start(), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
"""


def stats(url: str, **q: object) -> dict:
    qs = "&".join(f"{k}={v}" for k, v in q.items())
    with urllib.request.urlopen(f"{url}/_stats?{qs}", timeout=30) as r:
        return json.loads(r.read())


async def run_once(url: str, tmp: Path, stations: int, hours: int, end: int, commit_interval: float) -> None:
    from pollerd.config import load_config
    from pollerd.drivers.base import CloudDriverContext
    from pollerd.drivers.rstech import RstechDriver
    from pollerd.metrics import Registry
    from pollerd.state import MeterState
    from pollerd.store import Store

    cfg = tmp / "pollerd.toml"
    cfg.write_text(f'[[meters]]\nname = "acct"\nprotocol = "rstech"\nurl = "{url}"\nemail = "api@local.net"\n'
                   f'password = "bench-password"\nread = ["hourly"]\ninterval_time = "1h"\n'
                   f'data_polling_length = "2d"\n')
    mc = load_config(cfg, environ={}).meters[0]
    db = tmp / "bench.db"
    db.unlink(missing_ok=True)
    store = await Store.open(db, commit_interval=commit_interval)
    clock = [float(end + 60)]
    drv = RstechDriver(CloudDriverContext(mc, MeterState(mc.name, mc.protocol, "", 0, 3600.0), Registry(),
                                          lambda: clock[0], logging.getLogger("bench"), store))
    try:
        for label in ("first read", "nothing new", "one new hour"):
            if label == "one new hour":
                stats(url, add_hour=end + 3600)
                clock[0] = end + 3600 + 60
            before = stats(url)
            req0 = drv.session.requests
            t0 = time.perf_counter()
            res = await drv.poll(int(clock[0]))
            t1 = time.perf_counter()
            await store.write(res.readings, res.events)
            for k, v in res.state:
                await store.set_state(k, v)
            t2 = time.perf_counter()
            after = stats(url)
            assert res.ok, res.error
            pages = after["pages_served"] - before["pages_served"]
            signs = after["sign_ins"] - before["sign_ins"]
            reqs = drv.session.requests - req0
            n = len(res.readings)
            rate = f"{n / (t2 - t0):9.0f} readings/s" if n else "            -"
            print(f"  {label:13s}: {n:6d} readings, poll {t1 - t0:6.2f} s + store {t2 - t1:5.2f} s -> {rate}; "
                  f"requests {reqs} = pages {pages} + sign-in {signs}"
                  + ("" if reqs == pages + signs else "  ** MISMATCH **"))
        _, total = await store.query_readings(meter="acct:1", per_page=1)
    finally:
        await drv.close()
        await store.close()
    final = stats(url)
    print(f"  station 1 holds {total} readings; server: max requests in flight {final['max_in_flight']}, "
          f"401 replies {final['rejected']}, sign-outs {final['sign_outs']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--commit-interval", type=float, default=0.0,
                    help="the store's commit_interval; the daemon's default 1 s adds up to 1 s of batching wait")
    a = ap.parse_args()
    end = int(time.time()) // 3600 * 3600 - 3600
    print(f"rstech: {a.stations} stations x {a.hours} hourly records x 4 channels "
          f"= {a.stations * a.hours * 4} readings on the first read; python {sys.version.split()[0]}")
    for run in range(1, a.runs + 1):
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(a.stations), str(a.hours), str(end)],
                                stdout=subprocess.PIPE, text=True)
        try:
            url = proc.stdout.readline().strip()  # type: ignore[union-attr]
            print(f"run {run}:")
            with tempfile.TemporaryDirectory() as tmp:
                asyncio.run(run_once(url, Path(tmp), a.stations, a.hours, end, a.commit_interval))
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
