"""Python 3.10 support: TaskGroup and timeout() arrived in asyncio with 3.11."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import TaskGroup, timeout

    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib
    from taskgroup import TaskGroup, timeout

__all__ = ["TaskGroup", "timeout", "tomllib"]
