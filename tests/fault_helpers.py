"""The real daemon behind a fault rig (pollerd.sim.faultrig), for the fault tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from pollerd.config import load_config
from pollerd.daemon import Daemon


async def run_daemon(cfg_path: Path, state_dir: Path,
                     until: Callable[[Daemon], Awaitable[bool] | bool], limit: float) -> Daemon:
    """Run the daemon until ``until(daemon)`` holds or ``limit`` seconds passed; return it, stopped."""
    daemon = Daemon(load_config(cfg_path), state_dir)
    task = asyncio.ensure_future(daemon.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    try:
        while loop.time() < end and not task.done():
            res = until(daemon)
            if not isinstance(res, bool):
                res = await res
            if res:
                break
            await asyncio.sleep(0.05)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
    return daemon
