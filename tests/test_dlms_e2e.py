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
             'password = "12345678"\npassword_encoding = "ascii"\ntimezone = "Europe/Moscow"\ninterval_time = "1s"\nwaiting_time = "1s"\n'
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
    except sqlite3.OperationalError:     # the daemon has created the file but not its schema yet
        return {}
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


class _MixedSplitter:
    """One RS-485 bus with a Mercury 230 and a СПОДЭС meter: an HDLC frame starts with its flag, anything
    else is a Mercury request (the line sends one request at a time, so a request never starts mid-frame)."""

    def __init__(self, mercury: object) -> None:
        from pollerd.sim.dlms import HdlcSplitter
        self.hdlc = HdlcSplitter()
        self.mercury = mercury
        self.in_hdlc = False

    def feed(self, data: bytes) -> list[bytes]:
        if not self.in_hdlc and data[:1] == b"\x7e":
            self.in_hdlc = True
        if self.in_hdlc:
            frames = self.hdlc.feed(data)
            if frames:
                self.in_hdlc = False
            return frames
        return self.mercury.feed(data)  # type: ignore[attr-defined, no-any-return]


class _MixedBus:
    def __init__(self, dlms: HdlcBus, mercury: object) -> None:
        self.dlms = dlms
        self.mercury = mercury

    def handle_frame(self, raw: bytes) -> bytes | None:
        if raw[:1] == b"\x7e":
            return self.dlms.handle_frame(raw)
        return self.mercury.handle_frame(raw)  # type: ignore[attr-defined, no-any-return]


async def test_one_bus_with_a_mercury_and_a_spodes_meter(tmp_path: Path) -> None:
    from pollerd.sim.common import serve_framed_tcp
    from pollerd.sim.mercury230 import SimBus, SimMeter

    spodes = SimSpodesMeter(serial="012345678")
    mercury = SimBus([SimMeter(address=5, serial="41000005")])
    bus = _MixedBus(HdlcBus([(spodes, 5694)]), mercury)
    server = await serve_framed_tcp(bus, lambda: _MixedSplitter(mercury.splitter()), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg_path = tmp_path / "p.toml"
    cfg_path.write_text(
        '[gateway]\nname = "gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n[api]\nenabled = false\n\n'
        f'[[lines]]\nname = "bus"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        '[[meters]]\nname = "spodes"\nprotocol = "dlms"\nline = "bus"\nconnection_address = 5694\n'
        'password = "12345678"\npassword_encoding = "ascii"\ntimezone = "Europe/Moscow"\ninterval_time = "1s"\nwaiting_time = "1s"\n'
        'read = ["energy", "instant"]\n\n'
        '[[meters]]\nname = "merc"\nprotocol = "mercury230"\nline = "bus"\nconnection_address = 5\n'
        'password = "111111"\ninterval_time = "1s"\nwaiting_time = "500ms"\nread = ["energy", "instant"]\n')
    daemon = Daemon(load_config(cfg_path), tmp_path)
    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(300):
            await asyncio.sleep(0.05)
            got = _stored(tmp_path / "pollerd.db") if (tmp_path / "pollerd.db").exists() else {}
            if ("A+", "current") in got.get("spodes", {}) and ("A+", "current") in got.get("merc", {}):
                break
        else:
            pytest.fail(f"both meters did not answer on the shared bus: {sorted(got)}")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
        server.close()
    assert got["spodes"][("U.L1", "current")] == 230.12


async def test_commands_poll_raw_decode_and_sim(tmp_path: Path) -> None:
    """`pollerd sim dlms`, then `pollerd poll` and `pollerd raw` for a dlms meter of a config, and
    `pollerd decode dlms` on a frame: the commands an integrator commissions a meter with."""
    import json
    import sys

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pollerd", *args,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    sim = await asyncio.create_subprocess_exec(sys.executable, "-m", "pollerd", "sim", "dlms", "--tcp",
                                               "127.0.0.1:0", stdout=asyncio.subprocess.PIPE)
    try:
        assert sim.stdout is not None
        first = (await asyncio.wait_for(sim.stdout.readline(), 30)).decode()
        assert first.startswith("dlms sim listening on tcp"), first
        port = int(first.split()[5].rsplit(":", 1)[1])
        cfg = tmp_path / "p.toml"
        cfg.write_text(f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
                       '[[meters]]\nname = "flat"\nprotocol = "dlms"\nline = "conv"\nconnection_address = "serial"\n'
                       'number_meter = "012345678"\npassword = "12345678"\npassword_encoding = "ascii"\n'
                       'timezone = "Europe/Moscow"\nread = ["clock", "energy", "instant"]\n')
        rc, out, err = await run("poll", "--config", str(cfg), "flat", "--json")
        assert rc == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        # The password must not show; the serial (012345678, in the identity line on stderr) contains it.
        assert {r["channel"] for r in lines} >= {"A+", "U.L1", "clock.drift"}
        assert "12345678" not in (out + err).replace("012345678", "")
        rc, out, err = await run("raw", "--config", str(cfg), "flat", "C0 01 C1 00 03 01 00 20 07 00 FF 02 00")
        assert rc == 0, err
        assert json.loads(out)["decoded"]["results"] == [23012]
    finally:
        sim.terminate()
        await sim.wait()
    rc, out, _ = await run("decode", "dlms", "7E A0 08 02 23 21 93 BD 64 7E")
    assert rc == 0 and json.loads(out)["frame"]["kind"] == "SNRM"
