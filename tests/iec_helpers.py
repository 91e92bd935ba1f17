"""Shared helpers of the IEC 62056-21 tests: the wb-mqtt-serial session files (read from the shared folder at
test time, never copied: their licence restricts copying), a scripted peer that replays them, and a driver
wired to a fake link."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fakes import FakeLink
from vectors import vectors_dir

from pollerd.config import LineConfig, MeterConfig, Secret
from pollerd.drivers.base import BusDriverContext
from pollerd.drivers.iec62056 import Iec62056Driver, parse_options
from pollerd.line import Line
from pollerd.metrics import Registry
from pollerd.state import LineState, MeterState

Step = tuple[str, bytes]   # ("w", master bytes) or ("r", meter bytes)


def raw_dir() -> Path:
    return vectors_dir() / "iec62056-21" / "raw"


def sessions(name: str) -> list[list[Step]]:
    """The sessions of one wb-mqtt-serial .dat file: each from Open() to Close() (or the end)."""
    path = raw_dir() / f"wb-mqtt-serial__test_{name}.dat"
    if not path.is_file():
        pytest.skip(f"IEC vectors not found at {path}")
    out: list[list[Step]] = []
    cur: list[Step] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("Open()"):
            cur = []
            out.append(cur)
        elif line.startswith("Close()"):
            cur = None
        elif cur is not None and line.startswith((">> ", "<< ")):
            cur.append(("w" if line[0] == ">" else "r", bytes.fromhex(line[3:])))
    return out


class ScriptedPeer:
    """Answers each request with the recorded reply that follows it; records every request. A request that
    differs from the recording, or one past its end, gets no reply (the driver times out)."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = list(steps)
        self.pos = 0
        self.mismatch: tuple[bytes, bytes] | None = None

    def __call__(self, request: bytes) -> list[tuple[float, bytes]]:
        if self.mismatch is not None or self.pos >= len(self.steps):
            return []
        kind, want = self.steps[self.pos]
        if kind != "w" or want != request:
            self.mismatch = (want, request)
            return []
        self.pos += 1
        plan: list[tuple[float, bytes]] = []
        while self.pos < len(self.steps) and self.steps[self.pos][0] == "r":
            reply = self.steps[self.pos][1]
            # split in three to exercise reassembly
            cut1, cut2 = len(reply) // 3, 2 * len(reply) // 3
            plan += [(0.0005, reply[:cut1]), (0.0005, reply[cut1:cut2]), (0.0005, reply[cut2:])]
            self.pos += 1
        return [(d, c) for d, c in plan if c]


class IecLink(FakeLink):
    """FakeLink plus the serial hooks the IEC driver uses; ``serial=True`` makes it a serial port whose
    speed changes are recorded together with how many requests had been written by then."""

    def __init__(self, responder, *, baud: int | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(responder)
        self._baud = baud
        self.baud_changes: list[tuple[int, int]] = []   # (number of writes so far, new baud)
        self.drains = 0

    @property
    def baudrate(self) -> int | None:
        return self._baud

    def set_baudrate(self, baud: int) -> None:
        if self._baud is not None and baud != self._baud:
            self._baud = baud
            self.baud_changes.append((len(self.written), baud))

    async def drain_output(self, limit: float = 5.0) -> None:
        self.drains += 1
        await asyncio.sleep(0)

    def writes(self) -> list[bytes]:
        return [w for _, w in self.written]


def make_driver(link: FakeLink, *, address: str = "", options: dict | None = None, password: str | None = None,
                retries: int = 0, waiting_time: float = 0.3, serial: bool = False, baudrate: int = 300,
                number_meter: str | None = None,
                read: tuple[str, ...] = ("energy", "instant", "other")) -> tuple[Iec62056Driver, Registry]:
    if serial:
        lc = LineConfig(name="bus", type="serial", device="/dev/null", baudrate=baudrate, bytesize=7, parity="E")
    else:
        lc = LineConfig(name="bus", type="tcp", host="127.0.0.1", port=1)
    reg = Registry()
    line = Line(lc, LineState("bus", lc.type), reg)
    line.link = link  # type: ignore[assignment]
    opts = parse_options(options or {}, ".")
    mc = MeterConfig(name="m1", protocol="iec62056", line="bus", connection_address=address,
                     password=Secret(password) if password is not None else None, retries=retries,
                     waiting_time=waiting_time, pause_time=0.0, options=opts, read=read,
                     number_meter=number_meter)
    st = MeterState("m1", "iec62056", "bus", address, 60.0)
    return Iec62056Driver(BusDriverContext(mc, line, st, reg)), reg
