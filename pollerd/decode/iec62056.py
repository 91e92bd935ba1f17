"""``pollerd decode iec62056 --response HEX [--profile P] [--checksum auto|xor|sum7]``.

Decodes a captured IEC 62056-21 reply: the bytes from STX through the BCC, or the whole exchange (sign-on,
identification, option select, data message, partial blocks with the ACKs between them). Prints ONE JSON
object::

    {"checksum_ok": true, "checksum": "xor", "identification": {...} | null,
     "readings": [{"channel": "A+", "address": "1.8.0", "value": 13925500.0, "unit": "Wh"}, ...]}

Bytes with the 8th bit set (a modem capture in transparent mode) are parity-stripped first. Exit 1 on a
bad checksum (the JSON is still printed, with ``checksum_ok: false``) or on bytes that hold no message.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pollerd.decode import dumps, hex_argument
from pollerd.drivers.iec62056 import PROFILES, decode_sets
from pollerd.errors import FrameError
from pollerd.protocols import iec62056 as iec
from pollerd.protocols import obis
from pollerd.quality import check_value

__all__ = ["DecodeError", "configure_parser", "decode", "run"]


class DecodeError(Exception):
    """Why the bytes cannot be decoded; the message is the one line the user sees."""


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = "Decode an IEC 62056-21 data message (or a whole captured exchange) into JSON."
    p.add_argument("--response", required=True, type=hex_argument, metavar="HEX",
                   help="STX ... ETX BCC, or the whole exchange from the sign-on on")
    p.add_argument("--profile", choices=sorted(PROFILES), default="generic",
                   help="how addresses become channels (neva: hex OBIS; energomera: mnemonics)")
    p.add_argument("--checksum", choices=("auto", "xor", "sum7"), default="auto",
                   help="BCC algorithm (auto: the profile's, else whichever verifies)")


def _skip_line(data: bytes, pos: int) -> int:
    end = data.find(b"\r\n", pos)
    if end < 0:
        raise DecodeError(f"unterminated line at offset {pos}: {data[pos:pos + 32].hex(' ')}")
    return end + 2


def _messages(data: bytes) -> tuple[iec.Identification | None, list[tuple[bytes, int, bool]]]:
    """(identification, [(frame, ETX/EOT index, partial)]) of everything in ``data``."""
    ident: iec.Identification | None = None
    frames: list[tuple[bytes, int, bool]] = []
    pos, n = 0, len(data)
    while pos < n:
        b = data[pos]
        if b == 0x2F:                                   # "/": sign-on or identification
            if data.startswith(b"/?", pos):
                end = data.find(b"!", pos)
                if end < 0:
                    raise DecodeError(f"unterminated sign-on at offset {pos}")
                pos = end + 1
                if data.startswith(b"\r\n", pos):
                    pos += 2
                continue
            nxt = _skip_line(data, pos)
            try:
                ident = iec.parse_identification(data[pos:nxt])
            except FrameError as exc:
                raise DecodeError(str(exc)) from None
            pos = nxt
        elif b == iec.ACK:
            pos = _skip_line(data, pos) if data[pos + 1:pos + 2].isdigit() else pos + 1
        elif b in (iec.NAK, 0x0D, 0x0A):
            pos += 1
        elif b in (iec.STX, iec.SOH):
            e1, e2 = data.find(b"\x03", pos + 1), data.find(b"\x04", pos + 1)
            end = e1 if e2 < 0 or (0 <= e1 < e2) else e2
            if end < 0 or end + 1 >= n:
                raise DecodeError(f"message at offset {pos} has no ETX/EOT and BCC: "
                                  f"{data[pos:pos + 32].hex(' ')}")
            frames.append((data[pos:end + 2], end - pos, data[end] == iec.EOT))
            pos = end + 2
        else:
            raise DecodeError(f"unexpected byte 0x{b:02X} at offset {pos}: {data[pos:pos + 32].hex(' ')}")
    return ident, frames


def decode(data: bytes, *, profile: str = "generic", checksum: str = "auto") -> dict[str, Any]:
    prof = PROFILES[profile]
    if any(b & 0x80 for b in data):
        if iec.parity_ok(data) >= 0:
            raise DecodeError(f"bytes with the 8th bit set but not even parity at offset {iec.parity_ok(data)}")
        data = iec.strip_parity(data)
    ident, frames = _messages(data)
    data_frames = [f for f in frames if f[0][0] == iec.STX]
    if not data_frames:
        raise DecodeError("no data message (STX ... ETX BCC) in the bytes")
    order = [checksum] if checksum != "auto" else [prof.checksum] + [c for c in iec.CHECKSUMS if c != prof.checksum]
    used, ok = order[0], False
    for alg in order:
        fn = iec.CHECKSUMS[alg]
        if all(fn(frame[1:end + 1]) == frame[-1] for frame, end, _ in data_frames):
            used, ok = alg, True
            break
    body = b"".join(frame[1:end] for frame, end, _ in data_frames)
    try:
        sets = iec.parse_data_block(body)
    except FrameError as exc:
        if ok:
            raise DecodeError(f"data block: {exc}") from None
        sets = ()
    readings: list[dict[str, Any]] = []
    for d in decode_sets(sets, prof):
        reading: dict[str, Any] = {"channel": d.channel, "address": d.address, "value": d.value, "unit": d.unit}
        value = d.value
        # What pollerd would not store (pollerd.quality), and why.
        if isinstance(value, float):
            bad = check_value(d.channel, value)
            if bad is not None:
                reading["invalid"] = bad[1]
        elif obis.to_float(value) is not None:  # kept as text by the codec: no float once scaled
            reading["invalid"] = f"{value} {d.unit} is beyond any float once scaled"
        readings.append(reading)
    return {"checksum_ok": ok, "checksum": used,
            "identification": ident.as_dict() if ident else None, "readings": readings}


def run(args: argparse.Namespace) -> int:
    try:
        out = decode(args.response, profile=args.profile, checksum=args.checksum)
    except DecodeError as exc:
        print(f"pollerd decode iec62056: {exc}", file=sys.stderr)
        return 1
    print(dumps(out))
    if not out["checksum_ok"]:
        print("pollerd decode iec62056: BCC mismatch (try --checksum or --profile)", file=sys.stderr)
        return 1
    return 0
