"""Mercury 230 framing: addresses, command codes, statuses, the request and reply frames, CRC'd
encoding, the session requests (test, open, close), reply framers and the redacted form of a request.

Frames (FACTS.md in shared/vectors/mercury230)::

    request : [addr][code][params...][crc lo][crc hi]
    reply   : [addr][data...][crc lo][crc hi]

The reply does not repeat the code, so the expected reply length is a property of the request
(:attr:`Request.reply_len`). A 4-byte reply is a status (ack/nak) whatever was asked.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong, MeterError, SessionClosed
from pollerd.protocols.crc import append_crc, check_crc, crc16_modbus

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


def length_error(what: str, expected: str | int, data: bytes) -> FrameError:
    """``what: expected 15 bytes, got 12: 88 01 ...``; the bytes are also kept on ``err.frame``."""
    err = FrameError(f"{what}: expected {expected} bytes, got {len(data)}: {bytes(data).hex(' ') or '(none)'}")
    err.frame = bytes(data)
    return err


def _need(data: bytes, length: int, what: str) -> None:
    if len(data) != length:
        raise length_error(what, length, data)


def encode_status(addr: int, status: int) -> bytes:
    return append_crc(bytes((addr, status)))


PARAM_FAST_INFO = 0x01
PARAM_NET_ADDRESS = 0x05
PARAM_LAST_PROFILE = 0x13
PARAM_FIXED = 0x14
WRITE_FREEZE = 0x08
WRITE_TIME = 0x0C
WRITE_CORRECT_TIME = 0x0D

MEMORY_PROFILE = 3


class AnyReplyFramer:
    """Framer for a raw request pollerd does not know: the first CRC-valid frame from the right address.
    (A longer reply whose prefix happens to pass the CRC would be cut short; 1 in 65536 per position.)"""

    __slots__ = ("address", "echoed", "_buf")

    def __init__(self, address: int) -> None:
        self.address = address
        self._buf = bytearray()
        self.echoed = False

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def feed(self, data: bytes) -> Reply | None:
        self._buf += data
        if self._buf and self._buf[0] != self.address:
            raise AddressMismatch(f"reply from address {self._buf[0]}, expected {self.address}", self._buf)
        for end in range(4, len(self._buf) + 1):
            if check_crc(self._buf[:end]):
                return Reply(self.address, bytes(self._buf[1:end - 2]))
        if len(self._buf) > 256:
            raise FrameTooLong("no valid frame in 256 bytes", self._buf)
        return None


def redacted(req: Request) -> str:
    """The request as hex for logs and errors, with an open-channel password masked."""
    frame = req.encode().hex(" ")
    if req.body[:1] == bytes((CODE_OPEN,)):
        parts = frame.split(" ")
        parts[3:9] = ["**"] * 6   # addr 01 level | six password bytes | CRC (the CRC stays: it is not the secret)
        return " ".join(parts)
    return frame
