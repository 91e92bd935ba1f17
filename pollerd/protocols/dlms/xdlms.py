"""xDLMS services with logical-name referencing: GET (normal, with-list, with-block), SET, selective access.

Requests (client -> meter)::

    C0 01 iid  class(2) obis(6) attr(1) access(0 | 1 selector data)        GET-Request-Normal
    C0 02 iid  block-number(4)                                              GET-Request-Next
    C0 03 iid  count  {class obis attr access}*                             GET-Request-With-List
    C1 01 iid  class obis attr 00  data                                     SET-Request-Normal

Responses (meter -> client)::

    C4 01 iid  00 data | 01 data-access-result                              GET-Response-Normal
    C4 02 iid  last(1) block-number(4)  00 length raw | 01 result           GET-Response-With-Datablock
    C4 03 iid  count {00 data | 01 result}*                                 GET-Response-With-List
    C5 01 iid  result                                                       SET-Response-Normal
    D8 state-error service-error                                            Exception-Response

iid = invoke-id-and-priority: the low 4 bits are the invoke id, 0x40 asks for a confirmed service, 0x80
high priority. A block transfer's raw data is the A-XDR encoding of the whole attribute, cut anywhere.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pollerd.errors import TruncatedFrame

from . import axdr
from .errors import ApduError, DataAccessError, SegmentError

__all__ = [
    "Attr", "DataAccessFailure", "GetRequest", "GetResponse", "BlockCollector", "ACCESS_RESULTS",
    "encode_get", "encode_get_list", "encode_get_next", "encode_set", "entry_access", "obis_bytes", "obis_text",
    "parse_get_request", "parse_get_response", "parse_set_request", "parse_set_response", "range_access",
    "encode_get_response", "encode_get_response_block", "encode_get_response_list", "encode_set_response",
    "encode_exception",
]

GET_REQUEST, SET_REQUEST, GET_RESPONSE, SET_RESPONSE, EXCEPTION_RESPONSE = 0xC0, 0xC1, 0xC4, 0xC5, 0xD8
CONFIRMED_SERVICE_ERROR = 0x0E
NORMAL, NEXT, WITH_LIST = 1, 2, 3
# A long GET the meter could keep feeding for ever: past this it is a fault, not a profile.
MAX_BLOCK_DATA = 4 * 1024 * 1024

ACCESS_RESULTS = {
    0: "success", 1: "hardware-fault", 2: "temporary-failure", 3: "read-write-denied", 4: "object-undefined",
    9: "object-class-inconsistent", 11: "object-unavailable", 12: "type-unmatched", 13: "scope-of-access-violated",
    14: "data-block-unavailable", 15: "long-get-aborted", 16: "no-long-get-in-progress", 17: "long-set-aborted",
    18: "no-long-set-in-progress", 19: "data-block-number-invalid", 250: "other-reason",
}
_STATE_ERRORS = {0: "service-not-allowed", 1: "service-unknown"}
_SERVICE_ERRORS = {0: "operation-not-possible", 1: "service-not-supported", 2: "other-reason",
                   3: "pdu-too-long", 4: "deciphering-error", 5: "invocation-counter-error"}
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DESC = struct.Struct(">H6sb")


def obis_bytes(text: str) -> bytes:
    """``1.0.1.8.0.255`` (or ``1-0:1.8.0.255``) -> 6 bytes."""
    parts = text.replace("-", ".").replace(":", ".").replace("*", ".").split(".")
    if len(parts) != 6:
        raise ValueError(f"OBIS code {text!r} does not have six groups A.B.C.D.E.F")
    return bytes(int(p) for p in parts)


def obis_text(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


@dataclass(frozen=True, slots=True)
class Attr:
    """A COSEM attribute: interface class, logical name (6 bytes), attribute index."""

    class_id: int
    obis: bytes
    attr: int = 2

    @classmethod
    def of(cls, class_id: int, obis: str, attr: int = 2) -> Attr:
        return cls(class_id, obis_bytes(obis), attr)

    def encode(self) -> bytes:
        return _DESC.pack(self.class_id, self.obis, self.attr)

    def __str__(self) -> str:
        return f"{self.class_id}/{obis_text(self.obis)}/{self.attr}"


@dataclass(frozen=True, slots=True)
class DataAccessFailure:
    """One item of a GET that the meter refused (its Data-Access-Result)."""

    code: int

    @property
    def reason(self) -> str:
        return ACCESS_RESULTS.get(self.code, f"result {self.code}")

    def error(self, what: str) -> DataAccessError:
        return DataAccessError(f"{what}: {self.reason}", self.code, self.reason)


Access = tuple[int, bytes] | None


def range_access(from_dt: axdr.CosemDateTime, to_dt: axdr.CosemDateTime,
                 clock: Attr = Attr(8, b"\x00\x00\x01\x00\x00\xff", 2)) -> tuple[int, bytes]:
    """Selector 1: the entries whose clock column lies in [from, to]; all columns."""
    restricting = (axdr.u16(clock.class_id), clock.obis, axdr.i8(clock.attr), axdr.u16(0))
    return 1, axdr.encode((restricting, from_dt, to_dt, []))


def entry_access(from_entry: int, to_entry: int, from_column: int = 1, to_column: int = 0) -> tuple[int, bytes]:
    """Selector 2: entries ``from_entry..to_entry`` (1-based, oldest first; 0 = up to the last)."""
    return 2, axdr.encode((axdr.u32(from_entry), axdr.u32(to_entry), axdr.u16(from_column), axdr.u16(to_column)))


def _access(access: Access) -> bytes:
    if access is None:
        return b"\x00"
    return bytes((1, access[0])) + access[1]


def encode_get(invoke: int, attr: Attr, access: Access = None) -> bytes:
    return bytes((GET_REQUEST, NORMAL, 0xC0 | (invoke & 0x0F))) + attr.encode() + _access(access)


def encode_get_next(invoke: int, block: int) -> bytes:
    return bytes((GET_REQUEST, NEXT, 0xC0 | (invoke & 0x0F))) + _U32.pack(block)


def encode_get_list(invoke: int, items: list[tuple[Attr, Access]]) -> bytes:
    body = b"".join(a.encode() + _access(acc) for a, acc in items)
    return bytes((GET_REQUEST, WITH_LIST, 0xC0 | (invoke & 0x0F))) + axdr.encode_length(len(items)) + body


def encode_set(invoke: int, attr: Attr, data: bytes) -> bytes:
    """``data`` is the A-XDR encoded value (axdr.encode)."""
    return bytes((SET_REQUEST, NORMAL, 0xC0 | (invoke & 0x0F))) + attr.encode() + b"\x00" + data


# ------------------------------------------------------------------------------------------------ responses


@dataclass(frozen=True, slots=True)
class GetResponse:
    """``kind`` 1 normal, 2 block, 3 with-list. ``results``: decoded values or DataAccessFailure (normal: one;
    list: one per item; block: empty until the collector has all blocks). ``raw`` is a block's raw data."""

    kind: int
    invoke: int
    results: list[Any]
    last: bool = True
    block: int = 0
    raw: bytes = b""


