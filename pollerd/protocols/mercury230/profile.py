"""Mercury 230 load profile (power profile in memory 3): the last-record pointer (08 13), records of
15 bytes read by address (06h), their status bits and quality, and impulses -> Wh.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass

from pollerd.errors import FrameError

from .clock import _BCD_VALUE, _bcd_stamp, _to_bcd_stamp
from .frames import CODE_READ_MEMORY, CODE_READ_PARAM, MEMORY_PROFILE, PARAM_LAST_PROFILE, Request, _need, length_error

PROFILE_RECORD_LEN = 15
PROFILE_STEP = 0x10
PROFILE_FIRST_ADDRESS = 0x0010  # where the first record after a profile (re)initialisation sits [MOL]


@dataclass(frozen=True, slots=True)
class LastProfile:
    """08 13 reply: where the newest load-profile record is and which interval it covers.

    ``start`` is naive meter-local time (no season applied); None when the meter holds no record yet."""

    address: int
    status: int
    start: _dt.datetime | None
    period: int


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One load-profile record (06 03 ...): impulse counts of one interval, ``None`` for FF FF (channel
    absent). ``start`` is the interval START, naive meter-local; None for an empty slot."""

    status: int
    start: _dt.datetime | None
    period: int
    a_plus: int | None
    a_minus: int | None
    r_plus: int | None
    r_minus: int | None


_LAST_PROFILE = struct.Struct(">HB5sB")
_PROFILE = struct.Struct("<B5sB4H")
_PROFILE_FLAT = struct.Struct("<7B4H")


_ABSENT2 = 0xFFFF

PROFILE_STATUS_BITS: dict[int, str] = {
    # Inferred, not verified: the one real 08 13 reply in the collection ([MOL], the interval still
    # running, 13:00 with T = 30) carries status 0x1A, and the record being filled is the one a poller
    # must not take as final. No source describes the other bits; they stay "bitN".
    0x02: "incomplete",
}


def profile_status_flags(status: int) -> set[str]:
    """Names of the bits set in a profile status byte; bits without a known meaning are "bitN".

    Only bit 1 (0x02, "incomplete") is named, and that is inferred (see :data:`PROFILE_STATUS_BITS`);
    no public source for overflow or season bits was found, so they appear as "bitN"."""
    if not 0 <= status <= 0xFF:
        raise ValueError(f"status must be one byte, got {status}")
    return {PROFILE_STATUS_BITS.get(1 << i, f"bit{i}") for i in range(8) if status >> i & 1}


def profile_quality(rec: ProfileRecord) -> str | None:
    """The quality of a record's readings, None when good: "incomplete" (the interval still running),
    "status:bitN,..." (other status bits, meaning unknown), or "partial" when the interval does not
    start on a multiple of its period: the meter began it mid-interval (power returned, clock changed),
    so it covers less than a whole period. Field firmware (ti-cortex-m4/tm4c1294ncpdt, profile2x16.c)
    treats records whose minute is not a multiple of 30 the same way, as partial half-hours."""
    flags = profile_status_flags(rec.status)
    if "incomplete" in flags:
        return "incomplete"
    if flags:
        return "status:" + ",".join(sorted(flags))
    if rec.start is not None and 0 < rec.period <= 60 and (
            (rec.start.hour * 60 + rec.start.minute) % rec.period or rec.start.second):
        return "partial"
    return None


def next_profile_address(addr: int) -> int:
    """The address of the record after ``addr``: records are 0x10 apart and the 16-bit address wraps
    (0xFFF0 -> 0x0000). [MOL]'s backward walk goes 0x0010 -> 0xFFF0 instead, skipping 0x0000; until a
    source settles that slot, a reader should accept either (an empty slot decodes with start None)."""
    if not 0 <= addr <= 0xFFFF:
        raise ValueError(f"profile address must be 0..0xFFFF, got {addr}")
    return (addr + PROFILE_STEP) & 0xFFFF


def prev_profile_address(addr: int) -> int:
    if not 0 <= addr <= 0xFFFF:
        raise ValueError(f"profile address must be 0..0xFFFF, got {addr}")
    return (addr - PROFILE_STEP) & 0xFFFF


