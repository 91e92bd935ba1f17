"""A-XDR data (IEC 62056-6-2 "Data" CHOICE) as COSEM attributes carry it: sans-I/O decode and encode.

Decoding gives plain Python values, cheap to build and to use::

    null -> None, boolean -> bool, integers and enum -> int, float32/float64 -> float (a float32 as its
    shortest decimal, see floats.f32_decimal), octet-string -> bytes, visible/utf8-string -> str,
    bit-string -> BitString, array -> list, structure -> tuple, date-time/date/time (tags 25-27) -> CosemDateTime.

COSEM date-times usually travel as a 12-byte octet-string (the clock, profile capture columns); the
column's meaning, not the tag, says it is one: :meth:`CosemDateTime.parse` converts.

Encoding takes the same natives, except that an integer must say its type: ``Int(tag, value)`` (helpers
:func:`u8`, :func:`u16`, ...), because A-XDR has eight integer widths and the wire does not forgive a wrong one.
"""

from __future__ import annotations

import functools
import operator
import struct
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from pollerd.protocols.floats import f32_decimal

from .errors import DataError

__all__ = [
    "ARRAY", "BitString", "CosemDateTime", "DATE_TIME", "Int", "OCTET_STRING", "STRUCTURE", "decode", "decode_at",
    "encode", "encode_length", "enum", "f32", "i8", "i16", "i32", "i64", "read_length", "u8", "u16", "u32", "u64",
]

NULL, ARRAY, STRUCTURE, BOOLEAN, BIT_STRING = 0, 1, 2, 3, 4
DOUBLE_LONG, DOUBLE_LONG_UNSIGNED, OCTET_STRING, VISIBLE_STRING, UTF8_STRING = 5, 6, 9, 10, 12
BCD, INTEGER, LONG, UNSIGNED, LONG_UNSIGNED, COMPACT_ARRAY = 13, 15, 16, 17, 18, 19
LONG64, LONG64_UNSIGNED, ENUM, FLOAT32, FLOAT64, DATE_TIME, DATE, TIME = 20, 21, 22, 23, 24, 25, 26, 27
DONT_CARE = 255

TAG_NAMES = {
    NULL: "null-data", ARRAY: "array", STRUCTURE: "structure", BOOLEAN: "boolean", BIT_STRING: "bit-string",
    DOUBLE_LONG: "double-long", DOUBLE_LONG_UNSIGNED: "double-long-unsigned", OCTET_STRING: "octet-string",
    VISIBLE_STRING: "visible-string", UTF8_STRING: "utf8-string", BCD: "bcd", INTEGER: "integer", LONG: "long",
    UNSIGNED: "unsigned", LONG_UNSIGNED: "long-unsigned", COMPACT_ARRAY: "compact-array", LONG64: "long64",
    LONG64_UNSIGNED: "long64-unsigned", ENUM: "enum", FLOAT32: "float32", FLOAT64: "float64",
    DATE_TIME: "date-time", DATE: "date", TIME: "time", DONT_CARE: "dont-care",
}

_INTS: dict[int, struct.Struct] = {
    DOUBLE_LONG: struct.Struct(">i"), DOUBLE_LONG_UNSIGNED: struct.Struct(">I"), BCD: struct.Struct(">b"),
    INTEGER: struct.Struct(">b"), LONG: struct.Struct(">h"), UNSIGNED: struct.Struct(">B"),
    LONG_UNSIGNED: struct.Struct(">H"), LONG64: struct.Struct(">q"), LONG64_UNSIGNED: struct.Struct(">Q"),
    ENUM: struct.Struct(">B"),
}
INT_STRUCTS = _INTS          # for decoders that inline the common case (xdlms' GET-with-list results)
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_DT = struct.Struct(">HBBBBBBBhB")
# Nesting deeper than this is no COSEM attribute: it is a crafted or corrupted frame.
MAX_DEPTH = 16


# ---------------------------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class Int:
    """An integer with its A-XDR type, for encoding."""

    tag: int
    value: int


def u8(v: int) -> Int:
    return Int(UNSIGNED, v)


def u16(v: int) -> Int:
    return Int(LONG_UNSIGNED, v)


def u32(v: int) -> Int:
    return Int(DOUBLE_LONG_UNSIGNED, v)


def u64(v: int) -> Int:
    return Int(LONG64_UNSIGNED, v)


def i8(v: int) -> Int:
    return Int(INTEGER, v)


def i16(v: int) -> Int:
    return Int(LONG, v)


def i32(v: int) -> Int:
    return Int(DOUBLE_LONG, v)


def i64(v: int) -> Int:
    return Int(LONG64, v)


def enum(v: int) -> Int:
    return Int(ENUM, v)


