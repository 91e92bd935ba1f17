"""Energy per tariff (T1..T4) and total, per day or per month, for chosen meters and dates (seed 004
"Reports data").

Where the numbers come from, in this order, and every row says which:

- ``daily`` / ``monthly``: the meter's own archive of the energy in that period (what the Mercury arrays 5
  and 3 hold; a month without a monthly archive but with every day's daily archive is their sum);
- ``counters``: no archive was read, so the difference of the ``current`` counters polled first in this
  period and first in the next one, each at most :data:`TOLERANCE` after the boundary; the row carries
  the times of both readings, since that span, not the calendar period, is what it measures;
- ``missing``: neither; the values are null, never zero.

Periods follow the meter's own time zone (its ``timezone`` setting), as its archives do.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from pollerd.store import Store

ENERGIES = {"A+": "Wh", "A-": "Wh", "R+": "varh", "R-": "varh"}
TARIFFS = (1, 2, 3, 4)
PERIODS = ("day", "month")
TOLERANCE = {"day": 3600, "month": 86400}
MAX_ROWS = 5000                  # meters x periods in one report: bounds the counter queries and the reply
PARAMS = frozenset({"meter", "period", "from", "to", "energy"})


class ReportQueryError(ValueError):
    """A report parameter is wrong; the message goes to the client as is."""


@dataclass(frozen=True, slots=True)
class ReportQuery:
    meters: tuple[str, ...]
    period: str                  # "day" | "month"
    first: dt.date               # first day (or first month's first day), inclusive
    last: dt.date                # last day (or last month's first day), inclusive
    energy: str = "A+"


@dataclass(frozen=True, slots=True)
class ReportRow:
    meter: str
    period: str                  # "2026-12-01" (day) or "2026-12" (month)
    start: int                   # UTC unix seconds of the period's start in the meter's zone
    end: int                     # exclusive
    tariffs: tuple[float | None, float | None, float | None, float | None]
    total: float | None
    unit: str
    source: str                  # "daily" | "monthly" | "counters" | "missing"
    span: tuple[int, int] | None = None  # counters: the two readings' times

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"meter": self.meter, "period": self.period, "start": self.start, "end": self.end}
        for n, v in zip(TARIFFS, self.tariffs):
            d[f"T{n}"] = v
        d.update(total=self.total, unit=self.unit, source=self.source)
        if self.span is not None:
            d["counters_from"], d["counters_to"] = self.span
        return d


def _date(name: str, raw: str, period: str) -> dt.date:
    s = raw.strip()
    try:
        if period == "month" and len(s) == 7:
            return dt.date.fromisoformat(s + "-01")
        return dt.date.fromisoformat(s)
    except ValueError:
        raise ReportQueryError(f"{name}: {raw!r} is not a date (YYYY-MM-DD, or YYYY-MM by month)") from None


def parse_query(q: Mapping[str, str], meters: Sequence[str], known: Sequence[str], today: dt.date,
                *, extra: frozenset[str] = frozenset()) -> ReportQuery:
    """Parameters of the HTML form, the CSV and the JSON endpoint alike. ``meters`` are the repeated
    ``meter`` values; none means every meter. Dates default to the last 7 days (by day) or the last 3 months
    (by month)."""
    unknown = sorted(set(q) - PARAMS - extra)
    if unknown:
        raise ReportQueryError(f"unknown parameter(s) {unknown}, expected some of {sorted(PARAMS)}")
    period = q.get("period", "day")
    if period not in PERIODS:
        raise ReportQueryError(f"period: {period!r}, expected one of {list(PERIODS)}")
    energy = q.get("energy", "A+")
    if energy not in ENERGIES:
        raise ReportQueryError(f"energy: {energy!r}, expected one of {list(ENERGIES)}")
    chosen = [m for m in meters if m]
    for m in chosen:
        if m not in known:
            raise ReportQueryError(f"meter: no meter named {m!r}")
    chosen = list(dict.fromkeys(chosen)) or list(known)
    if period == "day":
        last = _date("to", q["to"], period) if q.get("to") else today - dt.timedelta(days=1)
        first = _date("from", q["from"], period) if q.get("from") else last - dt.timedelta(days=6)
    else:
        last = (_date("to", q["to"], period) if q.get("to") else today).replace(day=1)
        first = (_date("from", q["from"], period) if q.get("from") else _add_months(last, -2)).replace(day=1)
    if first > last:
        raise ReportQueryError(f"from ({first}) is after to ({last})")
    n = len(_periods(first, last, period))
    if n * max(1, len(chosen)) > MAX_ROWS:
        raise ReportQueryError(f"{n} periods x {len(chosen)} meters is more than {MAX_ROWS} rows; "
                               "choose fewer meters or a shorter range")
    return ReportQuery(tuple(chosen), period, first, last, energy)


def _add_months(d: dt.date, n: int) -> dt.date:
    k = d.year * 12 + d.month - 1 + n
    return dt.date(k // 12, k % 12 + 1, 1)


def _periods(first: dt.date, last: dt.date, period: str) -> list[dt.date]:
    out, d = [], first
    while d <= last:
        out.append(d)
        d = d + dt.timedelta(days=1) if period == "day" else _add_months(d, 1)
    return out


def _midnight(d: dt.date, tz: ZoneInfo) -> int:
    return int(dt.datetime(d.year, d.month, d.day, tzinfo=tz).timestamp())


async def _archive(store: Store, meters: list[str], archive: str, ts_from: int, ts_to: int,
                   channels: set[str]) -> dict[str, list[tuple[int, str, float]]]:
    """Archive values of several meters in one pass (the range's rows of every meter are walked once)."""
    out: dict[str, list[tuple[int, str, float]]] = {m: [] for m in meters}
    # MAX_ROWS meter-periods x 5 channels, one row each
    for r in await store.readings_between(meters=meters, archive=archive, channels=sorted(channels),
                                          ts_from=ts_from, ts_to=ts_to, limit=MAX_ROWS * 10):
        out[r.meter].append((r.ts, r.channel, r.value))
    return out


def _bucket(values: list[tuple[int, str, float]], starts: list[int]) -> list[dict[str, float]]:
    """Archive values into the periods whose [start, next start) hold their ts."""
    out: list[dict[str, float]] = [{} for _ in starts[:-1]]
    for ts, ch, v in values:
        k = bisect.bisect_right(starts, ts) - 1
        if 0 <= k < len(out):
            out[k][ch] = v
    return out


async def build(store: Store, query: ReportQuery, tz_of: Callable[[str], ZoneInfo]) -> list[ReportRow]:
    """The report's rows, meter by meter in the query's order. Meters sharing a time zone share their
    periods, so each archive range and each counter window is read once for all of them."""
    groups: dict[str, tuple[ZoneInfo, list[str]]] = {}
    for meter in query.meters:
        tz = tz_of(meter)
        groups.setdefault(str(tz), (tz, []))[1].append(meter)
    by_meter: dict[str, list[ReportRow]] = {}
    for tz, members in groups.values():
        by_meter.update(await _build_zone(store, query, tz, members))
    return [row for meter in query.meters for row in by_meter[meter]]


async def _build_zone(store: Store, query: ReportQuery, tz: ZoneInfo, meters: list[str]) -> dict[str, list[ReportRow]]:
    energy, unit = query.energy, ENERGIES[query.energy]
    names = [energy] + [f"{energy}.T{n}" for n in TARIFFS]
    channels = set(names)
    days = _periods(query.first, query.last, query.period)
    bound_dates = days + [days[-1] + dt.timedelta(days=1) if query.period == "day" else _add_months(days[-1], 1)]
    starts = [_midnight(d, tz) for d in bound_dates]
    own_all = await _archive(store, meters, "daily" if query.period == "day" else "monthly", starts[0],
                             starts[-1], channels)
    own = {m: _bucket(own_all[m], starts) for m in meters}
    by_day: dict[str, list[dict[str, float]]] = {}
    lacking = [m for m in meters if any(not b for b in own[m])]
    if query.period == "month" and lacking:
        # Months without a monthly archive: the sum of their daily archives, when every day has one.
        day_dates = _periods(bound_dates[0], bound_dates[-1] - dt.timedelta(days=1), "day") + [bound_dates[-1]]
        day_starts = [_midnight(d, tz) for d in day_dates]
        daily_all = await _archive(store, lacking, "daily", starts[0], starts[-1], channels)
        for m in lacking:
            daily = _bucket(daily_all[m], day_starts)
            by_day[m] = []
            for k in range(len(days)):
                inside = [daily[j] for j in range(len(daily)) if starts[k] <= day_starts[j] < starts[k + 1]]
                summed: dict[str, float] = {}
                for ch in names:
                    if inside and all(ch in d for d in inside):
                        summed[ch] = sum(d[ch] for d in inside)
                by_day[m].append(summed)
    counters = _Counters(store, meters, names, starts, TOLERANCE[query.period])
    out: dict[str, list[ReportRow]] = {}
    for meter in meters:
        rows = out[meter] = []
        for k, d in enumerate(days):
            label = d.isoformat() if query.period == "day" else d.strftime("%Y-%m")
            values, source, span = own[meter][k], ("daily" if query.period == "day" else "monthly"), None
            if not values and meter in by_day and by_day[meter][k]:
                values, source = by_day[meter][k], "daily"
            if not values:
                values, span = await counters.difference(meter, k)
                source = "counters" if values else "missing"
            t1, t2, t3, t4 = (values.get(f"{energy}.T{n}") for n in TARIFFS)
            tariffs = (t1, t2, t3, t4)
            total = values.get(energy)
            if total is None and values and all(v is not None for v in tariffs):
                total = sum(v for v in tariffs if v is not None)
            rows.append(ReportRow(meter, label, starts[k], starts[k + 1], tariffs, total, unit, source, span))
    return out


class _Counters:
    """The ``current`` counters polled first after each period boundary, read per boundary for every meter
    of the report at once: a window holds the whole gateway's rows, so reading it per meter (or per
    counter) would walk it again and again."""

    def __init__(self, store: Store, meters: list[str], names: list[str], starts: list[int],
                 tolerance: int) -> None:
        self._store, self._meters, self._names = store, meters, names
        self._starts, self._tolerance = starts, tolerance
        self._cache: dict[int, dict[str, dict[str, tuple[int, float]]]] = {}

    async def _at(self, j: int) -> dict[str, dict[str, tuple[int, float]]]:
        if j not in self._cache:
            found: dict[str, dict[str, tuple[int, float]]] = {m: {} for m in self._meters}
            for r in await self._store.first_readings(
                    meters=self._meters, archive="current", channels=self._names, ts_from=self._starts[j],
                    ts_to=self._starts[j] + self._tolerance):
                found[r.meter][r.channel] = (r.ts, r.value)
            self._cache[j] = found
        return self._cache[j]

    async def difference(self, meter: str, k: int) -> tuple[dict[str, float], tuple[int, int] | None]:
        a, b = (await self._at(k))[meter], (await self._at(k + 1))[meter]
        out: dict[str, float] = {}
        span: tuple[int, int] | None = None
        for ch in self._names:
            if ch in a and ch in b and b[ch][1] >= a[ch][1]:  # a counter that went back was replaced or reset
                out[ch] = b[ch][1] - a[ch][1]
                span = (min(span[0], a[ch][0]) if span else a[ch][0],
                        max(span[1], b[ch][0]) if span else b[ch][0])
        return out, span


def kwh(v: float | None, comma: bool = False) -> str:
    if v is None:
        return ""
    s = f"{v / 1000:.3f}"
    return s.replace(".", ",") if comma else s


def to_csv(rows: Sequence[ReportRow], header: Sequence[str], *, semicolon: bool, bom: bool) -> bytes:
    """UTF-8 CSV in kWh (or kvarh). ``semicolon`` is what Excel expects in a Russian locale: ``;`` between
    fields and a decimal comma; ``bom`` makes Excel read the file as UTF-8 at all."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";" if semicolon else ",", lineterminator="\r\n")
    w.writerow(header)
    for r in rows:
        w.writerow([r.meter, r.period, *(kwh(v, semicolon) for v in r.tariffs), kwh(r.total, semicolon),
                    "k" + r.unit, r.source])
    return ("\ufeff" if bom else "").encode("utf-8") + buf.getvalue().encode("utf-8")


def to_json(query: ReportQuery, rows: Sequence[ReportRow]) -> dict[str, Any]:
    return {"period": query.period, "from": query.first.isoformat(), "to": query.last.isoformat(),
            "energy": query.energy, "data": [r.as_dict() for r in rows]}
