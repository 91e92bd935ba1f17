#!/usr/bin/env python3
"""Fuzz pollerd's decoders with mutated real frames (issue 14).

For each decoder the corpus is the real frames of the shared protocol vectors, read at run time from
``<repo>/../shared/vectors`` (or ``$POLLERD_VECTORS``; never copied into the repository: their licences).
Every input is a corpus frame mutated by bit flips, byte changes, insertions, deletions, truncation,
extension, duplicated slices, splices with another frame and length-field lies, with the CRC / checksum /
BCC recomputed most of the time so that the parser behind the check is reached; some inputs are random
bytes. Each input goes through what pollerd does with a reply: the framer fed in random chunks, then the
decoders (and, for M-Bus, the driver's record -> reading conversion).

A finding is an exception that is not a declared error (pollerd.errors.PollerdError and below), a float
that is not finite anywhere in the output, or an input that takes longer than the per-input cap (a hang is
cut by SIGALRM). The run prints one table row per decoder and every distinct finding with a sample input.

    .venv/bin/python scripts/fuzz.py [--inputs 1000000] [--decoders mercury230,modbus,mbus,iec62056]
                                     [--seed 1] [--workers 2] [--cap-ms 100]

Exit status 1 when there is any finding. The test suite runs a small seeded campaign (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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

DECODERS = ("mercury230", "iec62056", "modbus", "mbus")
UTC = dt.timezone.utc


def vectors_dir() -> Path:
    env = os.environ.get("POLLERD_VECTORS")
    return Path(env) if env else ROOT.parent / "shared" / "vectors"


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


class Hang(BaseException):
    """Raised by SIGALRM when one input runs past the cap (BaseException: no codec's except catches it)."""


# ------------------------------------------------------------------------------------------------ targets


@dataclass
class Target:
    name: str
    corpus: list[tuple[Any, bytes]]            # (context the decoder needs, frame)
    fix: Callable[[bytes], bytes]             # recompute the checksum so the parser is reached
    lie: Callable[[bytes, random.Random], bytes]  # a length field that does not match the frame
    run: Callable[[Any, bytes, random.Random], object]  # the decode path; returns what it produced


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
    if "iec62056" in names:
        corpus = _iec_corpus(vec)
        # The fix depends on the frame's checksum kind: carried in the context, applied in mutate().
        out["iec62056"] = Target("iec62056", corpus, lambda f: f, _iec_lie, _iec_run)
    return out


# ------------------------------------------------------------------------------------------------ mutation


def mutate(target: Target, ctx: Any, frame: bytes, rng: random.Random) -> tuple[Any, bytes]:
    r = rng.random()
    if r < 0.05:  # random bytes
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
        return ctx, data
    b = bytearray(frame)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        n = len(b)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(n)
                b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif op == 2:
            i = rng.randint(0, n)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and n:
            i = rng.randrange(n)
            del b[i:i + rng.randint(1, 8)]
        elif op == 4 and n:  # truncation
            del b[rng.randrange(n):]
        elif op == 5:  # extension
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        elif op == 6 and n:  # a duplicated slice
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 16))
            b[j:j] = b[i:j]
        elif op == 7:  # a splice with another frame of the corpus
            other = rng.choice(target.corpus)[1]
            i, j = rng.randint(0, n), rng.randint(0, len(other))
            b = b[:i] + bytearray(other[j:])
        else:
            b = bytearray(target.lie(bytes(b), rng))
    data = bytes(b)
    if rng.random() < 0.85:
        fix = _iec_fix_with(ctx) if target.name == "iec62056" else target.fix
        data = fix(data)
    return ctx, data


# ----------------------------------------------------------------------------------------------- checking


def non_finite(obj: object, depth: int = 0) -> float | None:
    """The first float in ``obj`` that is not finite (walking containers, dataclasses, named tuples)."""
    if depth > 12:
        return None
    if isinstance(obj, float):
        return None if math.isfinite(obj) else obj
    if isinstance(obj, (str, bytes, bytearray, int, memoryview)) or obj is None:
        return None
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = obj
    elif hasattr(obj, "__slots__") or hasattr(obj, "__dict__"):
        names = getattr(obj, "__slots__", None) or list(getattr(obj, "__dict__", {}))
        items = [getattr(obj, n, None) for n in names if isinstance(n, str)]
    else:
        return None
    for v in items:
        bad = non_finite(v, depth + 1)
        if bad is not None:
            return bad
    return None


@dataclass
class Stats:
    decoder: str
    inputs: int = 0
    seconds: float = 0.0
    declared: dict[str, int] = field(default_factory=dict)
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {count, sample, detail}
    slowest_ms: float = 0.0
    accepted: int = 0   # inputs decoded without any error

    def finding(self, key: str, data: bytes, detail: str) -> None:
        f = self.findings.setdefault(key, {"count": 0, "sample": data.hex(" "), "detail": detail})
        f["count"] += 1

    def merge(self, other: Stats) -> None:
        self.inputs += other.inputs
        self.seconds = max(self.seconds, other.seconds)
        self.accepted += other.accepted
        self.slowest_ms = max(self.slowest_ms, other.slowest_ms)
        for k, v in other.declared.items():
            self.declared[k] = self.declared.get(k, 0) + v
        for k, f in other.findings.items():
            mine = self.findings.setdefault(k, {"count": 0, "sample": f["sample"], "detail": f["detail"]})
            mine["count"] += f["count"]

    def count(self, kind: str) -> int:
        """Findings of one kind: "exception" (undeclared), "non-finite", "hang", "slow"."""
        return sum(f["count"] for k, f in self.findings.items() if k.startswith(kind))


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if "/pollerd/" in f.filename] or frames
    f = mine[-1]
    return f"{Path(f.filename).name}:{f.lineno} {f.name}"


