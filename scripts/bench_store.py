#!/usr/bin/env python3
"""Durable ingest rate of the store and bytes written to disk per reading (SD-card wear).

    python scripts/bench_store.py [--readings 200000] [--batches 1,100,1000] [--dir DIR]

For each batch size, writes --readings readings (1 batch = 1 Store.write = 1 committed transaction with
synchronous=FULL, commit_interval 0) into a fresh store and reports readings/s, and bytes written to the
block layer per reading from /proc/self/io write_bytes (aiosqlite's thread is in this process, so its writes
are counted; the WAL checkpoints that fall inside the run are included, the final one at close is added
separately). Batch size 1 writes --readings / 20 readings, one transaction each, to keep the run short.
Also prints the database bytes per stored reading (what max_size holds) and one quota eviction pass.
Use --dir on the real card (default: a temporary directory, which may be tmpfs: then write_bytes is 0).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_data import readings

from pollerd.config import StoreConfig
from pollerd.metrics import Registry
from pollerd.store import Store
from pollerd.store.quota import StoreQuota


def io_written() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


async def one(path: Path, total: int, batch: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        (path.parent / (path.name + suffix)).unlink(missing_ok=True)
    store = await Store.open(path, commit_interval=0.0, max_batch_rows=max(batch, 1))
    data = readings(total)
    w0 = io_written()
    t0 = time.perf_counter()
    for i in range(0, total, batch):
        await store.write(data[i:i + batch])
    dt = time.perf_counter() - t0
    w1 = io_written()
    page_size, pages, free = await store.space()
    await store.close()
    w2 = io_written()
    print(f"batch {batch:>5}: {total:>7} readings in {dt:6.2f} s = {total / dt:>9,.0f} readings/s durable; "
          f"{(w1 - w0) / total:7.1f} B written/reading during the run, {(w2 - w0) / total:7.1f} incl. the "
          f"final checkpoint; db {(pages - free) * page_size / total:5.1f} B/reading")


async def quota_pass(path: Path, total: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        (path.parent / (path.name + suffix)).unlink(missing_ok=True)
    store = await Store.open(path, commit_interval=0.0)
    for i in range(0, total, 5000):
        await store.write(readings(min(5000, total - i), i))
    page_size, pages, free = await store.space()
    used = (pages - free) * page_size
    q = StoreQuota(store, StoreConfig(max_size=used // 2), ["up"], Registry())
    t0 = time.perf_counter()
    done = await q.check()
    dt = time.perf_counter() - t0
    await store.close()
    print(f"quota: halving a {used / 2**20:.1f} MiB store evicted {done.get('quota', 0)} readings in {dt:.2f} s "
          f"({done.get('quota', 0) / dt:,.0f} readings/s)")


async def delete_pass(path: Path, total: int) -> None:
    """Bytes written to delete readings (prune and the quota delete the same way): with SQLite's secure_delete
    on (Debian's build) every freed page was zeroed and written again."""
    for suffix in ("", "-wal", "-shm"):
        (path.parent / (path.name + suffix)).unlink(missing_ok=True)
    store = await Store.open(path, commit_interval=0.0)
    for i in range(0, total, 5000):
        await store.write(readings(min(5000, total - i), i))
    await store.close()  # the final checkpoint, so the deletes' bytes are counted alone
    store = await Store.open(path, commit_interval=0.0)
    w0 = io_written()
    n = 0
    while n < total // 2:
        n += (await store.evict(sinks=[], limit=20_000))[0]
    await store.close()
    print(f"delete: {(io_written() - w0) / n:.1f} B written per deleted reading ({n} oldest in transactions of "
          f"20 000, incl. the checkpoint at close)")


async def main(args: argparse.Namespace) -> None:
    d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="pollerd-bench-"))
    path = d / "bench.db"
    print(f"store at {path} (python {sys.version.split()[0]})")
    for b in [int(x) for x in args.batches.split(",")]:
        await one(path, args.readings // 20 if b == 1 else args.readings, b)
    await quota_pass(path, args.readings)
    await delete_pass(path, args.readings)
    for suffix in ("", "-wal", "-shm"):
        (d / ("bench.db" + suffix)).unlink(missing_ok=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--batches", default="1,100,1000")
    p.add_argument("--dir", default=None)
    asyncio.run(main(p.parse_args()))
