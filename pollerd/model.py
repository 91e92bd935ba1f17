"""Domain model: readings and events, as stored and forwarded (DESIGN.md §3)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Archive(str, enum.Enum):
    """Which archive a reading belongs to; names follow seed 000."""

    CURRENT = "current"
    PROFILE = "profile"
    HOURLY = "hourly"
    DAILY = "daily"
    MONTHLY = "monthly"
    YEARLY = "yearly"

    def __str__(self) -> str:  # so f-strings and JSON give the bare name
        return self.value


class Quality(str, enum.Enum):
    GOOD = "good"
    INCOMPLETE = "incomplete"  # e.g. a load-profile interval the meter flags as not full
    OVERFLOW = "overflow"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Reading:
    """One value the meter said. ``ts`` is UTC unix seconds of the moment (``current``) or of the
    start of the interval the value belongs to (archives). ``(meter, channel, archive, ts)`` is the
    natural key."""

    meter: str
    channel: str
    archive: str
    ts: int
    value: float
    unit: str
    quality: str = "good"

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "meter": self.meter,
            "channel": self.channel,
            "archive": str(self.archive),
            "ts": self.ts,
            "value": self.value,
            "unit": self.unit,
        }
        if self.quality != "good":
            d["quality"] = str(self.quality)
        return d


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at a meter: a journal record, an identity mismatch, a clock problem."""

    meter: str
    code: str
    ts_start: int
    ts_end: int | None = None
    text: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "meter": self.meter,
            "code": self.code,
            "ts_start": self.ts_start,
            "ts_end": self.ts_end,
            "text": self.text,
        }
