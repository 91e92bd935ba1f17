"""The decoders scripts/fuzz.py feeds: per decoder its corpus (the real frames of the shared vectors, read at
run time), how its checksum is made right again, its length-field lie, and the decode path an input takes."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pollerd.decode.mercury230 import decode_reply  # noqa: E402
from pollerd.drivers.iec62056 import PROFILES, decode_sets  # noqa: E402
from pollerd.errors import PollerdError  # noqa: E402
from pollerd.protocols import iec62056 as iec  # noqa: E402
from pollerd.protocols import mbus as mb  # noqa: E402
from pollerd.protocols import mercury230 as merc  # noqa: E402
from pollerd.protocols import modbus as mod  # noqa: E402
from pollerd.protocols.crc import append_crc  # noqa: E402

DECODERS = ("mercury230", "iec62056", "modbus", "mbus", "dlms")
UTC = dt.timezone.utc


def vectors_dir() -> Path:
    env = os.environ.get("POLLERD_VECTORS")
    return Path(env) if env else ROOT.parent / "shared" / "vectors"


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


@dataclass
class Target:
    name: str
    corpus: list[tuple[Any, bytes]]            # (context the decoder needs, frame)
    fix: Callable[[bytes], bytes]             # recompute the checksum so the parser is reached
    lie: Callable[[bytes, random.Random], bytes]  # a length field that does not match the frame
    run: Callable[[Any, bytes, random.Random], object]  # the decode path; returns what it produced
    # Where the checksum kind depends on the frame (IEC: XOR or Energomera's sum7): the fix for a context.
    fix_by_context: Callable[[Any], Callable[[bytes], bytes]] | None = None


def _chunks(data: bytes, rng: random.Random) -> Iterator[bytes]:
    """The bytes as a transport delivers them: whole, or split at up to three random points."""
    if len(data) < 2 or rng.random() < 0.5:
        yield data
        return
    cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1)))
    start = 0
    for c in cuts:
        yield data[start:c]
        start = c
    yield data[start:]


def _feed(framer: Any, data: bytes, rng: random.Random) -> Any:
    out = None
    for chunk in _chunks(data, rng):
        out = framer.feed(chunk)
        if out is not None:
            return out
    return out


# Mercury 230 --------------------------------------------------------------------------------------------

def _mercury_corpus(vec: Path) -> list[tuple[Any, bytes]]:
    out = []
    for e in json.loads((vec / "mercury230" / "vectors.json").read_text()):
        if not e.get("request") or not e.get("response"):
            continue
        try:
            _, req = merc.describe_request(_hex(e["request"]))
        except PollerdError:
            continue
        out.append((req, _hex(e["response"])))
    return out


def _mercury_fix(frame: bytes) -> bytes:
    return append_crc(frame[:-2]) if len(frame) >= 3 else frame


def _mercury_lie(frame: bytes, rng: random.Random) -> bytes:
    # No length field on the wire: the lie is a reply one frame-length off what the request expects.
    return frame + bytes(rng.randrange(256) for _ in range(rng.randint(1, 3))) if rng.random() < 0.5 \
        else frame[:max(1, len(frame) - rng.randint(1, 3))]


def _mercury_run(req: Any, frame: bytes, rng: random.Random) -> object:
    if rng.random() < 0.1:  # the decode tool's path: an unknown request bytes string
        req = merc.describe_request(frame)[1]
        return req
    if rng.random() < 0.2:  # a raw request (API / decode tool) with a caller-given reply length
        req = merc.raw_request(req.address, req.body, rng.choice((None, 1, 3, 6, 12, 16, 64)))
    reply = _feed(merc.ReplyFramer(req, max_len=max(64, (req.reply_len or 0) + 3)), frame, rng)
    if reply is None:
        return None
    return decode_reply(req, reply, constant=rng.choice((None, 500, 1000, 5000)), tz=rng.choice((None, UTC)))


# Modbus --------------------------------------------------------------------------------------------------

def _modbus_corpus(vec: Path) -> list[tuple[Any, bytes]]:
    out = []
    for e in json.loads((vec / "modbus-rtu" / "vectors.json").read_text())["frames"]:
        resp = _hex(e.get("response") or "")
        if not resp:  # a request alone: the decode tool's request path
            req_only = _hex(e.get("request") or "")
            if req_only:
                out.append((mod.decode_request(req_only)[0], req_only))
            continue
        req_raw = _hex(e.get("request") or "")
        try:
            req = mod.decode_request(req_raw)[0] if req_raw else None
        except PollerdError:
            req = None
        if req is None:  # an exception reply on its own: the request it answers
            req = mod.read_request(resp[0], (resp[1] & 0x7F) if resp[1] & 0x7F in (1, 2, 3, 4) else 3, 0, 2)
        out.append((req, resp))
    # The vectors hold reads only. Writes are answered with an echo of the request (single coil/register)
    # or its head: built here from the vectors' own units, so the write paths of the framer are reached.
    for unit in sorted({req.unit for req, _ in out}):
        for req in (mod.write_coil(unit, 0x0100, True), mod.write_register(unit, 0x0010, 0x1234),
                    mod.write_coils(unit, 0x0013, [True, False, True] * 3),
                    mod.write_registers(unit, 0x0001, [0x000A, 0x0102])):
            frame = mod.encode_rtu(req)
            echo = frame if req.function in (mod.FC_WRITE_COIL, mod.FC_WRITE_REGISTER) else append_crc(frame[:6])
            out.append((req, echo))
    return out


def _modbus_fix(frame: bytes) -> bytes:
    return append_crc(frame[:-2]) if len(frame) >= 3 else frame


def _modbus_lie(frame: bytes, rng: random.Random) -> bytes:
    if len(frame) < 3:
        return frame
    b = bytearray(frame)
    b[2] = rng.choice((0, 1, 255, (b[2] + rng.choice((-2, -1, 1, 2))) & 0xFF))  # the byte count
    return bytes(b)


def _modbus_specs() -> list[Any]:
    from pollerd.protocols.modbus_map import VALUE_TYPES, RegisterSpec
    specs = []
    for t in VALUE_TYPES.values():
        for wo in ("big", "little"):
            specs.append(RegisterSpec("x", 3, 0, t, scale=0.001, word_order=wo, byte_order=wo))
            specs.append(RegisterSpec("x", 3, 0, t, divisor=10))
    return specs


_SPECS: list[Any] = []


def _modbus_run(req: Any, frame: bytes, rng: random.Random) -> object:
    if rng.random() < 0.1:  # the decode tool's path: a captured request, then a reply to it (maybe none)
        req, tid = mod.decode_request(frame, tcp=False)
        return mod.decode_response(req, rng.choice((b"", frame, frame[:3])), False, tid)
    if rng.random() < 0.15:  # Modbus TCP: the same PDU behind an MBAP header (length recomputed)
        tid = rng.randrange(65536)
        pdu = frame[1:-2] if len(frame) > 3 else frame
        mbap = tid.to_bytes(2, "big") + b"\0\0" + (len(pdu) + 1).to_bytes(2, "big") + frame[:1] + pdu
        reply = _feed(mod.MbapReplyFramer(req, tid), mbap, rng)
    else:
        reply = _feed(mod.RtuReplyFramer(req), frame, rng)
    if reply is None:
        return None
    reply.check()
    out: list[object] = []
    if req.function in (mod.FC_READ_COILS, mod.FC_READ_DISCRETE_INPUTS):
        out.append(reply.bits(req.count))
        return out
    if req.function not in (mod.FC_READ_HOLDING, mod.FC_READ_INPUT):
        return reply.data
    regs = reply.registers()
    out.append(regs)
    data = memoryview(reply.data)
    if not _SPECS:
        _SPECS.extend(_modbus_specs())
    for spec in _SPECS:  # the register map's value decoding over whatever the reply holds
        for offset in range(0, max(0, len(regs) - spec.words + 1), max(1, spec.words)):
            out.append(spec.value(data, offset))
    return out


# M-Bus ---------------------------------------------------------------------------------------------------

def _mbus_corpus(vec: Path) -> list[tuple[Any, bytes]]:
    out = []
    base = vec / "mbus" / "libmbus"
    for sub in ("test-frames", "error-frames", "unsupported-frames"):
        for p in sorted((base / sub).glob("*.hex")):
            try:
                out.append((None, _hex(p.read_text())))
            except ValueError:
                continue  # one file is not hex (manual_frame1.hex)
    for e in json.loads((vec / "mbus" / "master_frames.json").read_text()):
        out.append((None, _hex(e["hex"])))
    return out


def _mbus_fix(frame: bytes) -> bytes:
    if len(frame) >= 6 and frame[0] == mb.START_LONG:
        body = frame[4:-2]
        return frame[:-2] + bytes((mb.checksum(body),)) + frame[-1:]
    if len(frame) == 5 and frame[0] == mb.START_SHORT:
        return frame[:3] + bytes((mb.checksum(frame[1:3]),)) + frame[4:]
    return frame


def _mbus_lie(frame: bytes, rng: random.Random) -> bytes:
    if len(frame) < 4 or frame[0] != mb.START_LONG:
        return frame
    b = bytearray(frame)
    lie = rng.choice((0, 1, 2, 3, 255, (b[1] + rng.choice((-3, -1, 1, 3))) & 0xFF))
    b[1] = lie
    b[2] = lie if rng.random() < 0.8 else rng.randrange(256)
    return bytes(b)


def _mbus_driver() -> Any:
    from pollerd.drivers.mbus import MbusDriver
    drv = object.__new__(MbusDriver)  # only readings(), which needs the meter's name and read kinds
    drv.ctx = SimpleNamespace(meter=SimpleNamespace(name="m", read=("current", "archive")))  # type: ignore[assignment]  # duck-typed: readings() reads only these
    drv._tz = UTC
    return drv


_MBUS_DRIVER: list[Any] = []


def _mbus_run(_: Any, frame: bytes, rng: random.Random) -> object:
    f = _feed(mb.ReplyFramer("any"), frame, rng)
    if f is None or f.kind in ("ack", "short"):
        return f
    t = mb.decode_telegram(f)
    if not _MBUS_DRIVER:
        _MBUS_DRIVER.append(_mbus_driver())
    dropped: list[object] = []
    readings = _MBUS_DRIVER[0].readings([t], 1_790_000_000, partial=rng.random() < 0.2, dropped=dropped)
    return [t.records, readings]


# IEC 62056-21 --------------------------------------------------------------------------------------------

def _iec_alg(entry: dict[str, Any]) -> str:
    return "sum7" if "ENERGOMERA" in (entry.get("checksum_algorithm") or "") else "xor"


def _iec_corpus(vec: Path) -> list[tuple[Any, bytes]]:
    out = []
    for e in json.loads((vec / "iec62056-21" / "vectors.json").read_text()):
        if e.get("direction") == "master->meter":
            continue
        out.append((_iec_alg(e), _hex(e["hex"])))
    return out


def _iec_end(frame: bytes) -> int:
    e1, e2 = frame.rfind(iec.ETX), frame.rfind(iec.EOT)
    return max(e1, e2)


def _iec_fix_with(alg: str) -> Callable[[bytes], bytes]:
    fn = iec.CHECKSUMS[alg]

    def fix(frame: bytes) -> bytes:
        if len(frame) < 3 or frame[0] not in (iec.STX, iec.SOH):
            return frame
        end = _iec_end(frame)
        if end < 1:
            return frame
        return frame[:end + 1] + bytes((fn(frame[1:end + 1]),))
    return fix


def _iec_lie(frame: bytes, rng: random.Random) -> bytes:
    # No length field: the lies are in the data block's own structure (brackets, separators, terminators).
    b = bytearray(frame)
    if len(b) < 2:
        return frame
    pos = rng.randrange(1, len(b))
    b.insert(pos, rng.choice(b"()*\r\n!\x03\x04\x02,"))
    return bytes(b)


def _iec_run(alg: str, frame: bytes, rng: random.Random) -> object:
    if frame[:1] == b"/":
        return _feed(iec.IdentFramer(), frame, rng)
    msg = _feed(iec.MessageFramer(alg, single_byte=rng.random() < 0.2), frame, rng)
    if msg is None or msg.kind != "data":
        return msg
    sets = iec.parse_data_block(msg.body)
    return [decode_sets(sets, p) for p in PROFILES.values()]


# DLMS/COSEM over HDLC ------------------------------------------------------------------------------------

def _dlms_corpus(vec: Path) -> list[tuple[Any, bytes]]:
    out = []
    for e in json.loads((vec / "dlms-hdlc" / "vectors.json").read_text()):
        raw = _hex(e["hex"])
        out.append((None, raw if e.get("flags_included") else b"\x7e" + raw + b"\x7e"))
    return out


def _dlms_fix(frame: bytes) -> bytes:
    """The length field, HCS and FCS made right for the bytes between the flags."""
    from pollerd.protocols.dlms import hdlc
    if len(frame) < 9 or frame[0] != hdlc.FLAG or frame[-1] != hdlc.FLAG:
        return frame
    body = bytearray(frame[1:-1])
    n = len(body)
    if n > 0x7FF:
        return frame
    body[0], body[1] = 0xA0 | (body[0] & 0x08) | (n >> 8), n & 0xFF
    try:
        d_end = hdlc._address_end(memoryview(body), 2, n - 3)
        s_end = hdlc._address_end(memoryview(body), d_end, n - 3)
    except PollerdError:
        s_end = n
    if n >= s_end + 6:
        body[s_end + 1:s_end + 3] = hdlc._CRC.pack(hdlc.crc16_x25(bytes(body[:s_end + 1])))
    body[n - 2:] = hdlc._CRC.pack(hdlc.crc16_x25(bytes(body[:n - 2])))
    return bytes((hdlc.FLAG,)) + bytes(body) + bytes((hdlc.FLAG,))


def _dlms_lie(frame: bytes, rng: random.Random) -> bytes:
    # The HDLC length is made right by the fix; the lies that matter are the A-XDR lengths inside the APDU.
    if len(frame) < 16:
        return frame
    b = bytearray(frame)
    b[rng.randrange(12, len(b) - 3)] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0x84, 0xFF))
    return bytes(b)


def _dlms_run(_: Any, frame: bytes, rng: random.Random) -> object:
    from pollerd.protocols.dlms import describe, hdlc
    if rng.random() < 0.3:  # the Deframer as a link feeds it, then the APDU of each frame
        out: list[object] = []
        deframer = hdlc.Deframer()
        for chunk in _chunks(frame, rng):
            for f in deframer.feed(chunk):
                out.append(f)
                if f.info[:3] in (hdlc.LLC_REQUEST, hdlc.LLC_RESPONSE):
                    out.append(describe.decode_apdu(f.info[3:]))
        return out
    return describe.decode(frame)


def build_targets(names: tuple[str, ...] = DECODERS) -> dict[str, Target]:
    vec = vectors_dir()
    if not vec.is_dir():
        raise SystemExit(f"protocol vectors not found at {vec} (set POLLERD_VECTORS to the shared vectors folder)")
    out: dict[str, Target] = {}
    if "mercury230" in names:
        out["mercury230"] = Target("mercury230", _mercury_corpus(vec), _mercury_fix, _mercury_lie, _mercury_run)
    if "modbus" in names:
        out["modbus"] = Target("modbus", _modbus_corpus(vec), _modbus_fix, _modbus_lie, _modbus_run)
    if "mbus" in names:
        out["mbus"] = Target("mbus", _mbus_corpus(vec), _mbus_fix, _mbus_lie, _mbus_run)
    if "dlms" in names:
        out["dlms"] = Target("dlms", _dlms_corpus(vec), _dlms_fix, _dlms_lie, _dlms_run)
    if "iec62056" in names:
        corpus = _iec_corpus(vec)
        out["iec62056"] = Target("iec62056", corpus, lambda f: f, _iec_lie, _iec_run, _iec_fix_with)
    return out
