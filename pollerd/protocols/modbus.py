"""Modbus (RTU, TCP/MBAP, RTU over TCP): sans-I/O codec.

Frames (FACTS.md in shared/vectors/modbus-rtu)::

    RTU  : [unit][function][data...][crc lo][crc hi]            at most 256 bytes
    MBAP : [tid hi][tid lo][0][0][len hi][len lo][unit][function][data...]   len = 1 + PDU length

Inside the PDU every 16-bit quantity is big-endian; only the RTU CRC is little-endian.

RTU has no length field and no start marker (t3.5 silence cannot be seen through USB adapters and TCP
converters), so a reply is framed by its expected length, which the request determines: ``unit, fc,
byte count, data`` for reads, an 8-byte echo for writes, 5 bytes for an exception. The framer hunts past
leading noise for ``unit, fc`` and checks the CRC; a CRC-valid frame from another unit is an
:class:`AddressMismatch`, never a reply.

Exception replies are valid frames: :meth:`Reply.check` turns them into :class:`ModbusException`
(a :class:`MeterError`) reading ``unit 3: illegal data address at 40012 (...)``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pollerd.errors import (
    AddressMismatch,
    CrcError,
    FrameError,
    FrameTooLong,
    ModbusException,
    TruncatedFrame,
)
from pollerd.protocols.crc import check_crc, crc16_modbus

__all__ = [
    "EXCEPTION_TEXT", "FC_READ_COILS", "FC_READ_DISCRETE_INPUTS", "FC_READ_HOLDING", "FC_READ_INPUT",
    "FC_WRITE_COIL", "FC_WRITE_REGISTER", "FC_WRITE_COILS", "FC_WRITE_REGISTERS", "MAX_RTU_FRAME",
    "MAX_READ_BITS", "MAX_READ_REGISTERS", "MbapReplyFramer", "ModbusException", "READ_FUNCTIONS", "Reply",
    "Request", "RtuReplyFramer", "decode_request", "decode_response", "encode_mbap", "encode_rtu",
    "read_request", "reference", "write_coil", "write_coils", "write_register", "write_registers",
]

FC_READ_COILS = 0x01
FC_READ_DISCRETE_INPUTS = 0x02
FC_READ_HOLDING = 0x03
FC_READ_INPUT = 0x04
FC_WRITE_COIL = 0x05
FC_WRITE_REGISTER = 0x06
FC_WRITE_COILS = 0x0F
FC_WRITE_REGISTERS = 0x10

READ_FUNCTIONS = frozenset((FC_READ_COILS, FC_READ_DISCRETE_INPUTS, FC_READ_HOLDING, FC_READ_INPUT))
_BIT_FUNCTIONS = frozenset((FC_READ_COILS, FC_READ_DISCRETE_INPUTS))
_WRITE_FUNCTIONS = frozenset((FC_WRITE_COIL, FC_WRITE_REGISTER, FC_WRITE_COILS, FC_WRITE_REGISTERS))

# Application Protocol V1.1b3 limits: a byte count is one byte, and an RTU ADU is at most 256 bytes.
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968
MAX_RTU_FRAME = 256
MAX_MBAP_FRAME = 260
# Noise a framer skips while hunting for the reply's start before it gives up on the exchange.
MAX_NOISE = 512

EXCEPTION_TEXT: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge (long operation in progress)",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

# The 1-based "reference" numbering of data sheets: 0xxxx coils, 1xxxx inputs, 3xxxx input registers,
# 4xxxx holding registers. Messages use it because that is what users find in the meter's manual.
_REFERENCE_BASE: dict[int, int] = {
    FC_READ_COILS: 1, FC_WRITE_COIL: 1, FC_WRITE_COILS: 1,
    FC_READ_DISCRETE_INPUTS: 10001,
    FC_READ_INPUT: 30001,
    FC_READ_HOLDING: 40001, FC_WRITE_REGISTER: 40001, FC_WRITE_REGISTERS: 40001,
}

_HDR = struct.Struct(">BBHH")      # unit, function, address, count (or value)
_MBAP = struct.Struct(">HHHB")     # transaction id, protocol id, length, unit
_U16 = struct.Struct(">H")
# Precompiled layouts of n big-endian registers, n = 0..125 (the most one read returns).
_REGS: dict[int, struct.Struct] = {n: struct.Struct(f">{n}H") for n in range(MAX_READ_REGISTERS + 1)}


def reference(function: int, address: int) -> str:
    """``40012`` for holding register PDU address 11; 6 digits when 5 do not hold the address."""
    base = _REFERENCE_BASE.get(function)
    if base is None:
        return f"address {address}"
    if address < 9999:
        return f"{base + address:05d}"
    # Beyond x9999 data sheets use the extended 6-digit form (300001 + address).
    return f"{base * 10 - 9 + address:06d}"


# ------------------------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Request:
    """One Modbus request. ``address`` is the 0-based PDU address; ``count`` registers or bits for reads
    and multiple writes; ``payload`` the data after the header for writes (value, or byte count + data)."""

    unit: int
    function: int
    address: int
    count: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.unit <= 0xFF:
            raise ValueError(f"Modbus unit id must be 0..255, got {self.unit}")
        if not 0 <= self.address <= 0xFFFF:
            raise ValueError(f"Modbus address must be 0..65535, got {self.address}")
        if self.function in READ_FUNCTIONS:
            limit = MAX_READ_BITS if self.function in _BIT_FUNCTIONS else MAX_READ_REGISTERS
            if not 1 <= self.count <= limit:
                raise ValueError(f"function {self.function:02X}: count must be 1..{limit}, got {self.count}")
            if self.address + self.count > 0x10000:
                raise ValueError(f"read of {self.count} from {self.address} runs past address 65535")
        elif self.function not in _WRITE_FUNCTIONS:
            raise ValueError(f"unsupported Modbus function {self.function:#04x}")

    def pdu(self) -> bytes:
        if self.function in (FC_WRITE_COIL, FC_WRITE_REGISTER):
            return struct.pack(">BH", self.function, self.address) + self.payload
        return struct.pack(">BHH", self.function, self.address, self.count) + self.payload

    @property
    def byte_count(self) -> int:
        """The byte count a read reply must carry; 0 for writes."""
        if self.function in _BIT_FUNCTIONS:
            return (self.count + 7) // 8
        if self.function in READ_FUNCTIONS:
            return 2 * self.count
        return 0

    @property
    def reply_pdu_len(self) -> int:
        """Length of the normal reply PDU (function code included)."""
        return 2 + self.byte_count if self.function in READ_FUNCTIONS else 5

    def describe(self) -> str:
        return (f"unit {self.unit} function {self.function:02X} at {reference(self.function, self.address)} "
                f"(PDU address {self.address}, count {self.count})")


def read_request(unit: int, function: int, address: int, count: int) -> Request:
    if function not in READ_FUNCTIONS:
        raise ValueError(f"{function:#04x} is not a read function (01, 02, 03, 04)")
    return Request(unit, function, address, count)


def write_coil(unit: int, address: int, on: bool) -> Request:
    return Request(unit, FC_WRITE_COIL, address, 1, b"\xff\x00" if on else b"\x00\x00")


def write_register(unit: int, address: int, value: int) -> Request:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"register value must be 0..65535, got {value}")
    return Request(unit, FC_WRITE_REGISTER, address, 1, _U16.pack(value))


def write_coils(unit: int, address: int, values: list[bool] | tuple[bool, ...]) -> Request:
    if not 1 <= len(values) <= MAX_WRITE_BITS:
        raise ValueError(f"write of 1..{MAX_WRITE_BITS} coils, got {len(values)}")
    packed = bytearray((len(values) + 7) // 8)
    for i, v in enumerate(values):
        if v:
            packed[i >> 3] |= 1 << (i & 7)
    return Request(unit, FC_WRITE_COILS, address, len(values), bytes((len(packed),)) + bytes(packed))


def write_registers(unit: int, address: int, values: list[int] | tuple[int, ...]) -> Request:
    if not 1 <= len(values) <= MAX_WRITE_REGISTERS:
        raise ValueError(f"write of 1..{MAX_WRITE_REGISTERS} registers, got {len(values)}")
    data = struct.pack(f">{len(values)}H", *values)
    return Request(unit, FC_WRITE_REGISTERS, address, len(values), bytes((len(data),)) + data)


def encode_rtu(req: Request) -> bytes:
    frame = bytes((req.unit,)) + req.pdu()
    crc = crc16_modbus(frame)
    return frame + bytes((crc & 0xFF, crc >> 8))


def encode_mbap(req: Request, tid: int) -> bytes:
    pdu = req.pdu()
    return _MBAP.pack(tid & 0xFFFF, 0, len(pdu) + 1, req.unit) + pdu


# ------------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete, checked reply. ``data`` is what follows the byte count of a read (the registers or
    packed bits) or the 4 echoed bytes of a write; ``exception`` is the code of an exception reply."""

    unit: int
    function: int
    data: bytes
    exception: int | None = None
    tid: int | None = None
    request: Request | None = None

    def check(self) -> Reply:
        """Self, or raise :class:`ModbusException` for an exception reply."""
        if self.exception is not None:
            req = self.request
            fc, addr, count = (req.function, req.address, req.count) if req else (self.function, 0, 0)
            text = EXCEPTION_TEXT.get(self.exception, "unknown exception")
            where = f" at {reference(fc, addr)}" if req else ""
            detail = f"function {fc:02X}, PDU address {addr}, count {count}, " if req else ""
            raise ModbusException(f"unit {self.unit}: {text}{where} ({detail}exception code "
                                  f"{self.exception:02X})", self.exception, fc, addr, count)
        return self

    def registers(self) -> tuple[int, ...]:
        n = len(self.data) >> 1
        fmt = _REGS.get(n)
        if fmt is None:  # only a hand-made Reply can be longer than a read reply
            return struct.unpack_from(f">{n}H", self.data)
        return fmt.unpack_from(self.data)

    def bits(self, count: int | None = None) -> tuple[bool, ...]:
        n = len(self.data) * 8 if count is None else count
        d = self.data
        return tuple(bool(d[i >> 3] >> (i & 7) & 1) for i in range(n))