def _exception(apdu: bytes) -> DataAccessError:
    if apdu[0] == EXCEPTION_RESPONSE and len(apdu) >= 3:
        why = f"{_STATE_ERRORS.get(apdu[1], apdu[1])}/{_SERVICE_ERRORS.get(apdu[2], apdu[2])}"
        return DataAccessError(f"meter answered with an exception response: {why}", apdu[2], why)
    why = "confirmed-service-error"
    return DataAccessError(f"meter answered with a confirmed service error [{apdu.hex(' ')}]", None, why)


def _result(mv: bytes, i: int) -> tuple[Any, int]:
    choice = mv[i]
    if choice == 0:
        return axdr.decode_at(mv, i + 1)
    if choice == 1:
        return DataAccessFailure(mv[i + 1]), i + 2
    raise ApduError(f"Get-Data-Result choice {choice}", bytes(mv))


def parse_get_response(apdu: bytes, invoke: int | None = None) -> GetResponse:
    if apdu[:1] in (b"\xd8", b"\x0e"):
        raise _exception(apdu)
    if len(apdu) < 4 or apdu[0] != GET_RESPONSE:
        raise ApduError("not a GET-Response", apdu)
    kind, iid = apdu[1], apdu[2] & 0x0F
    if invoke is not None and iid != invoke & 0x0F:
        raise ApduError(f"GET-Response for invoke id {iid}, request had {invoke & 0x0F}", apdu)
    mv = bytes(apdu)
    try:
        if kind == NORMAL:
            value, end = _result(mv, 3)
            if end != len(apdu):
                raise ApduError(f"{len(apdu) - end} bytes after the GET-Response data", apdu)
            return GetResponse(NORMAL, iid, [value])
        if kind == WITH_LIST:
            n, i = axdr.read_length(mv, 3)
            results: list[Any] = []
            append = results.append
            ints = axdr.INT_STRUCTS
            for _ in range(n):
                # A register list is mostly "00 <integer>": decoded here without two calls per item.
                st = ints.get(mv[i + 1]) if mv[i] == 0 else None
                if st is not None:
                    append(st.unpack_from(mv, i + 2)[0])
                    i += 2 + st.size
                    continue
                value, i = _result(mv, i)
                append(value)
            if i != len(apdu):
                raise ApduError(f"{len(apdu) - i} bytes after the GET-Response-With-List", apdu)
            return GetResponse(WITH_LIST, iid, results)
        if kind == NEXT:
            last = apdu[3] != 0
            block = _U32.unpack_from(mv, 4)[0]
            if apdu[8] == 1:
                return GetResponse(NEXT, iid, [DataAccessFailure(apdu[9])], last, block)
            if apdu[8] != 0:
                raise ApduError(f"DataBlock-G result choice {apdu[8]}", apdu)
            n, i = axdr.read_length(mv, 9)
            if i + n != len(apdu):
                raise TruncatedFrame(f"data block says {n} bytes, {len(apdu) - i} follow", apdu)
            return GetResponse(NEXT, iid, [], last, block, bytes(mv[i:]))
    except IndexError:
        raise TruncatedFrame("GET-Response truncated", apdu) from None
    except struct.error:
        raise TruncatedFrame("GET-Response truncated", apdu) from None
    raise ApduError(f"GET-Response type {kind}", apdu)


