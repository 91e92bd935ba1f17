"""Schema 6: readings as (series, ts, value, ...) rows referring to a series table, behind a `readings` view with
the old columns; the migration from a schema-5 file with data, and what the compact row must still carry
(units that change, qualities, the time received)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from store_helpers import insert_old, old_store

from pollerd.model import Event, Reading
from pollerd.store import SCHEMA_VERSION, Store

OLD = [  # meter, channel, archive, ts, value, unit, quality, received
    ("m1", "A+", "current", 100, 1.5, "Wh", "good", 101),            # seq 1
    ("m1", "A+", "current", 160, 2.5, "Wh", "good", 160),            # 2
    ("m2", "P", "current", 100, 700.0, "W", "good", 102),            # 3
    ("m1", "A+", "daily", 86_400, 10.0, "kWh", "estimated", 90_000),  # 4
    ("m2", "P", "current", 160, 0.7, "kW", "good", 161),             # 5: the unit changed, kW is the newest
    ("m1", "A+", "daily", 172_800, 11.0, "kWh", "good", 173_000),    # 6
    ("m3", "U", "current", 100, 230.1, "V", "invalid", 99),          # 7: received before ts (a clock step)
    ("m3", "U", "current", 160, 230.2, "V", "good", 160),            # 8: deleted below, as the newest row
]


def view(path: Path) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as c:
        return c.execute("SELECT * FROM readings ORDER BY seq").fetchall()


async def test_migration_from_schema_5_keeps_rows_seqs_cursors_marks_and_parked_ranges(tmp_path):
    path = tmp_path / "pollerd.db"
    with contextlib.closing(old_store(path, 5)) as c:
        insert_old(c, OLD)
        c.execute("DELETE FROM readings WHERE seq = 8")               # the high-water mark is not max(seq)
        c.execute("INSERT INTO pruned_marks (meter, channel, archive, ts) VALUES ('m1', 'A+', 'daily', 0)")
        c.execute("INSERT INTO sink_cursors (sink, seq, updated) VALUES ('up', 3, 0)")
        c.execute("INSERT INTO parked (sink, first_seq, last_seq, reason, ts, kind) "
                  "VALUES ('up', 4, 5, 'refused', 7, 'readings')")
        c.execute("INSERT INTO events (meter, code, ts_start, received) VALUES ('m1', 'cover_open', 50, 51)")
        c.execute("INSERT INTO event_cursors (sink, seq, updated) VALUES ('up', 1, 0)")
        before = c.execute("SELECT * FROM readings ORDER BY seq").fetchall()
    assert len(before) == 7

    s = await Store.open(path, commit_interval=0)
    try:
        assert await s.last_seq() == 8
        assert await s.seq_range() == (1, 8)
        assert await s.cursor("up") == 3 and await s.event_cursor("up") == 1
        assert [(p["first_seq"], p["last_seq"], p["kind"]) for p in await s.parked("up")] == [(4, 5, "readings")]
        got = await s.fetch_after(0, 100)
        assert [q for q, _ in got] == [1, 2, 3, 4, 5, 6, 7]
        assert got[2][1] == Reading("m2", "P", "current", 100, 700.0, "W")     # its own unit, not the series'
        assert got[4][1] == Reading("m2", "P", "current", 160, 0.7, "kW")
        assert got[3][1] == Reading("m1", "A+", "daily", 86_400, 10.0, "kWh", "estimated")
        assert await s.query_events() == ([Event("m1", "cover_open", 50)], 1)
        # The natural key and the pruned marks still hold; a new reading takes the next seq after the mark.
        assert await s.write([Reading("m1", "A+", "current", 100, 9.0, "Wh")]) == 0
        assert await s.write([Reading("m1", "A+", "daily", 0, 9.0, "kWh")]) == 0
        assert await s.write([Reading("m3", "U", "current", 220, 229.0, "V")]) == 1
        assert await s.last_seq() == 9
    finally:
        await s.close()
    after = view(path)
    assert after[:7] == before                                      # the view shows what the table held
    assert after[7][:8] == (9, "m3", "U", "current", 220, 229.0, "V", "good")
    with contextlib.closing(sqlite3.connect(path)) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        series = c.execute("SELECT meter, channel, archive, unit FROM series ORDER BY meter, channel, archive"
                           ).fetchall()
        names = [r[0] for r in c.execute("SELECT name FROM sqlite_sequence")]
        stored = c.execute("SELECT quality, unit FROM samples WHERE seq IN (1, 3, 4) ORDER BY seq").fetchall()
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert series == [("m1", "A+", "current", "Wh"), ("m1", "A+", "daily", "kWh"), ("m2", "P", "current", "kW"),
                      ("m3", "U", "current", "V")]
    assert names == ["samples"]                                     # the mark moved; no stale 'readings' entry
    assert stored == [(None, None), (None, "W"), ("estimated", None)]  # 'good' and the series' unit cost nothing


async def test_units_qualities_and_received_round_trip_through_the_compact_row(tmp_path):
    path = tmp_path / "pollerd.db"
    s = await Store.open(path, commit_interval=0)
    t0 = int(time.time())
    try:
        assert await s.write([Reading("m", "A+", "current", t0, 1.0, "Wh")]) == 1
        assert await s.write([Reading("m", "A+", "current", t0 + 60, 0.002, "kWh", "estimated"),
                              Reading("m", "A+", "daily", t0 - 86_400, 5.0, "kWh")]) == 2
        assert [r for _, r in await s.fetch_after(0, 10)] == [
            Reading("m", "A+", "current", t0, 1.0, "Wh"),
            Reading("m", "A+", "current", t0 + 60, 0.002, "kWh", "estimated"),
            Reading("m", "A+", "daily", t0 - 86_400, 5.0, "kWh")]
        rows, total = await s.query_readings(meter="m", archive="current")
        assert total == 2 and [r.unit for r in rows] == ["Wh", "kWh"]
    finally:
        await s.close()
    with contextlib.closing(sqlite3.connect(path)) as c:
        received = [r[0] for r in c.execute("SELECT received FROM readings ORDER BY seq")]
        # A deleting query through the view reaches the table.
        c.execute("DELETE FROM readings WHERE archive = 'daily'")
        c.commit()
        assert c.execute("SELECT count(*) FROM samples").fetchone()[0] == 2
    assert all(t0 <= r <= t0 + 5 for r in received)


async def test_meter_queries_walk_the_ts_key_and_join_the_series(tmp_path):
    path = tmp_path / "pollerd.db"
    s = await Store.open(path, commit_interval=0)
    try:
        await s.write([Reading(f"m{m}", ch, "current", 1000 + t, float(t), "Wh")
                       for t in range(30) for m in range(4) for ch in ("A+", "A-")])
        page = await s.readings_after(None, limit=5)
        assert [(r.ts, r.meter, r.channel) for r in page] == [
            (1000, "m0", "A+"), (1000, "m0", "A-"), (1000, "m1", "A+"), (1000, "m1", "A-"), (1000, "m2", "A+")]
        assert page == sorted(page, key=lambda r: (r.ts, r.meter, r.channel))   # by name, not by series id
        nxt = await s.readings_after((1000, "m3", "A-", "current"), meter="m1", limit=3)
        assert [(r.ts, r.channel) for r in nxt] == [(1001, "A+"), (1001, "A-"), (1002, "A+")]
        newest = await s.newest_readings(2, meter="m2")
        assert [(r.ts, r.channel) for r in newest] == [(1029, "A+"), (1029, "A-")]
    finally:
        await s.close()


async def test_the_writer_does_not_blank_freed_pages(tmp_path):
    # Debian's SQLite zeroes and writes every page a DELETE or DROP frees (SECURE_DELETE): SD wear for nothing.
    s = await Store.open(tmp_path / "pollerd.db", commit_interval=0)
    try:
        assert s._w is not None
        async with s._w.execute("PRAGMA secure_delete") as cur:
            assert (await cur.fetchone())[0] == 2        # FAST
    finally:
        await s.close()