def _parse_pdu(req: Request, unit: int, pdu: memoryview, frame: bytes, tid: int | None) -> Reply:
    """Check a reply PDU against the request; ``frame`` is the whole ADU for messages."""
    fc = pdu[0]
    if fc == req.function | 0x80:
        if len(pdu) != 2:
            raise TruncatedFrame(f"unit {unit}: exception reply must carry 1 code byte, got {len(pdu) - 1}",
                                 frame)
        return Reply(unit, req.function, b"", pdu[1], tid, req)
    if fc != req.function:
        raise FrameError(f"unit {unit}: reply function {fc:02X}, expected {req.function:02X}", frame)
    if req.function in READ_FUNCTIONS:
        if len(pdu) < 2 or pdu[1] != req.byte_count or len(pdu) != 2 + pdu[1]:
            got = pdu[1] if len(pdu) > 1 else "none"
            raise FrameError(f"unit {unit}: function {fc:02X} reply byte count {got} with {len(pdu) - 2} data "
                             f"bytes, expected {req.byte_count} for {req.count} "
                             f"{'bits' if req.function in _BIT_FUNCTIONS else 'registers'}", frame)
        return Reply(unit, fc, bytes(pdu[2:]), None, tid, req)
    if len(pdu) != 5:
        raise FrameError(f"unit {unit}: write reply must be 5 PDU bytes, got {len(pdu)}", frame)
    echo = bytes(pdu[1:5])
    want = req.pdu()[1:5]
    if echo != want:
        raise FrameError(f"unit {unit}: write reply echoes [{echo.hex(' ')}], expected [{want.hex(' ')}]",
                         frame)
    return Reply(unit, fc, echo, None, tid, req)