def read_last_profile(addr: int) -> Request:
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_LAST_PROFILE)), 9)


def read_profile(addr: int, record_address: int, length: int = PROFILE_RECORD_LEN,
                 memory: int = MEMORY_PROFILE) -> Request:
    """06 <memory> <hi> <lo> <length>: ``length`` bytes of memory ``memory`` from ``record_address``.

    One load-profile record is 15 bytes. No public source describes what a longer read of memory 3
    returns (one record per 16-byte slot, or 15-byte records back to back), so pollerd asks one record
    per request; longer reads are allowed for raw use and come back undecoded."""
    if not 0 <= record_address <= 0xFFFF:
        raise ValueError(f"record address must be 0..0xFFFF, got {record_address}")
    if not 1 <= length <= 0xFF:
        raise ValueError(f"length must be 1..255, got {length}")
    if not 0 <= memory <= 0xFF:
        raise ValueError(f"memory must be one byte, got {memory}")
    return Request(addr, bytes((CODE_READ_MEMORY, memory, record_address >> 8, record_address & 0xFF, length)),
                   length)


def decode_last_profile(data: bytes) -> LastProfile:
    """08 13 reply (9 bytes): address hi lo, status, hh mm dd MM yy (BCD), period T in minutes."""
    _need(data, 9, "last profile record")
    address, status, stamp, period = _LAST_PROFILE.unpack(data)
    return LastProfile(address, status, _bcd_stamp(stamp, "hmdMy", data, "last profile record"), period)


def encode_last_profile(info: LastProfile) -> bytes:
    return _LAST_PROFILE.pack(info.address, info.status, _to_bcd_stamp(info.start, "hmdMy"), info.period)


def _count(v: int) -> int | None:
    return None if v == _ABSENT2 else v


def decode_profile_record(data: bytes) -> ProfileRecord:
    """06 03 reply (15 bytes): status, hh mm dd MM yy (BCD, interval start), T, then A+, A-, R+, R-
    impulse counts as 16-bit little-endian (unlike the 4-byte energies); FF FF = channel absent."""
    if len(data) != PROFILE_RECORD_LEN:
        raise length_error("profile record", PROFILE_RECORD_LEN, data)
    status, hh, mi, dd, mo, yy, period, ap, am, rp, rm = _PROFILE_FLAT.unpack(data)
    bcd = _BCD_VALUE
    h, mn, d, mon, y = bcd[hh], bcd[mi], bcd[dd], bcd[mo], bcd[yy]
    if h < 0 or mn < 0 or d < 0 or mon < 0 or y < 0 or not (mon and d):
        # the rare paths: empty slot, bad BCD, impossible date, with their messages
        start = _bcd_stamp(data[1:6], "hmdMy", data, "profile record")
    else:
        try:
            start = _dt.datetime(2000 + y, mon, d, h, mn)
        except ValueError as exc:
            raise FrameError(f"profile record: not a valid date/time ({exc})", data) from None
    return ProfileRecord(status, start, period, None if ap == 0xFFFF else ap, None if am == 0xFFFF else am,
                         None if rp == 0xFFFF else rp, None if rm == 0xFFFF else rm)


def encode_profile_record(rec: ProfileRecord) -> bytes:
    counts = []
    for v in (rec.a_plus, rec.a_minus, rec.r_plus, rec.r_minus):
        if v is None:
            v = _ABSENT2
        elif not 0 <= v < _ABSENT2:
            raise ValueError(f"impulse count out of range 0..{_ABSENT2 - 1}: {v}")
        counts.append(v)
    return _PROFILE.pack(rec.status, _to_bcd_stamp(rec.start, "hmdMy"), rec.period, *counts)


def profile_energy_wh(count: int, constant: int) -> float:
    """Energy of one interval in Wh (varh) from its impulse count: N / (2·A) kWh [FACTS, MOL real data:
    T = 30, A = 500, N = 42 -> 42 Wh in half an hour = 84 W average]."""
    if constant <= 0:
        raise ValueError(f"meter constant must be positive, got {constant}")
    return count * 500 / constant
