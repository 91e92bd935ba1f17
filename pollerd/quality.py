"""The one check every reading passes between a driver's cycle and the store (DESIGN.md §6).

A figure that reaches the store ends up upstream and, for energy, on a bill: a value that is not a finite
number, not a number at all, or beyond anything a meter can measure is dropped here, per record, with a
reason the daemon counts and logs. The rest of the cycle is stored; the store never sees (and is never
blamed for) a bad value.

Pure functions, no I/O: the daemon calls :func:`screen` once, where cycle results go to the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .model import Reading

__all__ = ["MAX_MAGNITUDE", "REASONS", "Dropped", "Screened", "check_value", "describe", "screen"]

# 1e15 in any unit: 1 PWh is more than a large power station produces in a century, and no meter register
# times its transformer ratios gets near it. Beyond it a value is a decoding or scaling fault, not a reading.
MAX_MAGNITUDE = 1e15

# A unix ts outside this range cannot be a real reading's time: before 1970 or past the year 3000.
TS_MAX = 32_503_680_000

# Channels whose physics bounds them tighter than MAX_MAGNITUDE. A power factor is cos(phi): |PF| <= 1; the
# small margin keeps a meter's own rounding (1.000x) rather than dropping it.
_PF_LIMIT = 1.001

REASONS = ("non_finite", "not_a_number", "implausible", "bad_timestamp")


@dataclass(frozen=True, slots=True)
class Dropped:
    """A reading that did not pass, and why. ``reason`` is one of :data:`REASONS` (a metric label);
    ``detail`` is one line for logs and the API."""

    reading: Reading
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Screened:
    kept: tuple[Reading, ...]
    dropped: tuple[Dropped, ...]


def _channel_limit(channel: str) -> float:
    base = channel.split(".", 1)[0]
    return _PF_LIMIT if base == "PF" else MAX_MAGNITUDE


def check_value(channel: str, value: object) -> tuple[str, str] | None:
    """``(reason, detail)`` when ``value`` must not be stored for ``channel``; None when it may."""
    # bool is an int subclass, but a True/False where a measurement belongs is a driver fault.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "not_a_number", f"{type(value).__name__} {value!r} is not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "non_finite", f"{value!r} is not a finite number"
    limit = _channel_limit(channel)
    try:
        magnitude = abs(float(value))
    except OverflowError:  # an int beyond float range
        return "implausible", f"{value!r} is beyond any meter's range"
    if magnitude > limit:
        return "implausible", f"{value!r} is beyond the plausible range ±{limit:g}"
    return None


def _check(r: Reading) -> tuple[str, str] | None:
    v, ts = r.value, r.ts
    # The common case in one expression (issue 18: this runs for every value the daemon stores): a float within
    # the power-factor bound fits every channel; a larger one fits every channel but PF. NaN fails every
    # comparison and takes the full path below, which also gives the reason.
    if (type(v) is float and type(ts) is int and 0 <= ts <= TS_MAX
            and (-_PF_LIMIT <= v <= _PF_LIMIT
                 or (-MAX_MAGNITUDE <= v <= MAX_MAGNITUDE and _channel_limit(r.channel) == MAX_MAGNITUDE))):
        return None
    bad = check_value(r.channel, v)
    if bad is not None:
        return bad
    if isinstance(r.ts, bool) or not isinstance(r.ts, int) or not 0 <= r.ts <= TS_MAX:
        return "bad_timestamp", f"ts {r.ts!r} is not a plausible unix time"
    return None


def screen(readings: Iterable[Reading]) -> Screened:
    """Split a cycle's readings into those fit for the store and those dropped, keeping their order."""
    kept: list[Reading] = []
    dropped: list[Dropped] = []
    for r in readings:
        bad = _check(r)
        if bad is None:
            kept.append(r)
        else:
            dropped.append(Dropped(r, *bad))
    return Screened(tuple(kept), tuple(dropped))


def describe(dropped: Iterable[Dropped], limit: int = 5) -> str:
    """One line naming the dropped readings (the first ``limit``) and their reasons."""
    items = list(dropped)
    parts = [f"{d.reading.channel}/{d.reading.archive}@{d.reading.ts}: {d.detail} ({d.reason})"
             for d in items[:limit]]
    if len(items) > limit:
        parts.append(f"and {len(items) - limit} more")
    return "; ".join(parts)
