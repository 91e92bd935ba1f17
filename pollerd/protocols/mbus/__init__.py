"""Wired M-Bus (EN 13757-2 link layer, EN 13757-3 application layer): sans-I/O codec.

Link layer (FT1.2 frames, FACTS.md in shared/vectors/mbus)::

    single char : E5                                  (acknowledgement)
    short       : 10 C A CS 16
    control     : 68 03 03 68 C A CI CS 16
    long        : 68 L L 68 C A CI data... CS 16      (L counts C..last data byte; CS = sum mod 256 of C..data)

Application layer: RSP_UD telegrams with a fixed (CI 73) or variable data structure (CI 72 long header,
7A short header, 78 no header); CI 70 is the slave's application error. Variable data is a list of data
records ``DIF [DIFE...] VIF [VIFE...] data``. Values are normalised to the unit of the VIF table
(Wh, J, m³, kg, s, W, J/h, m³/h, m³/min, m³/s, kg/h, °C, K, bar, V, A): ``value = raw * 10**exponent``,
computed so that a decimal scale never adds binary noise beyond one rounding.

Every rejection raises :class:`MbusFrameError` (a :class:`~pollerd.errors.FrameError`) whose ``problem``
names what was wrong in libmbus' vocabulary (``premature_end_of_data``, ``too_many_dife``...), and whose
message carries the evidence. Unknown VIFs are not errors: the record is kept, marked ``known=False``.

Nothing here does I/O; the simulator uses the encoders of this module.
"""

from __future__ import annotations

import datetime as _dt
import enum
import functools
import struct
from dataclasses import dataclass
from typing import NamedTuple, Union

from pollerd.errors import CrcError, FrameError, FrameTooLong, TruncatedFrame
from pollerd.protocols.floats import f32_decimal

__all__ = [
    "ACK", "ADDRESS_BROADCAST", "ADDRESS_BROADCAST_REPLY", "ADDRESS_SELECTED", "APPLICATION_ERRORS",
    "C_REQ_UD2", "C_RSP_UD", "C_SND_NKE", "C_SND_UD", "CI_SELECT", "DateTime", "Frame", "Function",
    "Header", "MEDIUM_NAMES", "RecordInfo", "MbusApplicationError", "MbusChecksumError", "MbusFrameError", "MbusTooLong",
    "MbusTruncated", "Record", "ReplyFramer", "SecondaryAddress", "Telegram", "checksum", "decode_frame",
    "decode_manufacturer", "decode_telegram", "encode_ack", "encode_long", "encode_manufacturer",
    "encode_short", "req_ud2", "select_secondary", "snd_nke",
]

ACK = 0xE5
START_SHORT = 0x10
START_LONG = 0x68
STOP = 0x16

C_SND_NKE = 0x40
C_SND_UD = 0x53
C_REQ_UD2 = 0x5B
C_RSP_UD = 0x08
FCB = 0x20           # frame count bit of REQ_UD2/SND_UD
CI_SELECT = 0x52     # SND_UD to address 253: select by secondary address

ADDRESS_SELECTED = 253
ADDRESS_BROADCAST_REPLY = 254
ADDRESS_BROADCAST = 255

MAX_L = 255          # L counts C, A, CI and up to 252 data bytes
MAX_FRAME = MAX_L + 6
MAX_DIFE = 10        # EN 13757-3: at most 10 DIFE and 10 VIFE per record
MAX_VIFE = 10


# ------------------------------------------------------------------------------------------------ errors


class MbusFrameError(FrameError):
    """A frame or telegram was rejected; ``problem`` is a short code (libmbus' error names)."""

    def __init__(self, problem: str, message: str, frame: bytes | bytearray | memoryview = b"") -> None:
        self.problem = problem
        super().__init__(message, frame)


class MbusChecksumError(MbusFrameError, CrcError):
    pass


class MbusTruncated(MbusFrameError, TruncatedFrame):
    pass


class MbusTooLong(MbusFrameError, FrameTooLong):
    pass


class MbusApplicationError(MbusFrameError):
    """The slave answered with CI 70 (application error); ``code`` is its status byte or None."""

    kind = "application"

    def __init__(self, code: int | None, frame: bytes = b"") -> None:
        self.code = code
        if code is None:
            problem, text = "error", "application error without a status byte"
        else:
            problem, text = APPLICATION_ERRORS.get(code, ("reserved", "reserved error code"))
            text = f"application error 0x{code:02X}: {text}"
        super().__init__(problem, f"slave reports {text}", frame)


# CI 70 status byte (EN 13757-3 table "codes for application errors"); problem codes as libmbus names them.
APPLICATION_ERRORS: dict[int, tuple[str, str]] = {
    0x00: ("unspecified_error", "unspecified error"),
    0x01: ("unimplemented_ci", "unimplemented CI field"),
    0x02: ("buffer_too_long", "buffer too long, truncated"),
    0x03: ("too_many_records", "too many records"),
    0x04: ("premature_end_of_record", "premature end of record"),
    0x05: ("too_many_difes", "more than 10 DIFEs"),
    0x06: ("too_many_vifes", "more than 10 VIFEs"),
    0x07: ("reserved", "reserved"),
    0x08: ("application_busy", "application too busy for handling readout request"),
    0x09: ("too_many_readouts", "too many readouts"),
}


# ------------------------------------------------------------------------------------------------ link layer


