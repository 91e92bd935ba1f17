"""Mercury 230 identity parameters (08h): serial number and date of manufacture, transformer ratios,
variant (the meter constant), software version, the fast identity read and the network address.
"""

from __future__ import annotations

import datetime as _dt
import struct

from pollerd.errors import FrameError

from .frames import ADDRESS_UNIVERSAL, Request, _need, length_error

# Meter constant (imp/kWh) by the low nibble of variant byte 2 (index 1 of the reply data) [MOL].
CONSTANTS: dict[int, int] = {0: 5000, 1: 25000, 2: 1250, 3: 500, 4: 1000, 5: 250}
_CONSTANT_CODES: dict[int, int] = {v: k for k, v in CONSTANTS.items()}


_RATIOS = struct.Struct(">HH")


def read_serial(addr: int) -> Request:
    return Request(addr, b"\x08\x00", 7)


def read_ratios(addr: int) -> Request:
    return Request(addr, b"\x08\x02", 4)


def read_variant(addr: int, long: bool = False) -> Request:
    """08 12: the short form (6-byte reply) that pre-2016 meters know, or with ``long`` the 08 12 00 form
    (12-byte reply) newer meters are read with in the field (vectors FACTS.md). A driver tries the other
    form when one is refused."""
    if long:
        return Request(addr, b"\x08\x12\x00", 12)
    return Request(addr, b"\x08\x12", 6)


def decode_serial(data: bytes) -> tuple[str, _dt.date | None]:
    """08 00 reply (7 bytes): serial number (4 binary bytes, each printed as 2 digits) and the
    manufacturing date (binary day, month, year); ``None`` if the date is not a valid date."""
    _need(data, 7, "serial number")
    if max(data[:4]) > 99:
        raise FrameError("serial number: bytes must be 0..99", data)
    serial = f"{data[0]:02d}{data[1]:02d}{data[2]:02d}{data[3]:02d}"
    try:
        made: _dt.date | None = _dt.date(2000 + data[6], data[5], data[4])
    except ValueError:
        made = None
    return serial, made


def decode_ratios(data: bytes) -> tuple[int, int]:
    """08 02 reply (4 bytes): voltage ratio KU and current ratio KI."""
    _need(data, 4, "ratios")
    return _RATIOS.unpack(data)


def decode_variant(data: bytes) -> int:
    """08 12 reply (6 bytes, or 12 for the new form): the meter constant A in imp/kWh."""
    if len(data) not in (6, 12):
        raise length_error("variant", "6 or 12", data)
    code = data[1] & 0x0F
    try:
        return CONSTANTS[code]
    except KeyError:
        raise FrameError(f"variant: unknown meter constant code {code}", data) from None


def encode_serial(serial: str, made: _dt.date | None) -> bytes:
    if len(serial) != 8 or not serial.isdigit():
        raise ValueError(f"serial must be 8 decimal digits, got {serial!r}")
    head = bytes(int(serial[i : i + 2]) for i in range(0, 8, 2))
    tail = bytes((made.day, made.month, made.year - 2000)) if made else b"\x00\x00\x00"
    return head + tail


def encode_ratios(ku: int, ki: int) -> bytes:
    return _RATIOS.pack(ku, ki)


def encode_variant(constant: int, long: bool = False) -> bytes:
    """A 6-byte 08 12 reply (12 bytes for 08 12 00 with ``long``) with the meter constant; the other bits
    describe a generic 3-phase meter and are not interpreted by pollerd."""
    try:
        code = _CONSTANT_CODES[constant]
    except KeyError:
        raise ValueError(f"meter constant must be one of {sorted(_CONSTANT_CODES)}, got {constant}") from None
    short = bytes((0xB4, 0x60 | code, 0x82, 0x00, 0x00, 0x00))
    return short + bytes(6) if long else short


def read_version(addr: int) -> Request:
    """08 03: software version, three bytes a.b.c [GRZ]."""
    return Request(addr, b"\x08\x03", 3)


def read_fast_info(addr: int) -> Request:
    """08 01: serial (4), manufacturing date (3), version (3) and variant (6) in one 16-byte reply.

    Layout from Brokly/ESPHome-Mercury230 ``mercury230_proto.h`` (``sGetVers``: a 19-byte frame whose
    bytes 1-4 are the serial, 5-7 day/month/year, 8-10 the version; "the rest describes the
    modification"), the rest taken to be the 6-byte 08 12 variant block (unverified)."""
    return Request(addr, b"\x08\x01", 16)


def read_net_address(addr: int = ADDRESS_UNIVERSAL) -> Request:
    """08 05: the meter's network address; reply 2 bytes, the address in the second [Brokly
    ESPHome-Mercury230 ``sGetAddr``, sent to address 0 on a point-to-point link]."""
    return Request(addr, b"\x08\x05", 2)


def decode_version(data: bytes) -> str:
    _need(data, 3, "software version")
    return f"{data[0]}.{data[1]}.{data[2]}"


def decode_fast_info(data: bytes) -> tuple[str, _dt.date | None, str, int | None]:
    """08 01 reply: (serial, manufactured, version, constant or None when the variant code is unknown)."""
    _need(data, 16, "fast info")
    serial, made = decode_serial(data[:7])
    version = decode_version(data[7:10])
    try:
        constant: int | None = decode_variant(data[10:16])
    except FrameError:
        constant = None
    return serial, made, version, constant


def decode_net_address(data: bytes) -> int:
    _need(data, 2, "network address")
    return data[1]
