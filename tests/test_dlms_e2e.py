"""End to end: the real daemon polls СПОДЭС simulators (HDLC on a TCP line, HDLC on a pty, the wrapper at a
meter's own ip_address/port) through its normal line, config written as TOML; readings land in the store."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.sim.dlms import HdlcBus, PtySim, serve_hdlc_tcp, serve_wrapper_tcp
from pollerd.sim.dlms_meter import SimSpodesMeter


def _config(path: Path, port: int, wport: int, pty: str) -> Path:
    meter = ('[[meters]]\nname = "{name}"\nprotocol = "dlms"\n{where}\nnumber_meter = "{serial}"\n'
             'password = "12345678"\ntimezone = "Europe/Moscow"\ninterval_time = "1s"\nwaiting_time = "1s"\n'
             'retries = 1\nread = ["clock", "energy", "instant", "profile", "daily"]\ndata_polling_length = "1d"\n'
             'package_size = 48\n{extra}\n')
    path.write_text(
        '[gateway]\nname = "gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n[api]\nenabled = false\n\n'
        f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        f'[[lines]]\nname = "rs485"\ntype = "serial"\ndevice = "{pty}"\nbaudrate = 9600\n\n'
        + meter.format(name="flat-1", where='line = "conv"\nconnection_address = "serial"', serial="012345678",
                       extra="")
        + meter.format(name="flat-2", where='line = "conv"\nconnection_address = 115', serial="000000099",
                       extra='max_info_length = 64')
        + meter.format(name="pty-1", where='line = "rs485"\nconnection_address = 17', serial="000000001", extra="")
        + meter.format(name="eth-1", where=f'ip_address = "127.0.0.1"\nport = {wport}', serial="012345678",
                       extra='dlms_framing = "wrapper"\nconnection_address = 1'))
    return path


def _stored(db: Path) -> dict[str, dict[tuple[str, str], float]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT meter, channel, archive, value FROM readings").fetchall()
    finally:
        con.close()
    out: dict[str, dict[tuple[str, str], float]] = {}
    for m, c, a, v in rows:
        out.setdefault(m, {})[(c, a)] = v
    return out


async def test_daemon_polls_spodes_meters(tmp_path: Path) -> None:
    meters = {s: SimSpodesMeter(serial=s) for s in ("012345678", "000000099", "000000001")}
    server = await serve_hdlc_tcp(HdlcBus([(meters["012345678"], 5694), (meters["000000099"], 115)]),
                                  "127.0.0.1", 0)
    wmeter = SimSpodesMeter(serial="012345678")
    wserver = await serve_wrapper_tcp(wmeter, "127.0.0.1", 0)
    pty = PtySim(HdlcBus([(meters["000000001"], 17)]))
    try:
        cfg = load_config(_config(tmp_path / "p.toml", server.sockets[0].getsockname()[1],
                                  wserver.sockets[0].getsockname()[1], pty.device))
        daemon = Daemon(cfg, tmp_path)
        task = asyncio.ensure_future(daemon.run())
        try:
            for _ in range(300):
                await asyncio.sleep(0.05)
                got = _stored(tmp_path / "pollerd.db") if (tmp_path / "pollerd.db").exists() else {}
                if all(("A+", "current") in got.get(n, {}) and ("A+", "profile") in got.get(n, {})
                       for n in ("flat-1", "flat-2", "pty-1", "eth-1")):
                    break
            else:
                pytest.fail(f"not every meter stored readings: {sorted(got)}")
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 20) == 0
    finally:
        server.close()
        wserver.close()
        pty.close()
    got = _stored(tmp_path / "pollerd.db")
    now = int(time.time())
    for name, m in (("flat-1", meters["012345678"]), ("pty-1", meters["000000001"])):
        a_plus = got[name][("A+", "current")]
        assert m.cumulative("A+", now - 120) <= a_plus <= m.cumulative("A+", now), name
        assert got[name][("U.L1", "current")] == 230.12 and got[name][("F", "current")] == 50.02
        assert ("A+", "daily") in got[name] and ("R-", "profile") in got[name]
