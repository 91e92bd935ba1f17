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
import functools
import struct
from dataclasses import dataclass

from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong, MeterError, SessionClosed
from pollerd.protocols.crc import append_crc, check_crc, crc16_modbus

__all__ = [
    "ADDRESS_BROADCAST", "ADDRESS_UNIVERSAL", "CONSTANTS", "STATUS_TEXT", "Reply", "ReplyFramer", "Request",
    "check_status", "close_channel", "decode_3byte", "decode_aux", "decode_aux_group", "decode_energy",
    "decode_phase_energy", "decode_ratios", "decode_serial", "decode_time", "decode_variant",
    "encode_3byte", "encode_aux", "encode_aux_group", "encode_energy", "encode_phase_energy",
    "encode_ratios", "encode_serial", "encode_status", "encode_time", "encode_variant", "group_reply_len",
    "aux_reply_len", "open_channel", "password_bytes", "raw_request", "read_aux", "read_aux_group",
    "read_energy", "read_ratios", "read_serial", "read_time", "read_variant", "test_channel",
    # issue 3
    "ENERGY_ARRAYS", "FIXED_READS", "FixedRead", "JOURNALS", "JOURNAL_RECORDS", "LastProfile",
    "PROFILE_FIRST_ADDRESS", "PROFILE_RECORD_LEN", "PROFILE_STATUS_BITS", "PROFILE_STEP", "ProfileRecord",
    "aux_channel", "decode_fast_info", "decode_fixed", "decode_journal", "decode_last_profile",
    "decode_net_address", "decode_profile_record", "decode_reply", "decode_version", "describe_request",
    "encode_fixed", "encode_journal", "encode_last_profile", "encode_profile_record", "fixed_reply_len",
    "freeze", "group_channels", "local_ts", "next_profile_address", "prev_profile_address",
    "profile_energy_wh", "profile_quality", "profile_status_flags", "read_fast_info", "read_fixed", "read_journal",
    "read_last_profile", "read_net_address", "read_profile", "read_version", "set_time",
    "CORRECTION_LIMIT", "correct_time", "decode_time_of_day",
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
        return _encode_frame(self.address, self.body)


@functools.lru_cache(maxsize=4096)
def _encode_frame(address: int, body: bytes) -> bytes:
    # A poller sends the same few hundred requests over and over: their CRCs are worth keeping.
    return append_crc(bytes((address,)) + body)


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

    __slots__ = ("request", "max_len", "echoed", "_buf", "_req", "_expected", "_echo_possible", "_secret", "_took")

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
        # An open-channel request carries the password: an echo of it (partial, garbled) must not reach
        # error messages or `pending`, which end up in logs and the API.
        self._secret = request.body[:1] == bytes((CODE_OPEN,))
        self._took = self._expected

    @property
    def shape(self) -> tuple[int, int]:
        """(address, reply length): replies carry no command code, so two requests to one meter whose replies
        have the same length cannot be told apart by their replies (the line fences them, issue 14)."""
        return (self.request.address, self._expected)

    @property
    def reply_shape(self) -> tuple[int, int]:
        """The shape of the reply actually taken: a status reply to a data request is (address, 4)."""
        return (self.request.address, self._took)

    def fence(self) -> tuple[bytes, ReplyFramer]:
        """Test channel: answered with status 0 without a session, and its 4-byte reply cannot be taken for
        a data reply, nor a data reply for it (the CRC of a wrong cut fails)."""
        req = test_channel(self.request.address)
        return req.encode(), ReplyFramer(req)

    @property
    def pending(self) -> bytes:
        """Bytes received and not yet consumed (after the echo, if one was stripped)."""
        return self._evidence(self._buf)

    def _evidence(self, data: bytes | bytearray) -> bytes:
        """Bytes fit to quote in an error: for open channel at most address, code and level (its 4-byte
        reply never leaves more than 3 pending; anything longer may be an echo holding the password)."""
        return bytes(data[:3]) if self._secret else bytes(data)

    def feed(self, data: bytes | bytearray | memoryview) -> Reply | None:
        buf = self._buf
        # Fast path, the common case: the whole reply in one chunk, nothing buffered, not our echo.
        if (not buf and type(data) is bytes and len(data) == self._expected and data
                and data[0] == self.request.address and crc16_modbus(data) == 0
                and not (self._echo_possible and self._req.startswith(data))):
            self._echo_possible = False
            return Reply(data[0], data[1:-2])
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
                f"reply address: expected {self.request.address:#04x}, got {buf[0]:#04x}",
                self._evidence(buf[: self.max_len]))
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
                               self._evidence(buf[: self.max_len]))
        if n >= expected:
            shown = self._req.hex(" ")
            if self._secret:
                shown = " ".join(shown.split(" ")[:3] + ["**"] * 6 + shown.split(" ")[9:])
            raise CrcError(f"reply of {expected} bytes to {shown}: CRC mismatch",
                           self._evidence(buf[:expected]))
        return None

    def _take(self, length: int) -> Reply:
        self._took = length
        buf = self._buf
        reply = Reply(buf[0], bytes(buf[1 : length - 2]))
        del buf[:length]
        return reply


