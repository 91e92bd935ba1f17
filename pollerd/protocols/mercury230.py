"""Incotex Mercury 230-family binary protocol (also 231/233/234/236, 203.2TD/204/208/238): sans-I/O codec.

Frames (FACTS.md in shared/vectors/mercury230)::

    request : [addr][code][params...][crc lo][crc hi]
    reply   : [addr][data...][crc lo][crc hi]

The reply does not repeat the code, so the expected reply length is a property of the request
(:attr:`Request.reply_len`). A 4-byte reply is a status (ack/nak) whatever was asked.

Values come back in SI units: energy in Wh/varh (ints), U in V, I in A, P/Q/S in W/var/VA, F in Hz,
angles in degrees, temperature in degrees Celsius. ``None`` means the meter marked the value absent
(``FF FF FF FF`` / ``FF FF FF``).

This module also holds the reverse direction (encoders of the same layouts) used by the simulator, so
that encode/decode round trips are testable in one place.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass

from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong, MeterError, SessionClosed
from pollerd.protocols.crc import append_crc, check_crc

__all__ = [
    "ADDRESS_BROADCAST", "ADDRESS_UNIVERSAL", "CONSTANTS", "STATUS_TEXT", "Reply", "ReplyFramer", "Request",
    "check_status", "close_channel", "decode_3byte", "decode_aux", "decode_aux_group", "decode_energy",
    "decode_phase_energy", "decode_ratios", "decode_serial", "decode_time", "decode_variant",
    "encode_3byte", "encode_aux", "encode_aux_group", "encode_energy", "encode_phase_energy",
    "encode_ratios", "encode_serial", "encode_status", "encode_time", "encode_variant", "group_reply_len",
    "aux_reply_len", "open_channel", "password_bytes", "raw_request", "read_aux", "read_aux_group",
    "read_energy", "read_ratios", "read_serial", "read_time", "read_variant", "test_channel",
]

ADDRESS_UNIVERSAL = 0x00  # every meter on the bus answers: point-to-point links only
ADDRESS_BROADCAST = 0xFE  # nobody answers

# Request codes (first body byte).
CODE_TEST = 0x00
CODE_OPEN = 0x01
CODE_CLOSE = 0x02
CODE_WRITE = 0x03
CODE_READ_TIME = 0x04  # 04 00 = clock; 04 <journal> <record> = event log
CODE_READ_ENERGY = 0x05
CODE_READ_MEMORY = 0x06
CODE_READ_PARAM = 0x08

# 08 <param> sub-codes.
PARAM_SERIAL = 0x00
PARAM_VERSION = 0x03
PARAM_RATIOS = 0x02
PARAM_AUX = 0x11
PARAM_VARIANT = 0x12
PARAM_AUX_GROUP = 0x16

STATUS_OK = 0
STATUS_BAD_COMMAND = 1
STATUS_INTERNAL = 2
STATUS_ACCESS = 3
STATUS_CLOCK_ONCE_A_DAY = 4
STATUS_NOT_OPEN = 5

STATUS_TEXT: dict[int, str] = {
    STATUS_OK: "ok",
    STATUS_BAD_COMMAND: "invalid command or parameter",
    STATUS_INTERNAL: "internal meter error",
    STATUS_ACCESS: "insufficient access level",
    STATUS_CLOCK_ONCE_A_DAY: "the clock can be corrected only once a day",
    STATUS_NOT_OPEN: "channel not open",
}

# BWRI high nibble: the quantity of an 08 11 / 08 16 read.
Q_POWER = 0x0  # bits 3..2 of BWRI: 0 P, 1 Q, 2 S
Q_VOLTAGE = 0x1
Q_CURRENT = 0x2
Q_PF = 0x3
Q_FREQUENCY = 0x4
Q_ANGLE = 0x5
Q_KU = 0x6
Q_TEMPERATURE = 0x7
Q_LINE_VOLTAGE = 0x8

POWER_P = 0
POWER_Q = 1
POWER_S = 2

# Divisors rather than multipliers: 24128 / 100 is the float nearest 241.28, 24128 * 0.01 is not.
_DIVISOR: dict[int, int] = {
    Q_POWER: 100, Q_VOLTAGE: 100, Q_CURRENT: 1000, Q_PF: 1000, Q_FREQUENCY: 100, Q_ANGLE: 100,
    Q_LINE_VOLTAGE: 100,
}

# Meter constant (imp/kWh) by the low nibble of variant byte 2 (index 1 of the reply data) [MOL].
CONSTANTS: dict[int, int] = {0: 5000, 1: 25000, 2: 1250, 3: 500, 4: 1000, 5: 250}
_CONSTANT_CODES: dict[int, int] = {v: k for k, v in CONSTANTS.items()}

_MAX_3BYTE = 0x3FFFFF
_ABSENT3 = b"\xff\xff\xff"
_ABSENT4 = 0xFFFFFFFF

# Energy is "middle-endian": two little-endian 16-bit words, the high word first.
_ENERGY4 = struct.Struct("<8H")
_ENERGY3 = struct.Struct("<6H")
# A 3-byte value is b0 (flags + high 6 bits) then a little-endian 16-bit low part.
_V3 = struct.Struct("<BH")
_V3x3 = struct.Struct("<BHBHBH")
_V3x4 = struct.Struct("<BHBHBHBH")
_RATIOS = struct.Struct(">HH")
_TEMP = struct.Struct(">h")
_KU = struct.Struct("<H")


# --------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Request:
    """One request. ``body`` is code + params (no address, no CRC); ``reply_len`` is the number of data
    bytes between address and CRC of the expected data reply, ``None`` when only a status reply comes."""

    address: int
    body: bytes
    reply_len: int | None

    def __post_init__(self) -> None:
        if not 0 <= self.address <= 0xFF:
            raise ValueError(f"Mercury address must be 0..255, got {self.address}")
        if not self.body:
            raise ValueError("request body must hold at least the command code")
        if self.reply_len is not None and self.reply_len < 1:
            raise ValueError(f"reply_len must be >= 1 or None, got {self.reply_len}")

    @property
    def code(self) -> int:
        return self.body[0]

    @property
    def frame_len(self) -> int:
        """Length on the wire of the expected reply (4 for a status reply)."""
        return 4 if self.reply_len is None else self.reply_len + 3

    def encode(self) -> bytes:
        return append_crc(bytes((self.address,)) + self.body)


def raw_request(addr: int, body: bytes, reply_len: int | None = None) -> Request:
    """Any request, e.g. a raw HEX command from the API; the caller states the reply length."""
    return Request(addr, bytes(body), reply_len)


def test_channel(addr: int) -> Request:
    return Request(addr, b"\x00", None)


test_channel.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported by tests


def open_channel(addr: int, level: int, password: bytes) -> Request:
    if level not in (1, 2):
        raise ValueError(f"access level must be 1 (user) or 2 (admin), got {level}")
    if len(password) != 6:
        raise ValueError("Mercury password must be exactly 6 bytes")
    return Request(addr, bytes((CODE_OPEN, level)) + bytes(password), None)


def close_channel(addr: int) -> Request:
    return Request(addr, b"\x02", None)


def read_serial(addr: int) -> Request:
    return Request(addr, b"\x08\x00", 7)


def read_ratios(addr: int) -> Request:
    return Request(addr, b"\x08\x02", 4)


def read_variant(addr: int) -> Request:
    # The 6-byte old form; the 12-byte `08 12 00` form is missing on pre-2016 meters.
    return Request(addr, b"\x08\x12", 6)


def read_time(addr: int) -> Request:
    return Request(addr, b"\x04\x00", 8)


def read_energy(addr: int, array: int = 0, month: int = 0, tariff: int = 0) -> Request:
    """05h: array 0 from reset, 1 this year, 2 last year, 3 month (``month`` 1..12), 4 today,
    5 yesterday, 6 per-phase A+ (12-byte reply). ``tariff`` 0 = sum, 1..4."""
    if not 0 <= array <= 0xF:
        raise ValueError(f"energy array must be 0..15, got {array}")
    if not 0 <= month <= 12:
        raise ValueError(f"month must be 0..12, got {month}")
    if not 0 <= tariff <= 0xF:
        raise ValueError(f"tariff must be 0..15, got {tariff}")
    return Request(addr, bytes((CODE_READ_ENERGY, array << 4 | month, tariff)), 12 if array == 6 else 16)


def aux_reply_len(bwri: int) -> int:
    """Data length of an 08 11 reply: 2 bytes for temperature and KU, 3 for the rest."""
    return 2 if bwri >> 4 in (Q_TEMPERATURE, Q_KU) else 3


def group_reply_len(bwri: int) -> int:
    """Data length of an 08 16 reply: 4 values (sum, L1..L3) for powers and PF, 3 (L1..L3) for
    U/I/angles, 1 for frequency."""
    q = bwri >> 4
    if q in (Q_POWER, Q_PF):
        return 12
    if q in (Q_VOLTAGE, Q_CURRENT, Q_ANGLE, Q_LINE_VOLTAGE):
        return 9
    if q == Q_FREQUENCY:
        return 3
    raise ValueError(f"BWRI {bwri:#04x}: quantity {q:#x} cannot be group-read with 08 16")


def read_aux(addr: int, bwri: int) -> Request:
    if not 0 <= bwri <= 0xFF:
        raise ValueError(f"BWRI must be one byte, got {bwri}")
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_AUX, bwri)), aux_reply_len(bwri))


def read_aux_group(addr: int, bwri: int) -> Request:
    if not 0 <= bwri <= 0xFF:
        raise ValueError(f"BWRI must be one byte, got {bwri}")
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_AUX_GROUP, bwri)), group_reply_len(bwri))


def password_bytes(password: str, encoding: str = "digits") -> bytes:
    """The six password bytes as the meter expects them.

    ``digits``: six decimal digits sent as binary digit values (111111 -> 01 01 01 01 01 01), the
    factory behaviour; ``ascii``: the six characters' bytes; ``hex``: 12 hex characters, raw bytes.
    Messages never echo the password.
    """
    if encoding == "digits":
        if len(password) != 6 or not password.isascii() or not password.isdigit():
            raise ValueError("Mercury password (encoding 'digits') must be exactly 6 decimal digits")
        return bytes(ord(c) - 0x30 for c in password)
    if encoding == "ascii":
        if len(password) != 6 or not password.isascii():
            raise ValueError("Mercury password (encoding 'ascii') must be exactly 6 ASCII characters")
        return password.encode("ascii")
    if encoding == "hex":
        try:
            raw = bytes.fromhex(password)
        except ValueError:
            raw = b""
        if len(raw) != 6 or len(password.replace(" ", "")) != 12:
            raise ValueError("Mercury password (encoding 'hex') must be exactly 12 hex characters (6 bytes)")
        return raw
    raise ValueError(f"unknown password encoding {encoding!r}; expected 'digits', 'ascii' or 'hex'")


# ---------------------------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply with a good CRC: the address and the data between address and CRC."""

    address: int
    data: bytes

    @property
    def status(self) -> int | None:
        """The status code (low nibble) when this is a 4-byte status reply, else None."""
        return self.data[0] & 0x0F if len(self.data) == 1 else None