class RtuReplyFramer:
    """Receives one RTU reply to ``req`` (also used for RTU over TCP).

    Leading noise is skipped while hunting for ``unit, function`` (``skipped`` keeps it, so the driver can
    count and log it); a half-duplex adapter's echo of the request is skipped (``echoed``). A frame that
    starts with our unit and function but fails the CRC raises :class:`CrcError`; a CRC-valid frame from
    another unit raises :class:`AddressMismatch`.
    """

    __slots__ = ("req", "_buf", "_request_frame", "_echo_possible", "skipped", "echoed", "_unit", "_fc", "_xfc",
                 "_read_len")

    def __init__(self, req: Request, request_frame: bytes | None = None) -> None:
        self.req = req
        self._buf = bytearray()
        # The request as sent, to recognise an adapter's echo; encoded lazily (the driver passes it in).
        self._request_frame = request_frame
        fc = req.function
        # A write of one coil/register is answered with the request itself: an echo is indistinguishable
        # from the reply, and both are the same bytes, so there is nothing to skip.
        self._echo_possible = fc != FC_WRITE_COIL and fc != FC_WRITE_REGISTER
        self.skipped = b""
        self.echoed = False
        self._unit = req.unit
        self._fc = fc
        self._xfc = fc | 0x80
        self._read_len = (5 + ((req.count + 7) >> 3 if fc <= FC_READ_DISCRETE_INPUTS else 2 * req.count)
                          if fc <= FC_READ_INPUT else 0)

    @property
    def pending(self) -> bytes:
        return self.skipped + bytes(self._buf)

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """A read reply carries unit, function and byte count but not the start address: two reads of one
        length from one unit cannot be told apart by their replies (the line fences them, issue 14). A write
        reply echoes what was written, so it needs no shape."""
        return (self._unit, self._fc, self.req.byte_count) if self._read_len else None

    def fence(self) -> tuple[bytes, RtuReplyFramer] | None:
        """A read of another length from the same unit: its reply, or an exception reply (the register may
        not exist), has another shape, and either proves that earlier replies have come."""
        if not self._read_len:
            return None
        req = self.req
        count = 2 if req.count == 1 else 1
        address = req.address if req.address + count <= 0x10000 else 0
        fence = Request(req.unit, req.function, address, count)
        frame = encode_rtu(fence)
        return frame, RtuReplyFramer(fence, frame)

    def _length_at(self, buf: bytearray, i: int) -> int | None:
        """Expected frame length for a candidate start at ``i`` (0 = not a candidate, None = need more)."""
        n = len(buf) - i
        if n < 2:
            return None
        fc = buf[i + 1]
        if fc == self._xfc:
            return 5
        if fc != self._fc:
            return 0
        if self._fc in READ_FUNCTIONS:
            if n < 3:
                return None
            return 5 + buf[i + 2]
        return 8

    def feed(self, data: bytes) -> Reply | None:
        buf = self._buf
        if not buf and self._read_len and len(data) == self._read_len and data[0] == self._unit and data[1] == self._fc \
                and data[2] == self._read_len - 5 and crc16_modbus(data) == 0:
            # The common case, a whole read reply in one chunk with nothing before it: no buffering.
            return Reply(self._unit, self._fc, bytes(data[3:-2]), None, None, self.req)
        buf += data
        req = self.req
        if self._echo_possible and not self.echoed and buf[:1] == bytes((req.unit,)):
            if self._request_frame is None:
                self._request_frame = encode_rtu(req)
            rf = self._request_frame
            if len(buf) < len(rf) and rf.startswith(buf):
                return None
            if buf.startswith(rf):
                self.echoed = True
                del buf[:len(rf)]
        i = 0
        while True:
            length = self._length_at(buf, i)
            if length is None:
                break
            if length:
                if len(buf) - i < length:
                    break
                frame = bytes(buf[i:i + length])
                if check_crc(frame):
                    if i:
                        self.skipped += bytes(buf[:i])
                    del buf[:i + length]
                    unit = frame[0]
                    if unit != req.unit:
                        raise AddressMismatch(f"reply from unit {unit}, expected unit {req.unit}", frame)
                    return _parse_pdu(req, unit, memoryview(frame)[1:-2], frame, None)
                if buf[i] == req.unit:
                    crc = crc16_modbus(frame[:-2])
                    raise CrcError(f"unit {req.unit}: CRC {frame[-2]:02x} {frame[-1]:02x}, expected "
                                   f"{crc & 0xFF:02x} {crc >> 8:02x}", bytes(buf[:i + length]))
            i += 1
        if i:
            self.skipped += bytes(buf[:i])
            del buf[:i]
        if len(self.skipped) > MAX_NOISE or len(buf) > MAX_RTU_FRAME:
            raise FrameTooLong(f"no reply from unit {req.unit} in {len(self.skipped) + len(buf)} bytes",
                               self.pending[:MAX_RTU_FRAME])
        return None