@dataclass(frozen=True, slots=True)
class Frame:
    """One link-layer frame. ``kind`` is "ack", "short", "control" or "long"; ``data`` follows the CI."""

    kind: str
    c: int = 0
    a: int = 0
    ci: int | None = None
    data: bytes = b""

    def encode(self) -> bytes:
        if self.kind == "ack":
            return bytes((ACK,))
        if self.kind == "short":
            return encode_short(self.c, self.a)
        assert self.ci is not None
        return encode_long(self.c, self.a, self.ci, self.data)


def checksum(data: bytes | bytearray | memoryview) -> int:
    return sum(data) & 0xFF


def encode_ack() -> bytes:
    return bytes((ACK,))


def encode_short(c: int, a: int) -> bytes:
    return bytes((START_SHORT, c, a, (c + a) & 0xFF, STOP))


def encode_long(c: int, a: int, ci: int, data: bytes = b"") -> bytes:
    n = 3 + len(data)
    if n > MAX_L:
        raise ValueError(f"M-Bus long frame carries at most {MAX_L - 3} data bytes, got {len(data)}")
    body = bytes((c, a, ci)) + data
    return bytes((START_LONG, n, n, START_LONG)) + body + bytes((checksum(body), STOP))


def snd_nke(address: int) -> bytes:
    return encode_short(C_SND_NKE, address)


def req_ud2(address: int, fcb: bool) -> bytes:
    return encode_short(C_REQ_UD2 | (FCB if fcb else 0), address)


def _frame_length(buf: bytes | bytearray, n: int) -> int | None:
    """Total length of the frame at the head of ``buf`` (``n`` bytes buffered), None if not yet known.
    Raises for a head that cannot start a valid frame."""
    first = buf[0]
    if first == ACK:
        return 1
    if first == START_SHORT:
        return 5
    if first != START_LONG:
        raise MbusFrameError("invalid_start", f"expected E5, 10 or 68 as first byte, got 0x{first:02X} "
                             "(noise or a collision on the bus?)", buf[:n])
    if n < 4:
        return None
    if buf[1] != buf[2]:
        raise MbusFrameError("invalid_length", f"length bytes differ: 0x{buf[1]:02X} vs 0x{buf[2]:02X}",
                             buf[:n])
    if buf[3] != START_LONG:
        raise MbusFrameError("invalid_start", f"expected 68 as 4th byte, got 0x{buf[3]:02X}", buf[:n])
    if buf[1] < 3:
        raise MbusFrameError("invalid_length", f"length field {buf[1]} is below the minimum 3 (C, A, CI)",
                             buf[:n])
    return buf[1] + 6


def _check_frame(raw: bytes) -> Frame:
    """Validate one complete frame of exactly its own length."""
    first = raw[0]
    if first == ACK:
        return Frame("ack")
    if raw[-1] != STOP:
        raise MbusFrameError("invalid_stop", f"expected stop byte 16, got 0x{raw[-1]:02X}", raw)
    if first == START_SHORT:
        body = raw[1:3]
        kind, ci, data = "short", None, b""
    else:
        body = raw[4:-2]
        kind = "control" if len(body) == 3 else "long"
        ci, data = body[2], bytes(body[3:])
    cs = checksum(body)
    if cs != raw[-2]:
        raise MbusChecksumError("checksum", f"checksum mismatch: computed 0x{cs:02X}, frame says 0x{raw[-2]:02X}",
                                raw)
    return Frame(kind, body[0], body[1], ci, data)


def decode_frame(raw: bytes | bytearray | memoryview) -> Frame:
    """Decode exactly one frame; anything short, long or malformed raises :class:`MbusFrameError`."""
    raw = bytes(raw)
    if not raw:
        raise MbusTruncated("truncated", "empty frame")
    total = _frame_length(raw, len(raw))
    if total is None or len(raw) < total:
        want = f"{total}" if total is not None else "at least 4"
        raise MbusTruncated("truncated", f"truncated frame: {len(raw)} bytes, expected {want}", raw)
    if len(raw) > total:
        raise MbusTooLong("too_long", f"{len(raw) - total} bytes after the end of a {total}-byte frame", raw)
    return _check_frame(raw)


class ReplyFramer:
    """Receiver for one reply: ``feed`` returns the :class:`Frame` once complete, raises on a bad one.

    ``expect`` is "ack" (after SND_NKE / a selection: E5 only), "data" (after REQ_UD2: a long frame) or
    "any". The length comes from the L field, never from a quiet time, so a reply is complete the moment
    its stop byte arrives. Bytes after a complete frame are left for the line to discard: on a bus they can
    only be a collision's tail or noise, and the next request starts clean.
    """

    __slots__ = ("_buf", "expect", "max_len")

    def __init__(self, expect: str = "any") -> None:
        self._buf = bytearray()
        self.expect = expect
        self.max_len = MAX_FRAME

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes) -> Frame | None:
        buf = self._buf
        buf += data
        n = len(buf)
        if not n:
            return None
        total = _frame_length(buf, n)
        if total is None or n < total:
            return None
        frame = _check_frame(bytes(buf[:total]))
        if self.expect == "ack" and frame.kind != "ack":
            raise MbusFrameError("unexpected_frame", f"expected E5, got a {frame.kind} frame", buf[:total])
        if self.expect == "data" and frame.kind != "long" and frame.kind != "control":
            raise MbusFrameError("unexpected_frame", f"expected a long frame (RSP_UD), got a {frame.kind} frame",
                                 buf[:total])
        return frame