# --------------------------------------------------------------------------------------------- decoders


def _length_error(what: str, expected: str | int, data: bytes) -> FrameError:
    """``what: expected 15 bytes, got 12: 88 01 ...``; the bytes are also kept on ``err.frame``."""
    err = FrameError(f"{what}: expected {expected} bytes, got {len(data)}: {bytes(data).hex(' ') or '(none)'}")
    err.frame = bytes(data)
    return err


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise _length_error(what, length, data)


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
        raise _length_error("variant", "6 or 12", data)
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
    if b0 & sign_bit:
        if b0 == 0xFF and low == 0xFFFF:
            return None
        return -(((b0 & 0x3F) << 16 | low) / divisor)
    if b0 == 0xFF and low == 0xFFFF:
        return None
    return ((b0 & 0x3F) << 16 | low) / divisor


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
        a0, a1, b0, b1, c0, c1, d0, d1 = _V3x4.unpack(data)
        return (_value3(a0, a1, divisor, sign), _value3(b0, b1, divisor, sign), _value3(c0, c1, divisor, sign),
                _value3(d0, d1, divisor, sign))
    if length == 9:
        a0, a1, b0, b1, c0, c1 = _V3x3.unpack(data)
        return (_value3(a0, a1, divisor, sign), _value3(b0, b1, divisor, sign), _value3(c0, c1, divisor, sign))
    a0, a1 = _V3.unpack(data)
    return (_value3(a0, a1, divisor, sign),)


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


# ======================================================================================= issue 3 additions
# Identity extras, load profile, energy archives, fixed values, journals, clock writes, and the one
# place that recognises any request and turns its reply into fields and readings.

PARAM_FAST_INFO = 0x01
PARAM_NET_ADDRESS = 0x05
PARAM_LAST_PROFILE = 0x13
PARAM_FIXED = 0x14
WRITE_FREEZE = 0x08
WRITE_TIME = 0x0C
WRITE_CORRECT_TIME = 0x0D

MEMORY_PROFILE = 3
PROFILE_RECORD_LEN = 15
PROFILE_STEP = 0x10
PROFILE_FIRST_ADDRESS = 0x0010  # where the first record after a profile (re)initialisation sits [MOL]


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


# ------------------------------------------------------------------------------------------ load profile


@dataclass(frozen=True, slots=True)
class LastProfile:
    """08 13 reply: where the newest load-profile record is and which interval it covers.

    ``start`` is naive meter-local time (no season applied); None when the meter holds no record yet."""

    address: int
    status: int
    start: _dt.datetime | None
    period: int


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    """One load-profile record (06 03 ...): impulse counts of one interval, ``None`` for FF FF (channel
    absent). ``start`` is the interval START, naive meter-local; None for an empty slot."""

    status: int
    start: _dt.datetime | None
    period: int
    a_plus: int | None
    a_minus: int | None
    r_plus: int | None
    r_minus: int | None


_LAST_PROFILE = struct.Struct(">HB5sB")
_PROFILE = struct.Struct("<B5sB4H")
_PROFILE_FLAT = struct.Struct("<7B4H")
# BCD byte -> value, -1 for a byte that is not two decimal digits: one list index per byte on the hot path.
_BCD_VALUE: list[int] = [(b >> 4) * 10 + (b & 0x0F) if b >> 4 < 10 and b & 0x0F < 10 else -1 for b in range(256)]
_ABSENT2 = 0xFFFF

PROFILE_STATUS_BITS: dict[int, str] = {
    # Inferred, not verified: the one real 08 13 reply in the collection ([MOL], the interval still
    # running, 13:00 with T = 30) carries status 0x1A, and the record being filled is the one a poller
    # must not take as final. No source describes the other bits; they stay "bitN".
    0x02: "incomplete",
}


def profile_status_flags(status: int) -> set[str]:
    """Names of the bits set in a profile status byte; bits without a known meaning are "bitN".

    Only bit 1 (0x02, "incomplete") is named, and that is inferred (see :data:`PROFILE_STATUS_BITS`);
    no public source for overflow or season bits was found, so they appear as "bitN"."""
    if not 0 <= status <= 0xFF:
        raise ValueError(f"status must be one byte, got {status}")
    return {PROFILE_STATUS_BITS.get(1 << i, f"bit{i}") for i in range(8) if status >> i & 1}


def profile_quality(rec: ProfileRecord) -> str | None:
    """The quality of a record's readings, None when good: "incomplete" (the interval still running),
    "status:bitN,..." (other status bits, meaning unknown), or "partial" when the interval does not
    start on a multiple of its period: the meter began it mid-interval (power returned, clock changed),
    so it covers less than a whole period. Field firmware (ti-cortex-m4/tm4c1294ncpdt, profile2x16.c)
    treats records whose minute is not a multiple of 30 the same way, as partial half-hours."""
    flags = profile_status_flags(rec.status)
    if "incomplete" in flags:
        return "incomplete"
    if flags:
        return "status:" + ",".join(sorted(flags))
    if rec.start is not None and 0 < rec.period <= 60 and (
            (rec.start.hour * 60 + rec.start.minute) % rec.period or rec.start.second):
        return "partial"
    return None


