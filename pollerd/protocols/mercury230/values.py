"""Mercury 230 measured values: energy registers and arrays (05h), instantaneous values by BWRI (08 11,
08 16), the fixed-data snapshot (03 08 / 08 14), and the one BWRI -> channel table.

Values come back in SI units: energy in Wh/varh (ints), U in V, I in A, P/Q/S in W/var/VA, F in Hz,
angles in degrees, temperature in degrees Celsius. ``None`` means the meter marked the value absent
(``FF FF FF FF`` / ``FF FF FF``). Each decoder has its encoder (used by the simulator) next to it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pollerd.errors import FrameError

from .frames import (
    CODE_READ_ENERGY,
    CODE_READ_PARAM,
    CODE_WRITE,
    PARAM_AUX,
    PARAM_AUX_GROUP,
    PARAM_FIXED,
    WRITE_FREEZE,
    Request,
    _need,
)

# BWRI high nibble: the quantity of an 08 11 / 08 16 read.
Q_POWER = 0x0  # bits 3..2 of BWRI: 0 P, 1 Q, 2 S
Q_VOLTAGE = 0x1
Q_CURRENT = 0x2
Q_PF = 0x3
Q_FREQUENCY = 0x4
Q_ANGLE = 0x5
Q_KU = 0x6
Q_TEMPERATURE = 0x7
Q_LINE_VOLTAGE = 0x8

POWER_P = 0
POWER_Q = 1
POWER_S = 2

# Divisors rather than multipliers: 24128 / 100 is the float nearest 241.28, 24128 * 0.01 is not.
_DIVISOR: dict[int, int] = {
    Q_POWER: 100, Q_VOLTAGE: 100, Q_CURRENT: 1000, Q_PF: 1000, Q_FREQUENCY: 100, Q_ANGLE: 100,
    Q_LINE_VOLTAGE: 100,
}


_MAX_3BYTE = 0x3FFFFF
_ABSENT3 = b"\xff\xff\xff"
_ABSENT4 = 0xFFFFFFFF

# Energy is "middle-endian": two little-endian 16-bit words, the high word first.
_ENERGY4 = struct.Struct("<8H")
_ENERGY3 = struct.Struct("<6H")
# A 3-byte value is b0 (flags + high 6 bits) then a little-endian 16-bit low part.
_V3 = struct.Struct("<BH")
_V3x3 = struct.Struct("<BHBHBH")
_V3x4 = struct.Struct("<BHBHBHBH")

_TEMP = struct.Struct(">h")
_KU = struct.Struct("<H")


# ------------------------------------------------------------------------------------------------- requests


def read_energy(addr: int, array: int = 0, month: int = 0, tariff: int = 0) -> Request:
    """05h: array 0 from reset, 1 this year, 2 last year, 3 month (``month`` 1..12), 4 today,
    5 yesterday, 6 per-phase A+ (12-byte reply). ``tariff`` 0 = sum, 1..4."""
    if not 0 <= array <= 0xF:
        raise ValueError(f"energy array must be 0..15, got {array}")
    if not 0 <= month <= 12:
        raise ValueError(f"month must be 0..12, got {month}")
    if not 0 <= tariff <= 0xF:
        raise ValueError(f"tariff must be 0..15, got {tariff}")
    return Request(addr, bytes((CODE_READ_ENERGY, array << 4 | month, tariff)), 12 if array == 6 else 16)


def aux_reply_len(bwri: int) -> int:
    """Data length of an 08 11 reply: 2 bytes for temperature and KU, 3 for the rest."""
    return 2 if bwri >> 4 in (Q_TEMPERATURE, Q_KU) else 3


def group_reply_len(bwri: int) -> int:
    """Data length of an 08 16 reply: 4 values (sum, L1..L3) for powers and PF, 3 (L1..L3) for
    U/I/angles, 1 for frequency."""
    q = bwri >> 4
    if q in (Q_POWER, Q_PF):
        return 12
    if q in (Q_VOLTAGE, Q_CURRENT, Q_ANGLE, Q_LINE_VOLTAGE):
        return 9
    if q == Q_FREQUENCY:
        return 3
    raise ValueError(f"BWRI {bwri:#04x}: quantity {q:#x} cannot be group-read with 08 16")


def read_aux(addr: int, bwri: int) -> Request:
    if not 0 <= bwri <= 0xFF:
        raise ValueError(f"BWRI must be one byte, got {bwri}")
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_AUX, bwri)), aux_reply_len(bwri))


def read_aux_group(addr: int, bwri: int) -> Request:
    if not 0 <= bwri <= 0xFF:
        raise ValueError(f"BWRI must be one byte, got {bwri}")
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_AUX_GROUP, bwri)), group_reply_len(bwri))


# ------------------------------------------------------------------------------------------------- decoders


def decode_energy(data: bytes) -> tuple[int | None, int | None, int | None, int | None]:
    """05h reply (16 bytes): A+, A-, R+, R- in Wh/varh; ``None`` for FF FF FF FF (not supported)."""
    _need(data, 16, "energy")
    w = _ENERGY4.unpack(data)
    return (
        None if (v := w[0] << 16 | w[1]) == _ABSENT4 else v,
        None if (v := w[2] << 16 | w[3]) == _ABSENT4 else v,
        None if (v := w[4] << 16 | w[5]) == _ABSENT4 else v,
        None if (v := w[6] << 16 | w[7]) == _ABSENT4 else v,
    )


def decode_phase_energy(data: bytes) -> tuple[int | None, int | None, int | None]:
    """05 6x reply (12 bytes): A+ per phase L1, L2, L3 in Wh."""
    _need(data, 12, "per-phase energy")
    w = _ENERGY3.unpack(data)
    return (
        None if (v := w[0] << 16 | w[1]) == _ABSENT4 else v,
        None if (v := w[2] << 16 | w[3]) == _ABSENT4 else v,
        None if (v := w[4] << 16 | w[5]) == _ABSENT4 else v,
    )


def decode_3byte(data: bytes) -> tuple[int, bool, bool] | None:
    """A 3-byte value: (magnitude, active negative, reactive negative), or None for FF FF FF."""
    if data == _ABSENT3:
        return None
    b0, low = _V3.unpack(data)
    return (b0 & 0x3F) << 16 | low, bool(b0 & 0x80), bool(b0 & 0x40)


def _sign_bit(bwri: int) -> int:
    """Which direction bit of b0 carries this quantity's sign (0: unsigned)."""
    q = bwri >> 4
    if q == Q_POWER:
        kind = (bwri >> 2) & 3
        if kind == POWER_P:
            return 0x80
        if kind == POWER_Q:
            return 0x40
        return 0
    if q == Q_PF:
        return 0x80  # per WB fixtures: 88 87 90 -> -561.287
    return 0