# ------------------------------------------------------------------------------------------------ addressing


def decode_manufacturer(code: int) -> str:
    """Two header bytes (as a little-endian int) -> three letters, e.g. 0x2C2D -> "KAM"."""
    return "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def encode_manufacturer(letters: str) -> int:
    if len(letters) != 3 or not all("A" <= ch <= "Z" for ch in letters.upper()):
        raise ValueError(f"a manufacturer code is three letters A-Z, got {letters!r}")
    a, b, c = (ord(ch) - 64 for ch in letters.upper())
    return (a << 10) | (b << 5) | c


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """The 16-hex-digit secondary address as libmbus writes it: ``IIIIIIIIMMMMVVDD`` = id (8 BCD digits, most
    significant first), manufacturer bytes in wire order, version, device type (medium). ``F`` digits are
    wildcards (only meaningful in a selection)."""

    text: str

    @classmethod
    def parse(cls, text: str, *, wildcards: bool = True) -> SecondaryAddress:
        t = text.strip().upper()
        if len(t) == 8:
            t += "FFFFFFFF"
        if len(t) != 16 or any(ch not in "0123456789ABCDEF" for ch in t):
            raise ValueError(f"a secondary address is 8 decimal digits (the id) or 16 hex digits (id, "
                             f"manufacturer, version, medium), got {text!r}")
        if any(ch in "ABCDE" for ch in t[:8]):
            raise ValueError(f"the id part of a secondary address is decimal (F = wildcard), got {t[:8]!r}")
        if not wildcards and "F" in t[:8]:
            raise ValueError(f"wildcards (F) are only for scanning; give the meter's full id, got {t[:8]!r}")
        return cls(t)

    @property
    def id(self) -> str:
        return self.text[:8]

    @property
    def has_wildcards(self) -> bool:
        return "F" in self.text

    def encode(self) -> bytes:
        t = self.text
        ident = bytes.fromhex(t[:8])[::-1]        # BCD, least significant byte first on the wire
        return ident + bytes.fromhex(t[8:])

    def matches(self, ident: str, manufacturer: int, version: int, medium: int) -> bool:
        """Whether a slave with this identity answers a selection with this (possibly wildcard) mask."""
        mfr = manufacturer.to_bytes(2, "little").hex().upper()
        actual = f"{ident}{mfr}{version:02X}{medium:02X}"
        return all(m == "F" or m == a for m, a in zip(self.text, actual))

    def with_digit(self, pos: int, digit: str) -> SecondaryAddress:
        return SecondaryAddress(self.text[:pos] + digit + self.text[pos + 1:])

    def __str__(self) -> str:
        return self.text


def select_secondary(address: SecondaryAddress | str) -> bytes:
    """SND_UD to 253 with CI 52: the matching slave answers E5 and is selected, all others deselect."""
    sa = address if isinstance(address, SecondaryAddress) else SecondaryAddress.parse(address)
    return encode_long(C_SND_UD, ADDRESS_SELECTED, CI_SELECT, sa.encode())


# ------------------------------------------------------------------------------------------------ application


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


Value = Union[int, float, str, bytes, DateTime, TimeOfDay, None]


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

    dif = property(lambda self: self.info.dif)
    difes = property(lambda self: self.info.difes)
    vif = property(lambda self: self.info.vif)
    vifes = property(lambda self: self.info.vifes)
    storage = property(lambda self: self.info.storage)
    tariff = property(lambda self: self.info.tariff)
    subunit = property(lambda self: self.info.subunit)
    function = property(lambda self: self.info.function)
    quantity = property(lambda self: self.info.quantity)
    unit = property(lambda self: self.info.unit)
    known = property(lambda self: self.info.known)
    modifiers = property(lambda self: self.info.modifiers)
    text_vif = property(lambda self: self.info.text_vif)
    vif_code = property(lambda self: self.info.vif_code)

    @property
    def is_number(self) -> bool:
        return isinstance(self.value, (int, float)) and not isinstance(self.value, bool)

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


# -- value tables ---------------------------------------------------------------------------------------------
# An entry is (quantity, unit, multiplier, exponent): value = raw * multiplier * 10**exponent. Dates,
# identifiers and counters have unit "" and are not scaled.

_Entry = tuple[str, str, int, int]
_TIME_MULT = (1, 60, 3600, 86400)


def _primary_table() -> dict[int, _Entry]:
    t: dict[int, _Entry] = {}
    for n in range(8):
        t[0x00 + n] = ("energy", "Wh", 1, n - 3)
        t[0x08 + n] = ("energy", "J", 1, n)
        t[0x10 + n] = ("volume", "m³", 1, n - 6)
        t[0x18 + n] = ("mass", "kg", 1, n - 3)
        t[0x28 + n] = ("power", "W", 1, n - 3)
        t[0x30 + n] = ("power", "J/h", 1, n)
        t[0x38 + n] = ("volume flow", "m³/h", 1, n - 6)
        t[0x40 + n] = ("volume flow", "m³/min", 1, n - 7)
        t[0x48 + n] = ("volume flow", "m³/s", 1, n - 9)
        t[0x50 + n] = ("mass flow", "kg/h", 1, n - 3)
    for n in range(4):
        t[0x20 + n] = ("on time", "s", _TIME_MULT[n], 0)
        t[0x24 + n] = ("operating time", "s", _TIME_MULT[n], 0)
        t[0x58 + n] = ("flow temperature", "°C", 1, n - 3)
        t[0x5C + n] = ("return temperature", "°C", 1, n - 3)
        t[0x60 + n] = ("temperature difference", "K", 1, n - 3)
        t[0x64 + n] = ("external temperature", "°C", 1, n - 3)
        t[0x68 + n] = ("pressure", "bar", 1, n - 3)
        t[0x70 + n] = ("averaging duration", "s", _TIME_MULT[n], 0)
        t[0x74 + n] = ("actuality duration", "s", _TIME_MULT[n], 0)
    t[0x6C] = ("date", "", 1, 0)
    t[0x6D] = ("date and time", "", 1, 0)
    t[0x6E] = ("units for H.C.A.", "", 1, 0)
    t[0x78] = ("fabrication number", "", 1, 0)
    t[0x79] = ("enhanced identification", "", 1, 0)
    t[0x7A] = ("bus address", "", 1, 0)
    t[0x7E] = ("any VIF", "", 1, 0)
    t[0x7F] = ("manufacturer specific", "", 1, 0)
    return t


