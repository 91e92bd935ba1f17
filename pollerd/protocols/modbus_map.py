"""Modbus register maps and the read planner (sans-I/O, no asyncio).

A register map says which registers hold which value: address (a data-sheet reference like ``30001``, or a
0-based PDU ``register`` with a ``function``), value type, word and byte order, scale, offset, unit and the
channel name. Maps come inline in the meter (``registers = [...]``) and/or from a template file
(``template = "eastron-sdm630"``). This module gets parsed data only: finding and reading template files is
:mod:`pollerd.drivers.modbus_options`' job.

The planner merges registers of one function into reads of at most ``package_size`` registers, bridging
holes of at most ``max_gap`` registers: one exchange costs ~8 request bytes, ~5 reply bytes of framing and a
turnaround of tens of milliseconds, while a bridged register costs 2 bytes. A merged read the device refuses
with "illegal data address" (a hole that is not readable) is split by the driver with :func:`split_block`.
"""

from __future__ import annotations

import difflib
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pollerd.errors import OptionError
from pollerd.protocols.floats import f32_decimal
from pollerd.protocols.modbus import (
    FC_READ_COILS,
    FC_READ_DISCRETE_INPUTS,
    FC_READ_HOLDING,
    FC_READ_INPUT,
    MAX_READ_BITS,
    MAX_READ_REGISTERS,
    reference,
)

__all__ = [
    "DEFAULT_MAX_GAP", "Block", "MODES", "ModbusOptions", "RegisterSpec", "VALUE_TYPES", "ValueType",
    "close_match", "order", "parse_registers", "parse_template", "plan_reads", "split_block",
]

MODES = ("rtu", "tcp", "rtu_over_tcp")
ORDERS = ("big", "little")
DEFAULT_MAX_GAP = 8


@dataclass(frozen=True, slots=True)
class ValueType:
    name: str
    words: int                    # registers it spans (bits: 1 bit)
    struct: struct.Struct | None  # big-endian layout; None for BCD and bits
    bcd: bool = False
    bit: bool = False


VALUE_TYPES: dict[str, ValueType] = {
    "u16": ValueType("u16", 1, struct.Struct(">H")),
    "s16": ValueType("s16", 1, struct.Struct(">h")),
    "u32": ValueType("u32", 2, struct.Struct(">I")),
    "s32": ValueType("s32", 2, struct.Struct(">i")),
    "u64": ValueType("u64", 4, struct.Struct(">Q")),
    "s64": ValueType("s64", 4, struct.Struct(">q")),
    "f32": ValueType("f32", 2, struct.Struct(">f")),
    "f64": ValueType("f64", 4, struct.Struct(">d")),
    "bcd16": ValueType("bcd16", 1, None, bcd=True),
    "bcd32": ValueType("bcd32", 2, None, bcd=True),
    "bit": ValueType("bit", 1, None, bit=True),
}
_F32 = VALUE_TYPES["f32"]
_ALIASES = {"bcd": "bcd16", "uint16": "u16", "int16": "s16", "uint32": "u32", "int32": "s32", "uint64": "u64",
            "int64": "s64", "float": "f32", "float32": "f32", "float64": "f64", "double": "f64", "bool": "bit"}

# DESIGN.md §3 units: energy in Wh/varh, power in W/var/VA, volume in m³. unit -> (stored unit, factor).
UNIT_NORMALISE: dict[str, tuple[str, float]] = {
    "kWh": ("Wh", 1e3), "MWh": ("Wh", 1e6), "kvarh": ("varh", 1e3), "kVArh": ("varh", 1e3),
    "kVarh": ("varh", 1e3), "Mvarh": ("varh", 1e6), "kW": ("W", 1e3), "MW": ("W", 1e6), "kvar": ("var", 1e3),
    "kVAr": ("var", 1e3), "kVA": ("VA", 1e3), "MVA": ("VA", 1e6), "GJ": ("Wh", 1e9 / 3600),
    "MJ": ("Wh", 1e6 / 3600), "kJ": ("Wh", 1e3 / 3600), "Gcal": ("Wh", 1.163e6), "m3": ("m³", 1.0),
    "l": ("m³", 1e-3), "L": ("m³", 1e-3), "VAr": ("var", 1.0), "VArh": ("varh", 1.0),
}

