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


async def test_the_daemon_does_not_store_an_m_bus_monthly_value_again_after_it_was_pruned(tmp_path, monkeypatch):
    # The field report: an M-Bus meter's monthly archive value older than keep, pruned after delivery, came back
    # on the next cycle and was stored and delivered again.
    import asyncio
    import time

    from pollerd.config import load_config
    from pollerd.daemon import Daemon, supervisor
    from pollerd.sim.mbus import SimBus, serve_tcp, water_meter

    monkeypatch.setattr(supervisor, "HOUSEKEEPING_EVERY", 3600.0)  # the test prunes when it wants to
    bus = SimBus([water_meter(2, "87654321")])  # V.cold monthly at 2024-12-31: far older than keep
    server = await serve_tcp(bus, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(f'[gateway]\nname = "gw"\n[store]\nkeep = "7d"\ncommit_interval = "50ms"\n[api]\nenabled = false\n'
                   f'[[lines]]\nname = "conv"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port}\n'
                   f'[[meters]]\nname = "water"\nprotocol = "mbus"\nline = "conv"\nconnection_address = 2\n'
                   f'number_meter = "87654321"\ninterval_time = "1s"\nwaiting_time = "200ms"\ntimezone = "UTC"\n')
    d = Daemon(load_config(cfg, environ={}), tmp_path / "state")
    task = asyncio.ensure_future(d.run())

    async def monthly_rows() -> int:
        await d.store.flush()
        return (await d.store.query_readings(meter="water", archive="monthly", per_page=10))[1]

    async def polls_after(n: int) -> None:
        for _ in range(200):
            st = d.runtime.meters.get("water")
            if st is not None and st.polls >= n and st.last_ok:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no poll cycle: {d.runtime.meters}")

    try:
        await polls_after(1)
        assert await monthly_rows() == 1
        assert await d.store.prune(keep=d.config.store.keep, sinks=[], now=time.time()) >= 1
        assert await monthly_rows() == 0
        polls = d.runtime.meters["water"].polls
        await polls_after(polls + 2)  # two more cycles read the archive again
        assert await monthly_rows() == 0
        assert d.runtime.meters["water"].last_error is None
    finally:
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        server.close()