def _fd_table() -> dict[int, _Entry]:
    t: dict[int, _Entry] = {}
    for n in range(4):
        t[0x00 + n] = ("credit", "currency", 1, n - 3)
        t[0x04 + n] = ("debit", "currency", 1, n - 3)
        t[0x24 + n] = ("storage interval", "s", _TIME_MULT[n], 0)
        t[0x2C + n] = ("duration since last readout", "s", _TIME_MULT[n], 0)
        t[0x34 + n] = ("period of tariff", "s", _TIME_MULT[n], 0)
        t[0x3C + n] = ("period of nominal data transmissions", "s", _TIME_MULT[n], 0)
    for n in range(1, 4):
        t[0x30 + n] = ("duration of tariff", "s", _TIME_MULT[n], 0)
    for n, name in enumerate(("access number", "medium", "manufacturer", "parameter set identification",
                              "model/version", "hardware version", "firmware version", "software version",
                              "customer location", "customer", "access code user", "access code operator",
                              "access code system operator", "access code developer", "password",
                              "error flags", "error mask", "security key", "digital output", "digital input",
                              "baud rate", "response delay time", "retry", "remote control",
                              "first storage number", "last storage number", "size of storage block",
                              "descriptor for tariff and subunit")):
        t[0x08 + n] = (name, "", 1, 0)
    t[0x1C] = ("baud rate", "Bd", 1, 0)
    t[0x1D] = ("response delay time", "bit times", 1, 0)
    t[0x28] = ("storage interval", "month", 1, 0)
    t[0x29] = ("storage interval", "year", 1, 0)
    t[0x2A] = ("operator specific data", "", 1, 0)
    t[0x2B] = ("time point second", "s", 1, 0)
    t[0x30] = ("start of tariff", "", 1, 0)
    t[0x38] = ("period of tariff", "month", 1, 0)
    t[0x39] = ("period of tariff", "year", 1, 0)
    t[0x3A] = ("dimensionless", "", 1, 0)
    t[0x3B] = ("data container", "", 1, 0)
    for n in range(16):
        t[0x40 + n] = ("voltage", "V", 1, n - 9)
        t[0x50 + n] = ("current", "A", 1, n - 12)
    for n, name in enumerate(("reset counter", "cumulation counter", "control signal", "day of week",
                              "week number", "time point of day change", "state of parameter activation",
                              "special supplier information")):
        t[0x60 + n] = (name, "", 1, 0)
    for n, unit in enumerate(("h", "d", "month", "year")):
        mult = (3600, 86400, 1, 1)[n]
        t[0x68 + n] = ("duration since last cumulation", "s" if n < 2 else unit, mult, 0)
        t[0x6C + n] = ("operating time battery", "s" if n < 2 else unit, mult, 0)
    t[0x70] = ("date and time of battery change", "", 1, 0)
    t[0x71] = ("RF level", "dBm", 1, 0)
    t[0x72] = ("daylight saving", "", 1, 0)
    t[0x73] = ("listening window management", "", 1, 0)
    t[0x74] = ("remaining battery life time", "s", 86400, 0)
    t[0x75] = ("times the meter was stopped", "", 1, 0)
    t[0x76] = ("manufacturer data container", "", 1, 0)
    return t


def _fb_table() -> dict[int, _Entry]:
    t: dict[int, _Entry] = {}
    for n in range(2):
        t[0x00 + n] = ("energy", "Wh", 1, n + 5)          # 0.1 / 1 MWh
        t[0x02 + n] = ("reactive energy", "varh", 1, n + 2)
        t[0x08 + n] = ("energy", "J", 1, n + 8)           # 0.1 / 1 GJ
        t[0x10 + n] = ("volume", "m³", 1, n + 2)
        t[0x18 + n] = ("mass", "kg", 1, n + 5)            # 100 / 1000 t
        t[0x28 + n] = ("power", "W", 1, n + 5)            # 0.1 / 1 MW
        t[0x30 + n] = ("power", "J/h", 1, n + 8)          # 0.1 / 1 GJ/h
    t[0x21] = ("volume", "ft³", 1, -1)
    t[0x22] = ("volume", "US gal", 1, -1)
    t[0x23] = ("volume", "US gal", 1, 0)
    t[0x24] = ("volume flow", "US gal/min", 1, -3)
    t[0x25] = ("volume flow", "US gal/min", 1, 0)
    t[0x26] = ("volume flow", "US gal/h", 1, 0)
    for n in range(4):
        t[0x58 + n] = ("flow temperature", "°F", 1, n - 3)
        t[0x5C + n] = ("return temperature", "°F", 1, n - 3)
        t[0x60 + n] = ("temperature difference", "°F", 1, n - 3)
        t[0x64 + n] = ("external temperature", "°F", 1, n - 3)
        t[0x70 + n] = ("cold/warm temperature limit", "°F", 1, n - 3)
        t[0x74 + n] = ("cold/warm temperature limit", "°C", 1, n - 3)
    for n in range(8):
        t[0x78 + n] = ("cumulative count max power", "W", 1, n - 3)
    return t