def _on_alarm(signum: int, frame: object) -> None:
    raise Hang()


def _timed(target: Target, ctx: Any, data: bytes, run_seed: float, alarm: float) -> object:
    if alarm:
        signal.setitimer(signal.ITIMER_REAL, alarm)
    try:
        return target.run(ctx, data, random.Random(run_seed))
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)


def fuzz(decoder: str, count: int, seed: int, cap_ms: float = 100.0,
         targets: dict[str, Target] | None = None) -> Stats:
    """``count`` inputs for one decoder, deterministic for a seed."""
    targets = targets or build_targets((decoder,))
    target = targets[decoder]
    rng = random.Random(f"{decoder}:{seed}")
    stats = Stats(decoder)
    cap = cap_ms / 1000.0
    # SIGALRM can only be handled in the main thread (pytest runs tests there too).
    use_alarm = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGALRM, _on_alarm) if use_alarm else None
    start = time.perf_counter()
    try:
        for _ in range(count):
            ctx, frame = rng.choice(target.corpus)
            ctx, data = mutate(target, ctx, frame, rng)
            run_seed = rng.random()
            t0 = time.perf_counter()
            try:
                out = _timed(target, ctx, data, run_seed, cap * 10 if use_alarm else 0.0)
            except Hang:
                stats.finding(f"hang > {cap * 10 * 1000:.0f} ms", data, "cut by SIGALRM")
                continue
            except PollerdError as exc:
                name = type(exc).__name__
                stats.declared[name] = stats.declared.get(name, 0) + 1
                out = None
            except Exception as exc:  # a finding: an error the decoder does not declare
                stats.finding(f"exception {type(exc).__name__} at {_where(exc)}", data, f"{exc}"[:200])
                continue
            else:
                stats.accepted += 1
            took = time.perf_counter() - t0
            if took > cap:
                # Timed again before it counts: on a shared machine a slice of CPU can go elsewhere.
                t0 = time.perf_counter()
                try:
                    _timed(target, ctx, data, run_seed, cap * 10 if use_alarm else 0.0)
                except (Hang, Exception):
                    pass
                took = min(took, time.perf_counter() - t0)
                if took > cap:
                    stats.finding(f"slow > {cap_ms:.0f} ms", data, f"{took * 1000:.1f} ms")
            stats.slowest_ms = max(stats.slowest_ms, took * 1000)
            bad = non_finite(out)
            if bad is not None:
                stats.finding("non-finite value", data, repr(bad))
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, old)
    stats.inputs = count
    stats.seconds = time.perf_counter() - start
    return stats


def _worker(job: tuple[str, int, int, float]) -> Stats:
    decoder, count, seed, cap_ms = job
    return fuzz(decoder, count, seed, cap_ms)


def campaign(decoders: tuple[str, ...], inputs: int, seed: int, workers: int, cap_ms: float) -> list[Stats]:
    out = []
    for decoder in decoders:
        wall = time.perf_counter()
        if workers <= 1:
            total = fuzz(decoder, inputs, seed, cap_ms)
        else:
            share = [inputs // workers + (1 if i < inputs % workers else 0) for i in range(workers)]
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_worker, [(decoder, n, seed * 1000 + i, cap_ms) for i, n in enumerate(share)])
            total = Stats(decoder)
            for p in parts:
                total.merge(p)
        total.seconds = time.perf_counter() - wall
        out.append(total)
    return out


def report(results: list[Stats]) -> str:
    head = (f"{'decoder':<11} {'inputs':>9} {'seconds':>8} {'inputs/s':>9} {'decoded':>8} {'declared errors':>15} "
            f"{'undeclared':>10} {'non-finite':>10} {'hang/slow':>9} {'slowest ms':>10}")
    lines = [head]
    for s in results:
        lines.append(f"{s.decoder:<11} {s.inputs:>9} {s.seconds:>8.1f} {s.inputs / max(s.seconds, 1e-9):>9.0f} "
                     f"{s.accepted:>8} {sum(s.declared.values()):>15} {s.count('exception'):>10} "
                     f"{s.count('non-finite'):>10} {s.count('hang') + s.count('slow'):>9} {s.slowest_ms:>10.1f}")
    for s in results:
        top = sorted(s.declared.items(), key=lambda kv: -kv[1])[:6]
        lines.append(f"  {s.decoder} declared errors: " + ", ".join(f"{k} {v}" for k, v in top))
        for key, f in sorted(s.findings.items()):
            lines.append(f"  FINDING {s.decoder}: {key} x{f['count']}: {f['detail']}\n    input: {f['sample']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per decoder")
    ap.add_argument("--decoders", default=",".join(DECODERS))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cap-ms", type=float, default=100.0,
                    help="slower inputs are findings; 10x this cuts a hang (SIGALRM)")
    args = ap.parse_args()
    decoders = tuple(d.strip() for d in args.decoders.split(",") if d.strip())
    unknown = set(decoders) - set(DECODERS)
    if unknown:
        ap.error(f"unknown decoder(s) {sorted(unknown)}; known: {', '.join(DECODERS)}")
    build_targets(decoders)  # fail early on missing vectors
    print(f"fuzzing {', '.join(decoders)}: {args.inputs} inputs each, seed {args.seed}, {args.workers} worker(s), "
          f"vectors {vectors_dir()}", flush=True)
    results = campaign(decoders, args.inputs, args.seed, args.workers, args.cap_ms)
    print(report(results))
    return 1 if any(s.findings for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
