"""M-Bus application layer decoding: RSP_UD telegrams with a fixed (CI 73) or variable data structure (CI 72
long header, 7A short header, 78 no header); CI 70 is the slave's application error. Variable data is a
list of data records ``DIF [DIFE...] VIF [VIFE...] data``. Values are normalised to the unit of the VIF
table (Wh, J, m³, kg, s, W, J/h, m³/h, m³/min, m³/s, kg/h, °C, K, bar, V, A): ``value = raw * 10**exponent``,
computed so that a decimal scale never adds binary noise beyond one rounding. Unknown VIFs are not errors:
the record is kept, marked ``known=False``.
"""

from __future__ import annotations

import functools
import math
import struct

from pollerd.protocols.floats import f32_decimal

from .address import decode_manufacturer
from .frames import MAX_DIFE, MAX_VIFE, Frame, MbusApplicationError, MbusFrameError, _fail, decode_frame
from .model import _FUNCTIONS, NON_FINITE, DateTime, Function, Header, Record, RecordInfo, Telegram, TimeOfDay
from .vif import _BCD_FIELDS, _DATA_LEN, _DATE_FD, _DATE_VIFS, EXT_FB, EXT_FD, FIXED_UNITS, PRIMARY, _Entry

_I16 = struct.Struct("<h")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")
_F32 = struct.Struct("<f")
_U16 = struct.Struct("<H")


def _scale(raw: int | float, mult: int, exp: int) -> int | float:
    if exp >= 0:
        factor: int = 10 ** exp
        return raw * mult * factor
    # Division by an exact power of ten rounds once; multiplying by 1e-3 would round twice.
    divisor: int = 10 ** -exp
    return raw * mult / divisor


def _int_le(b: bytes) -> int:
    return int.from_bytes(b, "little", signed=True)


def _bcd(b: bytes) -> tuple[int | None, str | None]:
    """Little-endian BCD; an F in the top digit is a minus sign (EN 13757-3 annex B); other digits above 9
    are error codes, so no number is made from them."""
    digits = b[::-1].hex()
    if digits.isdigit():
        return int(digits), None
    if not digits:  # a variable-length BCD record of length 0 (LVAR 0xD0) carries no number
        return None, "empty BCD value"
    digits = digits.upper()
    negative = digits[0] == "F"
    if negative:
        digits = digits[1:]
    if not digits.isdigit():
        return None, f"BCD value with error digits {b[::-1].hex().upper()}"
    value = int(digits) if digits else 0
    return (-value if negative else value), None


def _date_g(b: bytes) -> DateTime:
    day, month = b[0] & 0x1F, b[1] & 0x0F
    yy = ((b[0] & 0xE0) >> 5) | ((b[1] & 0xF0) >> 1)
    return DateTime(_full_year(yy), month, day, invalid=yy > 99)


def _date_f(b: bytes) -> DateTime:
    minute, hour, day, month = b[0] & 0x3F, b[1] & 0x1F, b[2] & 0x1F, b[3] & 0x0F
    yy = ((b[2] & 0xE0) >> 5) | ((b[3] & 0xF0) >> 1)
    return DateTime(_full_year(yy), month, day, hour, minute, 0, bool(b[0] & 0x80) or yy > 99, bool(b[1] & 0x80))


def _date_i(b: bytes) -> DateTime:
    second, minute, hour, day, month = b[0] & 0x3F, b[1] & 0x3F, b[2] & 0x1F, b[3] & 0x1F, b[4] & 0x0F
    yy = ((b[3] & 0xE0) >> 5) | ((b[4] & 0xF0) >> 1)
    return DateTime(_full_year(yy), month, day, hour, minute, second, bool(b[1] & 0x80) or yy > 99,
                    bool(b[2] & 0x80))


def _full_year(yy: int) -> int:
    # Two-digit years: the M-Bus convention (and libmbus') puts 81..99 in the 1900s.
    return 1900 + yy if 81 <= yy <= 99 else 2000 + yy


def _parse_header(ci: int, data: bytes, frame: bytes) -> tuple[Header, int]:
    if ci in (0x72, 0x76):
        if len(data) < 12:
            raise _fail("too_short_header", f"CI 0x{ci:02X} needs a 12-byte header, got {len(data)} bytes",
                        frame)
        ident = data[3::-1].hex().upper()
        mfr = _U16.unpack_from(data, 4)[0]
        return Header(ident, decode_manufacturer(mfr), mfr, data[6], data[7], data[8], data[9],
                      _U16.unpack_from(data, 10)[0]), 12
    if ci == 0x7A:
        if len(data) < 4:
            raise _fail("too_short_header", f"CI 0x7A needs a 4-byte header, got {len(data)} bytes", frame)
        return Header(access_no=data[0], status=data[1], signature=_U16.unpack_from(data, 2)[0]), 4
    return Header(), 0


