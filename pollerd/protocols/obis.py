"""OBIS / EDIS codes and vendor names onto pollerd channel names (DESIGN.md §3), units normalised.

Accepted address forms: short EDIS ``1.8.0``, ``1.8``, letters for the abstract groups (``C.1.0``,
``F.F``: C=96, F=97, L=98, P=99), full OBIS ``1-0:1.8.0*255``, ``0:1.8.0``, billing-history suffixes
``*12`` / ``&12`` (which are kept: a billing-period value is not the current one), and Neva's 8 hex digits
(OBIS groups C D E F, one byte each: ``100700FF`` = 16.7.0).

A code with no channel here keeps its address as the channel name (the caller's rule).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

__all__ = ["Obis", "channel_of", "default_unit", "kind_of", "normalize", "parse", "parse_hex", "to_float"]

_LETTERS = {"C": 96, "F": 97, "L": 98, "P": 99}
_OBIS = re.compile(
    r"(?:(?:(\d{1,3})-)?(\d{1,3}):)?"          # A- B:
    r"(\d{1,3}|[CFLP])\.(\d{1,3}|[CFLP])"       # C.D
    r"(?:\.(\d{1,3}))?"                          # .E
    r"(?:[*&](\d{1,3}))?")                       # *F or &F (billing period)


@dataclass(frozen=True, slots=True)
class Obis:
    a: int | None
    b: int | None
    c: int
    d: int
    e: int | None
    f: int | None          # None or 255: current value; anything else: a billing-period value

    @property
    def current(self) -> bool:
        return self.f is None or self.f == 255


def _group(text: str) -> int:
    return _LETTERS[text] if text in _LETTERS else int(text)


# Meters send the same few dozen addresses every cycle: parse each once.
@functools.lru_cache(maxsize=4096)
def parse(address: str) -> Obis | None:
    m = _OBIS.fullmatch(address.strip())
    if m is None:
        return None
    a, b, e, f = (None if x is None else _group(x) for x in m.group(1, 2, 5, 6))
    c, d = _group(m.group(3)), _group(m.group(4))  # the pattern requires C and D
    if any(v is not None and v > 255 for v in (a, b, c, d, e, f)):
        return None
    return Obis(a, b, c, d, e, f)


@functools.lru_cache(maxsize=4096)
def parse_hex(address: str) -> Obis | None:
    """Neva MT3xx: 8 hex digits = C D E F; E = 0xFF means "no E group" (``2107FFFF`` = 33.7)."""
    if len(address) != 8:
        return None
    try:
        c, d, e, f = bytes.fromhex(address)
    except ValueError:
        return None
    return Obis(None, None, c, d, None if e == 0xFF else e, f)


# --- channels ---------------------------------------------------------------------------------------------

_ENERGY = {1: ("A+", "Wh"), 2: ("A-", "Wh"), 3: ("R+", "varh"), 4: ("R-", "varh"), 15: ("A.abs", "Wh")}
_INSTANT: dict[int, tuple[str, str]] = {
    16: ("P", "W"), 36: ("P.L1", "W"), 56: ("P.L2", "W"), 76: ("P.L3", "W"),
    1: ("P+", "W"), 21: ("P+.L1", "W"), 41: ("P+.L2", "W"), 61: ("P+.L3", "W"),
    2: ("P-", "W"), 22: ("P-.L1", "W"), 42: ("P-.L2", "W"), 62: ("P-.L3", "W"),
    3: ("Q+", "var"), 4: ("Q-", "var"),
    9: ("S", "VA"), 29: ("S.L1", "VA"), 49: ("S.L2", "VA"), 69: ("S.L3", "VA"),
    13: ("PF", ""), 33: ("PF.L1", ""), 53: ("PF.L2", ""), 73: ("PF.L3", ""),
    12: ("U", "V"), 32: ("U.L1", "V"), 52: ("U.L2", "V"), 72: ("U.L3", "V"),
    11: ("I", "A"), 31: ("I.L1", "A"), 51: ("I.L2", "A"), 71: ("I.L3", "A"), 91: ("I.N", "A"),
    14: ("F", "Hz"),
}
_ANGLE = {10: "angle.L1-L2", 20: "angle.L1-L3", 21: "angle.L2-L3"}


@functools.lru_cache(maxsize=4096)
def channel_of(code: Obis) -> tuple[str, str] | None:
    """(channel, SI unit) of a current value, or None when pollerd has no name for it.

    Group B is the measurement channel: only the meter's main one (B absent, 0 or 1) gets the short names;
    `1-2:1.8.0` beside `1-1:1.8.0` would otherwise both be A+, and the store keeps one of them. Others keep
    their OBIS address as the channel name."""
    if not code.current or code.a not in (None, 0, 1) or code.b not in (None, 0, 1):
        return None
    c, d, e = code.c, code.d, code.e or 0
    if d == 8 and c in _ENERGY and 0 <= e <= 8:
        base, unit = _ENERGY[c]
        return (base + (f".T{e}" if e else ""), unit)
    if d == 7:
        if c == 81 and e in _ANGLE:
            return (_ANGLE[e], "°")
        if e == 0 and c in _INSTANT:
            return _INSTANT[c]
    if (c, d, e) == (96, 9, 0):
        return ("T.meter", "°C")
    return None


def kind_of(channel: str) -> str:
    """What a meter's ``read`` list calls the channel: "energy", "instant" or "other"."""
    base = channel.split(".", 1)[0]
    if base in ("A+", "A-", "R+", "R-") or channel.startswith("A.abs"):
        return "energy"
    if base in ("P", "P+", "P-", "Q", "Q+", "Q-", "S", "PF", "U", "I", "F", "angle", "T"):
        return "instant"
    return "other"