def _value3(b0: int, low: int, divisor: int, sign_bit: int) -> float | None:
    if b0 & sign_bit:
        if b0 == 0xFF and low == 0xFFFF:
            return None
        return -(((b0 & 0x3F) << 16 | low) / divisor)
    if b0 == 0xFF and low == 0xFFFF:
        return None
    return ((b0 & 0x3F) << 16 | low) / divisor


def decode_aux(bwri: int, data: bytes) -> float | None:
    """08 11 <bwri> reply: one value in SI units; None when the meter marks it absent."""
    q = bwri >> 4
    if q == Q_TEMPERATURE:
        _need(data, 2, "temperature")
        return float(_TEMP.unpack(data)[0])
    if q == Q_KU:
        # WB decodes KU as little-endian x0.01; its fixtures are synthetic, semantics unverified.
        _need(data, 2, "KU")
        ku: int = _KU.unpack(data)[0]
        return ku / 100
    divisor = _DIVISOR.get(q)
    if divisor is None:
        raise FrameError(f"BWRI {bwri:#04x}: no decoder for quantity {q:#x}", data)
    _need(data, 3, f"value for BWRI {bwri:#04x}")
    b0, low = _V3.unpack(data)
    return _value3(b0, low, divisor, _sign_bit(bwri))


def decode_aux_group(bwri: int, data: bytes) -> tuple[float | None, ...]:
    """08 16 <bwri> reply: (sum, L1, L2, L3) for P/Q/S/PF, (L1, L2, L3) for U/I/angles, (F,) for frequency."""
    q = bwri >> 4
    length = group_reply_len(bwri)
    _need(data, length, f"group read BWRI {bwri:#04x}")
    divisor = _DIVISOR[q]
    sign = _sign_bit(bwri)
    if length == 12:
        a0, a1, b0, b1, c0, c1, d0, d1 = _V3x4.unpack(data)
        return (_value3(a0, a1, divisor, sign), _value3(b0, b1, divisor, sign), _value3(c0, c1, divisor, sign),
                _value3(d0, d1, divisor, sign))
    if length == 9:
        a0, a1, b0, b1, c0, c1 = _V3x3.unpack(data)
        return (_value3(a0, a1, divisor, sign), _value3(b0, b1, divisor, sign), _value3(c0, c1, divisor, sign))
    a0, a1 = _V3.unpack(data)
    return (_value3(a0, a1, divisor, sign),)