_TABLE_OF_REFERENCE = ((1, 9999, FC_READ_COILS), (10001, 19999, FC_READ_DISCRETE_INPUTS),
                       (30001, 39999, FC_READ_INPUT), (40001, 49999, FC_READ_HOLDING),
                       (100001, 165536, FC_READ_DISCRETE_INPUTS), (300001, 365536, FC_READ_INPUT),
                       (400001, 465536, FC_READ_HOLDING))
_FUNCTION_NAMES = {1: "coil", 2: "discrete input", 3: "holding register", 4: "input register"}
_REGISTER_KEYS = ("address", "register", "function", "type", "channel", "unit", "scale", "offset",
                  "word_order", "byte_order", "description")


@dataclass(frozen=True, slots=True)
class RegisterSpec:
    """One value in the device. ``address`` is the 0-based PDU address."""

    channel: str
    function: int
    address: int
    type: ValueType
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    word_order: str = "big"
    byte_order: str = "big"
    divisor: int = 0              # exact division when scale is 1/n (0.1 * 3 is not 0.3; 3 / 10 is)

    @property
    def words(self) -> int:
        return self.type.words

    @property
    def end(self) -> int:
        return self.address + self.type.words

    @property
    def where(self) -> str:
        return reference(self.function, self.address)

    def raw(self, data: bytes | memoryview, offset: int) -> int | float | None:
        """The unscaled value from a block's data, ``offset`` registers (or bits) in; None when invalid
        (a BCD nibble above 9)."""
        t = self.type
        if t.bit:
            return (data[offset >> 3] >> (offset & 7)) & 1
        start = offset * 2
        chunk = bytes(data[start:start + 2 * t.words])
        if self.byte_order == "little":
            sw = bytearray(chunk)
            sw[0::2], sw[1::2] = chunk[1::2], chunk[0::2]
            chunk = bytes(sw)
        if self.word_order == "little" and t.words > 1:
            chunk = b"".join(chunk[i:i + 2] for i in range(len(chunk) - 2, -1, -2))
        if t.bcd:
            value = 0
            for byte in chunk:
                hi, lo = byte >> 4, byte & 0x0F
                if hi > 9 or lo > 9:
                    return None
                value = value * 100 + hi * 10 + lo
            return value
        assert t.struct is not None
        number: int | float = t.struct.unpack(chunk)[0]  # the types' formats are all numeric
        return number

    def value(self, data: bytes | memoryview, offset: int) -> float | None:
        """Scaled, normalised value; None when invalid or not a finite number."""
        raw = self.raw(data, offset)
        if raw is None:
            return None
        if self.type is _F32:
            raw = f32_decimal(raw)
        v = raw / self.divisor if self.divisor else raw * self.scale
        v += self.offset
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return float(v)


@dataclass(frozen=True, slots=True)
class Block:
    """One planned read: ``count`` registers (or bits) from ``start`` with function ``function``."""

    function: int
    start: int
    count: int
    items: tuple[RegisterSpec, ...]

    def describe(self) -> str:
        return f"{reference(self.function, self.start)}+{self.count}"


@dataclass(frozen=True, slots=True)
class ModbusOptions:
    mode: str = "rtu"
    registers: tuple[RegisterSpec, ...] = ()
    max_gap: int = DEFAULT_MAX_GAP
    template: str | None = None       # the resolved template file, for `pollerd check` and messages


# ------------------------------------------------------------------------------------------------ planner


