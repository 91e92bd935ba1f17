"""Store files at an older schema version, built by raw SQL from the migrations as they shipped: the migration tests
need data written by an older pollerd, and today's writer knows only today's schema."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from pollerd.store.schema import MIGRATIONS


def old_store(path: Path, version: int) -> sqlite3.Connection:
    """A new store file at schema ``version`` (as the daemon would have created it); an autocommit connection."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA auto_vacuum = INCREMENTAL")
    c.execute("PRAGMA journal_mode = WAL")
    c.execute("BEGIN")
    for step in MIGRATIONS[:version]:
        for stmt in step:
            c.execute(stmt)
    c.execute(f"PRAGMA user_version = {version}")
    c.execute("COMMIT")
    return c


def insert_old(c: sqlite3.Connection, rows: Iterable[tuple[str, str, str, int, float, str, str, int]]) -> None:
    """Readings into a schema 1-5 ``readings`` table (meter, channel, archive, ts, value, unit, quality, received)."""
    c.executemany("INSERT INTO readings (meter, channel, archive, ts, value, unit, quality, received) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