# -------------------------------------------------------------------------- encoders (the simulator's side)


def _energy_word(value: int | None) -> int:
    if value is None:
        return _ABSENT4
    if not 0 <= value < _ABSENT4:
        raise ValueError(f"energy counter out of range 0..{_ABSENT4 - 1}: {value}")
    return value


def encode_energy(a_plus: int | None, a_minus: int | None, r_plus: int | None, r_minus: int | None) -> bytes:
    words: list[int] = []
    for v in (a_plus, a_minus, r_plus, r_minus):
        v = _energy_word(v)
        words += (v >> 16, v & 0xFFFF)
    return _ENERGY4.pack(*words)


def encode_phase_energy(l1: int | None, l2: int | None, l3: int | None) -> bytes:
    words: list[int] = []
    for v in (l1, l2, l3):
        v = _energy_word(v)
        words += (v >> 16, v & 0xFFFF)
    return _ENERGY3.pack(*words)


def encode_3byte(magnitude: int | None, *, active_negative: bool = False, reactive_negative: bool = False) -> bytes:
    """A raw 3-byte value; ``None`` gives FF FF FF (absent)."""
    if magnitude is None:
        return _ABSENT3
    if not 0 <= magnitude <= _MAX_3BYTE:
        raise ValueError(f"3-byte magnitude out of range 0..{_MAX_3BYTE}: {magnitude}")
    b0 = magnitude >> 16 | (0x80 if active_negative else 0) | (0x40 if reactive_negative else 0)
    if b0 == 0xFF and magnitude & 0xFFFF == 0xFFFF:
        raise ValueError("FF FF FF is reserved for 'value absent'; pass None for that")
    return _V3.pack(b0, magnitude & 0xFFFF)


def _encode_value3(bwri: int, value: float | None) -> bytes:
    if value is None:
        return _ABSENT3
    q = bwri >> 4
    divisor = _DIVISOR.get(q)
    if divisor is None:
        raise ValueError(f"BWRI {bwri:#04x}: no 3-byte encoding for quantity {q:#x}")
    sign = _sign_bit(bwri)
    negative = value < 0
    if negative and not sign:
        raise ValueError(f"BWRI {bwri:#04x} is unsigned, got {value}")
    magnitude = round(abs(value) * divisor)
    return encode_3byte(magnitude, active_negative=negative and sign == 0x80,
                        reactive_negative=negative and sign == 0x40)


