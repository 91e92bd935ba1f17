"""The CPU floor for scripts/bench_daemon.py: a bare asyncio client making the daemon's exchanges.

No pollerd code runs here (the benchmark would otherwise measure pollerd against itself): the parent builds the
request bytes and expected reply lengths once and passes them as JSON on stdin. Per converter, one asyncio-streams
connection and one task; each meter is due at ``k * interval + offset`` (the daemon's own offsets) and gets its
requests one after another. What a real client on a bus cannot skip is kept, so the floor is not a straw man
that is merely cheaper for cutting corners: ``pause`` of silence before each request (a timer, as the daemon's
line keeps it), and a timeout per reply (``asyncio.timeout``). Nothing else: no decoding, no store, no upstream.

Plan: {"interval": s, "pause": s, "waiting": s, "lines": [{"port": p, "meters": [{"offset": s,
"open": [hex, reply_len], "cycle": [[hex, reply_len], ...]}]}]}. Prints "ready" once every meter's session is
open; SIGUSR1 prints {"exchanges": n, "late": [sorted lateness samples...]} for the window so far.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import signal
import sys
import time


class Stats:
    def __init__(self) -> None:
        self.exchanges = 0
        self.errors = 0
        self.late: list[float] = []


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, reply_len: int,
                   waiting: float, stats: Stats) -> None:
    writer.write(request)
    try:
        async with asyncio.timeout(waiting):
            await reader.readexactly(reply_len)
    except TimeoutError:
        stats.errors += 1
    stats.exchanges += 1


async def converter(port: int, meters: list[dict[str, object]], plan: dict[str, float], stats: Stats,
                    opened: asyncio.Event, pending: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pause, waiting, interval = plan["pause"], plan["waiting"], plan["interval"]
    reqs = [([(bytes.fromhex(h), n) for h, n in m["cycle"]], bytes.fromhex(m["open"][0]), m["open"][1])  # type: ignore[index, union-attr]
            for m in meters]
    last = 0.0

    async def gap() -> None:
        wait = last + pause - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    for _cycle, req, n in reqs:
        await gap()
        await exchange(reader, writer, req, n, waiting, stats)
        last = time.monotonic()
    pending[0] -= 1
    if not pending[0]:
        opened.set()
    now = time.time()
    heap: list[tuple[float, int]] = []
    for i, m in enumerate(meters):
        off = float(m["offset"])  # type: ignore[arg-type]
        due = (now - off) // interval * interval + off + interval
        heap.append((due, i))
    heapq.heapify(heap)
    while True:
        due, i = heap[0]
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        stats.late.append(max(0.0, time.time() - due))
        for req, n in reqs[i][0]:
            await gap()
            await exchange(reader, writer, req, n, waiting, stats)
            last = time.monotonic()
        heapq.heapreplace(heap, (due + interval, i))


async def main() -> None:
    plan = json.loads(sys.stdin.read())
    stats = Stats()
    opened = asyncio.Event()
    pending = [len(plan["lines"])]
    loop = asyncio.get_running_loop()
    mark = [0]

    def report() -> None:
        late = sorted(stats.late[mark[0]:])
        print(json.dumps({"exchanges": stats.exchanges, "errors": stats.errors,
                          "late_p50": late[len(late) // 2] if late else None,
                          "late_p99": late[int(len(late) * 0.99)] if late else None}), flush=True)
        mark[0] = len(stats.late)

    loop.add_signal_handler(signal.SIGUSR1, report)
    async with asyncio.TaskGroup() as tg:
        for line in plan["lines"]:
            tg.create_task(converter(line["port"], line["meters"], plan, stats, opened, pending))
        await opened.wait()
        print("ready", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
