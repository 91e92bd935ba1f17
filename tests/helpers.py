"""Small helpers shared by the tests: a free loopback port, an aiohttp app served on loopback, and a bounded
wait for a condition."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def serve(app: web.Application, *, shutdown_timeout: float = 60.0) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free 127.0.0.1 port; returns the runner (``await runner.cleanup()`` to stop) and
    the base URL ``http://127.0.0.1:PORT``."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def until(cond: Callable[[], object], limit: float = 20.0, what: str = "condition") -> None:
    """Wait until ``cond()`` is true, checking every 50 ms; fail the test after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if cond():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"{what} not reached within {limit} s")