PRIMARY: dict[int, _Entry] = _primary_table()
EXT_FD: dict[int, _Entry] = _fd_table()
EXT_FB: dict[int, _Entry] = _fb_table()

# VIFs whose 4-byte (or 2-byte) integers are dates, not numbers.
_DATE_VIFS = {0x6C, 0x6D}
_DATE_FD = {0x30, 0x70}

# Data length by DIF data field; None = variable (LVAR), -1 = not a data field (special functions).
_DATA_LEN = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, -1)
_BCD_FIELDS = {0x9, 0xA, 0xB, 0xC, 0xE}

_I16 = struct.Struct("<h")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F32 = struct.Struct("<f")
_U16 = struct.Struct("<H")


def _scale(raw: int | float, mult: int, exp: int) -> int | float:
    if exp >= 0:
        return raw * mult * 10 ** exp
    # Division by an exact power of ten rounds once; multiplying by 1e-3 would round twice.
    return raw * mult / 10 ** -exp


def _int_le(b: bytes) -> int:
    return int.from_bytes(b, "little", signed=True)


def _bcd(b: bytes) -> tuple[int | None, str | None]:
    """Little-endian BCD; an F in the top digit is a minus sign (EN 13757-3 annex B); other digits above 9
    are error codes, so no number is made from them."""
    digits = b[::-1].hex()
    if digits.isdigit():
        return int(digits), None
    if not digits:  # a variable-length BCD record of length 0 (LVAR 0xD0) carries no number
        return None, "empty BCD value"
    digits = digits.upper()
    negative = digits[0] == "F"
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        return None, f"BCD value with error digits {b[::-1].hex().upper()}"
    value = int(digits) if digits else 0
    return (-value if negative else value), None


def _date_g(b: bytes) -> DateTime:
    day, month = b[0] & 0x1F, b[1] & 0x0F
    yy = ((b[0] & 0xE0) >> 5) | ((b[1] & 0xF0) >> 1)
    return DateTime(_full_year(yy), month, day, invalid=yy > 99)


def _date_f(b: bytes) -> DateTime:
    minute, hour, day, month = b[0] & 0x3F, b[1] & 0x1F, b[2] & 0x1F, b[3] & 0x0F
    yy = ((b[2] & 0xE0) >> 5) | ((b[3] & 0xF0) >> 1)
    return DateTime(_full_year(yy), month, day, hour, minute, 0, bool(b[0] & 0x80) or yy > 99, bool(b[1] & 0x80))


def _date_i(b: bytes) -> DateTime:
    second, minute, hour, day, month = b[0] & 0x3F, b[1] & 0x3F, b[2] & 0x1F, b[3] & 0x1F, b[4] & 0x0F
    yy = ((b[3] & 0xE0) >> 5) | ((b[4] & 0xF0) >> 1)
    return DateTime(_full_year(yy), month, day, hour, minute, second, bool(b[1] & 0x80) or yy > 99,
                    bool(b[2] & 0x80))


def _full_year(yy: int) -> int:
    # Two-digit years: the M-Bus convention (and libmbus') puts 81..99 in the 1900s.
    return 1900 + yy if 81 <= yy <= 99 else 2000 + yy


def _fail(problem: str, message: str, frame: bytes) -> MbusFrameError:
    cls = MbusTruncated if problem.startswith("premature_end") else MbusFrameError
    return cls(problem, message, frame)


def _parse_header(ci: int, data: bytes, frame: bytes) -> tuple[Header, int]:
    if ci in (0x72, 0x76):
        if len(data) < 12:
            raise _fail("too_short_header", f"CI 0x{ci:02X} needs a 12-byte header, got {len(data)} bytes",
                        frame)
        ident = data[3::-1].hex().upper()
        mfr = _U16.unpack_from(data, 4)[0]
        return Header(ident, decode_manufacturer(mfr), mfr, data[6], data[7], data[8], data[9],
                      _U16.unpack_from(data, 10)[0]), 12
    if ci == 0x7A:
        if len(data) < 4:
            raise _fail("too_short_header", f"CI 0x7A needs a 4-byte header, got {len(data)} bytes", frame)
        return Header(access_no=data[0], status=data[1], signature=_U16.unpack_from(data, 2)[0]), 4
    return Header(), 0