class MbapReplyFramer:
    """Receives one Modbus TCP reply to ``req`` sent with transaction id ``tid``.

    A complete reply with another transaction id is the late answer to an earlier request that timed out:
    it is dropped (``stale`` counts them) and reading goes on. A bad protocol id or length cannot be
    resynchronised inside a TCP stream, so it raises.
    """

    __slots__ = ("req", "tid", "_buf", "stale", "skipped", "echoed")

    def __init__(self, req: Request, tid: int) -> None:
        self.req = req
        self.tid = tid & 0xFFFF
        self._buf = bytearray()
        self.stale = 0
        self.skipped = b""
        self.echoed = False

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes) -> Reply | None:
        buf = self._buf
        buf += data
        while len(buf) >= 7:
            tid, proto, length, unit = _MBAP.unpack_from(buf)
            if proto != 0:
                raise FrameError(f"MBAP protocol id {proto:#06x}, expected 0 (not a Modbus TCP peer? try "
                                 f"modbus_mode = \"rtu_over_tcp\")", bytes(buf[:MAX_MBAP_FRAME]))
            if not 2 <= length <= 254:
                raise FrameTooLong(f"MBAP length {length}, expected 2..254", bytes(buf[:MAX_MBAP_FRAME]))
            total = 6 + length
            if len(buf) < total:
                return None
            frame = bytes(buf[:total])
            del buf[:total]
            if tid != self.tid:
                self.stale += 1
                self.skipped += frame
                continue
            if unit != self.req.unit:
                raise AddressMismatch(f"reply from unit {unit}, expected unit {self.req.unit}", frame)
            return _parse_pdu(self.req, unit, memoryview(frame)[7:], frame, tid)
        return None