def next_profile_address(addr: int) -> int:
    """The address of the record after ``addr``: records are 0x10 apart and the 16-bit address wraps
    (0xFFF0 -> 0x0000). [MOL]'s backward walk goes 0x0010 -> 0xFFF0 instead, skipping 0x0000; until a
    source settles that slot, a reader should accept either (an empty slot decodes with start None)."""
    if not 0 <= addr <= 0xFFFF:
        raise ValueError(f"profile address must be 0..0xFFFF, got {addr}")
    return (addr + PROFILE_STEP) & 0xFFFF


def prev_profile_address(addr: int) -> int:
    if not 0 <= addr <= 0xFFFF:
        raise ValueError(f"profile address must be 0..0xFFFF, got {addr}")
    return (addr - PROFILE_STEP) & 0xFFFF


def read_last_profile(addr: int) -> Request:
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_LAST_PROFILE)), 9)


def read_profile(addr: int, record_address: int, length: int = PROFILE_RECORD_LEN,
                 memory: int = MEMORY_PROFILE) -> Request:
    """06 <memory> <hi> <lo> <length>: ``length`` bytes of memory ``memory`` from ``record_address``.

    One load-profile record is 15 bytes. No public source describes what a longer read of memory 3
    returns (one record per 16-byte slot, or 15-byte records back to back), so pollerd asks one record
    per request; longer reads are allowed for raw use and come back undecoded."""
    if not 0 <= record_address <= 0xFFFF:
        raise ValueError(f"record address must be 0..0xFFFF, got {record_address}")
    if not 1 <= length <= 0xFF:
        raise ValueError(f"length must be 1..255, got {length}")
    if not 0 <= memory <= 0xFF:
        raise ValueError(f"memory must be one byte, got {memory}")
    return Request(addr, bytes((CODE_READ_MEMORY, memory, record_address >> 8, record_address & 0xFF, length)),
                   length)


def _bcd_stamp(raw: bytes, order: str, data: bytes, what: str) -> _dt.datetime | None:
    """A BCD timestamp; ``order`` names each byte (s m h d M y). All 00 or all FF is an empty slot."""
    if raw.count(0) == len(raw) or raw.count(0xFF) == len(raw):
        return None
    v = dict(zip(order, (_bcd(b, data) for b in raw)))
    try:
        return _dt.datetime(2000 + v["y"], v["M"], v["d"], v["h"], v["m"], v.get("s", 0))
    except ValueError as exc:
        raise FrameError(f"{what}: not a valid date/time ({exc})", data) from None


def _to_bcd_stamp(when: _dt.datetime | None, order: str) -> bytes:
    if when is None:
        return bytes(len(order))
    if not 2000 <= when.year <= 2099:
        raise ValueError(f"year must be 2000..2099, got {when.year}")
    parts = {"s": when.second, "m": when.minute, "h": when.hour, "d": when.day, "M": when.month,
             "y": when.year - 2000}
    return bytes(_to_bcd(parts[c]) for c in order)


def decode_last_profile(data: bytes) -> LastProfile:
    """08 13 reply (9 bytes): address hi lo, status, hh mm dd MM yy (BCD), period T in minutes."""
    _need(data, 9, "last profile record")
    address, status, stamp, period = _LAST_PROFILE.unpack(data)
    return LastProfile(address, status, _bcd_stamp(stamp, "hmdMy", data, "last profile record"), period)


def encode_last_profile(info: LastProfile) -> bytes:
    return _LAST_PROFILE.pack(info.address, info.status, _to_bcd_stamp(info.start, "hmdMy"), info.period)


def _count(v: int) -> int | None:
    return None if v == _ABSENT2 else v


def decode_profile_record(data: bytes) -> ProfileRecord:
    """06 03 reply (15 bytes): status, hh mm dd MM yy (BCD, interval start), T, then A+, A-, R+, R-
    impulse counts as 16-bit little-endian (unlike the 4-byte energies); FF FF = channel absent."""
    if len(data) != PROFILE_RECORD_LEN:
        raise _length_error("profile record", PROFILE_RECORD_LEN, data)
    status, hh, mi, dd, mo, yy, period, ap, am, rp, rm = _PROFILE_FLAT.unpack(data)
    bcd = _BCD_VALUE
    h, mn, d, mon, y = bcd[hh], bcd[mi], bcd[dd], bcd[mo], bcd[yy]
    if h < 0 or mn < 0 or d < 0 or mon < 0 or y < 0 or not (mon and d):
        # the rare paths: empty slot, bad BCD, impossible date, with their messages
        start = _bcd_stamp(data[1:6], "hmdMy", data, "profile record")
    else:
        try:
            start = _dt.datetime(2000 + y, mon, d, h, mn)
        except ValueError as exc:
            raise FrameError(f"profile record: not a valid date/time ({exc})", data) from None
    return ProfileRecord(status, start, period, None if ap == 0xFFFF else ap, None if am == 0xFFFF else am,
                         None if rp == 0xFFFF else rp, None if rm == 0xFFFF else rm)


