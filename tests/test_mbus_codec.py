"""M-Bus codec: conformance against libmbus' decoding of 76 real telegrams, its error frames, framing rules,
byte-by-byte feeding, encoders and hypothesis fuzzing.

The telegrams and libmbus' expected output (BSD-3-Clause, rscada/libmbus) are read at test time from the
shared vectors folder (``<vectors>/mbus/libmbus``); the tests iterate the folders, so a frame dropped there is
covered without a code change.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import vectors_dir

from pollerd.errors import CrcError, FrameError, FrameTooLong, TruncatedFrame
from pollerd.protocols import mbus as m

LIBMBUS = vectors_dir() / "mbus" / "libmbus"


def _frames(folder: str) -> list:
    d = LIBMBUS / folder
    if not d.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"M-Bus vectors not found at {d}"),
                             id="no-vectors")]
    return [pytest.param(p, id=p.stem) for p in sorted(d.glob("*.hex"))]


def _hex(path: Path) -> bytes:
    return bytes.fromhex("".join(path.read_text().split()))


def _records(xml: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"<(\w+)>(.*?)</\1>", rec, re.S))
            for rec in re.findall(r"<DataRecord.*?</DataRecord>", xml, re.S)]


# libmbus unit -> (our unit, factor from libmbus' number to ours). libmbus' fixed-structure output is not
# normalised ("l", "kWh"); its "-" / "Reserved" / "Units for H.C.A." units are dimensionless for us.
_UNITS = {"m^3": ("m³", 1.0), "m^3/h": ("m³/h", 1.0), "m^3/min": ("m³/min", 1.0), "m^3/s": ("m³/s", 1.0),
          "Â°C": ("°C", 1.0), "°C": ("°C", 1.0), "l": ("m³", 1e-3), "kWh": ("Wh", 1e3), "-": ("", 1.0),
          "Reserved": ("", 1.0), "Units for H.C.A.": ("", 1.0), "reserved but historic": ("", 1.0)}
_FUNCTIONS = {"Instantaneous value": "instantaneous", "Maximum value": "maximum", "Minimum value": "minimum",
              "Value during error state": "error"}


@pytest.mark.parametrize("path", _frames("test-frames"))
def test_libmbus_test_frames_decode_to_the_values_and_units_of_norm_xml(path: Path) -> None:
    xml = path.with_suffix(".norm.xml").read_text(encoding="latin-1")
    expected = _records(xml)
    telegram = m.decode_telegram(_hex(path))
    ours = list(telegram.records)
    # libmbus lists a trailing DIF 0F/1F as one more record (the manufacturer-specific tail)
    tail = 1 if telegram.tail_dif is not None else 0
    assert len(expected) == len(ours) + tail, (len(expected), len(ours), tail)
    if tail:
        assert expected[-1].get("Value", "") == telegram.manufacturer_data.hex(" ").upper()
    ident = re.search(r"<Id>(\d+)</Id>", xml)
    if ident:
        assert int(telegram.header.id or "0") == int(ident.group(1))
    manufacturer = re.search(r"<Manufacturer>(.*?)</Manufacturer>", xml)
    if manufacturer:
        assert telegram.header.manufacturer == manufacturer.group(1)
    checked = 0
    for i, (exp, rec) in enumerate(zip(expected, ours)):
        where = f"record {i} ({rec.vif_code}, {exp.get('Quantity')})"
        unit, factor = _UNITS.get(exp.get("Unit", ""), (exp.get("Unit", ""), 1.0))
        if "StorageNumber" in exp:
            assert rec.storage == int(exp["StorageNumber"]), where
        if "Tariff" in exp:
            assert rec.tariff == int(exp["Tariff"]), where
        if "Device" in exp:
            assert rec.subunit == int(exp["Device"]), where
        if exp.get("Function") in _FUNCTIONS:
            assert rec.function.value == _FUNCTIONS[exp["Function"]], where
        if exp.get("Quantity") is None and exp.get("Unit") is None:
            continue
        if "Quantity" in exp and exp["Value"] == "" and not rec.known:
            continue  # libmbus could not normalise this VIF either; we keep it as unknown, raw
        # units: plain-text VIFs are libmbus' "-" unit with the text as quantity; ours carry the text as unit
        if rec.text_vif is not None:
            assert exp.get("Unit") == "-" and exp.get("Quantity") == rec.text_vif, where
        elif not rec.known:
            assert exp.get("Unit") == "Reserved", where
        else:
            assert rec.unit == unit, where
        value = exp.get("Value", "")
        try:
            number = float(value) * factor
        except ValueError:
            number = None
        if isinstance(rec.value, m.DateTime) and rec.value.invalid:
            continue  # libmbus prints invalid time points as numbers it made up (1900-01-00, 2027...)
        if rec.error is not None:
            assert rec.value is None, where
            continue  # BCD error digits: libmbus reads them as digits; we make no number from them
        if number is not None:
            assert rec.is_number, where
            assert math.isclose(rec.value, number, rel_tol=1e-6, abs_tol=6e-7), (where, rec.value, number)
        else:
            assert rec.display() == value.rstrip("Z"), where
        checked += 1
    assert checked or not ours


_PROBLEM = re.compile(r"\d+$")


@pytest.mark.parametrize("path", _frames("error-frames"))
def test_libmbus_error_frames_are_rejected_naming_the_problem(path: Path) -> None:
    raw = _hex(path)
    with pytest.raises(m.MbusFrameError) as info:
        m.decode_telegram(raw)
    err = info.value
    assert isinstance(err, FrameError)
    # the problem code is libmbus' name for it, which is how the files are named
    assert err.problem == _PROBLEM.sub("", path.stem)
    assert raw.hex(" ") in str(err)  # the evidence


@pytest.mark.parametrize("path", _frames("unsupported-frames"))
def test_libmbus_unsupported_frames_never_crash(path: Path) -> None:
    try:
        raw = _hex(path)
    except ValueError:
        pytest.skip(f"{path.name} is not valid hex")
    try:
        m.decode_telegram(raw)
    except m.MbusFrameError as exc:
        assert exc.problem and str(exc)


def test_kamstrup_heat_meter_header_and_key_values() -> None:
    path = LIBMBUS / "test-frames" / "kamstrup_multical_601.hex"
    if not path.is_file():
        pytest.skip("vectors absent")
    t = m.decode_telegram(_hex(path))
    h = t.header
    assert (h.id, h.manufacturer, h.version, h.medium, h.access_no, h.status) == ("06855817", "KAM", 8, 4, 4, 0)
    assert h.secondary == "068558172D2C0804"
    energy = [r for r in t.records if r.quantity == "energy" and r.storage == 0]
    assert energy[0].value == 37351000 and energy[0].unit == "Wh"
    dates = [r for r in t.records if isinstance(r.value, m.DateTime)]
    assert dates and all(d.value.to_datetime() is not None for d in dates)


# --- link layer ------------------------------------------------------------------------------------------------


def test_master_frames_match_the_shared_computed_frames() -> None:
    import json
    path = vectors_dir() / "mbus" / "master_frames.json"
    if not path.is_file():
        pytest.skip("vectors absent")
    frames = {e["id"]: bytes.fromhex(e["hex"].replace(" ", "")) for e in json.loads(path.read_text())}
    assert m.snd_nke(1) == frames["snd_nke_a1"]
    assert m.req_ud2(1, False) == frames["req_ud2_a1_fcb0"]
    assert m.req_ud2(1, True) == frames["req_ud2_a1_fcb1"]
    assert m.req_ud2(253, False) == frames["req_ud2_a253"]
    assert m.select_secondary("FFFFFFFFFFFFFFFF") == frames["select_secondary_wildcard"]
    assert m.encode_long(0x53, 1, 0x50) == frames["app_reset_a1"]


def test_decode_frame_rejects_checksum_lengths_stop_and_trailing_bytes() -> None:
    good = m.encode_long(0x08, 5, 0x78, bytes.fromhex("0413E8030000"))
    assert m.decode_frame(good).data == bytes.fromhex("0413E8030000")
    with pytest.raises(CrcError, match="checksum mismatch: computed 0x"):
        m.decode_frame(good[:-2] + bytes((good[-2] ^ 1, 0x16)))
    with pytest.raises(m.MbusFrameError, match="length bytes differ") as e:
        m.decode_frame(good[:2] + bytes((good[2] + 1,)) + good[3:])
    assert e.value.problem == "invalid_length"
    with pytest.raises(m.MbusFrameError, match="stop byte"):
        m.decode_frame(good[:-1] + b"\x17")
    with pytest.raises(TruncatedFrame):
        m.decode_frame(good[:-3])
    with pytest.raises(FrameTooLong, match="1 bytes after the end"):
        m.decode_frame(good + b"\x00")
    with pytest.raises(m.MbusFrameError, match="first byte, got 0x55"):
        m.decode_frame(b"\x55")
    assert m.decode_frame(b"\xe5").kind == "ack"
    short = m.decode_frame(m.snd_nke(7))
    assert (short.kind, short.c, short.a) == ("short", 0x40, 7)


def test_framer_fed_one_byte_at_a_time_completes_exactly_at_the_stop_byte() -> None:
    path = LIBMBUS / "test-frames" / "kamstrup_multical_601.hex"
    raw = _hex(path) if path.is_file() else m.encode_long(8, 1, 0x78, b"\x04\x13\x01\x00\x00\x00")
    framer = m.ReplyFramer("data")
    for b in raw[:-1]:
        assert framer.feed(bytes((b,))) is None
    frame = framer.feed(raw[-1:])
    assert frame is not None and frame.encode() == raw
    assert m.ReplyFramer("ack").feed(b"\xe5") == m.Frame("ack")
    with pytest.raises(m.MbusFrameError, match="expected E5"):
        m.ReplyFramer("ack").feed(m.snd_nke(1))
    with pytest.raises(m.MbusFrameError, match="collision"):
        m.ReplyFramer("ack").feed(b"\xf7")


def test_secondary_address_parse_encode_match() -> None:
    sa = m.SecondaryAddress.parse("12345678")
    assert sa.text == "12345678FFFFFFFF" and sa.has_wildcards
    assert sa.encode() == bytes.fromhex("78563412FFFFFFFF")
    assert sa.matches("12345678", 0x2C2D, 1, 7)
    assert not sa.matches("12345679", 0x2C2D, 1, 7)
    full = m.SecondaryAddress.parse("123456782D2C0107", wildcards=False)
    assert full.matches("12345678", 0x2C2D, 1, 7) and not full.matches("12345678", 0x2C2D, 2, 7)
    assert m.SecondaryAddress.parse("1234FFFF").matches("12349999", 1, 1, 1)
    for bad in ("1234567", "1234567A", "xyz"):
        with pytest.raises(ValueError):
            m.SecondaryAddress.parse(bad)
    with pytest.raises(ValueError, match="wildcards"):
        m.SecondaryAddress.parse("1234FFFF", wildcards=False)
    assert m.decode_manufacturer(m.encode_manufacturer("KAM")) == "KAM" and m.encode_manufacturer("KAM") == 0x2C2D


# --- application layer details ---------------------------------------------------------------------------------


def _telegram(records: bytes, ci: int = 0x72) -> m.Telegram:
    head = m.encode_header("12345678", "KAM", 1, 0x04, 9) if ci == 0x72 else b""
    return m.decode_telegram(m.encode_long(0x08, 1, ci, head + records))


def test_a_32_bit_real_is_its_shortest_decimal() -> None:
    # 21.3 °C as a float32 widens to 21.299999237060547; the meter meant 21.3 (same bits).
    import struct
    tg = _telegram(m.storage_dib(0x5) + b"\x5B" + struct.pack("<f", 21.3))
    assert tg.records[0].value == 21.3


def test_data_types_scaling_dates_and_storage() -> None:
    recs = (m.storage_dib(0x4) + b"\x06" + (1234).to_bytes(4, "little")                  # 1234 kWh
            + m.storage_dib(0xC) + b"\x13" + m.encode_bcd(123456, 4)                      # 123.456 m³
            + m.storage_dib(0x2) + b"\x5A" + (-15).to_bytes(2, "little", signed=True)     # -1.5 °C
            + m.storage_dib(0x5) + b"\x2B" + __import__("struct").pack("<f", 2.5)         # 2.5 W
            + m.storage_dib(0x2, storage=1) + b"\x6C" + m.encode_date_g(dt.date(2024, 5, 31))
            + m.storage_dib(0x4, storage=5, tariff=2, subunit=1) + b"\x06" + (7).to_bytes(4, "little")
            + b"\x2F\x2F"
            + m.storage_dib(0x4) + b"\x6D" + m.encode_date_f(dt.datetime(2024, 6, 1, 13, 45))
            + m.storage_dib(0xA) + b"\x13" + bytes.fromhex("12F3")                        # -312 l, sign F
            + m.storage_dib(0xA) + b"\x13" + bytes.fromhex("A1B2")                        # error digits
            + b"\x04\x83\x7F\x01\x00\x00\x00"                                              # unknown VIF 03+mfr
            + b"\x0F\x01\x02")
    t = _telegram(recs)
    r = t.records
    assert (r[0].value, r[0].unit) == (1234000, "Wh")
    assert (r[1].value, r[1].unit) == (123.456, "m³")
    assert (r[2].value, r[2].unit, r[2].quantity) == (-1.5, "°C", "flow temperature")
    assert r[3].value == 2.5
    assert r[4].storage == 1 and r[4].value == m.DateTime(2024, 5, 31)
    assert (r[5].storage, r[5].tariff, r[5].subunit, r[5].value) == (5, 2, 1, 7000)
    assert r[6].value.to_datetime() == dt.datetime(2024, 6, 1, 13, 45)
    assert r[7].value == -0.312
    assert r[8].value is None and "error digits" in (r[8].error or "")
    assert r[9].known and r[9].quantity == "energy"
    assert t.manufacturer_data == b"\x01\x02" and t.tail_dif == 0x0F and not t.more_follows
    assert _telegram(b"\x1F").more_follows


def test_unknown_vif_is_kept_raw_and_marked() -> None:
    t = _telegram(b"\x02\xFD\x77\x05\x00")  # FD 77 is reserved
    rec = t.records[0]
    assert not rec.known and rec.value == 5 and rec.unit == "" and rec.vif_code == "FD77"


def test_combinable_vife_scales_or_marks_a_modifier() -> None:
    t = _telegram(b"\x02\x83\x74\x10\x27"      # Wh with 10^-2 correction: 10000 * 10^-2
                  b"\x02\x83\x22\x10\x27")     # Wh "per hour" (VIFE 22): a different quantity
    assert t.records[0].value == 100 and not t.records[0].modifiers
    assert t.records[1].modifiers == (0x22,)


def test_fixed_data_structure() -> None:
    # CI 73: id, access, status (BCD), two counters: 1 l and historic 135
    frame = bytes.fromhex("68 13 13 68 08 05 73 78 56 34 12 0A 00 E9 7E 01 00 00 00 35 01 00 00 3C 16")
    t = m.decode_telegram(frame)
    assert t.fixed and t.header.id == "12345678"
    assert (t.records[0].value, t.records[0].unit) == (0.001, "m³")
    assert t.records[1].value == 135 and t.records[1].storage == 0


# --- fuzzing -------------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes_never_crash(data: bytes) -> None:
    try:
        m.decode_telegram(data)
    except m.MbusFrameError:
        pass
    framer = m.ReplyFramer()
    try:
        framer.feed(data)
    except m.MbusFrameError:
        pass


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=240), st.sampled_from([0x72, 0x78, 0x7A, 0x73, 0x70]))
def test_fuzz_valid_frames_with_random_records_decode_or_raise_frame_errors(body: bytes, ci: int) -> None:
    frame = m.encode_long(0x08, 1, ci, body)
    try:
        t = m.decode_telegram(frame)
    except m.MbusFrameError as exc:
        assert exc.problem
        return
    for rec in t.records:
        if rec.is_number:
            assert not (isinstance(rec.value, float) and math.isnan(rec.value) and rec.function is None)
        rec.display()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 99_999_999), st.integers(-(2 ** 31), 2 ** 31 - 1), st.integers(0, 7),
       st.integers(0, 15), st.integers(0, 3), st.integers(0, 1))
def test_roundtrip_encoded_records(bcd: int, binary: int, n: int, storage: int, tariff: int, subunit: int) -> None:
    recs = (m.storage_dib(0xC, storage, tariff, subunit) + bytes((0x10 + n,)) + m.encode_bcd(bcd, 4)
            + m.storage_dib(0x4) + bytes((0x00 + n,)) + binary.to_bytes(4, "little", signed=True))
    r = _telegram(recs).records
    assert (r[0].storage, r[0].tariff, r[0].subunit) == (storage, tariff, subunit)
    assert math.isclose(r[0].value, bcd * 10.0 ** (n - 6), rel_tol=1e-12)
    assert math.isclose(r[1].value, binary * 10.0 ** (n - 3), rel_tol=1e-12)


def test_reply_framer_refuses_a_long_frame_from_another_primary_address() -> None:
    # Issue 14: a late RSP_UD of meter 2 arriving while meter 1 is asked was stored as meter 1's values.
    from pollerd.errors import AddressMismatch
    from pollerd.protocols import mbus as mb
    frame = mb.encode_long(mb.C_RSP_UD, 2, 0x72, bytes(12))
    with pytest.raises(AddressMismatch):
        mb.ReplyFramer("data", 1).feed(frame)
    assert mb.ReplyFramer("data", 2).feed(frame) is not None
    assert mb.ReplyFramer("data").feed(frame) is not None   # secondary addressing: not checked
