"""A simulated Mercury 230 meter, sans-I/O (``handle(frame) -> reply``), speaking the protocol byte for byte.

Every value a meter reports is predictable: with a fixed ``clock``, :meth:`SimMeter.expected_energy` and
:meth:`SimMeter.expected_instant` give exactly what the codec will decode, so end-to-end tests can
assert exact values upstream.

Assumptions where the facts are silent (no vendor document at hand): a wrong password is answered with
status 1; the idle session timeout defaults to 240 s; the meter answers the universal address 0 with
address 0 in the reply (as the wb-mqtt-serial fixtures show).

Archives. Energy is one piecewise-linear function of time per tariff: the load set at
construction and by :meth:`SimMeter.set_phases` accumulates into the active tariff; before the simulator
started, the starting load is assumed to have run all along (counters clamped at 0 going back). From it
come the counters (05 00), the period arrays (05 1x..5x: counter at the period end minus counter at its
start, floored counters, so "today" is exactly counter(now) - counter(midnight)), arrays 9-13 (counters at
period starts) and the load profile (memory 3, one record per interval, ``profile_days`` deep, the
running interval flagged 0x02 and pointed at by 08 13). Journals are deterministic lists per journal
(:attr:`SimMeter.journals`, records 0.. oldest first, the rest empty). The clock runs ``clock_drift``
seconds ahead of the gateway (plus whatever 03 0C and 03 0D set). 03 08 freezes a snapshot for 08 14.
Time correction (03 0D) is accepted at access level 1, once per meter-local day (status 4 after that),
and only up to ``correction_limit`` seconds (status 1 beyond: an assumption, the real meter's answer to
too large a correction is not documented in reach); :attr:`SimMeter.corrections` records each one.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pollerd.errors import FrameError
from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import append_crc, check_crc


def _quad(values: Iterable[int]) -> tuple[int, int, int, int]:
    """(A+, A-, R+, R-) from four computed counters; unpacking checks there are exactly four."""
    a_plus, a_minus, r_plus, r_minus = values
    return a_plus, a_minus, r_plus, r_minus


_ANGLE_NAMES = ("L1-L2", "L1-L3", "L2-L3")
_ANGLES = (120.0, 240.0, 120.0)  # a healthy three-phase network, direct phase sequence


@dataclass(slots=True)
class Phase:
    """One phase's instantaneous state. P and Q are signed (export / capacitive negative)."""

    voltage: float = 230.0
    power: float = 1000.0
    reactive: float = 200.0