def plan_reads(specs: tuple[RegisterSpec, ...] | list[RegisterSpec], package_size: int,
               max_gap: int = DEFAULT_MAX_GAP) -> list[Block]:
    """Merge registers into as few reads as ``package_size`` and ``max_gap`` allow, in address order
    per function (input registers first, the usual place of meter values). A value wider than
    ``package_size`` still gets one read of its own: a value cannot be split across reads."""
    blocks: list[Block] = []
    for fc in (FC_READ_INPUT, FC_READ_HOLDING, FC_READ_COILS, FC_READ_DISCRETE_INPUTS):
        bits = fc in (FC_READ_COILS, FC_READ_DISCRETE_INPUTS)
        limit = min(package_size * 16, MAX_READ_BITS) if bits else min(package_size, MAX_READ_REGISTERS)
        gap = max_gap * 16 if bits else max_gap
        items = sorted((s for s in specs if s.function == fc), key=lambda s: (s.address, s.end))
        cur: list[RegisterSpec] = []
        start = end = 0
        for s in items:
            if cur and s.address - end <= gap and max(end, s.end) - start <= limit:
                cur.append(s)
                end = max(end, s.end)
                continue
            if cur:
                blocks.append(Block(fc, start, end - start, tuple(cur)))
            cur, start, end = [s], s.address, s.end
        if cur:
            blocks.append(Block(fc, start, end - start, tuple(cur)))
    return blocks


def split_block(block: Block) -> tuple[Block, Block] | None:
    """Split a refused merged read in two at its widest hole (the likeliest unreadable range), or in the
    middle of its items when there is no hole. None for a block of one value."""
    items = block.items
    if len(items) < 2:
        return None
    best, best_gap = len(items) // 2, -1
    end = items[0].end
    for i in range(1, len(items)):
        gap = items[i].address - end
        if gap > best_gap:
            best, best_gap = i, gap
        end = max(end, items[i].end)
    if best_gap <= 0:
        best = len(items) // 2

    def make(part: tuple[RegisterSpec, ...]) -> Block:
        lo = min(s.address for s in part)
        return Block(block.function, lo, max(s.end for s in part) - lo, part)

    return make(items[:best]), make(items[best:])


# ------------------------------------------------------------------------------------------------ parsing


