"""Lifecycle under systemd (review-lifecycle): start-up failures, shutdown with a failing store, signals."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys

from helpers import free_port, until

from pollerd.config import load_config
from pollerd.daemon import Daemon
from pollerd.errors import StoreError


def config_text(port: int, *, sink_port: int | None = None) -> str:
    # Nothing listens on the line's port (nor the sink's): meters and sink fail, which is all these tests need.
    text = (f'[gateway]\nname = "gw"\n\n[store]\ncommit_interval = "100ms"\n\n'
            f'[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
            f'[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "A"\nconnection_address = 1\n'
            f'interval_time = "1h"\nwaiting_time = "500ms"\nread = ["energy"]\n\n')
    if sink_port is not None:
        text += (f'[[sinks]]\nname = "up"\ntype = "http"\nurl = "http://127.0.0.1:{sink_port}/in"\n'
                 f'retry_min = "1s"\nretry_max = "1s"\n\n')
    return text


async def test_sigterm_with_a_failing_store_still_stops_cleanly(tmp_path):
    """SIGTERM while the store fails its writes (disk full): the sink drain is skipped with a log line and
    the daemon stops with 0, its sinks stopped, instead of an ExceptionGroup traceback and exit 1."""
    path = tmp_path / "pollerd.toml"
    path.write_text(config_text(free_port(), sink_port=free_port()))
    d = Daemon(load_config(path), tmp_path / "state")
    task = asyncio.ensure_future(d.run())
    await until(lambda: d.ready.is_set() or task.done(), what="daemon ready")
    assert not task.done(), task.result()
    sink = d.sink_tasks["up"]

    async def failing_flush() -> None:
        raise StoreError("flush: a queued write failed: database or disk is full")

    d.store.flush = failing_flush  # type: ignore[method-assign]
    d.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert sink.done()


def _run(tmp_path, cfg, state_dir) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH (the worktree) comes with os.environ.
    return subprocess.run([sys.executable, "-m", "pollerd", "run", "--config", str(cfg), "--state-dir",
                           str(state_dir)], env=dict(os.environ), capture_output=True, text=True, timeout=60)


def test_api_port_in_use_is_a_clear_one_line_error_not_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "pollerd.toml"
        cfg.write_text(config_text(free_port()) + f'[api]\nlisten = "127.0.0.1:{port}"\n')
        proc = _run(tmp_path, cfg, tmp_path / "state")
    assert proc.returncode == 1, proc.stderr  # not 78: the other listener may go away (Restart=on-failure)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"pollerd: api: cannot listen on 127.0.0.1:{port}" in proc.stderr, proc.stderr


def test_state_directory_that_cannot_be_created_is_a_clear_error_not_a_traceback(tmp_path):
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(config_text(free_port()))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    proc = _run(tmp_path, cfg, blocker / "state")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "pollerd: cannot create the state directory" in proc.stderr, proc.stderr


async def test_one_prune_is_logged_once(tmp_path, monkeypatch, caplog):
    """The housekeeping prune: one log line (the store's: how many, before when, which sinks), not two."""
    import logging

    from pollerd.daemon import supervisor
    from pollerd.model import Reading
    from pollerd.store import Store

    path = tmp_path / "pollerd.toml"
    path.write_text(config_text(free_port()).replace('commit_interval = "100ms"', 'commit_interval = "100ms"\n'
                                                     'keep = "1d"'))
    s = await Store.open(tmp_path / "state" / "pollerd.db")
    await s.write([Reading("old", "A+", "current", 1_000_000 + i, 1.0, "Wh") for i in range(3)])
    await s.close()
    monkeypatch.setattr(supervisor, "HOUSEKEEPING_EVERY", 0.05)
    caplog.set_level(logging.INFO)
    d = Daemon(load_config(path), tmp_path / "state")
    task = asyncio.ensure_future(d.run())
    await until(lambda: any("pruned" in r.getMessage() for r in caplog.records) or task.done(), what="prune")
    await asyncio.sleep(0.2)  # a second line, if any, would come right after the first
    d.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    pruned = [r.getMessage() for r in caplog.records if "pruned" in r.getMessage()]
    assert len(pruned) == 1, pruned
    assert re.fullmatch(r"store: pruned 3 readings older than \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(the retention, keep\), "
                        r"delivered to \(no sinks\)", pruned[0])
