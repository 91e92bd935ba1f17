"""IEC 62056-21 (ex IEC 61107) mode C: sans-I/O codec.

Messages (FACTS.md in shared/vectors/iec62056-21)::

    sign-on         / ? [device address] ! CR LF
    identification  / XXX Z [\\W] ident CR LF          (no checksum)
    option select   ACK V Z Y CR LF                   (Y: 0 readout, 1 programming)
    data message    STX data-block [! CR LF] ETX BCC  (EOT instead of ETX: partial block, ACK asks for more)
    command         SOH C D [STX data] ETX BCC        (P0/P1 password, R1 read, W1 write, B0 break)
    acknowledgement ACK | NAK

The BCC covers every byte after the first SOH/STX up to and including ETX/EOT. Its algorithm is a
property of the meter family, not of the standard alone: XOR for most, ``sum & 0x7F`` for Energomera
(:data:`CHECKSUMS`). The BCC byte may itself be 0x03/0x04, so a frame ends one byte after the first
ETX/EOT, never at the "last ETX".

All characters are 7-bit; on a serial line the UART does 7E1. Modems in transparent mode pass the parity
bit as the 8th data bit: :func:`strip_parity` / :func:`add_parity` convert.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong, GarbageError, ParityError

from . import obis

__all__ = [
    "ACK", "BAUD_CHARS", "CHECKSUMS", "DataSet", "ETX", "EOT", "GarbageError", "IdentFramer", "Identification",
    "Message", "MessageFramer", "NAK", "ParityError", "SOH", "STX", "Value", "add_parity", "baud_char",
    "bcc_sum7", "bcc_xor", "break_command", "check_address", "command", "encode_message", "option_select",
    "parity_ok", "parse_data_block", "parse_identification", "password_command", "read_command",
    "same_address", "sign_on", "strip_parity", "MAX_MESSAGE", "MAX_IDENT",
]

SOH = 0x01
STX = 0x02
ETX = 0x03
EOT = 0x04
ACK = 0x06
NAK = 0x15
CRLF = b"\r\n"

# A full readout of a big three-phase meter is a few kilobytes; past this it is a babbling line.
MAX_MESSAGE = 32 * 1024
# "/" + 3 + baud + up to 16 identification characters (the standard's limit) + enhanced-id pairs + CR LF;
# generous, because some meters exceed the 16.
MAX_IDENT = 128
MAX_ADDRESS = 32

# Mode C/E baud characters; mode B uses letters (no option select step there).
BAUD_CHARS: dict[str, int] = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
_MODE_B: dict[str, int] = {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
_CHAR_OF_BAUD = {v: k for k, v in BAUD_CHARS.items()}


# ---------------------------------------------------------------------------------------------- checksums


def bcc_xor(data: bytes | bytearray | memoryview) -> int:
    """XOR of all bytes. Folds the bytes as one big integer: C speed instead of a Python loop per byte."""
    n = len(data)
    if n == 0:
        return 0
    x = int.from_bytes(data, "little")
    while n > 1:
        half = (n + 1) // 2
        x = (x & ((1 << (8 * half)) - 1)) ^ (x >> (8 * half))
        n = half
    return x


def bcc_sum7(data: bytes | bytearray | memoryview) -> int:
    """Energomera CE102M/CE30x: the byte sum masked to 7 bits (verified on all their [WB] frames)."""
    return sum(data) & 0x7F


CHECKSUMS: dict[str, Callable[[bytes | bytearray | memoryview], int]] = {"xor": bcc_xor, "sum7": bcc_sum7}


# ------------------------------------------------------------------------------------------------- parity

_STRIP = bytes(b & 0x7F for b in range(256))
_EVEN = bytes((b & 0x7F) | (0x80 if bin(b & 0x7F).count("1") & 1 else 0) for b in range(256))


def strip_parity(data: bytes) -> bytes:
    return data.translate(_STRIP)


def add_parity(data: bytes) -> bytes:
    """Set the 8th bit to even parity, for a transparent modem that sends 8N1 to a 7E1 meter."""
    return data.translate(_EVEN)


def parity_ok(data: bytes) -> int:
    """Index of the first byte whose 8th bit is not its even parity, or -1."""
    if data.translate(_EVEN) == data:
        return -1
    for i, b in enumerate(data):
        if _EVEN[b] != b:
            return i
    return -1  # pragma: no cover - unreachable


# ----------------------------------------------------------------------------------------------- requests

_ADDRESS_OK = re.compile(r"[\x21-\x7E]*")


def check_address(address: str) -> str:
    """A device address: up to 32 printable characters without '/', '?' and '!' (they delimit sign-on)."""
    if len(address) > MAX_ADDRESS:
        raise ValueError(f"device address is {len(address)} characters, at most {MAX_ADDRESS} allowed")
    if not _ADDRESS_OK.fullmatch(address) or any(c in address for c in "/?!"):
        raise ValueError(f"device address {address!r} must be printable ASCII without spaces, '/', '?', '!'")
    return address


def sign_on(address: str = "", *, crlf: bool = True) -> bytes:
    """``crlf=False`` for Energomera's sign-on immediately followed by a command."""
    return b"/?" + check_address(address).encode("ascii") + (b"!\r\n" if crlf else b"!")


