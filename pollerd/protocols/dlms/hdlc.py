"""HDLC for DLMS/COSEM (IEC 62056-46, ISO/IEC 13239 frame format type 3): sans-I/O framing and link state.

Frame (between 0x7E flags, no byte stuffing; FACTS.md in shared/vectors/dlms-hdlc)::

    format(2) | dest addr (1, 2 or 4) | src addr (1, 2 or 4) | control | [HCS(2) | information] | FCS(2)

* format = ``1010 S LLLLLLLLLLL``: type 3, S = more segments follow, L = bytes between the flags.
* Addresses are extensible: 7 bits per byte, LSB 1 on the last byte. The client address is one byte
  (SAP << 1 | 1). A server address is the upper (logical device) and, if present, the lower (physical)
  address, each in 1 byte (2-byte form) or 2 bytes (4-byte form); the 1-byte form carries the upper only.
* HCS (only with an information field) covers format..control; FCS covers format..information. Both are
  CRC-16/X-25, low byte first.
* Because the length field, not a flag, ends the frame, 0x7E and 0x7D may occur inside one (vectors
  ``am_flag_char_in_info`` and ``am_escape_char_in_info``), and two frames may share one flag.

:class:`HdlcClient` and :class:`HdlcServer` keep the link state (N(S)/N(R), negotiated sizes, segments in
both directions) without doing any I/O: they take frames and hand back the bytes to send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crcmod

from pollerd.errors import AddressMismatch, CrcError, FrameTooLong, TruncatedFrame

from .errors import HdlcError, LinkRefused, SegmentError

__all__ = [
    "DISC", "DM", "FLAG", "FRMR", "Frame", "Deframer", "HdlcClient", "HdlcServer", "LLC_REQUEST",
    "LLC_RESPONSE", "LinkParams", "MAX_FRAME", "MAX_MESSAGE", "RR", "SNRM", "ServerAddress", "UA", "UI",
    "client_address", "crc16_x25", "encode_frame", "parse_frame",
]

FLAG = 0x7E
SNRM = 0x83
DISC = 0x43
UA = 0x63
DM = 0x0F
FRMR = 0x87
UI = 0x03
RR = 0x01
RNR = 0x05
PF = 0x10
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"

# The 11-bit length field bounds a frame; a reassembled message is bounded by the largest APDU a meter may
# send (max PDU size is a 16-bit field) plus its LLC header.
MAX_FRAME = 0x7FF
MAX_MESSAGE = 0xFFFF + 3

crc16_x25 = crcmod.mkCrcFun(0x11021, initCrc=0x0000, rev=True, xorOut=0xFFFF)
crc16_x25.__doc__ = "CRC-16/X-25 of ``data`` (check value: b'123456789' -> 0x906E)."

_U16 = struct.Struct(">H")
_CRC = struct.Struct("<H")
_U_NAMES = {SNRM: "SNRM", DISC: "DISC", UA: "UA", DM: "DM", FRMR: "FRMR", UI: "UI"}


# ------------------------------------------------------------------------------------------------ addresses


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Upper (logical device, 1 = management) and lower (physical) HDLC address; ``size`` 1, 2 or 4 bytes."""

    logical: int = 1
    physical: int | None = None
    size: int = 4

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 4):
            raise ValueError(f"HDLC server address size must be 1, 2 or 4 bytes, not {self.size}")
        limit = 0x3FFF if self.size == 4 else 0x7F
        if not 0 <= self.logical <= limit:
            raise ValueError(f"logical address {self.logical} does not fit {self.size}-byte form (0..{limit})")
        if self.size == 1:
            if self.physical is not None:
                raise ValueError("a 1-byte server address has no physical part")
        elif self.physical is None or not 0 <= self.physical <= limit:
            raise ValueError(f"physical address {self.physical} does not fit {self.size}-byte form (0..{limit})")

    def encode(self) -> bytes:
        if self.size == 1:
            return bytes(((self.logical << 1) | 1,))
        assert self.physical is not None
        if self.size == 2:
            return bytes((self.logical << 1, (self.physical << 1) | 1))
        u, p = self.logical, self.physical
        return bytes(((u >> 7) << 1, (u & 0x7F) << 1, (p >> 7) << 1, ((p & 0x7F) << 1) | 1))

    @classmethod
    def decode(cls, raw: bytes) -> ServerAddress:
        v = [b >> 1 for b in raw]
        if len(raw) == 1:
            return cls(v[0], None, 1)
        if len(raw) == 2:
            return cls(v[0], v[1], 2)
        if len(raw) == 4:
            return cls((v[0] << 7) | v[1], (v[2] << 7) | v[3], 4)
        raise HdlcError(f"server address of {len(raw)} bytes (1, 2 or 4 expected)", raw)


