"""Crash-safety and outage harness shared by tests/test_crash_safety.py and scripts/crash_soak.py.

The daemon runs as a real subprocess (``python -m pollerd run``) against simulated Mercury 230 meters on loopback
TCP and forwards to :class:`FlakyReceiver`, an aiohttp upstream in this process that fails a share of the
requests in the ways a real upstream does: a 5xx before storing, a 5xx *after* storing (the sender must retry,
so the receiver sees duplicates), a reply slower than the sink timeout (after storing), and a connection
dropped without a reply. Everything is on 127.0.0.1 with ports chosen by the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiohttp import web

import pollerd
from pollerd.sim.mercury230 import SimBus, SimMeter, serve_tcp

REPO_ROOT = Path(pollerd.__file__).resolve().parent.parent
Key = tuple[str, str, str, int]
FAULTS = ("500", "store_then_500", "store_then_hang", "reset")
SINK_TIMEOUT = 0.5


@dataclass(eq=False)
class FlakyReceiver:
    rng: random.Random
    fail_rate: float = 0.0
    down: bool = False                       # every request answered 503 (an outage)
    values: dict[Key, float] = field(default_factory=dict)
    first_seen: list[Key] = field(default_factory=list)   # keys in order of first arrival
    requests: int = 0
    received: int = 0                        # readings in accepted bodies, duplicates included
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    mismatched: list[str] = field(default_factory=list)
    # Events by natural key (meter, code, ts_start) -> (ts_end, text), the latest version received.
    events: dict[tuple[str, str, int], tuple[int | None, str]] = field(default_factory=dict)
    events_received: int = 0
    url: str = ""

    def _store(self, body: bytes) -> None:
        doc = orjson.loads(body)
        for e in doc.get("events", ()):
            key = (e["meter"], e["code"], e["ts_start"])
            old = self.events.get(key)
            if old is not None and old[0] is not None and e["ts_end"] is None:
                # Event batches go in event-seq order and a change takes a later seq: a closed event must
                # never be followed by its older, open version.
                self.mismatched.append(f"event {key}: closed at {old[0]}, then re-sent open")
            self.events[key] = (e["ts_end"], e["text"])
            self.events_received += 1
        for r in doc.get("readings", ()):
            key = (r["meter"], r["channel"], r["archive"], r["ts"])
            old = self.values.get(key)
            if old is None:
                self.values[key] = r["value"]
                self.first_seen.append(key)
            elif old != r["value"]:
                # The natural key is unique in the store, so a re-send must carry the same value.
                self.mismatched.append(f"{key}: {old} then {r['value']}")
            self.received += 1

    async def ingest(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if self.down:
            return web.Response(status=503, text="upstream down")
        if self.rng.random() < self.fail_rate:
            fault = self.rng.choice(FAULTS)
            self.faults[fault] += 1
            if fault == "500":
                return web.Response(status=500, text="internal error")
            if fault == "reset":
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # the connection is gone; aiohttp drops the handler quietly
            self._store(body)
            if fault == "store_then_hang":
                await asyncio.sleep(SINK_TIMEOUT + 0.5)
                return web.Response(status=200)
            return web.Response(status=500, text="stored, but answering 500")
        self._store(body)
        return web.Response(status=200, text="ok")


@contextlib.asynccontextmanager
async def serve_receiver(rec: FlakyReceiver):  # type: ignore[no-untyped-def]
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/ingest", rec.ingest)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/ingest"
    try:
        yield rec
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_sims(converters: int, per_converter: int):  # type: ignore[no-untyped-def]
    """Simulated meters (real clock) behind ``converters`` loopback TCP converters; yields the ports."""
    servers = []
    try:
        for c in range(converters):
            meters = [SimMeter(address=a, serial=f"{43000000 + c * 100 + a}") for a in range(1, per_converter + 1)]
            servers.append(await serve_tcp(SimBus(meters), "127.0.0.1", 0))
        yield [s.sockets[0].getsockname()[1] for s in servers]
    finally:
        for s in servers:
            s.close()
        for s in servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(s.wait_closed(), 1.0)


def write_config(path: Path, sink_url: str, ports: list[int] | None, per_converter: int, *,
                 batch_size: int = 50, interval: str = "1s") -> Path:
    # keep: the outage backlog has 2023 timestamps; with the default keep (7 d) the daemon's first prune, 10 s
    # after start, deletes whatever was delivered by then, and a drain slower than that (a loaded machine)
    # left the check below short of rows. Here nothing is to be pruned.
    text = ('[gateway]\nname = "crash-gw"\nspread = "1s"\n\n'
            '[store]\ncommit_interval = "50ms"\nkeep = "36500d"\n\n'
            '[api]\nenabled = false\n\n')
    for c, port in enumerate(ports or []):
        text += f'[[lines]]\nname = "conv{c}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n\n'
        for a in range(1, per_converter + 1):
            text += (f'[[meters]]\nname = "m{c}-{a}"\nprotocol = "mercury230"\nline = "conv{c}"\n'
                     f'connection_address = {a}\ninterval_time = "{interval}"\nwaiting_time = "300ms"\n'
                     # One meter per line also reads its journals (events to forward); a journal read is
                     # ~100 requests, which on every meter would leave too few readings to prove anything.
                     + ('read = ["energy", "instant", "events"]\n' if a == 1 else "") + "\n")
    text += (f'[[sinks]]\nname = "up"\ntype = "http"\nurl = "{sink_url}"\nbatch_size = {batch_size}\n'
             f'timeout = "{SINK_TIMEOUT}s"\nretry_min = "50ms"\nretry_max = "300ms"\n')
    path.write_text(text)
    return path


class DaemonProc:
    """``python -m pollerd run`` as a subprocess, its log in a file."""

    def __init__(self, config: Path, state_dir: Path, log: Path) -> None:
        self.config, self.state_dir, self.log = config, state_dir, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pollerd", "run", "--config", str(self.config),
                "--state-dir", str(self.state_dir), stdout=log, stderr=log, env=env)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_started(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        start_count = self._started_count
        while time.monotonic() < deadline:
            if self.log_text().count("pollerd started") > start_count:
                return
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"daemon did not start within {limit} s:\n{self.log_text()[-3000:]}")

    _started_count = 0

    def mark(self) -> None:
        """Remember how many starts the log shows, so wait_started() waits for the next one."""
        self._started_count = self.log_text().count("pollerd started")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # only our own child, by PID
            await self.proc.wait()

    async def stop(self, limit: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), limit)
            except asyncio.TimeoutError:
                await self.kill()
        assert self.proc.returncode is not None
        return self.proc.returncode


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def db_file(state_dir: Path) -> Path:
    return state_dir / "pollerd.db"


def store_snapshot(state_dir: Path) -> tuple[dict[Key, float], list[tuple[int, Key]]]:
    """Every stored reading: {key: value} and [(seq, key)] in seq order."""
    conn = sqlite3.connect(f"file:{db_file(state_dir)}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, meter, channel, archive, ts, value FROM readings ORDER BY seq").fetchall()
    finally:
        conn.close()
    order = [(r[0], (r[1], r[2], r[3], r[4])) for r in rows]
    return {(r[1], r[2], r[3], r[4]): r[5] for r in rows}, order


def store_events(state_dir: Path) -> dict[tuple[str, str, int], tuple[int | None, str]]:
    conn = sqlite3.connect(f"file:{db_file(state_dir)}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT meter, code, ts_start, ts_end, text FROM events").fetchall()
    finally:
        conn.close()
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}


def cursor_and_last(state_dir: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{db_file(state_dir)}?mode=ro", uri=True)
    try:
        cur = conn.execute("SELECT seq FROM sink_cursors WHERE sink = 'up'").fetchone()
        last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
    finally:
        conn.close()
    return (cur[0] if cur else 0), (last[0] if last else 0)


def event_cursor_and_last(state_dir: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{db_file(state_dir)}?mode=ro", uri=True)
    try:
        cur = conn.execute("SELECT seq FROM event_cursors WHERE sink = 'up'").fetchone()
        last = conn.execute("SELECT n FROM event_counter").fetchone()
    finally:
        conn.close()
    return (cur[0] if cur else 0), (last[0] if last else 0)


async def wait_drained(state_dir: Path, daemon: DaemonProc, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError):  # busy or not created yet
            cursor, last = cursor_and_last(state_dir)
            ev_cursor, ev_last = event_cursor_and_last(state_dir)
            if last and cursor >= last and ev_cursor >= ev_last:
                return
        if daemon.proc is not None and daemon.proc.returncode is not None:
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log_text()[-3000:]}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"not drained within {limit} s: cursor/last = {cursor_and_last(state_dir)}")


@dataclass
class CrashResult:
    seed: int
    rounds: int
    stored: int
    received: int
    requests: int
    faults: dict[str, int]
    killed_during_startup: int
    events: int = 0


async def crash_rounds(workdir: Path, *, rounds: int, seed: int, fail_rate: float = 0.3,
                       converters: int = 2, per_converter: int = 3, log=print) -> CrashResult:  # type: ignore[no-untyped-def]
    """SIGKILL the daemon at random moments for ``rounds`` rounds, then let it drain with no meters and check
    that the receiver's de-duplicated set equals the store's set, value for value."""
    rng = random.Random(seed)
    log(f"crash rounds: seed {seed} ({rounds} rounds, fail rate {fail_rate:.0%}); "
        f"rerun with POLLERD_CRASH_SEED={seed}")
    state_dir = workdir / "state"
    rec = FlakyReceiver(random.Random(seed + 1), fail_rate=fail_rate)
    early = 0
    async with serve_receiver(rec), serve_sims(converters, per_converter) as ports:
        cfg = write_config(workdir / "pollerd.toml", rec.url, ports, per_converter)
        daemon = DaemonProc(cfg, state_dir, workdir / "daemon.log")
        for n in range(rounds):
            daemon.mark()
            await daemon.start()
            if rng.random() < 0.2:
                # Some kills land during start-up: migration, opening the store, first connects.
                early += 1
                await asyncio.sleep(rng.uniform(0.05, 0.8))
            else:
                await daemon.wait_started()
                await asyncio.sleep(rng.uniform(0.1, 1.6))
            await daemon.kill()
            assert daemon.proc is not None and daemon.proc.returncode == -signal.SIGKILL, \
                f"round {n}: daemon ended by itself ({daemon.proc.returncode}):\n{daemon.log_text()[-3000:]}"
        # Drain: the same store and sink, no meters, an upstream that no longer fails.
        rec.fail_rate = 0.0
        write_config(cfg, rec.url, None, per_converter)
        daemon.mark()
        await daemon.start()
        await daemon.wait_started()
        await wait_drained(state_dir, daemon, limit=60.0)
        code = await daemon.stop()
        assert code == 0, f"daemon exit code {code}:\n{daemon.log_text()[-3000:]}"
    stored, _ = store_snapshot(state_dir)
    missing = set(stored) - set(rec.values)
    extra = set(rec.values) - set(stored)
    wrong = [k for k, v in stored.items() if k in rec.values and rec.values[k] != v]
    assert not missing, f"seed {seed}: {len(missing)} committed readings never reached the receiver, " \
                        f"e.g. {sorted(missing)[:3]}"
    assert not extra, f"seed {seed}: the receiver holds {len(extra)} readings the store does not, " \
                      f"e.g. {sorted(extra)[:3]}"
    assert not wrong, f"seed {seed}: {len(wrong)} values differ, e.g. {wrong[:3]}"
    assert not rec.mismatched, f"seed {seed}: re-sends changed values: {rec.mismatched[:3]}"
    # Events: the same guarantee, in their latest version (an event that closed later arrives closed).
    events = store_events(state_dir)
    ev_missing = {k: v for k, v in events.items() if rec.events.get(k) != v}
    ev_extra = set(rec.events) - set(events)
    assert not ev_missing, f"seed {seed}: {len(ev_missing)} stored events not (or not as stored) upstream, " \
                           f"e.g. {sorted(ev_missing.items())[:3]}, upstream has " \
                           f"{[rec.events.get(k) for k in sorted(ev_missing)[:3]]}"
    assert not ev_extra, f"seed {seed}: the receiver holds {len(ev_extra)} events the store does not"
    res = CrashResult(seed, rounds, len(stored), rec.received, rec.requests, dict(rec.faults), early, len(events))
    log(f"crash rounds: {res.stored} readings and {res.events} events stored and delivered; {res.received} "
        f"readings and {rec.events_received} events received with duplicates in {res.requests} requests; "
        f"faults {res.faults}; {early} kills during start-up")
    return res


@dataclass
class OutageResult:
    backlog: int
    rss_start_kib: int
    rss_peak_outage_kib: int
    rss_peak_drain_kib: int
    drain_seconds: float


async def outage(workdir: Path, *, backlog: int, seed: int = 0, meters: int = 20, chunk: int = 5000,
                 batch_size: int = 2000, log=print) -> OutageResult:  # type: ignore[no-untyped-def]
    """Upstream answers 503 while ``backlog`` readings are written into the running daemon's store (by this
    process, through its own Store); then upstream comes back. Checks that everything drains, in store order
    per meter, and returns the daemon's RSS samples."""
    from pollerd.model import Reading
    from pollerd.store import Store

    state_dir = workdir / "state"
    rec = FlakyReceiver(random.Random(seed), down=True)
    async with serve_receiver(rec):
        cfg = write_config(workdir / "pollerd.toml", rec.url, None, 0, batch_size=batch_size)
        daemon = DaemonProc(cfg, state_dir, workdir / "daemon.log")
        await daemon.start()
        try:
            await daemon.wait_started()
            await asyncio.sleep(0.5)
            rss_start = rss_kib(daemon.pid)
            peak_outage = rss_start
            store = await Store.open(db_file(state_dir), commit_interval=0)
            try:
                t0 = 1_700_000_000
                for i in range(0, backlog, chunk):
                    n = min(chunk, backlog - i)
                    await store.write([Reading(f"meter-{k % meters:03d}", "A+", "profile", t0 + (k // meters) * 60,
                                               float(k), "Wh") for k in range(i, i + n)])
                    peak_outage = max(peak_outage, rss_kib(daemon.pid))
            finally:
                await store.close()
            for _ in range(20):  # the forwarder keeps retrying the head batch; memory must not move
                await asyncio.sleep(0.1)
                peak_outage = max(peak_outage, rss_kib(daemon.pid))
            log(f"outage: {backlog} readings queued; daemon RSS {rss_start} KiB at start, "
                f"{peak_outage} KiB peak while upstream was down")
            rec.down = False
            t = time.monotonic()
            peak_drain = peak_outage
            deadline = t + 240.0
            while True:
                peak_drain = max(peak_drain, rss_kib(daemon.pid))
                cursor, last = cursor_and_last(state_dir)
                if cursor >= last:
                    break
                assert time.monotonic() < deadline, f"not drained: cursor {cursor} of {last}"
                assert daemon.proc is not None and daemon.proc.returncode is None, daemon.log_text()[-3000:]
                await asyncio.sleep(0.1)
            drain_s = time.monotonic() - t
        finally:
            code = await daemon.stop()
        assert code == 0, daemon.log_text()[-3000:]
    stored, order = store_snapshot(state_dir)
    assert len(stored) == backlog
    assert set(rec.values) == set(stored), "receiver set != store set"
    assert all(rec.values[k] == v for k, v in stored.items())
    # In order per meter: the first arrival of each key follows the store's seq order within its meter.
    seq_of = {k: s for s, k in order}
    last_seq: dict[str, int] = {}
    for key in rec.first_seen:
        s = seq_of[key]
        assert s > last_seq.get(key[0], 0), f"{key} (seq {s}) arrived after seq {last_seq[key[0]]} of its meter"
        last_seq[key[0]] = s
    res = OutageResult(backlog, rss_start, peak_outage, peak_drain, drain_s)
    log(f"outage: drained {backlog} readings in {drain_s:.1f} s ({backlog / drain_s:,.0f}/s incl. polling "
        f"the store); daemon RSS peak {peak_drain} KiB while draining (+{peak_drain - rss_start} KiB)")
    return res
