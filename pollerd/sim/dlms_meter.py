"""A simulated СПОДЭС meter's application layer: the COSEM objects and the xDLMS/ACSE answers.

Values are a pure function of time, so a test knows what must arrive without reading the simulator's
state: interval ``k`` (unix ts // period) carries :func:`interval_energy` Wh of A+, and every cumulative
register is the base plus the sum of the intervals before it (:meth:`SimSpodesMeter.cumulative`).

The profiles deliberately list their capture objects in a non-standard order (A+, R+, clock, A-, R-), so a
client that assumes "clock first, then A+ A- R+ R-" reads wrong numbers here and is caught by the tests.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pollerd.protocols.dlms import acse, axdr, xdlms
from pollerd.protocols.dlms import spodes as sp
from pollerd.protocols.dlms.axdr import CosemDateTime, u8, u16, u32
from pollerd.protocols.dlms.xdlms import Attr, obis_bytes

PUBLIC, READER = 16, 32
DAY = 86400
_INTERVAL_OBIS = {"A+": "1.0.1.29.0.255", "A-": "1.0.2.29.0.255", "R+": "1.0.3.29.0.255", "R-": "1.0.4.29.0.255"}
_TOTAL_OBIS = {"A+": "1.0.1.8.0.255", "A-": "1.0.2.8.0.255", "R+": "1.0.3.8.0.255", "R-": "1.0.4.8.0.255"}
_BASE = {"A+": 1_000_000, "A-": 2_000, "R+": 300_000, "R-": 0}
# Instantaneous registers: (value on the wire, scaler, unit, A-XDR type)
_INSTANT: dict[str, tuple[int, int, int, Callable[[int], axdr.Int]]] = {
    "1.0.32.7.0.255": (23012, -2, 35, u16), "1.0.52.7.0.255": (22987, -2, 35, u16),
    "1.0.72.7.0.255": (23105, -2, 35, u16),
    "1.0.31.7.0.255": (5123, -3, 33, u32), "1.0.51.7.0.255": (4870, -3, 33, u32),
    "1.0.71.7.0.255": (12, -3, 33, u32),
    "1.0.1.7.0.255": (22815, -1, 27, axdr.i32), "1.0.21.7.0.255": (11402, -1, 27, axdr.i32),
    "1.0.41.7.0.255": (11413, -1, 27, axdr.i32), "1.0.61.7.0.255": (0, -1, 27, axdr.i32),
    "1.0.3.7.0.255": (-3120, -1, 29, axdr.i32), "1.0.23.7.0.255": (-1560, -1, 29, axdr.i32),
    "1.0.43.7.0.255": (-1560, -1, 29, axdr.i32), "1.0.63.7.0.255": (0, -1, 29, axdr.i32),
    "1.0.9.7.0.255": (23028, -1, 28, u32), "1.0.29.7.0.255": (11508, -1, 28, u32),
    "1.0.49.7.0.255": (11520, -1, 28, u32), "1.0.69.7.0.255": (0, -1, 28, u32),
    "1.0.13.7.0.255": (991, -3, 255, axdr.i16), "1.0.33.7.0.255": (990, -3, 255, axdr.i16),
    "1.0.53.7.0.255": (991, -3, 255, axdr.i16), "1.0.73.7.0.255": (1000, -3, 255, axdr.i16),
    "1.0.14.7.0.255": (5002, -2, 44, u16),
}
_JOURNAL_EVERY = 6 * 3600


def interval_energy(channel: str, k: int) -> int:
    """Wh (varh) of interval number ``k`` (unix ts // period)."""
    m = k % 48
    return {"A+": 500 + 10 * m, "A-": 1, "R+": 100 + 2 * m, "R-": 0}[channel]


def _sum_intervals(channel: str, k0: int, k1: int) -> int:
    """Sum of interval_energy over k0 <= k < k1, closed form (a year of intervals is no loop)."""
    def upto(k: int) -> int:
        full, rest = divmod(k, 48)
        per_day = sum(interval_energy(channel, j) for j in range(48))
        return full * per_day + sum(interval_energy(channel, j) for j in range(rest))
    return upto(k1) - upto(k0)


@dataclass
class Association:
    client_sap: int
    accepted: bool = False
    max_pdu: int = 0xFFFF
    pending: list[bytes] = field(default_factory=list)   # data blocks of a long GET still to send
    block: int = 0
    invoke: int = 0


@dataclass
class SimSpodesMeter:
    serial: str = "012345678"
    meter_type: str = "CE308 S31.543.OAA.SYUVJLFZ GS01 SPDS"
    password: bytes = b"12345678"
    timezone: dt.tzinfo = dt.timezone(dt.timedelta(hours=3))
    period: int = 1800
    profile_days: int = 40
    max_pdu: int = 512
    clock_drift: float = 0.0
    epoch: int = 1_700_000_000            # cumulative registers count intervals from here
    clock: Callable[[], float] = time.time
    requests: int = 0
    clock_sets: list[int] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------ values

    def now(self) -> float:
        return self.clock() + self.clock_drift

    def cumulative(self, channel: str, ts: int) -> int:
        """The register at ``ts``: base + all whole intervals that ended by then."""
        return _BASE[channel] + _sum_intervals(channel, self.epoch // self.period, ts // self.period)

    def _dt(self, ts: float) -> CosemDateTime:
        local = dt.datetime.fromtimestamp(ts, self.timezone)
        offset = local.utcoffset() or dt.timedelta(0)
        # Deviation as IEC 62056-6-2 defines it: minutes from local time to UTC (negative east of Greenwich).
        return CosemDateTime.from_datetime(local.replace(microsecond=0), deviation=-int(offset.total_seconds() // 60))

    def _load_rows(self) -> tuple[list[tuple[str, int, int]], Callable[[int], tuple[Any, ...]]]:
        caps = [("A+", 3, 2), ("R+", 3, 2), ("clock", 8, 2), ("A-", 3, 2), ("R-", 3, 2)]

        def row(ts: int) -> tuple[Any, ...]:
            k = ts // self.period - 1                # the entry at ts closes the interval before it
            return tuple(self._dt(ts).encode_body() if c == "clock" else u32(interval_energy(c, k))
                         for c, _, _ in caps)
        return caps, row

    def _billing_rows(self) -> tuple[list[tuple[str, int, int]], Callable[[int], tuple[Any, ...]]]:
        caps = [("clock", 8, 2), ("A+", 3, 2), ("A-", 3, 2), ("R+", 3, 2), ("R-", 3, 2)]

        def row(ts: int) -> tuple[Any, ...]:
            return tuple(self._dt(ts).encode_body() if c == "clock" else u32(self.cumulative(c, ts))
                         for c, _, _ in caps)
        return caps, row

    def _capture_objects(self, caps: list[tuple[str, int, int]], obis: dict[str, str]) -> list[Any]:
        out = []
        for name, cls, attr in caps:
            ln = sp.CLOCK.obis if name == "clock" else obis_bytes(obis[name])
            out.append((u16(cls), ln, axdr.i8(attr), u16(0)))
        return out

    def _entry_times(self, ln: str) -> list[int]:
        """Capture times of a profile's entries, oldest first."""
        now = int(self.now())
        if ln in sp.LOAD_PROFILES:
            last = now // self.period * self.period
            first = max(last - self.profile_days * DAY, self.epoch // self.period * self.period + self.period)
            return list(range(first, last + 1, self.period))
        local_now = dt.datetime.fromtimestamp(now, self.timezone)
        if ln == sp.DAILY:
            days = [local_now.date() - dt.timedelta(days=d) for d in range(self.profile_days, -1, -1)]
            return [int(dt.datetime(d.year, d.month, d.day, tzinfo=self.timezone).timestamp()) for d in days]
        if ln == sp.MONTHLY:
            out = []
            y, m = local_now.year, local_now.month
            for _ in range(12):
                out.append(int(dt.datetime(y, m, 1, tzinfo=self.timezone).timestamp()))
                y, m = (y, m - 1) if m > 1 else (y - 1, 12)
            return out[::-1]
        if ln in sp.JOURNALS:
            last = now // _JOURNAL_EVERY * _JOURNAL_EVERY
            return list(range(last - 10 * DAY, last + 1, _JOURNAL_EVERY))
        return []

    def _profile(self, ln: str) -> tuple[list[Any], Callable[[int], tuple[Any, ...]]] | None:
        if ln in sp.LOAD_PROFILES:
            caps, row = self._load_rows()
            return self._capture_objects(caps, _INTERVAL_OBIS), row
        if ln in (sp.DAILY, sp.MONTHLY):
            caps, row = self._billing_rows()
            return self._capture_objects(caps, _TOTAL_OBIS), row
        if ln in sp.JOURNALS:
            n = int(ln.split(".")[4])
            code_ln = bytes((0, 0, 96, 11, n, 255))
            caps_j = [(u16(8), sp.CLOCK.obis, axdr.i8(2), u16(0)), (u16(1), code_ln, axdr.i8(2), u16(0))]

            def jrow(ts: int) -> tuple[Any, ...]:
                return (self._dt(ts).encode_body(), u8(1 + (ts // _JOURNAL_EVERY) % 4 + 10 * n))
            return caps_j, jrow
        return None

    # ----------------------------------------------------------------------------------------- objects

    def read(self, attr: Attr, access: tuple[int, bytes] | None, client: int) -> bytes | int:
        """The encoded attribute value, or a Data-Access-Result code."""
        ln = xdlms.obis_text(attr.obis)
        public_ok = ln in ("0.0.1.0.0.255", "0.0.96.1.0.255", "0.0.96.1.1.255", "0.0.42.0.0.255")
        if client != READER and not public_ok:
            return 3                                           # read-write-denied
        if attr.class_id == sp.CLASS_CLOCK and ln == "0.0.1.0.0.255":
            return axdr.encode(self._dt(self.now())) if attr.attr == 2 else 4
        if ln == "0.0.96.1.0.255" and attr.attr == 2:
            return axdr.encode(self.serial.encode())
        if ln == "0.0.96.1.1.255" and attr.attr == 2:
            return axdr.encode(self.meter_type)
        if ln == "0.0.42.0.0.255" and attr.attr == 2:
            return axdr.encode(b"CE308" + self.serial.encode())
        if attr.class_id == sp.CLASS_REGISTER:
            return self._register(ln, attr.attr)
        if attr.class_id == sp.CLASS_PROFILE:
            return self._read_profile(ln, attr.attr, access)
        return 4                                               # object-undefined

    def _register(self, ln: str, attr: int) -> bytes | int:
        now = int(self.now())
        if ln in _INSTANT:
            value, scaler, unit, typ = _INSTANT[ln]
            return axdr.encode(typ(value)) if attr == 2 else axdr.encode((axdr.i8(scaler), axdr.enum(unit)))
        parts = ln.split(".")
        if parts[3] in ("8", "29") and parts[2] in ("1", "2", "3", "4"):
            channel = {"1": "A+", "2": "A-", "3": "R+", "4": "R-"}[parts[2]]
            unit = 30 if channel[0] == "A" else 32
            if attr == 3:
                return axdr.encode((axdr.i8(0), axdr.enum(unit)))
            if parts[3] == "29":
                return axdr.encode(u32(interval_energy(channel, now // self.period - 1)))
            total = self.cumulative(channel, now)
            tariff = int(parts[4])
            t1 = total * 6 // 10
            value = {0: total, 1: t1, 2: total - t1}.get(tariff, 0)
            return axdr.encode(u32(value))
        return 4

    def _read_profile(self, ln: str, attr: int, access: tuple[int, bytes] | None) -> bytes | int:
        prof = self._profile(ln)
        if prof is None:
            return 4
        caps, row = prof
        times = self._entry_times(ln)
        if attr == 3:
            return axdr.encode(caps)
        if attr == 4:
            return axdr.encode(u32(self.period if ln in sp.LOAD_PROFILES else 0))
        if attr == 7:
            return axdr.encode(u32(len(times)))
        if attr != 2:
            return 4
        if access is not None:
            selector, params = access
            p = axdr.decode(params)
            if selector == 1:
                if p[0][1] != sp.CLOCK.obis:
                    return 250                                 # a range over anything but the clock column
                lo = CosemDateTime.parse(p[1]).to_unix(self.timezone)
                hi = CosemDateTime.parse(p[2]).to_unix(self.timezone)
                if lo is None or hi is None:
                    return 12                                  # type-unmatched
                times = [t for t in times if lo <= t <= hi]
            elif selector == 2:
                first, last = p[0], p[1] or len(times)
                times = times[max(first, 1) - 1:last]
            else:
                return 250
        return axdr.encode([row(t) for t in times])

    # ----------------------------------------------------------------------------------------- service

    def handle(self, apdu: bytes, assoc: Association) -> bytes:
        """One request APDU of ``assoc``'s client -> the reply APDU."""
        self.requests += 1
        tag = apdu[:1]
        if tag == b"\x60":
            return self._associate(apdu, assoc)
        if tag == b"\x62":
            assoc.accepted = False
            return acse.encode_rlre()
        if not assoc.accepted:
            return xdlms.encode_exception(0, 0)               # service-not-allowed / operation-not-possible
        if tag == b"\xc0":
            return self._get(xdlms.parse_get_request(apdu), assoc)
        if tag == b"\xc1":
            invoke, attr, value = xdlms.parse_set_request(apdu)
            return xdlms.encode_set_response(invoke, self._set(attr, value, assoc.client_sap))
        return xdlms.encode_exception(1, 1)

    def _associate(self, apdu: bytes, assoc: Association) -> bytes:
        req = acse.parse_aarq(apdu)
        assoc.accepted = False
        if req.context != acse.CONTEXT_LN:
            return acse.encode_aare(1, 2)
        if assoc.client_sap == READER:
            if req.mechanism is None:
                return acse.encode_aare(1, 12)
            if req.mechanism != acse.MECH_LLS:
                return acse.encode_aare(1, 11)
            if req.password != self.password:
                return acse.encode_aare(1, 13, mechanism=acse.MECH_LLS)
        elif assoc.client_sap != PUBLIC:
            return acse.encode_aare(1, 1)
        if req.max_pdu < 64:
            return acse.encode_aare(1, 1, initiate_error=3)
        assoc.accepted = True
        assoc.max_pdu = min(req.max_pdu, self.max_pdu)
        assoc.pending.clear()
        conformance = req.conformance & acse.CONFORMANCE_DEFAULT
        return acse.encode_aare(0, 0, conformance=conformance, max_pdu=self.max_pdu,
                                mechanism=req.mechanism)

    def _get(self, req: xdlms.GetRequest, assoc: Association) -> bytes:
        if req.kind == xdlms.NEXT:
            if not assoc.pending:
                return xdlms.encode_get_response_block(req.invoke, True, req.block, 16)  # no-long-get
            if req.block != assoc.block:
                return xdlms.encode_get_response_block(req.invoke, True, req.block, 19)
            return self._next_block(assoc, req.invoke)
        results = [self.read(attr, access, assoc.client_sap) for attr, access in req.items]
        if req.kind == xdlms.WITH_LIST:
            reply = xdlms.encode_get_response_list(req.invoke, results)
            if len(reply) > assoc.max_pdu:
                return xdlms.encode_exception(1, 3)           # pdu-too-long: the client asks for fewer
            return reply
        reply = xdlms.encode_get_response(req.invoke, results[0])
        if len(reply) <= assoc.max_pdu or isinstance(results[0], int):
            return reply
        size = assoc.max_pdu - 16
        raw = results[0]
        assoc.pending = [raw[i:i + size] for i in range(0, len(raw), size)]
        assoc.block = 0
        return self._next_block(assoc, req.invoke)

    def _next_block(self, assoc: Association, invoke: int) -> bytes:
        assoc.block += 1
        part = assoc.pending.pop(0)
        return xdlms.encode_get_response_block(invoke, not assoc.pending, assoc.block, part)

    def _set(self, attr: Attr, value: Any, client: int) -> int:
        if client != READER:
            return 3
        if attr != sp.CLOCK:
            return 3
        if not isinstance(value, bytes) or len(value) != 12:
            return 12
        ts = CosemDateTime.parse(value).to_unix(self.timezone)
        if ts is None:
            return 12
        self.clock_drift = ts - self.clock()
        self.clock_sets.append(ts)
        return 0