def client_address(sap: int) -> bytes:
    if not 0 <= sap <= 0x7F:
        raise ValueError(f"client SAP {sap} out of range 0..127")
    return bytes(((sap << 1) | 1,))


def _address_end(body: memoryview, start: int, limit: int) -> int:
    """Index after the address starting at ``start`` (the byte whose LSB is 1 ends it)."""
    for i in range(start, min(start + 4, limit)):
        if body[i] & 1:
            return i + 1
    raise HdlcError("address field without a terminating byte (LSB 1) within 4 bytes", body)


# --------------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class Frame:
    dest: bytes
    src: bytes
    control: int
    info: bytes = b""
    segmented: bool = False

    @property
    def is_i(self) -> bool:
        return not self.control & 1

    @property
    def ns(self) -> int:
        return (self.control >> 1) & 7

    @property
    def nr(self) -> int:
        return (self.control >> 5) & 7

    @property
    def pf(self) -> bool:
        return bool(self.control & PF)

    @property
    def kind(self) -> str:
        c = self.control
        if not c & 1:
            return "I"
        if c & 3 == 1:
            return {RR: "RR", RNR: "RNR"}.get(c & 0x0F, "S?")
        return _U_NAMES.get(c & ~PF & 0xFF, f"U?{c:02X}")


