"""DLMS/COSEM (СПОДЭС) meter keys beyond the common ones, and the bus address.

``connection_address`` is the meter's HDLC physical (lower) address, or ``"serial"`` to derive it from
``number_meter`` the way СПОДЭС meters do by default (last four digits + 16; docs/protocols/dlms.md).
High-level security and ciphering are not implemented: their keys are refused with a clear message rather
than ignored, because a meter that wants them answers every unciphered request with a reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import OptionError

_CIPHER_KEYS = ("security", "security_suite", "block_cipher_key", "authentication_key", "system_title")
_HLS = ("high", "hls", "md5", "sha1", "sha256", "gmac", "ecdsa")


@dataclass(frozen=True, slots=True)
class DlmsOptions:
    framing: str = "hdlc"                 # hdlc | wrapper (IEC 62056-47, TCP port 4059)
    server_logical: int = 1               # upper address / wrapper wPort: 1 = management logical device
    server_address_size: int = 4          # HDLC server address bytes: 1, 2 or 4
    client_sap: int | None = None         # None: 32 (reader) with a password, 16 (public) without
    max_info_length: int = 128            # HDLC information field we propose (the meter may lower it)
    max_pdu: int = 1024                   # xDLMS max receive PDU size we propose
    # Setting a billing meter's clock is an operator's decision: off unless asked (time_difference is the
    # threshold; drift is always recorded as clock.drift).
    clock_set: bool = False
    # Keep the link and association open between cycles (СПОДЭС meters drop an idle one after their
    # inactivity timeout; pollerd then re-associates once and retries).
    keep_association: bool = True
    load_profiles: tuple[str, ...] = ("1.0.99.1.0.255",)
    journals: tuple[str, ...] | None = None   # None: all the СПОДЭС journals the meter has


def _obis_list(key: str, value: object) -> tuple[str, ...]:
    from ..protocols.dlms.xdlms import obis_bytes
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise OptionError("expected a list of OBIS codes like \"1.0.99.1.0.255\"", (key,))
    for v in value:
        try:
            obis_bytes(v)
        except ValueError as exc:
            raise OptionError(str(exc), (key,)) from None
    return tuple(value)


def _int(key: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise OptionError(f"expected an integer {lo}..{hi}, got {value!r}", (key,))
    return value


def parse_options(raw: Mapping[str, object], base_dir: str) -> DlmsOptions:
    kw: dict[str, Any] = {}  # each value is checked where it is set; DlmsOptions(**kw) checks the names
    for key in _CIPHER_KEYS:
        if key in raw:
            raise OptionError("ciphering and high-level security (HLS) are not supported by pollerd's DLMS "
                              "driver yet; use a client with no or low-level (password) authentication", (key,))
    for key, value in raw.items():
        if key == "dlms_framing":
            if value not in ("hdlc", "wrapper"):
                raise OptionError(f"expected \"hdlc\" or \"wrapper\", got {value!r}", (key,))
            kw["framing"] = value
        elif key == "authentication":
            if isinstance(value, str) and value.lower() in _HLS:
                raise OptionError(f"authentication {value!r} (HLS) is not supported; \"none\" or \"low\" "
                                  "(password) only", (key,))
            if value not in ("none", "low"):
                raise OptionError(f"expected \"none\" or \"low\", got {value!r}", (key,))
            kw[key] = value
        elif key == "server_logical":
            kw[key] = _int(key, value, 0, 0x3FFF)
        elif key == "server_address_size":
            if value not in (1, 2, 4):
                raise OptionError(f"expected 1, 2 or 4, got {value!r}", (key,))
            kw[key] = value
        elif key == "client_sap":
            kw[key] = _int(key, value, 1, 0x7F)
        elif key == "max_info_length":
            kw[key] = _int(key, value, 32, 2030)
        elif key == "max_pdu":
            kw[key] = _int(key, value, 64, 0xFFFF)
        elif key in ("clock_set", "keep_association"):
            if not isinstance(value, bool):
                raise OptionError(f"expected true or false, got {value!r}", (key,))
            kw[key] = value
        elif key in ("load_profiles", "journals"):
            kw[key] = _obis_list(key, value)
    auth = kw.pop("authentication", None)
    if auth == "none" and kw.get("client_sap") not in (None, 16):
        raise OptionError("a client other than public (16) needs a password (authentication = \"low\")",
                          ("authentication",))
    return DlmsOptions(**kw)


def parse_address(value: object) -> int | str:
    """``connection_address``: the HDLC physical address 0..16383, or "serial" (derived from number_meter)."""
    if value == "serial":
        return "serial"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0x3FFF:
        raise OptionError(f"expected the HDLC physical address 0..16383 or \"serial\", got {value!r}")
    return value


def physical_from_serial(serial: str) -> int:
    """СПОДЭС default lower HDLC address: the serial number's last four digits + 16."""
    digits = "".join(ch for ch in serial if ch.isdigit())
    if not digits:
        raise OptionError(f"number_meter {serial!r} has no digits to derive the HDLC address from")
    return int(digits[-4:]) + 16
