"""CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF), as used by Mercury 230 and Modbus RTU.

crcmod-plus ships a C extension; a frame checksum in pure Python would cost more than the rest of
the decoder, so :func:`crc_extension_in_use` lets a health check or benchmark confirm it.
"""

from __future__ import annotations

import crcmod
import crcmod.crcmod as _crcmod_impl

__all__ = ["append_crc", "check_crc", "crc16_modbus", "crc_extension_in_use"]

Buffer = bytes | bytearray | memoryview

crc16_modbus = crcmod.mkCrcFun(0x18005, initCrc=0xFFFF, rev=True, xorOut=0x0000)
crc16_modbus.__doc__ = "CRC-16/MODBUS of ``data`` as an int (check value: b'123456789' -> 0x4B37)."


def crc_extension_in_use() -> bool:
    """True when crcmod computes in its C extension rather than in Python."""
    return bool(getattr(_crcmod_impl, "_usingExtension", False))


def append_crc(data: Buffer) -> bytes:
    """``data`` followed by its CRC, low byte first (the wire order)."""
    crc = crc16_modbus(data)
    return bytes(data) + bytes((crc & 0xFF, crc >> 8))


def check_crc(frame: Buffer) -> bool:
    """True when the last two bytes of ``frame`` are the CRC (low byte first) of the bytes before."""
    n = len(frame)
    if n < 3:
        return False
    # A frame followed by its own CRC has a CRC residue of zero: no slicing, no int assembly.
    return crc16_modbus(frame) == 0