def encode_frame(dest: bytes, src: bytes, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
    """A whole frame with both flags. ``info`` must already fit the negotiated information length."""
    n = 2 + len(dest) + len(src) + 1 + 2 + (len(info) + 2 if info else 0)
    if n > MAX_FRAME:
        raise FrameTooLong(f"HDLC frame of {n} bytes exceeds the 11-bit length field ({MAX_FRAME})")
    head = _U16.pack(0xA000 | (0x0800 if segmented else 0) | n) + dest + src + bytes((control,))
    if not info:
        return b"\x7e" + head + _CRC.pack(crc16_x25(head)) + b"\x7e"
    head += _CRC.pack(crc16_x25(head))
    body = head + info
    return b"\x7e" + body + _CRC.pack(crc16_x25(body)) + b"\x7e"


def parse_frame(body: bytes | bytearray | memoryview) -> Frame:
    """Decode the bytes between the flags (format .. FCS): lengths, HCS and FCS checked."""
    mv = memoryview(body)
    n = len(mv)
    if n < 7:
        raise TruncatedFrame(f"HDLC frame of {n} bytes (at least 7 needed)", mv)
    fmt = (mv[0] << 8) | mv[1]
    if fmt >> 12 != 0xA:
        raise HdlcError(f"frame format type {fmt >> 12:X} (type 3 = 0xA expected)", mv)
    if fmt & 0x7FF != n:
        raise TruncatedFrame(f"HDLC length field says {fmt & 0x7FF} bytes, frame has {n}", mv)
    if crc16_x25(mv[:n - 2]) != _CRC.unpack_from(mv, n - 2)[0]:
        raise CrcError("HDLC FCS mismatch", mv)
    d_end = _address_end(mv, 2, n - 3)
    s_end = _address_end(mv, d_end, n - 3)
    control = mv[s_end]
    info = b""
    if n > s_end + 3:
        if n < s_end + 6:
            raise TruncatedFrame("HDLC frame too short for HCS and information", mv)
        if crc16_x25(mv[:s_end + 1]) != _CRC.unpack_from(mv, s_end + 1)[0]:
            raise CrcError("HDLC HCS mismatch", mv)
        info = bytes(mv[s_end + 3:n - 2])
    return Frame(bytes(mv[2:d_end]), bytes(mv[d_end:s_end]), control, info, bool(fmt & 0x0800))


class Deframer:
    """Bytes in, frames out. The length field delimits a frame; flags only mark where one may start.

    On a bad frame the bytes up to the next flag are dropped and the error is raised; frames decoded before it
    in the same call come out of the next ``feed`` (``feed(b"")`` is enough)."""

    __slots__ = ("_buf", "_ready")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._ready: list[Frame] = []

    @property
    def pending(self) -> int:
        return len(self._buf)

    def clear(self) -> None:
        self._buf.clear()
        self._ready.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        buf = self._buf
        buf += data
        out, self._ready = self._ready, []
        try:
            self._scan(buf, out)
        except Exception:
            self._ready = out
            raise
        return out

    def _scan(self, buf: bytearray, out: list[Frame]) -> None:
        while True:
            start = buf.find(FLAG)
            if start < 0:
                garbage = bytes(buf)
                buf.clear()
                if garbage:
                    raise HdlcError("bytes outside an HDLC frame", garbage)
                return
            if start:
                garbage = bytes(buf[:start])
                del buf[:start]
                raise HdlcError("bytes outside an HDLC frame", garbage)
            # Runs of flags (idle fill, or a closing flag followed by the next opening one).
            while len(buf) > 1 and buf[1] == FLAG:
                del buf[0]
            if len(buf) < 3:
                return
            fmt = (buf[1] << 8) | buf[2]
            n = fmt & 0x7FF
            if fmt >> 12 != 0xA or n < 7:
                bad = bytes(buf[:3])
                del buf[:1]
                raise HdlcError(f"not an HDLC type-3 format field: {fmt:04X}", bad)
            if len(buf) < n + 2:
                return
            if buf[n + 1] != FLAG:
                bad = bytes(buf[:n + 2])
                del buf[:1]
                raise TruncatedFrame(f"no closing flag after the {n} bytes the length field announces", bad)
            body = bytes(buf[1:n + 1])   # a copy: a memoryview export would pin the buffer's size
            # The frame is delimited (closing flag where the length says): whatever is wrong inside, drop
            # just it and keep its closing flag for the next frame.
            del buf[:n + 1]
            out.append(parse_frame(body))


# --------------------------------------------------------------------------------------------- link params


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Information field lengths and window sizes, from the point of view of the side that sends them."""

    max_info_tx: int = 128
    max_info_rx: int = 128
    window_tx: int = 1
    window_rx: int = 1

    def encode(self) -> bytes:
        def p(pid: int, v: int) -> bytes:
            raw = v.to_bytes(1 if v < 0x100 else 2, "big") if pid <= 6 else v.to_bytes(4, "big")
            return bytes((pid, len(raw))) + raw
        group = p(5, self.max_info_tx) + p(6, self.max_info_rx) + p(7, self.window_tx) + p(8, self.window_rx)
        return bytes((0x81, 0x80, len(group))) + group

    @classmethod
    def decode(cls, info: bytes) -> LinkParams:
        """An empty info field means the defaults (128 bytes, window 1)."""
        if not info:
            return cls()
        if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80 or info[2] != len(info) - 3:
            raise HdlcError("HDLC parameter field is not 81 80 <len> ...", info)
        vals = {5: 128, 6: 128, 7: 1, 8: 1}
        i = 3
        while i < len(info):
            if i + 2 > len(info) or i + 2 + info[i + 1] > len(info):
                raise TruncatedFrame("HDLC parameter truncated", info)
            pid, ln = info[i], info[i + 1]
            vals[pid] = int.from_bytes(info[i + 2:i + 2 + ln], "big")
            i += 2 + ln
        return cls(vals[5], vals[6], vals[7], vals[8])


# ------------------------------------------------------------------------------------------------ link state


def _split(message: bytes, size: int) -> list[bytes]:
    return [message[i:i + size] for i in range(0, len(message), size)] or [b""]


class _Link:
    """N(S)/N(R) bookkeeping and segmentation shared by both ends. Windows beyond 1 are accepted in the
    negotiation, but this end still sends one frame per poll/final bit: simpler, and what meters do."""

    __slots__ = ("_local", "_out", "_parts", "_peer", "_size", "connected", "params", "vr", "vs")

    def __init__(self, local: bytes, peer: bytes) -> None:
        self._local = local
        self._peer = peer
        self.params = LinkParams()
        self.connected = False
        self.vs = 0
        self.vr = 0
        self._out: list[bytes] = []
        self._parts: list[bytes] = []
        self._size = 0

    def _reset(self) -> None:
        self.vs = self.vr = 0
        self._out.clear()
        self._parts.clear()
        self._size = 0

    def _frame(self, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
        return encode_frame(self._peer, self._local, control, info, segmented)

    def _next_segment(self) -> bytes:
        info = self._out.pop(0)
        control = (self.vr << 5) | PF | (self.vs << 1)
        self.vs = (self.vs + 1) & 7
        return self._frame(control, info, segmented=bool(self._out))

    def _send(self, message: bytes, max_info: int) -> bytes:
        self._out = _split(message, max_info)
        return self._next_segment()

    def rr(self) -> bytes:
        return self._frame((self.vr << 5) | PF | RR)

    def _check_address(self, frame: Frame) -> None:
        if frame.dest != self._local or frame.src != self._peer:
            raise AddressMismatch(
                f"HDLC frame to {frame.dest.hex()} from {frame.src.hex()}, expected to {self._local.hex()} "
                f"from {self._peer.hex()}", encode_frame(frame.dest, frame.src, frame.control, frame.info))

    def _take_i(self, frame: Frame) -> bytes | None:
        """Accept an I-frame's segment; the whole message when it was the last one."""
        if frame.ns != self.vr:
            raise SegmentError(f"I-frame N(S)={frame.ns}, expected {self.vr}",
                               encode_frame(frame.dest, frame.src, frame.control, frame.info, frame.segmented))
        self.vr = (self.vr + 1) & 7
        self._size += len(frame.info)
        if self._size > MAX_MESSAGE:
            self._parts.clear()
            self._size = 0
            raise SegmentError(f"segmented message longer than {MAX_MESSAGE} bytes")
        self._parts.append(frame.info)
        if frame.segmented:
            return None
        message = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return message


class HdlcClient(_Link):
    """The client end: SNRM/UA, requests out (segmented to the negotiated size), replies reassembled."""

    __slots__ = ("_proposed",)

    def __init__(self, server: ServerAddress, client_sap: int = 16, proposed: LinkParams | None = None) -> None:
        super().__init__(client_address(client_sap), server.encode())
        self._proposed = proposed

    def snrm(self) -> bytes:
        self._reset()
        return self._frame(SNRM | PF, self._proposed.encode() if self._proposed else b"")

    def on_ua(self, frame: Frame) -> LinkParams:
        self._check_address(frame)
        if frame.kind == "DM":
            raise LinkRefused("meter answered SNRM with DM (disconnected mode)")
        if frame.kind != "UA":
            raise HdlcError(f"{frame.kind} in answer to SNRM (UA expected)", frame.info)
        server = LinkParams.decode(frame.info)
        mine = self._proposed or LinkParams()
        # The server's parameters are from its side: what it receives is what we may send.
        self.params = LinkParams(min(server.max_info_rx, mine.max_info_tx), min(server.max_info_tx, mine.max_info_rx),
                                 min(server.window_rx, mine.window_tx), min(server.window_tx, mine.window_rx))
        self.connected = True
        return self.params

    def disc(self) -> bytes:
        self.connected = False
        return self._frame(DISC | PF)

    def request(self, apdu: bytes) -> bytes:
        """The first frame of ``apdu`` (LLC header added); :meth:`on_frame` hands out the rest."""
        if not self.connected:
            raise HdlcError("request on an HDLC link that is not connected (SNRM first)")
        self._parts.clear()
        self._size = 0
        return self._send(LLC_REQUEST + apdu, self.params.max_info_tx)

    def on_frame(self, frame: Frame) -> tuple[bytes | None, bytes | None]:
        """(bytes to send next, reply APDU without LLC). Both None: wait for more frames."""
        self._check_address(frame)
        kind = frame.kind
        if kind == "I":
            if self._out:
                raise SegmentError("I-frame while our request still has segments to send", frame.info)
            message = self._take_i(frame)
            if message is None:
                return (self.rr() if frame.pf else None), None
            if message[:3] != LLC_RESPONSE:
                raise HdlcError("reply without the LLC header E6 E7 00", message[:16])
            return None, message[3:]
        if kind == "RR" and self._out:
            if frame.nr != self.vs:
                raise SegmentError(f"RR N(R)={frame.nr} while our next N(S) is {self.vs}")
            return self._next_segment(), None
        if kind in ("DM", "FRMR"):
            self.connected = False
            raise LinkRefused(f"meter answered with {kind}: the link is down (re-SNRM needed)")
        raise HdlcError(f"unexpected {kind} frame from the meter", encode_frame(frame.dest, frame.src,
                                                                                frame.control, frame.info))


class HdlcServer(_Link):
    """The meter end, for the simulator: answers SNRM/DISC, reassembles requests, segments replies."""

    __slots__ = ("_own",)

    def __init__(self, server: ServerAddress, own: LinkParams | None = None) -> None:
        super().__init__(server.encode(), b"")
        self._own = own or LinkParams()

    @property
    def client_sap(self) -> int | None:
        """The SAP of the client that opened the link (any client may: the association decides access)."""
        return self._peer[0] >> 1 if self._peer else None

    def addressed(self, frame: Frame) -> bool:
        """True when ``frame`` is for this meter (the other meters on the bus ignore it)."""
        return frame.dest == self._local

    def on_frame(self, frame: Frame) -> tuple[bytes | None, bytes | None]:
        """(bytes to send, complete request APDU without LLC). The caller answers an APDU with :meth:`reply`."""
        kind = frame.kind
        if kind == "SNRM":
            self._reset()
            self._peer = frame.src
            client = LinkParams.decode(frame.info)
            own = self._own
            self.params = LinkParams(min(own.max_info_tx, client.max_info_rx), min(own.max_info_rx, client.max_info_tx),
                                     min(own.window_tx, client.window_rx), min(own.window_rx, client.window_tx))
            self.connected = True
            return self._frame(UA | PF, self.params.encode()), None
        if kind == "DISC":
            was = self.connected
            self.connected = False
            return self._frame((UA if was else DM) | PF), None
        if not self.connected or frame.src != self._peer:
            return encode_frame(frame.src, self._local, DM | PF), None
        if kind == "I":
            message = self._take_i(frame)
            if message is None:
                return self.rr(), None
            if message[:3] != LLC_REQUEST:
                raise HdlcError("request without the LLC header E6 E6 00", message[:16])
            return None, message[3:]
        if kind == "RR" and self._out:
            return self._next_segment(), None
        if kind == "RR":
            return self.rr(), None
        return self._frame(FRMR | PF), None

    def reply(self, apdu: bytes) -> bytes:
        return self._send(LLC_RESPONSE + apdu, self.params.max_info_tx)
