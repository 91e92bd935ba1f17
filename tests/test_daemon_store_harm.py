"""The daemon and its store under harm (issue 14, observations 3, 4 and 8): one daemon per state directory;
a store deleted while the daemon runs, or corrupt at its start, shows in /health and the daemon goes on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
from helpers import free_port, until

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.errors import AlreadyRunning
from pollerd.store import guard as store_guard

EX_TEMPFAIL = 75


def config_text(line_port: int, api_port: int) -> str:
    # Nothing listens on the line's port: the meter fails, which is all these tests need.
    return (f'[gateway]\nname = "gw"\n\n[store]\ncommit_interval = "100ms"\n\n'
            f'[api]\nlisten = "127.0.0.1:{api_port}"\n\n'
            f'[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {line_port}\n\n'
            f'[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "A"\nconnection_address = 1\n'
            f'interval_time = "1h"\nwaiting_time = "500ms"\nread = ["energy"]\n\n')


def write_config(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(config_text(free_port(), free_port()))
    return cfg


async def start(cfg: Path, state: Path) -> tuple[Daemon, asyncio.Future[int]]:
    d = Daemon(load_config(cfg), state)
    task = asyncio.ensure_future(d.run())
    await until(lambda: d.ready.is_set() or task.done(), what="daemon ready")
    assert not task.done(), task.result()
    return d, task


async def health(d: Daemon) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.api_port}/health") as r:
        return r.status, await r.json()


def pollerd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pollerd", *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=60)


async def test_a_second_daemon_on_the_same_state_directory_is_refused(tmp_path):
    cfg, state = write_config(tmp_path), tmp_path / "state"
    d, task = await start(cfg, state)
    try:
        # In this process (another open file of the lock): refused before its store opens.
        other = Daemon(load_config(write_config(tmp_path / "b")), state)
        try:
            await asyncio.wait_for(other.run(), 10)  # without the lock it would run (and forward) alongside
            raise AssertionError("a second daemon ran")
        except AlreadyRunning as exc:
            assert f"pid {os.getpid()}" in str(exc)
        # From the command line: one line naming the holder, exit 75 (systemd restarts it later).
        cfg2 = write_config(tmp_path / "c")
        res = await asyncio.to_thread(pollerd, "run", "--config", str(cfg2), "--state-dir", str(state))
        assert res.returncode == EX_TEMPFAIL, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {os.getpid()}" in lines[0] and "Traceback" not in res.stderr, lines
        # One-shot commands still read the store while the daemon runs.
        res = await asyncio.to_thread(pollerd, "readings", "--state-dir", str(state))
        assert res.returncode == 0, res.stderr
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    # Released at the end: the next daemon starts.
    d, task = await start(cfg, state)
    d.request_stop()
    assert await asyncio.wait_for(task, 30) == 0


async def test_a_store_deleted_under_the_daemon_is_saved_and_fails_health(tmp_path, monkeypatch):
    monkeypatch.setattr(store_guard, "WATCH_EVERY", 0.05)
    cfg, state = write_config(tmp_path), tmp_path / "state"
    d, task = await start(cfg, state)
    try:
        db = state / "pollerd.db"
        status, body = await health(d)
        assert not any("store" in str(r) for r in body["reasons"]), body  # type: ignore[union-attr]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        await until(lambda: db.exists() and d.store.notices, what="store saved back")
        status, body = await health(d)
        assert status == 503
        assert any(str(r).startswith("store deleted:") for r in body["reasons"]), body  # type: ignore[union-attr]
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_a_daemon_whose_store_is_corrupt_at_start_keeps_running_on_a_fresh_one(tmp_path):
    cfg, state = write_config(tmp_path), tmp_path / "state"
    state.mkdir()
    (state / "pollerd.db").write_bytes(b"definitely not SQLite " * 1000)
    d, task = await start(cfg, state)
    try:
        status, body = await health(d)
        assert status == 503
        assert any(str(r).startswith("store corrupt:") for r in body["reasons"]), body  # type: ignore[union-attr]
        assert [p.name for p in state.iterdir() if p.name.startswith("pollerd.db.corrupt-")]
        assert "m1" in d.meters  # the gateway keeps polling
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
