#!/usr/bin/env python3
"""Bus efficiency: how close does pollerd keep a busy 9600-baud line to its theoretical maximum?

Simulated Mercury 230 meters sit behind one loopback TCP "converter" that behaves like the RS-485 bus behind
it: the request takes its wire time to arrive (10 bits a byte at the baud rate), the meter answers after a
fixed latency, and the reply's bytes are paced at the baud rate. pollerd's real line + driver poll the meters
back to back for a while. The theoretical maximum spends, per exchange, exactly

    (request bytes + reply bytes) * 10 / baud  +  meter latency  +  pause_time

and nothing else; efficiency = that sum over all completed exchanges / elapsed time.

    python scripts/bench_bus.py [--seconds 20] [--meters 4] [--latency 0.02] [--pause 0.005] [--baud 9600]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from pollerd.config import LineConfig, MeterConfig
from pollerd.daemon import build_driver
from pollerd.line import Line
from pollerd.metrics import Registry
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp
from pollerd.state import LineState, Runtime


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--meters", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.02, help="meter reply latency, s")
    ap.add_argument("--pause", type=float, default=0.005, help="pause_time before each request, s")
    ap.add_argument("--baud", type=int, default=9600)
    a = ap.parse_args()

    bus = SimBus([SimMeter(address=i + 1, serial=f"{10000000 + i + 1}") for i in range(a.meters)])
    server = await serve_tcp(bus, "127.0.0.1", 0, latency=a.latency, baud=a.baud)
    port = server.sockets[0].getsockname()[1]
    lc = LineConfig(name="bus", type="tcp", host="127.0.0.1", port=port)
    runtime, metrics = Runtime("bench"), Registry()
    line = Line(lc, LineState("bus", "tcp"), metrics)
    wire = [0, 0]  # exchanges completed, bytes on the wire (request + reply)
    gaps = [0.0, None]  # pollerd's own idle time between a reply and the next request beyond pause_time
    exchange = line.exchange
    clock = asyncio.get_running_loop().time

    async def counted(request, framer, **kw):  # type: ignore[no-untyped-def]
        if line.link.connected and not hasattr(line.link, "_bench"):
            write = line.link.write

            def timed_write(data: bytes) -> None:
                if gaps[1] is not None:
                    gaps[0] += max(0.0, clock() - gaps[1] - a.pause)
                write(data)

            line.link.write = timed_write  # type: ignore[method-assign]
            line.link._bench = True  # type: ignore[attr-defined]
        reply = await exchange(request, framer, **kw)
        gaps[1] = clock()
        wire[0] += 1
        wire[1] += len(request) + len(reply.data) + 3  # address + data + CRC
        return reply

    line.exchange = counted  # type: ignore[method-assign]
    drivers = []
    for i in range(a.meters):
        mc = MeterConfig(name=f"m{i + 1}", protocol="mercury230", line="bus", connection_address=i + 1,
                         waiting_time=1.0, pause_time=a.pause, retries=0)
        drivers.append(build_driver(mc, line, runtime, metrics))
    # Warm up: open sessions and read identities, which are not part of the steady state.
    for d in drivers:
        await d.poll(int(time.time()))
    wire[:] = [0, 0]
    gaps[:] = [0.0, None]
    failures = 0
    stop_at = time.monotonic() + a.seconds

    async def loop(d) -> None:  # type: ignore[no-untyped-def]
        nonlocal failures
        while time.monotonic() < stop_at:
            r = await d.poll(int(time.time()))
            failures += 0 if r.ok else 1

    t0 = time.monotonic()
    await asyncio.gather(*(loop(d) for d in drivers))
    elapsed = time.monotonic() - t0
    await line.close()
    await asyncio.sleep(0.1)  # let the simulator see the connection close
    server.close()
    await server.wait_closed()

    byte_time = 10.0 / a.baud
    n, nbytes = wire
    ideal = nbytes * byte_time + n * (a.latency + a.pause)
    print(f"bus: {a.meters} meters, {a.baud} baud, latency {a.latency * 1000:g} ms, pause {a.pause * 1000:g} ms, "
          f"{elapsed:.1f} s")
    print(f"exchanges: {n} ({n / elapsed:.2f}/s), {nbytes} bytes on the wire, failed cycles: {failures}")
    print(f"theoretical maximum: {n / ideal:.2f} exchanges/s for this request mix")
    print(f"efficiency: {100 * ideal / elapsed:.1f} % of the theoretical maximum")
    print(f"pollerd's own gaps between a reply and the next request (beyond pause_time): "
          f"{1000 * gaps[0] / max(n, 1):.2f} ms per exchange, {100 * gaps[0] / elapsed:.1f} % of the time; "
          f"the rest of the shortfall is the simulator's timer granularity")


if __name__ == "__main__":
    asyncio.run(main())