class BlockCollector:
    """Continues a GET answered with data blocks: block numbers must count 1, 2, 3 ... up to the last."""

    __slots__ = ("_invoke", "_next", "_parts", "_size")

    def __init__(self, invoke: int) -> None:
        self._invoke = invoke
        self._next = 1
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, resp: GetResponse) -> bytes | None:
        """The GET-Request-Next to send, or None when ``resp`` was the last block (then :meth:`value`)."""
        if resp.results and isinstance(resp.results[0], DataAccessFailure):
            raise resp.results[0].error(f"data block {resp.block}")
        if resp.block != self._next:
            raise SegmentError(f"data block {resp.block}, expected {self._next}", resp.raw[:32])
        self._size += len(resp.raw)
        if self._size > MAX_BLOCK_DATA:
            raise SegmentError(f"block transfer longer than {MAX_BLOCK_DATA} bytes")
        self._parts.append(resp.raw)
        if resp.last:
            return None
        self._next += 1
        return encode_get_next(self._invoke, resp.block)

    def value(self) -> Any:
        return axdr.decode(b"".join(self._parts))


def parse_set_response(apdu: bytes, invoke: int | None = None) -> int:
    """The Data-Access-Result of a SET-Response-Normal (0 = success)."""
    if apdu[:1] in (b"\xd8", b"\x0e"):
        raise _exception(apdu)
    if len(apdu) != 4 or apdu[0] != SET_RESPONSE or apdu[1] != NORMAL:
        raise ApduError("not a SET-Response-Normal", apdu)
    if invoke is not None and apdu[2] & 0x0F != invoke & 0x0F:
        raise ApduError(f"SET-Response for invoke id {apdu[2] & 0x0F}, request had {invoke & 0x0F}", apdu)
    return apdu[3]


