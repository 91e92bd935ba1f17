"""Modbus register maps: value types and orders, scaling and units, config errors with key paths and
lines, templates, and the read planner."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pollerd.config import load_config
from pollerd.drivers.modbus_options import PACKAGE_TEMPLATES, parse_options
from pollerd.errors import ConfigError, OptionError
from pollerd.protocols.floats import f32_decimal
from pollerd.protocols.modbus_map import (
    ModbusOptions,
    parse_registers,
    plan_reads,
    split_block,
)


def one(**entry):
    return parse_registers([{"channel": "x", **entry}])[0]


def words(raw: bytes, word_order: str, byte_order: str) -> bytes:
    """Lay big-endian bytes out as a device with the given orders would (independent of the decoder)."""
    ws = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        ws.reverse()
    if byte_order == "little":
        ws = [w[::-1] for w in ws]
    return b"".join(ws)


@pytest.mark.parametrize("wo", ["big", "little"])
@pytest.mark.parametrize("bo", ["big", "little"])
@pytest.mark.parametrize("tname,fmt,value", [
    ("u16", ">H", 54321), ("s16", ">h", -1234), ("u32", ">I", 4_000_000_123), ("s32", ">i", -2_000_000_001),
    ("u64", ">Q", 2**63 + 12345), ("s64", ">q", -(2**62) - 7), ("f32", ">f", 230.5), ("f64", ">d", -1e-3),
])
def test_types_and_orders(tname, fmt, value, wo, bo):
    spec = one(address=40001, type=tname, word_order=wo, byte_order=bo)
    block = b"\xee\xee" + words(struct.pack(fmt, value), wo, bo)
    assert spec.value(block, 1) == pytest.approx(float(value), rel=0, abs=0)


def test_s64_vector_value_big_endian_words():
    spec = one(address=40031, type="s64")
    assert spec.value(bytes.fromhex("0102030405060708"), 0) == float(72623859790382856)


def test_bcd_valid_and_invalid():
    assert one(address=40001, type="bcd").value(b"\x12\x34", 0) == 1234
    assert one(address=40001, type="bcd32").value(b"\x00\x12\x34\x56", 0) == 123456
    assert one(address=40001, type="bcd").value(b"\x1a\x34", 0) is None


def test_scale_offset_and_unit_normalisation():
    # 1/10 as a divisor: 3 / 10 is the float nearest 0.3, 3 * 0.1 is not
    assert one(address=30001, type="u16", scale=0.1).value(b"\x00\x03", 0) == 0.3
    assert one(address=30001, type="s16", scale=2, offset=-5).value(b"\xff\xfe", 0) == -9.0
    kwh = one(address=30073, type="f32", unit="kWh")
    assert kwh.unit == "Wh" and kwh.value(struct.pack(">f", 1234.5), 0) == 1_234_500.0
    assert one(address=30001, type="f32", unit="V").unit == "V"
    nan = one(address=30001, type="f32")
    assert nan.value(struct.pack(">f", float("nan")), 0) is None


def test_float32_values_lose_the_binary_tail_the_meter_never_meant():
    # 12.345 kWh as float32 widens to 12.345000267...; stored as 12345.000267 Wh it looked like a reading error.
    kwh = one(address=30073, type="f32", unit="kWh")
    assert kwh.value(struct.pack(">f", 12.345), 0) == 12345.0
    assert one(address=30001, type="f32").value(struct.pack(">f", 0.1), 0) == 0.1


@settings(max_examples=500)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_the_float32_decimal_is_the_same_float32(x):
    d = f32_decimal(x)
    assert struct.pack(">f", d) == struct.pack(">f", x)


def test_references_give_function_and_pdu_address():
    assert (one(address=30001, type="f32").function, one(address=30001, type="f32").address) == (4, 0)
    assert (one(address=40012).function, one(address=40012).address) == (3, 11)
    assert (one(address=1).function, one(address=1).address) == (1, 0)
    assert (one(address=10020).function, one(address=10020).address) == (2, 19)
    assert (one(address=300001).function, one(address=300001).address) == (4, 0)
    assert (one(register=0x48, function=4, type="f32").address) == 0x48


@pytest.mark.parametrize("entry,key,text", [
    ({"address": 30001, "type": "f33", "channel": "a"}, (0, "type"), "unknown type 'f33' (did you mean 'f32'?)"),
    ({"address": 30001, "function": 3, "channel": "a"}, (0, "function"), "input register (function 4)"),
    ({"address": 50001, "channel": "a"}, (0, "address"), "not a Modbus reference"),
    ({"register": 5, "channel": "a"}, (0, "register"), "needs 'function'"),
    ({"address": 30001, "register": 0, "channel": "a"}, (0,), "exactly one of"),
    ({"address": 30001}, (0,), "channel"),
    ({"address": 30001, "channel": "a", "word_order": "middle"}, (0, "word_order"), '"big" or "little"'),
    ({"address": 30001, "channel": "a", "scael": 2}, (0, "scael"), "did you mean 'scale'"),
    ({"address": 1, "channel": "a", "type": "u16"}, (0, "type"), "bit"),
])
def test_bad_register_entries_name_the_key(entry, key, text):
    with pytest.raises(OptionError) as info:
        parse_registers([entry])
    assert info.value.key == ("registers",) + key
    assert text in info.value.message


def test_duplicate_channel_is_refused():
    with pytest.raises(OptionError) as info:
        parse_registers([{"address": 30001, "channel": "a"}, {"address": 30003, "channel": "a"}])
    assert info.value.key == ("registers", 1, "channel")


def test_templates_shipped_and_overridden_by_the_meter(tmp_path):
    opts = parse_options({"template": "eastron-sdm630"}, str(tmp_path))
    assert isinstance(opts, ModbusOptions) and opts.mode == "rtu"
    by = {s.channel: s for s in opts.registers}
    assert (by["U.L1"].function, by["U.L1"].address, by["U.L1"].type.name) == (4, 0, "f32")
    assert (by["A+"].address, by["A+"].unit) == (0x48, "Wh")
    assert (by["F"].address, by["P"].address, by["I.N"].address) == (0x46, 0x34, 0xE0)
    # the meter's own entry for a channel replaces the template's; meter word_order overrides the template
    opts = parse_options({"template": "eastron-sdm630", "word_order": "little",
                          "registers": [{"address": 30343, "type": "f32", "channel": "A+", "unit": "kWh"}]},
                         str(tmp_path))
    by = {s.channel: s for s in opts.registers}
    assert by["A+"].address == 0x156 and by["U.L1"].word_order == "little"
    assert len(parse_options({"template": "eastron-sdm120"}, str(tmp_path)).registers) == 11
    assert (Path(__file__).resolve().parents[1] / "config" / "templates" / "eastron-sdm630.toml").is_file()


def test_template_lookup_prefers_the_config_directory_and_names_errors(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "mine.toml").write_text(
        '[[registers]]\naddress = 40001\ntype = "u32"\nchannel = "V"\nunit = "l"\n')
    spec = parse_options({"template": "mine"}, str(tmp_path)).registers[0]
    assert (spec.function, spec.unit, spec.scale) == (3, "m³", 1e-3)
    with pytest.raises(OptionError, match="eastron-sdm630"):
        parse_options({"template": "eastron-sdm63"}, str(tmp_path))
    (tmp_path / "bad.toml").write_text('[[registers]]\naddress = 40001\ntype = "u99"\nchannel = "V"\n')
    with pytest.raises(OptionError) as info:
        parse_options({"template": "bad.toml"}, str(tmp_path))
    assert info.value.key == ("template",) and "registers[0].type" in info.value.message
    with pytest.raises(OptionError, match="needs registers"):
        parse_options({}, str(tmp_path))
    with pytest.raises(OptionError) as info:
        parse_options({"modbus_mode": "tpc", "registers": []}, str(tmp_path))
    assert "did you mean 'tcp'" in info.value.message


def test_config_error_names_file_line_and_key(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[[lines]]\nname = "bus"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1502\n\n'
        '[[meters]]\nname = "m"\nprotocol = "modbus"\nline = "bus"\nconnection_address = 1\n'
        'registers = [\n'
        '  { address = 30001, type = "f32", channel = "U.L1" },\n'
        '  { address = 30003, type = "f23", channel = "U.L2" },\n'
        ']\n')
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    msg = str(info.value)
    assert "meters[0].registers[1].type" in msg and "unknown type 'f23'" in msg
    assert info.value.line is not None and 11 <= info.value.line <= 13


def test_config_loads_modbus_meter(tmp_path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        '[[meters]]\nname = "m"\nprotocol = "modbus"\nip_address = "127.0.0.1"\nport = 1502\n'
        'connection_address = 255\nmodbus_mode = "tcp"\ntemplate = "eastron-sdm630"\npackage_size = 80\n')
    m = load_config(cfg).meters[0]
    assert m.read == ("registers",) and m.options.mode == "tcp" and len(m.options.registers) == 31
    cfg.write_text(cfg.read_text().replace("connection_address = 255", "connection_address = 0"))
    with pytest.raises(ConfigError, match="not in 1..255"):
        load_config(cfg)


# ------------------------------------------------------------------------------------------- planner


def specs(*addrs_types):
    return parse_registers([{"address": a, "type": t, "channel": f"c{i}"} for i, (a, t) in enumerate(addrs_types)])


def test_planner_merges_across_small_holes_only():
    s = specs((30001, "f32"), (30003, "f32"), (30011, "f32"), (30031, "f32"), (40001, "u16"), (40002, "u16"))
    blocks = plan_reads(s, package_size=40, max_gap=8)
    assert [(b.function, b.start, b.count, len(b.items)) for b in blocks] == [
        (4, 0, 12, 3), (4, 30, 2, 1), (3, 0, 2, 2)]
    assert [(b.start, b.count) for b in plan_reads(s, package_size=4, max_gap=8) if b.function == 4] == [
        (0, 4), (10, 2), (30, 2)]


def test_planner_gives_a_too_wide_value_its_own_read():
    blocks = plan_reads(specs((40001, "u64"), (40005, "u16")), package_size=2)
    assert [(b.start, b.count) for b in blocks] == [(0, 4), (4, 1)]


def test_split_at_the_widest_hole():
    block = plan_reads(specs((30001, "f32"), (30003, "f32"), (30011, "f32"), (30013, "f32")), 40, 8)[0]
    a, b = split_block(block)
    assert (a.start, a.count, b.start, b.count) == (0, 4, 10, 4)
    assert split_block(a)[0].count == 2
    assert split_block(split_block(a)[0]) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.sampled_from(["u16", "u32", "f64"]),
                          st.sampled_from([3, 4])), min_size=1, max_size=40, unique_by=lambda t: t),
       st.integers(1, 125), st.integers(0, 20))
def test_planner_covers_every_value_once_within_limits(items, package_size, gap):
    s = parse_registers([{"register": a, "function": f, "type": t, "channel": f"c{i}"}
                         for i, (a, t, f) in enumerate(items)])
    blocks = plan_reads(s, package_size, gap)
    seen = [spec for b in blocks for spec in b.items]
    assert sorted(map(id, seen)) == sorted(map(id, s))
    for b in blocks:
        assert b.count <= max(package_size, max(x.words for x in b.items))
        for x in b.items:
            assert x.function == b.function and b.start <= x.address and x.end <= b.start + b.count
        parts = split_block(b)
        if parts:
            assert sorted(map(id, parts[0].items + parts[1].items)) == sorted(map(id, b.items))


def test_package_templates_dir_is_inside_the_package():
    assert PACKAGE_TEMPLATES.parent.name == "pollerd"
