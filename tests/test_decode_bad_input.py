"""Decode tools never traceback and always print strict JSON (issue 14, observations 2 and 7)."""

from __future__ import annotations

import json

import pytest

from pollerd.commands.cli import main


def _strict(text: str) -> object:
    def refuse(token: str) -> object:
        raise AssertionError(f"not strict JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("argv, says", [
    # phase 0 of voltage has no channel: was a ValueError traceback from the channel table
    (["decode", "mercury230", "--request", "01 08 11 10", "--response", "01 00 5e 5b 78 43"], "unknown"),
    # an empty reply to a single-coil write: was an IndexError in the framer's fast path
    (["decode", "modbus", "--request", "76 05 19 3A 00 7D 20 3D", "--response", ""], "incomplete reply"),
    (["decode", "mbus", "68 03 03 68 08 01 72"], "mbus"),
])
def test_bad_input_is_one_clear_line_and_a_nonzero_exit(argv: list[str], says: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and says in err and "Traceback" not in err


def test_mbus_nan_record_is_null_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    telegram = "68 1b 1b 68 08 01 72 78 56 34 12 43 04 01 07 01 00 00 00 04 13 40 e2 01 00 05 5b 00 00 c0 7f b8 16"
    rc = main(["decode", "mbus", telegram])
    out, _ = capsys.readouterr()
    assert rc == 0
    records = _strict(out)["records"]  # type: ignore[index]
    assert records[0]["value"] == 123.456 and "invalid" not in records[0]
    assert records[1]["value"] is None and "finite" in records[1]["invalid"]


def test_iec_value_beyond_float_range_is_null_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    body = b"\x021.8.0(1e308*kWh)\r\n2.8.0(12.5*kWh)\r\n!\r\n\x03"
    bcc = 0
    for b in body[1:]:
        bcc ^= b
    rc = main(["decode", "iec62056", "--response", (body + bytes((bcc,))).hex()])
    out, _ = capsys.readouterr()
    assert rc == 0
    readings = {r["channel"]: r for r in _strict(out)["readings"]}  # type: ignore[index]
    assert readings["A+"]["value"] == "1e308" and "beyond any float" in readings["A+"]["invalid"]
    assert readings["A-"]["value"] == 12500.0 and "invalid" not in readings["A-"]


def test_a_decoder_fault_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Whatever the fuzzer has not found yet: the tool still answers in one line, exit 70 (EX_SOFTWARE).
    def boom(*_: object, **__: object) -> object:
        raise KeyError("a decoder bug")
    monkeypatch.setattr("pollerd.decode.modbus.decode", boom)
    rc = main(["decode", "modbus", "--request", "11 03 00 6B 00 03 76 87", "--response", "11 03 00"])
    _, err = capsys.readouterr()
    assert rc == 70 and len(err.strip().splitlines()) == 1 and "KeyError" in err


@pytest.mark.parametrize("apdu", ["0f 40 00 00 00 09", "0f 40 00 00 00 09 0c 07 e4", "0f 40 00 00 00 0c 07"])
def test_a_cut_dlms_data_notification_is_a_declared_error(apdu: str) -> None:
    # Found by scripts/fuzz.py (56 in 1 M inputs): the optional date-time of a data-notification read past
    # the end of a damaged APDU, an IndexError out of the decode tool.
    from pollerd.errors import PollerdError
    from pollerd.protocols.dlms import describe
    with pytest.raises(PollerdError):
        describe.decode_apdu(bytes.fromhex(apdu))


def test_the_fuzz_finding_frame_is_one_line_from_the_decode_tool(capsys: pytest.CaptureFixture[str]) -> None:
    frame = "7e a0 13 01 02 01 10 9b 7e e6 e7 00 0f 40 00 00 00 09 c1 9b 7e"
    rc = main(["decode", "dlms", frame])
    _, err = capsys.readouterr()
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
