"""``pollerd decode dlms HEX``: one captured DLMS/COSEM HDLC frame or TCP-wrapper PDU as strict JSON.

Prints ONE JSON object::

    {"framing": "hdlc", "frame": {"kind", "dest", "src", "server", "client_sap", "control", "ns", "nr", "pf",
                                  "segmented", "info"},
     "apdu": {"type": "get-response-normal", "invoke": 1, "results": [...]}}

The APDU is decoded when the frame carries one whole (an LLC header and no segmentation); a segment shows
its information field as hex. Values: integers and floats as JSON numbers, octet strings as hex (a 12-byte
one that reads as a COSEM date-time also as "datetime"), structures and arrays as lists. A password in an
AARQ is never printed. Exit 1 with the frame error on stderr for bytes that are not a valid frame.
"""

from __future__ import annotations

import argparse
import json
import sys

from pollerd.decode import hex_argument
from pollerd.errors import FrameError
from pollerd.protocols.dlms.describe import decode

__all__ = ["configure_parser", "run"]


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Decode one DLMS/COSEM HDLC frame or wrapper PDU (hex) into JSON."
    p.add_argument("frame", type=hex_argument, nargs="+", metavar="HEX", help="the frame (several words are joined)")


def run(args: argparse.Namespace) -> int:
    raw = b"".join(args.frame)
    try:
        out = decode(raw)
    except FrameError as exc:
        print(f"dlms: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, ensure_ascii=False, allow_nan=False))
    return 0


if __name__ == "__main__":  # pragma: no cover - `pollerd decode dlms` is the entry point
    parser = argparse.ArgumentParser(prog="pollerd decode dlms")
    configure_parser(parser)
    sys.exit(run(parser.parse_args()))
