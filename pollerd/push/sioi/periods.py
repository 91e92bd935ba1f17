"""АС СиОИ periods: what one document covers. A period is named by its local start ("2024-05-01", or
"2024-05"); its bounds, build time and header fields follow from the sink's time zone.
"""

from __future__ import annotations

import datetime as _dt
import zoneinfo
from dataclasses import dataclass

from pollerd.model import Reading

PERIODS = ("daily", "monthly")


@dataclass(frozen=True, slots=True)
class Periods:
    kind: str              # "daily" | "monthly"
    tz: str
    at: _dt.time           # time of day (local) on the day after a period ends when its document is built

    @property
    def _zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.tz)

    def start_date(self, key: str) -> _dt.date:
        if self.kind == "daily":
            return _dt.date.fromisoformat(key)
        y, m = key.split("-")
        return _dt.date(int(y), int(m), 1)

    def key_of(self, d: _dt.date) -> str:
        return d.isoformat() if self.kind == "daily" else f"{d.year:04d}-{d.month:02d}"

    def next_date(self, d: _dt.date) -> _dt.date:
        if self.kind == "daily":
            return d + _dt.timedelta(days=1)
        return _dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)

    def prev_key(self, key: str) -> str:
        d = self.start_date(key)
        if self.kind == "daily":
            return self.key_of(d - _dt.timedelta(days=1))
        return self.key_of(_dt.date(d.year - (d.month == 1), (d.month - 2) % 12 + 1, 1))

    def next_key(self, key: str) -> str:
        return self.key_of(self.next_date(self.start_date(key)))

    def _local(self, d: _dt.date, t: _dt.time = _dt.time(0)) -> _dt.datetime:
        return _dt.datetime.combine(d, t, tzinfo=self._zone)

    def bounds(self, key: str) -> tuple[int, int]:
        """[start, end) of the period in UTC unix seconds (local midnights)."""
        d = self.start_date(key)
        return int(self._local(d).timestamp()), int(self._local(self.next_date(d)).timestamp())

    def build_time(self, key: str) -> float:
        """When the document of ``key`` is due: ``at`` on the first day after the period."""
        return self._local(self.next_date(self.start_date(key)), self.at).timestamp()

    def containing(self, ts: float) -> str:
        d = _dt.datetime.fromtimestamp(ts, self._zone).date()
        return self.key_of(d if self.kind == "daily" else d.replace(day=1))

    def header(self, key: str) -> dict[str, object]:
        d = self.start_date(key)
        end = self.next_date(d)
        return {"period": key, "period_start": self._local(d).isoformat(), "period_end": self._local(end).isoformat(),
                "date_from": d.isoformat(), "date_to": (end - _dt.timedelta(days=1)).isoformat()}

    def reading_fields(self, r: Reading, value_scale: float) -> dict[str, object]:
        utc = _dt.datetime.fromtimestamp(r.ts, _dt.timezone.utc)
        local = utc.astimezone(self._zone)
        value = r.value * value_scale if value_scale != 1.0 else r.value
        return {"meter": r.meter, "channel": r.channel, "archive": str(r.archive), "ts": r.ts,
                "ts_iso": utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "ts_local": local.isoformat(),
                "date": local.date().isoformat(), "time": local.strftime("%H:%M"), "value": float(value),
                "unit": r.unit, "quality": str(r.quality)}
