"""IEC 62056-21 codec and OBIS mapping: every shared vector (read at test time), each re-fed one byte at a
time; encoders reproduce the recorded master frames; data-set syntax; hypothesis fuzzing of the parser."""

from __future__ import annotations

import asyncio

import pytest
from fakes import FakeLink
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import hexbytes, vector_params

from pollerd.config import LineConfig
from pollerd.drivers.iec62056 import PROFILES, decode_sets
from pollerd.errors import CrcError, FrameError, FrameTooLong
from pollerd.line import Line
from pollerd.metrics import Registry
from pollerd.protocols import iec62056 as iec
from pollerd.protocols import obis
from pollerd.state import LineState


def alg(entry: dict) -> str:
    return "sum7" if (entry.get("checksum_algorithm") or "").startswith("ENERGOMERA") else "xor"


@pytest.mark.parametrize("entry", vector_params("iec62056-21", lambda e: e.get("bcc_ok") is not None))
def test_every_checksummed_vector_verifies_or_is_rejected(entry: dict) -> None:
    raw = hexbytes(entry["hex"])
    framer = iec.MessageFramer(alg(entry))
    if entry["bcc_ok"]:
        msg = None
        for i in range(len(raw)):               # one byte at a time
            msg = framer.feed(raw[i:i + 1])
            assert msg is None or i == len(raw) - 1
        assert msg is not None and msg.raw == raw and framer.pending == b""
    else:
        with pytest.raises(CrcError, match="BCC mismatch"):
            framer.feed(raw)


@pytest.mark.parametrize("entry", vector_params("iec62056-21", lambda e: e.get("bcc_ok") is not None))
def test_the_other_algorithm_rejects_energomera_frames(entry: dict) -> None:
    raw = hexbytes(entry["hex"])
    if alg(entry) == "sum7" and entry["bcc_ok"] and iec.bcc_xor(raw[1:-1]) != raw[-1]:
        with pytest.raises(CrcError):
            iec.MessageFramer("xor").feed(raw)


@pytest.mark.parametrize("entry", vector_params(
    "iec62056-21", lambda e: e["direction"] in ("master->meter", "either") and e["hex"][:5] in ("2F 3F", "01 52", "01 50",
                                                                                  "01 42", "01 57", "06 30")))
def test_encoders_reproduce_master_frames(entry: dict) -> None:
    raw = hexbytes(entry["hex"])
    if raw.startswith(b"/?"):
        end = raw.index(b"!")
        address = raw[2:end].decode()
        assert iec.sign_on(address, crlf=raw.endswith(b"!\r\n")) == raw[:end + 1 + (2 if raw.endswith(b"\r\n") else 0)] \
            or raw[end + 1:end + 2] == b"\x01"
    elif raw[:1] == b"\x06":
        assert iec.option_select(chr(raw[2]), chr(raw[3]), chr(raw[1])) == raw
    else:
        cmd = raw[1:3].decode()
        data = raw[4:-2] if raw[3:4] == b"\x02" else None
        assert iec.command(cmd, data, alg(entry)) == raw


def test_identifications() -> None:
    ident = iec.parse_identification(b"/LGZ5\\2ZMD4054459.B40\r\n")
    assert (ident.manufacturer, ident.baud_char, ident.baud, ident.enhanced, ident.ident) == \
        ("LGZ", "5", 9600, "2", "ZMD4054459.B40")
    assert not ident.fast_reaction and ident.mode == "C"
    els = iec.parse_identification(b"/Els6\\2EK280\r\n")
    assert els.fast_reaction and els.baud == 19200 and els.ident == "EK280"
    ace = iec.parse_identification(b"/ACE0\\3k260V01.19")
    assert ace.baud == 300 and ace.enhanced == "3" and ace.ident == "k260V01.19"
    assert iec.parse_identification(b"/EKT5CE102Mv01\r\n").ident == "CE102Mv01"
    for bad in (b"LGZ5X\r\n", b"/L\r\n", b"/LG\x015X\r\n"):
        with pytest.raises(FrameError):
            iec.parse_identification(bad)