def decode_telegram(frame: Frame | bytes | bytearray | memoryview) -> Telegram:
    """Decode an RSP_UD: a :class:`Frame` or the raw frame bytes. Raises :class:`MbusFrameError`."""
    if isinstance(frame, Frame):
        raw = frame.encode()
    else:
        raw = bytes(frame)
        frame = decode_frame(raw)
    if frame.ci is None:
        raise MbusFrameError("unexpected_frame", f"expected a long frame (RSP_UD), got a {frame.kind} frame",
                             raw)
    ci, data = frame.ci, frame.data
    if ci == 0x70:
        raise MbusApplicationError(data[0] if data else None, raw)
    if ci in (0x73, 0x77):
        return _decode_fixed(frame, raw)
    if ci not in (0x72, 0x76, 0x78, 0x7A):
        raise MbusFrameError("unimplemented_ci", f"CI field 0x{ci:02X} is not a variable or fixed data "
                             "response", raw)
    if ci == 0x76:
        raise MbusFrameError("unimplemented_ci", "CI 0x76 (data records most significant byte first) is not "
                             "supported", raw)
    header, pos = _parse_header(ci, data, raw)
    records, tail, mfr = _parse_records(data, pos, raw)
    return Telegram(frame.a, ci, header, records, tail == 0x1F, mfr, False, tail)


def _parse_records(data: bytes, pos: int, raw: bytes) -> tuple[tuple[Record, ...], int | None, bytes]:
    n = len(data)
    out: list[Record] = []
    append = out.append
    record_info = _record_info
    data = bytes(data)
    while pos < n:
        start = pos
        dif = data[pos]
        pos += 1
        if dif == 0x2F:          # idle filler
            continue
        if dif == 0x0F or dif == 0x1F:
            return tuple(out), dif, bytes(data[pos:])
        field = dif & 0x0F
        if field == 0x0F:
            raise MbusFrameError("reserved_dif", f"reserved special-function DIF 0x{dif:02X} at offset {start}",
                                 raw)
        ndife = 0
        ext = dif & 0x80
        while ext:
            if pos >= n:
                last = data[pos - 1]
                raise _fail("premature_end_of_dif", f"record at offset {start}: "
                            f"{'DIFE' if ndife else 'DIF'} 0x{last:02X} announces another DIFE, "
                            "but the data ends", raw)
            if ndife == MAX_DIFE:
                raise _fail("too_many_dife", f"record at offset {start}: more than {MAX_DIFE} DIFEs", raw)
            ext = data[pos] & 0x80
            pos += 1
            ndife += 1
        if pos >= n:
            raise _fail("premature_end_of_vif", f"record at offset {start}: no VIF after the DIF", raw)
        vif = data[pos]
        pos += 1
        if vif & 0x7F == 0x7C:
            if pos >= n:
                raise _fail("premature_end_of_var_vif", f"record at offset {start}: plain-text VIF without "
                            "its length byte", raw)
            tlen = data[pos]
            pos += 1
            if tlen > n - pos:
                problem = "too_long_var_vif" if tlen > 0x7F else "premature_end_of_var_vif"
                raise _fail(problem, f"record at offset {start}: plain-text VIF of {tlen} characters, only "
                            f"{n - pos} bytes left", raw)
            pos += tlen
        nvife = 0
        ext = vif & 0x80
        while ext:
            if pos >= n:
                raise _fail("premature_end_of_vif", f"record at offset {start}: VIF 0x{vif:02X} announces a "
                            "VIFE, but the data ends", raw)
            if nvife == MAX_VIFE:
                raise _fail("too_many_vife", f"record at offset {start}: more than {MAX_VIFE} VIFEs", raw)
            ext = data[pos] & 0x80
            pos += 1
            nvife += 1
        info = record_info(data[start:pos])
        kind = info.kind
        if kind <= _K_BCD and pos + info.length <= n:
            # the common cases inline: a fixed-size binary integer or BCD number
            end = pos + info.length
            payload = data[pos:end]
            pos = end
            error = None
            if kind == _K_INT:
                value: Value = int.from_bytes(payload, "little", signed=True)
            else:
                digits = payload[::-1].hex()
                if digits.isdigit():
                    value = int(digits)
                else:
                    value, error = _bcd(payload)
            if value is not None and info.known:
                if info.scaled:
                    exp = info.exp
                    value = value * info.mult * 10 ** exp if exp >= 0 else value * info.mult / 10 ** -exp
                if info.offset is not None:
                    value = value + info.offset
            append(Record(info, value, payload, error))
            continue
        length = _DATA_LEN[field]
        lvar: int | None = None
        if length is None:
            if pos >= n:
                raise _fail("premature_end_of_data", f"record at offset {start}: no LVAR byte", raw)
            lvar = data[pos]
            pos += 1
            length = _lvar_length(lvar, start, raw)
        if pos + length > n:
            raise _fail("premature_end_of_data", f"record at offset {start}: {length} data bytes expected, "
                        f"{n - pos} left", raw)
        payload = data[pos:pos + length]
        pos += length
        append(_make_record(info, payload, lvar))
    return tuple(out), None, b""


def _lvar_length(lvar: int, start: int, raw: bytes) -> int:
    if lvar <= 0xBF:
        return lvar                      # 8-bit text
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        return lvar & 0x0F               # BCD bytes, positive / negative
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0               # binary number
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)         # binary, 16..64 bytes
    if lvar == 0xF5:
        return 48
    if lvar == 0xF6:
        return 64
    raise MbusFrameError("reserved_lvar", f"record at offset {start}: reserved LVAR 0x{lvar:02X}", raw)


_K_INT, _K_BCD, _K_REAL, _K_NONE, _K_DATE_F, _K_DATE_G, _K_DATE_I, _K_TIME_J, _K_LVAR = range(9)


