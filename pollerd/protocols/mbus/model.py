"""M-Bus application data as decoded: telegrams, headers, records and their value types.
"""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import NamedTuple


class Function(str, enum.Enum):
    INSTANT = "instantaneous"
    MAXIMUM = "maximum"
    MINIMUM = "minimum"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


_FUNCTIONS = (Function.INSTANT, Function.MAXIMUM, Function.MINIMUM, Function.ERROR)

MEDIUM_NAMES: dict[int, str] = {
    0x00: "other", 0x01: "oil", 0x02: "electricity", 0x03: "gas", 0x04: "heat (outlet)", 0x05: "steam",
    0x06: "warm water", 0x07: "water", 0x08: "heat cost allocator", 0x09: "compressed air",
    0x0A: "cooling (outlet)", 0x0B: "cooling (inlet)", 0x0C: "heat (inlet)", 0x0D: "heat/cooling",
    0x0E: "bus/system", 0x0F: "unknown", 0x10: "irrigation water", 0x11: "water data logger",
    0x12: "gas data logger", 0x13: "gas converter", 0x14: "calorific value", 0x15: "hot water",
    0x16: "cold water", 0x17: "dual water", 0x18: "pressure", 0x19: "A/D converter", 0x1A: "smoke detector",
    0x1B: "room sensor", 0x1C: "gas detector", 0x20: "breaker (electricity)", 0x21: "valve (gas or water)",
    0x25: "customer unit", 0x28: "waste water", 0x29: "garbage", 0x31: "communication controller",
    0x32: "unidirectional repeater", 0x33: "bidirectional repeater", 0x36: "radio converter (system)",
    0x37: "radio converter (meter)",
}


@dataclass(frozen=True, slots=True)
class DateTime:
    """A date/time as the meter sent it (types F, G, I, J): the fields are kept even when they are not a
    valid calendar date, so a decode shows what was on the wire; :meth:`to_datetime` gives None then."""

    year: int
    month: int
    day: int
    hour: int | None = None
    minute: int | None = None
    second: int | None = None
    invalid: bool = False       # the IV bit of types F and I, or a year beyond 99
    summer: bool = False        # the SU bit

    def iso(self) -> str:
        d = f"{self.year:04d}-{self.month:02d}-{self.day:02d}"
        if self.hour is None:
            return d
        return f"{d}T{self.hour:02d}:{self.minute or 0:02d}:{self.second or 0:02d}"

    def to_datetime(self) -> _dt.datetime | None:
        if self.invalid:
            return None
        try:
            return _dt.datetime(self.year, self.month, self.day, self.hour or 0, self.minute or 0,
                                self.second or 0)
        except ValueError:
            return None

    def __str__(self) -> str:
        return self.iso()


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    """Type J: a time without a date."""

    hour: int
    minute: int
    second: int

    def iso(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"

    __str__ = iso


Value = int | float | str | bytes | DateTime | TimeOfDay | None


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """What a record's DIB and VIB say: the same for every record with the same header bytes, so it is built
    once per distinct header and shared (decoding a telegram then mostly converts data bytes)."""

    dif: int
    difes: tuple[int, ...]
    vif: int | None
    vifes: tuple[int, ...]
    storage: int
    tariff: int
    subunit: int
    function: Function
    quantity: str
    unit: str
    known: bool = True
    modifiers: tuple[int, ...] = ()     # combinable VIFEs that change the meaning (per hour, limit...)
    text_vif: str | None = None         # plain-text VIF (7C/FC), already un-reversed
    # how data becomes a value: decoder kind, value = raw * mult * 10**exp (+ offset)
    kind: int = 0               # _K_* below
    mult: int = 1
    exp: int = 0
    offset: int | float | None = None
    length: int = 0             # data bytes, for the fixed-size kinds
    scaled: bool = False        # mult or exp differ from 1 and 0

    @property
    def vif_code(self) -> str:
        """The VIF and its VIFEs as hex, e.g. "FD17" or "0413": names a record the tables do not know."""
        if self.vif is None:
            return f"{self.dif:02X}"
        return "".join(f"{b:02X}" for b in (self.vif, *self.vifes))


# Record.error of a 32-bit real that is NaN or an infinity: the value is None, the raw bytes stay.
NON_FINITE = "not a finite number"


class Record(NamedTuple):
    """One data record. ``value`` is normalised (``raw * 10**exponent`` in ``unit``) for numbers; dates are
    :class:`DateTime`, texts ``str``, binary/manufacturer data ``bytes``; None when the meter marked the
    value invalid (BCD error digits). ``known`` is False for a VIF this codec has no meaning for: the number
    is then the raw value, unscaled, and ``unit`` is empty. The DIB/VIB meaning is in :attr:`info`; the
    usual fields of it are repeated here as properties.

    A NamedTuple rather than the house's frozen dataclass: it is immutable all the same, and a telegram makes
    one per record, where a frozen dataclass' __init__ (one object.__setattr__ per field) cost a fifth of the
    whole decode."""

    info: RecordInfo
    value: Value
    raw: bytes                  # the data bytes as on the wire
    error: str | None = None    # why the value is None

    @property
    def dif(self) -> int:
        return self.info.dif

    @property
    def difes(self) -> tuple[int, ...]:
        return self.info.difes

    @property
    def vif(self) -> int | None:
        return self.info.vif

    @property
    def vifes(self) -> tuple[int, ...]:
        return self.info.vifes

    @property
    def storage(self) -> int:
        return self.info.storage

    @property
    def tariff(self) -> int:
        return self.info.tariff

    @property
    def subunit(self) -> int:
        return self.info.subunit

    @property
    def function(self) -> Function:
        return self.info.function

    @property
    def quantity(self) -> str:
        return self.info.quantity

    @property
    def unit(self) -> str:
        return self.info.unit

    @property
    def known(self) -> bool:
        return self.info.known

    @property
    def modifiers(self) -> tuple[int, ...]:
        return self.info.modifiers

    @property
    def text_vif(self) -> str | None:
        return self.info.text_vif

    @property
    def vif_code(self) -> str:
        return self.info.vif_code

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, (int, float)) and not isinstance(self.value, bool)

    @property
    def number(self) -> int | float | None:
        """The value when it is a number (not a date, text or bytes), typed as one; None otherwise."""
        v = self.value
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    def display(self) -> str:
        v = self.value
        if isinstance(v, bytes):
            return v.hex(" ").upper()
        if v is None:
            return ""
        return str(v)


@dataclass(frozen=True, slots=True)
class Header:
    id: str | None = None              # 8 BCD digits as printed on the meter
    manufacturer: str | None = None    # three letters
    manufacturer_code: int | None = None
    version: int | None = None
    medium: int | None = None
    access_no: int | None = None
    status: int | None = None
    signature: int | None = None

    @property
    def medium_name(self) -> str:
        return MEDIUM_NAMES.get(self.medium, "reserved") if self.medium is not None else ""

    @property
    def secondary(self) -> str | None:
        if self.id is None or self.manufacturer_code is None:
            return None
        return (f"{self.id}{self.manufacturer_code.to_bytes(2, 'little').hex().upper()}"
                f"{self.version or 0:02X}{self.medium or 0:02X}")


@dataclass(frozen=True, slots=True)
class Telegram:
    address: int
    ci: int
    header: Header
    records: tuple[Record, ...]
    more_follows: bool = False          # DIF 1F: ask again (toggled FCB) for the next telegram
    manufacturer_data: bytes = b""      # after DIF 0F/1F
    fixed: bool = False
    tail_dif: int | None = None         # 0x0F or 0x1F when the records ended in manufacturer data
