"""IEC 62056-47 TCP/UDP wrapper (DLMS/COSEM over IP, port 4059): sans-I/O framing.

    version (2) = 0x0001 | source wPort (2) | destination wPort (2) | length (2) | APDU (length bytes)

A client's wPort is its SAP (public client 16), a server's the logical device (1 = management). No
checksum and no segmentation: TCP carries the APDU whole, so the length field is all that delimits it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pollerd.errors import AddressMismatch, FrameTooLong

from .errors import WrapperError

__all__ = ["DEFAULT_PORT", "MAX_APDU", "WrapperDeframer", "WrapperFrame", "encode_wrapper"]

DEFAULT_PORT = 4059
VERSION = 1
# The length field is 16 bits; a negotiated max PDU size cannot exceed it either.
MAX_APDU = 0xFFFF
_HEAD = struct.Struct(">HHHH")


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    source: int
    dest: int
    apdu: bytes


def encode_wrapper(source: int, dest: int, apdu: bytes) -> bytes:
    if len(apdu) > MAX_APDU:
        raise FrameTooLong(f"APDU of {len(apdu)} bytes does not fit the wrapper's 16-bit length")
    return _HEAD.pack(VERSION, source, dest, len(apdu)) + apdu


class WrapperDeframer:
    """Bytes in, wrapper PDUs out. ``expect`` = (source, dest) checks the wPorts of every PDU."""

    __slots__ = ("_buf", "_expect")

    def __init__(self, expect: tuple[int, int] | None = None) -> None:
        self._buf = bytearray()
        self._expect = expect

    @property
    def pending(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[WrapperFrame]:
        buf = self._buf
        buf += data
        out: list[WrapperFrame] = []
        while len(buf) >= 8:
            version, source, dest, n = _HEAD.unpack_from(buf)
            if version != VERSION:
                bad = bytes(buf[:8])
                buf.clear()  # without a version word there is no way to find the next header
                raise WrapperError(f"wrapper version {version} (1 expected)", bad)
            if len(buf) < 8 + n:
                break
            frame = WrapperFrame(source, dest, bytes(buf[8:8 + n]))
            raw = bytes(buf[:8 + n])
            del buf[:8 + n]
            if self._expect is not None and (source, dest) != self._expect:
                raise AddressMismatch(f"wrapper PDU from wPort {source} to {dest}, expected {self._expect[0]} "
                                      f"to {self._expect[1]}", raw)
            out.append(frame)
        return out