def test_ident_framer_skips_echo_and_rejects_garbage() -> None:
    req = iec.sign_on("1")
    f = iec.IdentFramer(req)
    assert f.feed(req[:3]) is None
    assert f.feed(req[3:] + b"/TPC5NEVA") is None and f.echoed
    assert f.feed(b"MT324\r\n").ident == "NEVAMT324"
    with pytest.raises(iec.GarbageError, match="got 0x00"):
        iec.IdentFramer().feed(b"\x00/X")
    with pytest.raises(FrameTooLong):
        iec.IdentFramer().feed(b"/" + b"A" * 200)


def test_bcc_byte_may_be_etx_or_eot() -> None:
    # Neva "(01)" reply: BCC 0x03; pwitab block: BCC 0x04. The frame ends one byte after the first ETX.
    f = iec.MessageFramer()
    assert f.feed(bytes.fromhex("02 28 30 31 29 03")) is None
    msg = f.feed(bytes.fromhex("03"))
    assert msg.body == b"(01)" and not msg.partial
    block = b"\x023:14(314*kWh)4:15(415*kWh)\r\n\x03"
    assert iec.encode_message(block)[-1] == 0x04
    assert iec.MessageFramer().feed(iec.encode_message(block)).kind == "data"


def test_partial_block_ack_nak_and_single_bytes() -> None:
    msg = iec.MessageFramer().feed(iec.encode_message(b"\x021.8.0(1)\r\n\x04"))
    assert msg.partial and msg.body == b"1.8.0(1)\r\n"
    assert iec.MessageFramer().feed(b"\x06").kind == "ack"
    assert iec.MessageFramer().feed(b"\x15").kind == "nak"
    assert iec.MessageFramer(single_byte=True).feed(b"\x07").kind == "byte"
    with pytest.raises(iec.GarbageError):
        iec.MessageFramer().feed(b"\x07")
    with pytest.raises(FrameTooLong):
        iec.MessageFramer(max_len=64).feed(b"\x02" + b"1" * 100)


def test_parity_helpers() -> None:
    plain = bytes(range(128))
    wire = iec.add_parity(plain)
    assert iec.strip_parity(wire) == plain
    assert all(bin(b).count("1") % 2 == 0 for b in wire)
    assert iec.parity_ok(wire) == -1 and iec.parity_ok(wire[:5] + bytes((wire[5] ^ 0x80,))) == 5
    f = iec.MessageFramer(strip=True)
    assert f.feed(iec.add_parity(iec.encode_message(b"\x02F.F(0)\x03"))).body == b"F.F(0)"
    with pytest.raises(iec.ParityError):
        iec.MessageFramer(strip=True).feed(bytes((iec.add_parity(b"\x02")[0] ^ 0x80,)))


def test_bcc_functions_agree_with_a_plain_loop() -> None:
    data = bytes(range(256)) * 3 + b"\x07"
    x = 0
    for b in data:
        x ^= b
    assert iec.bcc_xor(data) == x and iec.bcc_xor(b"") == 0 and iec.bcc_xor(b"\x42") == 0x42
    assert iec.bcc_sum7(data) == sum(data) & 0x7F


def test_data_set_syntax() -> None:
    block = (b"0.0.0( 20000)\r\n1.8.0(013925.5*)\r\n1-0:1.8.0*255(1.5*kWh)\r\n1.8.0*12(3*kWh)1.8.0&12(4*kWh)\r\n"
             b"400B(E12)(118.8)(121.1)ET0PE(68.42)\r\n(45.54)\r\n1-0:99.97.0(1)(0-0:96.7.19)(x*s)\r\n!\r\n")
    sets = iec.parse_data_block(block)
    got = {ds.address: [(v.text, v.unit) for v in ds.values] for ds in sets}
    assert got == {
        "0.0.0": [("20000", "")], "1.8.0": [("013925.5", "")], "1-0:1.8.0*255": [("1.5", "kWh")],
        "1.8.0*12": [("3", "kWh")], "1.8.0&12": [("4", "kWh")],
        "400B": [("E12", ""), ("118.8", ""), ("121.1", "")], "ET0PE": [("68.42", ""), ("45.54", "")],
        "1-0:99.97.0": [("1", ""), ("0-0:96.7.19", ""), ("x", "s")],
    }
    assert iec.parse_data_block(b"(01)") == (iec.DataSet("", (iec.Value("01", ""),)),)
    assert iec.parse_data_block(b"") == () and iec.parse_data_block(b"!\r\n") == ()


