"""A fake link for line and driver tests: a scripted peer whose replies can be split, delayed, dropped and
corrupted, standing where the TCP or serial link normally is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pollerd.errors import TransportError

# responder(request) -> list of (delay_seconds, chunk) to deliver, or [] for silence
Responder = Callable[[bytes], "list[tuple[float, bytes]]"]


class FakeLink:
    def __init__(self, responder: Responder, *, fail_opens: int = 0) -> None:
        self.responder = responder
        self.fail_opens = fail_opens
        self.opens = 0
        self.open_attempts = 0
        self.written: list[tuple[float, bytes]] = []   # (loop time, request)
        self.in_flight = False
        self.overlaps = 0
        self._buf = bytearray()
        self._event = asyncio.Event()
        self._open = False
        self._tasks: set[asyncio.Task] = set()
        self.describe = "fake"

    @property
    def connected(self) -> bool:
        return self._open

    async def open(self) -> None:
        self.open_attempts += 1
        if self.fail_opens > 0:
            self.fail_opens -= 1
            raise TransportError("fake: cannot open")
        self._open = True
        self.opens += 1

    def drop(self) -> None:
        """Simulate the peer going away (USB adapter unplugged, TCP reset)."""
        self._open = False
        self._event.set()

    def write(self, data: bytes) -> None:
        if not self._open:
            raise TransportError("fake: not open")
        if self.in_flight:
            self.overlaps += 1
        self.in_flight = True
        loop = asyncio.get_running_loop()
        self.written.append((loop.time(), bytes(data)))
        plan = self.responder(bytes(data))
        t = asyncio.ensure_future(self._deliver(plan))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _deliver(self, plan: list[tuple[float, bytes]]) -> None:
        for delay, chunk in plan:
            if delay:
                await asyncio.sleep(delay)
            self._buf += chunk
            self._event.set()

    def discard_input(self) -> bytes:
        self.in_flight = False
        stale = bytes(self._buf)
        self._buf.clear()
        return stale

    async def read_chunk(self, deadline: float | None = None) -> bytes:
        """Like Link.read_chunk: TimeoutError once the loop clock reaches ``deadline`` with nothing read."""
        loop = asyncio.get_running_loop()
        while not self._buf:
            if not self._open:
                raise TransportError("fake: lost")
            self._event.clear()
            if deadline is None:
                await self._event.wait()
                continue
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError
            try:
                await asyncio.wait_for(self._event.wait(), left)
            except asyncio.TimeoutError:
                if not self._buf:
                    raise TimeoutError from None
        chunk = bytes(self._buf)
        self._buf.clear()
        return chunk

    async def close(self) -> None:
        self._open = False
        for t in list(self._tasks):
            t.cancel()


def bytewise(reply: bytes, gap: float = 0.001) -> list[tuple[float, bytes]]:
    """Deliver a reply one byte at a time with a small gap between bytes."""
    return [(gap, reply[i:i + 1]) for i in range(len(reply))]


def idle_daemon_with_meter(tmp_path: Path) -> tuple[Any, Any, Any]:
    """A daemon that is not running (no API, no lines) and one meter's state ``a`` in its runtime, with a
    stand-in for the meter's config: enough to drive ``daemon.runner._record`` cycle by cycle."""
    from pollerd.config import load_config
    from pollerd.daemon import Daemon
    from pollerd.state import MeterState
    p = tmp_path / "p.toml"
    p.write_text('[api]\nenabled = false\n')
    d = Daemon(load_config(p), tmp_path / "state")
    mc = type("Mc", (), {"name": "a", "line": "l", "protocol": "mercury230"})()
    st = d.runtime.meters["a"] = MeterState("a", "mercury230", "l", 1, 60.0)
    return d, mc, st
