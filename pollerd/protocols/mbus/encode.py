"""M-Bus encoders of application data: the simulator's side of :mod:`.telegram`.
"""

from __future__ import annotations

import datetime as _dt

from .address import encode_manufacturer


def encode_header(ident: str, manufacturer: str, version: int, medium: int, access_no: int, status: int = 0,
                  signature: int = 0) -> bytes:
    return (bytes.fromhex(f"{int(ident):08d}")[::-1] + encode_manufacturer(manufacturer).to_bytes(2, "little")
            + bytes((version, medium, access_no, status)) + signature.to_bytes(2, "little"))


def encode_bcd(value: int, nbytes: int) -> bytes:
    digits = f"{abs(value):0{2 * nbytes}d}"
    if len(digits) > 2 * nbytes or (value < 0 and digits[0] != "0"):
        raise ValueError(f"{value} does not fit {nbytes} BCD bytes")
    if value < 0:
        digits = "F" + digits[1:]
    return bytes.fromhex(digits)[::-1]


def encode_date_g(d: _dt.date) -> bytes:
    yy = d.year % 100
    return bytes((d.day | ((yy & 0x07) << 5), d.month | ((yy & 0x78) << 1)))


def encode_date_f(t: _dt.datetime) -> bytes:
    yy = t.year % 100
    return bytes((t.minute, t.hour, t.day | ((yy & 0x07) << 5), t.month | ((yy & 0x78) << 1)))


def encode_record(dif: int, vif: int | bytes, data: bytes, difes: bytes = b"") -> bytes:
    vifb = bytes((vif,)) if isinstance(vif, int) else vif
    return bytes((dif,)) + difes + vifb + data


def storage_dib(field: int, storage: int = 0, tariff: int = 0, subunit: int = 0, function: int = 0) -> bytes:
    """DIF (+DIFEs) for a data field with the given storage number, tariff and subunit."""
    dif = field | (function << 4) | ((storage & 1) << 6)
    storage >>= 1
    difes = []
    while storage or tariff or subunit:
        difes.append((storage & 0x0F) | ((tariff & 0x03) << 4) | ((subunit & 1) << 6))
        storage, tariff, subunit = storage >> 4, tariff >> 2, subunit >> 1
    for i in range(len(difes) - 1):
        difes[i] |= 0x80
    if difes:
        dif |= 0x80
    return bytes((dif, *difes))