@dataclass(frozen=True, slots=True)
class F32:
    """A float sent as float32 (a plain ``float`` is encoded as float64)."""

    value: float


def f32(v: float) -> F32:
    return F32(v)


@dataclass(frozen=True, slots=True)
class BitString:
    """``bits`` as '0'/'1' characters, first bit first (the most significant bit of the first byte)."""

    bits: str

    def encode_body(self) -> bytes:
        n = len(self.bits)
        padded = self.bits + "0" * (-n % 8)
        return bytes(int(padded[i:i + 8], 2) for i in range(0, len(padded), 8))


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    """COSEM date-time (12 bytes). Unspecified fields are None (0xFF / 0xFFFF on the wire); ``deviation`` is
    minutes as the meter sent them (None for 0x8000), ``status`` the clock-status bits (None for 0xFF)."""

    year: int | None
    month: int | None
    day: int | None
    dow: int | None = None
    hour: int | None = 0
    minute: int | None = 0
    second: int | None = 0
    hundredths: int | None = None
    deviation: int | None = None
    status: int | None = None

    @classmethod
    def parse(cls, raw: bytes) -> CosemDateTime:
        if len(raw) != 12:
            raise DataError(f"date-time of {len(raw)} bytes (12 expected)", raw)
        y, mo, d, dow, h, mi, s, hs, dev, st = _DT.unpack(raw)

        def f(v: int) -> int | None:
            return None if v == 0xFF else v
        return cls(None if y == 0xFFFF else y, f(mo), f(d), f(dow), f(h), f(mi), f(s), f(hs),
                   None if dev == -0x8000 else dev, f(st))

    def encode_body(self) -> bytes:
        def f(v: int | None) -> int:
            return 0xFF if v is None else v
        return _DT.pack(0xFFFF if self.year is None else self.year, f(self.month), f(self.day), f(self.dow),
                        f(self.hour), f(self.minute), f(self.second), f(self.hundredths),
                        -0x8000 if self.deviation is None else self.deviation, f(self.status))

    @classmethod
    def from_datetime(cls, dt: datetime, deviation: int | None = None, status: int | None = 0) -> CosemDateTime:
        return cls(dt.year, dt.month, dt.day, dt.isoweekday(), dt.hour, dt.minute, dt.second,
                   dt.microsecond // 10000, deviation, status)

    @staticmethod
    def unix_of(raw: bytes, tz: tzinfo) -> int | None:
        """UTC unix seconds of a 12-byte date-time read in ``tz``, without building the dataclass (profile
        rows carry one each); None when not a 12-byte date-time with a full date and time."""
        if len(raw) != 12:
            return None
        y, mo, d, _, h, mi, s, _, _, _ = _DT.unpack(raw)
        if s == 0xFF:
            s = 0
        if mi > 59 or s > 59:
            return None
        base = _hour_start(y, mo, d, h, tz)
        return None if base is None else base + mi * 60 + s

    def wall(self) -> datetime | None:
        """The naive wall-clock time, or None when a field it needs is unspecified (a wildcard)."""
        y, mo, d, h, mi = self.year, self.month, self.day, self.hour, self.minute
        if y is None or mo is None or d is None or h is None or mi is None:
            return None
        try:
            return datetime(y, mo, d, h, mi, self.second or 0, (self.hundredths or 0) * 10000)
        except ValueError:
            return None

    def to_unix(self, tz: tzinfo) -> int | None:
        """UTC unix seconds of the wall time read in ``tz`` (the meter's configured zone). The deviation
        field is not used for this: its sign convention differs between meter firmwares (FACTS.md: Kaifa
        sends -60 in September), while the configured zone is the operator's statement."""
        wall = self.wall()
        if wall is None:
            return None
        return int(wall.replace(tzinfo=tz).timestamp())

    def __str__(self) -> str:
        wall = self.wall()
        text = wall.isoformat() if wall else "unspecified"
        dev = "unspecified" if self.deviation is None else str(self.deviation)
        st = "unspecified" if self.status is None else f"0x{self.status:02X}"
        return f"{text} deviation={dev} status={st}"


@functools.lru_cache(maxsize=4096)
def _hour_start(y: int, mo: int, d: int, h: int, tz: tzinfo) -> int | None:
    """Unix seconds of local hour ``h`` of a day in ``tz``: profile rows share their hours, and minutes and
    seconds add on as long as the zone's offset does not change inside an hour. DST changes happen on the hour
    (tested across them in five zones, Lord Howe's 30-minute shift included); a historic mid-hour change of
    some zone would be off within that one hour."""
    try:
        return int(datetime(y, mo, d, h, tzinfo=tz).timestamp())
    except (ValueError, OverflowError):      # a wildcard (0xFF/0xFFFF) or an impossible date
        return None


# ------------------------------------------------------------------------------------------------- lengths


def read_length(mv: memoryview | bytes, i: int) -> tuple[int, int]:
    """A-XDR/BER length at ``i``: (length, index after it)."""
    try:
        n = mv[i]
        if n < 0x80:
            return n, i + 1
        k = n & 0x7F
        if k == 0 or k > 4 or i + 1 + k > len(mv):
            raise DataError(f"length field 0x{n:02X} is not a usable length", bytes(mv[i:i + 1 + k]))
        return int.from_bytes(mv[i + 1:i + 1 + k], "big"), i + 1 + k
    except IndexError:
        raise DataError("data ends inside a length field", bytes(mv)) from None


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


# ------------------------------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview) -> Any:
    """One Data value that must fill ``data`` exactly."""
    # Indexing bytes is cheaper than indexing a memoryview, and one copy of an APDU costs less than that.
    mv = data if isinstance(data, bytes) else bytes(data)
    value, end = decode_at(mv, 0)
    if end != len(mv):
        raise DataError(f"{len(mv) - end} bytes after the data value", mv)
    return value


def decode_at(mv: memoryview | bytes, i: int, depth: int = 0) -> tuple[Any, int]:
    """The Data value at ``i``: (value, index after it). Raises DataError with the bytes as hex."""
    try:
        return _decode(mv, i, depth)
    except (IndexError, struct.error):
        raise DataError(f"data truncated (value at offset {i})", bytes(mv)) from None


def _decode(mv: memoryview | bytes, i: int, depth: int) -> tuple[Any, int]:
    tag = mv[i]
    i += 1
    st = _INTS.get(tag)
    if st is not None:
        return st.unpack_from(mv, i)[0], i + st.size
    if tag in (STRUCTURE, ARRAY):
        if depth >= MAX_DEPTH:
            raise DataError(f"data nested deeper than {MAX_DEPTH} levels", bytes(mv))
        n, i = read_length(mv, i)
        if n > len(mv) - i:
            raise DataError(f"{TAG_NAMES[tag]} of {n} elements in {len(mv) - i} bytes", bytes(mv))
        if tag == ARRAY and n >= 4 and mv[i] == STRUCTURE:
            rows = _uniform_rows(mv, i, n)
            if rows is not None:
                return rows
        items: list[Any] = []
        append = items.append
        ints = _INTS
        size = len(mv)
        for _ in range(n):
            # Profile rows are structures of integers and short octet strings: decode those here, without
            # a call per value (the decode of a 48-entry profile is mostly this loop).
            t = mv[i]
            st = ints.get(t)
            if st is not None:
                append(st.unpack_from(mv, i + 1)[0])
                i += 1 + st.size
            elif t == OCTET_STRING and mv[i + 1] < 0x80:
                end = i + 2 + mv[i + 1]
                if end > size:
                    raise DataError(f"octet-string of {mv[i + 1]} bytes, {size - i - 2} left", bytes(mv))
                append(bytes(mv[i + 2:end]))
                i = end
            else:
                v, i = _decode(mv, i, depth + 1)
                append(v)
        return (tuple(items) if tag == STRUCTURE else items), i
    if tag in (OCTET_STRING, VISIBLE_STRING, UTF8_STRING):
        n, i = read_length(mv, i)
        end = i + n
        if end > len(mv):
            raise DataError(f"{TAG_NAMES[tag]} of {n} bytes, {len(mv) - i} left", bytes(mv))
        raw = bytes(mv[i:end])
        if tag == OCTET_STRING:
            return raw, end
        try:
            return raw.decode("utf-8" if tag == UTF8_STRING else "latin-1"), end
        except UnicodeDecodeError:
            raise DataError("utf8-string that is not UTF-8", raw) from None
    if tag == NULL:
        return None, i
    if tag == BOOLEAN:
        return mv[i] != 0, i + 1
    if tag == FLOAT32:
        return f32_decimal(_F32.unpack_from(mv, i)[0]), i + 4
    if tag == FLOAT64:
        return _F64.unpack_from(mv, i)[0], i + 8
    if tag == BIT_STRING:
        n, i = read_length(mv, i)
        nbytes = (n + 7) // 8
        if i + nbytes > len(mv):
            raise DataError(f"bit-string of {n} bits truncated", bytes(mv))
        bits = "".join(f"{b:08b}" for b in mv[i:i + nbytes])[:n]
        return BitString(bits), i + nbytes
    if tag == DATE_TIME:
        if i + 12 > len(mv):
            raise DataError("date-time truncated", bytes(mv))
        return CosemDateTime.parse(bytes(mv[i:i + 12])), i + 12
    if tag == DATE:
        y, mo, d, dow = struct.unpack_from(">HBBB", mv, i)
        return CosemDateTime(None if y == 0xFFFF else y, _ff(mo), _ff(d), _ff(dow), None, None, None), i + 5
    if tag == TIME:
        h, mi, s, hs = struct.unpack_from(">BBBB", mv, i)
        return CosemDateTime(None, None, None, None, _ff(h), _ff(mi), _ff(s), _ff(hs)), i + 4
    if tag == DONT_CARE:
        return None, i
    name = TAG_NAMES.get(tag, "unknown")
    raise DataError(f"A-XDR tag {tag} ({name}) not supported", bytes(mv[i - 1:i + 16]))


def _row_layout(mv: memoryview | bytes, i: int) -> tuple[struct.Struct, Any, Any, tuple[int, ...]] | None:
    """The fixed layout of the structure at ``i`` when it holds only integers and short octet strings:
    (one Struct for the whole row, a getter of its tag/length fields, a getter of its values, the tag/length
    values every row must repeat). None for anything else (nested data, floats, long strings)."""
    k = mv[i + 1]
    if k >= 0x80 or k < 2:                  # (one value: itemgetter would give it bare, not as a 1-tuple)
        return None
    fmt = ">BB"
    checks = [0, 1]
    expect = [STRUCTURE, k]
    values = []
    j = i + 2
    pos = 2
    for _ in range(k):
        t = mv[j]
        st = _INTS.get(t)
        if st is not None:
            fmt += "B" + st.format[1:]
            checks.append(pos)
            expect.append(t)
            values.append(pos + 1)
            pos += 2
            j += 1 + st.size
        elif t == OCTET_STRING and mv[j + 1] < 0x80:
            ln = mv[j + 1]
            fmt += f"BB{ln}s"
            checks += [pos, pos + 1]
            expect += [t, ln]
            values.append(pos + 2)
            pos += 3
            j += 2 + ln
        else:
            return None
    return (struct.Struct(fmt), operator.itemgetter(*checks), operator.itemgetter(*values), tuple(expect))


def _uniform_rows(mv: memoryview | bytes, i: int, n: int) -> tuple[list[Any], int] | None:
    """An array of ``n`` structures that all share the first one's layout (a profile buffer), one
    Struct.unpack_from per row: (rows, index after). None (decode the generic way) as soon as a row differs."""
    layout = _row_layout(mv, i)
    if layout is None:
        return None
    row, checks, values, expect = layout
    size = row.size
    if i + n * size > len(mv):
        return None                          # the generic path names where it is truncated
    out: list[Any] = []
    append = out.append
    unpack = row.unpack_from
    for _ in range(n):
        fields = unpack(mv, i)
        if checks(fields) != expect:
            return None
        append(values(fields))
        i += size
    return out, i


def _ff(v: int) -> int | None:
    return None if v == 0xFF else v


# ------------------------------------------------------------------------------------------------- encoding


def encode(value: Any) -> bytes:
    """Natives and :class:`Int` / :class:`F32` to A-XDR (see the module docstring for the mapping)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(v: Any, out: bytearray) -> None:
    if isinstance(v, Int):
        st = _INTS.get(v.tag)
        if st is None:
            raise ValueError(f"tag {v.tag} is not an integer type")
        try:
            out += bytes((v.tag,)) + st.pack(v.value)
        except struct.error:
            raise ValueError(f"{v.value} does not fit {TAG_NAMES[v.tag]}") from None
    elif v is None:
        out.append(NULL)
    elif isinstance(v, bool):
        out += bytes((BOOLEAN, 1 if v else 0))
    elif isinstance(v, int):
        raise TypeError(f"integer {v} without an A-XDR type: wrap it (u8(), u16(), i32(), enum() ...)")
    elif isinstance(v, F32):
        out.append(FLOAT32)
        out += _F32.pack(v.value)
    elif isinstance(v, float):
        out.append(FLOAT64)
        out += _F64.pack(v)
    elif isinstance(v, (bytes, bytearray)):
        out.append(OCTET_STRING)
        out += encode_length(len(v)) + v
    elif isinstance(v, str):
        raw = v.encode("latin-1")
        out.append(VISIBLE_STRING)
        out += encode_length(len(raw)) + raw
    elif isinstance(v, CosemDateTime):
        out += b"\x09\x0c" + v.encode_body()
    elif isinstance(v, BitString):
        out.append(BIT_STRING)
        out += encode_length(len(v.bits)) + v.encode_body()
    elif isinstance(v, (list, tuple)):
        out.append(STRUCTURE if isinstance(v, tuple) else ARRAY)
        out += encode_length(len(v))
        for item in v:
            _encode(item, out)
    else:
        raise TypeError(f"no A-XDR encoding for {type(v).__name__}")
