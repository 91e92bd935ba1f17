"""DLMS/COSEM meters with the СПОДЭС profile (ГОСТ Р 58940-2020): one cycle = link + association (kept between
cycles where allowed), clock, energy and instantaneous registers by GET-with-list with their scaler/unit,
load profiles and daily/monthly billing profiles by selective access (range over the clock column, from the
stored position), event journals; all on the line's exchange, one bus discipline with the other protocols.

Profiles are decoded by the capture objects the meter reports (attribute 3), never by an assumed column
order; each value column is scaled by its register's attribute 3.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

from ..errors import FrameError, IdentityMismatch, LineStopping, MeterError, ReplyTimeout, StoreError, TransportError
from ..model import Event, Reading
from ..protocols.dlms import axdr
from ..protocols.dlms import spodes as sp
from ..protocols.dlms.describe import decode_apdu
from ..protocols.dlms.errors import AssociationRejected, DataAccessError, DataError, LinkRefused
from ..protocols.dlms.hdlc import LinkParams, ServerAddress
from ..protocols.dlms.session import ClientSession, SessionConfig
from ..protocols.dlms.xdlms import Attr, DataAccessFailure, obis_bytes, obis_text, range_access
from .base import BusDriverContext, PollResult, ratio_factor
from .dlms_client import DlmsClient
from .dlms_options import DlmsOptions, physical_from_serial

__all__ = ["READ_KINDS", "DlmsDriver", "session_config"]

READ_KINDS = ("energy", "instant", "profile", "daily", "monthly", "events", "clock")
# Items per GET-with-list: the reply must fit the negotiated PDU without block transfer (which a list reply
# cannot use here); a scaler/unit result is 7 bytes, a double-long 6, so PDU/16 leaves room to spare.
LIST_MIN, LIST_MAX = 4, 32
# A kept association older than this (idle) is opened afresh rather than tried: СПОДЭС meters drop the link
# after their inactivity timeout (commonly 120 s, FACTS.md of the shared vectors), and some then stay
# silent instead of answering DM, which would cost a whole waiting_time before the reopen.
IDLE_REOPEN = 100.0
_MULTIPLE_REFERENCES = 1 << (23 - 14)


def session_config(meter: Any, opts: DlmsOptions) -> SessionConfig:
    """The session a meter's config asks for (shared by the driver and `pollerd raw`/`poll`)."""
    address = meter.connection_address
    if address == "serial":
        if not meter.number_meter:
            raise MeterError(f"{meter.name}: connection_address = \"serial\" needs number_meter")
        address = physical_from_serial(meter.number_meter)
    password = None
    if meter.password is not None:
        secret = meter.password.reveal()
        # The LLS password is an octet string: ASCII as printed on the meter, or hex for binary ones.
        password = bytes.fromhex(secret) if meter.password_encoding == "hex" else secret.encode("latin-1")
    client_sap = opts.client_sap or (32 if password else 16)
    if opts.framing == "wrapper":
        server = ServerAddress(opts.server_logical, 0, 4)
    elif opts.server_address_size == 1:
        server = ServerAddress(opts.server_logical, None, 1)
    else:
        server = ServerAddress(opts.server_logical, int(address), opts.server_address_size)
    return SessionConfig(opts.framing, server, client_sap, password, opts.max_pdu,
                         LinkParams(opts.max_info_length, opts.max_info_length, 1, 1))


class _Cycle:
    def __init__(self, ts: int) -> None:
        self.ts = ts
        self.out: list[Reading] = []
        self.events: list[Event] = []
        self.state: tuple[tuple[str, object], ...] = ()
        self.dropped = 0
        self.unscaled = 0


