#!/usr/bin/env python3
"""Fault campaign (issue 14): the real daemon polls simulated meters through a fault-injecting proxy.

For each protocol (Mercury 230, M-Bus, IEC 62056-21: three meters each on one simulated TCP converter) and
each fault kind of :mod:`pollerd.sim.faultproxy`, a fresh daemon and store: warm-up until every meter has
answered, then ``--seconds`` with that fault on ``--rate`` of all replies, then none. Reported per fault:
faults injected, readings per minute per meter during the fault window (slowest meter and mean, and the mean
as a share of the fault-free baseline), wrong values stored over the whole run (a value that differs from
the simulator's truth; must be 0), and the time from the faults stopping until every meter has completed a
clean cycle. The ``hang`` row is a whole-converter outage (every connection swallows everything, old
connections stay dead after it heals) lasting ``--seconds`` plus long enough for the meters to degrade;
its recovery is timed from the converter becoming healthy (target: 30 s).

Loopback only, bounded: every phase ends after its time, every recovery wait after ``--recover-limit``.

    python scripts/fault_campaign.py [--seconds 20] [--rate 0.15] [--interval 1s] [--protocols mercury230,mbus,iec62056]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.sim.faultproxy import Fault
from pollerd.sim.faultrig import PROTOCOLS, Rig, config_text, start_rig, stored, wrong_values

HANG = "hang"


@dataclass(frozen=True, slots=True)
class Row:
    protocol: str
    fault: str
    injected: int
    per_min: tuple[float, ...]     # readings per minute per meter in the fault window
    clean: float                   # share of the cycles in the fault window that completed without error
    wrong: int
    recovery: float | None         # seconds until every meter completed a clean cycle; None: not within limit


async def _phase(protocol: str, fault: str, a: argparse.Namespace) -> Row:
    rig: Rig = await start_rig(protocol, interval=a.interval, waiting=a.waiting)
    state = Path(tempfile.mkdtemp(prefix="pollerd-campaign-"))
    cfg = state / "p.toml"
    cfg.write_text(config_text(port=rig.proxy.port, meters=rig.meters_toml))
    daemon = Daemon(load_config(cfg), state)
    task = asyncio.ensure_future(daemon.run())
    st = daemon.runtime.meters
    recovery: float | None = None
    try:
        end = time.monotonic() + 60
        while not (len(st) == len(rig.names) and all(s.last_ok for s in st.values())):
            if time.monotonic() > end or task.done():
                raise RuntimeError(f"{protocol}: meters never answered fault-free")
            await asyncio.sleep(0.05)
        before = {n: s.readings for n, s in st.items()}
        polls0 = {n: (s.polls, s.failures) for n, s in st.items()}
        t0 = time.monotonic()
        if fault == HANG:
            rig.proxy.outage(True)
        elif fault != "none":
            rig.proxy.configure([Fault(fault)], rate=a.rate)
        await asyncio.sleep(a.seconds)
        if fault == HANG:  # long enough for every meter to degrade: the case that took ~123 s before
            end = time.monotonic() + a.recover_limit
            while not all(s.degraded for s in st.values()) and time.monotonic() < end:  # noqa: ASYNC110 - daemon state has no event to wait on
                await asyncio.sleep(0.1)
        window = time.monotonic() - t0
        per_min = tuple(60 * (st[n].readings - before[n]) / window for n in rig.names)
        polls = {n: s.polls for n, s in st.items()}
        cycles = sum(s.polls - polls0[n][0] for n, s in st.items())
        failed = sum(s.failures - polls0[n][1] for n, s in st.items())
        clean = (cycles - failed) / cycles if cycles else 0.0
        rig.proxy.configure()
        rig.proxy.outage(False)
        t1 = time.monotonic()
        ok: dict[str, float] = {}
        while len(ok) < len(rig.names) and time.monotonic() - t1 < a.recover_limit:
            for n, s in st.items():
                if n not in ok and s.polls > polls[n] and s.last_error is None and not s.degraded:
                    ok[n] = time.monotonic() - t1
            await asyncio.sleep(0.05)
        if len(ok) == len(rig.names):
            recovery = max(ok.values())
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        await rig.close()
    bad = wrong_values(stored(state / "pollerd.db"), rig.truth)
    for b in bad[:5]:
        print(f"  WRONG {protocol} {fault}: {b}", file=sys.stderr)
    injected = sum(rig.proxy.injected.values()) + (1 if fault == HANG else 0)
    return Row(protocol, fault, injected, per_min, clean, len(bad), recovery)


def _table(rows: list[Row]) -> str:
    base = {r.protocol: statistics.mean(r.per_min) for r in rows if r.fault == "none"}
    head = ("| protocol | fault | injected | readings/min/meter (slowest, mean) | mean vs baseline | clean cycles | "
            "wrong values | recovery |")
    out = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mean = statistics.mean(r.per_min)
        share = f"{100 * mean / base[r.protocol]:.0f} %" if base.get(r.protocol) else "-"
        rec = f"{r.recovery:.1f} s" if r.recovery is not None else "NOT within limit"
        out.append(f"| {r.protocol} | {r.fault} | {r.injected} | {min(r.per_min):.0f}, {mean:.0f} | {share} | "
                   f"{100 * r.clean:.0f} % | {r.wrong} | {rec} |")
    return "\n".join(out)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each fault window")
    ap.add_argument("--rate", type=float, default=0.15, help="share of replies damaged")
    ap.add_argument("--interval", default="1s", help="meters' interval_time")
    ap.add_argument("--waiting", default="200ms", help="meters' waiting_time")
    ap.add_argument("--recover-limit", type=float, default=90.0)
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--faults", default=",".join(["none", *(f.value for f in Fault), HANG]))
    a = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # thousands of expected warnings; the table is the result
    rows: list[Row] = []
    for protocol in a.protocols.split(","):
        for fault in a.faults.split(","):
            started = time.monotonic()
            row = await _phase(protocol, fault, a)
            rows.append(row)
            print(f"{protocol:10} {fault:10} injected {row.injected:4}  wrong {row.wrong}  recovery "
                  f"{row.recovery if row.recovery is None else round(row.recovery, 1)}  "
                  f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    print(_table(rows))
    return 1 if any(r.wrong for r in rows) or any(r.recovery is None or r.recovery > 30 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