def baud_char(baud: int) -> str | None:
    return _CHAR_OF_BAUD.get(baud)


def option_select(baud: str, mode: str | int, protocol: str = "0") -> bytes:
    """ACK V Z Y CR LF: ``mode`` 0 data readout, 1 programming, 6 manufacturer-specific."""
    mode = str(mode)
    if baud not in BAUD_CHARS or len(mode) != 1 or len(protocol) != 1:
        raise ValueError(f"bad option select: protocol {protocol!r}, baud {baud!r}, mode {mode!r}")
    return bytes((ACK,)) + (protocol + baud + mode).encode("ascii") + CRLF


def encode_message(head: bytes, checksum: str = "xor") -> bytes:
    """``head`` starts with SOH or STX and ends with ETX or EOT; appends the BCC."""
    return head + bytes((CHECKSUMS[checksum](head[1:]),))


def command(cmd: str, data: bytes | None = None, checksum: str = "xor") -> bytes:
    """SOH C D [STX data] ETX BCC."""
    if len(cmd) != 2:
        raise ValueError(f"a command is 2 characters, got {cmd!r}")
    head = bytes((SOH,)) + cmd.encode("ascii")
    if data is not None:
        head += bytes((STX,)) + data
    return encode_message(head + bytes((ETX,)), checksum)


def password_command(password: str, checksum: str = "xor") -> bytes:
    return command("P1", b"(" + password.encode("ascii") + b")", checksum)


def read_command(address: str, argument: str = "", checksum: str = "xor") -> bytes:
    """R1 of ``address(argument)``; an empty argument is what most meters expect."""
    return command("R1", (address + "(" + argument + ")").encode("ascii"), checksum)


def break_command(checksum: str = "xor") -> bytes:
    return command("B0", None, checksum)


# ------------------------------------------------------------------------------------------ identification


@dataclass(frozen=True, slots=True)
class Identification:
    manufacturer: str       # three letters; a lowercase third letter means 20 ms minimum reaction time
    baud_char: str
    ident: str
    enhanced: str = ""      # characters after each backslash (enhanced identification / capabilities)

    @property
    def fast_reaction(self) -> bool:
        return self.manufacturer[2:3].islower()

    @property
    def baud(self) -> int | None:
        return BAUD_CHARS.get(self.baud_char) or _MODE_B.get(self.baud_char)

    @property
    def mode(self) -> str:
        return "C" if self.baud_char in BAUD_CHARS else "B" if self.baud_char in _MODE_B else "A"

    def as_dict(self) -> dict[str, object]:
        return {"manufacturer": self.manufacturer, "baud_char": self.baud_char, "baud": self.baud,
                "fast_reaction": self.fast_reaction, "enhanced": self.enhanced, "ident": self.ident}


def parse_identification(line: bytes) -> Identification:
    """``/XXXZ[\\W]ident CR LF`` (the CR LF is optional here)."""
    text = line[:-2] if line.endswith(CRLF) else line
    try:
        s = text.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("identification is not 7-bit ASCII", line) from None
    if len(s) < 5 or s[0] != "/" or not s[1:4].isalpha() or not s[1:5].isprintable():
        raise FrameError("expected identification '/XXXZ...'", line)
    pos, enhanced = 5, ""
    while s.startswith("\\", pos) and pos + 1 < len(s):
        enhanced += s[pos + 1]
        pos += 2
    ident = s[pos:]
    if not ident.isprintable():
        raise FrameError("identification has control characters", line)
    return Identification(s[1:4], s[4], ident, enhanced)


# ------------------------------------------------------------------------------------------------ framers


