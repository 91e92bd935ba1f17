#!/usr/bin/env python3
"""Server time and weight of the status pages at 1,000 meters (issue 16 budget: the overview in <= 50 ms,
every page <= 150 KB with its CSS and script).

    python scripts/bench_web.py [--meters 1000] [--lines 20] [--requests 200]

Serves the real app (pollerd.api.make_app) on 127.0.0.1 with a runtime of ``--meters`` meters in mixed
states on ``--lines`` lines and two sinks, and a store holding one meter's day of current values (every
channel of a Mercury 230 each minute) and 7 days of 30-minute load profile (``--fill-day``: and a day of every meter's cycles). The server time is measured by a
middleware around the handler (what the gateway's CPU spends; the client's share is left out); p50/p95 over
``--requests`` requests of the overview and of its live part (what the page re-fetches every 5 s), and of
one meter's page.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web

from pollerd.api import make_app
from pollerd.metrics import Registry
from pollerd.model import Reading
from pollerd.state import LineState, MeterState, Runtime, SinkState
from pollerd.store import Store

CHANNELS = ([f"{e}{t}" for e in ("A+", "A-", "R+", "R-") for t in ("", ".T1", ".T2", ".T3", ".T4")]
            + [f"{b}{p}" for b in ("P", "Q", "S", "PF") for p in ("", ".L1", ".L2", ".L3")]
            + [f"{b}.L{i}" for b in ("U", "I") for i in (1, 2, 3)]
            + ["angle.L1-L2", "angle.L1-L3", "angle.L2-L3", "F", "T.meter"])


def runtime(n: int, lines: int, now: float) -> Runtime:
    rt = Runtime("bench-gw", started=now - 86400)
    for k in range(lines):
        rt.lines[f"line{k}"] = LineState(f"line{k}", "tcp", connected=k % 7 != 3, exchanges=10_000 + k,
                                         bus_time=3000.0, last_error=None if k % 7 != 3 else "connection refused")
    for i in range(n):
        ms = MeterState(f"meter-{i:04d}", "mercury230" if i % 3 else "modbus", f"line{i % lines}", i % 240 + 1,
                        900.0, last_poll=now - i % 900, last_ok=now - i % 900, polls=96, readings=96 * 44,
                        identity={"serial": f"{41000000 + i}"})
        if i % 50 == 7:
            ms.consecutive_failures, ms.last_error = 2, f"meter-{i:04d}: no complete reply within 0.3s to [01 08 11]"
        rt.meters[ms.name] = ms
    rt.sinks["up"] = SinkState("up", "http", lag_rows=1200, lag_seconds=40.0, last_success=now - 5)
    rt.sinks["mqtt"] = SinkState("mqtt", "mqtt", failing_since=now - 30, last_error="connection refused")
    return rt


async def fill_day(store: Store, rt: Runtime, now: int, period: int = 900) -> int:
    """A day of every meter's cycles (all channels every ``period``), its 30-minute profile and yesterday's
    daily archive: what a gateway's store holds, so the per-meter pages walk a realistic ts-led index."""
    names = list(rt.meters)
    n = 0
    for k in range(86400 // period, 0, -1):
        ts = now - k * period
        rows = [Reading(m, ch, "current", ts + i % period, 1000.0 + k, "W") for i, m in enumerate(names)
                for ch in CHANNELS]
        if k % (1800 // period) == 0:
            rows += [Reading(m, ch, "profile", ts // 1800 * 1800, 400.0, "Wh") for m in names
                     for ch in ("A+", "A-", "R+", "R-")]
        await store.write(rows)
        n += len(rows)
    day = (now // 86400 - 1) * 86400
    rows = [Reading(m, ch, "daily", day, 9600.0, "Wh") for m in names
            for ch in ("A+", "A+.T1", "A+.T2", "A+.T3", "A+.T4")]
    await store.write(rows)
    return n + len(rows)


async def fill(store: Store, meter: str, now: int) -> None:
    rows = [Reading(meter, ch, "current", now - 60 * k, 1000.0 + k, "W") for k in range(1440) for ch in CHANNELS]
    start = now // 1800 * 1800 - 7 * 86400
    rows += [Reading(meter, ch, "profile", start + 1800 * k, 400.0 + k % 48, "Wh")
             for k in range(7 * 48) for ch in ("A+", "A-", "R+", "R-")]
    for i in range(0, len(rows), 5000):
        await store.write(rows[i:i + 5000])


async def measure(http: aiohttp.ClientSession, url: str, n: int, times: list[float]) -> tuple[int, int]:
    for _ in range(n):
        # X-Requested-With: as the page's script asks for the chart (the part alone)
        async with http.get(url, headers={"Accept-Encoding": "identity", "X-Requested-With": "pollerd"}) as r:
            body = await r.read()
            assert r.status == 200, (url, r.status)
    return len(body), len(gzip.compress(body, 6))


def stats(label: str, times: list[float], size: int, gz: int) -> None:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    print(f"{label:<34} server p50 {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms   "
          f"{size / 1024:6.1f} KB ({gz / 1024:5.1f} KB gzip)")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meters", type=int, default=1000)
    p.add_argument("--lines", type=int, default=20)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--fill-day", action="store_true",
                   help="also store a day of 15-minute cycles of every meter (4.2 M rows at 1,000 meters)")
    args = p.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(Path(tmp) / "bench.db")
        rt = runtime(args.meters, args.lines, now)
        if args.fill_day:
            t = time.perf_counter()
            rows = await fill_day(store, rt, int(now))
            print(f"stored {rows} readings of a day in {time.perf_counter() - t:.0f} s")
        await fill(store, "meter-0001", int(now))
        metrics = Registry()  # the counters the overview sums per line, one series per meter as in the daemon
        timeouts = metrics.counter("pollerd_reply_timeouts_total", "", ("meter",))
        frames = metrics.counter("pollerd_frame_errors_total", "", ("meter", "kind"))
        for i, name in enumerate(rt.meters):
            timeouts.inc(i % 5, meter=name)
            frames.inc(i % 3, meter=name, kind="crc")
        app = make_app(runtime=rt, store=store, metrics=metrics)
        times: list[float] = []

        @web.middleware
        async def timer(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                        ) -> web.StreamResponse:
            t = time.perf_counter()
            resp = await handler(request)
            times.append(time.perf_counter() - t)
            return resp

        app.middlewares.append(timer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        print(f"{args.meters} meters on {args.lines} lines; {args.requests} requests each "
              f"(python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        async with aiohttp.ClientSession() as http:
            static = 0
            for name in ("app.css", "app.js"):
                async with http.get(f"{base}/static/{name}", headers={"Accept-Encoding": "identity"}) as r:
                    static += len(await r.read())
            for label, path, n in (("overview / (first 250 meters)", "/", args.requests),
                                   ("overview live part /?part=1", "/?part=1", args.requests),
                                   ("overview, failing only", "/?state=failing", args.requests),
                                   ("meter page (without the chart)", "/meters/meter-0001",
                                    max(20, args.requests // 10)),
                                   ("its profile chart, 24 h", "/meters/meter-0001/profile",
                                    max(20, args.requests // 10)),
                                   ("its profile chart, 7 d", "/meters/meter-0001/profile?range=7d",
                                    max(20, args.requests // 10)),
                                   ("report, 7 days x 10 meters", "/reports?" + "&".join(
                                       f"meter=meter-{i:04d}" for i in range(10)), max(10, args.requests // 20))):
                await measure(http, base + path, 3, [])  # warm up
                times.clear()
                size, gz = await measure(http, base + path, n, times)
                stats(label, times, size, gz)
            print(f"{'static (app.css + app.js)':<34} {static / 1024:.1f} KB, cached by the browser")
        await runner.cleanup()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