@pytest.mark.parametrize("bad", [b"1.8.0(1", b"1.8.0(1))", b"1.8 0(1)", b"1.8.0(1\x01)", b"1.8.0(1)junk",
                                 b"1.8.0(1)\x80", b"a!b(1)"])
def test_malformed_blocks_are_frame_errors(bad: bytes) -> None:
    with pytest.raises(FrameError):
        iec.parse_data_block(bad)


@pytest.mark.parametrize("address, channel", [
    ("1.8.0", "A+"), ("1.8.1", "A+.T1"), ("1.8.4", "A+.T4"), ("2.8.0", "A-"), ("2.8.2", "A-.T2"),
    ("3.8.0", "R+"), ("4.8.1", "R-.T1"), ("1-0:1.8.0*255", "A+"), ("1-0:1.8.0", "A+"), ("32.7.0", "U.L1"),
    ("52.7.0", "U.L2"), ("31.7.0", "I.L1"), ("16.7.0", "P"), ("36.7.0", "P.L1"), ("13.7.0", "PF"),
    ("14.7.0", "F"), ("81.7.10", "angle.L1-L2"), ("C.9.0", "T.meter"), ("C.1.0", None), ("1.8.0*12", None), ("1.8.0&12", None),
    ("F.F", None), ("0-0:96.9.0", "T.meter"), ("2-0:1.8.0", None), ("1.8.9", None), ("400B", None),
    ("1-1:1.8.0", "A+"), ("1-2:1.8.0", None), ("1-2:32.7.0", None),
])
def test_obis_channels(address: str, channel: str | None) -> None:
    code = obis.parse(address)
    mapped = obis.channel_of(code) if code else None
    assert (mapped[0] if mapped else None) == channel


def test_hex_obis_of_neva() -> None:
    assert obis.parse_hex("100700FF") == obis.Obis(None, None, 16, 7, 0, 255)
    assert obis.channel_of(obis.parse_hex("2107FFFF"))[0] == "PF.L1"
    assert obis.channel_of(obis.parse_hex("600900FF"))[0] == "T.meter"
    assert obis.parse_hex("1.8.0") is None and obis.parse_hex("ZZ0700FF") is None


def test_units_normalised() -> None:
    assert obis.normalize(68.42, "kWh") == (68420.0, "Wh")
    assert obis.normalize(1.5, "kvarh") == (1500.0, "varh")
    assert obis.normalize(2.0, "kW") == (2000.0, "W")
    assert obis.normalize(230.0, "V") == (230.0, "V")
    assert obis.normalize(3.0, "m3") == (3.0, "m³")
    assert obis.normalize(1.0, "furlong") == (1.0, "furlong")
    assert obis.to_float(" 0042.50") == 42.5 and obis.to_float("E12") is None and obis.to_float("nan") is None


def test_unknown_addresses_keep_their_name_and_extra_values_are_numbered() -> None:
    sets = iec.parse_data_block(b"0.4.2(1234)(5678*s)C.1.0(41)")
    out = [(d.channel, d.value, d.unit) for d in decode_sets(sets, PROFILES["generic"])]
    assert out == [("0.4.2", 1234.0, ""), ("0.4.2#2", 5678.0, "s"), ("C.1.0", 41.0, "")]


# --- fuzzing ------------------------------------------------------------------------------------------------

