"""Shared by the fault tests and scripts/fault_campaign.py: the real daemon behind a fault proxy, and the
check that every stored value is the simulator's truth."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.sim.mercury230 import SimMeter

FROZEN = 1_790_000_000.0


def mercury_meter(address: int) -> SimMeter:
    # Every tariff and every kind of energy a different number, so a reply taken for another request's
    # shows as a wrong value instead of passing as the right one by coincidence.
    return SimMeter(address=address, serial=f"4100000{address}", clock=lambda: FROZEN,
                    energy={1: (1_234_567 + address, 890 + address, 45_678, 12),
                            2: (765_432, 7 + address, 5_432, 1)})


def mercury_truth(meter: SimMeter) -> dict[str, float]:
    exp: dict[str, float] = {}
    for tariff in range(5):
        for name, v in zip(("A+", "A-", "R+", "R-"), meter.expected_energy(tariff)):
            if v is not None:
                exp[name + (f".T{tariff}" if tariff else "")] = v
    exp.update(meter.expected_instant())
    return exp


def config_text(*, port: int, meters: str, state_dir: Path) -> str:
    return ('[gateway]\nname = "fault-gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n'
            f'[api]\nenabled = false\n\n[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\n'
            f'port = {port}\nreconnect_min = "100ms"\nreconnect_max = "2s"\n\n{meters}')


def meter_toml(name: str, protocol: str, address: int | str, *, serial: str | None = None,
               interval: str = "1s", waiting: str = "200ms", retries: int = 2, extra: str = "") -> str:
    addr = f'"{address}"' if isinstance(address, str) else str(address)
    s = (f'[[meters]]\nname = "{name}"\nprotocol = "{protocol}"\nline = "conv"\nconnection_address = {addr}\n'
         f'interval_time = "{interval}"\nwaiting_time = "{waiting}"\nretries = {retries}\n')
    if serial:
        s += f'number_meter = "{serial}"\n'
    return s + extra + "\n"


def stored(db: Path) -> list[tuple[str, str, str, float]]:
    """(meter, channel, archive, value) of every row in the store."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT meter, channel, archive, value FROM readings").fetchall()
    finally:
        con.close()


def wrong_values(rows: list[tuple[str, str, str, float]],
                 truth: dict[str, dict[str, float]]) -> list[tuple[str, str, float, float | None]]:
    """Rows whose value differs from the truth (or that the truth does not know): (meter, channel, got,
    want)."""
    bad = []
    for meter, channel, _archive, value in rows:
        want = truth.get(meter, {}).get(channel)
        if want is None or abs(value - want) > 1e-9 * max(1.0, abs(want)):
            bad.append((meter, channel, value, want))
    return bad


async def run_daemon(cfg_path: Path, state_dir: Path,
                     until: Callable[[Daemon], Awaitable[bool] | bool], limit: float) -> Daemon:
    """Run the daemon until ``until(daemon)`` holds or ``limit`` seconds passed; return it, stopped."""
    daemon = Daemon(load_config(cfg_path), state_dir)
    task = asyncio.ensure_future(daemon.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    try:
        while loop.time() < end and not task.done():
            res = until(daemon)
            if not isinstance(res, bool):
                res = await res
            if res:
                break
            await asyncio.sleep(0.05)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    return daemon
