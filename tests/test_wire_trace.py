"""Seeing the wire while commissioning: the pollerd.wire logger, a line's `trace = true`, `pollerd poll --trace`
(frames with timestamps and reply times, passwords masked) and the identity `pollerd poll` prints."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fakes import FakeLink, bytewise

from pollerd.config import LineConfig
from pollerd.errors import ReplyTimeout, TransportError
from pollerd.line import Line
from pollerd.metrics import Registry
from pollerd.protocols import mercury230 as m
from pollerd.state import LineState

U1_REQ = m.read_aux(0, 0x11)
U1_REPLY = bytes.fromhex("00 00 40 5E B0 1C")


def make_line(link: FakeLink, **kw: object) -> Line:
    one_shot = bool(kw.pop("one_shot", False))
    kw = {"reconnect_min": 0.05, "reconnect_max": 0.2, **kw}
    cfg = LineConfig(name="bus", type="tcp", host="127.0.0.1", port=1, **kw)  # type: ignore[arg-type]
    line = Line(cfg, LineState("bus", "tcp"), Registry(), one_shot=one_shot)
    line.link = link  # type: ignore[assignment]
    return line


async def ask(line: Line, waiting_time: float = 0.5) -> m.Reply:
    return await line.exchange(U1_REQ.encode(), m.ReplyFramer(U1_REQ), waiting_time=waiting_time, pause=0.0,
                               meter="m1")


def wire_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pollerd.wire"]


async def test_no_trace_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await ask(make_line(FakeLink(lambda req: bytewise(U1_REPLY))))
    assert not wire_records(caplog)


async def test_debug_logger_shows_tx_and_rx_with_the_reply_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pollerd.wire")
    await ask(make_line(FakeLink(lambda req: bytewise(U1_REPLY))))
    tx, rx = (r.getMessage() for r in wire_records(caplog))
    assert tx == f"bus m1 TX {U1_REQ.encode().hex(' ')}"
    # The whole reply, even though it arrived one byte at a time, and how long it took.
    assert re.fullmatch(rf"bus m1 RX {U1_REPLY.hex(' ')} \(\d+ ms\)", rx)
    assert {r.levelno for r in wire_records(caplog)} == {logging.DEBUG}


async def test_a_line_with_trace_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await ask(make_line(FakeLink(lambda req: bytewise(U1_REPLY)), trace=True))
    assert [r.levelno for r in wire_records(caplog)] == [logging.INFO, logging.INFO]


async def test_a_timeout_shows_what_came_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pollerd.wire")
    with pytest.raises(ReplyTimeout):
        await ask(make_line(FakeLink(lambda req: [(0, U1_REPLY[:3])])), waiting_time=0.1)
    assert wire_records(caplog)[-1].getMessage() == "bus m1 RX 00 00 40 (no complete reply within 0.1s)"


async def test_the_password_of_an_open_request_is_masked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pollerd.wire")
    req = m.open_channel(0, 1, b"\x09\x08\x07\x06\x05\x04")  # what a driver sends, with its redacted form
    line = make_line(FakeLink(lambda r: bytewise(bytes.fromhex("00 00 01 b0"))))
    await line.exchange(req.encode(), m.ReplyFramer(req), waiting_time=0.3, pause=0.0, meter="m1",
                        shown=m.redacted(req))
    tx = wire_records(caplog)[0].getMessage()
    assert "** ** ** ** ** **" in tx and "09 08 07 06 05 04" not in tx


async def test_one_shot_line_promises_no_backoff(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    line = make_line(FakeLink(lambda req: [], fail_opens=5), one_shot=True, reconnect_min=5.0, reconnect_max=5.0)
    for _ in range(2):
        with pytest.raises(TransportError) as info:
            await ask(line)
        assert "backoff" not in str(info.value)
    assert not [r for r in caplog.records if "backoff" in r.getMessage()]


# --- pollerd poll, as an engineer runs it ----------------------------------------------------------------------

def pollerd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pollerd", *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def sim_port() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "pollerd", "sim", "mercury230", "--tcp", "127.0.0.1:0",
                             "--addresses", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        found = re.search(r"127\.0\.0\.1:(\d+)", proc.stdout.readline())  # type: ignore[union-attr]
        assert found
        yield int(found.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def config(tmp_path: Path, port: int) -> Path:
    p = tmp_path / "p.toml"
    p.write_text(f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
                 '[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "conv"\nconnection_address = 1\n'
                 'read = ["energy"]\nwaiting_time = "300ms"\n\n'
                 '[[meters]]\nname = "m9"\nprotocol = "mercury230"\nline = "conv"\nconnection_address = 9\n'
                 'waiting_time = "200ms"\nretries = 0\n')
    return p


def test_poll_trace_and_identity(tmp_path: Path, sim_port: int) -> None:
    cfg = config(tmp_path, sim_port)
    r = pollerd("poll", "-c", str(cfg), "m1", "--trace")
    assert r.returncode == 0, r.stderr
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z DEBUG pollerd\.wire: conv m1"
    tx = re.findall(rf"^{stamp} TX (.+)$", r.stderr, re.M)
    rx = re.findall(rf"^{stamp} RX (.+) \((\d+) ms\)$", r.stderr, re.M)
    assert len(tx) >= 3 and len(rx) == len(tx)
    # The open-channel request (code 01) carries the level-1 password 111111: masked, as raw and decode do.
    opens = [t for t in tx if t.split()[1] == "01"]
    assert opens and all(t.split()[3:9] == ["**"] * 6 for t in opens)
    ident = next(x for x in r.stdout.splitlines() if x.startswith("identity: "))
    assert re.search(r"serial \d+", ident) and "ku " in ident and "ki " in ident and "constant " in ident
    # Without --trace, no frames.
    r = pollerd("poll", "-c", str(cfg), "m1", "--json")
    assert "pollerd.wire" not in r.stderr
    rows = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert rows and all("channel" in x for x in rows)   # --json: stdout is reading lines only
    assert re.search(r"^identity: serial \d+", r.stderr, re.M)


def test_poll_error_names_the_meter_once(tmp_path: Path, sim_port: int) -> None:
    r = pollerd("poll", "-c", str(config(tmp_path, sim_port)), "m9")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("m9: ") and "m9: m9" not in last and last.count("m9:") == 1, last
