"""The bounded buffer: size parser and config keys, quota and age eviction with per-sink loss counts,
metrics, /health lines, the history surviving a restart, the file given back when it is over the quota,
the forwarder skipping evicted rows, and the daemon wiring."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path

import aiohttp
import pytest

from pollerd.api import make_app
from pollerd.config import SinkConfig, StoreConfig, load_config, parse_size
from pollerd.daemon import Daemon
from pollerd.errors import ConfigError
from pollerd.metrics import Registry
from pollerd.model import Reading
from pollerd.push import TransientSinkError
from pollerd.push import forwarder as fwd_mod
from pollerd.push.forwarder import Forwarder
from pollerd.state import Runtime, SinkState
from pollerd.store import Store
from pollerd.store.quota import ALERT_WINDOW, StoreQuota

MiB = 1024 * 1024
T0 = 1_700_000_000


def rows(n: int, start: int = 0, *, ts0: int = T0, meters: int = 10) -> list[Reading]:
    return [Reading(f"meter-{i % meters}", "A+.T1", "current", ts0 + i, float(i), "Wh")
            for i in range(start, start + n)]


async def fill(store: Store, n: int, start: int = 0, **kw: object) -> None:
    for i in range(start, start + n, 5000):
        await store.write(rows(min(5000, start + n - i), i, **kw))  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "pollerd.db", commit_interval=0.0)
    yield s
    await s.close()


async def used(store: Store) -> int:
    page_size, pages, free = await store.space()
    return (pages - free) * page_size


async def seqs(store: Store) -> list[int]:
    return [q for q, _ in await store.fetch_after(0, 10**6)]


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("text, expected", [
    ("512MiB", 512 * MiB), ("2GB", 2_000_000_000), ("1.5 GiB", int(1.5 * 1024**3)), ("800kb", 800_000),
    ("800KiB", 800 * 1024), ("1048576", 1048576), (1048576, 1048576), ("4096b", 4096), ("1tib", 1024**4),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "12 parsecs", "-5MiB", "MiB", "1e3", "nan", True, [1], "1.2.3MB"])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def _cfg(tmp_path: Path, store: str, meters: str = "") -> Path:
    p = tmp_path / "pollerd.toml"
    p.write_text(f'[gateway]\nname = "gw"\n\n[store]\n{store}\n\n'
                 '[[lines]]\nname = "l"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 9\n\n' + meters)
    return p


def test_config_keys_and_errors_name_file_line_and_key(tmp_path):
    cfg = load_config(_cfg(tmp_path, 'max_size = "512MiB"\nmax_age = "90d"'))
    assert cfg.store.max_size == 512 * MiB and cfg.store.max_age == 90 * 86400
    assert load_config(_cfg(tmp_path, "")).store.max_size is None
    with pytest.raises(ConfigError) as info:
        load_config(_cfg(tmp_path, 'keep = "1d"\nmax_size = "12 parsecs"'))
    assert "pollerd.toml:6: store.max_size: bad size" in str(info.value)
    with pytest.raises(ConfigError, match=r"pollerd\.toml:5: store\.max_size: must be at least 1MiB"):
        load_config(_cfg(tmp_path, 'max_size = "100KiB"'))
    with pytest.raises(ConfigError, match=r"store\.max_age: must be at least 1m"):
        load_config(_cfg(tmp_path, 'max_age = "10s"'))


def test_max_age_shorter_than_a_backfill_is_refused(tmp_path):
    meter = ('[[meters]]\nname = "m1"\nprotocol = "mercury230"\nline = "l"\nconnection_address = 1\n'
             'read = ["energy", "profile"]\ndata_polling_length = "31d"\n')
    with pytest.raises(ConfigError) as info:
        load_config(_cfg(tmp_path, 'max_age = "7d"', meter))
    assert "pollerd.toml:5: store.max_age: max_age 7d is shorter than meters[0] (m1) data_polling_length 31d" \
        in str(info.value)
    # Without archives there is nothing to backfill, so a short age limit is fine.
    load_config(_cfg(tmp_path, 'max_age = "7d"', meter.replace('"energy", "profile"', '"energy"')))


# ----------------------------------------------------------------------------- eviction

async def test_quota_evicts_oldest_first_and_counts_what_each_sink_lost(store):
    await fill(store, 60_000)
    await store.advance("a", 20_000)
    await store.advance("b", 60_000)
    assert await used(store) > 2 * MiB   # ~43 bytes a reading (schema 6)
    metrics, runtime = Registry(), Runtime("gw")
    q = StoreQuota(store, StoreConfig(max_size=3 * MiB // 2), ["a", "b", "c"], metrics, runtime,
                   clock=lambda: T0 + 100)
    done = await q.check()
    n = done["quota"]
    assert n > 20_000
    assert await used(store) <= 3 * MiB // 2
    left = await seqs(store)
    assert left == list(range(n + 1, 60_001))               # the oldest went, nothing else
    assert metrics.counter("pollerd_store_evicted_total", "", ("reason",)).get(reason="quota") == n
    lost = metrics.counter("pollerd_sink_evicted_total", "", ("sink",))
    assert lost.get(sink="a") == n - 20_000                 # a had confirmed up to 20000
    assert lost.get(sink="b") == 0                          # b had everything
    assert lost.get(sink="c") == n                          # c never confirmed anything
    assert metrics.gauge("pollerd_store_used_bytes", "").get() <= 3 * MiB // 2
    # Cursors are untouched; fetch_after simply starts at the first row still there.
    assert await store.cursor("a") == 20_000
    assert (await store.fetch_after(20_000, 1))[0][0] == n + 1
    assert any(f"sink a lost {n - 20_000} undelivered readings to the store quota" in r
               for r in runtime.store_reasons)
    assert not any("sink b" in r for r in runtime.store_reasons)
    assert any("store quota holding" in w for w in runtime.store_warnings)
    # Under the quota nothing more goes.
    assert await q.check() == {}
    assert len(await seqs(store)) == len(left)


async def test_quota_keeps_holding_while_writes_continue_and_the_file_stops_growing(store):
    q = StoreQuota(store, StoreConfig(max_size=2 * MiB), ["up"], Registry())
    sizes = []
    for k in range(12):
        await fill(store, 5_000, k * 5_000)
        await q.check()
        assert await used(store) <= 2 * MiB
        sizes.append((await store.space())[1])
    # Freed pages are reused: after the first evictions the file does not grow any more.
    assert max(sizes[4:]) <= 2 * MiB // 4096 + 16
    assert (await seqs(store))[-1] == 60_000


async def test_lowered_quota_gives_the_pages_back(tmp_path, store):
    await fill(store, 50_000)
    await StoreQuota(store, StoreConfig(max_size=5 * MiB), [], Registry()).check()
    await StoreQuota(store, StoreConfig(max_size=2 * MiB), [], Registry()).check()
    page_size, pages, _ = await store.space()
    assert pages * page_size <= 2 * MiB
    await store.close()
    assert (tmp_path / "pollerd.db").stat().st_size <= 2 * MiB  # the checkpoint at close truncated it


async def test_age_limit_evicts_by_ts_and_counts_losses(store):
    await store.write(rows(100, ts0=T0))                     # ts T0..T0+99
    await store.write(rows(100, 100, ts0=T0 + 86400 - 100))  # ts T0+86400..
    await store.advance("up", 50)
    metrics, runtime = Registry(), Runtime("gw")
    q = StoreQuota(store, StoreConfig(max_age=3600.0), ["up"], metrics, runtime, clock=lambda: T0 + 86400 + 10)
    assert await q.check() == {"age": 100}
    assert await seqs(store) == list(range(101, 201))
    assert metrics.counter("pollerd_sink_evicted_total", "", ("sink",)).get(sink="up") == 50
    assert metrics.counter("pollerd_store_evicted_total", "", ("reason",)).get(reason="age") == 100
    assert runtime.store_reasons == [
        "sink up lost 50 undelivered readings to the store age limit (max_age) in the last 24 h"]
    assert await q.check() == {}


async def test_eviction_history_survives_a_restart_and_expires(tmp_path):
    path = tmp_path / "p.db"
    now = [T0 + 86400.0]
    s = await Store.open(path, commit_interval=0)
    await s.write(rows(10))
    await StoreQuota(s, StoreConfig(max_age=3600.0), ["up"], Registry(), clock=lambda: now[0]).check()
    await s.close()
    s = await Store.open(path, commit_interval=0)
    try:
        runtime = Runtime("gw")
        q = StoreQuota(s, StoreConfig(max_age=3600.0), ["up"], Registry(), runtime, clock=lambda: now[0],
                       check_every=0.01)
        task = asyncio.create_task(q.run())
        for _ in range(500):
            if runtime.store_reasons:
                break
            await asyncio.sleep(0.01)
        assert runtime.store_reasons == [
            "sink up lost 10 undelivered readings to the store age limit (max_age) in the last 24 h"]
        now[0] += ALERT_WINDOW + 1
        for _ in range(500):
            if not runtime.store_reasons:
                break
            await asyncio.sleep(0.01)
        assert runtime.store_reasons == [] and runtime.store_warnings == []
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await s.close()


async def test_health_shows_eviction_reasons_and_warnings(store):
    runtime = Runtime("gw", started=T0)
    runtime.store_reasons = ["sink up lost 5 undelivered readings to the store quota (max_size) in the last 24 h"]
    runtime.store_warnings = ["store quota holding: 5 oldest readings evicted in the last 24 h"]
    from aiohttp.test_utils import TestClient, TestServer
    app = make_app(runtime=runtime, store=store, metrics=Registry(), clock=lambda: T0)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/health")
        body = await resp.json()
    assert resp.status == 503
    assert body["reasons"] == runtime.store_reasons
    assert body["warnings"] == runtime.store_warnings


# ----------------------------------------------------------------------------- forwarder

class DownClient:
    def __init__(self) -> None:
        self.up = False
        self.got: list[Reading] = []
        self.last_size = 0

    async def connect(self) -> None:
        pass

    async def send(self, batch) -> None:  # type: ignore[no-untyped-def]
        self.last_size = len(batch)
        if not self.up:
            raise TransientSinkError("down", kind="network")
        self.got.extend(batch)

    async def close(self) -> None:
        pass


async def test_forwarder_skips_evicted_rows_and_its_lag_memory_stays_bounded(store, monkeypatch):
    monkeypatch.setattr(fwd_mod, "_SEEN_MAX", 64)
    # linger 0: the batch in hand is what was stored at the first fetch (a few writes of 10 rows at most on a
    # loaded machine), not topped up to batch_size
    sink = SinkConfig(name="up", type="http", url="http://127.0.0.1:9/", batch_size=100,
                      retry_min=0.001, retry_max=0.002, linger=0.0)
    client, state = DownClient(), SinkState("up", "http")
    f = Forwarder(store, client, sink, state, Registry(), idle_wait=0.05)
    task = asyncio.create_task(f.run())
    try:
        for k in range(300):                       # upstream down while rows keep arriving
            await store.write(rows(10, k * 10))
            await asyncio.sleep(0.002)
        assert len(f._seen) <= 65
        await StoreQuota(store, StoreConfig(max_size=1 * MiB), ["up"], Registry()).check()
        await fill(store, 40_000, 3000)                # ~43 B a reading (schema 6): well over 1 MiB
        q = StoreQuota(store, StoreConfig(max_size=1 * MiB), ["up"], Registry())
        await q.check()
        first = (await seqs(store))[0]
        assert first > 3000
        # The batch in hand (retried as it is) plus the rows still stored: evicted rows are not lag.
        in_hand = client.last_size
        assert 10 <= in_hand <= sink.batch_size and in_hand % 10 == 0
        expected = in_hand + 43_000 - first + 1
        for _ in range(200):
            if state.lag_rows == expected:
                break
            await asyncio.sleep(0.01)
        assert state.lag_rows == expected
        client.up = True
        for _ in range(2000):
            if client.got and client.got[-1].value == 42_999.0:
                break
            await asyncio.sleep(0.01)
        sent = [int(r.value) for r in client.got]
        # The batch in flight when the quota struck may still go out; after it, only stored rows, in order.
        tail = [v for v in sent if v >= first - 1]
        assert tail == list(range(first - 1, 43_000))
        assert len(sent) - len(tail) <= sink.batch_size
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ----------------------------------------------------------------------------- daemon wiring

async def test_daemon_enforces_the_quota_and_reports_it(tmp_path):
    db = tmp_path / "state" / "pollerd.db"
    s = await Store.open(db, commit_interval=0)
    await fill(s, 80_000)                                      # ~3.5 MB at ~43 B a reading (schema 6)
    await s.close()
    cfg_path = tmp_path / "pollerd.toml"
    cfg_path.write_text('[gateway]\nname = "gw"\n\n[store]\nmax_size = "2MiB"\n\n'
                        '[api]\nlisten = "127.0.0.1:8780"\n\n'
                        # port 9 (discard) is closed on the test machine: the sink stays down
                        '[[sinks]]\nname = "up"\ntype = "http"\nurl = "http://127.0.0.1:9/x"\n'
                        'retry_min = "1s"\nretry_max = "2s"\n')
    cfg = load_config(cfg_path)
    cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, port=0))  # a free port
    daemon = Daemon(cfg, tmp_path / "state")
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        url = f"http://127.0.0.1:{daemon.api_port}"
        health: dict = {}
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.get(url + "/health") as resp:
                    health = await resp.json()
                if any("sink up lost" in r for r in health["reasons"]):
                    break
                await asyncio.sleep(0.1)
            async with http.get(url + "/metrics") as resp:
                text = await resp.text()
        assert any(r.startswith("sink up lost ") and "store quota" in r for r in health["reasons"]), health
        lines = {ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in text.splitlines() if ln[:1] != "#"}
        assert lines['pollerd_store_evicted_total{reason="quota"}'] > 0
        assert lines['pollerd_sink_evicted_total{sink="up"}'] == lines['pollerd_store_evicted_total{reason="quota"}']
        assert lines["pollerd_store_used_bytes"] <= 2 * MiB
        assert lines["pollerd_store_max_bytes"] == 2 * MiB
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


# ----------------------------------------------------------------------------- schema 2 (ts-led key)

async def test_migration_to_the_ts_led_key_keeps_seqs_cursors_and_the_high_water_mark(tmp_path):
    import sqlite3

    from store_helpers import insert_old, old_store
    path = tmp_path / "v1.db"

    def old(rs: list[Reading]) -> list[tuple[str, str, str, int, float, str, str, int]]:
        return [(r.meter, r.channel, str(r.archive), r.ts, r.value, r.unit, "good", 0) for r in rs]

    # A schema-1 file as that pollerd left it: 30 rows delivered and pruned, 5 more of which the newest was
    # pruned as well, so max(seq) is not the high-water mark.
    with contextlib.closing(old_store(path, 1)) as c:
        insert_old(c, old(rows(30)))                                 # seq 1..30
        c.execute("INSERT INTO sink_cursors (sink, seq, updated) VALUES ('up', 30, 0)")
        c.execute("DELETE FROM readings WHERE seq <= 30")
        insert_old(c, old(rows(5, 100)))                             # seq 31..35
        c.execute("DELETE FROM readings WHERE seq = 35")
    s = await Store.open(path, commit_interval=0)
    try:
        assert await s.last_seq() == 35
        assert await seqs(s) == [31, 32, 33, 34]
        assert await s.cursor("up") == 30
        await s.write(rows(1, 200))
        assert await seqs(s) == [31, 32, 33, 34, 36]          # a seq is never reused
        assert await s.write(rows(1, 200)) == 0              # the natural key is still unique
    finally:
        await s.close()
    with sqlite3.connect(path) as c:
        idx = {r[0]: r[1] for r in c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
        seq_names = [r[0] for r in c.execute("SELECT name FROM sqlite_sequence")]
    assert "readings_ts" not in idx and "readings_meter_ts" not in idx  # schema 3 drops the per-meter one
    assert len(seq_names) == len(set(seq_names)) and "readings_v2" not in seq_names


async def test_a_reload_switches_the_limits_on(store):
    await fill(store, 80_000)                                # ~3.5 MB at ~43 B a reading (schema 6)
    q = StoreQuota(store, StoreConfig(), ["up"], Registry(), check_every=0.01)
    task = asyncio.create_task(q.run())
    try:
        await asyncio.sleep(0.05)
        assert len(await seqs(store)) == 80_000              # no limits: nothing goes
        q.reconfigure(StoreConfig(max_size=2 * MiB), ["up"])
        for _ in range(500):
            if q.history:
                break
            await asyncio.sleep(0.01)
        assert q.history and q.history[0].reason == "quota"
        assert await used(store) <= 2 * MiB
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
