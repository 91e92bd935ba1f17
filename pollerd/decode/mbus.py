"""``pollerd decode mbus HEX``: one captured M-Bus frame (RSP_UD) as JSON.

Prints ONE JSON object::

    {"address": 1, "ci": "72", "fixed": false, "more_follows": false,
     "header": {"id", "manufacturer", "version", "medium", "medium_name", "access_no", "status", "signature",
                "secondary"},
     "records": [{"storage", "tariff", "subunit", "function", "quantity", "value", "unit", "vif", "known",
                  ...}],
     "manufacturer_data": "hex"}

A number is a JSON number; dates are ISO strings; texts strings; binary data hex. HEX may hold spaces or
colons. Exit 1 with the frame error (its problem and evidence) on stderr for a frame that is not valid.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pollerd.decode import dumps, hex_argument
from pollerd.protocols import mbus as m

__all__ = ["configure_parser", "decode", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Decode one wired M-Bus frame (hex) into JSON: header and records."
    p.add_argument("frame", type=hex_argument, nargs="+", metavar="HEX", help="the frame (several words are joined)")


def _value(rec: m.Record) -> Any:
    v = rec.value
    if isinstance(v, (m.DateTime, m.TimeOfDay)):
        return v.iso()
    if isinstance(v, bytes):
        return v.hex(" ").upper()
    return v


def decode(raw: bytes) -> dict[str, Any]:
    t = m.decode_telegram(raw)
    h = t.header
    records = []
    for r in t.records:
        d: dict[str, Any] = {"storage": r.storage, "tariff": r.tariff, "subunit": r.subunit,
                             "function": r.function.value, "quantity": r.quantity, "value": _value(r),
                             "unit": r.unit, "vif": r.vif_code, "known": r.known}
        if isinstance(r.value, m.DateTime) and r.value.invalid:
            d["invalid"] = True
        if r.error == m.NON_FINITE:
            # The meter sent NaN or an infinity (IEEE real): not a number JSON can carry, nor a reading.
            d["invalid"] = f"{r.error} [{r.raw.hex(' ').upper()}]"
        elif r.error:
            d["error"] = r.error
        if r.modifiers:
            d["vife_modifiers"] = [f"{c:02X}" for c in r.modifiers]
        records.append(d)
    return {
        "address": t.address, "ci": f"{t.ci:02X}", "fixed": t.fixed, "more_follows": t.more_follows,
        "header": {"id": h.id, "manufacturer": h.manufacturer, "version": h.version, "medium": h.medium,
                   "medium_name": h.medium_name, "access_no": h.access_no, "status": h.status,
                   "signature": h.signature, "secondary": h.secondary},
        "records": records,
        "manufacturer_data": t.manufacturer_data.hex(" ").upper() if t.tail_dif is not None else None,
    }


def run(args: argparse.Namespace) -> int:
    raw = b"".join(args.frame)
    try:
        out = decode(raw)
    except m.MbusFrameError as exc:
        print(f"mbus: {exc.problem}: {exc}", file=sys.stderr)
        return 1
    print(dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover - `pollerd decode mbus` is the entry point
    parser = argparse.ArgumentParser(prog="pollerd decode mbus")
    configure_parser(parser)
    sys.exit(run(parser.parse_args()))