def decode_telegram(frame: Frame | bytes | bytearray | memoryview) -> Telegram:
    """Decode an RSP_UD: a :class:`Frame` or the raw frame bytes. Raises :class:`MbusFrameError`."""
    if isinstance(frame, Frame):
        raw = frame.encode()
    else:
        raw = bytes(frame)
        frame = decode_frame(raw)
    if frame.ci is None:
        raise MbusFrameError("unexpected_frame", f"expected a long frame (RSP_UD), got a {frame.kind} frame",
                             raw)
    ci, data = frame.ci, frame.data
    if ci == 0x70:
        raise MbusApplicationError(data[0] if data else None, raw)
    if ci in (0x73, 0x77):
        return _decode_fixed(frame, raw)
    if ci not in (0x72, 0x76, 0x78, 0x7A):
        raise MbusFrameError("unimplemented_ci", f"CI field 0x{ci:02X} is not a variable or fixed data "
                             "response", raw)
    if ci == 0x76:
        raise MbusFrameError("unimplemented_ci", "CI 0x76 (data records most significant byte first) is not "
                             "supported", raw)
    header, pos = _parse_header(ci, data, raw)
    records, tail, mfr = _parse_records(data, pos, raw)
    return Telegram(frame.a, ci, header, records, tail == 0x1F, mfr, False, tail)


def _parse_records(data: bytes, pos: int, raw: bytes) -> tuple[tuple[Record, ...], int | None, bytes]:
    n = len(data)
    out: list[Record] = []
    append = out.append
    record_info = _record_info
    data = bytes(data)
    while pos < n:
        start = pos
        dif = data[pos]
        pos += 1
        if dif == 0x2F:          # idle filler
            continue
        if dif == 0x0F or dif == 0x1F:
            return tuple(out), dif, bytes(data[pos:])
        field = dif & 0x0F
        if field == 0x0F:
            raise MbusFrameError("reserved_dif", f"reserved special-function DIF 0x{dif:02X} at offset {start}",
                                 raw)
        ndife = 0
        ext = dif & 0x80
        while ext:
            if pos >= n:
                last = data[pos - 1]
                raise _fail("premature_end_of_dif", f"record at offset {start}: "
                            f"{'DIFE' if ndife else 'DIF'} 0x{last:02X} announces another DIFE, "
                            "but the data ends", raw)
            if ndife == MAX_DIFE:
                raise _fail("too_many_dife", f"record at offset {start}: more than {MAX_DIFE} DIFEs", raw)
            ext = data[pos] & 0x80
            pos += 1
            ndife += 1
        if pos >= n:
            raise _fail("premature_end_of_vif", f"record at offset {start}: no VIF after the DIF", raw)
        vif = data[pos]
        pos += 1
        if vif & 0x7F == 0x7C:
            if pos >= n:
                raise _fail("premature_end_of_var_vif", f"record at offset {start}: plain-text VIF without "
                            "its length byte", raw)
            tlen = data[pos]
            pos += 1
            if tlen > n - pos:
                problem = "too_long_var_vif" if tlen > 0x7F else "premature_end_of_var_vif"
                raise _fail(problem, f"record at offset {start}: plain-text VIF of {tlen} characters, only "
                            f"{n - pos} bytes left", raw)
            pos += tlen
        nvife = 0
        ext = vif & 0x80
        while ext:
            if pos >= n:
                raise _fail("premature_end_of_vif", f"record at offset {start}: VIF 0x{vif:02X} announces a "
                            "VIFE, but the data ends", raw)
            if nvife == MAX_VIFE:
                raise _fail("too_many_vife", f"record at offset {start}: more than {MAX_VIFE} VIFEs", raw)
            ext = data[pos] & 0x80
            pos += 1
            nvife += 1
        info = record_info(data[start:pos])
        kind = info.kind
        if kind <= _K_BCD and pos + info.length <= n:
            # the common cases inline: a fixed-size binary integer or BCD number
            end = pos + info.length
            payload = data[pos:end]
            pos = end
            error = None
            if kind == _K_INT:
                value: int | float | None = int.from_bytes(payload, "little", signed=True)
            else:
                digits = payload[::-1].hex()
                if digits.isdigit():
                    value = int(digits)
                else:
                    value, error = _bcd(payload)
            if value is not None and info.known:
                if info.scaled:
                    exp = info.exp
                    value = value * info.mult * 10 ** exp if exp >= 0 else value * info.mult / 10 ** -exp
                if info.offset is not None:
                    value = value + info.offset
            append(Record(info, value, payload, error))
            continue
        length = _DATA_LEN[field]
        lvar: int | None = None
        if length is None:
            if pos >= n:
                raise _fail("premature_end_of_data", f"record at offset {start}: no LVAR byte", raw)
            lvar = data[pos]
            pos += 1
            length = _lvar_length(lvar, start, raw)
        if pos + length > n:
            raise _fail("premature_end_of_data", f"record at offset {start}: {length} data bytes expected, "
                        f"{n - pos} left", raw)
        payload = data[pos:pos + length]
        pos += length
        append(_make_record(info, payload, lvar))
    return tuple(out), None, b""


