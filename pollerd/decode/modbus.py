"""``pollerd decode modbus --request HEX --response HEX [--tcp]``.

Offline decoding of one captured Modbus exchange (RTU with CRC, or Modbus TCP with the MBAP header when
``--tcp``; RTU over TCP is plain RTU). Prints ONE JSON object::

    {"mode": "rtu", "unit": 17, "function": 3, "function_name": "read holding registers",
     "address": 107, "reference": "40108", "count": 3, "transaction_id": null,
     "registers": [44609, 22098, 17216], "registers_hex": ["ae41", ...]}

An exception reply gives ``"exception": {"code": 2, "text": "illegal data address", "message": "..."}``
(exit 0: the device answered). Exit 1 with a message on stderr for a bad CRC, a reply from another unit,
an incomplete or malformed frame.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pollerd.decode import dumps, hex_argument
from pollerd.errors import FrameError
from pollerd.protocols import modbus as mb

__all__ = ["configure_parser", "decode", "run"]

FUNCTION_NAMES = {
    mb.FC_READ_COILS: "read coils", mb.FC_READ_DISCRETE_INPUTS: "read discrete inputs",
    mb.FC_READ_HOLDING: "read holding registers", mb.FC_READ_INPUT: "read input registers",
    mb.FC_WRITE_COIL: "write single coil", mb.FC_WRITE_REGISTER: "write single register",
    mb.FC_WRITE_COILS: "write multiple coils", mb.FC_WRITE_REGISTERS: "write multiple registers",
}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Decode one Modbus request/response pair (hex) into JSON."
    p.add_argument("--request", required=True, type=hex_argument, metavar="HEX",
                   help="the request as sent (RTU: with CRC; --tcp: with the MBAP header)")
    p.add_argument("--response", required=True, type=hex_argument, metavar="HEX", help="the reply bytes")
    p.add_argument("--tcp", action="store_true", help="Modbus TCP frames (MBAP header, no CRC)")


def decode(request: bytes, response: bytes, tcp: bool = False) -> dict[str, Any]:
    """The JSON-able decoding; raises FrameError (bad CRC, wrong unit, malformed)."""
    req, tid = mb.decode_request(request, tcp)
    reply = mb.decode_response(req, response, tcp, tid)
    out: dict[str, Any] = {
        "mode": "tcp" if tcp else "rtu", "unit": req.unit, "function": req.function,
        "function_name": FUNCTION_NAMES.get(req.function, "?"), "address": req.address,
        "reference": mb.reference(req.function, req.address), "count": req.count, "transaction_id": tid,
    }
    if reply.exception is not None:
        try:
            reply.check()
        except mb.ModbusException as exc:
            out["exception"] = {"code": exc.status, "text": mb.EXCEPTION_TEXT.get(exc.status or 0, "unknown"),
                                "message": str(exc)}
        return out
    if req.function in (mb.FC_READ_HOLDING, mb.FC_READ_INPUT):
        regs = reply.registers()
        out["registers"] = list(regs)
        out["registers_hex"] = [f"{r:04x}" for r in regs]
    elif req.function in (mb.FC_READ_COILS, mb.FC_READ_DISCRETE_INPUTS):
        out["bits"] = [int(b) for b in reply.bits(req.count)]
    else:
        out["echo"] = reply.data.hex(" ")
    return out


def run(args: argparse.Namespace) -> int:
    try:
        result = decode(args.request, args.response, args.tcp)
    except FrameError as exc:
        print(f"pollerd decode modbus: {exc}", file=sys.stderr)
        return 1
    print(dumps(result))
    return 0