@functools.lru_cache(maxsize=4096)
def _record_info(head: bytes) -> RecordInfo:
    """Meaning of one record header (DIF, DIFEs, VIF, plain text, VIFEs), already validated by the caller.
    Cached: a meter sends the same headers in every telegram (a bounded memo of a pure function)."""
    dif = head[0]
    pos = 1
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    difes: list[int] = []
    ext = dif & 0x80
    while ext:
        dife = head[pos]
        pos += 1
        shift = len(difes)
        storage |= (dife & 0x0F) << (1 + 4 * shift)
        tariff |= ((dife >> 4) & 0x03) << (2 * shift)
        subunit |= ((dife >> 6) & 0x01) << shift
        difes.append(dife)
        ext = dife & 0x80
    vif = head[pos]
    pos += 1
    text_vif: str | None = None
    code = vif & 0x7F
    if code == 0x7C:
        tlen = head[pos]
        text_vif = head[pos + 1:pos + 1 + tlen][::-1].decode("latin-1")
        pos += 1 + tlen
    vifes = tuple(head[pos:])
    field = dif & 0x0F
    function = _FUNCTIONS[(dif >> 4) & 0x03]
    rest = vifes
    entry: _Entry | None
    table_code: int | None = None
    if vif == 0xFD or vif == 0xFB:
        if not vifes:
            entry = None
        else:
            table_code = vifes[0] & 0x7F
            entry = (EXT_FD if vif == 0xFD else EXT_FB).get(table_code)
            rest = vifes[1:]
    elif code == 0x7C:
        entry = ("plain text", text_vif or "", 1, 0)
    else:
        entry = PRIMARY.get(code)
    manufacturer_vif = code == 0x7F
    # Combinable (orthogonal) VIFEs: scale corrections are applied; anything else changes the meaning of
    # the number (per hour, limit value, error state...), which the driver must not map to a plain channel.
    mult_exp = 0
    offset_exp: int | None = None
    modifiers: list[int] = []
    if not manufacturer_vif:
        for v in rest:
            c = v & 0x7F
            if 0x70 <= c <= 0x77:
                mult_exp += (c & 0x07) - 6
            elif 0x78 <= c <= 0x7B:
                offset_exp = (c & 0x03) - 3
            elif c == 0x7D:
                mult_exp += 3
            elif c == 0x7F:
                break            # manufacturer-specific VIFEs follow
            else:
                modifiers.append(c)
    is_date = (code in _DATE_VIFS and vif not in (0xFD, 0xFB)) or (vif == 0xFD and table_code in _DATE_FD)
    if field == 0x00 or field == 0x08:
        kind = _K_NONE
    elif is_date and field in (0x2, 0x3, 0x4, 0x6):
        kind = (_K_DATE_G, _K_TIME_J, _K_DATE_F, _K_DATE_I)[(0x2, 0x3, 0x4, 0x6).index(field)]
    elif field == 0x5:
        kind = _K_REAL
    elif field in _BCD_FIELDS:
        kind = _K_BCD
    elif field == 0x0D:
        kind = _K_LVAR
    else:
        kind = _K_INT
    length = _DATA_LEN[field] or 0
    if entry is None:
        # Unknown VIF: keep the raw number, unscaled, so nothing pretends to a unit it does not have.
        quantity = f"unknown VIF {''.join(f'{b:02X}' for b in (vif, *vifes))}"
        return RecordInfo(dif, tuple(difes), vif, vifes, storage, tariff, subunit, function, quantity, "", False,
                          tuple(modifiers), text_vif, kind, length=length)
    quantity, unit, mult, exp = entry
    if manufacturer_vif:
        mult, exp, offset = 1, 0, None
    else:
        exp += mult_exp
        offset = _scale(1, mult, entry[3] + offset_exp) if offset_exp is not None else None
    return RecordInfo(dif, tuple(difes), vif, vifes, storage, tariff, subunit, function, quantity, unit, True,
                      tuple(modifiers), text_vif, kind, mult, exp, offset, length, mult != 1 or exp != 0)


def _make_record(info: RecordInfo, payload: bytes, lvar: int | None) -> Record:
    kind = info.kind
    value: Value
    error: str | None = None
    if kind == _K_INT:
        value = int.from_bytes(payload, "little", signed=True)
    elif kind == _K_BCD:
        value, error = _bcd(payload)
    elif kind == _K_REAL:
        value = f32_decimal(_F32.unpack(payload)[0])  # 21.5, not 21.5000000001 widened to double
    elif kind == _K_NONE:
        return Record(info, None, payload)
    elif kind == _K_DATE_F:
        return Record(info, _date_f(payload), payload)
    elif kind == _K_DATE_G:
        return Record(info, _date_g(payload), payload)
    elif kind == _K_DATE_I:
        return Record(info, _date_i(payload), payload)
    elif kind == _K_TIME_J:
        return Record(info, TimeOfDay(payload[2] & 0x1F, payload[1] & 0x3F, payload[0] & 0x3F), payload)
    else:  # lvar
        assert lvar is not None
        if lvar <= 0xBF:
            return Record(info, payload[::-1].decode("latin-1"), payload)
        if lvar >= 0xE0:
            return Record(info, payload[::-1], payload)   # binary, shown most significant byte first
        value, error = _bcd(payload)
        if value is not None and lvar >= 0xD0:
            value = -value
    if value is not None and info.known:
        mult, exp = info.mult, info.exp
        if info.scaled:
            value = value * mult * 10 ** exp if exp >= 0 else value * mult / 10 ** -exp
        if info.offset is not None:
            value = value + info.offset
    return Record(info, value, payload, error)