def encode_profile_record(rec: ProfileRecord) -> bytes:
    counts = []
    for v in (rec.a_plus, rec.a_minus, rec.r_plus, rec.r_minus):
        if v is None:
            v = _ABSENT2
        elif not 0 <= v < _ABSENT2:
            raise ValueError(f"impulse count out of range 0..{_ABSENT2 - 1}: {v}")
        counts.append(v)
    return _PROFILE.pack(rec.status, _to_bcd_stamp(rec.start, "hmdMy"), rec.period, *counts)


def profile_energy_wh(count: int, constant: int) -> float:
    """Energy of one interval in Wh (varh) from its impulse count: N / (2·A) kWh [FACTS, MOL real data:
    T = 30, A = 500, N = 42 -> 42 Wh in half an hour = 84 W average]."""
    if constant <= 0:
        raise ValueError(f"meter constant must be positive, got {constant}")
    return count * 500 / constant


# ----------------------------------------------------------------------------------------- energy arrays

ENERGY_ARRAYS: dict[int, tuple[str, str]] = {
    0: ("current", "counter: energy accumulated since the last reset (a meter reading)"),
    1: ("yearly", "energy accumulated during the current year so far (consumption in the period)"),
    2: ("yearly", "energy accumulated during the previous year (consumption in the period)"),
    3: ("monthly", "energy accumulated during month N (1..12, low nibble of the array byte; the last 12 "
                   "months, so month N is this year's if it has begun, else last year's)"),
    4: ("daily", "energy accumulated today so far (consumption in the period)"),
    5: ("daily", "energy accumulated yesterday (consumption in the period)"),
    6: ("current", "A+ per phase since reset (12-byte reply: L1, L2, L3)"),
    9: ("yearly", "counter at the start of the current year"),
    10: ("yearly", "counter at the start of the previous year"),
    11: ("monthly", "counter at the start of month N"),
    12: ("daily", "counter at the start of today"),
    13: ("daily", "counter at the start of yesterday"),
}
"""05h arrays: archive name and what the four values (A+, A-, R+, R-) mean.

Arrays 1-5 are the energy accumulated IN the period ("за текущий год / за предыдущий год / за месяц /
за текущие сутки / за предыдущие сутки"), not counters at its start: so name them both
ru-asdx/mercury-em ``mercury-em.py`` (its ``--array-number`` help lists 0-6 as "За ..." and, as separate
arrays, 9-13 as "На начало ..." = counter at the start of the period) and GreezXII/Mercury230Protocol
``ProtocolEntities.cs`` (``DataArrays``: CurrentDay "за текущие сутки", PastDay "за прошедшие сутки").
Arrays 9-13 come from that Mercury 234/236 tool only; a Mercury 230 may refuse them with status 1.
"""


# ------------------------------------------------------------------------------------------ fixed values


def freeze(addr: int) -> Request:
    """03 08: freeze the fixed-data snapshot (status reply), then read it with :func:`read_fixed`.

    Address 0xFE (broadcast) would freeze every meter on the bus at one instant, but nobody answers a
    broadcast, and whether meters accept 03 08 that way is not verified: send it without waiting for a
    reply, and use a unicast freeze where an acknowledgement matters."""
    return Request(addr, bytes((CODE_WRITE, WRITE_FREEZE)), None)


def fixed_reply_len(bwri: int) -> int:
    """Data length of an 08 14 reply: P/Q/S 4 values (Σ, L1..L3) of 4 bytes, PF 4 x 3, U/I/angles
    3 x 3, F 3, E0 (time of freezing) 8."""
    if bwri == 0xE0:
        return 8
    q = bwri >> 4
    if q == Q_POWER:
        return 16
    if q == Q_PF:
        return 12
    if q in (Q_VOLTAGE, Q_CURRENT, Q_ANGLE):
        return 9
    if q == Q_FREQUENCY:
        return 3
    raise ValueError(f"BWRI {bwri:#04x}: no known fixed-data (08 14) layout")


def read_fixed(addr: int, bwri: int) -> Request:
    if not 0 <= bwri <= 0xFF:
        raise ValueError(f"BWRI must be one byte, got {bwri}")
    return Request(addr, bytes((CODE_READ_PARAM, PARAM_FIXED, bwri)), fixed_reply_len(bwri))


_P4 = struct.Struct("<HH")
_P4x4 = struct.Struct("<8H")


def _power4(hi_word: int, lo_word: int, sign_bit: int) -> float | None:
    # Wire b0 b1 b2 b3 = two little-endian words, high word first; b1 (top of the high word) carries
    # the direction bits 7/6, masked off [YII UnpackSignedPower, MOL real sums].
    if hi_word == 0xFFFF and lo_word == 0xFFFF:
        return None
    b1 = hi_word >> 8
    v = ((hi_word & 0x3FFF) << 16 | lo_word) / 100
    return -v if b1 & sign_bit else v


def decode_fixed(bwri: int, data: bytes) -> tuple[float | None, ...]:
    """08 14 <bwri> reply: (Σ, L1, L2, L3) for P/Q/S/PF, (L1, L2, L3) for U/I/angles, (F,) for frequency,
    in SI units. For BWRI E0 (time of freezing) use :func:`decode_time`."""
    if bwri == 0xE0:
        raise ValueError("08 14 E0 is the time of freezing: decode it with decode_time")
    length = fixed_reply_len(bwri)
    _need(data, length, f"fixed values BWRI {bwri:#04x}")
    if length == 16:
        w = _P4x4.unpack(data)
        sign = _sign_bit(bwri)
        return tuple(_power4(w[i], w[i + 1], sign) for i in range(0, 8, 2))
    return decode_aux_group(bwri, data) if length != 3 else (decode_aux(bwri, data),)


