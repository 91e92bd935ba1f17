"""`pollerd decode dlms HEX`: the shared vectors, pollerd's own client frames and simulator replies, as strict
JSON; a password never shows; bad frames exit 1 with the evidence."""

from __future__ import annotations

import argparse
import json

import pytest
from vectors import load_vectors, missing_reason

from pollerd.decode import dlms as tool
from pollerd.protocols.dlms import acse, axdr, hdlc, wrapper, xdlms
from pollerd.protocols.dlms import spodes as sp
from pollerd.protocols.dlms.hdlc import ServerAddress

VECTORS = load_vectors("dlms-hdlc")


def _run(capsys, text: str) -> tuple[int, str, str]:
    p = argparse.ArgumentParser()
    tool.configure_parser(p)
    rc = tool.run(p.parse_args(text.split()))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.skipif(VECTORS is None, reason=missing_reason("dlms-hdlc"))
def test_vectors_decode_to_json(capsys) -> None:
    by_id = {v["id"]: v for v in VECTORS or []}
    rc, out, _ = _run(capsys, by_id["am_flag_char_in_info"]["hex"].replace(" ", ""))
    d = json.loads(out)
    assert rc == 0 and d["apdu"]["type"] == "data-notification" and d["apdu"]["body"] == [5502]
    assert d["apdu"]["datetime"].startswith("2020-02-15T01:25:34")
    rc, out, _ = _run(capsys, by_id["am_kamstrup_se_real"]["hex"])
    d = json.loads(out)
    assert d["frame"]["kind"] == "UI" and d["apdu"]["body"][0] == "Kamstrup_V0001"


def _i_frame(apdu: bytes, llc: bytes = hdlc.LLC_REQUEST) -> bytes:
    return hdlc.encode_frame(ServerAddress(1, 5694, 4).encode(), hdlc.client_address(32), 0x10, llc + apdu)


def test_requests_and_replies(capsys) -> None:
    aarq = acse.encode_aarq(acse.Aarq(mechanism=acse.MECH_LLS, password=b"secret99"))
    rc, out, _ = _run(capsys, _i_frame(aarq).hex())
    d = json.loads(out)
    assert d["apdu"]["type"] == "aarq" and d["apdu"]["password"] == "***" and "secret99" not in out
    assert "7365637265743939" not in out.replace(" ", "").lower() and "** ** **" in d["frame"]["info"]
    assert d["frame"]["server"] == {"logical": 1, "physical": 5694, "size": 4} and d["frame"]["client_sap"] == 32
    get = xdlms.encode_get(1, xdlms.Attr.of(7, sp.LOAD_PROFILES[0]), xdlms.entry_access(1, 48))
    d = json.loads(_run(capsys, _i_frame(get).hex())[1])
    assert d["apdu"]["items"][0]["access"] == {"selector": 2, "parameters": [1, 48, 1, 0]}
    when = axdr.CosemDateTime(2025, 12, 3, 3, 14, 0, 7, 0, -180, 0)
    resp = xdlms.encode_get_response(0xC1, axdr.encode(when))
    d = json.loads(_run(capsys, wrapper.encode_wrapper(1, 32, resp).hex())[1])
    assert d["framing"] == "wrapper" and d["apdu"]["results"][0]["datetime"].startswith("2025-12-03T14:00:07")
    rej = acse.encode_aare(1, 13)
    d = json.loads(_run(capsys, _i_frame(rej, hdlc.LLC_RESPONSE).hex())[1])
    assert d["apdu"] == {"type": "aare", "accepted": False, "reason": "authentication-failure",
                         "text": d["apdu"]["text"]}
    ua = hdlc.encode_frame(hdlc.client_address(16), ServerAddress(1, 17, 2).encode(), 0x73,
                           hdlc.LinkParams(128, 128, 1, 1).encode())
    d = json.loads(_run(capsys, ua.hex())[1])
    assert d["frame"]["kind"] == "UA" and d["link"]["max_info_rx"] == 128


def test_bad_frame_exits_1_with_hex(capsys) -> None:
    frame = bytearray(_i_frame(b"\xc0\x01\xc1"))
    frame[-2] ^= 1
    rc, out, err = _run(capsys, frame.hex())
    assert rc == 1 and not out and "FCS" in err and "a0 12" in err
