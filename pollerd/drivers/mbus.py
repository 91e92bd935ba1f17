"""Wired M-Bus driver (EN 13757-2/-3): water, heat and gas meters on their own two-wire bus.

One poll cycle: SND_NKE (E5) to reset the link - or, for a meter addressed by its secondary address, a
selection (SND_UD to 253, CI 52, E5) - then REQ_UD2 with the frame count bit toggled for every further
telegram while the meter ends its records with DIF 1F ("more records follow"). A retry after a timeout or a
bad frame keeps the same FCB: a meter whose reply was lost repeats it instead of skipping ahead.

Stale telegrams (issue 14). A long frame carries no trace of the request it answers, so the protocol's own
order is the fence: every readout starts with SND_NKE or a selection, answered by E5, and a long frame
arriving before that E5 is refused by its framer (the meter answers in order, so once E5 is in, an older
telegram has come or never will). Inside a readout, a telegram equal to the one before (same access number,
same bytes) after the FCB was toggled is the previous telegram once more (a converter's late duplicate, or the
meter's repeat after a retry, handed over after the next request): the readout starts again from SND_NKE
rather than taking it as the next telegram, which is then still on its way. A meter that repeats itself at the
same place again ignores the FCB toggle: nothing more will come.

Byte layouts live in :mod:`pollerd.protocols.mbus`; here records become readings:

* ``read = ["current"]``: records of storage number 0 -> ``current`` readings at poll time;
* ``read = ["archive"]``: records of storage numbers > 0 -> archive readings at the date the meter stores
  under the same storage number (type G/F date record); archive = ``daily``/``monthly``/``yearly`` from the
  spacing of those dates (``monthly`` when there is only one). Without a date they stay ``current`` with a
  ``.S<n>`` suffix.

Channel names follow DESIGN.md §3 (``E.heat``, ``V``, ``V.cold``...), plus ``flow`` (m³/h), ``T.flow``,
``T.return``, ``T.ext`` (°C), ``dT`` (K); tariff ``.T<n>``, subunit ``.U<n>``, function ``.max``/``.min``/
``.err``. A record without a mapping keeps a name from its VIF: ``mbus.<VIF hex>`` (``mbus.<text>`` for a
plain-text VIF) with the same suffixes. Units are normalised: J -> Wh, J/h -> W, m³/min and m³/s -> m³/h.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import math
import statistics
import zoneinfo
from collections.abc import Iterable

from ..config.model import LineConfig
from ..errors import (
    FrameError,
    IdentityMismatch,
    LineStopping,
    MeterError,
    OptionError,
    PollerdError,
    ReplyTimeout,
    TransportError,
)
from ..model import Archive, Event, Reading
from ..protocols import mbus as m
from ..quality import Dropped
from .base import BusDriverContext, PollResult

MAX_TELEGRAMS = 32          # a multi-telegram readout longer than this is a slave stuck on DIF 1F
_RETRYABLE = (ReplyTimeout, FrameError)

# Records that describe the meter rather than measure anything: meter metadata (state.identity, shown in
# /api/meters), never readings. Sent upstream they would be a constant "value" every cycle, and a
# fabrication number is a serial, not a quantity.
_METADATA = frozenset({"fabrication number", "enhanced identification", "bus address",
                       "parameter set identification", "model/version", "hardware version", "firmware version",
                       "software version", "customer location", "customer"})

# (quantity, unit) -> base channel; energy and volume depend on the medium (below)
_CHANNELS: dict[tuple[str, str], str] = {
    ("power", "W"): "P",
    ("volume flow", "m³/h"): "flow",
    ("flow temperature", "°C"): "T.flow",
    ("return temperature", "°C"): "T.return",
    ("external temperature", "°C"): "T.ext",
    ("temperature difference", "K"): "dT",
    ("voltage", "V"): "U",
    ("current", "A"): "I",
    ("on time", "s"): "t.on",
    ("operating time", "s"): "t.operating",
    ("mass", "kg"): "M",
    ("mass flow", "kg/h"): "flow.mass",
    ("pressure", "bar"): "p",
}
_ENERGY_BY_MEDIUM = {0x02: "A+", 0x04: "E.heat", 0x0C: "E.heat", 0x0D: "E.heat", 0x0A: "E.cool", 0x0B: "E.cool"}
_VOLUME_BY_MEDIUM = {0x03: "V.gas", 0x06: "V.hot", 0x15: "V.hot", 0x16: "V.cold"}
# Units outside DESIGN's set -> (unit, factor)
_CONVERT = {"J": ("Wh", 1 / 3600), "J/h": ("W", 1 / 3600), "m³/min": ("m³/h", 60.0), "m³/s": ("m³/h", 3600.0)}
_FUNCTION_SUFFIX = {m.Function.INSTANT: "", m.Function.MAXIMUM: ".max", m.Function.MINIMUM: ".min",
                    m.Function.ERROR: ".err"}
# Header status bits worth an event (EN 13757-3: 0x04 power low, 0x08 permanent error, 0x10 temporary error)
_STATUS_BITS = {0x04: "power low", 0x08: "permanent error", 0x10: "temporary error"}


def parse_address(raw: object) -> int | str:
    """``connection_address`` of an M-Bus meter: a primary address 0..250, or a secondary address string:
    8 decimal digits (the id) or libmbus' 16 hex digits (id, manufacturer bytes, version, medium). Wildcard
    F digits in the id are for ``pollerd scan`` only."""
    if isinstance(raw, bool):
        raise OptionError(f"expected a primary address 0..250 or a secondary address string, got {raw!r}")
    if isinstance(raw, int):
        if not 0 <= raw <= 250:
            hint = ' (a secondary address is a string: "12345678")' if raw > 250 else ""
            raise OptionError(f"M-Bus primary address {raw} is not in 0..250{hint}")
        return raw
    if isinstance(raw, str):
        try:
            return m.SecondaryAddress.parse(raw, wildcards=False).text
        except ValueError as exc:
            raise OptionError(str(exc)) from None
    raise OptionError(f"expected a primary address 0..250 or a secondary address string, got {raw!r}")


def response_timeout(baudrate: int, waiting_time: float) -> float:
    """EN 13757-2: a slave answers within 330 bit times + 50 ms; a shorter ``waiting_time`` would cut off
    meters that are within the standard, so it only ever lengthens the wait."""
    return max(waiting_time, 330.0 / baudrate + 0.05)


def line_problem(line_cfg: LineConfig) -> str | None:
    """M-Bus is 8E1 on the wire; a serial line set otherwise fails every parity check of every byte."""
    if line_cfg.type != "serial":
        return None  # a TCP converter sets the framing on its own serial side
    parity, bytesize, stopbits = line_cfg.parity, line_cfg.bytesize, line_cfg.stopbits
    if (parity.upper(), bytesize, stopbits) != ("E", 8, 1):
        return (f"line {line_cfg.name} is {bytesize}{parity}{stopbits:g} but M-Bus needs 8E1: "
                f'set parity = "E", bytesize = 8, stopbits = 1 on the line')
    return None


class MbusDriver:
    def __init__(self, ctx: BusDriverContext) -> None:
        self.ctx = ctx
        mc = ctx.meter
        addr = mc.connection_address
        self.secondary = m.SecondaryAddress.parse(addr) if isinstance(addr, str) else None
        self.primary = m.ADDRESS_SELECTED if self.secondary else int(addr)
        self._problem = line_problem(ctx.line.cfg)
        if self._problem:
            ctx.log.error("%s: %s", mc.name, self._problem)
        self.timeout = response_timeout(ctx.line.cfg.baudrate or 2400, mc.waiting_time)
        try:
            self._tz: _dt.tzinfo = zoneinfo.ZoneInfo(mc.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self._tz = _dt.timezone.utc
        self._last_status = 0
        self._ignores_fcb_at: int | None = None   # see read_telegrams
        # Replies to a primary address must come from it (a late reply of another meter must not be taken);
        # 251..255 are the bus's special addresses, where the meter answers with its own.
        self._reply_address = self.primary if self.secondary is None and 0 <= self.primary <= 250 else None

    # -- exchanges -------------------------------------------------------------------------------------

    async def _exchange(self, request: bytes, expect: str, retries: int | None = None) -> m.Frame:
        mc = self.ctx.meter
        attempts = 1 + (mc.retries if retries is None else retries)
        last: PollerdError | None = None
        for _ in range(attempts):
            try:
                return await self.ctx.line.exchange(request, m.ReplyFramer(expect, self._reply_address),
                                                    waiting_time=self.timeout,
                                                    pause=mc.pause_time, meter=mc.name)
            except (*_RETRYABLE, TransportError) as exc:
                # A dropped link is asked again too: SND_NKE, selection and REQ_UD2 are safe to repeat (a
                # REQ_UD2 whose reply was lost keeps its FCB, so the meter repeats that telegram).
                last = exc
        assert last is not None
        raise last

    async def _start(self, retries: int | None = None) -> None:
        """Reset the link (primary) or select the meter (secondary); either way the next REQ_UD2 is new."""
        if self.secondary is not None:
            await self._exchange(m.select_secondary(self.secondary), "ack", retries)
        else:
            await self._exchange(m.snd_nke(self.primary), "ack", retries)

    async def read_telegrams(self, out: list[m.Telegram] | None = None) -> list[m.Telegram]:
        """One full readout: the first telegram and every one announced by DIF 1F. Telegrams go into ``out``
        as they arrive, so that a caller still holds the ones before a failure. A repeated telegram starts
        the readout again (module docstring), at most ``retries`` times."""
        out = [] if out is None else out
        # A meter seen to ignore the FCB toggle at a place is believed the next cycles too (no second readout
        # per cycle for it); a late duplicate at another place still starts the readout again.
        repeated_at = self._ignores_fcb_at
        for _ in range(1 + self.ctx.meter.retries):
            out.clear()
            repeat = await self._readout(out, repeated_at)
            if repeat is None:
                return out
            self.ctx.log.info("%s: telegram %d of the readout came again after the FCB toggle (a late duplicate "
                              "or repeat); reading again from SND_NKE", self.ctx.meter.name, repeat + 1)
            repeated_at = repeat
        raise MeterError(f"{self.ctx.meter.name}: every readout met a repeated telegram after "
                         f"{len(out)} telegram(s)")

    async def _readout(self, out: list[m.Telegram], repeated_at: int | None) -> int | None:
        """One readout from SND_NKE/selection into ``out``; returns None when complete, or the index of a
        telegram that came twice in a row (the readout is then not complete). ``repeated_at``: where the
        previous readout met a repeat; a repeat at the same place again is a meter that ignores the FCB
        toggle."""
        await self._start()
        fcb = True
        previous: bytes | None = None
        for _ in range(MAX_TELEGRAMS):
            frame = await self._exchange(m.req_ud2(self.primary, fcb), "data")
            if frame.c & 0x0F != m.C_RSP_UD:
                raise MeterError(f"{self.ctx.meter.name}: expected RSP_UD (C=08), got C=0x{frame.c:02X}")
            if frame.data == previous:
                # The same bytes, access number included, after the FCB was toggled: the previous telegram
                # once more. Its successor may still be on its way, so nothing is taken as the next one.
                if repeated_at == len(out) - 1:
                    self._ignores_fcb_at = repeated_at
                    break  # the same place twice: the meter ignores the FCB toggle; nothing more will come
                return len(out) - 1
            previous = frame.data
            telegram = m.decode_telegram(frame)
            if out and telegram.header.id is not None and out[0].header.id is not None \
                    and telegram.header.id != out[0].header.id:
                # A telegram of another meter inside this one's readout (a late reply, or two meters
                # answering one address): nothing of this readout can be trusted to be this meter's.
                raise MeterError(f"{self.ctx.meter.name}: telegram {len(out) + 1} of the readout comes from id "
                                 f"{telegram.header.id}, the first from {out[0].header.id}")
            out.append(telegram)
            if not telegram.more_follows:
                break
            fcb = not fcb
        return None

    # -- the cycle -------------------------------------------------------------------------------------

    async def poll(self, ts: int) -> PollResult:
        mc = self.ctx.meter
        if self._problem:
            return PollResult((), (), False, self._problem)
        telegrams: list[m.Telegram] = []
        error: str | None = None
        try:
            await self.read_telegrams(telegrams)
        except LineStopping as exc:
            return PollResult((), (), False, str(exc))
        except (MeterError, ReplyTimeout, FrameError, TransportError) as exc:
            if not telegrams:
                return PollResult((), (), isinstance(exc, (MeterError, m.MbusApplicationError)), str(exc))
            # A later telegram failed: the ones received still hold good current values.
            error = f"readout cut after {len(telegrams)} telegram(s): {exc}"
        events: list[Event] = []
        try:
            self._check_identity(telegrams)
        except IdentityMismatch as exc:
            return PollResult((), (Event(mc.name, "identity_mismatch", ts, None, str(exc)),), True, str(exc))
        status = next((t.header.status for t in telegrams if t.header.status is not None), 0) or 0
        bad = status & 0x1C
        if bad != self._last_status & 0x1C and bad:
            text = ", ".join(name for bit, name in _STATUS_BITS.items() if status & bit)
            events.append(Event(mc.name, "mbus_status", ts, None, f"status 0x{status:02X}: {text}"))
        self._last_status = status
        dropped: list[Dropped] = []
        readings = self.readings(telegrams, ts, partial=error is not None, dropped=dropped)
        return PollResult(tuple(readings), tuple(events), True, error, dropped=tuple(dropped))

    def _check_identity(self, telegrams: list[m.Telegram]) -> None:
        mc, st = self.ctx.meter, self.ctx.state
        header = next((t.header for t in telegrams if t.header.id is not None), None)
        if header is None:
            return
        st.identity.update({"id": header.id, "manufacturer": header.manufacturer, "version": header.version,
                            "medium": header.medium_name, "secondary": header.secondary})
        for t in telegrams:
            for r in t.records:
                if r.quantity in _METADATA and r.storage == 0 and r.value is not None:
                    key = "fabrication" if r.quantity == "fabrication number" else r.quantity.replace(" ", "_")
                    n = r.number
                    st.identity[key] = r.display() if n is None else str(int(n))
        if mc.number_meter is not None and _digits(header.id or "") != _digits(mc.number_meter):
            where = f"secondary address {self.secondary}" if self.secondary else f"address {self.primary}"
            raise IdentityMismatch(
                f"{mc.name}: the meter at {where} on line {mc.line} reports id {header.id}, but number_meter is "
                f"{mc.number_meter}; not polling it")

    def readings(self, telegrams: Iterable[m.Telegram], ts: int, partial: bool = False,
                 dropped: list[Dropped] | None = None) -> list[Reading]:
        """Records of a readout -> readings (pure; the tests call it directly). Of a ``partial`` readout only
        the current values are taken: a storage record's date may be in a telegram that never came, and
        stored without it the value would land in another series."""
        mc = self.ctx.meter
        telegrams = list(telegrams)
        medium = next((t.header.medium for t in telegrams if t.header.medium is not None), None)
        records = [r for t in telegrams for r in t.records]
        dates: dict[tuple[int, int], int] = {}
        for r in records:
            if r.storage and isinstance(r.value, m.DateTime):
                moment = r.value.to_datetime()
                if moment is not None:
                    dates.setdefault((r.storage, r.subunit), int(moment.replace(tzinfo=self._tz).timestamp()))
        archive = _archive_kind(sorted(set(dates.values())))
        out: list[Reading] = []
        seen: set[tuple[str, str, int]] = set()
        for r in records:
            number = r.number
            non_finite = r.error == m.NON_FINITE
            if (number is None and not non_finite) or r.quantity in _METADATA:
                continue
            if r.storage == 0 and "current" not in mc.read:
                continue
            if r.storage and ("archive" not in mc.read or partial):
                continue
            channel, unit, value = _channel(r, math.nan if number is None else number, medium)
            kind, stamp = Archive.CURRENT.value, ts
            if r.storage:
                at = dates.get((r.storage, r.subunit))
                if at is None:
                    channel += f".S{r.storage}"
                else:
                    kind, stamp = archive, at
            if non_finite:  # no value to store; pollerd.quality counts it with the other drops
                if dropped is not None:
                    dropped.append(Dropped(Reading(mc.name, channel, kind, stamp, math.nan, unit), "non_finite",
                                           f"the meter sent a NaN or infinite real [{r.raw.hex(' ')}]"))
                continue
            key = (channel, kind, stamp)
            if key in seen:
                continue  # a second record with the same meaning (another scaling): the first one stands
            seen.add(key)
            out.append(Reading(mc.name, channel, kind, stamp, value, unit))
        return out

    async def probe(self) -> bool:
        if self._problem:
            return False
        try:
            await self._start(retries=0)
        except (MeterError, ReplyTimeout, FrameError, TransportError, LineStopping):
            return False
        return True

    async def close(self) -> None:
        return None  # M-Bus has no session to close; a selection ends with the next one


def _channel(r: m.Record, number: float, medium: int | None) -> tuple[str, str, float]:
    value = float(number)
    unit = r.unit
    if unit in _CONVERT:
        unit, factor = _CONVERT[unit]
        value *= factor
    base: str | None = None
    if r.known and not r.modifiers and r.text_vif is None:
        if r.quantity == "energy" and unit == "Wh":
            base = _ENERGY_BY_MEDIUM.get(medium or 0, "E")
        elif r.quantity == "volume" and unit == "m³":
            base = _VOLUME_BY_MEDIUM.get(medium or 0, "V")
        else:
            base = _CHANNELS.get((r.quantity, unit))
    if base is None:
        base = f"mbus.{r.text_vif}" if r.text_vif is not None else f"mbus.{r.vif_code}"
    if r.tariff:
        base += f".T{r.tariff}"
    if r.subunit:
        base += f".U{r.subunit}"
    return base + _FUNCTION_SUFFIX[r.function], unit, value


def _archive_kind(stamps: list[int]) -> str:
    if len(stamps) < 2:
        return Archive.MONTHLY.value
    gap = statistics.median(b - a for a, b in itertools.pairwise(stamps)) / 86400
    if gap < 2:
        return Archive.DAILY.value
    if gap > 300:
        return Archive.YEARLY.value
    return Archive.MONTHLY.value


def _digits(s: str) -> str:
    return s.strip().lstrip("0")
