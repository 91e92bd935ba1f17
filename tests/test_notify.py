"""sd_notify: a datagram socket stands in for systemd. The real daemon (as `python -m pollerd run`, and
in-process) must send READY=1, STATUS=, WATCHDOG=1 while it makes progress, STOPPING=1 on SIGTERM, and
stop pinging when its store hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest
from sd_helpers import NotifyListener, write_config

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.daemon.notify import Notifier, Watchdog, status_line, watchdog_interval
from pollerd.errors import StoreError
from pollerd.state import LineState, MeterState, Runtime, SinkState

PY = sys.executable


# -- the wire ----------------------------------------------------------------------------------------

def test_notifier_sends_to_a_path_and_to_the_abstract_namespace(tmp_path):
    for listener in (NotifyListener(tmp_path / "n.sock"), NotifyListener()):
        try:
            n = Notifier(listener.address, use_libsystemd=False)
            assert n.send("READY=1", "STATUS=hello")
            n.close()
            deadline = time.monotonic() + 5
            while not listener.drain() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert listener.messages == ["READY=1\nSTATUS=hello"]
        finally:
            listener.close()


def test_notifier_never_raises_when_systemd_is_gone(tmp_path, caplog):
    n = Notifier(str(tmp_path / "missing.sock"), use_libsystemd=False)
    assert n.send("WATCHDOG=1") is False
    assert n.send("WATCHDOG=1") is False
    assert sum("notification" in r.message for r in caplog.records) == 1  # logged once, not per ping
    assert Notifier.from_env({}) is None


def test_watchdog_interval_honours_usec_and_pid():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) == 0.5
    # Meant for another process (a wrapper passed the variables on): not ours to ping.
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, pid=4242) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


# -- progress rules, with a fake daemon and a fake monotonic clock ----------------------------------------

@dataclass
class FakeStore:
    writer_running: bool = True

    async def flush(self) -> None:
        return None

    async def last_seq(self) -> int:
        return 0


@dataclass
class FakeDaemon:
    runtime: Runtime
    wall: float = 1_000_000.0
    store: FakeStore = field(default_factory=FakeStore)

    def clock(self) -> float:
        return self.wall


def fake_daemon() -> FakeDaemon:
    rt = Runtime("gw")
    rt.lines["a"] = LineState("a", "tcp")
    rt.lines["b"] = LineState("b", "tcp")
    rt.meters["m1"] = MeterState("m1", "mercury230", "a", 1, 60.0)
    rt.meters["m2"] = MeterState("m2", "mercury230", "b", 2, 60.0)
    return FakeDaemon(rt)


def test_a_due_line_without_activity_is_a_stall_and_activity_clears_it():
    d = fake_daemon()
    mono = [0.0]
    wd = Watchdog(d, 1.0, stall_after=100.0, monotonic=lambda: mono[0])  # type: ignore[arg-type]
    wd.store_ok_at = 1e9  # store checks are covered below
    d.runtime.meters["m1"].next_run = d.wall - 5      # due: in a cycle or queued for the bus
    d.runtime.meters["m2"].next_run = d.wall + 3600   # sleeping until its next cycle
    assert wd.check().ok
    mono[0] = 99.0
    assert wd.check().ok
    mono[0] = 101.0
    verdict = wd.check()
    assert not verdict.ok and "line(s) a " in verdict.reason
    d.runtime.lines["a"].exchanges += 1  # the bus moved: progress
    assert wd.check().ok
    mono[0] = 150.0
    assert wd.check().ok
    # The sleeping line never stalls however long it sleeps.
    mono[0] = 10_000.0
    d.runtime.lines["a"].exchanges += 1
    assert wd.check().ok


def test_a_wall_clock_step_does_not_fake_a_stall():
    d = fake_daemon()
    mono = [0.0]
    wd = Watchdog(d, 1.0, stall_after=100.0, monotonic=lambda: mono[0])  # type: ignore[arg-type]
    wd.store_ok_at = 1e9
    d.runtime.meters["m1"].next_run = d.wall + 30
    assert wd.check().ok
    d.wall += 7200  # NTP steps the clock two hours forward at boot: m1 is now two hours "late"
    mono[0] = 60.0
    assert wd.check().ok  # stall time counts from when the notifier saw it due, on the monotonic clock


async def test_store_probe_must_complete_within_the_watchdog_period():
    d = fake_daemon()
    mono = [0.0]
    wd = Watchdog(d, 1.0, monotonic=lambda: mono[0])  # type: ignore[arg-type]
    wd.start_probe()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert wd.store_ok_at == 0.0 and wd.check().ok
    hang = asyncio.Event()

    async def stuck() -> None:
        await hang.wait()

    d.store.flush = stuck  # type: ignore[method-assign]
    mono[0] = 1.0
    wd.start_probe()
    await asyncio.sleep(0.01)
    mono[0] = 2.5  # beyond WatchdogSec (2 x 1.0 s) since the last completed probe
    verdict = wd.check()
    assert not verdict.ok and "store not answering" in verdict.reason
    hang.set()
    await asyncio.sleep(0.01)
    assert wd.check().ok
    wd.cancel()


def test_status_line_is_one_line_summary():
    d = fake_daemon()
    d.runtime.meters["m2"].degraded = True
    d.runtime.sinks["up"] = SinkState("up", "http", lag_seconds=12.4)
    assert status_line(d.runtime) == "polling 2 meters on 2 lines, 1 degraded, sink lag 12 s"


# -- the real daemon ---------------------------------------------------------------------------------------

def test_daemon_process_notifies_ready_status_watchdog_and_stopping(tmp_path):
    cfg = write_config(tmp_path / "p.toml", meters=3)
    listener = NotifyListener()  # abstract-namespace address, as systemd itself uses on newer releases
    env = dict(os.environ, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([PY, "-m", "pollerd", "run", "--config", str(cfg), "--state-dir",
                             str(tmp_path / "state")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listener.wait_for("READY=1", 60)
        ready_at = len(listener.messages)
        assert any(line.startswith("STATUS=polling 3 meters on 1 line") for line in listener.lines())
        listener.wait_for("WATCHDOG=1", 30, after=ready_at)
        n = len(listener.messages)
        listener.wait_for("WATCHDOG=1", 30, after=n)  # and it keeps pinging
        n = len(listener.messages)
        proc.send_signal(signal.SIGHUP)  # systemctl reload: RELOADING=1 with MONOTONIC_USEC, then READY=1
        reloading = listener.wait_for("RELOADING=1", 30, after=n)
        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
        listener.wait_for("READY=1", 30, after=listener.messages.index(reloading) + 1)
        proc.send_signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1", 30)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert "Traceback" not in out, out


async def test_a_hung_store_stops_the_watchdog_pings_and_recovery_resumes_them(tmp_path, monkeypatch):
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # ping every 0.5 s, "WatchdogSec" 1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = Daemon(load_config(write_config(tmp_path / "p.toml", meters=2)), tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())

    async def until(pred, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        end = time.monotonic() + limit
        while not pred():
            assert not task.done(), task
            assert time.monotonic() < end, listener.messages
            await asyncio.sleep(0.05)
            listener.drain()

    try:
        await until(lambda: listener.lines().count("WATCHDOG=1") >= 2)
        assert "READY=1" in listener.lines()
        # Inject a hang: every store flush from now on waits forever, as on a dead SD card.
        hang = asyncio.Event()
        real_flush = daemon.store.flush

        async def stuck_flush() -> None:
            await hang.wait()

        daemon.store.flush = stuck_flush  # type: ignore[method-assign]
        listener.drain()
        listener.messages.clear()
        await until(lambda: any("WATCHDOG: store not answering" in m for m in listener.messages))
        idx = next(i for i, m in enumerate(listener.messages) if "WATCHDOG: store not answering" in m)
        await asyncio.sleep(3.0)  # six ping intervals
        listener.drain()
        assert "WATCHDOG=1" not in [ln for m in listener.messages[idx:] for ln in m.split("\n")]
        # The store answers again: pings come back (the verdict is live, not latched).
        daemon.store.flush = real_flush  # type: ignore[method-assign]
        hang.set()
        n = len(listener.messages)
        await until(lambda: "WATCHDOG=1" in [ln for m in listener.messages[n:] for ln in m.split("\n")])
        daemon.request_stop()
        await until(lambda: "STOPPING=1" in listener.lines())
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        if not task.done():
            daemon.request_stop()
            await asyncio.wait_for(task, 30)
        listener.close()


def test_a_long_cloud_cycle_is_not_a_stall():
    # A cloud source has no bus (line ""): its cycle is many HTTP requests, each bounded by waiting_time,
    # and a large account's first backfill can run longer than stall_after. It blocks no other meter, so
    # it is a /health matter (a silent meter), not a restart -- which would only start the backfill again.
    d = fake_daemon()
    d.runtime.meters["acct"] = MeterState("acct", "rstech", "", 0, 3600.0)
    mono = [0.0]
    wd = Watchdog(d, 1.0, stall_after=100.0, monotonic=lambda: mono[0])  # type: ignore[arg-type]
    wd.store_ok_at = 1e9
    d.runtime.meters["acct"].next_run = d.wall - 5      # in its cycle since then
    d.runtime.meters["m1"].next_run = d.wall + 3600     # the bus meters sleep
    d.runtime.meters["m2"].next_run = d.wall + 3600
    assert wd.check().ok
    mono[0] = 10_000.0
    verdict = wd.check()
    assert verdict.ok, verdict.reason


async def test_a_dead_store_writer_stops_the_pings(tmp_path):
    # The group-commit writer ends when its SQLite connection dies under it (aiosqlite raises a bare
    # ValueError, which the ROLLBACK after the failed batch raises again): from then on every write and every
    # flush fails at once with "the writer task is not running". That is a store that cannot commit -- a
    # restart reopens it -- not a store that "answers with an error" (disk full), which stays /health's.
    from pollerd.model import Reading
    from pollerd.store import Store

    store = await Store.open(tmp_path / "p.db", commit_interval=0.0)
    try:
        async def dead(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise ValueError("no active connection")

        store._w.execute = dead  # type: ignore[union-attr,method-assign]
        # The write in flight fails (it used to wait for ever: its batch was dropped with the writer).
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.write([Reading("m1", "A+", "current", 1_700_000_000, 1.0, "Wh")]), 10)
        await asyncio.sleep(0.05)
        d = fake_daemon()
        d.store = store  # type: ignore[assignment]
        mono = [0.0]
        wd = Watchdog(d, 1.0, monotonic=lambda: mono[0])  # type: ignore[arg-type]
        for t in (1.0, 2.0, 3.0):
            mono[0] = t
            wd.start_probe()
            await asyncio.sleep(0.05)
        verdict = wd.check()
        assert not verdict.ok and "store not answering" in verdict.reason, verdict
    finally:
        del store._w.execute  # type: ignore[union-attr]
        await store.close()


async def test_a_long_store_open_asks_systemd_for_more_start_time(tmp_path, monkeypatch):
    # A migration of a large store can outlast TimeoutStartSec; killed, it would roll back and start over for ever.
    from pollerd.daemon import supervisor
    from pollerd.store import Store
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", listener.address)
    monkeypatch.setattr(supervisor, "OPEN_EXTEND_EVERY", 0.05)
    real_open = Store.open

    async def slow_open(*args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.5)  # as a migration would
        return await real_open(*args, **kwargs)

    monkeypatch.setattr(Store, "open", slow_open)
    daemon = Daemon(load_config(write_config(tmp_path / "p.toml", meters=1)), tmp_path / "state")
    task = asyncio.ensure_future(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        for _ in range(100):
            listener.drain()
            if "READY=1" in listener.lines():
                break
            await asyncio.sleep(0.05)
        lines = listener.lines()
        extends = [i for i, ln in enumerate(lines) if ln.startswith("EXTEND_TIMEOUT_USEC=")]
        assert len(extends) >= 3, lines                          # every 0.05 s during the 0.5 s open
        assert max(extends) < lines.index("READY=1")             # and none after it opened
        n = len(extends)
        await asyncio.sleep(0.3)
        listener.drain()
        assert sum(ln.startswith("EXTEND_TIMEOUT_USEC=") for ln in listener.lines()) == n
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        listener.close()
