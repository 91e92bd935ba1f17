"""End to end: the real daemon, simulated Mercury 230 meters over loopback TCP and a pty pair, and a local
HTTP receiver standing in for upstream. The simulators' clocks are frozen, so the exact values they hold
are known and must arrive upstream unchanged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from helpers import serve

from pollerd.config import load_config
from pollerd.daemon import Daemon, build_driver, build_lines
from pollerd.metrics import Registry
from pollerd.sim.mercury230 import SimBus, SimMeter, open_pty, serve_tcp
from pollerd.state import Runtime
from pollerd.store import Store

FROZEN = 1_790_000_000.0


def sim_meter(address: int, serial: str, **kw: object) -> SimMeter:
    return SimMeter(address=address, serial=serial, clock=lambda: FROZEN,
                    energy={1: (1_234_567 + address, 890, 45_678, 12), 2: (765_432, 0, 5_432, 1)},
                    **kw)  # type: ignore[arg-type]


class Receiver:
    def __init__(self) -> None:
        self.readings: list[dict] = []
        self.fail_next = 0

    async def ingest(self, request: web.Request) -> web.Response:
        if self.fail_next:
            self.fail_next -= 1
            return web.Response(status=503, text="try later")
        body = orjson.loads(await request.read())
        assert body["gateway"] == "test-gw"
        self.readings.extend(body["readings"])
        return web.json_response({"ok": True})

    def latest(self) -> dict[tuple[str, str], float]:
        return {(r["meter"], r["channel"]): r["value"] for r in self.readings}


@pytest.fixture
async def receiver():
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/ingest", rec.ingest)
    runner, base = await serve(app)
    rec.url = f"{base}/ingest"
    yield rec
    await runner.cleanup()


def write_config(path: Path, *, lines: str, meters: str, sink_url: str | None, extra: str = "") -> Path:
    text = f'[gateway]\nname = "test-gw"\nspread = "1s"\n\n[store]\ncommit_interval = "100ms"\n\n' \
           f'[api]\nenabled = false\n\n{lines}\n{meters}\n{extra}'
    if sink_url:
        text += f'\n[[sinks]]\nname = "up"\ntype = "http"\nurl = "{sink_url}"\nretry_min = "100ms"\n' \
                f'retry_max = "500ms"\n'
    path.write_text(text)
    return path


def meter_toml(name: str, line: str, address: int, serial: str | None = None, interval: str = "1s",
               **kw: object) -> str:
    s = f'[[meters]]\nname = "{name}"\nprotocol = "mercury230"\nline = "{line}"\n' \
        f'connection_address = {address}\ninterval_time = "{interval}"\nwaiting_time = "300ms"\n'
    if serial:
        s += f'number_meter = "{serial}"\n'
    for k, v in kw.items():
        s += f"{k} = {v}\n"
    return s + "\n"


async def run_until(daemon: Daemon, cond, limit: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(int(limit / 0.05)):
            if task.done():
                break
            if await cond():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("condition not reached in time")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


def expected_values(meter: SimMeter) -> dict[str, float]:
    exp: dict[str, float] = {}
    names = ("A+", "A-", "R+", "R-")
    for tariff in range(5):
        for name, v in zip(names, meter.expected_energy(tariff)):
            if v is not None:
                exp[name + (f".T{tariff}" if tariff else "")] = v
    exp.update(meter.expected_instant())
    return exp


async def test_daemon_polls_tcp_and_pty_meters_and_the_exact_values_arrive_upstream(tmp_path, receiver):
    tcp_meters = [sim_meter(1, "41000001"), sim_meter(2, "41000002")]
    pty_meters = [sim_meter(7, "42000007", refuse_group_reads=True)]  # exercises the 08 11 fallback
    server = await serve_tcp(SimBus(tcp_meters), "127.0.0.1", 0)
    pty = await open_pty(SimBus(pty_meters))
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n' \
            f'[[lines]]\nname = "rs485"\ntype = "serial"\ndevice = "{pty.device}"\nbaudrate = 9600\n'
    meters = meter_toml("t1", "conv", 1, "41000001") + meter_toml("t2", "conv", 2, "41000002") + \
        meter_toml("s7", "rs485", 7, "42000007")
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines, meters=meters, sink_url=receiver.url))
    daemon = Daemon(cfg, tmp_path)
    want = {"t1": expected_values(tcp_meters[0]), "t2": expected_values(tcp_meters[1]),
            "s7": expected_values(pty_meters[0])}

    async def all_arrived() -> bool:
        got = receiver.latest()
        return all((m, c) in got for m, exp in want.items() for c in exp)

    try:
        await run_until(daemon, all_arrived)
    finally:
        server.close()
        pty.close()
    got = receiver.latest()
    for meter, exp in want.items():
        assert len(exp) >= 45
        for channel, value in exp.items():
            assert got[(meter, channel)] == pytest.approx(value, abs=1e-9), (meter, channel)
    # every reading upstream is also in the store, once
    store = await Store.open_readonly(tmp_path / "pollerd.db")
    rows, total = await store.query_readings(per_page=1000)
    await store.close()
    keys = {(r["meter"], r["channel"], r["archive"], r["ts"]) for r in receiver.readings}
    assert total == len(rows) >= len(keys) and len(keys) == len(receiver.readings)
    # graceful stop closed the sessions
    assert all(m.level == 0 for m in tcp_meters + pty_meters)
    assert daemon.runtime.meters["t1"].identity["serial"] == "41000001"


async def test_dead_meter_degrades_and_never_holds_up_healthy_ones(tmp_path):
    healthy = sim_meter(1, "41000001")
    server = await serve_tcp(SimBus([healthy]), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    meters = meter_toml("ok", "conv", 1, interval="1s") + meter_toml("dead", "conv", 9, interval="1s")
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines, meters=meters, sink_url=None))
    daemon = Daemon(cfg, tmp_path)
    st = daemon.runtime.meters

    async def degraded_and_healthy_kept_going() -> bool:
        return "dead" in st and st["dead"].degraded and st["ok"].polls >= 5

    try:
        await run_until(daemon, degraded_and_healthy_kept_going, limit=25)
    finally:
        server.close()
    assert st["ok"].consecutive_failures == 0 and st["ok"].failures == 0
    assert st["dead"].readings == 0 and "no complete reply" in (st["dead"].last_error or "")


async def test_identity_mismatch_is_an_event_and_no_reading(tmp_path):
    server = await serve_tcp(SimBus([sim_meter(1, "41000001")]), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines,
                                   meters=meter_toml("m", "conv", 1, "41000999"), sink_url=None))
    daemon = Daemon(cfg, tmp_path)

    async def polled() -> bool:
        return "m" in daemon.runtime.meters and daemon.runtime.meters["m"].polls >= 1

    try:
        await run_until(daemon, polled)
    finally:
        server.close()
    store = await Store.open_readonly(tmp_path / "pollerd.db")
    rows, total = await store.query_readings()
    events, n_events = await store.query_events()
    await store.close()
    assert total == 0
    assert events[0].code == "identity_mismatch"
    assert "41000001" in events[0].text and "41000999" in events[0].text


async def test_bad_frames_are_counted_and_never_become_readings(tmp_path, receiver):
    meter = sim_meter(1, "41000001")
    bus = SimBus([meter])
    server = await serve_tcp(bus, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines,
                                   meters=meter_toml("m", "conv", 1, retries=0), sink_url=receiver.url))
    daemon = Daemon(cfg, tmp_path)
    for fault in ("crc", "wrong_address", "garbage", "truncate", "echo"):
        bus.inject(fault)
    want = expected_values(meter)

    async def clean_cycle_arrived() -> bool:
        return bus.pending_faults == 0 and all(("m", c) in receiver.latest() for c in want)

    try:
        await run_until(daemon, clean_cycle_arrived)
    finally:
        server.close()
    got = receiver.latest()
    assert {c: got[("m", c)] for c in want} == pytest.approx(want)
    errors = daemon.metrics.counter("pollerd_frame_errors_total", "", ("meter", "kind"))
    kinds = {k[1]: v for k, v in errors.values.items()}
    assert kinds.get("crc", 0) >= 1 and kinds.get("address", 0) >= 1
    # values upstream are only ever what the meter holds
    for r in receiver.readings:
        assert r["value"] == pytest.approx(want[r["channel"]])


async def test_session_timeout_status_5_reopens_and_retries(tmp_path):
    now = [FROZEN]
    meter = SimMeter(address=1, serial="41000001", clock=lambda: now[0], session_timeout=60.0)
    opens: list[float] = []
    handle = meter.handle

    def counting(frame: bytes) -> bytes | None:
        if frame[1] == 0x01:
            opens.append(now[0])
        reply = handle(frame)
        if frame[1] == 0x05 and frame[3] == 0 and len(opens) == 1:
            now[0] += 120.0  # the meter's session times out after the first energy read
        return reply

    meter.handle = counting  # type: ignore[method-assign]
    server = await serve_tcp(SimBus([meter]), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines,
                                   meters=meter_toml("m", "conv", 1, interval="1h"), sink_url=None))
    runtime, metrics = Runtime("t"), Registry()
    line = build_lines(cfg, runtime, metrics)["conv"]
    drv = build_driver(cfg.meter("m"), line, runtime, metrics)
    try:
        result = await drv.poll(int(FROZEN))
    finally:
        await line.close()
        server.close()
    assert result.ok, result.error
    assert len(opens) == 2, opens          # the status 5 reply made the driver reopen exactly once
    assert len(result.readings) >= 45


async def test_usb_adapter_that_disappears_is_reopened(tmp_path):
    link = tmp_path / "ttyUSB0"
    meter = sim_meter(1, "41000001")
    pty = await open_pty(SimBus([meter]), link=link)
    lines = f'[[lines]]\nname = "usb"\ntype = "serial"\ndevice = "{link}"\nreconnect_min = "100ms"\n' \
            f'reconnect_max = "300ms"\n'
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines, meters=meter_toml("m", "usb", 1),
                                   sink_url=None))
    daemon = Daemon(cfg, tmp_path)
    st = daemon.runtime
    phase = {"unplugged": False, "replugged": None}

    async def survives_unplug() -> bool:
        ms = st.meters.get("m")
        if ms is None or ms.readings == 0:
            return False
        if not phase["unplugged"]:
            pty.close()  # the adapter vanishes, and its device node with it
            phase["unplugged"] = True
            phase["base"] = ms.readings
            return False
        if phase["replugged"] is None and ms.failures >= 1:
            phase["replugged"] = await open_pty(SimBus([meter]), link=link)
            return False
        return phase["replugged"] is not None and ms.readings > phase["base"] and ms.last_error is None

    try:
        await run_until(daemon, survives_unplug, limit=30)
    finally:
        pty.close()
        if phase["replugged"] is not None:
            phase["replugged"].close()
    assert st.lines["usb"].reconnects >= 2


async def test_overrunning_cycle_is_skipped_and_counted(tmp_path):
    meter = sim_meter(1, "41000001")
    server = await serve_tcp(SimBus([meter]), "127.0.0.1", 0, latency=0.08)  # ~20 exchanges: > 1 s
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines, meters=meter_toml("m", "conv", 1),
                                   sink_url=None))
    daemon = Daemon(cfg, tmp_path)

    async def skipped() -> bool:
        return "m" in daemon.runtime.meters and daemon.runtime.meters["m"].skipped >= 1

    try:
        await run_until(daemon, skipped)
    finally:
        server.close()
    st = daemon.runtime.meters["m"]
    assert st.polls >= 1 and st.failures == 0


# -- the command line, as an engineer uses it --------------------------------------------------------

def pollerd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pollerd", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def sim_process():
    proc = subprocess.Popen([sys.executable, "-m", "pollerd", "sim", "mercury230", "--tcp", "127.0.0.1:0",
                             "--addresses", "1,2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        import re
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert m, f"simulator did not say where it listens: {line!r}"
        yield int(m.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_poll_command_prints_json_readings_and_exit_codes(tmp_path, sim_process):
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {sim_process}\n'
    meters = meter_toml("m1", "conv", 1) + meter_toml("m9", "conv", 9)
    cfg = write_config(tmp_path / "p.toml", lines=lines, meters=meters, sink_url=None)
    r = pollerd("poll", "--config", str(cfg), "m1", "--json")
    assert r.returncode == 0, r.stderr
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert "identity: serial " in r.stderr  # what the meter said about itself; stdout stays JSON lines
    assert {"A+", "A+.T1", "U.L1", "I.L3", "P", "F"} <= {x["channel"] for x in rows}
    assert all(set(x) >= {"meter", "channel", "archive", "ts", "value", "unit"} for x in rows)
    r = pollerd("poll", "--config", str(cfg), "m9")
    assert r.returncode == 1 and "no complete reply" in r.stderr
    r = pollerd("poll", "--config", str(cfg), "nope")
    assert r.returncode == 78 and "no meter named 'nope'" in r.stderr


def test_check_command_exit_codes(tmp_path):
    good = Path(__file__).resolve().parents[1] / "config" / "pollerd.example.toml"
    r = pollerd("check", str(good))
    assert r.returncode == 0 and "OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[meters]]\nname = "x"\nprotocol = "mercury230"\nip_address = "127.0.0.1"\nport = 1\n'
                   'connection_address = 1\ndays_of_month = [32]\n')
    r = pollerd("check", str(bad))
    assert r.returncode == 78
    assert "bad.toml:7: meters[0].days_of_month[0]: 32 is not in 1..31" in r.stderr
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n")
    r = pollerd("check", str(empty))  # valid, but worth a word: a daemon with nothing to do
    assert r.returncode == 0 and "warning: no enabled meters" in r.stdout
    no_sink = tmp_path / "no-sink.toml"
    no_sink.write_text('[[meters]]\nname = "x"\nprotocol = "mercury230"\nip_address = "127.0.0.1"\nport = 1\n'
                       'connection_address = 1\n')
    r = pollerd("check", str(no_sink))
    assert r.returncode == 0 and "warning: no sinks" in r.stdout and "no enabled meters" not in r.stdout


def test_sigterm_stops_the_daemon_cleanly_with_everything_stored(tmp_path, sim_process):
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {sim_process}\n'
    cfg = write_config(tmp_path / "p.toml", lines=lines, meters=meter_toml("m1", "conv", 1), sink_url=None)
    proc = subprocess.Popen([sys.executable, "-m", "pollerd", "run", "--config", str(cfg), "--state-dir",
                             str(tmp_path / "state")], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            r = pollerd("readings", "--state-dir", str(tmp_path / "state"), "--json")
            if r.returncode == 0 and r.stdout.strip():
                break
            import time
            time.sleep(0.1)
        else:
            pytest.fail("no readings stored")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()  # type: ignore[union-attr]
    assert "pollerd stopped" in err
    r = pollerd("readings", "--state-dir", str(tmp_path / "state"), "--meter", "m1", "--json")
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert len({x["channel"] for x in rows}) >= 45


async def test_wrong_password_is_a_clear_error_and_no_reading(tmp_path):
    server = await serve_tcp(SimBus([sim_meter(1, "41000001")]), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines,
                                   meters=meter_toml("m", "conv", 1, password='"123456"'), sink_url=None))
    runtime, metrics = Runtime("t"), Registry()
    line = build_lines(cfg, runtime, metrics)["conv"]
    drv = build_driver(cfg.meter("m"), line, runtime, metrics)
    try:
        result = await drv.poll(int(FROZEN))
    finally:
        await line.close()
        server.close()
    assert result.readings == () and not result.ok
    assert "open channel at access level 1 refused" in (result.error or "")
    assert "123456" not in (result.error or "")


async def test_password_bytes_never_reach_logs_or_errors(tmp_path, caplog):
    """An open-channel request that times out is reported without its password bytes."""
    import logging
    caplog.set_level(logging.DEBUG)
    server = await serve_tcp(SimBus([sim_meter(1, "41000001")]), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines = f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
    # no meter at address 9: the open-channel request (with the password) times out
    cfg = load_config(write_config(tmp_path / "p.toml", lines=lines,
                                   meters=meter_toml("m", "conv", 9, password='"975312"', retries=0),
                                   sink_url=None))
    runtime, metrics = Runtime("t"), Registry()
    line = build_lines(cfg, runtime, metrics)["conv"]
    drv = build_driver(cfg.meter("m"), line, runtime, metrics)
    try:
        result = await drv.poll(int(FROZEN))
    finally:
        await line.close()
        server.close()
    assert not result.answered and "09 01 01 ** ** ** ** ** **" in (result.error or "")
    secret_hex = "09 07 05 03 01 02"
    everything = (result.error or "") + "\n" + caplog.text
    assert secret_hex not in everything and "975312" not in everything


def test_scan_command_finds_mbus_meters_and_prints_loadable_snippets(tmp_path):
    import re
    proc = subprocess.Popen([sys.executable, "-m", "pollerd", "sim", "mbus", "--tcp", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"127\.0\.0\.1:(\d+)", first)
        assert m, first
        cfg = tmp_path / "p.toml"
        cfg.write_text(f'[[lines]]\nname = "mbus"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {m.group(1)}\n')
        r = pollerd("scan", "--config", str(cfg), "mbus", "--primary", "0-10", timeout=120)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("[[meters]]") == 2
    # the printed tables, pasted under the line they were found on, are a valid config
    cfg.write_text(cfg.read_text() + "\n" + r.stdout)
    check = pollerd("check", str(cfg))
    assert check.returncode == 0, check.stderr + r.stdout