# --------------------------------------------------------------------------------- offline decoding (CLI)


def decode_request(frame: bytes, tcp: bool = False) -> tuple[Request, int | None]:
    """Parse a captured request (RTU with CRC, or MBAP when ``tcp``): (request, transaction id)."""
    if tcp:
        if len(frame) < 8:
            raise TruncatedFrame(f"MBAP request needs at least 8 bytes, got {len(frame)}", frame)
        tid, proto, length, unit = _MBAP.unpack_from(frame)
        if proto != 0 or length != len(frame) - 6:
            raise FrameError(f"MBAP header: protocol {proto}, length {length} for {len(frame) - 6} bytes", frame)
        pdu, tid_out = frame[7:], tid
    else:
        if not check_crc(frame):
            raise CrcError("request CRC does not match", frame)
        unit, pdu, tid_out = frame[0], frame[1:-2], None
    if len(pdu) < 5:
        raise TruncatedFrame(f"request PDU needs at least 5 bytes, got {len(pdu)}", frame)
    fc, addr, count = pdu[0], _U16.unpack_from(pdu, 1)[0], _U16.unpack_from(pdu, 3)[0]
    if fc in (FC_WRITE_COIL, FC_WRITE_REGISTER):
        return Request(unit, fc, addr, 1, bytes(pdu[3:5])), tid_out
    try:
        return Request(unit, fc, addr, count, bytes(pdu[5:])), tid_out
    except ValueError as exc:
        raise FrameError(f"not a valid request: {exc}", frame) from None


def decode_response(req: Request, frame: bytes, tcp: bool = False, tid: int | None = None) -> Reply:
    """Parse a captured reply to ``req`` with the same framers the driver uses."""
    framer: RtuReplyFramer | MbapReplyFramer
    if tcp:
        framer = MbapReplyFramer(req, tid if tid is not None else _MBAP.unpack_from(frame)[0]
                                 if len(frame) >= 7 else 0)
    else:
        framer = RtuReplyFramer(req)
    reply = framer.feed(frame)
    if reply is None:
        raise TruncatedFrame(f"incomplete reply to {req.describe()}", frame)
    return reply