def _lvar_length(lvar: int, start: int, raw: bytes) -> int:
    if lvar <= 0xBF:
        return lvar                      # 8-bit text
    if 0xC0 <= lvar <= 0xC9 or 0xD0 <= lvar <= 0xD9:
        return lvar & 0x0F               # BCD bytes, positive / negative
    if 0xE0 <= lvar <= 0xEF:
        return lvar - 0xE0               # binary number
    if 0xF0 <= lvar <= 0xF4:
        return 4 * (lvar - 0xEC)         # binary, 16..64 bytes
    if lvar == 0xF5:
        return 48
    if lvar == 0xF6:
        return 64
    raise MbusFrameError("reserved_lvar", f"record at offset {start}: reserved LVAR 0x{lvar:02X}", raw)


_K_INT, _K_BCD, _K_REAL, _K_NONE, _K_DATE_F, _K_DATE_G, _K_DATE_I, _K_TIME_J, _K_LVAR = range(9)


@functools.lru_cache(maxsize=4096)
def _record_info(head: bytes) -> RecordInfo:
    """Meaning of one record header (DIF, DIFEs, VIF, plain text, VIFEs), already validated by the caller.
    Cached: a meter sends the same headers in every telegram (a bounded memo of a pure function)."""
    dif = head[0]
    pos = 1
    storage = (dif >> 6) & 1
    tariff = subunit = 0
    difes: list[int] = []
    ext = dif & 0x80
    while ext:
        dife = head[pos]
        pos += 1
        shift = len(difes)
        storage |= (dife & 0x0F) << (1 + 4 * shift)
        tariff |= ((dife >> 4) & 0x03) << (2 * shift)
        subunit |= ((dife >> 6) & 0x01) << shift
        difes.append(dife)
        ext = dife & 0x80
    vif = head[pos]
    pos += 1
    text_vif: str | None = None
    code = vif & 0x7F
    if code == 0x7C:
        tlen = head[pos]
        text_vif = head[pos + 1:pos + 1 + tlen][::-1].decode("latin-1")
        pos += 1 + tlen
    vifes = tuple(head[pos:])
    field = dif & 0x0F
    function = _FUNCTIONS[(dif >> 4) & 0x03]
    rest = vifes
    entry: _Entry | None
    table_code: int | None = None
    if vif == 0xFD or vif == 0xFB:
        if not vifes:
            entry = None
        else:
            table_code = vifes[0] & 0x7F
            entry = (EXT_FD if vif == 0xFD else EXT_FB).get(table_code)
            rest = vifes[1:]
    elif code == 0x7C:
        entry = ("plain text", text_vif or "", 1, 0)
    else:
        entry = PRIMARY.get(code)
    manufacturer_vif = code == 0x7F
    # Combinable (orthogonal) VIFEs: scale corrections are applied; anything else changes the meaning of
    # the number (per hour, limit value, error state...), which the driver must not map to a plain channel.
    mult_exp = 0
    offset_exp: int | None = None
    modifiers: list[int] = []
    if not manufacturer_vif:
        for v in rest:
            c = v & 0x7F
            if 0x70 <= c <= 0x77:
                mult_exp += (c & 0x07) - 6
            elif 0x78 <= c <= 0x7B:
                offset_exp = (c & 0x03) - 3
            elif c == 0x7D:
                mult_exp += 3
            elif c == 0x7F:
                break            # manufacturer-specific VIFEs follow
            else:
                modifiers.append(c)
    is_date = (code in _DATE_VIFS and vif not in (0xFD, 0xFB)) or (vif == 0xFD and table_code in _DATE_FD)
    if field == 0x00 or field == 0x08:
        kind = _K_NONE
    elif is_date and field in (0x2, 0x3, 0x4, 0x6):
        kind = (_K_DATE_G, _K_TIME_J, _K_DATE_F, _K_DATE_I)[(0x2, 0x3, 0x4, 0x6).index(field)]
    elif field == 0x5:
        kind = _K_REAL
    elif field in _BCD_FIELDS:
        kind = _K_BCD
    elif field == 0x0D:
        kind = _K_LVAR
    else:
        kind = _K_INT
    length = _DATA_LEN[field] or 0
    if entry is None:
        # Unknown VIF: keep the raw number, unscaled, so nothing pretends to a unit it does not have.
        quantity = f"unknown VIF {''.join(f'{b:02X}' for b in (vif, *vifes))}"
        return RecordInfo(dif, tuple(difes), vif, vifes, storage, tariff, subunit, function, quantity, "", False,
                          tuple(modifiers), text_vif, kind, length=length)
    quantity, unit, mult, exp = entry
    if manufacturer_vif:
        mult, exp, offset = 1, 0, None
    else:
        exp += mult_exp
        offset = _scale(1, mult, entry[3] + offset_exp) if offset_exp is not None else None
    return RecordInfo(dif, tuple(difes), vif, vifes, storage, tariff, subunit, function, quantity, unit, True,
                      tuple(modifiers), text_vif, kind, mult, exp, offset, length, mult != 1 or exp != 0)


