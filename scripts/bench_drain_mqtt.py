#!/usr/bin/env python3
"""Drain rate of a backlog through the real Forwarder + MqttPushClient to a local Mosquitto (QoS 1).

    python scripts/bench_drain_mqtt.py [--readings 50000] [--batches 100,500,2000] [--payloads reading,batch]

Starts mosquitto on a free 127.0.0.1 port (its own config in a temporary directory), fills a fresh store
with --readings readings of 50 meters x 14 channels (as an outage would leave them) and times one forwarder
per (payload, batch size) from cursor 0 until the sink's cursor reaches the last seq — i.e. until the broker
has PUBACKed every message. With payload "batch" the topic is pollerd/{gateway}/{meter}: one message per
meter per batch. Nobody subscribes, so the broker only stores and acknowledges. Prints readings/s, messages/s
and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
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
from pollerd.push.mqtt import MqttPushClient
from pollerd.push.mqtt_options import parse_options
from pollerd.state import SinkState
from pollerd.store import Store

NODELAY = False      # --broker-nodelay: mosquitto's set_tcp_nodelay (off by default in mosquitto 2.0)


def start_broker(tmp: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp / "mosquitto.conf"
    conf.write_text(("user root\n" if os.geteuid() == 0 else "") + f"listener {port} 127.0.0.1\n"
                    "allow_anonymous true\npersistence false\nlog_type error\n"
                    + ("set_tcp_nodelay true\n" if NODELAY else ""), encoding="utf-8")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("mosquitto did not start")


async def drain(store: Store, url: str, payload: str, batch_size: int, name: str) -> tuple[float, int]:
    raw = {"payload": payload}
    if payload == "batch":
        raw["topic"] = "pollerd/{gateway}/{meter}"
    sink = SinkConfig(name=name, type="mqtt", url=url, batch_size=batch_size, timeout=60.0, linger=0.0,
                      options=parse_options(raw, "."))
    client = MqttPushClient(sink, "bench-gw")
    messages = 0
    real_encode = client.encode

    def counting(batch):  # type: ignore[no-untyped-def]
        nonlocal messages
        out = real_encode(batch)
        messages += len(out)
        return out

    client.encode = counting  # type: ignore[method-assign]
    last = await store.last_seq()
    fwd = Forwarder(store, client, sink, SinkState(name, "mqtt"), Registry())
    t0 = time.perf_counter()
    task = asyncio.create_task(fwd.run())
    try:
        while await store.cursor(name) < last:  # noqa: ASYNC110 - the cursor is in SQLite; no event to wait on
            await asyncio.sleep(0.02)
        return time.perf_counter() - t0, messages
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await client.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pollerd-drain-mqtt-") as tmp:
        broker, port = start_broker(Path(tmp))
        try:
            store = await Store.open(Path(tmp) / "drain.db", commit_interval=0.0)
            try:
                await fill(store, args.readings)
                print(f"backlog: {args.readings} readings; mosquitto pid {broker.pid} on 127.0.0.1:{port}")
                for payload in args.payloads.split(","):
                    for b in [int(x) for x in args.batches.split(",")]:
                        dt, msgs = await drain(store, f"mqtt://127.0.0.1:{port}", payload, b, f"{payload}-{b}")
                        print(f"payload {payload:<7} batch_size {b:>5}: {args.readings / dt:>9,.0f} readings/s, "
                              f"{msgs / dt:>8,.0f} messages/s ({dt:.2f} s)")
            finally:
                await store.close()
        finally:
            broker.terminate()  # our own child, by handle
            broker.wait(10)
    print(f"peak RSS of the forwarding process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=50_000)
    p.add_argument("--batches", default="100,500,2000")
    p.add_argument("--payloads", default="reading,batch")
    p.add_argument("--broker-nodelay", action="store_true",
                   help="set_tcp_nodelay true in the broker: its PUBACKs are not held back by Nagle")
    a = p.parse_args()
    NODELAY = a.broker_nodelay
    asyncio.run(main(a))