def encode_fixed(bwri: int, values: tuple[float | None, ...] | list[float | None]) -> bytes:
    length = fixed_reply_len(bwri)
    if bwri == 0xE0:
        raise ValueError("08 14 E0 carries the time of freezing: use encode_time")
    if length != 16:
        if length == 3:
            (v,) = values
            return encode_aux(bwri, v)
        return encode_aux_group(bwri, values)
    if len(values) != 4:
        raise ValueError(f"BWRI {bwri:#04x}: fixed power holds 4 values, got {len(values)}")
    sign = _sign_bit(bwri)
    out = []
    for v in values:
        if v is None:
            out += (0xFFFF, 0xFFFF)
            continue
        negative = v < 0
        if negative and not sign:
            raise ValueError(f"BWRI {bwri:#04x} is unsigned, got {v}")
        magnitude = round(abs(v) * 100)
        if magnitude > 0x3FFFFFFF:
            raise ValueError(f"4-byte power magnitude out of range: {v}")
        hi = magnitude >> 16 | ((sign << 8) if negative else 0)
        out += (hi, magnitude & 0xFFFF)
    return _P4x4.pack(*out)


@dataclass(frozen=True, slots=True)
class FixedRead:
    bwri: int
    reply_len: int
    channels: tuple[str, ...]
    unit: str


FIXED_READS: tuple[FixedRead, ...] = (
    FixedRead(0xE0, 8, (), ""),  # time of freezing: the readings' ts
    FixedRead(0x00, 16, ("P", "P.L1", "P.L2", "P.L3"), "W"),
    FixedRead(0x04, 16, ("Q", "Q.L1", "Q.L2", "Q.L3"), "var"),
    FixedRead(0x08, 16, ("S", "S.L1", "S.L2", "S.L3"), "VA"),
    FixedRead(0x11, 9, ("U.L1", "U.L2", "U.L3"), "V"),
    FixedRead(0x21, 9, ("I.L1", "I.L2", "I.L3"), "A"),
    FixedRead(0x30, 12, ("PF", "PF.L1", "PF.L2", "PF.L3"), ""),
    FixedRead(0x40, 3, ("F",), "Hz"),
    FixedRead(0x51, 9, ("angle.L1-L2", "angle.L1-L3", "angle.L2-L3"), "°"),
)
"""What to read after :func:`freeze` for one consistent snapshot, with reply data lengths and channels."""


# --------------------------------------------------------------------------------------------- journals

JOURNALS: dict[int, tuple[str, str]] = {
    # [GRZ] GreezXII/Mercury230Protocol ProtocolEntities.cs `Journals` (also FACTS.md).
    0x01: ("power_off", "meter power off (start) and back on (end)"),
    0x03: ("phase_off.L1", "phase L1 voltage off (start) and back on (end)"),
    0x04: ("phase_off.L2", "phase L2 voltage off (start) and back on (end)"),
    0x05: ("phase_off.L3", "phase L3 voltage off (start) and back on (end)"),
    0x12: ("cover_open", "meter cover opened (start) and closed (end)"),
    0x17: ("phase_current.L1", "phase L1 current on (start) and off (end)"),
    0x18: ("phase_current.L2", "phase L2 current on (start) and off (end)"),
    0x19: ("phase_current.L3", "phase L3 current on (start) and off (end)"),
}
"""Journal number -> (event code, English text). Other journal numbers exist (time correction, resets,
programming...) but no public source in reach gives their numbers; read them raw with read_journal."""

JOURNAL_RECORDS = 10  # records 0..9 per journal


def read_journal(addr: int, journal: int, record: int) -> Request:
    """04 <journal> <record 0..9>: one journal record, 12 bytes."""
    if not 1 <= journal <= 0xFF:
        raise ValueError(f"journal must be 1..255 (04 00 is the clock), got {journal}")
    if not 0 <= record < JOURNAL_RECORDS:
        raise ValueError(f"journal record must be 0..{JOURNAL_RECORDS - 1}, got {record}")
    return Request(addr, bytes((CODE_READ_TIME, journal, record)), 12)


def decode_journal(data: bytes) -> tuple[_dt.datetime | None, _dt.datetime | None]:
    """04 jj rr reply (12 bytes): event start and end, each 6 BCD bytes ss mm hh dd MM yy, naive
    meter-local; an all-zero (or all-FF) stamp is None (empty record / event not ended) [GRZ]."""
    _need(data, 12, "journal record")
    return (_bcd_stamp(data[:6], "smhdMy", data, "journal record"),
            _bcd_stamp(data[6:], "smhdMy", data, "journal record"))


def encode_journal(start: _dt.datetime | None, end: _dt.datetime | None) -> bytes:
    return _to_bcd_stamp(start, "smhdMy") + _to_bcd_stamp(end, "smhdMy")