def _make_record(info: RecordInfo, payload: bytes, lvar: int | None) -> Record:
    kind = info.kind
    value: int | float | None  # the numeric kinds; the others return their Record directly
    error: str | None = None
    if kind == _K_INT:
        value = int.from_bytes(payload, "little", signed=True)
    elif kind == _K_BCD:
        value, error = _bcd(payload)
    elif kind == _K_REAL:
        real = _F32.unpack(payload)[0]
        if math.isfinite(real):
            value = f32_decimal(real)  # 21.5, not 21.5000000001 widened to double
        else:  # NaN or an infinity as sent: no number to give (the driver has pollerd.quality count it)
            value, error = None, NON_FINITE
    elif kind == _K_NONE:
        return Record(info, None, payload)
    elif kind == _K_DATE_F:
        return Record(info, _date_f(payload), payload)
    elif kind == _K_DATE_G:
        return Record(info, _date_g(payload), payload)
    elif kind == _K_DATE_I:
        return Record(info, _date_i(payload), payload)
    elif kind == _K_TIME_J:
        return Record(info, TimeOfDay(payload[2] & 0x1F, payload[1] & 0x3F, payload[0] & 0x3F), payload)
    else:  # lvar
        assert lvar is not None
        if lvar <= 0xBF:
            return Record(info, payload[::-1].decode("latin-1"), payload)
        if lvar >= 0xE0:
            return Record(info, payload[::-1], payload)   # binary, shown most significant byte first
        value, error = _bcd(payload)
        if value is not None and lvar >= 0xD0:
            value = -value
    if value is not None and info.known:
        mult, exp = info.mult, info.exp
        if info.scaled:
            value = value * mult * 10 ** exp if exp >= 0 else value * mult / 10 ** -exp
        if info.offset is not None:
            value = value + info.offset
    return Record(info, value, payload, error)


def _decode_fixed(frame: Frame, raw: bytes) -> Telegram:
    data = frame.data
    if len(data) != 16:
        raise MbusFrameError("invalid_length", f"a fixed data structure has 16 bytes after the CI, got "
                             f"{len(data)}", raw)
    if frame.ci == 0x77:
        raise MbusFrameError("unimplemented_ci", "CI 0x77 (fixed structure, MSB first) is not supported", raw)
    ident = data[3::-1].hex().upper()
    access, status, t1, t2 = data[4], data[5], data[6], data[7]
    medium = ((t1 & 0xC0) >> 6) | ((t2 & 0xC0) >> 4)
    bcd = not status & 0x80
    records = []
    for i, (tbyte, chunk) in enumerate(((t1, data[8:12]), (t2, data[12:16]))):
        ucode = tbyte & 0x3F
        error = None
        if bcd:
            value, error = _bcd(bytes(chunk))
            value_n: int | float | None = value
        else:
            value_n = int.from_bytes(chunk, "little")
        entry = FIXED_UNITS.get(ucode)
        # Counter 2 holds a stored (historic) value when status bit 6 says so.
        function = Function.INSTANT
        storage = 1 if (i == 1 and status & 0x40) else 0
        if entry is None or not entry[1]:
            quantity = entry[0] if entry else f"unknown fixed unit {ucode:02X}"
            info = RecordInfo(0, (), None, (), storage, 0, 0, function, quantity, "", entry is not None)
            records.append(Record(info, value_n, bytes(chunk), error))
            continue
        quantity, unit, exp = entry
        scaled = _scale(value_n, 1, exp) if value_n is not None else None
        info = RecordInfo(0, (), None, (), storage, 0, 0, function, quantity, unit, True)
        records.append(Record(info, scaled, bytes(chunk), error))
    header = Header(ident, None, None, None, medium, access, status, None)
    return Telegram(frame.a, frame.ci or 0x73, header, tuple(records), False, b"", True)
