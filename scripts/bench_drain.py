#!/usr/bin/env python3
"""Drain rate of a backlog through the real Forwarder + HttpPushClient to a local HTTP receiver.

    python scripts/bench_drain.py [--readings 200000] [--batches 500,2000,5000] [--gzip off|on|both]

Fills a fresh store with --readings readings (as an outage would leave them), starts an aiohttp receiver in
a separate process on 127.0.0.1 (it parses every body with orjson and counts the readings, as a real
upstream at least would), and times one forwarder from cursor 0 until the sink's cursor reaches the last
seq. Prints readings/s per batch size and the peak RSS of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_data import fill

from pollerd.config import SinkConfig
from pollerd.metrics import Registry
from pollerd.push.forwarder import Forwarder
from pollerd.push.http import HttpOptions, HttpPushClient
from pollerd.state import SinkState
from pollerd.store import Store

RECEIVER = r"""
import asyncio, orjson, sys
from aiohttp import web
count = 0
async def ingest(request):
    global count
    count += len(orjson.loads(await request.read())["readings"])
    return web.Response(text="ok")
async def main():
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/ingest", ingest)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""



async def drain(store: Store, url: str, batch_size: int, sink_name: str, gzip: bool = False) -> float:
    # linger 0: a short last batch must not add its wait to the measured time
    sink = SinkConfig(name=sink_name, type="http", url=url, batch_size=batch_size, timeout=30.0, linger=0.0,
                      options=HttpOptions(gzip=gzip))
    client = HttpPushClient(sink, "bench-gw")
    await client.connect()
    last = await store.last_seq()
    fwd = Forwarder(store, client, sink, SinkState(sink_name, "http"), Registry())
    t0 = time.perf_counter()
    task = asyncio.create_task(fwd.run())
    try:
        while await store.cursor(sink_name) < last:  # noqa: ASYNC110 - the cursor is in SQLite; no event to wait on
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await client.close()


async def main(args: argparse.Namespace) -> None:
    # Started (and its port read) before anything is timed, so a blocking spawn costs no measurement.
    recv = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
    try:
        port = int(recv.stdout.readline())  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/ingest"
        with tempfile.TemporaryDirectory(prefix="pollerd-drain-") as tmp:
            store = await Store.open(Path(tmp) / "drain.db", commit_interval=0.0)
            try:
                await fill(store, args.readings)
                print(f"backlog: {args.readings} readings; receiver in pid {recv.pid} on {url}")
                for gz in {"off": [False], "on": [True], "both": [False, True]}[args.gzip]:
                    for b in [int(x) for x in args.batches.split(",")]:
                        dt = await drain(store, url, b, f"bench-{b}-{'gz' if gz else 'plain'}", gzip=gz)
                        print(f"batch_size {b:>5}{' gzip' if gz else ''}: {args.readings / dt:>9,.0f} readings/s "
                              f"({dt:.2f} s)")
            finally:
                await store.close()
    finally:
        recv.terminate()  # our own child, by handle
        recv.wait(5)
    print(f"peak RSS of the forwarding process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--batches", default="500,2000,5000")
    p.add_argument("--gzip", choices=("off", "on", "both"), default="off",
                   help="send with Content-Encoding: gzip (the receiver decompresses)")
    asyncio.run(main(p.parse_args()))