_addr = st.from_regex(r"[0-9A-Z][0-9A-Za-z.:*&-]{0,15}", fullmatch=True)
_val = st.from_regex(r" {0,2}[0-9A-Za-z.,:+-]{0,12}", fullmatch=True)
_unit = st.sampled_from(["", "kWh", "V", "A", "kvarh", "Hz", "*"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_addr, st.lists(st.tuples(_val, _unit), min_size=1, max_size=3)), max_size=12),
       st.sampled_from(["xor", "sum7"]), st.integers(1, 7))
def test_generated_readouts_round_trip_through_the_framer(sets, checksum: str, chunk: int) -> None:  # type: ignore[no-untyped-def]
    lines = []
    for address, values in sets:
        lines.append(address + "".join(f"({v}{'*' if u == '*' else ('*' + u if u else '')})" for v, u in values))
    block = ("\r\n".join(lines) + "\r\n!\r\n").encode()
    frame = iec.encode_message(b"\x02" + block + b"\x03", checksum)
    framer = iec.MessageFramer(checksum)
    msgs = [m for i in range(0, len(frame), chunk) if (m := framer.feed(frame[i:i + chunk])) is not None]
    assert len(msgs) == 1 and msgs[0].body == block
    parsed = iec.parse_data_block(msgs[0].body)
    assert [(ds.address, [(v.text, v.unit) for v in ds.values]) for ds in parsed] == \
        [(a, [(v.strip(), "" if u == "*" else u) for v, u in vals]) for a, vals in sets]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["xor", "sum7"]), st.booleans())
def test_arbitrary_bytes_only_ever_raise_frame_errors(data: bytes, checksum: str, strip: bool) -> None:
    framer = iec.MessageFramer(checksum, strip=strip, max_len=256)
    try:
        msg = framer.feed(data)
        if msg is not None and msg.kind == "data":
            iec.parse_data_block(msg.body)
    except FrameError:
        pass
    try:
        iec.parse_data_block(data)
    except FrameError:
        pass
    try:
        iec.IdentFramer(strip=strip).feed(data)
    except FrameError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 199))
def test_a_flipped_bit_never_passes_as_the_original(block: bytes, pos: int) -> None:
    frame = iec.encode_message(b"\x02" + bytes(b & 0x7F for b in block if b & 0x7F not in (3, 4)) + b"\x03")
    i = 1 + pos % (len(frame) - 1)
    bad = frame[:i] + bytes((frame[i] ^ 0x01,)) + frame[i + 1:]
    try:
        msg = iec.MessageFramer().feed(bad)
    except FrameError:
        return
    assert msg is None or msg.raw != frame


# --- the line additions: session, send, after_write ---------------------------------------------------------

async def test_line_session_keeps_other_meters_out_and_send_needs_no_reply() -> None:
    link = FakeLink(lambda req: [(0.001, b"\x06")] if req != b"B0" else [])
    line = Line(LineConfig(name="bus", type="tcp", host="127.0.0.1", port=1), LineState("bus", "tcp"), Registry())
    line.link = link  # type: ignore[assignment]
    order: list[str] = []

    async def one(tag: str) -> None:
        await line.exchange(tag.encode(), iec.MessageFramer(), waiting_time=1, pause=0, meter=tag)
        order.append(tag)

    async def session() -> None:
        async with line.session("s"):
            for i in range(3):
                hooked: list[int] = []

                async def hook() -> None:
                    hooked.append(len(link.written))
                await line.exchange(f"s{i}".encode(), iec.MessageFramer(), waiting_time=1, pause=0, meter="s",
                                    after_write=hook)
                assert hooked == [len(link.written)]     # ran after our request was written
                order.append(f"s{i}")
                await asyncio.sleep(0.005)                # others would get in here without the session
            await line.send(b"B0", pause=0, meter="s")
            order.append("B0")

    t = asyncio.ensure_future(session())
    await asyncio.sleep(0)
    await asyncio.gather(one("x"), one("y"), t)
    assert order == ["s0", "s1", "s2", "B0", "x", "y"]
    assert [w for _, w in link.written][:4] == [b"s0", b"s1", b"s2", b"B0"]
