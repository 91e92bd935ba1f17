"""Pruned means gone (issue 14, observation 9): a reading that was delivered and pruned is not stored (and so
not delivered) again when a meter re-reports it, while old records never stored before still are."""

from __future__ import annotations

import sqlite3

from pollerd.model import Reading
from pollerd.store import Store

DAY = 86400
NOW = 1_750_000_000


def monthly(ts: int, value: float, channel: str = "V") -> Reading:
    return Reading("water1", channel, "monthly", ts, value, "m3")


async def test_a_delivered_and_pruned_archive_reading_re_reported_is_not_stored_again(tmp_path):
    # The M-Bus meter's monthly archive: three values older than keep (7 days), one recent.
    old = [monthly(NOW - k * 30 * DAY, 100.0 + k) for k in (3, 2, 1)]
    recent = monthly(NOW - 2 * DAY, 110.0)
    s = await Store.open(tmp_path / "p.db", commit_interval=0.0)
    try:
        assert await s.write([*old, recent]) == 4
        await s.advance("up", await s.last_seq())  # the sink confirmed all four
        assert await s.prune(keep=7 * DAY, sinks=["up"], now=NOW) == 3
        seq = await s.last_seq()
        # The next cycle reads the whole archive again.
        assert await s.write([*old, recent]) == 0
        assert await s.last_seq() == seq  # nothing new for the sink to send
        rows, total = await s.query_readings(meter="water1", per_page=100)
        assert total == 1 and rows[0].ts == recent.ts
        # A new month still comes in, and so does a value older than what was pruned for another series.
        assert await s.write([monthly(NOW + 28 * DAY, 111.0)]) == 1
        assert await s.write([monthly(NOW - 120 * DAY, 5.0, channel="E.heat")]) == 1
    finally:
        await s.close()


async def test_an_old_record_never_stored_is_kept_even_beyond_the_prune_horizon(tmp_path):
    # A backfill after a long outage (data_polling_length > keep): nothing of that series was ever pruned,
    # so refusing it by age alone would lose data that no sink has seen.
    s = await Store.open(tmp_path / "p.db", commit_interval=0.0)
    try:
        assert await s.prune(keep=7 * DAY, sinks=[], now=NOW) == 0
        assert await s.write([monthly(NOW - 90 * DAY, 1.0)]) == 1
    finally:
        await s.close()


async def test_an_undelivered_reading_is_not_pruned_and_so_not_marked(tmp_path):
    s = await Store.open(tmp_path / "p.db", commit_interval=0.0)
    try:
        assert await s.write([monthly(NOW - 60 * DAY, 1.0), monthly(NOW - 30 * DAY, 2.0)]) == 2
        await s.advance("up", 1)  # only the first delivered
        assert await s.prune(keep=7 * DAY, sinks=["up"], now=NOW) == 1
        # The second is still there; re-reading both adds nothing and loses nothing.
        assert await s.write([monthly(NOW - 60 * DAY, 1.0), monthly(NOW - 30 * DAY, 2.0)]) == 0
        rows, total = await s.query_readings(meter="water1", per_page=100)
        assert total == 1 and rows[0].ts == NOW - 30 * DAY
    finally:
        await s.close()


async def test_the_mark_survives_a_restart(tmp_path):
    path = tmp_path / "p.db"
    s = await Store.open(path, commit_interval=0.0)
    try:
        await s.write([monthly(NOW - 60 * DAY, 1.0)])
        assert await s.prune(keep=7 * DAY, sinks=[], now=NOW) == 1
    finally:
        await s.close()
    s = await Store.open(path, commit_interval=0.0)
    try:
        assert await s.write([monthly(NOW - 60 * DAY, 1.0)]) == 0
    finally:
        await s.close()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