# ------------------------------------------------------------------------------------------------ clock


def set_time(addr: int, when: _dt.datetime, season: int = 1) -> Request:
    """03 0C: set the clock (access level 2): 8 bytes as the 04 00 reply, ss mm hh dow dd MM yy season.

    pollerd never sends this on its own (a billing meter's clock is set by a person); it is here for the
    decode tool, raw frames and the simulator."""
    if season not in (0, 1):
        raise ValueError(f"season must be 0 (summer) or 1 (winter), got {season}")
    return Request(addr, bytes((CODE_WRITE, WRITE_TIME)) + encode_time(when, season), None)


def decode_time_of_day(data: bytes) -> _dt.time:
    """The 03 0D parameter (3 BCD bytes ss mm hh) as a time of day."""
    _need(data, 3, "time of day")
    ss, mm, hh = (_bcd(b, data) for b in data)
    try:
        return _dt.time(hh, mm, ss)
    except ValueError as exc:
        raise FrameError(f"time of day: not valid ({exc})", data) from None


# The largest correction the meter accepts in a day, as commonly quoted ("within 4 minutes"); not from
# the vendor document. A concentrator firmware that corrects Mercury 230 clocks in the field
# (ti-cortex-m4/tm4c1294ncpdt, sensors/device_b.h) keeps to 230 s, below it.
CORRECTION_LIMIT = 240


def correct_time(addr: int, when: _dt.datetime | _dt.time) -> Request:
    """03 0D ss mm hh (BCD): correct the clock to this time of day (meter local); reply is a status.

    The meter accepts one correction a day (status 4 for the next) and only a small one (see
    :data:`CORRECTION_LIMIT`). The date is not sent, so a correction cannot cross midnight.

    Source of the layout: ti-cortex-m4/tm4c1294ncpdt, ``sensors/device_b.c`` ``QueryControlB`` (a
    metering concentrator's Mercury 230 driver: address, 03, 0D, BCD seconds, minutes, hours; a 4-byte
    status reply) next to its level-2 ``03 0C`` set time, which matches this module's :func:`set_time`.
    Not checked against the vendor's protocol document or a real meter."""
    return Request(addr, bytes((CODE_WRITE, WRITE_CORRECT_TIME, _to_bcd(when.second), _to_bcd(when.minute),
                                _to_bcd(when.hour))), None)


# ----------------------------------------------------------------------------------- request recognition


def _strip_crc(frame: bytes) -> bytes:
    """The frame without CRC when its last two bytes are a valid CRC, else the frame as given."""
    return frame[:-2] if len(frame) >= 4 and check_crc(frame) else frame


def describe_request(frame: bytes | bytearray | memoryview) -> tuple[str, Request]:
    """Recognise a request frame (address .. [CRC], CRC optional) and return its name and Request.

    A 3-byte frame whose last two bytes happen to be a valid CRC of the first is read as CRC'd (such a
    request carries no body and is invalid anyway). Raises FrameError for a request it does not know."""
    raw = _strip_crc(bytes(frame))
    if len(raw) < 2:
        raise FrameError(f"request too short: {raw.hex(' ') or '(empty)'}; expected address and command",
                         raw)
    addr, body = raw[0], raw[1:]
    code, n = body[0], len(body)
    p1 = body[1] if n > 1 else -1
    if body == b"\x00":
        return "test_channel", test_channel(addr)
    if code == CODE_OPEN and n == 8 and body[1] in (1, 2):
        return "open_channel", open_channel(addr, body[1], body[2:8])
    if body == b"\x02":
        return "close_channel", close_channel(addr)
    if code == CODE_WRITE and body == b"\x03\x08":
        return "freeze", freeze(addr)
    if code == CODE_WRITE and n == 10 and p1 == WRITE_TIME:
        return "set_time", Request(addr, body, None)
    if code == CODE_WRITE and n == 5 and p1 == WRITE_CORRECT_TIME:
        return "correct_time", Request(addr, body, None)
    if code == CODE_READ_TIME and body == b"\x04\x00":
        return "read_time", read_time(addr)
    if code == CODE_READ_TIME and n == 3 and p1 != 0 and body[2] < JOURNAL_RECORDS:
        return "read_journal", read_journal(addr, body[1], body[2])
    if code == CODE_READ_ENERGY and n == 3 and (body[1] & 0x0F) <= 12 and body[2] <= 0x0F:
        return "read_energy", read_energy(addr, body[1] >> 4, body[1] & 0x0F, body[2])
    if code == CODE_READ_MEMORY and n == 5 and body[4]:
        req = read_profile(addr, body[2] << 8 | body[3], body[4], body[1])
        is_profile = body[1] == MEMORY_PROFILE and body[4] == PROFILE_RECORD_LEN
        return ("read_profile" if is_profile else "read_memory"), req
    if code == CODE_READ_PARAM and n == 2:
        simple = {PARAM_SERIAL: ("read_serial", read_serial), PARAM_FAST_INFO: ("read_fast_info", read_fast_info),
                  PARAM_RATIOS: ("read_ratios", read_ratios), PARAM_VERSION: ("read_version", read_version),
                  PARAM_NET_ADDRESS: ("read_net_address", read_net_address),
                  PARAM_VARIANT: ("read_variant", read_variant),
                  PARAM_LAST_PROFILE: ("read_last_profile", read_last_profile)}.get(p1)
        if simple is not None:
            return simple[0], simple[1](addr)
    if code == CODE_READ_PARAM and n == 3:
        bwri = body[2]
        try:
            if p1 == PARAM_AUX and (bwri >> 4) in _AUX_QUANTITIES:
                return "read_aux", read_aux(addr, bwri)
            if p1 == PARAM_AUX_GROUP:
                return "read_aux_group", read_aux_group(addr, bwri)
            if p1 == PARAM_FIXED:
                return "read_fixed", read_fixed(addr, bwri)
            if p1 == PARAM_VARIANT and bwri == 0:
                return "read_variant", Request(addr, body, 12)
        except ValueError:
            pass
    raise FrameError(f"unknown Mercury 230 request: {raw.hex(' ')}", raw)