def encode_aux(bwri: int, value: float | None) -> bytes:
    """The data bytes of an 08 11 <bwri> reply carrying ``value`` (SI units, rounded to resolution)."""
    q = bwri >> 4
    if q == Q_TEMPERATURE:
        return _TEMP.pack(round(value if value is not None else -1))
    if q == Q_KU:
        return _KU.pack(round((value or 0.0) * 100))
    return _encode_value3(bwri, value)


def encode_aux_group(bwri: int, values: tuple[float | None, ...] | list[float | None]) -> bytes:
    length = group_reply_len(bwri)
    if len(values) * 3 != length:
        raise ValueError(f"BWRI {bwri:#04x}: group reply holds {length // 3} values, got {len(values)}")
    return b"".join(_encode_value3(bwri, v) for v in values)


# -------------------------------------------------------------------------------------------- energy arrays


ENERGY_ARRAYS: dict[int, tuple[str, str]] = {
    0: ("current", "counter: energy accumulated since the last reset (a meter reading)"),
    1: ("yearly", "energy accumulated during the current year so far (consumption in the period)"),
    2: ("yearly", "energy accumulated during the previous year (consumption in the period)"),
    3: ("monthly", ("energy accumulated during month N (1..12, low nibble of the array byte; the last 12 "
                   "months, so month N is this year's if it has begun, else last year's)")),
    4: ("daily", "energy accumulated today so far (consumption in the period)"),
    5: ("daily", "energy accumulated yesterday (consumption in the period)"),
    6: ("current", "A+ per phase since reset (12-byte reply: L1, L2, L3)"),
    9: ("yearly", "counter at the start of the current year"),
    10: ("yearly", "counter at the start of the previous year"),
    11: ("monthly", "counter at the start of month N"),
    12: ("daily", "counter at the start of today"),
    13: ("daily", "counter at the start of yesterday"),
}
"""05h arrays: archive name and what the four values (A+, A-, R+, R-) mean.

Arrays 1-5 are the energy accumulated IN the period ("за текущий год / за предыдущий год / за месяц /
за текущие сутки / за предыдущие сутки"), not counters at its start: so name them both
ru-asdx/mercury-em ``mercury-em.py`` (its ``--array-number`` help lists 0-6 as "За ..." and, as separate
arrays, 9-13 as "На начало ..." = counter at the start of the period) and GreezXII/Mercury230Protocol
``ProtocolEntities.cs`` (``DataArrays``: CurrentDay "за текущие сутки", PastDay "за прошедшие сутки").
Arrays 9-13 come from that Mercury 234/236 tool only; a Mercury 230 may refuse them with status 1.
"""


# ------------------------------------------------------------------ fixed values (03 08 freeze, 08 14 read)


def freeze(addr: int) -> Request:
    """03 08: freeze the fixed-data snapshot (status reply), then read it with :func:`read_fixed`.

    Address 0xFE (broadcast) would freeze every meter on the bus at one instant, but nobody answers a
    broadcast, and whether meters accept 03 08 that way is not verified: send it without waiting for a
    reply, and use a unicast freeze where an acknowledgement matters."""
    return Request(addr, bytes((CODE_WRITE, WRITE_FREEZE)), None)


def fixed_reply_len(bwri: int) -> int:
    """Data length of an 08 14 reply: P/Q/S 4 values (Σ, L1..L3) of 4 bytes, PF 4 x 3, U/I/angles
    3 x 3, F 3, E0 (time of freezing) 8."""
    if bwri == 0xE0:
        return 8
    q = bwri >> 4
    if q == Q_POWER:
        return 16
    if q == Q_PF:
        return 12
    if q in (Q_VOLTAGE, Q_CURRENT, Q_ANGLE):
        return 9
    if q == Q_FREQUENCY:
        return 3
    raise ValueError(f"BWRI {bwri:#04x}: no known fixed-data (08 14) layout")


