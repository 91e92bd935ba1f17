"""Meter drivers: per meter family, which requests to send and how replies become readings.

The registry is explicit: a protocol name maps to what it can ``read`` and to its driver factory.
"""

from __future__ import annotations

import enum


class Protocol(str, enum.Enum):
    MERCURY230 = "mercury230"

    def __str__(self) -> str:
        return self.value


# What a meter's `read = [...]` may contain, per protocol, and what it defaults to.
READ_KINDS: dict[Protocol, tuple[str, ...]] = {
    Protocol.MERCURY230: ("energy", "instant"),
}
DEFAULT_READ: dict[Protocol, tuple[str, ...]] = {
    Protocol.MERCURY230: ("energy", "instant"),
}