# -- fixed data structure (CI 73) -----------------------------------------------------------------------------

# 6-bit unit codes of the fixed structure -> (quantity, unit, exponent)
def _fixed_units() -> dict[int, tuple[str, str, int]]:
    t: dict[int, tuple[str, str, int]] = {}
    for n in range(9):
        t[0x02 + n] = ("energy", "Wh", n)            # Wh .. 100 MWh
        t[0x0B + n] = ("energy", "J", 3 + n)         # kJ .. 100 GJ
        t[0x14 + n] = ("power", "W", n)              # W .. 100 MW
        t[0x1D + n] = ("power", "J/h", 3 + n)        # kJ/h .. 100 GJ/h
        t[0x26 + n] = ("volume", "m³", n - 6)        # ml .. 100 m³
        t[0x2F + n] = ("volume flow", "m³/h", n - 6)  # ml/h .. 100 m³/h
    t[0x38] = ("temperature", "°C", -3)
    t[0x39] = ("units for H.C.A.", "", 0)
    t[0x3E] = ("same but historic", "", 0)
    t[0x3F] = ("without units", "", 0)
    return t


FIXED_UNITS = _fixed_units()


def _decode_fixed(frame: Frame, raw: bytes) -> Telegram:
    data = frame.data
    if len(data) != 16:
        raise MbusFrameError("invalid_length", f"a fixed data structure has 16 bytes after the CI, got "
                             f"{len(data)}", raw)
    if frame.ci == 0x77:
        raise MbusFrameError("unimplemented_ci", "CI 0x77 (fixed structure, MSB first) is not supported", raw)
    ident = data[3::-1].hex().upper()
    access, status, t1, t2 = data[4], data[5], data[6], data[7]
    medium = ((t1 & 0xC0) >> 6) | ((t2 & 0xC0) >> 4)
    bcd = not status & 0x80
    records = []
    for i, (tbyte, chunk) in enumerate(((t1, data[8:12]), (t2, data[12:16]))):
        ucode = tbyte & 0x3F
        error = None
        if bcd:
            value, error = _bcd(bytes(chunk))
            value_n: int | float | None = value
        else:
            value_n = int.from_bytes(chunk, "little")
        entry = FIXED_UNITS.get(ucode)
        # Counter 2 holds a stored (historic) value when status bit 6 says so.
        function = Function.INSTANT
        storage = 1 if (i == 1 and status & 0x40) else 0
        if entry is None or not entry[1]:
            quantity = entry[0] if entry else f"unknown fixed unit {ucode:02X}"
            info = RecordInfo(0, (), None, (), storage, 0, 0, function, quantity, "", entry is not None)
            records.append(Record(info, value_n, bytes(chunk), error))
            continue
        quantity, unit, exp = entry
        scaled = _scale(value_n, 1, exp) if value_n is not None else None
        info = RecordInfo(0, (), None, (), storage, 0, 0, function, quantity, unit, True)
        records.append(Record(info, scaled, bytes(chunk), error))
    header = Header(ident, None, None, None, medium, access, status, None)
    return Telegram(frame.a, frame.ci or 0x73, header, tuple(records), False, b"", True)


# -- encoders (the simulator's side) --------------------------------------------------------------------------


def encode_header(ident: str, manufacturer: str, version: int, medium: int, access_no: int, status: int = 0,
                  signature: int = 0) -> bytes:
    return (bytes.fromhex(f"{int(ident):08d}")[::-1] + encode_manufacturer(manufacturer).to_bytes(2, "little")
            + bytes((version, medium, access_no, status)) + signature.to_bytes(2, "little"))


def encode_bcd(value: int, nbytes: int) -> bytes:
    digits = f"{abs(value):0{2 * nbytes}d}"
    if len(digits) > 2 * nbytes or (value < 0 and digits[0] != "0"):
        raise ValueError(f"{value} does not fit {nbytes} BCD bytes")
    if value < 0:
        digits = "F" + digits[1:]
    return bytes.fromhex(digits)[::-1]


def encode_date_g(d: _dt.date) -> bytes:
    yy = d.year % 100
    return bytes((d.day | ((yy & 0x07) << 5), d.month | ((yy & 0x78) << 1)))


def encode_date_f(t: _dt.datetime) -> bytes:
    yy = t.year % 100
    return bytes((t.minute, t.hour, t.day | ((yy & 0x07) << 5), t.month | ((yy & 0x78) << 1)))


def encode_record(dif: int, vif: int | bytes, data: bytes, difes: bytes = b"") -> bytes:
    vifb = bytes((vif,)) if isinstance(vif, int) else vif
    return bytes((dif,)) + difes + vifb + data


def storage_dib(field: int, storage: int = 0, tariff: int = 0, subunit: int = 0, function: int = 0) -> bytes:
    """DIF (+DIFEs) for a data field with the given storage number, tariff and subunit."""
    dif = field | (function << 4) | ((storage & 1) << 6)
    storage >>= 1
    difes = []
    while storage or tariff or subunit:
        difes.append((storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 1) << 6))
        storage, tariff, subunit = storage >> 4, tariff >> 2, subunit >> 1
    for i in range(len(difes) - 1):
        difes[i] |= 0x80
    if difes:
        dif |= 0x80
    return bytes((dif, *difes))