def read_fixed(addr: int, bwri: int) -> Request:
    if not 0 <= bwri <= 0xFF:
        raise ValueError(f"BWRI must be one byte, got {bwri}")
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_FIXED, bwri)), fixed_reply_len(bwri))


_P4 = struct.Struct("<HH")
_P4x4 = struct.Struct("<8H")


def _power4(hi_word: int, lo_word: int, sign_bit: int) -> float | None:
    # Wire b0 b1 b2 b3 = two little-endian words, high word first; b1 (top of the high word) carries
    # the direction bits 7/6, masked off [YII UnpackSignedPower, MOL real sums].
    if hi_word == 0xFFFF and lo_word == 0xFFFF:
        return None
    b1 = hi_word >> 8
    v = ((hi_word & 0x3FFF) << 16 | lo_word) / 100
    return -v if b1 & sign_bit else v


def decode_fixed(bwri: int, data: bytes) -> tuple[float | None, ...]:
    """08 14 <bwri> reply: (Σ, L1, L2, L3) for P/Q/S/PF, (L1, L2, L3) for U/I/angles, (F,) for frequency,
    in SI units. For BWRI E0 (time of freezing) use :func:`decode_time`."""
    if bwri == 0xE0:
        raise ValueError("08 14 E0 is the time of freezing: decode it with decode_time")
    length = fixed_reply_len(bwri)
    _need(data, length, f"fixed values BWRI {bwri:#04x}")
    if length == 16:
        w = _P4x4.unpack(data)
        sign = _sign_bit(bwri)
        return tuple(_power4(w[i], w[i + 1], sign) for i in range(0, 8, 2))
    return decode_aux_group(bwri, data) if length != 3 else (decode_aux(bwri, data),)


def encode_fixed(bwri: int, values: tuple[float | None, ...] | list[float | None]) -> bytes:
    length = fixed_reply_len(bwri)
    if bwri == 0xE0:
        raise ValueError("08 14 E0 carries the time of freezing: use encode_time")
    if length != 16:
        if length == 3:
            (v,) = values
            return encode_aux(bwri, v)
        return encode_aux_group(bwri, values)
    if len(values) != 4:
        raise ValueError(f"BWRI {bwri:#04x}: fixed power holds 4 values, got {len(values)}")
    sign = _sign_bit(bwri)
    out: list[int] = []
    for v in values:
        if v is None:
            out += (0xFFFF, 0xFFFF)
            continue
        negative = v < 0
        if negative and not sign:
            raise ValueError(f"BWRI {bwri:#04x} is unsigned, got {v}")
        magnitude = round(abs(v) * 100)
        if magnitude > 0x3FFFFFFF:
            raise ValueError(f"4-byte power magnitude out of range: {v}")
        hi = magnitude >> 16 | ((sign << 8) if negative else 0)
        out += (hi, magnitude & 0xFFFF)
    return _P4x4.pack(*out)


@dataclass(frozen=True, slots=True)
class FixedRead:
    bwri: int
    reply_len: int
    channels: tuple[str, ...]
    unit: str


FIXED_READS: tuple[FixedRead, ...] = (
    FixedRead(0xE0, 8, (), ""),  # time of freezing: the readings' ts
    FixedRead(0x00, 16, ("P", "P.L1", "P.L2", "P.L3"), "W"),
    FixedRead(0x04, 16, ("Q", "Q.L1", "Q.L2", "Q.L3"), "var"),
    FixedRead(0x08, 16, ("S", "S.L1", "S.L2", "S.L3"), "VA"),
    FixedRead(0x11, 9, ("U.L1", "U.L2", "U.L3"), "V"),
    FixedRead(0x21, 9, ("I.L1", "I.L2", "I.L3"), "A"),
    FixedRead(0x30, 12, ("PF", "PF.L1", "PF.L2", "PF.L3"), ""),
    FixedRead(0x40, 3, ("F",), "Hz"),
    FixedRead(0x51, 9, ("angle.L1-L2", "angle.L1-L3", "angle.L2-L3"), "°"),
)
"""What to read after :func:`freeze` for one consistent snapshot, with reply data lengths and channels."""


