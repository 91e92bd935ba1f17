"""The durable store: group commit, natural-key de-duplication, cursors, retention, migrations,
read-only access and crash safety."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pollerd
from pollerd.compat import timeout
from pollerd.errors import StoreError
from pollerd.model import Archive, Event, Reading
from pollerd.store import SCHEMA_VERSION, Store
from pollerd.store import retention as store_retention
from pollerd.store import schema as store_schema
from pollerd.store import writer as store_writer

REPO_ROOT = Path(pollerd.__file__).resolve().parent.parent


def rd(ts: int, value: float = 1.0, *, meter: str = "m1", channel: str = "A+",
       archive: str = "current") -> Reading:
    return Reading(meter, channel, archive, ts, value, "Wh")


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "db" / "pollerd.db", commit_interval=0.01)
    yield s
    await s.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# ----------------------------------------------------------------------------- group commit

async def test_many_concurrent_writers_share_few_transactions(tmp_path):
    s = await Store.open(tmp_path / "p.db", commit_interval=0.5)
    try:
        results = await asyncio.gather(*(s.write([rd(i, i), rd(i + 1000, i)]) for i in range(200)))
        assert results == [2] * 200
        assert 1 <= s.commits <= 2  # 200 writers, not 200 transactions
        assert await s.last_seq() == 400
        rows, total = await s.query_readings(per_page=1000)
        assert total == 400 and {r.ts for r in rows} == set(range(200)) | set(range(1000, 1200))
    finally:
        await s.close()


async def test_max_batch_rows_commits_without_waiting_for_the_interval(tmp_path):
    # commit_interval is a minute: only the row threshold can make these writes return.
    s = await Store.open(tmp_path / "p.db", commit_interval=60, max_batch_rows=100)
    try:
        async with timeout(15):
            results = await asyncio.gather(
                *(s.write([rd(w * 10 + k) for k in range(10)]) for w in range(50)))
        assert sum(results) == 500
        assert s.commits == 5  # whole writes, 100 rows per transaction
    finally:
        await s.close()


async def test_flush_forces_commit_and_nothing_is_visible_before(tmp_path):
    s = await Store.open(tmp_path / "p.db", commit_interval=60)
    try:
        assert await s.write([]) == 0 and s.commits == 0  # no transaction for nothing
        task = asyncio.create_task(s.write([rd(1), rd(2)]))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done()
        # Not acknowledged and not visible to readers (sinks) until committed.
        assert await s.last_seq() == 0
        assert await s.fetch_after(0, 10) == []
        await s.flush()
        assert task.done() and task.result() == 2
        assert s.commits == 1
        assert [seq for seq, _ in await s.fetch_after(0, 10)] == [1, 2]
    finally:
        await s.close()


async def test_close_commits_pending_writes_and_refuses_new_ones(tmp_path):
    path = tmp_path / "p.db"
    s = await Store.open(path, commit_interval=60)
    task = asyncio.create_task(s.write([rd(7, 7.5)]))
    await asyncio.sleep(0)
    await s.close()
    assert task.result() == 1
    with pytest.raises(StoreError, match="closed"):
        await s.write([rd(8)])
    with pytest.raises(StoreError, match="closed"):
        await s.query_readings()
    s2 = await Store.open(path)
    try:
        rows, total = await s2.query_readings()
        assert total == 1 and rows[0].value == 7.5
    finally:
        await s2.close()


async def test_new_data_is_set_only_when_rows_were_added(store):
    assert not store.new_data.is_set()
    await store.write([rd(1)])
    assert store.new_data.is_set()
    store.new_data.clear()
    assert await store.write([rd(1)]) == 0  # duplicate only
    assert not store.new_data.is_set()


async def test_failed_commit_fails_every_writer_of_the_batch(tmp_path):
    path = tmp_path / "p.db"
    s = await Store.open(path, commit_interval=0.2)
    try:
        with raw(path) as c:
            c.execute("CREATE TRIGGER refuse BEFORE INSERT ON samples "
                      "WHEN (SELECT meter FROM series WHERE id = NEW.series) = 'bad' "
                      "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END")
        results = await asyncio.gather(s.write([rd(1)]), s.write([rd(2, meter="bad")]),
                                       s.write([rd(3)]), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        assert "refused by test trigger" in str(results[0])
        assert await s.last_seq() == 0  # the whole batch rolled back, nothing half-stored
        assert await s.write([rd(1), rd(3)]) == 2  # the store is usable afterwards
    finally:
        await s.close()


async def test_invalid_reading_fails_only_its_writer(store):
    good = asyncio.create_task(store.write([rd(1)]))
    with pytest.raises(StoreError, match="nan"):
        await store.write([rd(2, float("nan"))])
    with pytest.raises(StoreError, match="1.5"):
        await store.write([Reading("m1", "A+", "current", 1.5, 1.0, "Wh")])  # type: ignore[arg-type]
    assert await good == 1


async def test_a_value_sqlite_cannot_bind_fails_its_writer_not_the_store(store, monkeypatch):
    # A ts past SQLite's 64-bit INTEGER raised OverflowError inside the writer task, which is not an
    # sqlite3.Error: the task died and every later write of every meter failed until a restart.
    with pytest.raises(StoreError, match="ts=10000000000000000000"):
        await store.write([rd(10**19)])
    with pytest.raises(StoreError, match="ts_start"):
        await store.write([], [Event("m1", "x", -(10**19))])
    # An infinite value would be sent upstream as JSON null: refused like NaN.
    with pytest.raises(StoreError, match="inf"):
        await store.write([rd(3, float("inf"))])
    assert await store.write([rd(1)], [Event("m1", "x", 1)]) == 1

    # Should anything else get past the checks and make sqlite3 raise a non-sqlite exception, that fails
    # its batch only; the writer goes on.
    monkeypatch.setattr(store_writer, "_reading_rows",
                        lambda rs, received: [(r.meter, r.channel, "current", r.ts, r.value, r.unit, "good",
                                               received) for r in rs])
    with pytest.raises(StoreError, match="OverflowError"):
        await store.write([rd(10**19)])
    assert await store.write([rd(2)]) == 1
    assert await store.last_seq() == 2


# ----------------------------------------------------------------------------- natural key, seqs

async def test_duplicates_are_ignored_and_keep_their_seq(store):
    first = [rd(10, 1.0), rd(20, 2.0), rd(30, 3.0)]
    assert await store.write(first) == 3
    # Same keys with other values (a re-read archive) plus one new row.
    assert await store.write([rd(10, 9.0), rd(20, 9.0), rd(40, 4.0), rd(40, 4.0)]) == 1
    got = await store.fetch_after(0, 100)
    assert [(seq, r.ts, r.value) for seq, r in got] == [
        (1, 10, 1.0), (2, 20, 2.0), (3, 30, 3.0), (4, 40, 4.0)]
    # Ignored duplicates must not burn seqs: the next new row is 5, not 7.
    assert await store.write([rd(50), rd(10)]) == 1
    assert await store.last_seq() == 5
    # Different archive or channel is a different key.
    assert await store.write([rd(10, archive=Archive.DAILY), rd(10, channel="A-")]) == 2
    seq, r = (await store.fetch_after(5, 1))[0]
    assert seq == 6 and r.archive == "daily"


async def test_fetch_after_orders_by_seq_and_honours_limit(store):
    # Written in descending ts so seq order and ts order differ.
    for ts in range(20, 0, -1):
        await store.write([rd(ts)])
    page = await store.fetch_after(5, 4)
    assert [seq for seq, _ in page] == [6, 7, 8, 9]
    assert [r.ts for _, r in page] == [15, 14, 13, 12]
    assert [seq for seq, _ in await store.fetch_after(18, 100)] == [19, 20]
    assert await store.fetch_after(20, 10) == []
    assert await store.fetch_after(0, 0) == []


# ----------------------------------------------------------------------------- sink cursors, parking

async def test_cursors_are_per_sink_and_monotonic(tmp_path):
    path = tmp_path / "p.db"
    s = await Store.open(path, commit_interval=0.01)
    try:
        await s.write([rd(i) for i in range(10)])
        assert await s.cursor("mqtt") == 0
        await s.advance("mqtt", 7)
        await s.advance("http", 3)
        await s.advance("mqtt", 4)  # a late confirmation must not move it back
        assert await s.cursor("mqtt") == 7
        assert await s.cursor("http") == 3
        assert await s.cursor("other") == 0
        with pytest.raises(StoreError, match="beyond the last stored seq 10"):
            await s.advance("http", 11)
        with pytest.raises(StoreError):
            await s.advance("http", -1)
        assert await s.cursor("http") == 3
    finally:
        await s.close()
    s = await Store.open(path)
    try:
        assert (await s.cursor("mqtt"), await s.cursor("http")) == (7, 3)
    finally:
        await s.close()


async def test_park_lists_batches_per_sink(store):
    await store.write([rd(i) for i in range(10)])
    await store.park("xml", 3, 5, "rejected: schema error line 4")
    await store.park("mqtt", 6, 6, "payload too large")
    with pytest.raises(StoreError):
        await store.park("xml", 6, 5, "bad range")
    xml = await store.parked("xml")
    assert [(p["sink"], p["first_seq"], p["last_seq"], p["reason"]) for p in xml] == [
        ("xml", 3, 5, "rejected: schema error line 4")]
    assert [p["sink"] for p in await store.parked()] == ["xml", "mqtt"]
    assert await store.unpark(xml[0]["id"]) is True
    assert await store.unpark(xml[0]["id"]) is False
    assert [p["sink"] for p in await store.parked()] == ["mqtt"]


# ----------------------------------------------------------------------------- queries

async def test_query_readings_filters_orders_and_pages(store):
    rows = [rd(ts, meter=m, channel=ch) for ts in range(100, 110) for m in ("m2", "m1")
            for ch in ("P", "A+")]
    await store.write(rows)
    got, total = await store.query_readings(per_page=1000)
    assert total == 40
    assert [(r.ts, r.meter, r.channel) for r in got] == sorted((r.ts, r.meter, r.channel)
                                                               for r in rows)
    page3, total = await store.query_readings(per_page=15, page=3)
    assert total == 40 and len(page3) == 10 and page3 == got[30:]
    beyond, total = await store.query_readings(per_page=15, page=4)
    assert beyond == [] and total == 40
    got, total = await store.query_readings(meter="m1", channel="P", ts_from=102, ts_to=105)
    assert total == 3 and [r.ts for r in got] == [102, 103, 104]  # from inclusive, to exclusive
    got, total = await store.query_readings(archive="daily")
    assert (got, total) == ([], 0)
    with pytest.raises(StoreError):
        await store.query_readings(page=0)
    with pytest.raises(StoreError):
        await store.query_readings(per_page=0)


async def test_walking_all_readings_by_key_survives_pruning_and_backfill_meanwhile(store):
    # `pollerd readings` walks the whole table while the daemon runs. By OFFSET, pruning the two oldest rows
    # after the first page of two skipped the next two; a backfill before the page printed a row twice.
    await store.write([rd(t) for t in (10, 20, 30, 40, 50, 60)])
    seen = [r.ts for r in await store.readings_after(None, limit=2)]
    await store.evict(sinks=[], limit=2)               # the oldest two go
    await store.write([rd(5), rd(35, meter="m0")])      # a backfill lands before and inside what is left
    after = (20, "m1", "A+", "current")
    while page := await store.readings_after(after, limit=2):
        seen += [r.ts for r in page]
        after = (page[-1].ts, page[-1].meter, page[-1].channel, page[-1].archive)
    assert seen == [10, 20, 30, 35, 40, 50, 60]
    # filters narrow it; the key goes on from where the last page ended
    assert [r.ts for r in await store.readings_after((30, "m1", "A+", "current"), meter="m1")] == [40, 50, 60]
    by_page, _ = await store.query_readings(per_page=2, page=2)  # what the CLI did: 30 was never printed
    assert [r.ts for r in by_page] == [35, 40]


async def test_multi_row_statements_count_new_rows_per_write_across_chunks(store):
    """A write goes to SQLite as multi-row statements of up to _CHUNK rows (not executemany row by row): the count
    of new rows, the seqs and the duplicate guards must come out as they did row by row."""
    n = 2 * store_writer._CHUNK + 50
    assert await store.write([rd(t, float(t)) for t in range(0, 20, 2)]) == 10      # seqs 1..10
    mixed = [rd(t, -1.0) for t in range(n)]                                          # 10 of them stored already
    assert await store.write(mixed) == n - 10
    assert await store.last_seq() == n                                               # no seq burnt by a duplicate
    got = await store.fetch_after(0, 10 * n)
    assert [s for s, _ in got] == list(range(1, n + 1))
    assert {r.ts: r.value for _, r in got} == {t: float(t) if t < 20 and t % 2 == 0 else -1.0 for t in range(n)}
    assert [r.ts for _, r in got[10:]] == [t for t in range(n) if not (t < 20 and t % 2 == 0)]  # in write order


async def test_duplicates_within_one_batch_go_to_the_first_writer(tmp_path):
    s = await Store.open(tmp_path / "p.db", commit_interval=60)
    try:
        first = asyncio.ensure_future(s.write([rd(1, 1.0), rd(2, 1.0)]))
        second = asyncio.ensure_future(s.write([rd(2, 2.0), rd(3, 2.0), rd(3, 3.0)]))
        await asyncio.sleep(0)
        await s.flush()
        assert (await first, await second, s.commits) == (2, 1, 1)   # one transaction, counted per writer
        got = await s.fetch_after(0, 10)
        assert [(q, r.ts, r.value) for q, r in got] == [(1, 1, 1.0), (2, 2, 1.0), (3, 3, 2.0)]
    finally:
        await s.close()


async def test_a_key_twice_in_one_statement_is_dropped_by_or_ignore(store, monkeypatch):
    # The writer drops a key repeated within one write before SQL; should one reach a statement anyway, both rows
    # pass the NOT EXISTS guards (the VALUES are read first) and OR IGNORE keeps the first: only a seq is lost.
    monkeypatch.setattr(store_writer, "_reading_rows",
                        lambda rs, received: [(r.meter, r.channel, str(r.archive), r.ts, r.value, r.unit, "good",
                                               received) for r in rs])
    assert await store.write([rd(5, 1.0), rd(5, 2.0), rd(6, 3.0)]) == 2
    got = await store.fetch_after(0, 10)
    assert [(r.ts, r.value) for _, r in got] == [(5, 1.0), (6, 3.0)]
    assert await store.write([rd(5, 9.0)]) == 0


async def test_many_events_in_one_write_upsert_like_one_by_one(store):
    n = store_writer._CHUNK + 30
    evs = [Event("m1", "c", t) for t in range(n)] + [Event("m1", "c", 7, 8, "closed"), Event("m1", "c", 7)]
    await store.write([], evs)
    got, total = await store.query_events(per_page=10 * n)
    assert total == n and got[7] == Event("m1", "c", 7, 8, "closed")
    assert await store.last_event_seq() == n + 1      # n inserts and one change


async def test_events_are_unique_and_closed_by_a_later_read(store):
    ev = Event("m1", "power_off", 1000)
    await store.write([], [ev, ev])
    await store.write([], [Event("m1", "power_off", 1000, 1060, "phase L2")])
    await store.write([], [Event("m1", "power_off", 1000)])  # a re-read must not reopen it
    await store.write([rd(1)], [Event("m2", "cover_open", 900), Event("m1", "power_off", 2000)])
    got, total = await store.query_events()
    assert total == 3
    assert got == [Event("m2", "cover_open", 900), Event("m1", "power_off", 1000, 1060, "phase L2"),
                   Event("m1", "power_off", 2000)]
    got, total = await store.query_events(meter="m1", ts_from=1500, per_page=1)
    assert (got, total) == ([Event("m1", "power_off", 2000)], 1)
    assert (await store.query_events(per_page=2, page=2)) == ([got[0]], 3)


# ----------------------------------------------------------------------------- state

async def test_state_round_trip_survives_reopen(tmp_path):
    path = tmp_path / "p.db"
    value = {"profile_pos": 0x1F40, "last_ts": 1700000000, "ok": True, "tags": ["a", "б"],
             "nested": {"x": 1.5, "none": None}}
    s = await Store.open(path)
    try:
        assert await s.get_state("meter/m1") is None
        await s.set_state("meter/m1", value)
        await s.set_state("counter", 1)
        await s.set_state("counter", 2)
        with pytest.raises(StoreError, match="JSON"):
            await s.set_state("bad", object())
        assert await s.get_state("bad") is None
    finally:
        await s.close()
    s = await Store.open(path)
    try:
        assert await s.get_state("meter/m1") == value
        assert await s.get_state("counter") == 2
    finally:
        await s.close()


# ----------------------------------------------------------------------------- retention

async def test_prune_deletes_only_old_rows_every_sink_confirmed(tmp_path, monkeypatch):
    monkeypatch.setattr(store_retention, "_PRUNE_BATCH", 7)  # force several delete transactions
    s = await Store.open(tmp_path / "p.db", commit_interval=0.01)
    try:
        await s.write([rd(ts) for ts in range(100)])  # seq = ts + 1
        await s.advance("a", 30)
        await s.advance("b", 80)
        # Sink "c" never confirmed anything: nothing may go.
        assert await s.prune(keep=50, sinks=["a", "b", "c"], now=100) == 0
        # Parked rows stay for inspection even when every sink passed them.
        await s.park("a", 5, 6, "refused")
        assert await s.prune(keep=50, sinks=["a", "b"], now=100) == 28  # seq 1..30 minus 5, 6
        remaining, total = await s.query_readings(per_page=1000)
        assert total == 72
        assert [r.ts for r in remaining][:3] == [4, 5, 30]
        # Both sinks passed 80 now, but age limits: ts < 60 -> seqs 31..60.
        await s.advance("a", 90)
        assert await s.prune(keep=40, sinks=["a", "b"], now=100) == 30
        assert await s.prune(keep=40, sinks=["a", "b"], now=100) == 0
        st = await s.stats()
        assert st["rows"] == 42 and st["oldest_ts"] == 4 and st["last_seq"] == 100
        assert st["db_bytes"] > 0
        # Seqs are never reused after pruning (cursors depend on it).
        await s.advance("b", 100)
        assert await s.prune(keep=0, sinks=["a", "b"], now=1000) == 30  # 61..90: a is at 90
        await s.unpark((await s.parked())[0]["id"])
        assert await s.prune(keep=0, sinks=[], now=1000) == 12  # no sinks: age alone decides
        assert (await s.stats())["rows"] == 0
        await s.write([rd(5000)])
        assert [seq for seq, _ in await s.fetch_after(0, 10)] == [101]
    finally:
        await s.close()


# ----------------------------------------------------------------------------- schema, migrations

async def test_migrates_an_empty_file(tmp_path):
    path = tmp_path / "p.db"
    path.write_bytes(b"")
    s = await Store.open(path)
    await s.close()
    with raw(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 1
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        views = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    assert {"samples", "series", "events", "sink_cursors", "state", "parked"} <= tables and views == {"readings"}


async def test_no_per_meter_index_yet_meter_queries_use_the_ts_key(tmp_path):
    """Schema 3 has no (meter, ts) index (each meter's cycle dirtied a page of its own: SD wear); a query by
    meter walks the ts-led unique key, in ts order, and still counts and pages right."""
    path = tmp_path / "p.db"
    s = await Store.open(path, commit_interval=0)
    await s.write([Reading(f"m{m}", "A+", "current", 1000 + t, float(t), "Wh") for t in range(50) for m in range(5)])
    rows, total = await s.query_readings(meter="m3", page=2, per_page=20)
    assert total == 50 and [r.ts for r in rows] == list(range(1020, 1040)) and {r.meter for r in rows} == {"m3"}
    await s.close()
    with raw(path) as c:
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='samples'")}
        plan = " ".join(str(r) for r in c.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM readings WHERE meter='m3' ORDER BY ts, meter, channel, archive"))
    assert "readings_meter_ts" not in indexes
    assert "USING INDEX sqlite_autoindex_samples" in plan  # ts order from the key, no sort of the whole table
    assert "SCAN s USING INDEX" in plan and "RIGHT PART OF ORDER BY" in plan


async def test_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "p.db"
    with raw(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    for opener in (Store.open, Store.open_readonly):
        with pytest.raises(StoreError) as err:
            await opener(path)
        assert str(SCHEMA_VERSION + 5) in str(err.value) and str(SCHEMA_VERSION) in str(err.value)


async def test_later_migration_step_applies_and_a_failing_one_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "p.db"
    s = await Store.open(path, commit_interval=0)
    await s.write([rd(1, 4.0)])
    await s.close()

    bad = [*store_schema.MIGRATIONS, ("CREATE TABLE half_done (x)", "THIS IS NOT SQL")]
    monkeypatch.setattr(store_schema, "MIGRATIONS", bad)
    monkeypatch.setattr(store_schema, "SCHEMA_VERSION", len(bad))
    with pytest.raises(StoreError, match=f"migration {len(bad) - 1} -> {len(bad)} failed"):
        await Store.open(path)
    with raw(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(bad) - 1
        assert c.execute("SELECT count(*) FROM sqlite_master WHERE name='half_done'"
                         ).fetchone()[0] == 0

    good = [*store_schema.MIGRATIONS[:-1], ("ALTER TABLE samples ADD COLUMN note TEXT",)]
    monkeypatch.setattr(store_schema, "MIGRATIONS", good)
    s = await Store.open(path)
    try:
        rows, total = await s.query_readings()
        assert total == 1 and rows[0].value == 4.0
    finally:
        await s.close()
    with raw(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(good)
        cols = {r[1] for r in c.execute("PRAGMA table_info(samples)")}
    assert "note" in cols


async def test_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "p.db"
    path.write_bytes(b"this is a text file, not sqlite" * 100)
    with pytest.raises(StoreError, match="p.db"):
        await Store.open(path)


# ----------------------------------------------------------------------------- durability

async def test_data_survives_close_and_reopen(tmp_path):
    path = tmp_path / "deep" / "dir" / "p.db"
    s = await Store.open(path, commit_interval=0)
    await s.write([rd(1, 1.25), rd(2, 2.5)], [Event("m1", "x", 1)])
    await s.advance("a", 2)
    await s.close()
    s = await Store.open(path, commit_interval=0)
    try:
        assert [(seq, r.value) for seq, r in await s.fetch_after(0, 10)] == [(1, 1.25), (2, 2.5)]
        assert await s.cursor("a") == 2
        assert (await s.query_events())[1] == 1
        assert await s.write([rd(3)]) == 1 and await s.last_seq() == 3
    finally:
        await s.close()


CHILD = textwrap.dedent("""
    import asyncio, sys
    from pollerd.model import Reading
    from pollerd.store import Store

    async def main():
        store = await Store.open(sys.argv[1], commit_interval=0.01)
        i = 0
        while True:
            rows = [Reading("m", "A+", "profile", i * 10 + k, float(i), "Wh") for k in range(10)]
            assert await store.write(rows) == 10
            print("committed", i, flush=True)
            i += 1

    asyncio.run(main())
""")


@pytest.mark.slow
async def test_committed_write_survives_sigkill(tmp_path):
    path = tmp_path / "p.db"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # A plain Popen, reaped by its own wait(): asyncio's child watcher once reported this child as an
    # "unknown pid" with return code 255 under the full suite (something else had reaped it).
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    confirmed = -1
    try:
        async with timeout(15):
            while confirmed < 2:
                line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
                if not line:
                    err = proc.stderr.read()  # type: ignore[union-attr]
                    pytest.fail(f"child exited early: {err.decode(errors='replace')}")
                word, n = line.split()
                assert word == b"committed"
                confirmed = int(n)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # only reached if the test failed before the SIGKILL above
        await asyncio.to_thread(proc.wait, 30)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL

    s = await Store.open(path)
    try:
        rows, total = await s.query_readings(per_page=1000, archive="profile")
        # Everything acknowledged is there; what came after is all-or-nothing per write.
        assert total >= (confirmed + 1) * 10
        assert total % 10 == 0
        assert {r.ts for r in rows} == set(range(total))
    finally:
        await s.close()


# ----------------------------------------------------------------------------- read-only access

async def test_open_readonly(tmp_path):
    path = tmp_path / "p.db"
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open_readonly(path)
    assert not path.exists()  # a failed read-only open must not create the file

    s = await Store.open(path, commit_interval=0.01)
    try:
        await s.write([rd(1), rd(2)], [Event("m1", "x", 1)])
        ro = await Store.open_readonly(path)
        try:
            # Sees what the live daemon committed, while it runs.
            assert (await ro.query_readings())[1] == 2
            await s.write([rd(3)])
            assert [seq for seq, _ in await ro.fetch_after(1, 10)] == [2, 3]
            assert (await ro.query_events())[1] == 1
            assert await ro.last_seq() == 3
            with pytest.raises(StoreError, match="read-only"):
                await ro.write([rd(4)])
            with pytest.raises(StoreError, match="read-only"):
                await ro.advance("a", 1)
        finally:
            await ro.close()
    finally:
        await s.close()
    ro = await Store.open_readonly(path)  # and after the daemon stopped
    try:
        assert await ro.last_seq() == 3
    finally:
        await ro.close()
