#!/usr/bin/env python3
"""RSS of the real daemon before, during and after a burst of concurrent local-API requests (issue 14, obs. 7).

Fills a store with R readings (default 200 000), starts `python -m pollerd run` on it with the API enabled and
one meter on a port nobody listens on, warms the API up with a few sequential requests of every kind, reads
VmRSS (the baseline), then sends N requests at once (default 500: full 1000-row pages of /api/readings at
random offsets and filters, /api/events, /api/meters, /metrics, /health), and reads VmRSS right after and
again after a short settle. The daemon is stopped with SIGTERM and must exit 0.

    .venv/bin/python scripts/api_burst_rss.py [--readings 200000] [--requests 500] [--bursts 3]

Target (issue 14): RSS after the burst within 10 MB of the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pollerd.model import Reading  # noqa: E402
from pollerd.store import Store  # noqa: E402

CHANNELS = ("A+", "A-", "R+", "R-", "P", "Q", "U.L1", "I.L1", "PF", "F")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> dict[str, int]:
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0])
    return vals


async def fill(db: Path, n: int, meters: int) -> None:
    store = await Store.open(db, commit_interval=0.05)
    t0 = 1_790_000_000
    batch: list[Reading] = []
    for i in range(n):
        m, rest = divmod(i, n // meters)
        batch.append(Reading(f"m{m:03d}", CHANNELS[rest % len(CHANNELS)], "profile",
                             t0 + (rest // len(CHANNELS)) * 1800, float(i), "Wh"))
        if len(batch) == 5000:
            await store.write(batch, ())
            batch = []
    if batch:
        await store.write(batch, ())
    await store.close()


def urls(base: str, n: int, readings: int, meters: int, rng: random.Random, mix: str = "all") -> list[str]:
    if mix == "light":  # no store query: what 500 connections cost by themselves
        return [f"{base}/health" if i % 2 else f"{base}/api/meters" for i in range(n)]
    out = []
    pages = max(1, readings // 1000)
    for i in range(n):
        k = i % 10
        if k < 6:
            out.append(f"{base}/api/readings?per_page=1000&page={rng.randint(1, pages)}")
        elif k == 6:
            out.append(f"{base}/api/readings?meter=m{rng.randrange(meters):03d}&channel=A%2B&per_page=1000")
        elif k == 7:
            out.append(f"{base}/api/events?per_page=1000")
        elif k == 8:
            out.append(f"{base}/metrics")
        else:
            out.append(rng.choice((f"{base}/health", f"{base}/api/meters")))
    return out


async def burst(session: aiohttp.ClientSession, batch: list[str]) -> dict[int, int]:
    async def one(url: str) -> int:
        async with session.get(url) as resp:
            await resp.read()
            return resp.status

    statuses: dict[int, int] = {}
    for st in await asyncio.gather(*(one(u) for u in batch)):
        statuses[st] = statuses.get(st, 0) + 1
    return statuses


async def drive(pid: int, base: str, args: argparse.Namespace) -> None:
    rng = random.Random(1)
    conn = aiohttp.TCPConnector(limit=0)  # all N at once: the daemon, not the client, must bound the work
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        deadline = time.monotonic() + 30
        while True:
            try:
                async with session.get(f"{base}/api/meters") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the daemon's API did not come up within 30 s")
            await asyncio.sleep(0.2)
        for u in urls(base, 40, args.readings, args.meters, rng):  # warm-up: every code path once
            await burst(session, [u])
        await asyncio.sleep(1.0)
        base_rss = rss_kb(pid)["VmRSS"]
        print(f"baseline after warm-up: RSS {base_rss / 1024:.1f} MB")
    for b in range(args.bursts):
        # A fresh client per burst, closed after it: what stays in the daemon is then its own, not the
        # state of 500 idle keep-alive connections the client still holds open.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            t = time.monotonic()
            statuses = await burst(session, urls(base, args.requests, args.readings, args.meters, rng, args.mix))
            took = time.monotonic() - t
            right_after = rss_kb(pid)
        await asyncio.sleep(args.settle)
        after = rss_kb(pid)["VmRSS"]
        print(f"burst {b + 1}: {args.requests} concurrent requests in {took:.2f} s, statuses {statuses}; "
              f"RSS right after {right_after['VmRSS'] / 1024:.1f} MB, after {args.settle:.0f} s "
              f"{after / 1024:.1f} MB ({(after - base_rss) / 1024:+.1f} MB vs baseline), "
              f"peak (VmHWM) {right_after['VmHWM'] / 1024:.1f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--meters", type=int, default=20)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--mix", choices=("all", "light"), default="all",
                    help="all: data pages, metrics, health; light: only /health and /api/meters")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after a burst before reading RSS")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pollerd-burst-") as tmp:
        state = Path(tmp)
        print(f"filling a store with {args.readings} readings ...", flush=True)
        asyncio.run(fill(state / "pollerd.db", args.readings, args.meters))
        api_port, dead_port = free_port(), free_port()
        cfg = state / "pollerd.toml"
        cfg.write_text(f'[gateway]\nname = "burst"\n\n[api]\nlisten = "127.0.0.1:{api_port}"\n\n'
                       f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {dead_port}\n\n'
                       '[[meters]]\nname = "m000"\nprotocol = "mercury230"\nline = "conv"\n'
                       'connection_address = 1\ninterval_time = "1h"\nread = ["energy"]\n')
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "pollerd", "--log-level", "ERROR", "run", "--config",
                                 str(cfg), "--state-dir", str(state)], env=env)
        try:
            asyncio.run(drive(proc.pid, f"http://127.0.0.1:{api_port}", args))
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
        print(f"daemon exit status {rc}")
        return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
