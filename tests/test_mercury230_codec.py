"""Mercury 230 codec: recorded frames (shared vectors, read at test time), framing edge cases, round trips."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import hexbytes, vector_params

from pollerd.decode import mercury230 as dm
from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong, MeterError, SessionClosed
from pollerd.protocols import crc
from pollerd.protocols import mercury230 as m

PROTOCOL = "mercury230"


def builder_for(frame: bytes) -> tuple[str, m.Request]:
    """Recognise which builder produces this request, from its bytes alone."""
    addr, body = frame[0], frame[1:-2]
    code = body[0]
    if body == b"\x00":
        return "test_channel", m.test_channel(addr)
    if code == 0x01 and len(body) == 8:
        return "open_channel", m.open_channel(addr, body[1], body[2:8])
    if body == b"\x02":
        return "close_channel", m.close_channel(addr)
    if code == 0x05 and len(body) == 3:
        return "read_energy", m.read_energy(addr, array=body[1] >> 4, month=body[1] & 0x0F, tariff=body[2])
    if body == b"\x04\x00":
        return "read_time", m.read_time(addr)
    if body == b"\x08\x00":
        return "read_serial", m.read_serial(addr)
    if body == b"\x08\x02":
        return "read_ratios", m.read_ratios(addr)
    if body == b"\x08\x12":
        return "read_variant", m.read_variant(addr)
    if code == 0x08 and len(body) == 3 and body[1] == 0x11:
        return "read_aux", m.read_aux(addr, body[2])
    if code == 0x08 and len(body) == 3 and body[1] == 0x16:
        return "read_aux_group", m.read_aux_group(addr, body[2])
    return "raw_request", m.raw_request(addr, body)


def feed_bytewise(framer: m.ReplyFramer, frame: bytes) -> m.Reply:
    for i in range(len(frame) - 1):
        assert framer.feed(frame[i : i + 1]) is None, f"complete after {i + 1} of {len(frame)} bytes"
    reply = framer.feed(frame[-1:])
    assert reply is not None
    return reply


# ------------------------------------------------------------------------------------------------ CRC


def test_crc_check_value_and_facts_sanity_vectors():
    assert crc.crc16_modbus(b"123456789") == 0x4B37
    assert crc.append_crc(b"\x00\x00") == hexbytes("00 00 01 B0")
    assert crc.append_crc(hexbytes("00 01 01 01 01 01 01 01 01")) == hexbytes("00 01 01 01 01 01 01 01 01 77 81")
    assert crc.append_crc(hexbytes("00 05 00 00")) == hexbytes("00 05 00 00 10 25")
    assert crc.check_crc(hexbytes("00 05 00 00 10 25"))
    assert not crc.check_crc(hexbytes("00 05 00 00 10 24"))
    assert not crc.check_crc(b"\x00\x00")


def test_crc_uses_c_extension():
    # crcmod-plus is a declared dependency; losing its extension costs ~10x on every frame.
    assert crc.crc_extension_in_use()


# ------------------------------------------------------------------------------------ recorded vectors


@pytest.mark.parametrize("entry", vector_params(PROTOCOL, lambda e: e.get("request")))
def test_builders_reproduce_recorded_requests(entry):
    frame = hexbytes(entry["request"])
    assert crc.check_crc(frame), "recorded request CRC"
    name, request = builder_for(frame)
    assert request.encode() == frame, name
    if name == "raw_request":
        # 08 01 / 08 05 have no builder; the generic one still frames them byte for byte.
        assert frame[1] == 0x08


@pytest.mark.parametrize("entry", vector_params(PROTOCOL, lambda e: e.get("request") and e.get("response")))
def test_recorded_replies_frame_bytewise_and_decode(entry):
    request = builder_for(hexbytes(entry["request"]))[1]
    frame = hexbytes(entry["response"])
    assert crc.check_crc(frame), "recorded response CRC"
    reply = feed_bytewise(m.ReplyFramer(request), frame)
    assert reply.address == frame[0]
    assert reply.data == frame[1:-2]
    # the same frame in one chunk gives the same reply
    assert m.ReplyFramer(request).feed(frame) == reply

    decoded = entry["decoded"]
    if "status_code" in decoded:
        expected_status = decoded["status_code"]
        assert reply.status == expected_status
        expected_exc = SessionClosed if expected_status == 5 else MeterError
        with pytest.raises(expected_exc) as info:
            m.check_status(reply)
        assert info.value.status == expected_status
        if expected_status != 5:
            assert not isinstance(info.value, SessionClosed)
        return
    if "status" in decoded:
        assert reply.status == decoded["status"]
        assert m.check_status(reply) is reply
        return

    published = decoded.get("published_by_wb_mqtt_serial_after_scaling")
    body = request.body
    if body[0] == 0x05 and body[1] >> 4 == 6:
        values = m.decode_phase_energy(reply.data)
        want = [published[f"AP{i}"] for i in (1, 2, 3)]
        assert [v / 1000 for v in values] == [float(w) for w in want]
    elif body[0] == 0x05:
        a_plus, a_minus, r_plus, r_minus = m.decode_energy(reply.data)
        if published is not None:
            if published:
                assert a_plus / 1000 == float(published["Total consumption"])
                assert r_plus / 1000 == float(published["Total reactive energy"])
        else:
            assert a_plus == decoded["A+_Wh"]
            assert r_plus == decoded["R+_varh"]
            assert a_minus is None and r_minus is None
    elif body[:2] == b"\x08\x11":
        ((name, value),) = published.items()
        assert m.decode_aux(body[2], reply.data) == float(value), name
    elif published == {}:
        assert m.check_status(reply).status == 0
    else:  # pragma: no cover - a new vector kind must get a decoder check here
        pytest.fail(f"no decoder check for {entry['id']}")


def test_vectors_cover_the_brief_examples():
    """The recorded set contains the values the brief names; guards against an emptied vectors file."""
    from vectors import require_vectors

    entries = {e["id"]: e for e in require_vectors(PROTOCOL)}
    u1 = entries["wb_EnqueueMercury230U1Response"]
    assert m.decode_aux(0x11, hexbytes(u1["response"])[1:-2]) == 241.28
    p1 = entries["wb_EnqueueMercury230P1Response"]
    assert m.decode_aux(0x01, hexbytes(p1["response"])[1:-2]) == -5530.95
    e1 = entries["wb_EnqueueMercury230EnergyResponse1"]
    assert m.decode_energy(hexbytes(e1["response"])[1:-2]) == (3196200, None, 300444, None)


# --------------------------------------------------------------------------------------- the framer


def test_echo_is_stripped_then_reply_taken():
    req = m.read_aux(0x31, 0x11)
    reply_frame = crc.append_crc(bytes((0x31,)) + m.encode_aux(0x11, 230.5))
    framer = m.ReplyFramer(req)
    reply = feed_bytewise(framer, req.encode() + reply_frame)
    assert framer.echoed
    assert m.decode_aux(0x11, reply.data) == 230.5
    # in one chunk as well
    framer = m.ReplyFramer(req)
    assert framer.feed(req.encode() + reply_frame) == reply and framer.echoed


def test_echo_only_waits_and_keeps_nothing_pending():
    req = m.read_energy(1)
    framer = m.ReplyFramer(req)
    assert framer.feed(req.encode()[:3]) is None
    assert framer.pending == req.encode()[:3]
    assert framer.feed(req.encode()[3:]) is None
    assert framer.echoed and framer.pending == b""


def test_test_channel_request_is_taken_as_its_reply():
    req = m.test_channel(0)
    framer = m.ReplyFramer(req)
    reply = framer.feed(req.encode())
    assert reply == m.Reply(0, b"\x00") and reply.status == 0
    assert not framer.echoed


def test_reply_without_echo_is_not_mistaken_for_one():
    req = m.open_channel(0x31, 1, m.password_bytes("111111"))
    framer = m.ReplyFramer(req)
    reply = feed_bytewise(framer, m.encode_status(0x31, 0))
    assert reply.status == 0 and not framer.echoed


def test_wrong_address_raises_at_once_with_evidence():
    framer = m.ReplyFramer(m.read_serial(5))
    with pytest.raises(AddressMismatch) as info:
        framer.feed(b"\x06")
    assert "0x05" in str(info.value) and "0x06" in str(info.value)
    assert info.value.frame == b"\x06"


def test_crc_flip_raises_crc_error():
    req = m.read_energy(1)
    good = crc.append_crc(b"\x01" + m.encode_energy(1, 2, 3, 4))
    assert m.ReplyFramer(req).feed(good) is not None
    for bit in range(8):
        bad = bytearray(good)
        bad[5] ^= 1 << bit
        framer = m.ReplyFramer(req)
        with pytest.raises(CrcError) as info:
            for i in range(len(bad)):
                framer.feed(bad[i : i + 1])
        assert info.value.frame == bytes(bad)


def test_status_reply_to_data_request_is_returned():
    framer = m.ReplyFramer(m.read_energy(1))
    reply = feed_bytewise(framer, m.encode_status(1, 5))
    assert reply.status == 5
    with pytest.raises(SessionClosed):
        m.check_status(reply)


def test_over_long_flood_raises_frame_too_long():
    framer = m.ReplyFramer(m.read_serial(1), max_len=32)
    with pytest.raises(FrameTooLong):
        framer.feed(b"\x01" + b"\x55" * 40)


def test_max_len_below_expected_reply_is_refused():
    with pytest.raises(ValueError):
        m.ReplyFramer(m.read_energy(1), max_len=10)


def test_check_status_codes():
    for status in (1, 2, 3, 4):
        with pytest.raises(MeterError) as info:
            m.check_status(m.Reply(1, bytes((status,))))
        assert info.value.status == status and not isinstance(info.value, SessionClosed)
        assert m.STATUS_TEXT[status] in str(info.value)
    # upper nibble is not interpreted
    with pytest.raises(SessionClosed):
        m.check_status(m.Reply(1, b"\x15"))
    data = m.Reply(1, b"\x00\x01\x00\x01")
    assert data.status is None and m.check_status(data) is data


# ------------------------------------------------------------------------------------- builders, misc


def test_builder_lengths():
    assert m.read_serial(1).reply_len == 7
    assert m.read_ratios(1).reply_len == 4
    assert m.read_variant(1).reply_len == 6
    assert m.read_time(1).reply_len == 8
    assert m.read_energy(1).reply_len == 16
    assert m.read_energy(1, array=6).reply_len == 12
    assert m.read_energy(1, array=3, month=3, tariff=2).body == hexbytes("05 33 02")
    assert m.read_aux(1, 0x11).reply_len == 3
    assert m.read_aux(1, 0x70).reply_len == 2
    assert m.read_aux(1, 0x61).reply_len == 2
    assert [m.read_aux_group(1, b).reply_len for b in (0x00, 0x04, 0x08, 0x30)] == [12] * 4
    assert [m.read_aux_group(1, b).reply_len for b in (0x11, 0x21, 0x51)] == [9] * 3
    assert m.test_channel(1).reply_len is None and m.close_channel(1).reply_len is None
    with pytest.raises(ValueError):
        m.read_aux_group(1, 0x70)
    with pytest.raises(ValueError):
        m.open_channel(1, 1, b"\x01" * 5)
    with pytest.raises(ValueError):
        m.Request(256, b"\x00", None)


def test_password_encodings():
    assert m.password_bytes("111111") == b"\x01" * 6
    assert m.password_bytes("123456", "digits") == bytes(range(1, 7))
    assert m.password_bytes("abcdef", "ascii") == b"abcdef"
    assert m.password_bytes("0102030405FF", "hex") == hexbytes("01 02 03 04 05 FF")
    for pw, enc in (("12345", "digits"), ("12345a", "digits"), ("abc", "ascii"), ("01020304", "hex"),
                    ("zz0203040506", "hex"), ("111111", "base64")):
        with pytest.raises(ValueError) as info:
            m.password_bytes(pw, enc)
        assert pw not in str(info.value)


def test_decode_serial_facts_example():
    # FACTS: 2F 38 47 23 -> "47567135", 10 0B 16 -> 16.11.2022 (binary, not BCD)
    assert m.decode_serial(hexbytes("2F 38 47 23 10 0B 16")) == ("47567135", dt.date(2022, 11, 16))
    assert m.decode_serial(hexbytes("2F 38 47 23 00 00 00")) == ("47567135", None)
    with pytest.raises(FrameError):
        m.decode_serial(hexbytes("FF 38 47 23 10 0B 16"))


def test_decode_ratios_and_variant():
    assert m.decode_ratios(hexbytes("00 01 00 01")) == (1, 1)
    assert m.decode_ratios(hexbytes("00 64 01 F4")) == (100, 500)
    for code, constant in m.CONSTANTS.items():
        data = bytes((0xB4, 0x60 | code, 0, 0, 0, 0))
        assert m.decode_variant(data) == constant
        assert m.decode_variant(m.encode_variant(constant)) == constant
    with pytest.raises(FrameError):
        m.decode_variant(bytes((0, 0x0E, 0, 0, 0, 0)))


def test_decode_time_bcd():
    when, season = m.decode_time(hexbytes("45 30 12 03 19 11 25 01"))
    assert when == dt.datetime(2025, 11, 19, 12, 30, 45) and season == 1
    with pytest.raises(FrameError):
        m.decode_time(hexbytes("4A 30 12 03 19 11 25 01"))
    with pytest.raises(FrameError):
        m.decode_time(hexbytes("00 00 00 03 31 02 25 01"))  # 31 February


def test_absent_values_and_wrong_lengths():
    assert m.decode_aux(0x51, b"\xff\xff\xff") is None
    assert m.decode_aux_group(0x51, b"\xff\xff\xff" + m.encode_aux(0x51, 120.0) * 2) == (None, 120.0, 120.0)
    assert m.decode_energy(b"\xff" * 16) == (None, None, None, None)
    with pytest.raises(FrameError):
        m.decode_energy(b"\x00" * 15)
    with pytest.raises(FrameError):
        m.decode_aux(0x11, b"\x00\x00")
    assert m.decode_aux(0x70, hexbytes("FF F6")) == -10.0


def test_sign_rules_per_quantity():
    raw = hexbytes("C8 87 70")  # both direction bits set
    assert m.decode_aux(0x00, raw) == -5530.95  # P: bit 7
    assert m.decode_aux(0x04, raw) == -5530.95  # Q: bit 6
    assert m.decode_aux(0x08, raw) == 5530.95  # S: unsigned
    assert m.decode_aux(0x04, hexbytes("88 87 70")) == 5530.95
    assert m.decode_aux(0x00, hexbytes("48 87 70")) == 5530.95
    assert m.decode_aux(0x30, hexbytes("88 87 90")) == -561.287


# ------------------------------------------------------------------------------------------ round trips

_energy_value = st.one_of(st.none(), st.integers(0, 0xFFFFFFFE))


@given(_energy_value, _energy_value, _energy_value, _energy_value)
def test_energy_round_trip(a, b, c, d):
    data = m.encode_energy(a, b, c, d)
    assert len(data) == 16
    assert m.decode_energy(data) == (a, b, c, d)


@given(st.tuples(_energy_value, _energy_value, _energy_value))
def test_phase_energy_round_trip(values):
    assert m.decode_phase_energy(m.encode_phase_energy(*values)) == values


@given(st.integers(0, 0x3FFFFF), st.booleans(), st.booleans())
def test_3byte_round_trip(magnitude, active_negative, reactive_negative):
    if magnitude == 0x3FFFFF and active_negative and reactive_negative:
        with pytest.raises(ValueError):  # would be FF FF FF, the "absent" marker
            m.encode_3byte(magnitude, active_negative=True, reactive_negative=True)
        return
    data = m.encode_3byte(magnitude, active_negative=active_negative, reactive_negative=reactive_negative)
    assert m.decode_3byte(data) == (magnitude, active_negative, reactive_negative)


_SIGNED = (0x00, 0x01, 0x04, 0x07, 0x30, 0x33)
_UNSIGNED = (0x08, 0x0B, 0x11, 0x23, 0x40, 0x51, 0x81)


@given(st.sampled_from(_SIGNED + _UNSIGNED), st.integers(0, 0x3FFFFF), st.booleans())
def test_aux_value_round_trip(bwri, magnitude, negative):
    divisor = 1000 if bwri >> 4 in (2, 3) else 100
    value = magnitude / divisor
    if negative and bwri in _SIGNED:
        value = -value
    assert m.decode_aux(bwri, m.encode_aux(bwri, value)) == value


@given(st.sampled_from((0x00, 0x04, 0x08, 0x30, 0x11, 0x21, 0x51, 0x40)), st.data())
def test_aux_group_round_trip(bwri, data):
    count = m.group_reply_len(bwri) // 3
    divisor = 1000 if bwri >> 4 in (2, 3) else 100
    signed = bwri in (0x00, 0x04, 0x30)
    lo = -0x3FFFFF if signed else 0
    values = tuple(
        None if v is None else v / divisor
        for v in data.draw(st.lists(st.one_of(st.none(), st.integers(lo, 0x3FFFFF)), min_size=count, max_size=count))
    )
    assert m.decode_aux_group(bwri, m.encode_aux_group(bwri, values)) == values


@given(st.integers(-32768, 32767))
def test_temperature_round_trip(t):
    assert m.decode_aux(0x70, m.encode_aux(0x70, t)) == t


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59, 59)),
       st.sampled_from((0, 1)))
def test_time_round_trip(when, season):
    when = when.replace(microsecond=0)
    assert m.decode_time(m.encode_time(when, season)) == (when, season)


@given(st.text("0123456789", min_size=8, max_size=8),
       st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31)))
def test_serial_round_trip(serial, made):
    assert m.decode_serial(m.encode_serial(serial, made)) == (serial, made)


@settings(max_examples=200)
@given(st.data())
def test_framer_any_chunking_gives_the_same_reply(data):
    bwri = data.draw(st.sampled_from((0x00, 0x11, 0x21, 0x51)))
    req = m.read_aux_group(data.draw(st.integers(1, 240)), bwri)
    payload = data.draw(st.binary(min_size=req.reply_len, max_size=req.reply_len))
    frame = crc.append_crc(bytes((req.address,)) + payload)
    echo = data.draw(st.booleans())
    stream = (req.encode() if echo else b"") + frame
    cuts = sorted(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=6, unique=True)))
    framer = m.ReplyFramer(req)
    results = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)]):
        results.append(framer.feed(stream[a:b]))
    got = [r for r in results if r is not None]
    # A payload whose first 4 bytes happen to form a valid status frame ends early; that is the
    # protocol's own ambiguity (1 in 65536), not the framer's.
    if crc.check_crc(frame[:4]):
        return
    assert got == [m.Reply(req.address, payload)]
    assert results[-1] is not None and framer.echoed == echo


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_framer_fuzz_raises_only_frame_errors(junk):
    framer = m.ReplyFramer(m.read_energy(7))
    try:
        framer.feed(junk)
    except FrameError:
        pass


# ================================================================================ issue 3: archives etc.

_DT = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 12, 31, 23, 59, 59))
_DT_MIN = _DT.map(lambda d: d.replace(second=0, microsecond=0))
_COUNT = st.one_of(st.none(), st.integers(0, 0xFFFE))


def test_profile_record_facts_layout():
    # status 00, 13:30 28.12.22, T=30, A+ 42 (2A 00 little-endian), A- absent, R+ 0x0102, R- 0
    data = hexbytes("00 13 30 28 12 22 1E 2A 00 FF FF 02 01 00 00")
    rec = m.decode_profile_record(data)
    assert rec == m.ProfileRecord(0, dt.datetime(2022, 12, 28, 13, 30), 30, 42, None, 0x0102, 0)
    # FACTS / MOL: A = 500, N = 42 -> 42 Wh in 30 min (84 W average)
    assert m.profile_energy_wh(42, 500) == 42.0


def test_last_profile_decodes_the_mol_reply():
    # [MOL] 08 13 reply after the address byte: record 0x0010, status 1A, 13:00 28.12.22, T = 30
    info = m.decode_last_profile(hexbytes("00 10 1A 13 00 28 12 22 1E"))
    assert info == m.LastProfile(0x0010, 0x1A, dt.datetime(2022, 12, 28, 13, 0), 30)
    assert m.profile_status_flags(0x1A) == {"incomplete", "bit3", "bit4"}
    assert m.profile_status_flags(0) == set()


def test_profile_requests_and_address_walk():
    assert m.read_last_profile(0x88).encode()[:3] == hexbytes("88 08 13")
    req = m.read_profile(0x88, 0xD6E0)
    assert req.body == hexbytes("06 03 D6 E0 0F") and req.reply_len == 15
    assert m.next_profile_address(0xD6E0) == 0xD6F0
    assert m.next_profile_address(0xFFF0) == 0x0000  # wraps
    assert m.prev_profile_address(0x0000) == 0xFFF0
    a = 0xFFE0
    for _ in range(4097):
        a = m.next_profile_address(a)
    assert a == 0xFFF0  # 4096 slots of 16 bytes = the whole 16-bit space
    with pytest.raises(ValueError):
        m.next_profile_address(0x10000)
    with pytest.raises(ValueError):
        m.read_profile(1, 0x10000)


def test_empty_profile_slot_and_bad_bcd():
    assert m.decode_profile_record(bytes(15)).start is None
    assert m.decode_profile_record(b"\x00" + b"\xff" * 5 + bytes(9)).start is None
    with pytest.raises(FrameError, match="BCD"):
        m.decode_profile_record(hexbytes("00 1A 30 28 12 22 1E 00 00 00 00 00 00 00 00"))
    with pytest.raises(FrameError, match="not a valid date"):
        m.decode_profile_record(hexbytes("00 13 30 31 02 22 1E 00 00 00 00 00 00 00 00"))


@pytest.mark.parametrize("decoder, length", [
    (m.decode_profile_record, 15), (m.decode_last_profile, 9), (m.decode_journal, 12),
    (m.decode_version, 3), (m.decode_fast_info, 16), (m.decode_net_address, 2), (m.decode_energy, 16),
    (m.decode_time, 8), (lambda d: m.decode_fixed(0x00, d), 16), (lambda d: m.decode_fixed(0x11, d), 9),
])
def test_wrong_lengths_say_expected_got_and_show_the_bytes(decoder, length):
    got = length - 3 if length > 4 else length + 2
    data = bytes(range(0x88, 0x88 + got))
    with pytest.raises(FrameError) as info:
        decoder(data)
    text = str(info.value)
    assert f"expected {length} bytes, got {got}: 88 89" in text
    assert info.value.frame == data


@given(st.integers(0, 0xFF), _DT_MIN, st.integers(1, 60), _COUNT, _COUNT, _COUNT, _COUNT)
def test_profile_record_round_trip(status, start, period, a, b, c, d):
    rec = m.ProfileRecord(status, start, period, a, b, c, d)
    assert m.decode_profile_record(m.encode_profile_record(rec)) == rec


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFF), st.one_of(st.none(), _DT_MIN), st.integers(0, 0xFF))
def test_last_profile_round_trip(address, status, start, period):
    info = m.LastProfile(address, status, start, period)
    assert m.decode_last_profile(m.encode_last_profile(info)) == info


@given(st.one_of(st.none(), _DT), st.one_of(st.none(), _DT))
def test_journal_round_trip(start, end):
    start = start.replace(microsecond=0) if start else None
    end = end.replace(microsecond=0) if end else None
    assert m.decode_journal(m.encode_journal(start, end)) == (start, end)


def test_journal_requests_and_table():
    req = m.read_journal(0x31, 0x12, 9)
    assert req.body == hexbytes("04 12 09") and req.reply_len == 12
    assert m.JOURNALS[0x01][0] == "power_off"
    assert set(m.JOURNALS) == {0x01, 0x03, 0x04, 0x05, 0x12, 0x17, 0x18, 0x19}
    with pytest.raises(ValueError):
        m.read_journal(1, 0, 0)  # 04 00 is the clock
    with pytest.raises(ValueError):
        m.read_journal(1, 1, 10)
    assert m.decode_journal(bytes(12)) == (None, None)


def test_fixed_power_facts_layout():
    # 4-byte power: b0 b1 b2 b3 -> (b1 & 3F)<<24 | b0<<16 | b3<<8 | b2, b1 bit 7 = P direction
    assert m.decode_fixed(0x00, hexbytes("00 00 70 1E") * 4) == (77.92,) * 4  # 0x1E70 = 7792 -> 77.92 W
    # b1 bit 7 set: exported active power; the bit is masked off the magnitude
    p = m.decode_fixed(0x00, hexbytes("01 80 00 00") + hexbytes("00 00 70 1E") * 3)
    assert p == (-655.36, 77.92, 77.92, 77.92)
    # reactive uses bit 6; apparent power ignores both
    assert m.decode_fixed(0x04, hexbytes("00 40 10 00") * 4) == (-0.16,) * 4
    assert m.decode_fixed(0x08, hexbytes("00 C0 10 00") * 4) == (0.16,) * 4
    assert m.decode_fixed(0x00, b"\xff" * 16) == (None,) * 4
    assert [fr.reply_len for fr in m.FIXED_READS] == [m.fixed_reply_len(fr.bwri) for fr in m.FIXED_READS]
    assert m.freeze(0xFE).encode()[:3] == hexbytes("FE 03 08") and m.freeze(1).reply_len is None
    with pytest.raises(ValueError):
        m.decode_fixed(0xE0, bytes(8))


@given(st.sampled_from([0x00, 0x04, 0x08]), st.lists(st.integers(-(2**30 - 1), 2**30 - 1), min_size=4, max_size=4))
def test_fixed_power_round_trip(bwri, raw):
    values = [v / 100 for v in raw]
    if bwri == 0x08:
        values = [abs(v) for v in values]
    assert list(m.decode_fixed(bwri, m.encode_fixed(bwri, values))) == values


def test_set_time_and_energy_arrays():
    req = m.set_time(5, dt.datetime(2025, 3, 1, 12, 34, 56), 1)
    assert req.body == hexbytes("03 0C 56 34 12 06 01 03 25 01") and req.reply_len is None
    assert m.ENERGY_ARRAYS[4][0] == "daily" and "IN the period" not in m.ENERGY_ARRAYS[4][1]
    assert "accumulated" in m.ENERGY_ARRAYS[5][1] and "start" in m.ENERGY_ARRAYS[12][1]
    assert m.read_energy(1, 3, 3, 2).body == hexbytes("05 33 02")


def test_correct_time_layout_and_decoding():
    # 03 0D ss mm hh in BCD, a status reply (ti-cortex-m4/tm4c1294ncpdt sensors/device_b.c QueryControlB).
    req = m.correct_time(0x80, dt.datetime(2026, 11, 30, 12, 30, 45))
    assert req.body == hexbytes("03 0D 45 30 12") and req.reply_len is None
    assert req.encode()[:-2] == hexbytes("80 03 0D 45 30 12") and crc.check_crc(req.encode())
    out = dm.decode_reply(req, m.Reply(0x80, b"\x00"))
    assert out["fields"] == {"time": "12:30:45", "status": 0, "status_text": "ok"}
    out = dm.decode_reply(req, m.Reply(0x80, b"\x04"))
    assert out["fields"]["status"] == 4 and "once a day" in out["fields"]["status_text"]
    with pytest.raises(FrameError, match="not valid"):
        dm.decode_reply(m.raw_request(1, hexbytes("03 0D 00 60 12")), m.Reply(1, b"\x00"))
    with pytest.raises(FrameError, match="BCD"):
        m.decode_time_of_day(hexbytes("1A 00 00"))
    with pytest.raises(FrameError, match="expected 3 bytes"):
        m.decode_time_of_day(hexbytes("10 00"))


@given(st.times())
def test_correct_time_round_trip(when):
    req = m.correct_time(7, when)
    name, got = m.describe_request(req.encode())
    assert (name, got) == ("correct_time", req)
    assert m.decode_time_of_day(req.body[2:]) == when.replace(microsecond=0)


# --------------------------------------------------------------------------- request recognition, replies

_BUILT = [
    ("test_channel", m.test_channel(3)), ("open_channel", m.open_channel(3, 2, bytes(range(6)))),
    ("close_channel", m.close_channel(3)), ("freeze", m.freeze(3)),
    ("set_time", m.set_time(3, dt.datetime(2024, 2, 29, 1, 2, 3), 0)), ("read_time", m.read_time(3)),
    ("correct_time", m.correct_time(3, dt.time(23, 59, 58))),
    ("read_journal", m.read_journal(3, 0x17, 4)), ("read_energy", m.read_energy(3, 3, 12, 4)),
    ("read_energy", m.read_energy(3, 6)), ("read_profile", m.read_profile(3, 0xABC0)),
    ("read_memory", m.read_profile(3, 0x1234, 16, 2)), ("read_serial", m.read_serial(3)),
    ("read_fast_info", m.read_fast_info(3)), ("read_ratios", m.read_ratios(3)), ("read_version", m.read_version(3)),
    ("read_net_address", m.read_net_address()), ("read_variant", m.read_variant(3)),
    ("read_last_profile", m.read_last_profile(3)), ("read_aux", m.read_aux(3, 0x70)),
    ("read_aux_group", m.read_aux_group(3, 0x51)), ("read_fixed", m.read_fixed(3, 0xE0)),
    ("read_fixed", m.read_fixed(3, 0x30)),
]


@pytest.mark.parametrize("name, req", _BUILT, ids=[f"{n}-{r.body.hex()}" for n, r in _BUILT])
def test_describe_request_with_and_without_crc(name, req):
    for frame in (req.encode(), req.encode()[:-2]):
        got_name, got = m.describe_request(frame)
        assert (got_name, got) == (name, req)


@pytest.mark.parametrize("hexframe", ["01 09 00", "01 08 7F", "01 06 03 00 10 00", "01 04 01 0A", "01", "01 05 3D 00"])
def test_describe_request_rejects_unknown(hexframe):
    with pytest.raises(FrameError):
        m.describe_request(hexbytes(hexframe))


def test_decode_reply_profile_with_and_without_timezone():
    from zoneinfo import ZoneInfo

    req = m.read_profile(0x88, 0x0010)
    reply = m.Reply(0x88, hexbytes("02 13 30 28 12 22 1E 2A 00 FF FF 0A 00 00 00"))
    local = dm.decode_reply(req, reply, constant=500, tz=None)
    assert local["fields"]["impulses"] == {"A+": 42, "A-": None, "R+": 10, "R-": 0}
    assert [(r["channel"], r["value"], r["ts"], r["archive"]) for r in local["readings"]] == [
        ("A+", 42.0, "2022-12-28T13:30:00", "profile"), ("R+", 10.0, "2022-12-28T13:30:00", "profile"),
        ("R-", 0.0, "2022-12-28T13:30:00", "profile")]
    assert all(r["quality"] == "incomplete" for r in local["readings"])
    utc = dm.decode_reply(req, reply, constant=500, tz=ZoneInfo("Europe/Moscow"))
    assert utc["readings"][0]["ts"] == int(dt.datetime(2022, 12, 28, 10, 30, tzinfo=dt.timezone.utc).timestamp())
    assert dm.decode_reply(req, reply)["readings"] == []  # no constant: impulses only


def test_profile_quality():
    rec = m.decode_profile_record(hexbytes("00 13 30 28 12 22 1E 2A 00 FF FF 0A 00 00 00"))
    assert m.profile_quality(rec) is None
    assert m.profile_quality(dataclasses.replace(rec, status=0x1A)) == "incomplete"
    assert m.profile_quality(dataclasses.replace(rec, status=0x10)) == "status:bit4"
    assert m.profile_quality(dataclasses.replace(rec, start=rec.start.replace(minute=37))) == "partial"
    assert m.profile_quality(dataclasses.replace(rec, start=rec.start.replace(minute=37), period=1)) is None
    reply = m.Reply(0x88, hexbytes("00 13 37 28 12 22 1E 2A 00 FF FF 0A 00 00 00"))
    out = dm.decode_reply(m.read_profile(0x88, 0x0010), reply, constant=500)
    assert {r["quality"] for r in out["readings"]} == {"partial"}


def test_decode_reply_never_echoes_a_password_and_reports_status():
    req = m.open_channel(1, 1, m.password_bytes("123456"))
    out = dm.decode_reply(req, m.Reply(1, b"\x00"))
    assert out["fields"] == {"access_level": 1, "password": "***", "status": 0, "status_text": "ok"}
    assert "123456" not in repr(out) and "01 02 03" not in repr(out)
    out = dm.decode_reply(m.read_energy(1), m.Reply(1, b"\x05"))
    assert out["fields"]["status"] == 5 and out["readings"] == []


def test_decode_reply_journal_and_fixed_time():
    out = dm.decode_reply(m.read_journal(1, 1, 0), m.Reply(1, hexbytes("05 04 03 02 01 24 00 00 00 00 00 00")))
    assert out["fields"] == {"journal": 1, "record": 0, "code": "power_off", "text": m.JOURNALS[1][1],
                             "start": "2024-01-02T03:04:05", "end": None}
    out = dm.decode_reply(m.read_fixed(1, 0xE0), m.Reply(1, m.encode_time(dt.datetime(2024, 5, 6, 7, 8, 9), 0)))
    assert out["fields"] == {"frozen_at": "2024-05-06T07:08:09", "season": 0}


_REQUESTS_FOR_FUZZ = [r for _, r in _BUILT if r.reply_len is not None]


@settings(max_examples=300)
@given(st.sampled_from(_REQUESTS_FOR_FUZZ), st.binary(min_size=0, max_size=40),
       st.one_of(st.none(), st.sampled_from([500, 1000, 5000])))
def test_decode_reply_random_bytes_raise_only_frame_errors(req, data, constant):
    try:
        dm.decode_reply(req, m.Reply(req.address, data), constant=constant, tz=dt.timezone.utc)
    except (FrameError, MeterError):
        pass


@settings(max_examples=300)
@given(st.binary(min_size=0, max_size=20))
def test_new_decoders_random_bytes_raise_only_frame_errors(data):
    for decoder in (m.decode_profile_record, m.decode_last_profile, m.decode_journal, m.decode_fast_info,
                    m.decode_version, m.decode_net_address, lambda d: m.decode_fixed(0x00, d),
                    lambda d: m.decode_fixed(0x30, d), lambda d: m.decode_fixed(0x40, d)):
        try:
            decoder(data)
        except FrameError:
            pass


@given(st.binary(min_size=0, max_size=14))
def test_describe_request_random_bytes_raise_only_frame_errors(frame):
    try:
        name, req = m.describe_request(frame)
    except FrameError:
        return
    assert req.address == frame[0]


def test_an_open_channel_echo_never_puts_the_password_into_errors():
    # A half-duplex adapter that echoes part of the request, or garbles the echo, leaves the password bytes
    # in the receive buffer; the line quotes `pending` in its timeout and FrameErrors quote their frame,
    # and both end up in logs and the meter's last error (API).
    req = m.open_channel(5, 2, bytes.fromhex("121314151617"))
    wire = req.encode()
    framer = m.ReplyFramer(req)
    assert framer.feed(wire[:9]) is None  # a partial echo, then silence: the line reports `pending`
    assert b"\x14\x15" not in framer.pending
    garbled = bytes((5, 0x81)) + wire[2:]  # an echo with a bit flipped: not recognised as the echo
    for data in (garbled, bytes((6,)) + wire[1:], wire[:-1] + b"\x00" * 60):
        with pytest.raises(FrameError) as err:
            m.ReplyFramer(req).feed(data)
        assert "14 15" not in str(err.value) and b"\x14\x15" not in err.value.frame


def test_one_bwri_table_group_reads_match_their_single_reads():
    # The driver falls back from an 08 16 group read to 08 11 singles: both must name the same channels.
    seen = set()
    for group in m.INSTANT_GROUPS:
        channels, unit = m.group_channels(group)
        singles = m.group_singles(group)
        assert len(singles) == len(channels) == len(m.decode_aux_group(group, bytes(m.group_reply_len(group))))
        for channel, bwri in zip(channels, singles):
            assert m.aux_channel(bwri) == (channel, unit)
        seen.update(channels)
    seen.update(m.aux_channel(b)[0] for b in m.INSTANT_SINGLES)
    assert {"P", "Q.L2", "S.L3", "PF", "U.L1", "I.L3", "angle.L2-L3", "F", "T.meter"} <= seen
    assert len(seen) == 4 * 4 + 3 * 3 + 2
