"""Mercury 230-family driver: session handling, identity check, energy and instantaneous values.

Byte layouts live in :mod:`pollerd.protocols.mercury230`; this module decides what to ask and how replies
become readings (channel names of DESIGN.md §3).
"""

from __future__ import annotations

from ..errors import (FrameError, IdentityMismatch, MeterError, PollerdError, ReplyTimeout,
                      SessionClosed, TransportError)
from ..line import LineStopping
from ..model import Archive, Event, Reading
from ..protocols import mercury230 as m
from .base import DriverContext, PollResult

# A session left idle this long is assumed to have timed out in the meter; reopening up front costs one
# exchange, while finding out by status 5 costs two.
SESSION_IDLE = 120.0

_PHASES = ("L1", "L2", "L3")
_ANGLES = ("L1-L2", "L1-L3", "L2-L3")

# (channel base, unit, group BWRI for 08 16, per-value BWRIs for 08 11, channel suffixes)
_INSTANT: tuple[tuple[str, str, int, tuple[int, ...], tuple[str, ...]], ...] = (
    ("P", "W", 0x00, (0x00, 0x01, 0x02, 0x03), ("", ".L1", ".L2", ".L3")),
    ("Q", "var", 0x04, (0x04, 0x05, 0x06, 0x07), ("", ".L1", ".L2", ".L3")),
    ("S", "VA", 0x08, (0x08, 0x09, 0x0A, 0x0B), ("", ".L1", ".L2", ".L3")),
    ("PF", "", 0x30, (0x30, 0x31, 0x32, 0x33), ("", ".L1", ".L2", ".L3")),
    ("U", "V", 0x11, (0x11, 0x12, 0x13), tuple("." + p for p in _PHASES)),
    ("I", "A", 0x21, (0x21, 0x22, 0x23), tuple("." + p for p in _PHASES)),
    ("angle", "°", 0x51, (0x51, 0x52, 0x53), tuple("." + a for a in _ANGLES)),
)
_ENERGY = (("A+", "Wh"), ("A-", "Wh"), ("R+", "varh"), ("R-", "varh"))

_RETRYABLE = (ReplyTimeout, FrameError)


class Mercury230Driver:
    def __init__(self, ctx: DriverContext) -> None:
        self.ctx = ctx
        mc = ctx.meter
        self.address = mc.connection_address
        self._password = m.password_bytes(mc.password.reveal() if mc.password else
                                          ("111111" if mc.access_level == 1 else "222222"),
                                          mc.password_encoding)
        self._session_at: float | None = None   # clock time of the last exchange inside an open session
        self._identity_checked = False
        self._group_reads = True                # cleared when the meter refuses 08 16
        self._unsupported: set[int] = set()     # 08 11 BWRIs the meter refused (e.g. temperature)
        if any(v is not None for v in (mc.tn1, mc.tn2, mc.tt)):
            ctx.log.warning("%s: tn1/tn2/tt are not applied yet; values are as the meter reports them",
                            mc.name)
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
                                                     pause=mc.pause_time, meter=mc.name, shown=shown(req))
            except _RETRYABLE as exc:
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

    async def _call(self, req: m.Request) -> m.Reply:
        """A request inside the session: status 5 (channel not open) reopens the session and retries once."""
        await self._ensure_session()
        try:
            return await self._ask(req)
        except SessionClosed:
            self._session_at = None
            await self._ensure_session()
            return await self._ask(req)

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
            st.identity["constant"] = m.decode_variant((await self._ask(m.read_variant(self.address))).data)
        except MeterError as exc:  # older firmware may refuse these; they are informational here
            self.ctx.log.info("%s: ratios/variant not available: %s", mc.name, exc)
        self._identity_checked = True

    # -- the cycle -------------------------------------------------------------------------------------

    async def poll(self, ts: int) -> PollResult:
        mc = self.ctx.meter
        out: list[Reading] = []
        events: list[Event] = []
        answered = False
        try:
            await self._ensure_session()
            answered = True
            if "energy" in mc.read:
                await self._energy(ts, out)
            if "instant" in mc.read:
                await self._instant(ts, out)
        except IdentityMismatch as exc:
            events.append(Event(mc.name, "identity_mismatch", ts, None, str(exc)))
            return PollResult((), tuple(events), True, str(exc))
        except LineStopping as exc:
            return PollResult(tuple(out), tuple(events), answered or bool(out), str(exc))
        except (MeterError, ReplyTimeout, FrameError, TransportError) as exc:
            self._session_at = None
            return PollResult(tuple(out), tuple(events), answered or bool(out), str(exc))
        return PollResult(tuple(out), tuple(events), True, None)

    async def _energy(self, ts: int, out: list[Reading]) -> None:
        name = self.ctx.meter.name
        for tariff in range(5):
            values = m.decode_energy((await self._call(m.read_energy(self.address, 0, 0, tariff))).data)
            suffix = f".T{tariff}" if tariff else ""
            for (channel, unit), value in zip(_ENERGY, values):
                if value is not None:
                    out.append(Reading(name, channel + suffix, Archive.CURRENT.value, ts, value, unit))

    async def _instant(self, ts: int, out: list[Reading]) -> None:
        name = self.ctx.meter.name
        for base, unit, group, singles, suffixes in _INSTANT:
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
                values = tuple([await self._single(bwri) for bwri in singles])
            for suffix, value in zip(suffixes, values):
                if value is not None:
                    out.append(Reading(name, base + suffix, Archive.CURRENT.value, ts, value, unit))
        for bwri, channel, unit in ((0x40, "F", "Hz"), (0x70, "T.meter", "°C")):
            value = await self._single(bwri)
            if value is not None:
                out.append(Reading(name, channel, Archive.CURRENT.value, ts, value, unit))

    async def _single(self, bwri: int) -> float | None:
        if bwri in self._unsupported:
            return None
        try:
            return m.decode_aux(bwri, (await self._call(m.read_aux(self.address, bwri))).data)
        except MeterError as exc:
            if exc.status != 1:
                raise
            self._unsupported.add(bwri)
            self.ctx.log.info("%s: 08 11 %02X not supported by this meter; skipping it", self.ctx.meter.name,
                              bwri)
            return None

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


def shown(req: m.Request) -> str:
    """The request as hex for logs and errors, with an open-channel password masked."""
    frame = req.encode().hex(" ")
    if req.body[:1] == bytes((m.CODE_OPEN,)):
        parts = frame.split(" ")
        parts[3:9] = ["**"] * 6   # addr 01 level | six password bytes | CRC (the CRC stays: it is not the secret)
        return " ".join(parts)
    return frame


def _digits(s: str) -> str:
    return s.strip().lstrip("0")