_AUX_QUANTITIES = frozenset((Q_POWER, Q_VOLTAGE, Q_CURRENT, Q_PF, Q_FREQUENCY, Q_ANGLE, Q_KU, Q_TEMPERATURE,
                             Q_LINE_VOLTAGE))


# ----------------------------------------------------------------------------------------- reply decoding

_PHASES = ("L1", "L2", "L3")
_ANGLE_PAIRS = ("L1-L2", "L1-L3", "L2-L3")
_LINE_PAIRS = ("L1-L2", "L2-L3", "L3-L1")
_POWER_BASE = {POWER_P: ("P", "W"), POWER_Q: ("Q", "var"), POWER_S: ("S", "VA")}


def aux_channel(bwri: int) -> tuple[str, str]:
    """(channel, unit) of one 08 11 value, DESIGN.md §3 names."""
    q, phase = bwri >> 4, bwri & 0x03
    if q == Q_POWER:
        base, unit = _POWER_BASE.get((bwri >> 2) & 3, ("P", "W"))
        return (base if phase == 0 else f"{base}.{_PHASES[phase - 1]}"), unit
    if q == Q_PF:
        return ("PF" if phase == 0 else f"PF.{_PHASES[phase - 1]}"), ""
    if q == Q_FREQUENCY:
        return "F", "Hz"
    if q == Q_TEMPERATURE:
        return "T.meter", "°C"
    if phase == 0:
        raise ValueError(f"BWRI {bwri:#04x}: phase 0 is not defined for quantity {q:#x}")
    if q == Q_VOLTAGE:
        return f"U.{_PHASES[phase - 1]}", "V"
    if q == Q_CURRENT:
        return f"I.{_PHASES[phase - 1]}", "A"
    if q == Q_ANGLE:
        return f"angle.{_ANGLE_PAIRS[phase - 1]}", "°"
    if q == Q_KU:
        return f"KU.{_PHASES[phase - 1]}", "%"
    if q == Q_LINE_VOLTAGE:
        return f"U.{_LINE_PAIRS[phase - 1]}", "V"
    raise ValueError(f"BWRI {bwri:#04x}: no channel for quantity {q:#x}")


def group_channels(bwri: int) -> tuple[tuple[str, ...], str]:
    """(channels, unit) of an 08 16 or 08 14 multi-value reply, in reply order."""
    q = bwri >> 4
    if q in (Q_POWER, Q_PF):
        base, unit = aux_channel(bwri & 0xFC)
        return (base, f"{base}.L1", f"{base}.L2", f"{base}.L3"), unit
    if q == Q_FREQUENCY:
        return ("F",), "Hz"
    names = tuple(aux_channel((bwri & 0xF0) | i) for i in (1, 2, 3))
    return tuple(n for n, _ in names), names[0][1]


def _reading(channel: str, value: float | int, unit: str, archive: str, ts: int | str | None,
             quality: str | None = None) -> dict[str, object]:
    r: dict[str, object] = {"channel": channel, "value": value, "unit": unit, "archive": archive, "ts": ts}
    if quality:
        r["quality"] = quality
    return r


def local_ts(when: _dt.datetime, tz: _dt.tzinfo | None) -> int | str:
    """Naive meter-local time -> UTC unix seconds with ``tz``, else the local ISO string. In the
    repeated hour of a DST fall-back the first occurrence is taken (fold=0)."""
    if tz is None:
        return when.isoformat()
    return int(when.replace(tzinfo=tz).timestamp())