class DlmsDriver:
    def __init__(self, ctx: BusDriverContext) -> None:
        self.ctx = ctx
        self.line = ctx.line
        mc = ctx.meter
        self.opts = mc.options if isinstance(mc.options, DlmsOptions) else DlmsOptions()
        self.tz = ZoneInfo(mc.timezone)
        self.session = ClientSession(session_config(mc, self.opts))
        self.client = DlmsClient(self.session, self._exchange)
        self._conformance = 0
        self._identity_checked = False
        self._scalers: dict[bytes, tuple[int, int]] = {}
        self._plans: dict[str, tuple[list[sp.Column], int]] = {}
        self._absent: set[str] = set()           # objects the meter does not have (object-undefined)
        self._stored: dict[str, object] | None = None
        self._used: float | None = None          # when the association was last used (ctx.clock)

    async def _exchange(self, data: bytes, framer: Any, shown: str | None) -> Any:
        mc = self.ctx.meter
        return await self.line.exchange(data, framer, waiting_time=mc.waiting_time, pause=mc.pause_time,
                                        meter=mc.name, shown=shown)

    # ------------------------------------------------------------------------------------------- session

    async def _open(self) -> None:
        now = self.ctx.clock()
        idle = now - self._used if self._used is not None else 0.0
        self._used = now
        if self.session.associated and idle <= IDLE_REOPEN:
            return
        self.session.drop()
        try:
            await self._open_fresh()
        except LinkRefused:
            # The meter still holds an old link (NDM after its inactivity timeout is DM too): DISC, then again.
            await self._disc()
            await self._open_fresh()
        aare_conf = self.session.negotiated_pdu
        self.ctx.log.debug("%s: associated (max PDU %s)", self.ctx.meter.name, aare_conf)
        if not self._identity_checked:
            await self._check_identity()

    async def _open_fresh(self) -> None:
        """SNRM/AARQ. A frame that is not their answer (FrameError) is a late reply of the association
        dropped after a timeout (issue 14: a converter held it back until the next request). The meter
        answers in order, so what follows is the answer to this SNRM: open again at once, up to
        ``retries`` times, instead of losing the cycle. The refused frame's N(S) and invoke id never reach
        a value: a new link starts both afresh."""
        mc = self.ctx.meter
        for attempt in range(1 + mc.retries):
            try:
                await self.client.open()
                return
            except FrameError as exc:
                if attempt == mc.retries:
                    raise
                self.ctx.log.info("%s: %s while associating (a late reply?); associating again", mc.name, exc)
                self.session.drop()

    async def _disc(self) -> None:
        self.session.drop()
        disc = self.session.close_request()
        if disc is not None:
            try:
                await self._exchange(disc, self.session.framer(), None)
            except (ReplyTimeout, FrameError):
                pass

    async def _check_identity(self) -> None:
        mc, st = self.ctx.meter, self.ctx.state
        serial = await self.client.get(sp.SERIAL)
        text = serial.decode("latin-1") if isinstance(serial, bytes) else str(serial)
        st.identity["serial"] = text
        try:
            st.identity["type"] = _text(await self.client.get(sp.TYPE))
        except DataAccessError:
            pass
        if mc.number_meter is not None and _digits(text) != _digits(mc.number_meter):
            raise IdentityMismatch(f"{mc.name}: the meter at address {mc.connection_address} on line {mc.line} "
                                   f"reports serial number {text}, but number_meter is {mc.number_meter}")
        self._identity_checked = True

    async def _step(self, step: Any, cy: _Cycle) -> None:
        """One read kind; a meter that dropped the association in between (its inactivity timeout) is
        associated again and the step retried once."""
        try:
            await step(cy)
        except (LinkRefused, DataAccessError) as exc:
            if isinstance(exc, DataAccessError) and "service-not-allowed" not in str(exc.reason):
                raise
            self.ctx.log.info("%s: association lost (%s); associating again", self.ctx.meter.name, exc)
            self.session.drop()
            await self._open()
            await step(cy)

    # ----------------------------------------------------------------------------------------------- poll

    async def poll(self, ts: int) -> PollResult:
        mc = self.ctx.meter
        cy = _Cycle(ts)
        answered = False
        error: str | None = None
        try:
            async with self.line.session(mc.name):
                await self._open()
                answered = True
                self._stored = await self._load_state()
                for kind, step in (("clock", self._clock), ("energy", self._energy), ("instant", self._instant),
                                   ("profile", self._profile), ("daily", self._daily), ("monthly", self._monthly),
                                   ("events", self._events)):
                    if kind in mc.read:
                        await self._step(step, cy)
                if not self.opts.keep_association:
                    await self._close()
        except IdentityMismatch as exc:
            return PollResult((), (Event(mc.name, "identity_mismatch", ts, None, str(exc)),), True, str(exc))
        except StoreError as exc:
            error = f"cannot read the stored driver state: {exc}"
        except AssociationRejected as exc:
            self.session.drop()
            error = f"{mc.name}: {exc}"
        except LineStopping as exc:
            error = str(exc)
        except (MeterError, ReplyTimeout, FrameError, TransportError) as exc:
            # The link state (N(S)/N(R), a half-done block transfer) is unknown now: start clean next time.
            self.session.drop()
            error = str(exc)
        if cy.dropped or cy.unscaled:
            self.ctx.log.info("%s: values dropped: %d not finite or not numeric, %d without a scaler/unit "
                              "(attribute 3 refused)", mc.name, cy.dropped, cy.unscaled)
        return PollResult(tuple(cy.out), tuple(cy.events), answered or bool(cy.out), error, cy.state)

    async def raw(self, command: str) -> dict[str, object]:
        """One xDLMS APDU in HEX (e.g. a GET-Request ``C0 01 C1 00 03 01 00 01 08 00 FF 02 00``), sent on
        the meter's association ahead of scheduled polls; the reply APDU comes back as HEX and decoded.
        Not an HDLC frame: N(S)/N(R) and segmentation belong to the session, so pollerd frames it."""
        try:
            apdu = bytes.fromhex(command.replace(":", " "))
        except ValueError:
            raise ValueError(f"not a HEX APDU: {command[:80]!r}") from None
        if not apdu:
            raise ValueError("an empty APDU")
        if apdu[0] == 0x7E or apdu[:2] == b"\x00\x01":
            raise ValueError("give an xDLMS APDU (C0 ... GET, C1 ... SET), not an HDLC frame or wrapper PDU: "
                             "pollerd frames it with the session's sequence numbers")
        if apdu[0] in (0x60, 0x62):
            raise ValueError("association requests (AARQ/RLRQ) are pollerd's to send, not raw commands")
        mc = self.ctx.meter
        async with self.line.session(mc.name, priority=True):
            await self._open()
            try:
                reply = await self.client.transact(apdu)
            except (FrameError, ReplyTimeout):
                self.session.drop()
                raise
        out: dict[str, object] = {"meter": mc.name, "command": apdu.hex(" ").upper(),
                                  "response": reply.hex(" ").upper()}
        try:
            out["decoded"] = decode_apdu(reply)
        except FrameError as exc:
            out["decode_error"] = str(exc)
        return out

    async def probe(self) -> bool:
        try:
            async with self.line.session(self.ctx.meter.name):
                self.session.drop()
                await self._open()
                await self.client.get(sp.CLOCK)
            return True
        except (MeterError, ReplyTimeout, FrameError, TransportError, LineStopping):
            self.session.drop()
            return False

    async def close(self) -> None:
        try:
            async with self.line.session(self.ctx.meter.name):
                await self._close()
        except (MeterError, ReplyTimeout, FrameError, TransportError, LineStopping):
            self.session.drop()

    async def _close(self) -> None:
        if self.session.connected or self.session.associated:
            try:
                await self.client.close()
            finally:
                self.session.drop()

    # ---------------------------------------------------------------------------------------------- state

    async def _load_state(self) -> dict[str, object]:
        store = self.ctx.store
        if store is None:
            return dict(self._stored or {})
        value = await store.get_state(self._state_key)
        return value if isinstance(value, dict) else {}

    @property
    def _state_key(self) -> str:
        return f"dlms:{self.ctx.meter.name}"

    def _save(self, cy: _Cycle, key: str, value: object) -> None:
        assert self._stored is not None
        self._stored[key] = value
        cy.state = ((self._state_key, dict(self._stored)),)

    # ------------------------------------------------------------------------------------------- readings

    def _reading(self, cy: _Cycle, channel: str, raw: Any, scaler_unit: tuple[int, int] | None, archive: str,
                 ts: int) -> None:
        if scaler_unit is None:
            # Without attribute 3 the raw number's scale is unknown (23012 may be 230.12 V): a wrong number is
            # worse than none.
            cy.unscaled += 1
            return
        scaler, unit = scaler_unit
        value = sp.scale(raw, scaler)
        if value is None or not math.isfinite(value):
            cy.dropped += 1
            return
        cy.out.append(Reading(self.ctx.meter.name, channel, archive, ts, value * self._ratio(channel),
                              sp.unit_of(channel, unit)))

    def _ratio(self, channel: str) -> float:
        """Primary-side factor from the config's tn1/tn2 (voltage) and tt (current) ratios."""
        mc = self.ctx.meter
        ku = (mc.tn1 / mc.tn2) if (mc.tn1 and mc.tn2) else 1.0
        ki = mc.tt or 1.0
        return ratio_factor(channel, ku, ki)

    async def _get_many(self, attrs: list[Attr]) -> list[Any]:
        """Values (or DataAccessFailure) of ``attrs``: GET-with-list where the meter has it, else one by one."""
        out: list[Any] = []
        if self._conformance_has_lists():
            chunk = max(LIST_MIN, min(LIST_MAX, self.session.negotiated_pdu // 16))
            for i in range(0, len(attrs), chunk):
                out += await self.client.get_list(attrs[i:i + chunk])
            return out
        for a in attrs:
            try:
                out.append(await self.client.get(a))
            except DataAccessError as exc:
                if exc.status is None:
                    raise
                out.append(DataAccessFailure(exc.status))
        return out

    def _conformance_has_lists(self) -> bool:
        return bool(self.session.conformance & _MULTIPLE_REFERENCES)

    async def _registers(self, cy: _Cycle, names: tuple[str, ...]) -> None:
        present = [n for n in names if n not in self._absent]
        lns = [obis_bytes(n) for n in present]
        attrs = [Attr(sp.CLASS_REGISTER, ln, 2) for ln in lns]
        missing = [ln for ln in lns if ln not in self._scalers]
        attrs += [Attr(sp.CLASS_REGISTER, ln, 3) for ln in missing]
        values = await self._get_many(attrs)
        for ln, su in zip(missing, values[len(lns):]):
            if isinstance(su, tuple) and len(su) == 2 and all(isinstance(x, int) for x in su):
                self._scalers[ln] = (su[0], su[1])
        for name, ln, value in zip(present, lns, values[:len(lns)]):
            if isinstance(value, DataAccessFailure):
                if value.code in (4, 11):          # object-undefined / unavailable: this meter has no such register
                    self._absent.add(name)
                continue
            channel = sp.channel_of(ln) or name
            self._reading(cy, channel, value, self._scalers.get(ln), "current", cy.ts)

    async def _energy(self, cy: _Cycle) -> None:
        await self._registers(cy, sp.ENERGY)

    async def _instant(self, cy: _Cycle) -> None:
        await self._registers(cy, sp.INSTANT)

    # --------------------------------------------------------------------------------------------- clock

    async def _clock(self, cy: _Cycle) -> None:
        mc, st = self.ctx.meter, self.ctx.state
        raw = await self.client.get(sp.CLOCK)
        asked = self.ctx.clock()
        if not isinstance(raw, bytes):
            raise DataError(f"{mc.name}: the clock's value is {type(raw).__name__}, a 12-byte date-time octet "
                            f"string expected ({raw!r})")
        meter_ts = axdr.CosemDateTime.parse(raw).to_unix(self.tz)
        if meter_ts is None:
            raise MeterError(f"{mc.name}: the meter's clock is unspecified [{raw.hex(' ')}]")
        drift = meter_ts - int(asked)
        cy.out.append(Reading(mc.name, "clock.drift", "current", cy.ts, float(drift), "s"))
        if abs(drift) <= mc.time_difference:
            st.alarms.pop("clock", None)
            return
        if not self.opts.clock_set or self.session.cfg.client_sap == 16:
            why = "clock_set is off" if not self.opts.clock_set else "the public client may not set it"
            st.alarms["clock"] = f"meter clock is {drift:+d} s off (allowed {mc.time_difference:g} s); {why}"
            return
        now = dt.datetime.fromtimestamp(self.ctx.clock(), self.tz).replace(microsecond=0)
        offset = now.utcoffset() or dt.timedelta(0)
        await self.client.set(sp.CLOCK, axdr.CosemDateTime.from_datetime(
            now, deviation=-int(offset.total_seconds() // 60)))
        st.alarms.pop("clock", None)
        cy.events.append(Event(mc.name, "clock_set", cy.ts, None, f"meter clock was {drift:+d} s off; set"))
        self._save(cy, "clock_set", cy.ts)

    # ------------------------------------------------------------------------------------------- profiles

    async def _plan(self, ln: str) -> tuple[list[sp.Column], int]:
        if ln not in self._plans:
            caps = await self.client.get(Attr(sp.CLASS_PROFILE, obis_bytes(ln), 3))
            try:
                plan = sp.column_plan(caps if isinstance(caps, list) else [])
            except ValueError as exc:
                raise MeterError(f"{self.ctx.meter.name}: profile {ln}: {exc}") from None
            if not any(c.clock for c in plan):
                raise MeterError(f"{self.ctx.meter.name}: profile {ln} has no clock column")
            period = await self.client.get(Attr(sp.CLASS_PROFILE, obis_bytes(ln), 4))
            need = [c.attr.obis for c in plan if c.channel and c.attr.obis not in self._scalers]
            for obis_ln, su in zip(need, await self._get_many([Attr(sp.CLASS_REGISTER, x, 3) for x in need])):
                if isinstance(su, tuple) and len(su) == 2:
                    self._scalers[obis_ln] = (su[0], su[1])
            missing = [obis_text(c.attr.obis) for c in plan if c.channel and c.attr.obis not in self._scalers]
            if missing:
                # Reading on would store unscaled numbers or, dropping them, move the position past them for
                # good: the profile waits until the meter gives every column's scaler.
                raise MeterError(f"{self.ctx.meter.name}: profile {ln}: no scaler/unit for {', '.join(missing)}")
            self._plans[ln] = (plan, int(period) if isinstance(period, int) else 0)
        return self._plans[ln]

    def _start(self, key: str, cy: _Cycle) -> int:
        assert self._stored is not None
        floor = cy.ts - int(self.ctx.meter.data_polling_length)
        pos = self._stored.get(key)
        return max(floor, int(pos) + 1) if isinstance(pos, int) else floor

    def _local(self, ts: int) -> axdr.CosemDateTime:
        return axdr.CosemDateTime.from_datetime(dt.datetime.fromtimestamp(ts, self.tz), None, None)

    async def _rows(self, ln: str, start: int, end: int) -> list[Any]:
        rows = await self.client.get(Attr(sp.CLASS_PROFILE, obis_bytes(ln), 2),
                                     range_access(self._local(start), self._local(end)))
        return rows if isinstance(rows, list) else []

    async def _archive(self, cy: _Cycle, ln: str, archive: str, window: int) -> None:
        """Read profile ``ln`` from its stored position to now, ``window`` seconds per selective read."""
        if ln in self._absent:
            return
        try:
            plan, period = await self._plan(ln)
        except DataAccessError as exc:
            if exc.status in (4, 11):
                self._absent.add(ln)
                return
            raise
        key = f"pos:{ln}"
        start = self._start(key, cy)
        clock_col = next(c for c in plan if c.clock)
        shift = period if archive == "profile" else 0
        while start <= cy.ts:
            end = min(cy.ts, start + window - 1)
            last = None
            for row in await self._rows(ln, start, end):
                if not isinstance(row, tuple) or len(row) != len(plan):
                    cy.dropped += 1
                    continue
                cap = row[clock_col.index]
                when = axdr.CosemDateTime.unix_of(cap, self.tz) if isinstance(cap, bytes) else None
                if when is None:
                    cy.dropped += 1
                    continue
                for col in plan:
                    if col.channel and col.data_index == 0:
                        self._reading(cy, col.channel, row[col.index], self._scalers.get(col.attr.obis), archive,
                                      when - shift)
                last = when if last is None else max(last, when)
            if last is not None:
                self._save(cy, key, last)
            start = end + 1

    async def _profile(self, cy: _Cycle) -> None:
        for ln in self.opts.load_profiles:
            period = (await self._plan(ln))[1] if ln not in self._absent else 0
            await self._archive(cy, ln, "profile", max(1, self.ctx.meter.package_size) * (period or 1800))

    async def _daily(self, cy: _Cycle) -> None:
        await self._archive(cy, sp.DAILY, "daily", max(1, self.ctx.meter.package_size) * 86400)

    async def _monthly(self, cy: _Cycle) -> None:
        await self._archive(cy, sp.MONTHLY, "monthly", max(1, self.ctx.meter.package_size) * 31 * 86400)

    async def _events(self, cy: _Cycle) -> None:
        mc = self.ctx.meter
        for ln in self.opts.journals or tuple(sp.JOURNALS):
            if ln in self._absent:
                continue
            try:
                plan, _ = await self._plan(ln)
            except DataAccessError as exc:
                if exc.status in (3, 4, 11):
                    self._absent.add(ln)
                    continue
                raise
            name = sp.JOURNALS.get(ln, ln)
            key = f"pos:{ln}"
            start = self._start(key, cy)
            clock_col = next(c for c in plan if c.clock)
            code_col = next((c for c in plan if c.event_code), None)
            last = None
            for row in await self._rows(ln, start, cy.ts):
                if not isinstance(row, tuple) or len(row) != len(plan):
                    continue
                cap = row[clock_col.index]
                when = axdr.CosemDateTime.unix_of(cap, self.tz) if isinstance(cap, bytes) else None
                if when is None:
                    continue
                code = row[code_col.index] if code_col else None
                cy.events.append(Event(mc.name, f"{name}:{code}", when, None,
                                       f"СПОДЭС journal {name} ({obis_text(obis_bytes(ln))}), event code {code}"))
                last = when if last is None else max(last, when)
            if last is not None:
                self._save(cy, key, last)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit()).lstrip("0")


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
