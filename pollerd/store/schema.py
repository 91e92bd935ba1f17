"""The store's schema: migrations (append only), connection pragmas, opening a reader connection and
checking a file's schema version.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

import aiosqlite

from ..errors import StoreError

log = logging.getLogger("pollerd.store")


# Each step runs in its own transaction together with the bump of PRAGMA user_version, so a crash
# mid-migration leaves the file at the previous version, never half-migrated. Append only: never
# edit a step that has shipped.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: initial schema
        # AUTOINCREMENT so a seq is never reused after pruning: sink cursors compare against it.
        """CREATE TABLE readings (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            meter    TEXT    NOT NULL,
            channel  TEXT    NOT NULL,
            archive  TEXT    NOT NULL,
            ts       INTEGER NOT NULL,
            value    REAL    NOT NULL,
            unit     TEXT    NOT NULL,
            quality  TEXT    NOT NULL DEFAULT 'good',
            received INTEGER NOT NULL,
            UNIQUE (meter, channel, archive, ts)
        )""",
        "CREATE INDEX readings_meter_ts ON readings (meter, ts)",
        "CREATE INDEX readings_ts ON readings (ts)",
        """CREATE TABLE events (
            id       INTEGER PRIMARY KEY,
            meter    TEXT    NOT NULL,
            code     TEXT    NOT NULL,
            ts_start INTEGER NOT NULL,
            ts_end   INTEGER,
            text     TEXT    NOT NULL DEFAULT '',
            received INTEGER NOT NULL,
            UNIQUE (meter, code, ts_start)
        )""",
        "CREATE INDEX events_ts ON events (ts_start)",
        """CREATE TABLE sink_cursors (
            sink    TEXT    PRIMARY KEY,
            seq     INTEGER NOT NULL,
            updated INTEGER NOT NULL
        )""",
        """CREATE TABLE state (
            key     TEXT    PRIMARY KEY,
            value   TEXT    NOT NULL,
            updated INTEGER NOT NULL
        )""",
        """CREATE TABLE parked (
            id        INTEGER PRIMARY KEY,
            sink      TEXT    NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq  INTEGER NOT NULL,
            reason    TEXT    NOT NULL,
            ts        INTEGER NOT NULL
        )""",
        "CREATE INDEX parked_sink ON parked (sink)",
    ),
    (  # 2: the unique key led by ts. Keyed (meter, channel, ...) every commit touched one index leaf page per
        # series (a 1000-reading batch of 700 series wrote ~5.8 KB per reading to the SD card); led by ts,
        # new readings append at the right edge of the index: ~0.9 KB per reading and twice the ingest rate
        # (scripts/bench_store.py). The ts-led key also serves the ts range queries, so readings_ts goes.
        # SQLite cannot change a table's UNIQUE constraint in place: the table is rebuilt, seqs kept, and
        # the AUTOINCREMENT high-water mark carried over so a seq is never reused (sink cursors).
        "CREATE TABLE readings_seq_keep AS SELECT seq FROM sqlite_sequence WHERE name = 'readings'",
        """CREATE TABLE readings_v2 (
            seq      INTEGER PRIMARY KEY AUTOINCREMENT,
            meter    TEXT    NOT NULL,
            channel  TEXT    NOT NULL,
            archive  TEXT    NOT NULL,
            ts       INTEGER NOT NULL,
            value    REAL    NOT NULL,
            unit     TEXT    NOT NULL,
            quality  TEXT    NOT NULL DEFAULT 'good',
            received INTEGER NOT NULL,
            UNIQUE (ts, meter, channel, archive)
        )""",
        ("INSERT INTO readings_v2 (seq, meter, channel, archive, ts, value, unit, quality, received) "
        "SELECT seq, meter, channel, archive, ts, value, unit, quality, received FROM readings ORDER BY seq"),
        "DROP TABLE readings",
        "ALTER TABLE readings_v2 RENAME TO readings",
        "CREATE INDEX readings_meter_ts ON readings (meter, ts)",
        "DELETE FROM sqlite_sequence WHERE name IN ('readings', 'readings_v2')",
        ("INSERT INTO sqlite_sequence (name, seq) SELECT 'readings', max(coalesce((SELECT max(seq) FROM "
        "readings_seq_keep), 0), coalesce((SELECT max(seq) FROM readings), 0))"),
        "DROP TABLE readings_seq_keep",
    ),
    # 3: no (meter, ts) index. Every meter's readings land at that meter's own place in such an index, so each
    # poll cycle of each meter dirtied an index page of its own: measured in the 1000-meter daemon bench,
    # 586 bytes written to the disk per stored reading with it, 222 without (SD-card wear). Queries by meter
    # (local API, `pollerd readings`) walk the ts-led unique key instead: 2 -> 47 ms for one meter's page out
    # of 1 M readings on the dev machine, and as fast as before with a time range.
    ("DROP INDEX readings_meter_ts",),
    # 4: pruned means gone (issue 14). Per series, the newest archive ts that prune() deleted after every sink
    # confirmed it: a meter that re-reports its monthly archive must not have those values stored and sent
    # again. A mark per series, not a refusal of everything older than `keep`: a backfill longer than `keep`
    # (data_polling_length) brings old records no sink has seen, and those must still be stored.
    ("""CREATE TABLE pruned_marks (
            meter   TEXT    NOT NULL,
            channel TEXT    NOT NULL,
            archive TEXT    NOT NULL,
            ts      INTEGER NOT NULL,
            PRIMARY KEY (meter, channel, archive)
        ) WITHOUT ROWID""",),
    # 5: events go upstream too (issue 17), with the guarantees of readings: a per-sink cursor over an event
    # sequence number, and parked ranges that say which outbox they belong to. An event is upserted (seen
    # open, later closed), so its seq is not its row id: every insert and every change of its end or text
    # takes the next number from event_counter, and a changed event is sent again with its natural key
    # (meter, code, ts_start). A counter row, not max(seq) + 1: a number is never given twice, even if
    # events are ever deleted. Events stored before the upgrade keep their id as seq and are sent once.
    (
        "ALTER TABLE events ADD COLUMN seq INTEGER",
        "UPDATE events SET seq = id",
        "CREATE UNIQUE INDEX events_seq ON events (seq)",
        "CREATE TABLE event_counter (n INTEGER NOT NULL)",
        "INSERT INTO event_counter (n) SELECT coalesce(max(id), 0) FROM events",
        """CREATE TRIGGER events_seq_insert AFTER INSERT ON events BEGIN
            UPDATE event_counter SET n = n + 1;
            UPDATE events SET seq = (SELECT n FROM event_counter) WHERE id = new.id;
        END""",
        """CREATE TRIGGER events_seq_update AFTER UPDATE OF ts_end, text ON events
            WHEN old.ts_end IS NOT new.ts_end OR old.text IS NOT new.text BEGIN
            UPDATE event_counter SET n = n + 1;
            UPDATE events SET seq = (SELECT n FROM event_counter) WHERE id = new.id;
        END""",
        """CREATE TABLE event_cursors (
            sink    TEXT    PRIMARY KEY,
            seq     INTEGER NOT NULL,
            updated INTEGER NOT NULL
        )""",
        "ALTER TABLE parked ADD COLUMN kind TEXT NOT NULL DEFAULT 'readings'",
    ),
    # 6: fewer bytes per reading on the SD card (issue 18). Every row and every entry of the (ts, meter, channel,
    # archive) key repeated the series' text: 84 B per reading in the file, written twice (WAL, checkpoint). The
    # text moves into `series`, referenced by a small integer: a row of `samples` is (seq, series, ts, value,
    # quality, delay, unit) and its key (ts, series). `quality` is NULL for 'good', `unit` NULL for the series'
    # unit (the unit of its newest reading at the migration, its first one after), `delay` is received - ts
    # (0-2 s for a current reading: 0-1 byte instead of 4). The view `readings` shows the old columns, so
    # readers, scripts and `sqlite3 pollerd.db 'select * from readings'` keep working; the writer, retention and
    # the seq/ts paths use the tables. Series rows are never deleted (one per meter, channel and archive).
    # Seqs are kept and the AUTOINCREMENT mark carried over as in migration 2; pruned_marks stays keyed by text
    # (it is read once per reading, written only by prune).
    (
        "CREATE TABLE readings_seq_keep AS SELECT seq FROM sqlite_sequence WHERE name = 'readings'",
        """CREATE TABLE series (
            id      INTEGER PRIMARY KEY,
            meter   TEXT    NOT NULL,
            channel TEXT    NOT NULL,
            archive TEXT    NOT NULL,
            unit    TEXT    NOT NULL,
            UNIQUE (meter, channel, archive)
        )""",
        # Newest first, so the unit of each series' newest reading wins; a probe of the small series key per row
        # (0.6 s per million readings here) instead of sorting every reading by its text (3.5 s).
        ("INSERT OR IGNORE INTO series (meter, channel, archive, unit) "
         "SELECT meter, channel, archive, unit FROM readings ORDER BY seq DESC"),
        """CREATE TABLE samples (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            series  INTEGER NOT NULL,
            ts      INTEGER NOT NULL,
            value   REAL    NOT NULL,
            quality TEXT,
            delay   INTEGER NOT NULL,
            unit    TEXT,
            UNIQUE (ts, series)
        )""",
        ("INSERT INTO samples (seq, series, ts, value, quality, delay, unit) "
         "SELECT r.seq, x.id, r.ts, r.value, NULLIF(r.quality, 'good'), r.received - r.ts, NULLIF(r.unit, x.unit) "
         "FROM readings r JOIN series x ON x.meter = r.meter AND x.channel = r.channel AND x.archive = r.archive "
         "ORDER BY r.seq"),
        "DROP TABLE readings",
        "DELETE FROM sqlite_sequence WHERE name IN ('readings', 'samples')",
        ("INSERT INTO sqlite_sequence (name, seq) SELECT 'samples', max(coalesce((SELECT max(seq) FROM "
         "readings_seq_keep), 0), coalesce((SELECT max(seq) FROM samples), 0))"),
        "DROP TABLE readings_seq_keep",
        # CROSS JOIN: `samples` is always the outer loop (by seq or by its ts key), the series found by id. Let
        # choose, the planner would take a meter's few series first and scan all of `samples` once for each.
        """CREATE VIEW readings (seq, meter, channel, archive, ts, value, unit, quality, received) AS
            SELECT s.seq, x.meter, x.channel, x.archive, s.ts, s.value, coalesce(s.unit, x.unit),
                   coalesce(s.quality, 'good'), s.ts + s.delay
            FROM samples s CROSS JOIN series x ON x.id = s.series""",
        # A by-hand clean-up through the view (`DELETE FROM readings WHERE ...`) still works.
        """CREATE TRIGGER readings_delete INSTEAD OF DELETE ON readings BEGIN
            DELETE FROM samples WHERE seq = old.seq;
        END""",
    ),
]


SCHEMA_VERSION = len(MIGRATIONS)


# A gateway has 256 MB-1 GB RAM and an SD card: 2 MiB of page cache per connection is plenty for the
# hot index pages; the WAL is trimmed back after checkpoints so it does not squat on the card.
_CACHE_KIB = 2048


_BUSY_TIMEOUT_MS = 5000


_JOURNAL_SIZE_LIMIT = 32 * 1024 * 1024


async def _connect_reader(target: str, *, uri: bool) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(target, uri=uri, isolation_level=None,
                                   timeout=_BUSY_TIMEOUT_MS / 1000)
    try:
        # query_only: this connection exists to read; a stray write through it is a bug.
        for pragma in ("query_only = ON", f"busy_timeout = {_BUSY_TIMEOUT_MS}",
                       f"cache_size = -{_CACHE_KIB}"):
            await conn.execute(f"PRAGMA {pragma}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _migrate(conn: aiosqlite.Connection, path: Path) -> None:
    version = await _user_version(conn)
    if version > SCHEMA_VERSION:
        raise StoreError(f"store {str(path)!r} has schema version {version}, newer than the "
                         f"version {SCHEMA_VERSION} this pollerd knows; refusing to touch it")
    if version == 0:
        # Only settable before the first table exists; lets a later quota pass give pages
        # back to the SD card with PRAGMA incremental_vacuum instead of a full VACUUM.
        await conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    async with conn.execute("PRAGMA journal_mode = WAL") as cur:
        mode = (await cur.fetchone() or ("?",))[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"store {str(path)!r}: expected journal_mode wal, got {mode!r}")
    await conn.execute("PRAGMA synchronous = FULL")
    # Debian's SQLite (so Raspberry Pi OS's) is built with SECURE_DELETE: a page that a DELETE or DROP frees is
    # zeroed and written, through the WAL and again at the checkpoint. Migration 6 dropping the old readings table
    # wrote it whole once more (96 MB of WAL for 1 M readings; 0.3 MB with FAST); row deletes (prune, the quota)
    # write ~6 % less. FAST still zeroes deleted cells on pages that are written anyway, but no longer writes a
    # freed page only to blank it.
    await conn.execute("PRAGMA secure_delete = FAST")
    await _apply_migrations(conn, path)
    # One line for the whole upgrade, not one per step: a fresh file takes every step. A failed step
    # raises a StoreError naming it instead.
    done = await _user_version(conn)
    if done > version:
        log.info("store %s %s schema version %d", path,
                 "created at" if version == 0 else f"migrated from schema version {version} to", done)


async def _apply_migrations(conn: aiosqlite.Connection, path: Path) -> None:
    while True:
        # IMMEDIATE takes the write lock first, so two processes opening a fresh file at once
        # cannot both apply the same step; the version is re-read under the lock.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            version = await _user_version(conn)
            if version >= SCHEMA_VERSION:
                await conn.execute("COMMIT")
                return
            target = version + 1
            try:
                for stmt in MIGRATIONS[version]:
                    await conn.execute(stmt)
            except sqlite3.Error as exc:
                raise StoreError(f"store {str(path)!r}: migration {version} -> {target} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
            await conn.execute(f"PRAGMA user_version = {target}")
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise


async def check_readonly_version(conn: aiosqlite.Connection, path: Path) -> None:
    """Refuse a file at another schema version than this code's: a read-only open never migrates."""
    version = await _user_version(conn)
    if version != SCHEMA_VERSION:
        hint = ("it is newer than this pollerd; upgrade pollerd" if version > SCHEMA_VERSION
                else "start the daemon once to migrate it")
        raise StoreError(f"store {str(path)!r} has schema version {version}, this pollerd "
                         f"reads version {SCHEMA_VERSION}: {hint}")
