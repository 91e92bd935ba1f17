"""M-Bus link layer (EN 13757-2, FT1.2 frames, FACTS.md in shared/vectors/mbus): constants, the codec's
errors, frame encoding and decoding with its checksum, and the reply framer.

    single char : E5                                  (acknowledgement)
    short       : 10 C A CS 16
    control     : 68 03 03 68 C A CI CS 16
    long        : 68 L L 68 C A CI data... CS 16      (L counts C..last data byte; CS = sum mod 256 of C..data)

Every rejection raises :class:`MbusFrameError` (a :class:`~pollerd.errors.FrameError`) whose ``problem``
names what was wrong in libmbus' vocabulary (``premature_end_of_data``, ``too_many_dife``...), and whose
message carries the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong, TruncatedFrame

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

    __slots__ = ("_buf", "address", "expect", "max_len")

    def __init__(self, expect: str = "any", address: int | None = None) -> None:
        self._buf = bytearray()
        self.expect = expect
        # The primary address asked: a long frame from another one is a late reply of another meter on the
        # bus (issue 14: stored as this meter's values before). None: not checked (secondary addressing,
        # where a selected meter may answer with 0xFD or its primary address).
        self.address = address
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
        # A meter still selected by secondary address answers with 0xFD whatever it is asked as.
        if self.address is not None and frame.kind == "long" and frame.a not in (self.address, ADDRESS_SELECTED):
            raise AddressMismatch(f"reply from primary address {frame.a}, expected {self.address}", buf[:total])
        return frame


def _fail(problem: str, message: str, frame: bytes) -> MbusFrameError:
    cls = MbusTruncated if problem.startswith("premature_end") else MbusFrameError
    return cls(problem, message, frame)
