"""Modbus codec: the shared vectors replayed byte for byte, framing rules, bad input, fuzzing.

Vectors (pymodbus tests, BSD-3-Clause; wb-mqtt-serial fixtures, MIT-WB) are read from the shared folder
at test time and never copied here (see tests/vectors.py)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import hexbytes, missing_reason, vectors_dir

from pollerd.decode.modbus import decode
from pollerd.errors import AddressMismatch, CrcError, FrameError, FrameTooLong
from pollerd.protocols import modbus as mb
from pollerd.protocols.crc import append_crc


def _modbus_vectors() -> dict[str, list[dict]]:
    path = vectors_dir() / "modbus-rtu" / "vectors.json"
    if not path.is_file():
        return {"frames": [], "crc_only": []}
    return json.loads(path.read_text(encoding="utf-8"))


VEC = _modbus_vectors()
needs_vectors = pytest.mark.skipif(not VEC["frames"], reason=missing_reason("modbus-rtu"))


def by_id(ident: str) -> dict:
    return next(v for v in VEC["frames"] if v["id"] == ident)


def feed_bytewise(framer, data: bytes):
    reply = None
    for i in range(len(data)):
        out = framer.feed(data[i:i + 1])
        if out is not None:
            assert reply is None
            reply = out
            assert i == len(data) - 1, "reply complete before its last byte"
    return reply


# ------------------------------------------------------------------------------------------- vectors


@needs_vectors
@pytest.mark.parametrize("vec", [v for v in VEC["frames"] if v["request"] and v["request_crc_ok"]],
                         ids=lambda v: v["id"])
def test_our_encoder_builds_every_vector_request(vec):
    frame = hexbytes(vec["request"])
    req, tid = mb.decode_request(frame)
    assert tid is None
    assert mb.encode_rtu(req) == frame


@needs_vectors
@pytest.mark.parametrize("vec", [v for v in VEC["frames"] if v["request"] and v["response"]],
                         ids=lambda v: v["id"])
def test_vector_pairs_replayed_byte_by_byte(vec):
    req, _ = mb.decode_request(hexbytes(vec["request"]))
    reply = feed_bytewise(mb.RtuReplyFramer(req), hexbytes(vec["response"]))
    assert reply is not None and reply.exception is None and reply.unit == req.unit
    d = vec["decoded"]
    if "registers" in d:
        assert list(reply.registers()) == d["registers"]
    if "u16" in d:
        assert reply.registers() == (d["u16"],)
    if "s64" in d:
        assert struct.unpack(">q", reply.data)[0] == d["s64"]
    if "coils" in d:
        assert [int(b) for b in reply.bits(req.count)] == d["coils"]
    if "input" in d:
        assert reply.bits(1) == (bool(d["input"]),)


@needs_vectors
@pytest.mark.parametrize("ident", ["pm_exc_slave0", "pm_exc_slave17", "pm_exc_slave255"])
def test_exception_vectors_become_clear_errors(ident):
    frame = hexbytes(by_id(ident)["response"])
    req = mb.read_request(frame[0], mb.FC_READ_HOLDING, 11, 2)
    reply = feed_bytewise(mb.RtuReplyFramer(req), frame)
    assert reply.exception == 2
    with pytest.raises(mb.ModbusException) as info:
        reply.check()
    assert str(info.value).startswith(f"unit {frame[0]}: illegal data address at 40012 ")
    assert info.value.status == 2 and info.value.address == 11 and info.value.count == 2


@needs_vectors
def test_corrupted_crc_vector_is_rejected_with_evidence():
    frame = hexbytes(by_id("pm_exc_badcrc")["response"])
    with pytest.raises(CrcError) as info:
        feed_bytewise(mb.RtuReplyFramer(mb.read_request(0, 3, 0, 1)), frame)
    assert "91 21" in str(info.value) and "expected 91 31" in str(info.value)


@needs_vectors
def test_fc01_vectors_with_other_unit_ids():
    reply = mb.RtuReplyFramer(mb.read_request(1, 1, 0, 24)).feed(hexbytes(by_id("pm_fc01_resp_unit1")["response"]))
    assert reply.data == bytes.fromhex("01 00 0A")
    with pytest.raises(AddressMismatch, match="unit 2, expected unit 1"):
        mb.RtuReplyFramer(mb.read_request(1, 1, 0, 8)).feed(hexbytes(by_id("pm_fc01_resp_unit2")["response"]))


# ----------------------------------------------------------------------------------------- framing


def rtu_reply(unit: int, fc: int, data: bytes) -> bytes:
    return append_crc(bytes((unit, fc, len(data))) + data)


def test_reference_numbers_in_messages():
    assert mb.reference(3, 11) == "40012"
    assert mb.reference(4, 0) == "30001"
    assert mb.reference(1, 0) == "00001"
    assert mb.reference(2, 19) == "10020"
    assert mb.reference(4, 10000) == "310001"


def test_garbage_before_a_frame_is_skipped_and_kept_for_the_log():
    req = mb.read_request(5, 4, 0, 2)
    good = rtu_reply(5, 4, b"\x43\x66\x80\x00")
    framer = mb.RtuReplyFramer(req)
    reply = feed_bytewise(framer, b"\x00\xff\x04\x05" + good)
    assert reply.registers() == (0x4366, 0x8000)
    assert framer.skipped == b"\x00\xff\x04\x05"


def test_reply_from_another_unit_is_an_address_mismatch():
    with pytest.raises(AddressMismatch) as info:
        mb.RtuReplyFramer(mb.read_request(3, 3, 0, 1)).feed(rtu_reply(4, 3, b"\x00\x01"))
    assert "reply from unit 4, expected unit 3" in str(info.value)
    assert rtu_reply(4, 3, b"\x00\x01").hex(" ") in str(info.value)


def test_wrong_byte_count_is_a_frame_error():
    with pytest.raises(FrameError, match="byte count 2 .* expected 4"):
        mb.RtuReplyFramer(mb.read_request(3, 3, 0, 2)).feed(rtu_reply(3, 3, b"\x00\x01"))


def test_half_duplex_echo_of_the_request_is_skipped():
    req = mb.read_request(9, 3, 0x10, 1)
    framer = mb.RtuReplyFramer(req)
    reply = feed_bytewise(framer, mb.encode_rtu(req) + rtu_reply(9, 3, b"\x12\x34"))
    assert reply.registers() == (0x1234,) and framer.echoed


def test_write_encoders_and_their_echo_replies():
    assert mb.encode_rtu(mb.write_register(1, 1, 3)) == append_crc(bytes.fromhex("01 06 0001 0003"))
    assert mb.encode_rtu(mb.write_coil(1, 0xAC, True)) == append_crc(bytes.fromhex("01 05 00AC FF00"))
    req = mb.write_registers(1, 1, [0x000A, 0x0102])
    assert mb.encode_rtu(req) == append_crc(bytes.fromhex("01 10 0001 0002 04 000A 0102"))
    assert mb.RtuReplyFramer(req).feed(append_crc(bytes.fromhex("01 10 0001 0002"))).data == bytes.fromhex(
        "0001 0002")
    coils = mb.write_coils(1, 0x13, [True, False, True, True, False, False, True, True, True, False])
    assert coils.pdu() == bytes.fromhex("0F 0013 000A 02 CD 01")  # the spec's example
    with pytest.raises(FrameError, match="echoes"):
        mb.RtuReplyFramer(mb.write_register(1, 1, 3)).feed(append_crc(bytes.fromhex("01 06 0001 0004")))


def test_request_limits():
    with pytest.raises(ValueError):
        mb.read_request(1, 3, 0, 126)
    with pytest.raises(ValueError):
        mb.read_request(1, 3, 65535, 2)
    with pytest.raises(ValueError):
        mb.read_request(1, 6, 0, 1)


def test_endless_noise_is_capped():
    framer = mb.RtuReplyFramer(mb.read_request(1, 3, 0, 1))
    with pytest.raises(FrameTooLong):
        for _ in range(100):
            framer.feed(b"\x00" * 16)


def test_mbap_reply_and_stale_transaction_ids():
    req = mb.read_request(1, 3, 0, 1)
    old = bytes.fromhex("0006 0000 0005 01 03 02 0001")
    new = bytes.fromhex("0007 0000 0005 01 03 02 002A")
    framer = mb.MbapReplyFramer(req, 7)
    reply = feed_bytewise(framer, old + new)
    assert reply.registers() == (42,) and reply.tid == 7 and framer.stale == 1
    assert mb.encode_mbap(req, 7) == bytes.fromhex("0007 0000 0006 01 03 0000 0001")


def test_mbap_exception_and_bad_headers():
    req = mb.read_request(3, 3, 11, 2)
    reply = mb.MbapReplyFramer(req, 1).feed(bytes.fromhex("0001 0000 0003 03 83 02"))
    with pytest.raises(mb.ModbusException, match=r"^unit 3: illegal data address at 40012 "):
        reply.check()
    with pytest.raises(FrameError, match="protocol id"):
        mb.MbapReplyFramer(req, 1).feed(bytes.fromhex("0001 0001 0003 03 83 02"))
    with pytest.raises(FrameTooLong):
        mb.MbapReplyFramer(req, 1).feed(bytes.fromhex("0001 0000 0fff 03 83 02"))
    with pytest.raises(AddressMismatch):
        mb.MbapReplyFramer(req, 1).feed(bytes.fromhex("0001 0000 0003 04 83 02"))


# ----------------------------------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 255), st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16]),
       st.integers(1, 10), st.integers(1, 7))
def test_rtu_framer_raises_only_frame_errors(data, unit, fc, count, chunk):
    req = mb.Request(unit, fc, 0, count, b"\x00\x00" if fc in (5, 6) else
                     (bytes((count * 2,)) + b"\x00" * count * 2 if fc == 16 else
                      (bytes(((count + 7) // 8,)) + b"\x00" * ((count + 7) // 8) if fc == 15 else b"")))
    framer = mb.RtuReplyFramer(req)
    try:
        for i in range(0, len(data), chunk):
            reply = framer.feed(data[i:i + chunk])
            if reply is not None:
                assert reply.unit == unit
                try:
                    reply.check()
                except mb.ModbusException:
                    pass
                break
    except FrameError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 0xFFFF), st.integers(1, 7))
def test_mbap_framer_raises_only_frame_errors(data, tid, chunk):
    framer = mb.MbapReplyFramer(mb.read_request(1, 4, 0, 2), tid)
    try:
        for i in range(0, len(data), chunk):
            reply = framer.feed(data[i:i + chunk])
            if reply is not None:
                assert reply.tid == tid and len(reply.data) == 4
                break
    except FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 247), st.sampled_from([3, 4]), st.integers(0, 1000),
       st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125), st.binary(max_size=6))
def test_rtu_round_trip_with_leading_noise(unit, fc, addr, regs, noise):
    req = mb.read_request(unit, fc, addr, len(regs))
    frame = rtu_reply(unit, fc, struct.pack(f">{len(regs)}H", *regs))
    framer = mb.RtuReplyFramer(req)
    try:
        reply = framer.feed(noise + frame)
    except FrameError:
        # noise that happens to start like our own reply with a wrong CRC is a CRC error, by design
        assert noise and noise[0] == unit
        return
    if reply is None:  # noise that looked like a longer frame of another unit: still waiting, never wrong
        return
    assert reply.registers() == tuple(regs)


# ----------------------------------------------------------------------------------------- decode CLI


def test_decode_cli_prints_registers_and_exceptions():
    cmd = [sys.executable, "-c", ("import sys; from pollerd.decode import modbus as d; import argparse; "
                                  "p = argparse.ArgumentParser(); d.configure_parser(p); sys.exit(d.run(p.parse_args()))")]
    ok = subprocess.run(cmd + ["--request", "11 03 00 6B 00 03 76 87", "--response", "11 03 06 AE 41 56 52 43 40 49 AD"],
                        capture_output=True, text=True, timeout=20)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["unit"] == 17 and out["function"] == 3 and out["reference"] == "40108"
    assert out["registers"] == [0xAE41, 0x5652, 0x4340]
    bad = subprocess.run(cmd + ["--request", "00 03 00 7C 00 02 04 02", "--response", "00 83 02 91 21"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 1 and "CRC" in bad.stderr
    exc = decode(bytes.fromhex("0001 0000 0006 03 03 000b 0002"), bytes.fromhex("0001 0000 0003 03 83 02"), True)
    assert exc["exception"]["code"] == 2
    assert exc["exception"]["message"].startswith("unit 3: illegal data address at 40012")