# ------------------------------------------------------------------------------------- the meter's side (sim)


@dataclass(frozen=True, slots=True)
class GetRequest:
    kind: int
    invoke: int
    items: list[tuple[Attr, Access]]
    block: int = 0


def _read_access(mv: memoryview, i: int) -> tuple[Access, int]:
    if mv[i] == 0:
        return None, i + 1
    selector = mv[i + 1]
    _, end = axdr.decode_at(mv, i + 2)
    return (selector, bytes(mv[i + 2:end])), end


def parse_get_request(apdu: bytes) -> GetRequest:
    if len(apdu) < 3 or apdu[0] != GET_REQUEST:
        raise ApduError("not a GET-Request", apdu)
    kind, iid = apdu[1], apdu[2]
    mv = memoryview(apdu)
    try:
        if kind == NEXT:
            return GetRequest(NEXT, iid, [], _U32.unpack_from(mv, 3)[0])
        if kind == NORMAL:
            attr = Attr(*_DESC.unpack_from(mv, 3))
            access, _ = _read_access(mv, 12)
            return GetRequest(NORMAL, iid, [(attr, access)])
        if kind == WITH_LIST:
            n, i = axdr.read_length(mv, 3)
            items = []
            for _ in range(n):
                attr = Attr(*_DESC.unpack_from(mv, i))
                access, i = _read_access(mv, i + 9)
                items.append((attr, access))
            return GetRequest(WITH_LIST, iid, items)
    except (IndexError, struct.error):
        raise TruncatedFrame("GET-Request truncated", apdu) from None
    raise ApduError(f"GET-Request type {kind}", apdu)


def parse_set_request(apdu: bytes) -> tuple[int, Attr, Any]:
    if len(apdu) < 14 or apdu[0] != SET_REQUEST or apdu[1] != NORMAL:
        raise ApduError("not a SET-Request-Normal", apdu)
    attr = Attr(*_DESC.unpack_from(apdu, 3))
    if apdu[12] != 0:
        raise ApduError("SET with selective access is not supported", apdu)
    return apdu[2], attr, axdr.decode(memoryview(apdu)[13:])


def _encode_result(result: bytes | int) -> bytes:
    """``result``: encoded data (bytes) or a Data-Access-Result code (int)."""
    if isinstance(result, int):
        return bytes((1, result))
    return b"\x00" + result


def encode_get_response(invoke: int, result: bytes | int) -> bytes:
    return bytes((GET_RESPONSE, NORMAL, invoke)) + _encode_result(result)


def encode_get_response_list(invoke: int, results: list[bytes | int]) -> bytes:
    return (bytes((GET_RESPONSE, WITH_LIST, invoke)) + axdr.encode_length(len(results))
            + b"".join(_encode_result(r) for r in results))


def encode_get_response_block(invoke: int, last: bool, block: int, raw: bytes | int) -> bytes:
    head = bytes((GET_RESPONSE, NEXT, invoke, 1 if last else 0)) + _U32.pack(block)
    if isinstance(raw, int):
        return head + bytes((1, raw))
    return head + b"\x00" + axdr.encode_length(len(raw)) + raw


def encode_set_response(invoke: int, result: int) -> bytes:
    return bytes((SET_RESPONSE, NORMAL, invoke, result))


def encode_exception(state_error: int = 1, service_error: int = 1) -> bytes:
    return bytes((EXCEPTION_RESPONSE, state_error, service_error))