class _Base:
    """Receive buffer shared by the framers: optional parity stripping and skipping our own echo
    (half-duplex RS-485 adapters that hear themselves)."""

    def __init__(self, request: bytes = b"", strip: bool = False) -> None:
        self._buf = bytearray()
        self._strip = strip
        self._echo = strip_parity(request) if strip else request
        self.echoed = False

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def _take(self, data: bytes) -> bool:
        """Add ``data``; False while an echo of the request might still be arriving."""
        if self._strip:
            bad = parity_ok(data)
            if bad >= 0:
                raise ParityError(f"parity error at byte {len(self._buf) + bad}", bytes(self._buf) + data)
            data = data.translate(_STRIP)
        self._buf += data
        echo = self._echo
        if echo and not self.echoed:
            n = min(len(echo), len(self._buf))
            if self._buf[:n] == echo[:n]:
                if n < len(echo):
                    return False
                del self._buf[:len(echo)]
                self.echoed = True
            else:
                self._echo = b""
        return True


class IdentFramer(_Base):
    """Receives the identification message after a sign-on."""

    def feed(self, data: bytes) -> Identification | None:
        if not self._take(data) or not self._buf:
            return None
        buf = self._buf
        if buf[0] != 0x2F:  # "/"
            raise GarbageError(f"expected identification starting with '/', got 0x{buf[0]:02X}", buf)
        end = buf.find(CRLF)
        if end < 0:
            if len(buf) > MAX_IDENT:
                raise FrameTooLong(f"identification longer than {MAX_IDENT} bytes without CR LF", buf[:64])
            return None
        line = bytes(buf[:end + 2])
        del buf[:end + 2]
        return parse_identification(line)


@dataclass(frozen=True, slots=True)
class Message:
    kind: str               # "data" (STX...), "command" (SOH...), "ack", "nak", "byte" (any other single byte)
    body: bytes = b""       # between STX and ETX/EOT
    command: str = ""       # "P0", "B0"... of a SOH message
    partial: bool = False   # ended with EOT: send ACK for the next block
    raw: bytes = b""


class MessageFramer(_Base):
    """Receives one data message, command message or acknowledgement and checks its BCC.

    ``single_byte``: where a one-byte acknowledgement is what is expected (after P1, W1), any other lone
    byte is returned as kind "byte" (Neva answers a wrong password with 0x07) instead of being garbage.

    ``address``: the address an R1 asked for. A data message that starts with another address is the late
    reply to an earlier read (issue 14: a converter that held it back and delivered it after this request)
    and is refused with :class:`AddressMismatch`, so the line waits for silence and drops this read's own
    reply, and the read is asked again. A reply without an address cannot be checked and is let through.
    ``hex_obis``: addresses are Neva's 8 hex digits (see :func:`same_address`).
    """

    def __init__(self, checksum: str = "xor", *, request: bytes = b"", strip: bool = False,
                 single_byte: bool = False, max_len: int = MAX_MESSAGE, address: str | None = None,
                 hex_obis: bool = False) -> None:
        super().__init__(request, strip)
        self._bcc = CHECKSUMS[checksum]
        self._single = single_byte
        self._max = max_len
        self._scan = 1
        self._address = address
        self._hex = hex_obis

    def feed(self, data: bytes) -> Message | None:
        if not self._take(data) or not self._buf:
            return None
        buf = self._buf
        first = buf[0]
        if first in (ACK, NAK):
            del buf[:1]
            return Message("ack" if first == ACK else "nak", raw=bytes((first,)))
        if first != STX and first != SOH:
            if self._single:
                del buf[:1]
                return Message("byte", raw=bytes((first,)))
            raise GarbageError(f"expected STX, SOH, ACK or NAK, got 0x{first:02X}", buf[:64])
        # The end is the first ETX/EOT; the byte after it is the BCC, whatever its value.
        n = len(buf)
        e1 = buf.find(ETX, self._scan)
        e2 = buf.find(EOT, self._scan)
        end = e1 if e2 < 0 or (0 <= e1 < e2) else e2
        if end < 0:
            self._scan = n
            if n > self._max:
                raise FrameTooLong(f"message longer than {self._max} bytes without ETX/EOT", buf[:64])
            return None
        if end + 1 >= n:
            self._scan = end  # wait for the BCC byte
            return None
        frame = bytes(buf[:end + 2])
        del buf[:end + 2]
        self._scan = 1
        want = self._bcc(memoryview(frame)[1:end + 1])
        if frame[-1] != want:
            raise CrcError(f"BCC mismatch: expected 0x{want:02X}, got 0x{frame[-1]:02X}", frame)
        partial = frame[end] == EOT
        if first == STX:
            if self._address is not None:
                self._check_address(frame, end)
            return Message("data", frame[1:end], "", partial, frame)
        cmd = frame[1:3].decode("ascii", "replace")
        body = frame[4:end] if end > 3 and frame[3] == STX else b""
        return Message("command", body, cmd, partial, frame)


    def _check_address(self, frame: bytes, end: int) -> None:
        assert self._address is not None
        head = frame[1:end]
        cut = head.find(b"(")
        if cut <= 0:
            return  # "(value)" or no data set: nothing to compare (the driver does not store bare replies)
        got = head[:cut].decode("ascii", "replace").strip()
        if not same_address(got, self._address, hex_obis=self._hex):
            raise AddressMismatch(f"reply for address {got}, asked for {self._address} (a late reply to an "
                                  "earlier read?)", frame)


