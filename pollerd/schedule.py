"""When does a meter run next: pure functions over UTC unix seconds.

No asyncio and no clock in here: the caller passes "now" (``after``), so every rule is testable with a
fake clock. Calendar rules are evaluated in the meter's own time zone because meters keep local time and
"daily at 00:05" means 00:05 on the meter's wall clock, across DST changes.

Rules (every filter that is empty allows every day; non-empty filters are ANDed):

* ``interval``: runs at ``k * interval + offset`` (epoch aligned, so restarts do not shift the grid),
  keeping only instants whose local date passes the day filters.
* ``daily`` / ``weekly`` / ``monthly``: local ``at`` + offset on every allowed date. Weekly and monthly differ
  from daily only in that the config loader requires their filter (``days_of_week`` / ``days_of_month``).
* A local time that does not exist (spring forward) runs at the first instant after the gap; an ambiguous one
  (fall back) runs once, at its first occurrence.
* Day 31 in a 30-day month does not exist and is skipped; ``last`` matches the last day of every month.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from pollerd.config.model import MeterConfig

__all__ = ["PERIOD_TYPES", "Schedule", "next_run", "spread_offset", "local_to_utc"]

PERIOD_TYPES = ("interval", "daily", "weekly", "monthly")

# Give up after this many days: a filter combination that matches nothing in ~8 years (two leap cycles)
# matches nothing ever (e.g. a 7-day interval whose grid always lands on an excluded weekday).
HORIZON_DAYS = 8 * 366

_ONE_DAY = _dt.timedelta(days=1)
_MIDNIGHT = _dt.time(0, 0)


def spread_offset(name: str, window: float) -> float:
    """A stable offset in ``[0, window)`` for ``name``.

    Uses BLAKE2b rather than ``hash()``: Python salts string hashes per process, and the offset must be the
    same across restarts and machines so that a fleet keeps its spread and a meter keeps its slot.
    """
    if window <= 0:
        return 0.0
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    # 53 bits: exactly representable as a float fraction strictly below 1.
    frac = (int.from_bytes(digest, "big") >> 11) / float(1 << 53)
    return min(frac * window, math.nextafter(window, 0.0))


@dataclass(frozen=True, slots=True)
class Schedule:
    period_type: str                  # interval | daily | weekly | monthly
    interval: float                   # seconds, used by "interval"
    at: _dt.time                      # local time of day, used by calendar rules
    days_of_week: frozenset[int]      # ISO 1=Mon..7=Sun; empty = every day
    days_of_month: frozenset[int]     # 1..31; empty (and not last_day) = every day
    last_day: bool                    # also the last day of each month
    tz: ZoneInfo
    offset: float                     # spread offset, seconds

    def __post_init__(self) -> None:
        if self.period_type not in PERIOD_TYPES:
            raise ValueError(f"period_type {self.period_type!r} is not one of {', '.join(PERIOD_TYPES)}")
        if self.period_type == "interval" and not self.interval > 0:
            raise ValueError(f"interval must be > 0, got {self.interval!r}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset!r}")

    @classmethod
    def from_meter(cls, meter: MeterConfig, spread: float) -> Schedule:
        """Interval meters spread over their own interval; calendar meters over ``spread`` (gateway.spread)."""
        window = meter.interval_time if meter.period_type == "interval" else spread
        return cls(
            period_type=meter.period_type,
            interval=meter.interval_time,
            at=meter.at,
            days_of_week=frozenset(meter.days_of_week),
            days_of_month=frozenset(meter.days_of_month),
            last_day=meter.last_day_of_month,
            tz=ZoneInfo(meter.timezone),
            offset=spread_offset(meter.name, window),
        )

    @property
    def has_day_filter(self) -> bool:
        return bool(self.days_of_week or self.days_of_month or self.last_day)

    def allows(self, day: _dt.date) -> bool:
        """Whether the local date ``day`` passes the calendar filters."""
        if self.days_of_week and day.isoweekday() not in self.days_of_week:
            return False
        if self.days_of_month or self.last_day:
            if day.day in self.days_of_month:
                return True
            return self.last_day and day.day == calendar.monthrange(day.year, day.month)[1]
        return True

    def next_run(self, after: float) -> float:
        return next_run(self, after)


def next_run(schedule: Schedule, after: float) -> float:
    """The first run time strictly after ``after`` (both UTC unix seconds).

    Raises ValueError when the filters allow no run within :data:`HORIZON_DAYS`.
    """
    if schedule.period_type == "interval":
        return _next_interval(schedule, after)
    return _next_calendar(schedule, after)


def local_to_utc(day: _dt.date, at: _dt.time, tz: ZoneInfo) -> float:
    """UTC unix seconds of local wall time ``day at`` in ``tz``.

    Ambiguous (fall back): the first occurrence. Non-existent (spring forward): the first instant after the gap.
    """
    naive = _dt.datetime.combine(day, at)
    found: list[float] = []
    for fold in (0, 1):
        ts = naive.replace(tzinfo=tz, fold=fold).timestamp()
        # Naive comparison ignores fold, so this is "does ts show this wall time in tz".
        if _dt.datetime.fromtimestamp(ts, tz).replace(tzinfo=None) == naive:
            found.append(ts)
    if found:
        return min(found)
    # In a gap, fold=0 and fold=1 apply the offsets before and after the transition, so the two instants
    # bracket it; transitions fall on whole seconds, so a bisection over integers finds the exact instant.
    u0 = naive.replace(tzinfo=tz, fold=0).timestamp()
    u1 = naive.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = math.floor(min(u0, u1)), math.ceil(max(u0, u1))
    after_gap = _dt.datetime.fromtimestamp(hi, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _dt.datetime.fromtimestamp(mid, tz).utcoffset() == after_gap:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _local_date(ts: float, tz: ZoneInfo) -> _dt.date:
    return _dt.datetime.fromtimestamp(ts, tz).date()


def _next_allowed_date(schedule: Schedule, day: _dt.date, last: _dt.date) -> _dt.date | None:
    """The first allowed date strictly after ``day`` and not after ``last``."""
    day += _ONE_DAY
    while day <= last:
        if schedule.allows(day):
            return day
        day += _ONE_DAY
    return None


def _no_run(schedule: Schedule, after: float) -> ValueError:
    return ValueError(
        f"no run within {HORIZON_DAYS} days after {after!r} for {schedule.period_type} schedule "
        f"(days_of_week={sorted(schedule.days_of_week)}, days_of_month={sorted(schedule.days_of_month)}, "
        f"last_day={schedule.last_day}, interval={schedule.interval!r})")


def _next_interval(schedule: Schedule, after: float) -> float:
    iv, off = schedule.interval, schedule.offset
    k = math.floor((after - off) / iv) + 1
    t = k * iv + off
    while t <= after:  # float rounding can land on or below `after`; strictly-after is the contract
        k += 1
        t = k * iv + off
    if not schedule.has_day_filter:
        return t
    limit = after + HORIZON_DAYS * 86400.0
    last_date = _local_date(limit, schedule.tz)
    while t <= limit:
        day = _local_date(t, schedule.tz)
        if schedule.allows(day):
            return t
        # Jump to the first grid point of the next allowed day instead of stepping one interval at a time:
        # a 1-minute interval restricted to the 1st of the month would otherwise take ~44k steps.
        nxt = _next_allowed_date(schedule, day, last_date)
        if nxt is None:
            break
        day_start = local_to_utc(nxt, _MIDNIGHT, schedule.tz)
        k = math.ceil((day_start - off) / iv)
        t = k * iv + off
        while t < day_start:
            k += 1
            t = k * iv + off
    raise _no_run(schedule, after)


def _next_calendar(schedule: Schedule, after: float) -> float:
    tz, off = schedule.tz, schedule.offset
    # A run for date d happens at or after local midnight of d plus the offset, so dates before the local
    # date of (after - offset) all ran at or before `after`; one extra day back guards rounding at midnight.
    day = _local_date(after - off, tz) - _ONE_DAY
    last = day + _dt.timedelta(days=HORIZON_DAYS)
    while day <= last:
        if schedule.allows(day):
            t = local_to_utc(day, schedule.at, tz) + off
            if t > after:
                return t
        day += _ONE_DAY
    raise _no_run(schedule, after)
