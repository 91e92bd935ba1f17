"""Logging: journald's native protocol against a fake journal socket (fields, multi-line values, the memfd
path for big records), the JOURNAL_STREAM check, the stderr format, repeat folding, and the fields the
daemon's call sites attach."""

from __future__ import annotations

import array
import asyncio
import fcntl
import io
import logging
import os
import re
import socket
import struct
from pathlib import Path

import pytest
from sd_helpers import write_config

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.logs import JournalHandler, RepeatFilter, encode_fields, setup_logging, under_journald


def parse_entry(data: bytes) -> dict[str, str]:
    """journald's side of the native protocol."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (n,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            fields[line.decode()] = data[start:start + n].decode()
            assert data[start + n:start + n + 1] == b"\n"
            i = start + n + 1
    return fields


class FakeJournal:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(5)

    def receive(self) -> dict[str, str]:
        fds = array.array("i")
        data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        if fds:  # the memfd form: the datagram is empty, the entry is the file's content
            assert data == b""
            # journald refuses a memfd that the sender could still change under it.
            seals = fcntl.fcntl(fds[0], fcntl.F_GET_SEALS)
            need = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
            assert seals & need == need, seals
            with os.fdopen(fds[0], "rb") as f:
                f.seek(0)  # journald maps the file; the shared offset is wherever the writer left it
                data = f.read()
        return parse_entry(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def journal(tmp_path):
    j = FakeJournal(tmp_path / "journal.sock")
    yield j
    j.close()


def make_logger(name: str, handler: logging.Handler) -> logging.Logger:
    lg = logging.getLogger(name)
    lg.handlers[:] = [handler]
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    return lg


def test_journal_records_carry_meter_line_and_sink_fields(journal):
    h = JournalHandler(journal.path)
    lg = make_logger("pollerd.test.journal", h)
    lg.warning("%s: poll failed: %s", "m17", "no answer", extra={"meter": "m17", "line": "rs485-1"})
    f = journal.receive()
    assert f["MESSAGE"] == "m17: poll failed: no answer"
    assert f["PRIORITY"] == "4" and f["SYSLOG_IDENTIFIER"] == "pollerd" and f["LOGGER"] == "pollerd.test.journal"
    assert f["METER"] == "m17" and f["LINE"] == "rs485-1" and "SINK" not in f
    assert f["CODE_FILE"].endswith("test_logs.py") and f["CODE_FUNC"].startswith("test_journal")
    lg.error("sink up: parked", extra={"sink": "up"})
    f = journal.receive()
    assert f["PRIORITY"] == "3" and f["SINK"] == "up" and "METER" not in f
    h.close()


def test_multiline_messages_use_the_length_prefixed_form(journal):
    h = JournalHandler(journal.path)
    lg = make_logger("pollerd.test.multiline", h)
    try:
        raise ValueError("boom=1\nsecond line")
    except ValueError:
        lg.exception("driver crashed", extra={"meter": "a=b"})
    f = journal.receive()
    assert f["MESSAGE"].startswith("driver crashed\nTraceback")
    assert "ValueError: boom=1\nsecond line" in f["MESSAGE"]
    assert f["METER"] == "a=b"
    assert encode_fields({"K": "x\ny"}) == b"K\n" + struct.pack("<Q", 3) + b"x\ny\n"
    h.close()


def test_records_too_big_for_a_datagram_go_as_a_sealed_memfd(journal):
    h = JournalHandler(journal.path)
    lg = make_logger("pollerd.test.big", h)
    big = "x" * (4 << 20)  # beyond any datagram size limit
    lg.warning("big: %s", big, extra={"meter": "m1"})
    f = journal.receive()
    assert f["MESSAGE"] == "big: " + big and f["METER"] == "m1"
    h.close()


def test_journal_unreachable_falls_back_to_stderr_with_priority_prefix(tmp_path):
    out = io.StringIO()
    # JOURNAL_STREAM naming this stream's file: journald mode, but the socket does not exist.
    with open(tmp_path / "stderr", "w") as f:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        lg = logging.getLogger("pollerd.test.fallback")
        lg.propagate = False
        h = setup_logging("INFO", environ=env, stream=f, journal_socket=str(tmp_path / "nope"), logger=lg)
        assert isinstance(h, JournalHandler)
        lg.warning("line l1: connection refused", extra={"line": "l1"})
        h.close()
        lg.handlers.clear()
    assert (tmp_path / "stderr").read_text() == "<4>WARNING pollerd.test.fallback: line l1: connection refused\n"
    del out


def test_journal_stream_must_match_our_stderr(tmp_path):
    with open(tmp_path / "a", "w") as a, open(tmp_path / "b", "w") as b:
        st = os.fstat(a.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert under_journald(env, a)
        assert not under_journald(env, b)  # inherited variable, stderr redirected elsewhere
        assert not under_journald({}, a)
        assert not under_journald({"JOURNAL_STREAM": "garbage"}, a)


def test_plain_stderr_outside_journald(journal):
    out = io.StringIO()
    lg = logging.getLogger("pollerd.test.stderr")
    lg.propagate = False
    h = setup_logging("WARNING", environ={}, stream=out, journal_socket=journal.path, logger=lg)
    assert not isinstance(h, JournalHandler)
    lg.info("not shown")
    lg.warning("shown", extra={"meter": "m1"})
    # Not under journald nothing else stamps a line: a UTC timestamp with milliseconds leads it.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING pollerd.test.stderr: shown\n",
                        out.getvalue())
    # Installing again replaces our handler instead of doubling every line.
    setup_logging("WARNING", environ={}, stream=out, logger=lg)
    lg.warning("once")
    assert out.getvalue().count("once") == 1
    lg.handlers.clear()
    journal.sock.settimeout(0.1)
    with pytest.raises(TimeoutError):
        journal.receive()


def test_repeated_identical_errors_are_folded_with_a_count():
    now = [0.0]
    out = io.StringIO()
    h = logging.StreamHandler(out)
    h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    h.addFilter(RepeatFilter(300.0, clock=lambda: now[0]))
    lg = make_logger("pollerd.test.repeat", h)
    lg.warning("m1: poll failed: %s", "no answer")
    for _ in range(57):
        now[0] += 5
        lg.warning("m1: poll failed: %s", "no answer")
        lg.info("m1: info is never folded")
    lg.warning("m2: poll failed: no answer")  # another message is not held back by m1's run
    now[0] = 301.0
    lg.warning("m1: poll failed: %s", "no answer")
    now[0] = 302.0
    lg.warning("m1: poll failed: %s", "no answer")  # a new window: held back again
    now[0] = 1000.0
    lg.warning("m1: poll failed: %s", "no answer")
    lines = out.getvalue().splitlines()
    assert lines.count("INFO m1: info is never folded") == 57
    warn = [ln for ln in lines if ln.startswith("WARNING")]
    assert warn == [
        "WARNING m1: poll failed: no answer",
        "WARNING m2: poll failed: no answer",
        "WARNING m1: poll failed: no answer (repeated 57 times in the last 5 min)",
        "WARNING m1: poll failed: no answer (repeated 1 time in the last 12 min)",
    ]


def test_copies_still_counted_at_exit_are_logged_once(tmp_path):
    # A meter that went silent 3 minutes before a stop: its folded copies are said at exit, not lost.
    script = tmp_path / "run.py"
    script.write_text(
        "import logging, sys\n"
        "from pollerd.logs import setup_logging\n"
        "setup_logging('INFO', environ={}, stream=sys.stderr)\n"
        "log = logging.getLogger('pollerd.daemon')\n"
        "for _ in range(13):\n"
        "    log.warning('m1: poll failed: no answer')\n"
        "log.warning('m2: poll failed: no answer')\n")
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "poll failed" in ln]
    assert len(lines) == 3 and lines[0].endswith("m1: poll failed: no answer")
    assert lines[1].endswith("m2: poll failed: no answer")
    assert lines[2].endswith("m1: poll failed: no answer (repeated 12 more times in the last 0 s, until exit)")


def test_repeat_filter_memory_is_bounded():
    f = RepeatFilter(300.0, max_keys=10)
    for i in range(1000):
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, f"distinct {i}", None, None)
        assert f.filter(rec)
    assert len(f._seen) == 10


async def test_daemon_call_sites_attach_meter_and_line_fields(tmp_path):
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    h = Collect(logging.WARNING)
    root = logging.getLogger("pollerd")
    root.addHandler(h)
    daemon = Daemon(load_config(write_config(tmp_path / "p.toml", meters=1)), tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(600):
            if any(getattr(r, "meter", None) == "m0" and "poll failed" in r.getMessage() for r in records) \
                    and any(getattr(r, "line", None) == "l0" and r.name == "pollerd.line" for r in records):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail([r.getMessage() for r in records])
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        root.removeHandler(h)
    poll = next(r for r in records if "poll failed" in r.getMessage())
    assert poll.line == "l0"  # type: ignore[attr-defined]
