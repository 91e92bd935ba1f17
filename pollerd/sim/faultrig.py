"""Simulated meters of one protocol behind a :class:`~pollerd.sim.faultproxy.FaultProxy`, with the truth
they hold and the config that polls them: what the fault tests and ``scripts/fault_campaign.py`` share.

Simulators' clocks are frozen, so every value they report is known in advance; a stored value that differs
from :attr:`Rig.truth` is a wrong value (issue 14: there must be none, whatever the proxy does).
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from pollerd.sim import iec62056 as iec_sim
from pollerd.sim import mbus as mbus_sim
from pollerd.sim import mercury230 as merc_sim
from pollerd.sim.faultproxy import FaultProxy

__all__ = ["FROZEN", "PROTOCOLS", "Rig", "Row", "config_text", "start_rig", "stored", "wrong_values"]

FROZEN = 1_790_000_000.0
PROTOCOLS = ("mercury230", "mbus", "iec62056")

Row = tuple[str, str, str, int, float]
Truth = dict[str, dict[object, float]]


@dataclass(eq=False)
class Rig:
    protocol: str
    server: asyncio.Server
    proxy: FaultProxy
    meters_toml: str
    truth: Truth
    names: tuple[str, ...]
    meters: list[object] = field(default_factory=list)

    async def close(self) -> None:
        await self.proxy.close()
        self.server.close()


def mercury_meter(address: int) -> merc_sim.SimMeter:
    # Every tariff and every kind of energy a different number, so a reply taken for another request's
    # shows as a wrong value instead of passing as the right one by coincidence.
    return merc_sim.SimMeter(address=address, serial=f"4100000{address}", clock=lambda: FROZEN,
                             energy={1: (1_234_567 + address, 890 + address, 45_678, 12),
                                     2: (765_432, 7 + address, 5_432, 1)})


def mercury_truth(meter: merc_sim.SimMeter) -> dict[object, float]:
    exp: dict[object, float] = {}
    for tariff in range(5):
        for name, v in zip(("A+", "A-", "R+", "R-"), meter.expected_energy(tariff)):
            if v is not None:
                exp[name + (f".T{tariff}" if tariff else "")] = v
    for channel, value in meter.expected_instant().items():
        if value is not None:   # a value the simulated meter does not support is not read at all
            exp[channel] = value
    return exp


def meter_toml(name: str, protocol: str, address: int | str, *, serial: str | None = None,
               interval: str = "1s", waiting: str = "200ms", retries: int = 2, extra: str = "") -> str:
    addr = f'"{address}"' if isinstance(address, str) else str(address)
    s = (f'[[meters]]\nname = "{name}"\nprotocol = "{protocol}"\nline = "conv"\nconnection_address = {addr}\n'
         f'interval_time = "{interval}"\nwaiting_time = "{waiting}"\nretries = {retries}\n')
    if serial:
        s += f'number_meter = "{serial}"\n'
    return s + extra + "\n"


def config_text(*, port: int, meters: str) -> str:
    return ('[gateway]\nname = "fault-gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n'
            f'[api]\nenabled = false\n\n[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\n'
            f'port = {port}\nreconnect_min = "100ms"\nreconnect_max = "2s"\n\n{meters}')


async def start_rig(protocol: str, *, interval: str = "1s", waiting: str = "200ms", retries: int = 2,
                    delay: float = 0.35, seed: int = 7) -> Rig:
    """Three meters of ``protocol`` on one simulated converter, behind a fault proxy (no faults yet)."""
    meters: list[object]
    if protocol == "mercury230":
        merc = [mercury_meter(a) for a in (1, 2, 3)]
        meters = list(merc)
        server = await merc_sim.serve_tcp(merc_sim.SimBus(merc), "127.0.0.1", 0)
        names = tuple(f"m{a}" for a in (1, 2, 3))
        toml = "".join(meter_toml(f"m{a}", protocol, a, serial=f"4100000{a}", interval=interval,
                                  waiting=waiting, retries=retries) for a in (1, 2, 3))
        truth: Truth = {f"m{m.address}": mercury_truth(m) for m in merc}
    elif protocol == "mbus":
        mb = [mbus_sim.heat_meter(1, "12345678"), mbus_sim.water_meter(2, "87654321"),
              mbus_sim.heat_meter(3, "12340003", split=False)]
        meters = list(mb)
        server = await mbus_sim.serve_tcp(mbus_sim.SimBus(mb), "127.0.0.1", 0)
        names = ("b1", "b2", "b3")
        toml = "".join(meter_toml(n, protocol, m.primary, serial=m.ident, interval=interval, waiting=waiting,
                                  retries=retries) for n, m in zip(names, mb))
        truth = {n: {} for n in names}
        for n, m in zip(names, mb):
            for key, value in m.expected().items():
                truth[n][key] = value
        for n, m in zip(names, mb):  # the fabrication number record (VIF 78) the simulator does not list
            truth[n][("mbus.78", "current", None)] = float(m.ident)
    elif protocol == "iec62056":
        ie = [iec_sim.SimIecMeter(f"0000000{n}", n=n) for n in (1, 2, 3)]
        meters = list(ie)
        server = await iec_sim.serve_tcp(iec_sim.SimIecBus(ie), "127.0.0.1", 0)
        names = ("e1", "e2", "e3")
        toml = "".join(meter_toml(n, protocol, m.address, serial=m.serial, interval=interval, waiting=waiting,
                                  retries=retries) for n, m in zip(names, ie))
        truth = {n: {ch: v for ch, (v, _unit) in m.expected().items()} for n, m in zip(names, ie)}
    else:
        raise ValueError(f"no fault rig for {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    proxy = await FaultProxy(server.sockets[0].getsockname()[1], protocol=protocol, delay=delay,
                             seed=seed).start()
    return Rig(protocol, server, proxy, toml, truth, names, meters)


def stored(db: Path) -> list[Row]:
    """(meter, channel, archive, ts, value) of every row in the store."""
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT meter, channel, archive, ts, value FROM readings").fetchall()
    finally:
        con.close()


def wrong_values(rows: list[Row], truth: Truth) -> list[tuple[str, str, str, int, float, float | None]]:
    """Rows whose value differs from the truth, or that the truth does not know. A meter's truth is keyed
    by (channel, archive, ts) for archive values, (channel, archive, None) or the channel alone for current
    values."""
    bad = []
    for meter, channel, archive, ts, value in rows:
        known = truth.get(meter, {})
        want = known.get((channel, archive, ts), known.get((channel, archive, None), known.get(channel)))
        if want is None or abs(value - want) > 1e-9 * max(1.0, abs(want)):
            bad.append((meter, channel, archive, ts, value, want))
    return bad
