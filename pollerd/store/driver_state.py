"""Durable driver state: small JSON values by key (profile pointers, last archive read...), so that a
driver resumes where it stopped after a restart.
"""

from __future__ import annotations

import time
from typing import Any

import aiosqlite
import orjson

from ..errors import StoreError
from .base import StoreBase, sql_errors

_UPSERT_STATE = ("INSERT INTO state (key, value, updated) VALUES (?, ?, ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated = excluded.updated")


def _state_json(key: str, value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise StoreError(f"state {key!r}: value is not JSON-serialisable: {exc}") from exc


class DriverState(StoreBase):
    """Key -> JSON value, written in its own transaction."""

    async def get_state(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None."""
        with sql_errors(f"read state {key!r}"):
            async with self._rc.execute("SELECT value FROM state WHERE key = ?", (key,)) as cur:
                row = await cur.fetchone()
        if row is None:
            return None
        try:
            return orjson.loads(row[0])
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"state {key!r} holds invalid JSON: {exc}") from exc

    async def states(self, prefix: str) -> dict[str, Any]:
        """Every state value whose key starts with ``prefix``, by key (an operator's listing)."""
        with sql_errors(f"read states {prefix!r}*"):
            async with self._rc.execute("SELECT key, value FROM state WHERE substr(key, 1, ?) = ? ORDER BY key",
                                        (len(prefix), prefix)) as cur:
                rows = await cur.fetchall()
        out = {}
        for key, text in rows:
            try:
                out[key] = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise StoreError(f"state {key!r} holds invalid JSON: {exc}") from exc
        return out

    async def set_state(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key``; committed before returning."""
        text = _state_json(key, value)

        async def body(w: aiosqlite.Connection) -> None:
            await w.execute(_UPSERT_STATE, (key, text, int(time.time())))

        await self._write_tx(f"write state {key!r}", body)

    async def set_state_if(self, key: str, value: Any, expected: Any | None) -> bool:
        """Store ``value`` under ``key`` only if the stored value still equals ``expected`` (None: no value),
        read and written in one IMMEDIATE transaction; False, and nothing written, if someone changed it
        meanwhile (another process on the same database: `pollerd sioi` beside the daemon)."""
        text = _state_json(key, value)

        async def body(w: aiosqlite.Connection) -> bool:
            async with w.execute("SELECT value FROM state WHERE key = ?", (key,)) as cur:
                row = await cur.fetchone()
            try:
                current = None if row is None else orjson.loads(row[0])
            except orjson.JSONDecodeError:
                return False  # not what anyone expects; set_state() can still replace it
            if current != expected:
                return False
            await w.execute(_UPSERT_STATE, (key, text, int(time.time())))
            return True

        return bool(await self._write_tx(f"write state {key!r}", body))
