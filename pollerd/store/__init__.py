"""The durable local store: SQLite in WAL mode through aiosqlite (DESIGN.md §4).

:class:`Store` is in :mod:`.core`, assembled from :mod:`.writer` (group-committed writes), :mod:`.reads`
(outbox and queries), :mod:`.cursors` (sink cursors, parked ranges), :mod:`.driver_state` and
:mod:`.retention` (age limit, quota primitives); :mod:`.schema` holds the migrations and :mod:`.quota` the
quota policy that the daemon runs.
"""

from __future__ import annotations

from .core import Store
from .schema import MIGRATIONS, SCHEMA_VERSION

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Store"]