def same_address(got: str, asked: str, *, hex_obis: bool = False) -> bool:
    """Whether a reply's data set address answers an R1 for ``asked``. Meters may write an OBIS code more
    fully or more briefly than it was asked (``1.8.0`` / ``1-0:1.8.0*255``): groups both give must agree,
    and C, D must be there in both. Anything else (Energomera's ``ET0PE``...) must match exactly."""
    if got.upper() == asked.upper():
        return True
    parse = obis.parse_hex if hex_obis else obis.parse
    a, b = parse(got), parse(asked)
    if a is None or b is None:
        return False
    pairs = ((a.a, b.a), (a.b, b.b), (a.c, b.c), (a.d, b.d), (a.e, b.e), (a.f, b.f))
    return all(x is None or y is None or x == y for x, y in pairs)


# ---------------------------------------------------------------------------------------------- data sets


@dataclass(frozen=True, slots=True)
class Value:
    text: str   # as sent, leading/trailing spaces removed
    unit: str   # "" when absent or empty after '*'


@dataclass(frozen=True, slots=True)
class DataSet:
    """``address(value*unit)(value*unit)...``. ``address`` is "" where the meter omitted it (Neva answers
    some R1 reads with a bare ``(01)``); billing suffixes (``*12``, ``&12``) stay part of it."""

    address: str
    values: tuple[Value, ...]


# One value group: whatever precedes the "(" (an address, or only line breaks for a continuation line),
# then the parenthesised value. Anything the pattern cannot take is caught by the contiguity check.
_GROUP = re.compile(r"([^()]*)\(([^()]*)\)")
_ADDR = re.compile(r"[\x21-\x7E]+")
_TAIL = re.compile(r"\s*(?:!\s*)?")


def _bad(msg: str, body: bytes | str) -> FrameError:
    raw = body.encode("latin-1", "replace") if isinstance(body, str) else body
    return FrameError(msg, raw[:128])


def parse_data_block(body: bytes | str) -> tuple[DataSet, ...]:
    """Parse a data block (the bytes between STX and ETX/EOT). Raises FrameError on anything that is
    not a data set: a stray parenthesis, control characters, an address with spaces."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("ascii")
        except UnicodeDecodeError:
            raise _bad("data block is not 7-bit ASCII", bytes(body)) from None
    else:
        text = body
    out: list[DataSet] = []
    address: str | None = None
    values: list[Value] = []
    pos = 0
    for m in _GROUP.finditer(text):
        if m.start() != pos:
            raise _bad(f"unexpected {text[pos]!r} at offset {pos} of the data block", text)
        pos = m.end()
        prefix = m.group(1).strip()
        if prefix:
            if not _ADDR.fullmatch(prefix) or "!" in prefix:
                raise _bad(f"bad data set address {prefix!r} at offset {m.start()}", text)
            if address is not None:
                out.append(DataSet(address, tuple(values)))
            address, values = prefix, []
        elif address is None:
            address, values = "", []
        inner = m.group(2)
        if not inner.isprintable():
            raise _bad(f"control character in the value of {address or '(no address)'!r}", text)
        value, star, unit = inner.partition("*")
        values.append(Value(value.strip(), unit.strip() if star else ""))
    if address is not None:
        out.append(DataSet(address, tuple(values)))
    tail = _TAIL.fullmatch(text, pos)
    if tail is None:
        raise _bad(f"unexpected {text[pos:pos + 16]!r} at offset {pos} of the data block", text)
    return tuple(out)
