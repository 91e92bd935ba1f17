"""Mercury 230 driver, the meter clock: drift as a reading, and the once-a-day correction (03 0D) with the
checks that keep it from doing harm (date, DST, load-profile interval, size, one a day).

A mixin of :class:`~pollerd.drivers.mercury230.Mercury230Driver`; ``_Host`` names what it uses of the driver.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from ..errors import FrameError, MeterError, ReplyTimeout
from ..model import Event
from ..protocols import mercury230 as m
from .base import BusDriverContext
from .mercury230_options import MercuryOptions

if TYPE_CHECKING:
    from .mercury230 import _Cycle


class _Host(Protocol):
    ctx: BusDriverContext
    address: int
    options: MercuryOptions
    tz: ZoneInfo
    _loaded_state: dict[str, object] | None
    _profile_period: int | None
    _session_at: float | None

    async def _call(self, req: m.Request, *, retries: int | None = None) -> m.Reply: ...

    def _reading(self, cy: _Cycle, channel: str, value: float, unit: str, archive: str = "current",
                 ts: int | None = None, quality: str = "good") -> None: ...

    def _save(self, cy: _Cycle, **updates: object) -> None: ...

    def _to_utc(self, local: dt.datetime, season: int | None = None) -> int: ...

    def _local_today(self) -> dt.date: ...

    def _day_start(self, day: dt.date) -> int: ...

    async def _correction_waits(self, meter_local: dt.datetime, target: dt.datetime, drift: int) -> str | None: ...


class ClockMixin:
    """The clock step of a poll cycle (``read = [..., "clock"]``)."""

    _session_at: float | None       # set by the driver; None forces a new session
    _profile_period: int | None     # minutes, from 08 13, read when a correction needs it

    async def _clock(self: _Host, cy: _Cycle) -> None:
        mc, st = self.ctx.meter, self.ctx.state
        local, season = m.decode_time((await self._call(m.read_time(self.address))).data)
        cy.meter_date = local.date()
        now = self.ctx.clock()
        drift = self._to_utc(local, season) - round(now)
        self._reading(cy, "clock.drift", float(drift), "s")
        if abs(drift) <= mc.time_difference:
            st.alarms.pop("clock", None)
            return
        today = self._local_today().isoformat()
        day_ts = self._day_start(self._local_today())
        if not self.options.clock_correction:
            st.alarms["clock"] = (f"meter clock is {drift:+d} s off (allowed {mc.time_difference:g} s); "
                                  f"clock_correction is off")
            cy.events.append(Event(mc.name, "clock_drift", day_ts, None,
                                   f"meter clock {drift:+d} s off, beyond time_difference "
                                   f"{mc.time_difference:g} s"))
            return
        if abs(drift) > self.options.max_clock_correction:
            # Never a blind time set: a clock this far off needs a person to look at the meter.
            st.alarms["clock"] = (f"meter clock is {drift:+d} s off, more than pollerd corrects "
                                  f"({self.options.max_clock_correction:g} s); set it by hand")
            cy.events.append(Event(mc.name, "clock_drift_too_large", day_ts, None,
                                   f"meter clock {drift:+d} s off; not corrected automatically"))
            return
        assert self._loaded_state is not None
        if self._loaded_state.get("clock_corrected_on") == today:
            # One correction a day (status 4 for a second one): wait for tomorrow, never retry in a loop.
            st.alarms["clock"] = (f"meter clock is {drift:+d} s off; one correction a day was spent today, "
                                  f"the next is tomorrow")
            return
        target = dt.datetime.fromtimestamp(round(now), self.tz).replace(tzinfo=None)
        waits = await self._correction_waits(local, target, drift)
        if waits:
            st.alarms["clock"] = f"meter clock is {drift:+d} s off; correction waits: {waits}"
            return
        try:
            # Never repeated on a lost reply: a correction that took would be refused the second time
            # (status 4) and look like a failure. Whether it took shows in the next cycle's clock read.
            await self._call(m.correct_time(self.address, target), retries=0)
        except (ReplyTimeout, FrameError) as exc:
            st.alarms["clock"] = (f"meter clock is {drift:+d} s off; no clear answer to the correction ({exc}); "
                                  f"the next cycle's clock read shows whether it took")
            self._session_at = None
            return
        except MeterError as exc:
            if exc.status is None:
                raise
            # Refused (4: already corrected today, by someone; 3: access level; 1: the meter will not take
            # it): not again today, so a refusal costs one request a day, not one a cycle.
            self._save(cy, clock_corrected_on=today)
            st.alarms["clock"] = f"meter clock is {drift:+d} s off; the meter refused the correction: {exc}"
            cy.events.append(Event(mc.name, "clock_correction_refused", day_ts, None,
                                   f"meter clock {drift:+d} s off; correction refused: {exc}"))
            return
        self._save(cy, clock_corrected_on=today)
        # Read the clock back: the meter said OK, the clock says whether it took.
        local, season = m.decode_time((await self._call(m.read_time(self.address))).data)
        left = self._to_utc(local, season) - round(self.ctx.clock())
        text = f"meter clock corrected by {-drift:+d} s; now {left:+d} s off"
        cy.events.append(Event(mc.name, "clock_corrected", cy.ts, None, text))
        if abs(left) <= mc.time_difference:
            st.alarms.pop("clock", None)
            self.ctx.log.info("%s: %s", mc.name, text)
        else:
            st.alarms["clock"] = f"{text} after the correction (allowed {mc.time_difference:g} s)"
            self.ctx.log.warning("%s: %s, beyond time_difference", mc.name, text)

    async def _correction_waits(self: _Host, meter_local: dt.datetime, target: dt.datetime, drift: int) -> str | None:
        """Why a correction must wait for a later cycle, or None when it can go now.

        The command carries only the time of day, so meter and gateway must be on the same date. A fast
        meter that already started a new load-profile interval is not set back into the closed one (what
        the meter would do to that record is not documented); a few minutes later both are in the same
        interval. A slow meter moved forward over a boundary just closes its interval early, as it would
        at the boundary itself. Around a DST change the meter may read winter time while the gateway is on
        summer time (or the other way): the time of day then differs from the meter's by the drift plus an
        hour, and the correction would move the clock by that much."""
        if meter_local.date() != target.date():
            return "meter and gateway are on different dates (the correction carries no date)"
        shift = round((target - meter_local).total_seconds())
        if shift != -drift:
            return (f"meter and gateway are on different sides of a DST change: the correction would move "
                    f"the meter clock by {shift:+d} s, not {-drift:+d} s")
        if meter_local > target:
            period = self._profile_period
            if period is None:
                try:
                    last = m.decode_last_profile((await self._call(m.read_last_profile(self.address))).data)
                    period = last.period if 0 < last.period <= 60 else 30
                except MeterError as exc:
                    if exc.status is None:
                        raise
                    period = 30  # no load profile on this meter: the usual half hour
                self._profile_period = period
            step = period * 60
            midnight = meter_local.replace(hour=0, minute=0, second=0)
            if ((meter_local - midnight).total_seconds() // step
                    != (target - midnight).total_seconds() // step):
                return (f"the meter is fast and already in a new {period}-minute profile "
                        f"interval; it is not set back into the closed one")
        return None
