"""`pollerd decode mercury230`: every recorded vector pair decodes to what its source published; bad input
exits 1 with a message; the CLI wiring prints one JSON object."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from vectors import hexbytes, vector_params

from pollerd.catalog import CATALOG
from pollerd.decode import mercury230 as tool
from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import append_crc

REPO = Path(__file__).resolve().parents[1]

# wb-mqtt-serial's published names -> (our channel, scale from our unit to theirs)
WB_NAMES = {
    "Total consumption": ("A+", 1000), "Total reactive energy": ("R+", 1000),
    "U1": ("U.L1", 1), "U2": ("U.L2", 1), "U3": ("U.L3", 1), "I1": ("I.L1", 1), "I2": ("I.L2", 1),
    "I3": ("I.L3", 1), "Frequency": ("F", 1), "KU1": ("KU.L1", 1), "KU2": ("KU.L2", 1), "KU3": ("KU.L3", 1),
    "P": ("P", 1), "P1": ("P.L1", 1), "P2": ("P.L2", 1), "P3": ("P.L3", 1), "PF": ("PF", 1),
    "PF1": ("PF.L1", 1), "PF2": ("PF.L2", 1), "PF3": ("PF.L3", 1), "Q": ("Q", 1), "Q1": ("Q.L1", 1),
    "Q2": ("Q.L2", 1), "Q3": ("Q.L3", 1), "Temperature": ("T.meter", 1), "AP1": ("A+.L1", 1000),
    "AP2": ("A+.L2", 1000), "AP3": ("A+.L3", 1000),
}


def run_tool(request: str, response: str, *extra: str, capsys) -> tuple[int, dict | None, str]:
    p = argparse.ArgumentParser()
    tool.configure_parser(p)
    rc = tool.run(p.parse_args(["--request", request, "--response", response, *extra]))
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


@pytest.mark.parametrize("entry", vector_params("mercury230", lambda e: e.get("response")))
def test_every_vector_pair_decodes_as_published(entry, capsys):
    rc, out, err = run_tool(entry["request"], entry["response"], capsys=capsys)
    assert rc == 0, err
    assert out["crc_ok"] is True
    assert out["address"] == hexbytes(entry["response"])[0]
    decoded = entry["decoded"]
    readings = {r["channel"]: r for r in out["readings"]}
    published = decoded.get("published_by_wb_mqtt_serial_after_scaling")
    if "status_code" in decoded or "status" in decoded:
        want = decoded.get("status_code", decoded.get("status"))
        assert out["status"] == want and out["fields"]["status"] == want
        assert out["readings"] == []
    elif published == {}:
        assert out["status"] == 0
    elif published:
        assert len(readings) == len(published) or out["request"] == "read_energy"
        for name, text in published.items():
            channel, scale = WB_NAMES[name]
            assert readings[channel]["value"] / scale == float(text), name
            assert readings[channel]["archive"] == "current"
    else:
        assert readings["A+"]["value"] == decoded["A+_Wh"]
        assert readings["R+"]["value"] == decoded["R+_varh"]
        assert "A-" not in readings and "R-" not in readings  # FF FF FF FF: not supported
    if out["request"] == "open_channel":
        assert out["fields"]["password"] == "***"


@pytest.mark.parametrize("entry", vector_params("mercury230", lambda e: not e.get("response")))
def test_every_recorded_request_is_recognised(entry):
    frame = hexbytes(entry["request"])
    name, req = m.describe_request(frame)
    assert req.encode() == frame and name != "raw_request"


def test_profile_record_with_constant_and_timezone(capsys):
    req = "88 06 03 D6 E0 0F"  # no CRC: appended by the tool
    resp = append_crc(hexbytes("88 00 13 30 28 12 22 1E 2A 00 FF FF 02 00 00 00")).hex(" ")
    rc, out, _ = run_tool(req, resp, "--constant", "500", "--timezone", "Europe/Moscow", capsys=capsys)
    assert rc == 0
    assert out["request"] == "read_profile" and out["status"] is None
    assert out["fields"]["record_address"] == 0xD6E0 and out["fields"]["start"] == "2022-12-28T13:30:00"
    ts = int(dt.datetime(2022, 12, 28, 10, 30, tzinfo=dt.timezone.utc).timestamp())
    assert out["readings"] == [
        {"channel": "A+", "value": 42.0, "unit": "Wh", "archive": "profile", "ts": ts},
        {"channel": "R+", "value": 2.0, "unit": "varh", "archive": "profile", "ts": ts},
        {"channel": "R-", "value": 0.0, "unit": "varh", "archive": "profile", "ts": ts},
    ]
    rc, out, _ = run_tool(req, resp, "--constant", "500", capsys=capsys)
    assert out["readings"][0]["ts"] == "2022-12-28T13:30:00"  # meter-local without a zone


def test_identity_fields(capsys):
    resp = append_crc(hexbytes("31 2F 38 47 23 10 0B 16")).hex()
    rc, out, _ = run_tool("31 08 00", resp, capsys=capsys)
    assert out["fields"] == {"serial": "47567135", "manufactured": "2022-11-16"}
    resp = append_crc(b"\x31" + m.encode_time(dt.datetime(2025, 1, 2, 3, 4, 5), 1)).hex()
    rc, out, _ = run_tool("31 04 00", resp, capsys=capsys)
    assert out["fields"]["time"] == "2025-01-02T03:04:05" and out["fields"]["season"] == 1


def test_echoed_request_before_the_reply_is_accepted(capsys):
    req = m.read_aux(0x31, 0x11)
    resp = (req.encode() + append_crc(b"\x31" + m.encode_aux(0x11, 230.5))).hex()
    rc, out, _ = run_tool(req.encode().hex(), resp, capsys=capsys)
    assert rc == 0 and out["readings"][0]["value"] == 230.5


@pytest.mark.parametrize("request_hex, response_hex, message", [
    ("00 05 00 00", "00 30 00 28 C5 FF FF FF FF 04 00 9C 95 FF FF FF FF 44 AC", "CRC mismatch"),
    ("00 09 00 00", "00 00 01 B0", "unknown request"),
    ("00 05 00 00", "00 30", "too short"),
    ("00 08 11 11", append_crc(hexbytes("00 00 40 5E 00")).hex(), "expected"),
    ("00 08 13", append_crc(hexbytes("00 00 10 1A 13 00 28 12 22")).hex(), "expected 12 bytes"),
])
def test_bad_input_exits_1_with_a_message(request_hex, response_hex, message, capsys):
    rc, out, err = run_tool(request_hex, response_hex, capsys=capsys)
    assert rc == 1 and out is None
    assert message in err and err.startswith("pollerd decode mercury230:")


def test_registered_and_runs_through_the_cli():
    assert CATALOG["mercury230"].decoder.module == "pollerd.decode.mercury230"
    proc = subprocess.run(
        [sys.executable, "-m", "pollerd", "decode", "mercury230", "--request", "00 08 11 11 4D BA",
         "--response", "00 00 40 5E B0 1C"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["request"] == "read_aux" and out["readings"][0]["channel"] == "U.L1"
    assert out["readings"][0]["value"] == 241.28
