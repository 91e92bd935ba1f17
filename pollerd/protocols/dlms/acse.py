"""ACSE for DLMS/COSEM: AARQ/AARE (lowest-level and low-level authentication) and RLRQ/RLRE. Sans-I/O.

AARQ as sent (BER tags, lengths in one byte: our AARQ stays far below 128 bytes)::

    60 L  A1 09 06 07 60 85 74 05 08 01 01          application context: LN referencing, no ciphering
          [8A 02 07 80                               sender ACSE requirements: authentication
           8B 07 60 85 74 05 08 02 01                mechanism: low level security (password)
           AC L 80 L <password>]                     calling authentication value
          BE L 04 L 01 00 00 00 06 5F 1F 04 00 <conformance 3> <max PDU 2>   xDLMS InitiateRequest

The AARE's result (A2) and diagnostic (A3) say why an association was refused; :func:`parse_aare` raises
:class:`AssociationRejected` naming that reason. High-level security (mechanisms 2..7) and ciphered contexts
are not implemented and are refused before anything is sent (:func:`check_supported`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pollerd.errors import TruncatedFrame

from .errors import ApduError, AssociationRejected

__all__ = [
    "AARE", "AARQ", "Aare", "Aarq", "CONFORMANCE_DEFAULT", "CONTEXT_LN", "MECH_LLS", "RLRE", "RLRQ",
    "conformance_names", "encode_aare", "encode_aarq", "encode_rlre", "encode_rlrq", "parse_aare", "parse_aarq",
    "parse_release",
]

AARQ, AARE, RLRQ, RLRE = 0x60, 0x61, 0x62, 0x63
_OID_PREFIX = bytes((0x60, 0x85, 0x74, 0x05, 0x08))          # 2.16.756.5.8 (DLMS UA)
CONTEXT_LN = _OID_PREFIX + b"\x01\x01"                      # LN referencing, no ciphering
CONTEXT_SN = _OID_PREFIX + b"\x01\x02"
CONTEXT_LN_CIPHERED = _OID_PREFIX + b"\x01\x03"
MECH_LLS = _OID_PREFIX + b"\x02\x01"
_MECH_NAMES = {1: "LLS (password)", 2: "HLS", 3: "HLS-MD5", 4: "HLS-SHA1", 5: "HLS-GMAC", 6: "HLS-SHA256",
               7: "HLS-ECDSA"}

# Conformance bits (bit 0 = most significant bit of the 24): the services this client may use.
_CONFORMANCE_BITS = {
    1: "general-protection", 2: "general-block-transfer", 3: "read", 4: "write", 5: "unconfirmed-write",
    8: "attribute0-supported-with-set", 9: "priority-mgmt-supported", 10: "attribute0-supported-with-get",
    11: "block-transfer-with-get-or-read", 12: "block-transfer-with-set-or-write", 13: "block-transfer-with-action",
    14: "multiple-references", 15: "information-report", 16: "data-notification", 17: "access",
    18: "parameterized-access", 19: "get", 20: "set", 21: "selective-access", 22: "event-notification",
    23: "action",
}
# block GET/SET/ACTION, multiple references (GET with-list), get, set, selective access, action.
CONFORMANCE_DEFAULT = 0x001E1D

_RESULTS = {0: "accepted", 1: "rejected-permanent", 2: "rejected-transient"}
_USER_DIAG = {
    0: "null", 1: "no-reason-given", 2: "application-context-name-not-supported",
    3: "calling-AP-title-not-recognized", 4: "calling-AP-invocation-identifier-not-recognized",
    5: "calling-AE-qualifier-not-recognized", 6: "calling-AE-invocation-identifier-not-recognized",
    7: "called-AP-title-not-recognized", 8: "called-AP-invocation-identifier-not-recognized",
    9: "called-AE-qualifier-not-recognized", 10: "called-AE-invocation-identifier-not-recognized",
    11: "authentication-mechanism-name-not-recognised", 12: "authentication-mechanism-name-required",
    13: "authentication-failure", 14: "authentication-required",
}
_PROVIDER_DIAG = {0: "null", 1: "no-reason-given", 2: "no-common-acse-version"}
_INITIATE_ERRORS = {0: "other", 1: "dlms-version-too-low", 2: "incompatible-conformance", 3: "pdu-size-too-short",
                    4: "refused-by-the-VDE-handler"}
# What an operator should check for each reason (the meter says "authentication-failure", the log says why).
HINTS = {
    "authentication-failure": "wrong password for this client SAP",
    "authentication-required": "this client SAP needs a password (access_level reader 32 + password)",
    "authentication-mechanism-name-required": "this client SAP needs a password",
    "application-context-name-not-supported": "the meter wants another context (ciphering? SN referencing?)",
    "calling-AP-title-not-recognized": "unknown client",
    "no-reason-given": "unknown client SAP or access refused by the meter",
}
_U16 = struct.Struct(">H")


def conformance_names(bits: int) -> list[str]:
    return [name for bit, name in sorted(_CONFORMANCE_BITS.items()) if bits & (1 << (23 - bit))]


@dataclass(frozen=True, slots=True)
class Aarq:
    context: bytes = CONTEXT_LN
    mechanism: bytes | None = None
    password: bytes | None = None
    conformance: int = CONFORMANCE_DEFAULT
    max_pdu: int = 0xFFFF
    version: int = 6


@dataclass(frozen=True, slots=True)
class Aare:
    result: int
    diagnostic: str
    context: bytes = CONTEXT_LN
    conformance: int = 0
    max_pdu: int = 0
    version: int = 6
    initiate_error: str = ""

    @property
    def accepted(self) -> bool:
        return self.result == 0


def _tlv(tag: int, body: bytes) -> bytes:
    if len(body) > 0x7F:
        raise ValueError("ACSE element longer than 127 bytes")
    return bytes((tag, len(body))) + body


def _elements(apdu: bytes, tag: int) -> dict[int, bytes]:
    """The top-level elements of an ACSE APDU ``tag L ...`` as {tag: body}."""
    if len(apdu) < 2 or apdu[0] != tag:
        raise ApduError(f"APDU tag 0x{apdu[0] if apdu else 0:02X}, 0x{tag:02X} expected", apdu)
    n = apdu[1]
    if n & 0x80 or n + 2 != len(apdu):
        raise TruncatedFrame(f"ACSE length {n} does not match the {len(apdu) - 2} bytes that follow", apdu)
    out: dict[int, bytes] = {}
    i = 2
    while i < len(apdu):
        if i + 2 > len(apdu) or i + 2 + apdu[i + 1] > len(apdu):
            raise TruncatedFrame("ACSE element truncated", apdu)
        out[apdu[i]] = apdu[i + 2:i + 2 + apdu[i + 1]]
        i += 2 + apdu[i + 1]
    return out


def _initiate_request(a: Aarq) -> bytes:
    return (b"\x01\x00\x00\x00" + bytes((a.version,)) + b"\x5f\x1f\x04\x00" + a.conformance.to_bytes(3, "big")
            + _U16.pack(a.max_pdu))


def encode_aarq(a: Aarq) -> bytes:
    body = _tlv(0xA1, _tlv(0x06, a.context))
    if a.mechanism is not None:
        body += b"\x8a\x02\x07\x80" + _tlv(0x8B, a.mechanism) + _tlv(0xAC, _tlv(0x80, a.password or b""))
    body += _tlv(0xBE, _tlv(0x04, _initiate_request(a)))
    return _tlv(AARQ, body)


def parse_aarq(apdu: bytes) -> Aarq:
    el = _elements(apdu, AARQ)
    ctx = el.get(0xA1, b"")[2:]
    mech = el.get(0x8B)
    auth = el.get(0xAC)
    password = auth[2:] if auth and len(auth) >= 2 and auth[0] == 0x80 else None
    ui = el.get(0xBE, b"")
    ir = ui[2:]
    if len(ir) < 14 or ir[0] != 0x01:
        raise ApduError("AARQ without an xDLMS InitiateRequest", apdu)
    # Optional fields (dedicated key, response-allowed, QoS) each start with a presence byte.
    i = 1
    if ir[i]:
        i += 2 + ir[i + 1]
    else:
        i += 1
    i += 2 if ir[i] else 1
    i += 2 if ir[i] else 1
    version = ir[i]
    if ir[i + 1:i + 5] != b"\x5f\x1f\x04\x00":
        raise ApduError("InitiateRequest without a conformance block", apdu)
    conformance = int.from_bytes(ir[i + 5:i + 8], "big")
    max_pdu = _U16.unpack_from(ir, i + 8)[0]
    return Aarq(ctx, mech, password, conformance, max_pdu, version)


def encode_aare(result: int, diagnostic: int, *, context: bytes = CONTEXT_LN, conformance: int = 0,
                max_pdu: int = 0, provider: bool = False, mechanism: bytes | None = None,
                initiate_error: int | None = None) -> bytes:
    """The meter's answer (the simulator's): accepted with the negotiated conformance, or rejected."""
    diag = _tlv(0xA2 if provider else 0xA1, _tlv(0x02, bytes((diagnostic,))))
    body = _tlv(0xA1, _tlv(0x06, context)) + _tlv(0xA2, _tlv(0x02, bytes((result,)))) + _tlv(0xA3, diag)
    if mechanism is not None:
        body += b"\x88\x02\x07\x80" + _tlv(0x89, mechanism)
    if initiate_error is not None:
        ui = b"\x0e\x01\x06" + bytes((initiate_error,))
    else:
        ui = b"\x08\x00\x06\x5f\x1f\x04\x00" + conformance.to_bytes(3, "big") + _U16.pack(max_pdu) + b"\x00\x07"
    body += _tlv(0xBE, _tlv(0x04, ui))
    return _tlv(AARE, body)


def parse_aare(apdu: bytes) -> Aare:
    """The AARE; raises :class:`AssociationRejected` (reason named) unless the association was accepted."""
    el = _elements(apdu, AARE)
    res = el.get(0xA2, b"")
    if len(res) != 3 or res[0] != 0x02:
        raise ApduError("AARE without a result", apdu)
    result = res[2]
    diag_el = el.get(0xA3, b"")
    diagnostic = "null"
    if len(diag_el) == 5:
        table = _USER_DIAG if diag_el[0] == 0xA1 else _PROVIDER_DIAG
        diagnostic = table.get(diag_el[4], f"diagnostic {diag_el[4]}")
    ctx = el.get(0xA1, b"")[2:]
    ui = el.get(0xBE, b"")[2:]
    conformance = max_pdu = 0
    version = 6
    initiate_error = ""
    if ui[:1] == b"\x08" and len(ui) >= 13:
        i = 3 if ui[1] else 2        # negotiated-quality-of-service: absent (00) or 01 <value>
        version = ui[i]
        conformance = int.from_bytes(ui[i + 5:i + 8], "big")
        max_pdu = _U16.unpack_from(ui, i + 8)[0]
    elif ui[:1] == b"\x0e" and len(ui) >= 4:
        initiate_error = _INITIATE_ERRORS.get(ui[3], f"initiate error {ui[3]}")
    aare = Aare(result, diagnostic, ctx, conformance, max_pdu, version, initiate_error)
    if result != 0 or initiate_error:
        why = diagnostic if diagnostic != "null" else initiate_error or "no diagnostic"
        hint = HINTS.get(why, "")
        raise AssociationRejected(
            f"association {_RESULTS.get(result, f'result {result}')}: {why}" + (f" ({hint})" if hint else ""),
            result, why)
    return aare


def encode_rlrq() -> bytes:
    return b"\x62\x03\x80\x01\x00"


def encode_rlre() -> bytes:
    return b"\x63\x03\x80\x01\x00"


def parse_release(apdu: bytes, tag: int) -> int:
    """The reason of an RLRQ/RLRE (0 = normal; an RLRE may carry none)."""
    el = _elements(apdu, tag)
    reason = el.get(0x80, b"\x00")
    return reason[0] if reason else 0


def mechanism_name(mech: bytes | None) -> str:
    if mech is None:
        return "none (lowest level)"
    if mech[:-1] == _OID_PREFIX + b"\x02":
        return _MECH_NAMES.get(mech[-1], f"mechanism {mech[-1]}")
    return mech.hex()