# ---------------------------------------------------------------------------- the one BWRI -> channel table


_AUX_QUANTITIES = frozenset((Q_POWER, Q_VOLTAGE, Q_CURRENT, Q_PF, Q_FREQUENCY, Q_ANGLE, Q_KU, Q_TEMPERATURE,
                             Q_LINE_VOLTAGE))


PHASES = ("L1", "L2", "L3")
_ANGLE_PAIRS = ("L1-L2", "L1-L3", "L2-L3")
_LINE_PAIRS = ("L1-L2", "L2-L3", "L3-L1")
_POWER_BASE = {POWER_P: ("P", "W"), POWER_Q: ("Q", "var"), POWER_S: ("S", "VA")}


def aux_channel(bwri: int) -> tuple[str, str]:
    """(channel, unit) of one 08 11 value, DESIGN.md §3 names."""
    q, phase = bwri >> 4, bwri & 0x03
    if q == Q_POWER:
        base, unit = _POWER_BASE.get((bwri >> 2) & 3, ("P", "W"))
        return (base if phase == 0 else f"{base}.{PHASES[phase - 1]}"), unit
    if q == Q_PF:
        return ("PF" if phase == 0 else f"PF.{PHASES[phase - 1]}"), ""
    if q == Q_FREQUENCY:
        return "F", "Hz"
    if q == Q_TEMPERATURE:
        return "T.meter", "°C"
    if phase == 0:
        raise ValueError(f"BWRI {bwri:#04x}: phase 0 is not defined for quantity {q:#x}")
    if q == Q_VOLTAGE:
        return f"U.{PHASES[phase - 1]}", "V"
    if q == Q_CURRENT:
        return f"I.{PHASES[phase - 1]}", "A"
    if q == Q_ANGLE:
        return f"angle.{_ANGLE_PAIRS[phase - 1]}", "°"
    if q == Q_KU:
        return f"KU.{PHASES[phase - 1]}", "%"
    if q == Q_LINE_VOLTAGE:
        return f"U.{_LINE_PAIRS[phase - 1]}", "V"
    raise ValueError(f"BWRI {bwri:#04x}: no channel for quantity {q:#x}")


def group_channels(bwri: int) -> tuple[tuple[str, ...], str]:
    """(channels, unit) of an 08 16 or 08 14 multi-value reply, in reply order."""
    q = bwri >> 4
    if q in (Q_POWER, Q_PF):
        base, unit = aux_channel(bwri & 0xFC)
        return (base, f"{base}.L1", f"{base}.L2", f"{base}.L3"), unit
    if q == Q_FREQUENCY:
        return ("F",), "Hz"
    names = tuple(aux_channel((bwri & 0xF0) | i) for i in (1, 2, 3))
    return tuple(n for n, _ in names), names[0][1]


def group_singles(bwri: int) -> tuple[int, ...]:
    """The 08 11 BWRIs that read one by one what an 08 16 ``bwri`` group read returns, in reply order (for
    firmware that refuses 08 16)."""
    q = bwri >> 4
    if q in (Q_POWER, Q_PF):
        return tuple((bwri & 0xFC) | i for i in range(4))
    if q == Q_FREQUENCY:
        return (bwri & 0xF0,)
    return tuple((bwri & 0xF0) | i for i in (1, 2, 3))


# What a poll cycle reads as instantaneous values: these 08 16 groups (or their 08 11 singles), then
# these 08 11 values that have no group form. Channels and units come from aux_channel/group_channels.
INSTANT_GROUPS: tuple[int, ...] = (0x00, 0x04, 0x08, 0x30, 0x11, 0x21, 0x51)
INSTANT_SINGLES: tuple[int, ...] = (0x40, 0x70)
