"""A store that notices harm (issue 14, observations 3 and 4): a store deleted or replaced while the daemon
runs is saved back into its path from the open connection; a store corrupt at start is moved aside (kept for
inspection) and an empty one starts, said loudly."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from pollerd.model import Reading
from pollerd.store import Store
from pollerd.store import guard as store_guard


def rows(n: int, start: int = 0) -> list[Reading]:
    return [Reading("m1", "A+", "profile", 1_700_000_000 + 60 * i, float(i), "Wh") for i in range(start, start + n)]


def count(path: Path) -> int:
    with sqlite3.connect(path) as c:
        return int(c.execute("SELECT count(*) FROM readings").fetchone()[0])


async def make_store(path: Path, n: int) -> None:
    s = await Store.open(path, commit_interval=0.0)
    try:
        for i in range(0, n, 5000):
            await s.write(rows(min(5000, n - i), i))
    finally:
        await s.close()  # checkpoints: every page is in the main file


def damage_middle(path: Path) -> None:
    size = path.stat().st_size
    page = 4096
    with open(path, "r+b") as f:
        f.seek((size // page // 2) * page)
        f.write(bytes([0xA5]) * page)  # one whole b-tree page of garbage in the middle of the file


# ----------------------------------------------------------------------------- corruption at start

async def test_a_store_corrupt_in_the_middle_is_moved_aside_at_start_and_an_empty_one_starts(tmp_path, caplog):
    path = tmp_path / "pollerd.db"
    await make_store(path, 40_000)
    damage_middle(path)
    s = await Store.open(path, commit_interval=0.0, check_seconds=30.0)
    try:
        assert await s.last_seq() == 0  # fresh
        assert await s.write(rows(3)) == 3  # and it takes writes: the gateway keeps polling
        kinds = {n.kind for n in s.notices}
        assert kinds == {"corrupt"}
        note = s.notices[0]
        assert note.fails_until > note.at and "moved aside" in note.text
    finally:
        await s.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("pollerd.db.corrupt-")]
    assert len(aside) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert aside[0].stat().st_size > 1_000_000  # the evidence is kept whole, not truncated
    assert any(r.levelname == "CRITICAL" and "corrupt" in r.getMessage() for r in caplog.records)
    # The next start names the kept file in a warning (not a failure) until someone removes it.
    s = await Store.open(path, commit_interval=0.0, check_seconds=30.0)
    try:
        assert [(n.kind, n.fails_until == n.at) for n in s.notices] == [("kept-aside", True)]
        assert aside[0].name in s.notices[0].text
    finally:
        await s.close()


async def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path):
    path = tmp_path / "pollerd.db"
    junk = b"this is not SQLite " * 300
    path.write_bytes(junk)
    s = await Store.open(path, commit_interval=0.0, check_seconds=30.0)
    try:
        assert [n.kind for n in s.notices] == ["corrupt"]
        assert "not a database" in s.notices[0].text
    finally:
        await s.close()
    main = [p for p in tmp_path.iterdir() if p.name.startswith("pollerd.db.corrupt-")]
    assert len(main) == 1 and main[0].read_bytes() == junk


async def test_without_the_check_nothing_is_moved(tmp_path):
    # One-shot commands (pollerd parked --retry) open the store for writing too; they must never move the
    # store of a running daemon aside.
    path = tmp_path / "pollerd.db"
    await make_store(path, 40_000)
    damage_middle(path)
    try:
        s = await Store.open(path, commit_interval=0.0)
        await s.close()
    except Exception:
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == []


async def test_the_check_at_start_is_bounded_in_time(tmp_path):
    path = tmp_path / "pollerd.db"
    await make_store(path, 40_000)
    res = store_guard.quick_check(path, 0.0)
    assert res.ok is None and "stopped after" in res.detail  # unfinished is not corrupt
    s = await Store.open(path, commit_interval=0.0, check_seconds=0.0)
    try:
        assert await s.last_seq() == 40_000 and s.notices == []
    finally:
        await s.close()
    assert store_guard.quick_check(path, 30.0).ok is True


# ----------------------------------------------------------------------------- deleted or replaced

async def test_a_store_deleted_while_running_is_saved_back_and_writes_continue_into_it(tmp_path, caplog):
    path = tmp_path / "state" / "pollerd.db"
    s = await Store.open(path, commit_interval=0.0, watch=True)
    try:
        await s.write(rows(100))
        for suffix in ("", "-wal", "-shm"):  # rm pollerd.db*
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        assert await s.check_file() == "deleted"
        assert count(path) == 100  # on disk at the path again, before any restart
        assert await s.write(rows(50, 100)) == 50
        assert await s.check_file() is None  # the saved file is the store's own now
        assert [n.kind for n in s.notices] == ["deleted"]
        assert "saved back" in s.notices[0].text
    finally:
        await s.close()
    assert count(path) == 150
    assert any(r.levelname == "CRITICAL" and "deleted" in r.getMessage() for r in caplog.records)
    s = await Store.open(path, commit_interval=0.0)  # the restart finds everything
    try:
        assert await s.last_seq() == 150
    finally:
        await s.close()


async def test_only_the_main_file_deleted_leaves_no_stale_wal_for_the_saved_store(tmp_path):
    path = tmp_path / "pollerd.db"
    s = await Store.open(path, commit_interval=0.0, watch=True)
    try:
        await s.write(rows(100))
        path.unlink()  # the -wal and -shm at the path are still the running store's
        assert await s.check_file() == "deleted"
        await s.write(rows(10, 100))
    finally:
        await s.close()
    assert count(path) == 110
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_store_replaced_while_running_is_saved_back_and_the_replacement_kept(tmp_path):
    path = tmp_path / "pollerd.db"
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE x (y)")
    s = await Store.open(path, commit_interval=0.0, watch=True)
    try:
        await s.write(rows(100))
        os.replace(other, path)
        assert await s.check_file() == "replaced"
        await s.write(rows(1, 100))
        assert [n.kind for n in s.notices] == ["replaced"]
    finally:
        await s.close()
    assert count(path) == 101
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("pollerd.db.replaced-")
            and not p.name.endswith(("-wal", "-shm"))]
    assert len(kept) == 1
    with sqlite3.connect(kept[0]) as c:
        assert c.execute("SELECT name FROM sqlite_master").fetchall() == [("x",)]


async def test_the_watch_notices_by_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(store_guard, "WATCH_EVERY", 0.05)
    path = tmp_path / "pollerd.db"
    s = await Store.open(path, commit_interval=0.0, watch=True)
    try:
        await s.write(rows(10))
        path.unlink()
        for _ in range(200):
            if s.notices:
                break
            await asyncio.sleep(0.02)
        assert [n.kind for n in s.notices] == ["deleted"]
        assert count(path) == 10
    finally:
        await s.close()


async def test_a_save_that_fails_keeps_the_open_store_and_is_retried(tmp_path, monkeypatch):
    path = tmp_path / "pollerd.db"
    s = await Store.open(path, commit_interval=0.0, watch=True)
    try:
        await s.write(rows(10))
        path.unlink()
        real = os.rename

        def full_disk(*args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store_guard.os, "rename", full_disk)
        assert await s.check_file() == "deleted"
        assert [n.kind for n in s.notices] == ["restore-failed"]
        assert "No space left" in s.notices[0].text
        # The open connections still hold the store: writes go on and nothing is lost...
        assert await s.write(rows(5, 10)) == 5
        monkeypatch.setattr(store_guard.os, "rename", real)
        # ...and the next check saves all of it.
        assert await s.check_file() == "deleted"
        assert [n.kind for n in s.notices] == ["deleted"]
        assert count(path) == 15
    finally:
        await s.close()
