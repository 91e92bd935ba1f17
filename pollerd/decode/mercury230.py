"""``pollerd decode mercury230 --request HEX --response HEX [--constant N] [--timezone TZ]``.

Offline decoding of one captured exchange; prints ONE JSON object::

    {"address": 1, "crc_ok": true, "request": "read_energy", "status": null,
     "fields": {...}, "readings": [{"channel", "value", "unit", "archive", "ts"}, ...]}

HEX may hold spaces (or colons); the request may come with or without its CRC. Exit 1 with a message on
stderr for a response with a bad CRC, an incomplete or malformed response, or a request it does not know.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pollerd.decode import hex_argument
from pollerd.errors import FrameError
from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import check_crc

__all__ = ["configure_parser", "decode", "run"]


class DecodeError(Exception):
    """Why a pair cannot be decoded; the message is the one line the user sees."""


def _timezone(text: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone {text!r} (expected e.g. Europe/Moscow)") from None


def _constant(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the meter constant must be a positive number of imp/kWh, got {text!r}")
    return value


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Decode one Mercury 230 request/response pair (hex) into JSON."
    p.add_argument("--request", required=True, type=hex_argument, metavar="HEX",
                   help="the request frame, with or without CRC, e.g. '01 05 00 00'")
    p.add_argument("--response", required=True, type=hex_argument, metavar="HEX", help="the response frame")
    p.add_argument("--constant", type=_constant, default=None, metavar="N",
                   help="meter constant A in imp/kWh (from 08 12): needed to turn load-profile impulses into Wh")
    p.add_argument("--timezone", type=_timezone, default=None, metavar="TZ",
                   help="the meter's time zone: profile timestamps become UTC unix seconds")


def decode(request: bytes, response: bytes, *, constant: int | None = None, tz: Any = None) -> dict[str, Any]:
    """The JSON object for one pair; raises DecodeError with a one-line reason."""
    try:
        name, req = m.describe_request(request)
    except FrameError as exc:
        raise DecodeError(f"unknown request: {exc}") from None
    if len(response) < 4:
        raise DecodeError(f"response too short ({len(response)} bytes): {response.hex(' ') or '(empty)'}")
    sent = req.encode()
    # A half-duplex adapter may have captured our own request ahead of the reply: check the reply's CRC.
    crc_ok = check_crc(response) or (response.startswith(sent) and check_crc(response[len(sent):]))
    if not crc_ok:
        raise DecodeError(f"response CRC mismatch: {response.hex(' ')}")
    if check_crc(response) and len(response) not in (req.frame_len, 4):
        raise DecodeError(f"response to {name}: expected {req.frame_len} bytes (or a 4-byte status), got "
                          f"{len(response)}: {response.hex(' ')}")
    framer = m.ReplyFramer(req, max_len=max(64, len(response) + len(request) + 8))
    try:
        reply = framer.feed(response)
    except FrameError as exc:
        raise DecodeError(f"response does not answer {name}: {exc}") from None
    if reply is None:
        raise DecodeError(f"response incomplete for {name}: expected {req.frame_len} bytes, got "
                          f"{len(framer.pending)}: {framer.pending.hex(' ')}")
    if framer.pending:
        raise DecodeError(f"{len(framer.pending)} bytes after the reply to {name}: {framer.pending.hex(' ')}")
    try:
        decoded = m.decode_reply(req, reply, constant=constant, tz=tz)
    except FrameError as exc:
        raise DecodeError(f"{name}: {exc}") from None
    return {
        "address": reply.address,
        "crc_ok": crc_ok,
        "request": name,
        "status": reply.status,
        "fields": decoded["fields"],
        "readings": decoded["readings"],
    }


def run(args: argparse.Namespace) -> int:
    try:
        out = decode(args.request, args.response, constant=args.constant, tz=args.timezone)
    except DecodeError as exc:
        print(f"pollerd decode mercury230: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out, ensure_ascii=False))
    return 0
