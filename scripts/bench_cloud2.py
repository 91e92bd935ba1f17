#!/usr/bin/env python3
"""WebMeters and SAURES ingest: one poll cycle of a large account from the local fakes (tests/fakes_*.py) on
127.0.0.1, written into a real Store (commit_interval 0: the commit is measured, not the group-commit wait).
Prints readings/s (poll + store write, each also shown alone) and the request count, which
must be the minimum the API allows: webmeters 1 + orgs + groups, saures 1 login + 1 flats + flats.

    .venv/bin/python scripts/bench_cloud2.py [--groups 20] [--devices 100] [--flats 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakes_saures import EMAIL, PASSWORD, FakeSaures  # noqa: E402
from fakes_saures import sample as saures_sample  # noqa: E402
from fakes_webmeters import KEY, FakeWebmeters  # noqa: E402

from pollerd.config import load_config  # noqa: E402
from pollerd.drivers.base import CloudDriverContext  # noqa: E402
from pollerd.drivers.registry import make_driver  # noqa: E402
from pollerd.metrics import Registry  # noqa: E402
from pollerd.state import MeterState  # noqa: E402
from pollerd.store import Store  # noqa: E402


def webmeters_account(fake: FakeWebmeters, groups: int, devices: int) -> None:
    fake.orgs = [{"id": 1, "inn": "", "name": "org"}]
    fake.groups = {1: [{"id": 100 + g, "parentId": 0, "name": f"g{g}"} for g in range(groups)]}
    fake.devices = {100 + g: [{"id": g * 10_000 + d, "deviceType": "e", "channelNumber": 0, "flat": str(d),
                               "values": [{"name": "T1", "value": 1000.5 + d, "units": "кВтч"},
                                          {"name": "T2", "value": "200,25", "units": "кВтч"}]}
                              for d in range(devices)] for g in range(groups)}


def saures_account(fake: FakeSaures, flats: int) -> None:
    saures_sample(fake)
    proto = fake.sensors[106]
    fake.flats = [{"id": i, "enable": True, "number": str(i), "house": "h", "personal_account": ""}
                  for i in range(flats)]
    fake.sensors = {}
    for i in range(flats):
        sensors = copy.deepcopy(proto)
        sensors[0]["sn"] = f"C{i}"
        for j, m in enumerate(sensors[0]["meters"]):
            m["sn"] = f"M{i}-{j}"
        fake.sensors[i] = sensors


async def one(tmp: Path, toml: str, expect_requests: int, count_requests, rounds: int) -> None:  # type: ignore[no-untyped-def]
    p = tmp / "p.toml"
    p.write_text(toml, encoding="utf-8")
    mc = load_config(p, environ={}).meters[0]
    best = None
    for r in range(rounds):
        store = await Store.open(tmp / f"{mc.name}-{r}.db", commit_interval=0.0)  # commit at once, no group wait
        drv = make_driver(CloudDriverContext(mc, MeterState(mc.name, mc.protocol, "", 0, 3600.0), Registry(),
                                             log=logging.getLogger("bench"), store=store, state_dir=tmp))
        before = count_requests()
        t0 = time.perf_counter()
        res = await drv.poll(int(time.time()))
        t1 = time.perf_counter()
        await store.write(res.readings, res.events)
        await store.flush()
        dt = time.perf_counter() - t0
        n = count_requests() - before
        await drv.close()
        await store.close()
        assert res.ok, res.error
        best = dt if best is None else min(best, dt)
        print(f"  round {r + 1}: {len(res.readings)} readings in {dt:.3f} s = {len(res.readings) / dt:,.0f} "
              f"readings/s (poll {t1 - t0:.3f} s, store {dt - (t1 - t0):.3f} s); {n} requests (minimum {expect_requests})")
    assert best is not None


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--devices", type=int, default=100, help="devices per webmeters group")
    ap.add_argument("--flats", type=int, default=200, help="saures flats (1 controller, 5 meters each)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    w, s = FakeWebmeters(), FakeSaures()
    webmeters_account(w, args.groups, args.devices)
    saures_account(s, args.flats)
    await w.start()
    await s.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            print(f"webmeters: {args.groups} groups x {args.devices} devices x 2 tariffs")
            await one(tmp, f'[[meters]]\nname = "wm"\nprotocol = "webmeters"\nurl = "{w.url}"\n'
                           f'api_key = "{KEY}"\n', 2 + args.groups, lambda: len(w.calls), args.rounds)
            print(f"saures: {args.flats} flats x (1 controller + 5 meters)")
            await one(tmp, f'[[meters]]\nname = "sa"\nprotocol = "saures"\nurl = "{s.url}"\nemail = "{EMAIL}"\n'
                           f'password = "{PASSWORD}"\ntimezone = "Europe/Moscow"\n',
                      2 + args.flats, lambda: len(s.requests), args.rounds)
    finally:
        await w.stop()
        await s.stop()


if __name__ == "__main__":
    asyncio.run(main())
