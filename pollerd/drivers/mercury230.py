"""Mercury 230-family driver: session handling, identity check, energy, instantaneous and fixed values,
load profile, energy archives, event journals, clock drift and correction, transformer ratios.

Byte layouts live in :mod:`pollerd.protocols.mercury230`; this module decides what to ask and how replies
become readings (channel names of DESIGN.md §3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from ..decode.mercury230 import decode_reply
from ..errors import (
    FrameError,
    IdentityMismatch,
    LineStopping,
    MeterError,
    PollerdError,
    ReplyTimeout,
    SessionClosed,
    StoreError,
    TransportError,
)
from ..model import Event, Reading
from ..protocols import mercury230 as m
from ..protocols.crc import append_crc, check_crc
from ..text import parse_hex
from .base import BusDriverContext, PollResult, ratio_factor
from .mercury230_clock import ClockMixin
from .mercury230_options import MercuryOptions

# A session left idle this long is assumed to have timed out in the meter; reopening up front costs one
# exchange, while finding out by status 5 costs two.
SESSION_IDLE = 120.0

_ENERGY = (("A+", "Wh"), ("A-", "Wh"), ("R+", "varh"), ("R-", "varh"))

_RETRYABLE = (ReplyTimeout, FrameError)
_NO_FREEZE = -1  # key in Mercury230Driver._fixed_unsupported: the meter refuses the freeze itself (03 08)
_NONE: frozenset[int] = frozenset()
_DEFAULTS = MercuryOptions()  # one instance for every meter without [meters.options]

# The read kinds that keep positions or once-a-day marks in the store's driver state. A cycle reading none of
# them (the default energy + instant) neither reads nor writes that state, so it skips the per-cycle SQLite
# read: three aiosqlite thread round trips per meter and cycle (~17 cycles a second at 1000 meters a minute).
_STATEFUL = frozenset({"clock", "profile", "daily", "monthly", "yearly"})


class Mercury230Driver(ClockMixin):
    def __init__(self, ctx: BusDriverContext) -> None:
        self.ctx = ctx
        mc = ctx.meter
        self.address = int(mc.connection_address)  # ADDRESS_PARSERS gives a Mercury meter an int
        self._password = m.password_bytes(mc.password.reveal() if mc.password else
                                          ("111111" if mc.access_level == 1 else "222222"),
                                          mc.password_encoding)
        self._session_at: float | None = None   # clock time of the last exchange inside an open session
        self._identity_checked = False
        self._group_reads = True                # cleared when the meter refuses 08 16
        # 08 11 BWRIs the meter refused (e.g. temperature), and 08 14 ones (_NO_FREEZE: 03 08 refused). Both
        # start as the shared empty frozenset and become sets of their own at the first refusal: two empty
        # sets per meter were 4 MB of the daemon's heap at 10 000 meters (issue 18).
        self._unsupported: AbstractSet[int] = _NONE
        self._fixed_unsupported: AbstractSet[int] = _NONE
        self._variant_long = False              # 08 12 00 answered where 08 12 was refused
        self.options: MercuryOptions = mc.options if isinstance(mc.options, MercuryOptions) else _DEFAULTS
        self.tz = ZoneInfo(mc.timezone)
        self._journals_at: float | None = None  # clock time journals were last read
        self._loaded_state: dict[str, object] | None = None
        self._profile_period: int | None = None  # minutes, from 08 13, read when a correction needs it
        self._m_echo = ctx.metrics.counter(
            "pollerd_echoes_total", "Requests echoed back by a half-duplex adapter and skipped", ("meter",))

    # -- exchanges -------------------------------------------------------------------------------------

    async def _ask(self, req: m.Request, *, retries: int | None = None) -> m.Reply:
        """One request with per-request retries on timeouts and bad frames. Status replies are checked."""
        mc = self.ctx.meter
        attempts = 1 + (mc.retries if retries is None else retries)
        last: PollerdError | None = None
        for _ in range(attempts):
            framer = m.ReplyFramer(req)
            try:
                reply = await self.ctx.line.exchange(req.encode(), framer, waiting_time=mc.waiting_time,
                                                     pause=mc.pause_time, meter=mc.name, shown=m.redacted(req))
            except _RETRYABLE as exc:
                last = exc
                continue
            except TransportError as exc:
                # The link dropped under this request (a converter resetting connections); the line
                # reconnects at once when the link had carried bytes. A read is asked again; a write is not,
                # since it may have been carried out.
                if req.code == m.CODE_WRITE:
                    raise
                last = exc
                continue
            if framer.echoed:
                self._m_echo.inc(meter=mc.name)
            if reply.status is not None:
                m.check_status(reply)  # raises on a nonzero status
                if req.reply_len is not None:
                    raise MeterError(f"{mc.name}: acknowledgement where data was expected for "
                                     f"[{req.encode().hex(' ')}]", 0)
            elif req.reply_len is None:
                raise MeterError(f"{mc.name}: data where an acknowledgement was expected: "
                                 f"[{reply.data.hex(' ')}]")
            self._session_at = self.ctx.clock()
            return reply
        assert last is not None
        raise last

    async def _call(self, req: m.Request, *, retries: int | None = None) -> m.Reply:
        """A request inside the session: status 5 (channel not open) reopens the session and retries once."""
        at = self._session_at
        if at is None or self.ctx.clock() - at >= SESSION_IDLE:  # _ensure_session's own test, without a coroutine
            await self._ensure_session()
        try:
            return await self._ask(req, retries=retries)
        except SessionClosed:
            self._session_at = None
            await self._ensure_session()
            return await self._ask(req, retries=retries)

    async def _ensure_session(self) -> None:
        now = self.ctx.clock()
        if self._session_at is not None and now - self._session_at < SESSION_IDLE:
            return
        self._session_at = None
        mc = self.ctx.meter
        try:
            await self._ask(m.open_channel(self.address, mc.access_level, self._password))
        except MeterError as exc:
            raise MeterError(f"{mc.name}: open channel at access level {mc.access_level} refused (wrong "
                             f"password or password_encoding?): {exc}", exc.status) from exc
        if not self._identity_checked:
            await self._check_identity()

    async def _check_identity(self) -> None:
        mc, st = self.ctx.meter, self.ctx.state
        serial, made = m.decode_serial((await self._ask(m.read_serial(self.address))).data)
        st.identity["serial"] = serial
        st.identity["manufactured"] = made.isoformat() if made else None
        if mc.number_meter is not None and _digits(serial) != _digits(mc.number_meter):
            raise IdentityMismatch(
                f"{mc.name}: the meter at address {self.address} on line {mc.line} reports serial number "
                f"{serial}, but number_meter is {mc.number_meter}; not polling it")
        try:
            ku, ki = m.decode_ratios((await self._ask(m.read_ratios(self.address))).data)
            st.identity["ku"], st.identity["ki"] = ku, ki
        except SessionClosed:
            raise
        except MeterError as exc:  # older firmware may refuse it; informational here
            self.ctx.log.info("%s: transformer ratios (08 02) not available: %s", mc.name, exc)
        # Read apart from the ratios: a refused 08 02 must not cost the constant the load profile needs.
        await self._read_constant()
        self._identity_checked = True

    async def _read_constant(self) -> int | None:
        """The meter constant from 08 12: the form that worked last first, then the other one (pre-2016
        meters know only `08 12`, newer ones are read with `08 12 00`). None when both are refused."""
        mc, st = self.ctx.meter, self.ctx.state
        refused: list[str] = []
        for long in (self._variant_long, not self._variant_long):
            req = m.read_variant(self.address, long)
            try:
                # _call: from the profile step the session may have timed out since (status 5: reopen).
                constant = m.decode_variant((await self._call(req)).data)
            except SessionClosed:
                raise
            except (MeterError, FrameError) as exc:
                refused.append(f"{req.body.hex(' ')}: {exc}")
                continue
            self._variant_long = long
            st.identity["constant"] = constant
            return constant
        self.ctx.log.info("%s: meter constant not available (%s)", mc.name, "; ".join(refused))
        return None

    # -- the cycle -------------------------------------------------------------------------------------

    async def poll(self, ts: int) -> PollResult:
        mc = self.ctx.meter
        cy = _Cycle(ts)
        answered = False
        try:
            await self._ensure_session()
            answered = True
            if (self._loaded_state is None or self.ctx.store is not None) and not _STATEFUL.isdisjoint(mc.read):
                # Read back every cycle: what the store holds is what was committed. The previous cycle's
                # positions were only saved if its readings were; going on from memory after a failed write
                # skipped those profile intervals and archive days for good.
                try:
                    self._loaded_state = await self._load_state()
                except StoreError as exc:  # without positions the archives would be read blind: skip the cycle
                    return cy.result(answered, f"cannot read the stored driver state: {exc}")
            for kind, step in (("clock", self._clock), ("energy", self._energy), ("instant", self._instant),
                               ("fixed", self._fixed), ("profile", self._profile), ("daily", self._daily),
                               ("monthly", self._monthly), ("yearly", self._yearly), ("events", self._events)):
                if kind in mc.read:
                    await step(cy)
        except IdentityMismatch as exc:
            return PollResult((), (Event(mc.name, "identity_mismatch", ts, None, str(exc)),), True, str(exc))
        except LineStopping as exc:
            return cy.result(answered, str(exc))
        except (MeterError, ReplyTimeout, FrameError, TransportError) as exc:
            self._session_at = None
            return cy.result(answered, str(exc))
        return cy.result(True, None)

    def _reading(self, cy: _Cycle, channel: str, value: float, unit: str, archive: str = "current",
                 ts: int | None = None, quality: str = "good") -> None:
        ku_ki = cy.ku_ki
        if ku_ki is None:  # once per cycle: the identity (the meter's own ratios) is read inside the cycle
            ku_ki = cy.ku_ki = self._ku_ki()
        cy.out.append(Reading(self.ctx.meter.name, channel, archive, cy.ts if ts is None else ts,
                              value * ratio_factor(channel, *ku_ki), unit, quality))

    def _ku_ki(self) -> tuple[float, float]:
        """The primary-side factors (ku, ki) that ratio_factor applies per channel: tn1/tn2 and tt from the
        config, or the meter's own KU/KI with use_meter_ratios."""
        mc, ident = self.ctx.meter, self.ctx.state.identity
        ku = (mc.tn1 / mc.tn2) if (mc.tn1 and mc.tn2) else None
        ki = mc.tt
        if self.options.use_meter_ratios:
            # _identity stores the meter's 08 02 ratios as ints (absent if the meter refused the request)
            meter_ku, meter_ki = ident.get("ku"), ident.get("ki")
            ku = ku if ku is not None or not isinstance(meter_ku, int) else meter_ku
            ki = ki if ki is not None or not isinstance(meter_ki, int) else meter_ki
        return float(ku or 1), float(ki or 1)

    async def _load_state(self) -> dict[str, object]:
        store = self.ctx.store
        if store is None:
            return {}
        value = await store.get_state(self._state_key)
        return value if isinstance(value, dict) else {}

    @property
    def _state_key(self) -> str:
        return f"mercury230:{self.ctx.meter.name}"

    def _save(self, cy: _Cycle, **updates: object) -> None:
        """Queue driver state to persist after this cycle's readings are committed."""
        assert self._loaded_state is not None
        self._loaded_state.update(updates)
        cy.state = ((self._state_key, dict(self._loaded_state)),)

    def _to_utc(self, local: dt.datetime, season: int | None = None) -> int:
        """Meter local time -> UTC unix seconds. In the repeated hour after a DST change the season byte
        (1 = winter) says which of the two it was."""
        fold = 1 if season == 1 else 0
        return int(local.replace(tzinfo=self.tz, fold=fold).timestamp())

    def _profile_ts(self, start: dt.datetime, prev: int | None) -> int:
        """UTC start of a profile record. Records carry local wall time and no season byte, so in the hour
        repeated after a fall back each start appears twice: a start whose first occurrence is not after
        the previous record's is the second one (records are written in time order). Without this the
        repeated hour got the stamps of the first one and the store dropped it as a duplicate."""
        first = self._to_utc(start)
        if prev is not None and first <= prev:
            second = self._to_utc(start, season=1)
            if second > prev:  # only an ambiguous wall time has a later second reading
                return second
        return first

    def _local_today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.ctx.clock(), self.tz).date()

    def _day_start(self, day: dt.date) -> int:
        return self._to_utc(dt.datetime(day.year, day.month, day.day))

    async def _energy(self, cy: _Cycle) -> None:
        await self._energy_array(cy, 0, 0, "current", cy.ts)

    async def _energy_array(self, cy: _Cycle, array: int, month: int, archive: str, ts: int) -> None:
        for tariff in range(5):
            values = m.decode_energy((await self._call(m.read_energy(self.address, array, month, tariff))).data)
            suffix = f".T{tariff}" if tariff else ""
            for (channel, unit), value in zip(_ENERGY, values):
                if value is not None:
                    self._reading(cy, channel + suffix, value, unit, archive, ts)

    async def _instant(self, cy: _Cycle) -> None:
        name = self.ctx.meter.name
        for group in m.INSTANT_GROUPS:
            values: tuple[float | None, ...] | None = None
            if self._group_reads:
                try:
                    values = m.decode_aux_group(
                        group, (await self._call(m.read_aux_group(self.address, group))).data)
                except MeterError as exc:
                    if exc.status != 1:
                        raise
                    # Some firmware refuses 08 16 with status 1: switch to per-value 08 11 for good.
                    self.ctx.log.info("%s: group reads (08 16) refused, using 08 11 per value", name)
                    self._group_reads = False
            if values is None:
                values = tuple([await self._single(bwri) for bwri in m.group_singles(group)])
            channels, unit = m.group_channels(group)
            for channel, value in zip(channels, values):
                if value is not None:
                    self._reading(cy, channel, value, unit)
        for bwri in m.INSTANT_SINGLES:
            value = await self._single(bwri)
            if value is not None:
                channel, unit = m.aux_channel(bwri)
                self._reading(cy, channel, value, unit)

    async def _single(self, bwri: int) -> float | None:
        if bwri in self._unsupported:
            return None
        try:
            return m.decode_aux(bwri, (await self._call(m.read_aux(self.address, bwri))).data)
        except MeterError as exc:
            if exc.status != 1:
                raise
            self._unsupported = self._unsupported | {bwri}
            self.ctx.log.info("%s: 08 11 %02X not supported by this meter; skipping it", self.ctx.meter.name,
                              bwri)
            return None

    # -- fixed (frozen) values --------------------------------------------------------------------------

    async def _fixed(self, cy: _Cycle) -> None:
        """Freeze, then read the frozen snapshot: all phases from one instant, stamped with the meter's
        time of freezing."""
        if _NO_FREEZE in self._fixed_unsupported:
            return
        if await self._fixed_step(self._call(m.freeze(self.address)), _NO_FREEZE, "03 08 (freeze)") is None:
            return  # without a fresh snapshot the 08 14 values are an old one's: read none
        # Without the meter's time of freezing (08 14 E0 refused) the values are stamped with the cycle's ts:
        # the freeze was sent moments ago in this same cycle.
        ts: int | None = None
        for fr in m.FIXED_READS:
            if fr.bwri in self._fixed_unsupported:
                continue
            reply = await self._fixed_step(self._call(m.read_fixed(self.address, fr.bwri)), fr.bwri,
                                           f"08 14 {fr.bwri:02X}")
            if reply is None:
                continue  # refused: this value is gone, the others of the snapshot are not
            data = reply.data
            if not fr.channels:  # 08 14 E0: the time of freezing, read first
                local, season = m.decode_time(data)
                ts = self._to_utc(local, season)
                continue
            for channel, value in zip(fr.channels, m.decode_fixed(fr.bwri, data)):
                if value is not None:
                    self._reading(cy, channel, value, fr.unit, "current", ts)

    async def _fixed_step(self, call: Awaitable[m.Reply], key: int, what: str) -> m.Reply | None:
        """One fixed-snapshot request; a status-1 refusal is remembered (not asked again) and costs only
        this request's values."""
        try:
            return await call
        except MeterError as exc:
            if exc.status != m.STATUS_BAD_COMMAND or isinstance(exc, SessionClosed):
                raise
            self._fixed_unsupported = self._fixed_unsupported | {key}
            self.ctx.log.info("%s: %s not supported by this meter; skipping it", self.ctx.meter.name, what)
            return None

    # -- load profile -----------------------------------------------------------------------------------

    async def _profile(self, cy: _Cycle) -> None:
        mc = self.ctx.meter
        constant = self.ctx.state.identity.get("constant") or await self._read_constant()
        if not isinstance(constant, int) or not constant:  # stored by _read_constant from 08 12: an int
            raise MeterError(f"{mc.name}: the meter constant (08 12) is unknown, so profile impulses cannot be "
                             f"converted to energy")
        last = m.decode_last_profile((await self._call(m.read_last_profile(self.address))).data)
        if last.start is None:
            return  # the profile is empty (never initialised)
        assert self._loaded_state is not None
        saved = self._loaded_state.get("profile_address")
        if 0 < last.period <= 60:
            self._profile_period = last.period
        period_s = max(1, last.period) * 60
        # data_polling_length worth of completed intervals, plus the newest record (usually still running)
        wanted = max(1, int(mc.data_polling_length // period_s)) + 1
        # Memory 3 has no more than 0x10000 / 0x10 addresses: counting further back wraps past the newest
        # record, and the walk, which stops there, would read a few records instead of the whole memory.
        wanted = min(wanted, _PROFILE_SLOTS)
        if self.ctx.store is None:
            wanted = min(wanted, 3)  # a one-shot poll shows the newest intervals, it does not backfill
        pending = _records_between(saved, last.address) if isinstance(saved, int) else None
        if isinstance(saved, int) and pending is not None and pending <= wanted:
            first = m.next_profile_address(saved)
        else:
            first = (last.address - (wanted - 1) * m.PROFILE_STEP) & 0xFFFF
            pending = wanted
        address = first
        prev_ts = self._loaded_state.get("profile_ts")
        prev_ts = prev_ts if isinstance(prev_ts, int) else None
        for _i in range(min(pending, self.options.profile_records_per_cycle)):
            rec = m.decode_profile_record(
                (await self._call(m.read_profile(self.address, address))).data)
            newest = address == last.address
            flags = m.profile_status_flags(rec.status)
            if newest and "incomplete" in flags:
                break  # the interval is still open: read it again next cycle, complete
            if rec.start is not None:  # a slot never written since the profile was initialised
                ts = self._profile_ts(rec.start, prev_ts)
                prev_ts = ts
                quality = m.profile_quality(rec) or "good"
                for channel, unit, n in (("A+", "Wh", rec.a_plus), ("A-", "Wh", rec.a_minus),
                                         ("R+", "varh", rec.r_plus), ("R-", "varh", rec.r_minus)):
                    if n is not None:
                        # FACTS: energy of an interval = N / (2 * A) kWh, A = meter constant (imp/kWh)
                        self._reading(cy, channel, m.profile_energy_wh(n, constant), unit, "profile",
                                      ts, quality)
            self._save(cy, profile_address=address, profile_ts=prev_ts)
            if newest:
                break
            address = m.next_profile_address(address)

    # -- energy archives --------------------------------------------------------------------------------

    async def _meter_today(self, cy: _Cycle) -> dt.date:
        """The meter's own date (04 00), read once a cycle: its arrays follow its clock, not the gateway's."""
        if cy.meter_date is None:
            local, _season = m.decode_time((await self._call(m.read_time(self.address))).data)
            cy.meter_date = local.date()
        return cy.meter_date

    async def _read_arrays(self, cy: _Cycle, today: dt.date,
                           reads: list[tuple[int, int, str, int]]) -> bool:
        """Read energy arrays (array, month, archive, ts) and keep the readings only when the meter is still
        on ``today`` afterwards (fresh 04 00): if its day turned meanwhile, an array may be either period."""
        mark = len(cy.out)
        try:
            for array, month, archive, ts in reads:
                await self._energy_array(cy, array, month, archive, ts)
            cy.meter_date = None
            if await self._meter_today(cy) == today:
                return True
        except BaseException:
            del cy.out[mark:]  # not confirmed: nothing of it is stored
            raise
        del cy.out[mark:]
        return False

    async def _daily(self, cy: _Cycle) -> None:
        """Yesterday's energy (array 5), once a day; today's is still growing and is not stored. "Yesterday"
        is the meter's, by its clock: around midnight a fast or slow meter's array 5 is another day."""
        today = await self._meter_today(cy)
        yesterday = today - dt.timedelta(days=1)
        assert self._loaded_state is not None
        if self._loaded_state.get("daily") == yesterday.isoformat():
            return
        if await self._read_arrays(cy, today, [(5, 0, "daily", self._day_start(yesterday))]):
            self._save(cy, daily=yesterday.isoformat())

    async def _monthly(self, cy: _Cycle) -> None:
        """Complete past months (array 3, month in the low nibble), each once; on first start as far back
        as data_polling_length and the meter's twelve-month array allow. Months by the meter's calendar."""
        today = await self._meter_today(cy)
        assert self._loaded_state is not None
        done = self._loaded_state.get("monthly")
        months: list[dt.date] = []
        window_start = self.ctx.clock() - self.ctx.meter.data_polling_length
        end = today.replace(day=1)  # the first day after the month looked at
        for _ in range(11):
            first = (end - dt.timedelta(days=1)).replace(day=1)
            if done is not None and first.isoformat() <= str(done):
                break
            # First start: every month with days inside data_polling_length (a month reaching into the
            # window holds energy of it), and at least the last one.
            if done is None and self._day_start(end) <= window_start and months:
                break
            months.append(first)
            end = first
        if months and await self._read_arrays(
                cy, today, [(3, first.month, "monthly", self._day_start(first)) for first in reversed(months)]):
            self._save(cy, monthly=months[0].isoformat())

    async def _yearly(self, cy: _Cycle) -> None:
        """Last year's energy (array 2), once a year, by the meter's calendar."""
        today = await self._meter_today(cy)
        year = today.year - 1
        assert self._loaded_state is not None
        if self._loaded_state.get("yearly") == year:
            return
        if await self._read_arrays(cy, today, [(2, 0, "yearly", self._day_start(dt.date(year, 1, 1)))]):
            self._save(cy, yearly=year)

    # -- event journals ---------------------------------------------------------------------------------

    async def _events(self, cy: _Cycle) -> None:
        now = self.ctx.clock()
        if self._journals_at is not None and now - self._journals_at < self.options.journal_interval:
            return
        mc = self.ctx.meter
        oldest_ok = now - mc.data_polling_length
        for journal, (code, text) in m.JOURNALS.items():
            for record in range(m.JOURNAL_RECORDS):
                try:
                    start, end = m.decode_journal(
                        (await self._call(m.read_journal(self.address, journal, record))).data)
                except MeterError as exc:
                    if exc.status != m.STATUS_BAD_COMMAND:
                        raise
                    break  # this meter has no such journal
                if start is None:
                    continue
                ts_start = self._to_utc(start)
                if ts_start < oldest_ok:
                    continue
                # Events are unique on (meter, code, ts_start) in the store: re-reading a journal adds nothing.
                cy.events.append(Event(mc.name, code, ts_start, self._to_utc(end) if end else None, text))
        self._journals_at = now

    # -- raw frames (seed 004 "Meter data polling") ------------------------------------------------------

    async def raw(self, command: str) -> dict[str, object]:
        """Send one HEX command (CRC appended when missing) through the line ahead of scheduled polls and
        return the reply as HEX, with its decoding when the request is one pollerd knows."""
        try:
            frame = parse_hex(command)
        except ValueError:
            raise ValueError(f"not a HEX frame: {command[:80]!r}") from None
        if len(frame) < 2:
            raise ValueError("a Mercury frame needs at least an address and a command byte")
        if not (len(frame) >= 4 and check_crc(frame)):
            frame = append_crc(frame)
        if frame[0] != self.address:
            raise ValueError(f"the frame is addressed to {frame[0]}, but {self.ctx.meter.name} is at "
                             f"address {self.address}")
        try:
            name, req = m.describe_request(frame)
        except (AttributeError, FrameError):
            name, req = "unknown", m.raw_request(frame[0], frame[1:-2])
        if req.body[:1] not in (bytes((m.CODE_OPEN,)), bytes((m.CODE_TEST,))):
            await self._ensure_session()
        mc = self.ctx.meter
        framer: m.ReplyFramer | m.AnyReplyFramer = (m.ReplyFramer(req) if name != "unknown"
                                                    else m.AnyReplyFramer(frame[0]))
        reply = await self.ctx.line.exchange(frame, framer, waiting_time=mc.waiting_time,
                                             pause=mc.pause_time, meter=mc.name, shown=m.redacted(req),
                                             priority=True)
        wire = append_crc(bytes((reply.address,)) + reply.data)
        out: dict[str, object] = {"meter": mc.name, "request": name, "command": m.redacted(req),
                                  "response": wire.hex(" ").upper(), "status": reply.status}
        if name != "unknown" and reply.status is None:
            try:
                constant = self.ctx.state.identity.get("constant")
                out["decoded"] = decode_reply(req, reply, constant=constant if isinstance(constant, int) else None,
                                              tz=self.tz)
            except FrameError as exc:
                out["decode_error"] = str(exc)
        return out

    async def probe(self) -> bool:
        mc = self.ctx.meter
        try:
            await self._ask(m.open_channel(self.address, mc.access_level, self._password), retries=0)
        except (MeterError, ReplyTimeout, FrameError, TransportError, LineStopping):
            return False
        return True

    async def close(self) -> None:
        if self._session_at is None:
            return
        self._session_at = None
        try:
            await self._ask(m.close_channel(self.address), retries=0)
        except PollerdError:
            pass  # best effort: the meter times the session out by itself


@dataclass(eq=False)
class _Cycle:
    """What one poll cycle collected so far (kept when a later step fails)."""

    ts: int
    out: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    state: tuple[tuple[str, object], ...] = ()
    meter_date: dt.date | None = None  # the meter's date by its clock (04 00), once read this cycle
    ku_ki: tuple[float, float] | None = None  # the ratios of _reading, worked out once per cycle

    def result(self, answered: bool, error: str | None) -> PollResult:
        return PollResult(tuple(self.out), tuple(self.events), answered or bool(self.out), error, self.state)


# Distinct load-profile addresses: 16-bit, records 0x10 apart.
_PROFILE_SLOTS = 0x10000 // m.PROFILE_STEP


def _records_between(saved: int, last: int) -> int:
    """Profile records after ``saved`` up to and including ``last`` (addresses 0x10 apart, wrapping)."""
    return ((last - saved) & 0xFFFF) // m.PROFILE_STEP


def _digits(s: str) -> str:
    return s.strip().lstrip("0")