# --- units ------------------------------------------------------------------------------------------------

# lower-case wire unit -> (factor, SI unit)
_UNITS: dict[str, tuple[float, str]] = {
    "wh": (1.0, "Wh"), "kwh": (1e3, "Wh"), "mwh": (1e6, "Wh"),
    "varh": (1.0, "varh"), "kvarh": (1e3, "varh"), "mvarh": (1e6, "varh"),
    "vah": (1.0, "VAh"), "kvah": (1e3, "VAh"),
    "w": (1.0, "W"), "kw": (1e3, "W"), "mw": (1e6, "W"),
    "var": (1.0, "var"), "kvar": (1e3, "var"), "mvar": (1e6, "var"),
    "va": (1.0, "VA"), "kva": (1e3, "VA"), "mva": (1e6, "VA"),
    "v": (1.0, "V"), "kv": (1e3, "V"), "a": (1.0, "A"), "ma": (1e-3, "A"), "hz": (1.0, "Hz"),
    "m3": (1.0, "m³"), "m³": (1.0, "m³"), "l": (1e-3, "m³"),
    "gj": (1e9 / 3600.0, "Wh"), "mj": (1e6 / 3600.0, "Wh"),
    "°c": (1.0, "°C"), "c": (1.0, "°C"), "deg": (1.0, "°"), "°": (1.0, "°"),
}

# What a meter means when it sends no unit: IEC readouts count energy in kWh and power in kW.
_DEFAULT_WIRE = {"Wh": "kWh", "varh": "kvarh", "W": "kW", "var": "kvar", "VA": "kVA", "V": "V", "A": "A",
                 "Hz": "Hz", "°C": "°C", "°": "°"}


def default_unit(si_unit: str) -> str:
    return _DEFAULT_WIRE.get(si_unit, si_unit)


def normalize(value: float, unit: str) -> tuple[float, str]:
    """Scale to the SI-ish units of DESIGN.md §3 (kWh -> Wh, kW -> W, ...). Unknown units pass through."""
    entry = _UNITS.get(unit.strip().lower())
    if entry is None:
        return value, unit.strip()
    factor, si = entry
    if factor != 1.0:
        value = value * factor
        # kWh with 3 decimals becomes whole Wh; keep it free of binary noise (68.42 kWh -> 68420.0 Wh).
        value = round(value, 6)
    return value, si


def to_float(text: str) -> float | None:
    """A value's number, or None for text values (dates, ids, error codes like ``E12``)."""
    t = text.strip()
    if not t or t[0] not in "+-.0123456789":
        return None
    try:
        v = float(t)
    except ValueError:
        return None
    return v if math.isfinite(v) else None
