"""The СПОДЭС object map (ГОСТ Р 58940-2020 information model) onto pollerd's channels and archives.

Every fact here is listed with its source in docs/protocols/dlms.md. Profiles are read by their capture
objects (attribute 3), never by an assumed column order: :func:`column_plan` turns the capture list the meter
reports into what each column becomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pollerd.protocols import obis as obis_names

from .xdlms import Attr, obis_bytes

__all__ = [
    "CLASS_CLOCK", "CLASS_DATA", "CLASS_PROFILE", "CLASS_REGISTER", "CLOCK", "Column", "DAILY", "ENERGY",
    "INSTANT", "JOURNALS", "LOAD_PROFILES", "MONTHLY", "SERIAL", "TYPE", "UNITS", "channel_of", "column_plan",
    "scale",
]

CLASS_DATA, CLASS_REGISTER, CLASS_PROFILE, CLASS_CLOCK = 1, 3, 7, 8

CLOCK = Attr.of(CLASS_CLOCK, "0.0.1.0.0.255", 2)
SERIAL = Attr.of(CLASS_DATA, "0.0.96.1.0.255", 2)           # заводской номер
TYPE = Attr.of(CLASS_DATA, "0.0.96.1.1.255", 2)             # тип счётчика
FIRMWARE = Attr.of(CLASS_DATA, "0.0.96.1.2.255", 2)         # версия ПО

# Energy registers (class 3): A+ A- R+ R-, total and tariffs 1..4.
ENERGY: tuple[str, ...] = tuple(f"1.0.{c}.8.{t}.255" for c in (1, 2, 3, 4) for t in range(5))
# Instantaneous values (class 3): U, I per phase, P/Q/S sum and per phase, PF sum and per phase, frequency.
INSTANT: tuple[str, ...] = (
    "1.0.32.7.0.255", "1.0.52.7.0.255", "1.0.72.7.0.255",
    "1.0.31.7.0.255", "1.0.51.7.0.255", "1.0.71.7.0.255",
    "1.0.1.7.0.255", "1.0.21.7.0.255", "1.0.41.7.0.255", "1.0.61.7.0.255",
    "1.0.3.7.0.255", "1.0.23.7.0.255", "1.0.43.7.0.255", "1.0.63.7.0.255",
    "1.0.9.7.0.255", "1.0.29.7.0.255", "1.0.49.7.0.255", "1.0.69.7.0.255",
    "1.0.13.7.0.255", "1.0.33.7.0.255", "1.0.53.7.0.255", "1.0.73.7.0.255",
    "1.0.14.7.0.255",
)
INSTANT_PROFILE = "1.0.94.7.0.255"
LOAD_PROFILES = ("1.0.99.1.0.255", "1.0.99.2.0.255")
DAILY = "1.0.98.2.0.255"
MONTHLY = "1.0.98.1.0.255"
# Event journals (profile generic, class 7): capture objects are the clock and the event code register.
JOURNALS: dict[str, str] = {
    "0.0.99.98.0.255": "voltage", "0.0.99.98.1.255": "current", "0.0.99.98.2.255": "power",
    "0.0.99.98.3.255": "correction", "0.0.99.98.4.255": "tamper", "0.0.99.98.5.255": "communication",
    "0.0.99.98.6.255": "access", "0.0.99.98.7.255": "diagnostics", "0.0.99.98.8.255": "tg_phi",
    "0.0.99.98.9.255": "quality",
}

# DLMS unit enumeration (attribute 3 of a register) -> pollerd's unit text.
UNITS: dict[int, str] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 27: "W", 28: "VA", 29: "var",
    30: "Wh", 31: "VAh", 32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m", 38: "Ω", 44: "Hz", 56: "%",
    255: "",
}

# СПОДЭС sends the signed sum and per-phase powers in C = 1/21/41/61 (active) and 3/23/43/63 (reactive),
# where IEC uses 1 and 3 for "import" only; pollerd's names for signed powers are P and Q (DESIGN.md §3).
_SIGNED_POWER = {1: "P", 21: "P.L1", 41: "P.L2", 61: "P.L3", 3: "Q", 23: "Q.L1", 43: "Q.L2", 63: "Q.L3"}
_POWER_UNIT = {"P": "W", "Q": "var"}
# Load profile columns: the energy of one capture period (D = 29, "time integral 5").
_INTERVAL_ENERGY = {1: "A+", 2: "A-", 3: "R+", 4: "R-"}


def scale(value: Any, scaler: int) -> float | int | None:
    """``value * 10**scaler`` without binary noise: 23012 with -2 is 230.12, not 230.12000000000001."""
    if scaler == 0 and type(value) is int:     # the common profile column (Wh with scaler 0), first
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        if scaler >= 0:
            return int(value * 10 ** scaler)
        return float(value / 10 ** -scaler)
    x = float(value)
    if scaler == 0:
        return x
    return float(f"{x * 10.0 ** scaler:.15g}")


def channel_of(logical_name: bytes) -> str | None:
    """pollerd's channel for a register's logical name, or None when it has none (the caller keeps the OBIS)."""
    a, b, c, d, e, f = logical_name
    if a != 1 or b not in (0, 1) or f != 255:
        return None
    if d == 7 and e == 0 and c in _SIGNED_POWER:
        return _SIGNED_POWER[c]
    if d == 29 and e == 0 and c in _INTERVAL_ENERGY:
        return _INTERVAL_ENERGY[c]
    named = obis_names.channel_of(obis_names.Obis(None, None, c, d, e, None))
    return named[0] if named else None


def unit_of(channel: str, dlms_unit: int | None) -> str:
    if dlms_unit is not None and dlms_unit in UNITS:
        return UNITS[dlms_unit]
    return _POWER_UNIT.get(channel.split(".", 1)[0], "")


@dataclass(frozen=True, slots=True)
class Column:
    """What one capture column is: the time stamp (``clock``), a value (``channel`` with ``attr`` the
    register whose attribute 3 scales it) or ignored (``channel`` None, e.g. a status word)."""

    index: int
    attr: Attr
    data_index: int
    clock: bool = False
    channel: str | None = None
    event_code: bool = False


def column_plan(capture_objects: list[Any]) -> list[Column]:
    """Capture objects (attribute 3: array of structure{class_id, logical_name, attribute_index, data_index})."""
    plan = []
    for i, item in enumerate(capture_objects):
        if not isinstance(item, tuple) or len(item) != 4 or not isinstance(item[1], bytes) or len(item[1]) != 6:
            raise ValueError(f"capture object {i} is not structure{{class, logical name, attribute, data index}}")
        class_id, ln, attr_index, data_index = item
        attr = Attr(class_id, ln, attr_index)
        if class_id == CLASS_CLOCK and attr_index == 2:
            plan.append(Column(i, attr, data_index, clock=True))
        elif ln[:4] == b"\x00\x00\x60\x0b" and attr_index == 2:
            # 0.0.96.11.x.255: the event code of a journal entry.
            plan.append(Column(i, attr, data_index, event_code=True))
        elif class_id in (CLASS_REGISTER, 4, 5) and attr_index == 2:
            plan.append(Column(i, attr, data_index, channel=channel_of(ln) or ".".join(map(str, ln))))
        else:
            plan.append(Column(i, attr, data_index))
    return plan


def obis_attr(class_id: int, text: str, attr: int = 2) -> Attr:
    return Attr(class_id, obis_bytes(text), attr)
