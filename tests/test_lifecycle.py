"""Lifecycle under systemd (review-lifecycle): start-up failures, shutdown with a failing store, signals."""

from __future__ import annotations

import asyncio

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