def check_status(reply: Reply) -> Reply:
    """Raise for a nonzero status reply; return the reply unchanged otherwise (data or status 0).

    Status 5 (channel not open) raises :class:`SessionClosed` so the driver can reopen and retry.
    """
    status = reply.status
    if not status:
        return reply
    text = STATUS_TEXT.get(status, "unknown status")
    message = (f"meter at address {reply.address} answered status {status} ({text}), "
               f"raw status byte {reply.data[0]:#04x}")
    if status == STATUS_NOT_OPEN:
        raise SessionClosed(message, status)
    raise MeterError(message, status)


class ReplyFramer:
    """Receives the reply to ONE request, bytes in, :class:`Reply` out.

    ``feed`` returns the reply once it is complete and its CRC checks, ``None`` while more bytes are
    needed. It never times out: the line owns the clock and reads :attr:`pending` for its report.

    A half-duplex adapter may hand our own request back first: a buffer that starts with the complete
    request is stripped of it (``echoed`` becomes True); while the buffer is a strict prefix of the
    request we wait. Exception: test-channel's request ``[addr] 00 crc`` *is* its OK reply, so there
    it is taken as the reply. (Close-channel's request equals a status-2 reply; there the echo
    reading wins, so a real status 2 to close-channel surfaces as a timeout.)

    The CRC is checked before lengths decide anything (FACTS pitfall 1): the full expected frame is
    tried first, then a 4-byte status frame; with both failing, more than ``max_len`` bytes is a
    :class:`FrameTooLong`, otherwise a :class:`CrcError` as soon as the expected length is there.
    """

    __slots__ = ("request", "max_len", "echoed", "_buf", "_req", "_expected", "_echo_possible")

    def __init__(self, request: Request, max_len: int = 64) -> None:
        self.request = request
        self.max_len = max_len
        self.echoed = False
        self._buf = bytearray()
        self._req = request.encode()
        self._expected = request.frame_len
        if self._expected > max_len:
            raise ValueError(f"expected reply of {self._expected} bytes exceeds max_len {max_len}")
        # test-channel's request doubles as its reply: never strip it.
        self._echo_possible = request.body != b"\x00"

    @property
    def pending(self) -> bytes:
        """Bytes received and not yet consumed (after the echo, if one was stripped)."""
        return bytes(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> Reply | None:
        buf = self._buf
        buf += data
        if self._echo_possible:
            req = self._req
            n = len(buf)
            if n < len(req):
                if req.startswith(buf):
                    return None
                self._echo_possible = False
            elif buf.startswith(req):
                del buf[:len(req)]
                self.echoed = True
                self._echo_possible = False
                if not buf:
                    return None
            else:
                self._echo_possible = False
        n = len(buf)
        if not n:
            return None
        if buf[0] != self.request.address:
            raise AddressMismatch(
                f"reply address: expected {self.request.address:#04x}, got {buf[0]:#04x}", buf[: self.max_len])
        expected = self._expected
        take = 0
        with memoryview(buf) as view:  # CRC over slices of the one buffer, no copies
            if n >= expected and check_crc(view[:expected]):
                take = expected
            elif expected != 4 and n >= 4 and check_crc(view[:4]):
                take = 4
        if take:
            return self._take(take)
        if n > self.max_len:
            # The hard cap on the receive buffer: a flood (wrong baud rate, a chatty device) ends here.
            raise FrameTooLong(f"{n} bytes received without a valid reply, limit {self.max_len}",
                               buf[: self.max_len])
        if n >= expected:
            raise CrcError(f"reply of {expected} bytes to {self._req.hex(' ')}: CRC mismatch", buf[:expected])
        return None

    def _take(self, length: int) -> Reply:
        buf = self._buf
        reply = Reply(buf[0], bytes(buf[1 : length - 2]))
        del buf[:length]
        return reply


# --------------------------------------------------------------------------------------------- decoders


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise FrameError(f"{what}: expected {length} data bytes, got {len(data)}", data)


def decode_energy(data: bytes) -> tuple[int | None, int | None, int | None, int | None]:
    """05h reply (16 bytes): A+, A-, R+, R- in Wh/varh; ``None`` for FF FF FF FF (not supported)."""
    _need(data, 16, "energy")
    w = _ENERGY4.unpack(data)
    return (
        None if (v := w[0] << 16 | w[1]) == _ABSENT4 else v,
        None if (v := w[2] << 16 | w[3]) == _ABSENT4 else v,
        None if (v := w[4] << 16 | w[5]) == _ABSENT4 else v,
        None if (v := w[6] << 16 | w[7]) == _ABSENT4 else v,
    )


def decode_phase_energy(data: bytes) -> tuple[int | None, int | None, int | None]:
    """05 6x reply (12 bytes): A+ per phase L1, L2, L3 in Wh."""
    _need(data, 12, "per-phase energy")
    w = _ENERGY3.unpack(data)
    return (
        None if (v := w[0] << 16 | w[1]) == _ABSENT4 else v,
        None if (v := w[2] << 16 | w[3]) == _ABSENT4 else v,
        None if (v := w[4] << 16 | w[5]) == _ABSENT4 else v,
    )


def decode_serial(data: bytes) -> tuple[str, _dt.date | None]:
    """08 00 reply (7 bytes): serial number (4 binary bytes, each printed as 2 digits) and the
    manufacturing date (binary day, month, year); ``None`` if the date is not a valid date."""
    _need(data, 7, "serial number")
    if max(data[:4]) > 99:
        raise FrameError("serial number: bytes must be 0..99", data)
    serial = "%02d%02d%02d%02d" % (data[0], data[1], data[2], data[3])
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
        raise FrameError(f"variant: expected 6 or 12 data bytes, got {len(data)}", data)
    code = data[1] & 0x0F
    try:
        return CONSTANTS[code]
    except KeyError:
        raise FrameError(f"variant: unknown meter constant code {code}", data) from None


def decode_3byte(data: bytes) -> tuple[int, bool, bool] | None:
    """A 3-byte value: (magnitude, active negative, reactive negative), or None for FF FF FF."""
    if data == _ABSENT3:
        return None
    b0, low = _V3.unpack(data)
    return (b0 & 0x3F) << 16 | low, bool(b0 & 0x80), bool(b0 & 0x40)


def _sign_bit(bwri: int) -> int:
    """Which direction bit of b0 carries this quantity's sign (0: unsigned)."""
    q = bwri >> 4
    if q == Q_POWER:
        kind = (bwri >> 2) & 3
        if kind == POWER_P:
            return 0x80
        if kind == POWER_Q:
            return 0x40
        return 0
    if q == Q_PF:
        return 0x80  # per WB fixtures: 88 87 90 -> -561.287
    return 0


def _value3(b0: int, low: int, divisor: int, sign_bit: int) -> float | None:
    if b0 == 0xFF and low == 0xFFFF:
        return None
    v = ((b0 & 0x3F) << 16 | low) / divisor
    return -v if b0 & sign_bit else v


def decode_aux(bwri: int, data: bytes) -> float | None:
    """08 11 <bwri> reply: one value in SI units; None when the meter marks it absent."""
    q = bwri >> 4
    if q == Q_TEMPERATURE:
        _need(data, 2, "temperature")
        return float(_TEMP.unpack(data)[0])
    if q == Q_KU:
        # WB decodes KU as little-endian x0.01; its fixtures are synthetic, semantics unverified.
        _need(data, 2, "KU")
        return _KU.unpack(data)[0] / 100
    divisor = _DIVISOR.get(q)
    if divisor is None:
        raise FrameError(f"BWRI {bwri:#04x}: no decoder for quantity {q:#x}", data)
    _need(data, 3, f"value for BWRI {bwri:#04x}")
    b0, low = _V3.unpack(data)
    return _value3(b0, low, divisor, _sign_bit(bwri))


def decode_aux_group(bwri: int, data: bytes) -> tuple[float | None, ...]:
    """08 16 <bwri> reply: (sum, L1, L2, L3) for P/Q/S/PF, (L1, L2, L3) for U/I/angles, (F,) for frequency."""
    q = bwri >> 4
    length = group_reply_len(bwri)
    _need(data, length, f"group read BWRI {bwri:#04x}")
    divisor = _DIVISOR[q]
    sign = _sign_bit(bwri)
    if length == 12:
        f = _V3x4.unpack(data)
    elif length == 9:
        f = _V3x3.unpack(data)
    else:
        f = _V3.unpack(data)
    return tuple(_value3(f[i], f[i + 1], divisor, sign) for i in range(0, len(f), 2))


def _bcd(b: int, data: bytes) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise FrameError(f"BCD byte {b:#04x} is not a decimal pair", data)
    return hi * 10 + lo


def decode_time(data: bytes) -> tuple[_dt.datetime, int]:
    """04 00 reply (8 BCD bytes: ss mm hh dow dd MM yy season): naive meter-local time and the season
    byte (1 = winter)."""
    _need(data, 8, "time")
    ss, mm, hh, _dow, dd, mo, yy = (_bcd(b, data) for b in data[:7])
    try:
        return _dt.datetime(2000 + yy, mo, dd, hh, mm, ss), data[7]
    except ValueError as exc:
        raise FrameError(f"time: not a valid date/time ({exc})", data) from None


# --------------------------------------------------------------------------------------------- encoders
# The simulator's side of the same layouts. They validate ranges so a test never sends what a meter
# could not.


def encode_status(addr: int, status: int) -> bytes:
    return append_crc(bytes((addr, status)))


def _energy_word(value: int | None) -> int:
    if value is None:
        return _ABSENT4
    if not 0 <= value < _ABSENT4:
        raise ValueError(f"energy counter out of range 0..{_ABSENT4 - 1}: {value}")
    return value


def encode_energy(a_plus: int | None, a_minus: int | None, r_plus: int | None, r_minus: int | None) -> bytes:
    words = []
    for v in (a_plus, a_minus, r_plus, r_minus):
        v = _energy_word(v)
        words += (v >> 16, v & 0xFFFF)
    return _ENERGY4.pack(*words)


def encode_phase_energy(l1: int | None, l2: int | None, l3: int | None) -> bytes:
    words = []
    for v in (l1, l2, l3):
        v = _energy_word(v)
        words += (v >> 16, v & 0xFFFF)
    return _ENERGY3.pack(*words)


def encode_3byte(magnitude: int | None, *, active_negative: bool = False, reactive_negative: bool = False) -> bytes:
    """A raw 3-byte value; ``None`` gives FF FF FF (absent)."""
    if magnitude is None:
        return _ABSENT3
    if not 0 <= magnitude <= _MAX_3BYTE:
        raise ValueError(f"3-byte magnitude out of range 0..{_MAX_3BYTE}: {magnitude}")
    b0 = magnitude >> 16 | (0x80 if active_negative else 0) | (0x40 if reactive_negative else 0)
    if b0 == 0xFF and magnitude & 0xFFFF == 0xFFFF:
        raise ValueError("FF FF FF is reserved for 'value absent'; pass None for that")
    return _V3.pack(b0, magnitude & 0xFFFF)


def _encode_value3(bwri: int, value: float | None) -> bytes:
    if value is None:
        return _ABSENT3
    q = bwri >> 4
    divisor = _DIVISOR.get(q)
    if divisor is None:
        raise ValueError(f"BWRI {bwri:#04x}: no 3-byte encoding for quantity {q:#x}")
    sign = _sign_bit(bwri)
    negative = value < 0
    if negative and not sign:
        raise ValueError(f"BWRI {bwri:#04x} is unsigned, got {value}")
    magnitude = round(abs(value) * divisor)
    return encode_3byte(magnitude, active_negative=negative and sign == 0x80,
                        reactive_negative=negative and sign == 0x40)


def encode_aux(bwri: int, value: float | None) -> bytes:
    """The data bytes of an 08 11 <bwri> reply carrying ``value`` (SI units, rounded to resolution)."""
    q = bwri >> 4
    if q == Q_TEMPERATURE:
        return _TEMP.pack(round(value if value is not None else -1))
    if q == Q_KU:
        return _KU.pack(round((value or 0.0) * 100))
    return _encode_value3(bwri, value)


def encode_aux_group(bwri: int, values: tuple[float | None, ...] | list[float | None]) -> bytes:
    length = group_reply_len(bwri)
    if len(values) * 3 != length:
        raise ValueError(f"BWRI {bwri:#04x}: group reply holds {length // 3} values, got {len(values)}")
    return b"".join(_encode_value3(bwri, v) for v in values)


def encode_serial(serial: str, made: _dt.date | None) -> bytes:
    if len(serial) != 8 or not serial.isdigit():
        raise ValueError(f"serial must be 8 decimal digits, got {serial!r}")
    head = bytes(int(serial[i : i + 2]) for i in range(0, 8, 2))
    tail = bytes((made.day, made.month, made.year - 2000)) if made else b"\x00\x00\x00"
    return head + tail


def encode_ratios(ku: int, ki: int) -> bytes:
    return _RATIOS.pack(ku, ki)


def encode_variant(constant: int) -> bytes:
    """A 6-byte 08 12 reply with the meter constant; the other bits describe a generic 3-phase
    meter and are not interpreted by pollerd."""
    try:
        code = _CONSTANT_CODES[constant]
    except KeyError:
        raise ValueError(f"meter constant must be one of {sorted(_CONSTANT_CODES)}, got {constant}") from None
    return bytes((0xB4, 0x60 | code, 0x82, 0x00, 0x00, 0x00))


def _to_bcd(v: int) -> int:
    return (v // 10) << 4 | v % 10


def encode_time(when: _dt.datetime, season: int = 1) -> bytes:
    """8 BCD bytes ss mm hh dow dd MM yy season; dow 1 = Monday .. 7 = Sunday."""
    if not 2000 <= when.year <= 2099:
        raise ValueError(f"year must be 2000..2099, got {when.year}")
    return bytes((
        _to_bcd(when.second), _to_bcd(when.minute), _to_bcd(when.hour), _to_bcd(when.isoweekday()),
        _to_bcd(when.day), _to_bcd(when.month), _to_bcd(when.year - 2000), season,
    ))