class SimMeter:
    """One simulated meter. Mutable on purpose: tests change powers, sessions and options mid-run."""

    def __init__(
        self,
        address: int = 1,
        *,
        serial: str = "47567135",
        manufactured: dt.date | None = dt.date(2022, 11, 16),
        passwords: dict[int, str] | None = None,
        password_encoding: str = "digits",
        constant: int = 1000,
        ku: int = 1,
        ki: int = 1,
        version: tuple[int, int, int] = (9, 1, 0),
        energy: dict[int, Sequence[float]] | None = None,
        phase_energy: Sequence[float] = (0.0, 0.0, 0.0),
        phases: Sequence[Phase] | None = None,
        frequency: float = 50.0,
        angles: Sequence[float] = _ANGLES,
        temperature: int = 24,
        active_tariff: int = 1,
        bidirectional: bool = True,
        session_timeout: float = 240.0,
        refuse_group_reads: bool = False,
        variant_forms: tuple[str, ...] = ("short",),
        refuse_fixed: frozenset[int] = frozenset(),
        timezone: dt.tzinfo | None = None,
        clock: Callable[[], float] = time.time,
        profile_period: int = 30,
        profile_days: int = 40,
        clock_drift: float = 0.0,
        correction_limit: float = m.CORRECTION_LIMIT,
        journals: dict[int, list[tuple[dt.datetime | None, dt.datetime | None]]] | None = None,
    ) -> None:
        if not 1 <= address <= 0xF0:
            raise ValueError(f"meter address must be 1..240, got {address}")
        m.encode_serial(serial, manufactured)  # validates
        m.encode_variant(constant)  # validates
        self.address = address
        self.serial = serial
        self.manufactured = manufactured
        passwords = passwords if passwords is not None else {1: "111111", 2: "222222"}
        self._password_raw = {lvl: m.password_bytes(pw, password_encoding) for lvl, pw in passwords.items()}
        self.constant = constant
        self.ku = ku
        self.ki = ki
        self.version = version
        self.frequency = frequency
        # Angles between phase voltages (L1-L2, L1-L3, L2-L3), degrees: (240, 120, 240) is a swapped sequence.
        self.angles = tuple(float(a) for a in angles)
        self.temperature = temperature
        self.bidirectional = bidirectional
        self.session_timeout = session_timeout
        self.refuse_group_reads = refuse_group_reads
        # Which 08 12 forms the firmware knows: "short" (08 12, pre-2016 meters), "long" (08 12 00).
        self.variant_forms = variant_forms
        self.refuse_fixed = refuse_fixed  # 08 14 BWRIs this firmware answers with status 1
        self.timezone = timezone
        self.clock = clock
        if not 1 <= active_tariff <= 4:
            raise ValueError(f"active tariff must be 1..4, got {active_tariff}")
        self.active_tariff = active_tariff
        start = energy or {}
        # Counters as floats in Wh from `_epoch`; the meter reports them floored to whole Wh.
        self._energy0 = {t: [float(x) for x in start.get(t, (0.0, 0.0, 0.0, 0.0))] for t in (1, 2, 3, 4)}
        self._phase_energy0 = [float(x) for x in phase_energy]
        self.phases = list(phases) if phases is not None else [
            Phase(230.0, 1000.0, 200.0), Phase(231.0, 1500.0, -100.0), Phase(229.5, 500.0, 50.0)]
        if len(self.phases) != 3:
            raise ValueError("a Mercury 230 has three phases")
        self._epoch = clock()
        self.clock_offset = 0.0  # set by a level-2 time write (03 0C) and by corrections (03 0D)
        self.correction_limit = float(correction_limit)
        self.corrected_on: dt.date | None = None  # meter-local day of the last 03 0D
        self.corrections: list[tuple[float, float]] = []  # (gateway time, seconds moved) per 03 0D
        self.correction_requests = 0  # 03 0D requests, accepted or not
        self.clock_drift = float(clock_drift)  # meter clock minus gateway clock, before any time set
        if profile_period not in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60):
            raise ValueError(f"profile period must divide an hour (minutes), got {profile_period}")
        self.profile_period = profile_period
        depth = profile_days * 1440 // profile_period
        if not 1 <= depth <= 4095:
            raise ValueError(f"profile depth of {profile_days} days at {profile_period} min exceeds the 4095 "
                             "records memory 3 holds")
        # Interval index (meter time / period) of the first record after the profile was initialised.
        self._profile_k0 = self._interval(self._epoch) - depth + 1
        # Past load segments: (start, counters per tariff at start, rates, active tariff).
        self._segments: list[tuple[float, dict[int, list[float]], tuple[float, float, float, float], int]] = []
        self.journals = journals if journals is not None else _default_journals(
            self.meter_time(self._epoch)[0])
        self.level = 0  # open session's access level, 0 = closed
        self._last_activity = 0.0
        self.requests = 0
        self.replies = 0
        self.expected_instant(self._epoch)  # fail now, not on the wire, if a value cannot be encoded
        self._frozen: tuple[tuple[dt.datetime, int], dict[str, float]] = ((dt.datetime(2000, 1, 1), 1), {})
        self.freeze(self._epoch)

    # -- what the meter will report ----------------------------------------------------------------

    def _rates(self) -> tuple[float, float, float, float]:
        p = sum(ph.power for ph in self.phases)
        q = sum(ph.reactive for ph in self.phases)
        return max(p, 0.0), max(-p, 0.0), max(q, 0.0), max(-q, 0.0)

    def _hours(self, now: float) -> float:
        return max(0.0, now - self._epoch) / 3600.0

    def set_phases(self, phases: Sequence[Phase], now: float | None = None) -> None:
        """Change the load; counters keep what they accumulated up to ``now``."""
        now = self.clock() if now is None else now
        self._segments.append((self._epoch, {t: list(v) for t, v in self._energy0.items()}, self._rates(),
                               self.active_tariff))
        hours = self._hours(now)
        rates = self._rates()
        tariff = self._energy0[self.active_tariff]
        for i in range(4):
            tariff[i] += rates[i] * hours
        for i, ph in enumerate(self.phases):
            self._phase_energy0[i] += max(ph.power, 0.0) * hours
        self._epoch = max(self._epoch, now)
        self.phases = list(phases)
        self.expected_instant(now)

    def expected_energy(self, tariff: int, now: float | None = None) -> tuple[int | None, int | None, int | None, int | None]:
        """(A+, A-, R+, R-) in Wh/varh as the meter reports them at ``now``; tariff 0 = sum of 1..4."""
        now = self.clock() if now is None else now
        if tariff == 0:
            per = [self._counters(t, now) for t in (1, 2, 3, 4)]
            return self._mask(_quad(sum(v[i] for v in per) for i in range(4)))
        if not 1 <= tariff <= 4:
            raise ValueError(f"tariff must be 0..4, got {tariff}")
        return self._mask(self._counters(tariff, now))

    def _counters(self, tariff: int, now: float) -> tuple[int, int, int, int]:
        hours = self._hours(now)
        rates = self._rates() if tariff == self.active_tariff else (0.0, 0.0, 0.0, 0.0)
        return _quad(math.floor(e + r * hours) for e, r in zip(self._energy0[tariff], rates))

    def _mask(self, values: tuple[int, int, int, int]) -> tuple[int | None, int | None, int | None, int | None]:
        if self.bidirectional:
            return values
        return values[0], None, values[2], None

    def expected_phase_energy(self, now: float | None = None) -> tuple[int, int, int]:
        now = self.clock() if now is None else now
        hours = self._hours(now)
        l1, l2, l3 = (math.floor(e + max(ph.power, 0.0) * hours) for e, ph in zip(self._phase_energy0, self.phases))
        return l1, l2, l3

    def _raw_instant(self) -> dict[str, float]:
        v: dict[str, float] = {}
        p_sum = q_sum = s_sum = 0.0
        for i, ph in enumerate(self.phases, start=1):
            s = math.hypot(ph.power, ph.reactive)
            v[f"P.L{i}"], v[f"Q.L{i}"], v[f"S.L{i}"] = ph.power, ph.reactive, s
            v[f"PF.L{i}"] = ph.power / s if s else 1.0
            v[f"U.L{i}"] = ph.voltage
            v[f"I.L{i}"] = s / ph.voltage if ph.voltage else 0.0
            p_sum += ph.power
            q_sum += ph.reactive
            s_sum += s
        v["P"], v["Q"], v["S"] = p_sum, q_sum, s_sum
        v["PF"] = p_sum / s_sum if s_sum else 1.0
        v["F"] = self.frequency
        for name, angle in zip(_ANGLE_NAMES, self.angles):
            v[f"angle.{name}"] = angle
        v["T.meter"] = float(self.temperature)
        return v

    def expected_instant(self, now: float | None = None) -> dict[str, float | None]:
        """Channel name (DESIGN.md §3) -> the value exactly as the codec decodes what the meter sends.
        The instantaneous state does not depend on time; ``now`` is accepted for symmetry."""
        raw = self._raw_instant()
        return {name: m.decode_aux(bwri, m.encode_aux(bwri, raw[name])) for name, bwri in _CHANNEL_BWRI.items()}

    def meter_time(self, now: float | None = None) -> tuple[dt.datetime, int]:
        """The naive local time and season byte the meter reports at gateway time ``now``."""
        now = (self.clock() if now is None else now) + self.clock_offset + self.clock_drift
        when = dt.datetime.fromtimestamp(int(now), self.timezone)
        if self.timezone is None:
            season = 0 if time.localtime(int(now)).tm_isdst > 0 else 1
        else:
            season = 0 if when.dst() else 1
        return when.replace(tzinfo=None), season

    # -- archives: one energy function of time --------------------------------------------------------

    def _offset(self) -> float:
        """Meter clock minus gateway clock."""
        return self.clock_offset + self.clock_drift

    def _interval(self, now: float) -> int:
        """Index of the load-profile interval running at gateway time ``now`` (meter-clock aligned)."""
        return math.floor((now + self._offset()) / (self.profile_period * 60))

    def _cum(self, tariff: int, t: float) -> list[float]:
        """Unfloored (A+, A-, R+, R-) counters of ``tariff`` at gateway time ``t`` (any time, past too)."""
        segments = self._segments + [(self._epoch, self._energy0, self._rates(), self.active_tariff)]
        chosen = segments[0]
        for seg in segments:
            if seg[0] <= t:
                chosen = seg
            else:
                break
        start, energy0, rates, active = chosen
        hours = (t - start) / 3600.0
        values = [e + (r * hours if active == tariff else 0.0) for e, r in zip(energy0[tariff], rates)]
        return [max(0.0, v) for v in values]  # before the first segment: the meter started from zero

    def _counter_at(self, tariff: int, t: float) -> tuple[int, int, int, int]:
        if tariff == 0:
            per = [self._counter_at(x, t) for x in (1, 2, 3, 4)]
            return _quad(sum(v[i] for v in per) for i in range(4))
        return _quad(math.floor(v) for v in self._cum(tariff, t))

    def _local(self, gateway_t: float) -> dt.datetime:
        """Meter-local wall time (aware if a timezone is set, naive system-local otherwise)."""
        return dt.datetime.fromtimestamp(gateway_t + self._offset(), self.timezone)

    def _gateway(self, local: dt.datetime) -> float:
        return local.timestamp() - self._offset()

    def _period(self, array: int, month: int, now: float) -> tuple[float, float]:
        """Gateway-time bounds (start, end) of the calendar period of an 05 array in meter-local time."""
        local = self._local(now)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        year0 = midnight.replace(month=1, day=1)
        kind = array if array < 9 else array - 8
        if kind == 1:  # current year
            return self._gateway(year0), now
        if kind == 2:  # previous year
            return self._gateway(year0.replace(year=year0.year - 1)), self._gateway(year0)
        if kind == 3:  # month N of the last 12 months
            year = local.year if month <= local.month else local.year - 1
            start = year0.replace(year=year, month=month)
            end = start.replace(year=year + 1, month=1) if month == 12 else start.replace(month=month + 1)
            return self._gateway(start), min(now, self._gateway(end))
        if kind == 4:  # today
            return self._gateway(midnight), now
        if kind == 5:  # yesterday
            return self._gateway(midnight - dt.timedelta(days=1)), self._gateway(midnight)
        raise ValueError(f"energy array {array} has no period")

    def expected_archive(self, array: int, month: int = 0, tariff: int = 0,
                         now: float | None = None) -> tuple[int | None, int | None, int | None, int | None]:
        """What 05 <array|month> <tariff> reports at ``now``: energy IN the period for arrays 1-5, the
        counter at the period start for arrays 9-13, the counter for array 0."""
        now = self.clock() if now is None else now
        if array == 0:
            return self.expected_energy(tariff, now)
        start, end = self._period(array, month, now)
        if array >= 9:
            return self._mask(self._counter_at(tariff, start))
        a, b = self._counter_at(tariff, start), self._counter_at(tariff, end)
        return self._mask(_quad(max(0, y - x) for x, y in zip(a, b)))

    # -- load profile (memory 3) ----------------------------------------------------------------------

    def _profile_address(self, k: int) -> int:
        return (m.PROFILE_FIRST_ADDRESS + (k - self._profile_k0) * m.PROFILE_STEP) & 0xFFFF

    def _interval_record(self, k: int, now: float) -> m.ProfileRecord:
        step = self.profile_period * 60
        a = k * step - self._offset()
        b = min(a + step, now)
        status = 0x02 if a + step > now else 0x00  # the running interval: not complete yet
        energy = [0.0, 0.0, 0.0, 0.0]
        for tariff in (1, 2, 3, 4):
            for i, (x, y) in enumerate(zip(self._cum(tariff, a), self._cum(tariff, b))):
                energy[i] += max(0.0, y - x)
        counts: list[int | None] = [min(0xFFFE, math.floor(e * 2 * self.constant / 1000 + 1e-6)) for e in energy]
        if not self.bidirectional:
            counts[1] = counts[3] = None
        start = dt.datetime.fromtimestamp(k * step, self.timezone).replace(tzinfo=None)
        return m.ProfileRecord(status, start, self.profile_period, *counts)

    def last_profile(self, now: float | None = None) -> m.LastProfile:
        """The 08 13 descriptor: the record of the interval running now (status 0x02)."""
        now = self.clock() if now is None else now
        k = self._interval(now)
        rec = self._interval_record(k, now)
        return m.LastProfile(self._profile_address(k), rec.status, rec.start, self.profile_period)

    def profile_record(self, address: int, now: float | None = None) -> m.ProfileRecord | None:
        """The record at ``address``, or None for a slot never written since the profile init."""
        now = self.clock() if now is None else now
        k_now = self._interval(now)
        k = k_now - ((self._profile_address(k_now) - address) & 0xFFFF) // m.PROFILE_STEP
        if k < self._profile_k0:
            return None
        return self._interval_record(k, now)

    def expected_profile(self, start_utc: float, end_utc: float, now: float | None = None
                         ) -> list[tuple[int, float | None, float | None, float | None, float | None, int]]:
        """Records whose interval starts in [start_utc, end_utc) (meter-clock UTC seconds, what a driver
        gets from the local start through the meter's timezone): (start, A+ Wh, A- Wh, R+ varh, R- varh,
        status), values exactly as decoded (impulses / (2A) kWh)."""
        now = self.clock() if now is None else now
        step = self.profile_period * 60
        out: list[tuple[int, float | None, float | None, float | None, float | None, int]] = []
        for k in range(max(self._profile_k0, math.ceil(start_utc / step)), self._interval(now) + 1):
            if k * step >= end_utc:
                break
            rec = self._interval_record(k, now)
            ap, am, rp, rm = (None if n is None else m.profile_energy_wh(n, self.constant)
                              for n in (rec.a_plus, rec.a_minus, rec.r_plus, rec.r_minus))
            out.append((k * step, ap, am, rp, rm, rec.status))
        return out

    def profile_address_of(self, start_utc: float) -> int:
        """Memory address of the record whose interval starts at ``start_utc`` (meter-clock UTC)."""
        return self._profile_address(math.floor(start_utc / (self.profile_period * 60)))

    def _memory(self, body: bytes, now: float) -> bytes:
        memory, address, length = body[1], body[2] << 8 | body[3], body[4]
        if memory != m.MEMORY_PROFILE or length != m.PROFILE_RECORD_LEN or address % m.PROFILE_STEP:
            return _status(m.STATUS_BAD_COMMAND)  # only whole single records of memory 3 are simulated
        rec = self.profile_record(address, now)
        return bytes(m.PROFILE_RECORD_LEN) if rec is None else m.encode_profile_record(rec)

    # -- fixed values -------------------------------------------------------------------------------

    def freeze(self, now: float | None = None) -> None:
        """Take the 03 08 snapshot: meter time and every instantaneous value at ``now``."""
        now = self.clock() if now is None else now
        self._frozen = (self.meter_time(now), self._raw_instant())

    def _fixed_values(self, bwri: int) -> tuple[float | None, ...] | list[float | None]:
        raw = self._frozen[1]
        names, _unit = m.group_channels(bwri)
        return [raw[n] for n in names]

    def _fixed(self, bwri: int) -> bytes:
        if bwri == 0xE0:
            return m.encode_time(*self._frozen[0])
        try:
            return m.encode_fixed(bwri, self._fixed_values(bwri))
        except (ValueError, KeyError):
            return _status(m.STATUS_BAD_COMMAND)

    def expected_fixed(self) -> dict[str, object]:
        """Channel -> value as the codec decodes the frozen snapshot; "frozen_at" -> (naive local, season)."""
        out: dict[str, object] = {"frozen_at": self._frozen[0]}
        for fr in m.FIXED_READS:
            if fr.bwri == 0xE0:
                continue
            values = m.decode_fixed(fr.bwri, m.encode_fixed(fr.bwri, self._fixed_values(fr.bwri)))
            out.update(zip(fr.channels, values))
        return out

    # -- journals ------------------------------------------------------------------------------------

    def expected_journal(self, journal: int) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
        """All ten records of ``journal`` as the codec decodes them (empty ones are (None, None))."""
        records = list(self.journals.get(journal, []))[: m.JOURNAL_RECORDS]
        return records + [(None, None)] * (m.JOURNAL_RECORDS - len(records))

    def _journal(self, journal: int, record: int) -> bytes:
        if journal not in m.JOURNALS or record >= m.JOURNAL_RECORDS:
            return _status(m.STATUS_BAD_COMMAND)
        return m.encode_journal(*self.expected_journal(journal)[record])

    # -- the wire ----------------------------------------------------------------------------------

    def handle(self, frame: bytes) -> bytes | None:
        """One request frame (address..CRC) in, the reply frame out; None when a real meter stays
        silent: bad CRC, another address, broadcast."""
        if len(frame) < 4 or not check_crc(frame):
            return None
        addr = frame[0]
        if addr not in (self.address, m.ADDRESS_UNIVERSAL, m.ADDRESS_BROADCAST):
            return None
        self.requests += 1
        data = self._dispatch(frame[1:-2], self.clock())
        if addr == m.ADDRESS_BROADCAST:
            return None
        self.replies += 1
        return append_crc(bytes((addr,)) + data)

    def _dispatch(self, body: bytes, now: float) -> bytes:
        code = body[0]
        if code == m.CODE_TEST:
            return _status(m.STATUS_OK if len(body) == 1 else m.STATUS_BAD_COMMAND)
        if code == m.CODE_OPEN:
            return self._open(body, now)
        if code == m.CODE_CLOSE:
            self.level = 0
            return _status(m.STATUS_OK)
        if self.level == 0 or now - self._last_activity > self.session_timeout:
            self.level = 0
            return _status(m.STATUS_NOT_OPEN)
        self._last_activity = now
        try:
            if code == m.CODE_READ_ENERGY and len(body) == 3:
                return self._energy(body, now)
            if code == m.CODE_READ_PARAM and len(body) >= 2:
                return self._param(body)
            if code == m.CODE_READ_TIME and body == b"\x04\x00":
                return m.encode_time(*self.meter_time(now))
            if code == m.CODE_READ_TIME and len(body) == 3:
                return self._journal(body[1], body[2])
            if code == m.CODE_READ_MEMORY and len(body) == 5:
                return self._memory(body, now)
            if code == m.CODE_WRITE and len(body) >= 2:
                return self._write(body, now)
        except ValueError:  # a value the layout cannot carry: what a meter would call an internal error
            return _status(m.STATUS_INTERNAL)
        return _status(m.STATUS_BAD_COMMAND)

    def _open(self, body: bytes, now: float) -> bytes:
        if len(body) != 8:
            return _status(m.STATUS_BAD_COMMAND)
        expected = self._password_raw.get(body[1])
        if expected is None or body[2:8] != expected:
            self.level = 0
            return _status(m.STATUS_BAD_COMMAND)
        self.level = body[1]
        self._last_activity = now
        return _status(m.STATUS_OK)

    def _energy(self, body: bytes, now: float) -> bytes:
        array, month, tariff = body[1] >> 4, body[1] & 0x0F, body[2]
        if array == 0 and month == 0 and tariff <= 4:
            return m.encode_energy(*self.expected_energy(tariff, now))
        if array == 6 and month == 0 and tariff == 0:
            return m.encode_phase_energy(*self.expected_phase_energy(now))
        if tariff <= 4 and ((array in (1, 2, 4, 5, 9, 10, 12, 13) and month == 0) or (array in (3, 11) and 1 <= month <= 12)):
            return m.encode_energy(*self.expected_archive(array, month, tariff, now))
        return _status(m.STATUS_BAD_COMMAND)

    def _param(self, body: bytes) -> bytes:
        param = body[1]
        if len(body) == 2:
            if param == m.PARAM_SERIAL:
                return m.encode_serial(self.serial, self.manufactured)
            if param == m.PARAM_RATIOS:
                return m.encode_ratios(self.ku, self.ki)
            if param == m.PARAM_VARIANT and "short" in self.variant_forms:
                return m.encode_variant(self.constant)
            if param == m.PARAM_VERSION:
                return bytes(self.version)
            if param == m.PARAM_FAST_INFO:
                return (m.encode_serial(self.serial, self.manufactured) + bytes(self.version)
                        + m.encode_variant(self.constant))
            if param == m.PARAM_NET_ADDRESS:
                return bytes((0, self.address))
            if param == m.PARAM_LAST_PROFILE:
                return m.encode_last_profile(self.last_profile())
        elif len(body) == 3 and param == m.PARAM_VARIANT and body[2] == 0 and "long" in self.variant_forms:
            return m.encode_variant(self.constant, long=True)
        elif len(body) == 3 and param == m.PARAM_FIXED and body[2] not in self.refuse_fixed:
            return self._fixed(body[2])
        elif len(body) == 3 and param == m.PARAM_AUX:
            name = _BWRI_CHANNEL.get(body[2])
            if name is not None:
                return m.encode_aux(body[2], self._raw_instant()[name])
        elif len(body) == 3 and param == m.PARAM_AUX_GROUP and not self.refuse_group_reads:
            names = _GROUP_CHANNELS.get(body[2])
            if names is not None:
                raw = self._raw_instant()
                return m.encode_aux_group(body[2], [raw[n] for n in names])
        return _status(m.STATUS_BAD_COMMAND)

    def _write(self, body: bytes, now: float) -> bytes:
        if body == b"\x03\x08":  # freeze the fixed-data snapshot: allowed at level 1
            self.freeze(now)
            return _status(m.STATUS_OK)
        if body[1] == m.WRITE_CORRECT_TIME and len(body) == 5:  # time correction (level 1): ss mm hh
            return self._correct(body[2:5], now)
        if self.level < 2:
            return _status(m.STATUS_ACCESS)
        if body[1] == 0x0C and len(body) == 10:  # set time (level 2): ss mm hh dow dd MM yy season
            try:
                when, _season = m.decode_time(body[2:10])
            except FrameError:
                return _status(m.STATUS_BAD_COMMAND)
            target = when.replace(tzinfo=self.timezone).timestamp() if self.timezone else when.timestamp()
            self.clock_offset = target - now - self.clock_drift
            return _status(m.STATUS_OK)
        return _status(m.STATUS_BAD_COMMAND)

    def _correct(self, param: bytes, now: float) -> bytes:
        self.correction_requests += 1
        try:
            target = m.decode_time_of_day(param)
        except FrameError:
            return _status(m.STATUS_BAD_COMMAND)
        local, _season = self.meter_time(now)
        if local.date() == self.corrected_on:
            return _status(m.STATUS_CLOCK_ONCE_A_DAY)
        delta = (dt.datetime.combine(local.date(), target) - local).total_seconds()
        if abs(delta) > self.correction_limit:
            return _status(m.STATUS_BAD_COMMAND)
        self.clock_offset += delta
        self.corrected_on = local.date()
        self.corrections.append((now, delta))
        return _status(m.STATUS_OK)