def close_match(word: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for a near miss among ``choices``, else empty."""
    m = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


def _type_name(v: object) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def order(value: object, key: tuple[str | int, ...]) -> str:
    """A word or byte order value: "big" or "little"."""
    if value not in ORDERS:
        raise OptionError(f"expected \"big\" or \"little\", got {value!r}", key)
    return str(value)


def _number(value: object, key: tuple[str | int, ...]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"expected a number, got {_type_name(value)} {value!r}", key)
    return float(value)


def _parse_register(entry: object, key: tuple[str | int, ...], word_order: str,
                    byte_order: str) -> RegisterSpec:
    if not isinstance(entry, dict):
        raise OptionError(f"expected a table like {{ address = 30001, type = \"f32\", channel = \"U.L1\" }}, "
                          f"got {_type_name(entry)}", key)
    for k in entry:
        if k not in _REGISTER_KEYS:
            raise OptionError(f"unknown key {k!r}{close_match(k, _REGISTER_KEYS)}; known: "
                              f"{', '.join(_REGISTER_KEYS)}", key + (k,))
    channel = entry.get("channel")
    if not isinstance(channel, str) or not channel.strip():
        raise OptionError("missing or empty 'channel' (the reading's name, e.g. \"U.L1\")",
                          key + (("channel",) if "channel" in entry else ()))
    function = entry.get("function")
    if function is not None and (isinstance(function, bool) or function not in (1, 2, 3, 4)):
        raise OptionError(f"function must be 1, 2, 3 or 4 (reads), got {function!r}", key + ("function",))
    if ("address" in entry) == ("register" in entry):
        raise OptionError("give exactly one of 'address' (data-sheet reference such as 30001 or 40001) or "
                          "'register' (0-based PDU address, with 'function')", key)
    if "address" in entry:
        ref = entry["address"]
        if isinstance(ref, bool) or not isinstance(ref, int):
            raise OptionError(f"expected an integer reference, got {_type_name(ref)} {ref!r}", key + ("address",))
        for lo, hi, fc in _TABLE_OF_REFERENCE:  # noqa: B007  # lo and fc of the range found serve after the loop
            if lo <= ref <= hi:
                break
        else:
            raise OptionError(f"{ref} is not a Modbus reference (00001-09999 coils, 10001-19999 inputs, "
                              f"30001-39999 input registers, 40001-49999 holding registers, or the 6-digit "
                              f"forms); for a raw 0-based address use 'register' with 'function'",
                              key + ("address",))
        if function is not None and function != fc:
            raise OptionError(f"address {ref} is a {_FUNCTION_NAMES[fc]} (function {fc}), but function = "
                              f"{function}; for a raw 0-based address use 'register'", key + ("function",))
        function, address = fc, ref - lo
    else:
        address = entry["register"]
        if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= 0xFFFF:
            raise OptionError(f"register must be an integer 0..65535, got {address!r}", key + ("register",))
        if function is None:
            raise OptionError("'register' needs 'function' (1 coils, 2 inputs, 3 holding, 4 input registers)",
                              key + ("register",))
    bits = function in (FC_READ_COILS, FC_READ_DISCRETE_INPUTS)
    tname = entry.get("type", "bit" if bits else "u16")
    if not isinstance(tname, str) or _ALIASES.get(tname.lower(), tname.lower()) not in VALUE_TYPES:
        raise OptionError(f"unknown type {tname!r}{close_match(str(tname), VALUE_TYPES)}; known: "
                          f"{', '.join(VALUE_TYPES)}", key + ("type",))
    vt = VALUE_TYPES[_ALIASES.get(tname.lower(), tname.lower())]
    if vt.bit != bits:
        hint = 'coils and inputs are bits: use type = "bit"' if bits else "bit is for functions 1 and 2"
        raise OptionError(f"type {tname!r} does not fit function {function} ({hint})", key + ("type",))
    if address + vt.words > 0x10000:
        raise OptionError(f"a {vt.name} at {address} runs past address 65535", key)
    unit = entry.get("unit", "")
    if not isinstance(unit, str):
        raise OptionError(f"expected a string, got {_type_name(unit)}", key + ("unit",))
    scale = _number(entry.get("scale", 1), key + ("scale",))
    offset = _number(entry.get("offset", 0), key + ("offset",))
    if scale == 0:
        raise OptionError("scale must not be 0", key + ("scale",))
    stored_unit, factor = UNIT_NORMALISE.get(unit, (unit, 1.0))
    scale *= factor
    offset *= factor
    divisor = 0
    if 0 < abs(scale) < 1 and abs(1 / scale - round(1 / scale)) < 1e-9:
        divisor = round(1 / scale)
    return RegisterSpec(
        channel=channel.strip(), function=function, address=address, type=vt, unit=stored_unit, scale=scale,
        offset=offset, word_order=order(entry.get("word_order", word_order), key + ("word_order",)),
        byte_order=order(entry.get("byte_order", byte_order), key + ("byte_order",)), divisor=divisor)


def parse_registers(entries: object, key: tuple[str | int, ...] = ("registers",), *, word_order: str = "big",
                    byte_order: str = "big") -> list[RegisterSpec]:
    if not isinstance(entries, list):
        raise OptionError(f"expected an array of tables, got {_type_name(entries)}", key)
    out: list[RegisterSpec] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        spec = _parse_register(entry, key + (i,), word_order, byte_order)
        if spec.channel in seen:
            raise OptionError(f"channel {spec.channel!r} is already defined by {key[-1]}[{seen[spec.channel]}]",
                              key + (i, "channel"))
        seen[spec.channel] = i
        out.append(spec)
    return out


def parse_template(doc: Mapping[str, object], *, word_order: str | None = None,
                   byte_order: str | None = None) -> list[RegisterSpec]:
    """Registers of a parsed template document (``[template]`` defaults and ``[[registers]]``).
    ``word_order``/``byte_order`` given by the meter override the template's defaults (a firmware quirk of
    one installation), not a register's own keys. Raises OptionError keyed within the template."""
    head = doc.get("template", {})
    if not isinstance(head, dict):
        raise OptionError("[template] must be a table", ("template",))
    wo = word_order or order(head.get("word_order", "big"), ("template", "word_order"))
    bo = byte_order or order(head.get("byte_order", "big"), ("template", "byte_order"))
    return parse_registers(doc.get("registers", []), ("registers",), word_order=wo, byte_order=bo)

