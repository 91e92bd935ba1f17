"""Mercury 230 clock: reading (04 00), setting (03 0C) and daily correction (03 0D), and the BCD time
stamps that the profile and the journals share.
"""

from __future__ import annotations

import datetime as _dt

from pollerd.errors import FrameError

from .frames import CODE_WRITE, WRITE_CORRECT_TIME, WRITE_TIME, Request, _need


def read_time(addr: int) -> Request:
    return Request(addr, b"\x04\x00", 8)


def _bcd(b: int, data: bytes) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise FrameError(f"BCD byte {b:#04x} is not a decimal pair", data)
    return hi * 10 + lo


def decode_time(data: bytes) -> tuple[_dt.datetime, int]:
    """04 00 reply (8 BCD bytes: ss mm hh dow dd MM yy season): naive meter-local time and the season
    byte (1 = winter)."""
    _need(data, 8, "time")
    ss, mm, hh, _dow, dd, mo, yy = (_bcd(b, data) for b in data[:7])
    try:
        return _dt.datetime(2000 + yy, mo, dd, hh, mm, ss), data[7]
    except ValueError as exc:
        raise FrameError(f"time: not a valid date/time ({exc})", data) from None


def _to_bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def encode_time(when: _dt.datetime, season: int = 1) -> bytes:
    """8 BCD bytes ss mm hh dow dd MM yy season; dow 1 = Monday .. 7 = Sunday."""
    if not 2000 <= when.year <= 2099:
        raise ValueError(f"year must be 2000..2099, got {when.year}")
    return bytes((
        _to_bcd(when.second), _to_bcd(when.minute), _to_bcd(when.hour), _to_bcd(when.isoweekday()),
        _to_bcd(when.day), _to_bcd(when.month), _to_bcd(when.year - 2000), season,
    ))


# BCD byte -> value, -1 for a byte that is not two decimal digits: one list index per byte on the hot path.
_BCD_VALUE: list[int] = [(b >> 4) * 10 + (b & 0x0F) if b >> 4 < 10 and b & 0x0F < 10 else -1 for b in range(256)]


def _bcd_stamp(raw: bytes, order: str, data: bytes, what: str) -> _dt.datetime | None:
    """A BCD timestamp; ``order`` names each byte (s m h d M y). All 00 or all FF is an empty slot."""
    if raw.count(0) == len(raw) or raw.count(0xFF) == len(raw):
        return None
    v = dict(zip(order, (_bcd(b, data) for b in raw)))
    try:
        return _dt.datetime(2000 + v["y"], v["M"], v["d"], v["h"], v["m"], v.get("s", 0))
    except ValueError as exc:
        raise FrameError(f"{what}: not a valid date/time ({exc})", data) from None


def _to_bcd_stamp(when: _dt.datetime | None, order: str) -> bytes:
    if when is None:
        return bytes(len(order))
    if not 2000 <= when.year <= 2099:
        raise ValueError(f"year must be 2000..2099, got {when.year}")
    parts = {"s": when.second, "m": when.minute, "h": when.hour, "d": when.day, "M": when.month,
             "y": when.year - 2000}
    return bytes(_to_bcd(parts[c]) for c in order)


def set_time(addr: int, when: _dt.datetime, season: int = 1) -> Request:
    """03 0C: set the clock (access level 2): 8 bytes as the 04 00 reply, ss mm hh dow dd MM yy season.

    pollerd never sends this on its own (a billing meter's clock is set by a person); it is here for the
    decode tool, raw frames and the simulator."""
    if season not in (0, 1):
        raise ValueError(f"season must be 0 (summer) or 1 (winter), got {season}")
    return Request(addr, bytes((CODE_WRITE, WRITE_TIME)) + encode_time(when, season), None)


def decode_time_of_day(data: bytes) -> _dt.time:
    """The 03 0D parameter (3 BCD bytes ss mm hh) as a time of day."""
    _need(data, 3, "time of day")
    ss, mm, hh = (_bcd(b, data) for b in data)
    try:
        return _dt.time(hh, mm, ss)
    except ValueError as exc:
        raise FrameError(f"time of day: not valid ({exc})", data) from None


# The largest correction the meter accepts in a day, as commonly quoted ("within 4 minutes"); not from
# the vendor document. A concentrator firmware that corrects Mercury 230 clocks in the field
# (ti-cortex-m4/tm4c1294ncpdt, sensors/device_b.h) keeps to 230 s, below it.
CORRECTION_LIMIT = 240


def correct_time(addr: int, when: _dt.datetime | _dt.time) -> Request:
    """03 0D ss mm hh (BCD): correct the clock to this time of day (meter local); reply is a status.

    The meter accepts one correction a day (status 4 for the next) and only a small one (see
    :data:`CORRECTION_LIMIT`). The date is not sent, so a correction cannot cross midnight.

    Source of the layout: ti-cortex-m4/tm4c1294ncpdt, ``sensors/device_b.c`` ``QueryControlB`` (a
    metering concentrator's Mercury 230 driver: address, 03, 0D, BCD seconds, minutes, hours; a 4-byte
    status reply) next to its level-2 ``03 0C`` set time, which matches this module's :func:`set_time`.
    Not checked against the vendor's protocol document or a real meter."""
    return Request(addr, bytes((CODE_WRITE, WRITE_CORRECT_TIME, _to_bcd(when.second), _to_bcd(when.minute),
                                _to_bcd(when.hour))), None)