def _iso(when: _dt.datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def decode_reply(request: Request, reply: Reply, *, constant: int | None = None,
                 tz: _dt.tzinfo | None = None) -> dict[str, object]:
    """Turn any reply to a recognised request into ``{"fields": {...}, "readings": [...]}``.

    Readings are ``{"channel", "value", "unit", "archive", "ts"}`` (plus ``"quality"`` when not good).
    ``ts`` is None where the reply carries no time (current values: the caller stamps them), the interval
    start for profile records (UTC unix seconds with ``tz``, meter-local ISO otherwise). A status reply
    gives ``{"status": n, "status_text": ...}`` in fields. Wrong lengths raise FrameError. A password in
    an open-channel request is never echoed (``"password": "***"``)."""
    name, req = describe_request(request.encode())
    if req.reply_len != request.reply_len:  # e.g. a raw request with a caller-given length
        req = request
    body = request.body
    fields: dict[str, object] = {}
    readings: list[dict[str, object]] = []
    if name == "open_channel":
        fields.update(access_level=body[1], password="***")
    elif name == "set_time":
        when, season = decode_time(body[2:10])
        fields.update(time=when.isoformat(), season=season)
    elif name == "correct_time":
        fields["time"] = decode_time_of_day(body[2:5]).isoformat()
    status = reply.status
    if status is not None and (req.reply_len is None or len(reply.data) == 1):
        fields.update(status=status, status_text=STATUS_TEXT.get(status, "unknown status"))
        return {"fields": fields, "readings": readings}
    data = reply.data
    if req.reply_len is None:
        raise _length_error(name, 1, data)

    if name == "read_serial":
        serial, made = decode_serial(data)
        fields.update(serial=serial, manufactured=made.isoformat() if made else None)
    elif name == "read_fast_info":
        serial, made, version, const = decode_fast_info(data)
        fields.update(serial=serial, manufactured=made.isoformat() if made else None, version=version,
                      constant=const)
    elif name == "read_version":
        fields["version"] = decode_version(data)
    elif name == "read_ratios":
        fields["ku"], fields["ki"] = decode_ratios(data)
    elif name == "read_variant":
        fields["constant"] = decode_variant(data)
    elif name == "read_net_address":
        fields["network_address"] = decode_net_address(data)
    elif name == "read_time":
        when, season = decode_time(data)
        fields.update(time=when.isoformat(), season=season, season_text="winter" if season == 1 else "summer")
    elif name == "read_energy":
        array, month, tariff = body[1] >> 4, body[1] & 0x0F, body[2]
        archive, meaning = ENERGY_ARRAYS.get(array, ("current", "unknown array"))
        fields.update(array=array, array_meaning=meaning, tariff=tariff)
        if month:
            fields["month"] = month
        suffix = f".T{tariff}" if tariff else ""
        if array == 6:
            for phase, v in zip(_PHASES, decode_phase_energy(data)):
                if v is not None:
                    readings.append(_reading(f"A+.{phase}{suffix}", v, "Wh", archive, None))
        else:
            for (ch, unit), v in zip((("A+", "Wh"), ("A-", "Wh"), ("R+", "varh"), ("R-", "varh")),
                                     decode_energy(data)):
                if v is not None:
                    readings.append(_reading(ch + suffix, v, unit, archive, None))
    elif name == "read_aux":
        bwri = body[2]
        ch, unit = aux_channel(bwri)
        v = decode_aux(bwri, data)
        if v is not None:
            readings.append(_reading(ch, v, unit, "current", None))
    elif name in ("read_aux_group", "read_fixed"):
        bwri = body[2]
        if name == "read_fixed" and bwri == 0xE0:
            when, season = decode_time(data)
            fields.update(frozen_at=when.isoformat(), season=season)
        else:
            values = decode_aux_group(bwri, data) if name == "read_aux_group" else decode_fixed(bwri, data)
            channels, unit = group_channels(bwri)
            readings.extend(_reading(ch, v, unit, "current", None)
                            for ch, v in zip(channels, values) if v is not None)
            if name == "read_fixed":
                fields["fixed"] = True
    elif name == "read_last_profile":
        info = decode_last_profile(data)
        # "record_status", not "status": the tool's top-level status is the reply's ack status.
        fields.update(last_record_address=info.address, record_status=info.status,
                      status_flags=sorted(profile_status_flags(info.status)), start=_iso(info.start),
                      period=info.period)
    elif name == "read_profile":
        rec = decode_profile_record(data)
        flags = profile_status_flags(rec.status)
        fields.update(record_address=body[2] << 8 | body[3], record_status=rec.status,
                      status_flags=sorted(flags), start=_iso(rec.start), period=rec.period,
                      impulses={"A+": rec.a_plus, "A-": rec.a_minus, "R+": rec.r_plus, "R-": rec.r_minus})
        if constant is not None:
            fields["constant"] = constant
        if constant is not None and rec.start is not None:
            ts = local_ts(rec.start, tz)
            quality = profile_quality(rec)
            for ch, unit, n in (("A+", "Wh", rec.a_plus), ("A-", "Wh", rec.a_minus), ("R+", "varh", rec.r_plus),
                                ("R-", "varh", rec.r_minus)):
                if n is not None:
                    readings.append(_reading(ch, profile_energy_wh(n, constant), unit, "profile", ts, quality))
    elif name == "read_journal":
        journal, record = body[1], body[2]
        code, text = JOURNALS.get(journal, (f"journal_{journal:02x}", f"journal {journal:#04x}"))
        start, end = decode_journal(data)
        fields.update(journal=journal, record=record, code=code, text=text, start=_iso(start), end=_iso(end))
    else:  # read_memory or a raw request with a caller-given length: bytes only
        if len(data) != req.reply_len:
            raise _length_error(name, req.reply_len, data)
        fields["data"] = data.hex(" ")
    return {"fields": fields, "readings": readings}