def _status(code: int) -> bytes:
    return bytes((code,))


def _default_journals(created: dt.datetime) -> dict[int, list[tuple[dt.datetime | None, dt.datetime | None]]]:
    """A few deterministic events per journal, oldest first, before ``created`` (meter-local); the
    cover journal stays empty so a reader meets an empty journal too."""
    out: dict[int, list[tuple[dt.datetime | None, dt.datetime | None]]] = {}
    base = created.replace(microsecond=0)
    for j in m.JOURNALS:
        n = 0 if j == 0x12 else 1 + j % 4
        records: list[tuple[dt.datetime | None, dt.datetime | None]] = []
        for i in range(n):
            start = base - dt.timedelta(days=3 * (n - i) + j % 5, hours=j % 7, minutes=7 * i + j, seconds=13 * j % 60)
            records.append((start, start + dt.timedelta(minutes=5 + 11 * i + j)))
        out[j] = records
    return out


# The channels this meter simulates, by the BWRI that reads them: from the codec's one BWRI -> channel table.
_CHANNEL_BWRI: dict[str, int] = {
    **{name: bwri for group in m.INSTANT_GROUPS
       for name, bwri in zip(m.group_channels(group)[0], m.group_singles(group))},
    **{m.aux_channel(bwri)[0]: bwri for bwri in m.INSTANT_SINGLES},
}
_BWRI_CHANNEL: dict[int, str] = {b: n for n, b in _CHANNEL_BWRI.items()}
# 08 16 group reads: the meter ignores the phase bits (the low two) of a group read's BWRI.
_GROUP_CHANNELS: dict[int, tuple[str, ...]] = {
    (group & 0xFC) | low: m.group_channels((group & 0xFC) | low)[0]
    for group in (*m.INSTANT_GROUPS, 0x40) for low in range(4)
}
