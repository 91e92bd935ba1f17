"""End to end: the real daemon and IEC 62056-21 simulators over loopback TCP and a pty (where the simulator
answers only at the right terminal speed, so the baud switch must really happen), config written as TOML."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.sim.iec62056 import IecPtySim, SimIecBus, SimIecMeter, serve_tcp


def write_config(path: Path, lines: str, meters: str) -> Path:
    path.write_text('[gateway]\nname = "test-gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n'
                    f'[api]\nenabled = false\n\n{lines}\n{meters}')
    return path


def meter(name: str, line: str, address: str, extra: str = "", waiting: str = "500ms") -> str:
    return (f'[[meters]]\nname = "{name}"\nprotocol = "iec62056"\nline = "{line}"\n'
            f'connection_address = "{address}"\ninterval_time = "1s"\nwaiting_time = "{waiting}"\nretries = 1\n'
            f'{extra}\n')


async def run_until(daemon: Daemon, cond, limit: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(int(limit / 0.05)):
            if task.done() or cond():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("condition not reached in time")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


async def stored(tmp_path: Path, name: str) -> dict[str, tuple[float, str]]:
    import sqlite3
    con = sqlite3.connect(tmp_path / "pollerd.db")
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(readings)")]
        assert {"meter", "channel", "value", "unit"} <= set(cols), cols
        rows = con.execute("SELECT channel, value, unit FROM readings WHERE meter = ?", (name,)).fetchall()
    finally:
        con.close()
    return {c: (v, u) for c, v, u in rows}


async def test_daemon_polls_iec_meters_over_tcp_and_a_pty_with_baud_switch(tmp_path: Path) -> None:
    tcp_meters = [SimIecMeter("00000001", n=1), SimIecMeter("00000201", profile="neva", n=2),
                  SimIecMeter("141628345", profile="energomera", n=3)]
    server = await serve_tcp(SimIecBus(tcp_meters), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pty_meter = SimIecMeter("", n=7)
    pty = IecPtySim(SimIecBus([pty_meter]), check_baud=True)
    lines = (f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
             f'[[lines]]\nname = "head"\ntype = "serial"\ndevice = "{pty.device}"\nbaudrate = 300\n')
    # A real optical head runs 7E1; this kernel's ptys reject or drop parity settings, and a pty carries no
    # parity anyway, so the pty line stays 8N1. The speed is what the simulator checks.
    meters = (meter("gen", "conv", "00000001", 'number_meter = "43000001"') +
              meter("neva", "conv", "00000201", 'iec_profile = "neva"\npassword = "00000000"\n'
                                                 'password_encoding = "ascii"') +
              meter("ce102", "conv", "141628345", 'iec_profile = "energomera"\npassword = "777777"') +
              meter("optical", "head", "", waiting="1s"))
    cfg = load_config(write_config(tmp_path / "p.toml", lines, meters))
    daemon = Daemon(cfg, tmp_path)
    want = {"gen": tcp_meters[0].expected(), "neva": tcp_meters[1].expected(),
            "ce102": tcp_meters[2].expected(), "optical": pty_meter.expected()}
    try:
        done: dict[str, bool] = {}

        def all_polled() -> bool:
            for name in want:
                st = daemon.runtime.meters.get(name)
                if st is not None and st.readings > 0 and st.last_error is None:
                    done[name] = True
            return len(done) == len(want)
        await run_until(daemon, all_polled)
    finally:
        server.close()
        pty.close()
    for name, exp in want.items():
        got = await stored(tmp_path, name)
        assert got == exp, name
    assert pty.wrong_speed == 0          # every request came at the speed the meter listened at
    assert pty_meter.sessions >= 1


def test_decode_cli_prints_json_and_exit_codes() -> None:
    good = "02 33 3A 31 34 28 33 31 34 2A 6B 57 68 29 34 3A 31 35 28 34 31 35 2A 6B 57 68 29 0D 0A 21 0D 0A 03 22"
    run = [sys.executable, "-m", "pollerd", "decode", "iec62056", "--response"]
    p = subprocess.run(run + [good], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["checksum_ok"] is True
    assert out["readings"][0] == {"channel": "3:14", "address": "3:14", "value": 314000.0, "unit": "Wh"}
    bad = subprocess.run(run + ["02 33 3A 31 37 31 2E 30 28 30 29 03 11"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 1 and json.loads(bad.stdout)["checksum_ok"] is False
