#!/usr/bin/env python3
"""Fuzz pollerd's decoders with mutated real frames (issue 14).

For each decoder the corpus is the real frames of the shared protocol vectors, read at run time from
``<repo>/../shared/vectors`` (or ``$POLLERD_VECTORS``; never copied into the repository: their licences).
Every input is a corpus frame mutated by bit flips, byte changes, insertions, deletions, truncation,
extension, duplicated slices, splices with another frame and length-field lies, with the CRC / checksum /
BCC recomputed most of the time so that the parser behind the check is reached; some inputs are random
bytes. Each input goes through what pollerd does with a reply: the framer fed in random chunks, then the
decoders (for M-Bus also the driver's record -> reading conversion; for DLMS the HDLC deframer and APDUs).

A finding is an exception that is not a declared error (pollerd.errors.PollerdError and below), a float
that is not finite anywhere in the output, or an input that takes longer than the per-input cap (a hang is
cut by SIGALRM). The run prints one table row per decoder and every distinct finding with a sample input.

    .venv/bin/python scripts/fuzz.py [--inputs 1000000] [--decoders mercury230,iec62056,modbus,mbus,dlms]
                                     [--seed 1] [--workers 2] [--cap-ms 100]

Exit status 1 when there is any finding. The test suite runs a small seeded campaign (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # fuzz_targets, beside this script

from fuzz_targets import DECODERS, Target, build_targets, vectors_dir

from pollerd.errors import PollerdError


class Hang(BaseException):
    """Raised by SIGALRM when one input runs past the cap (BaseException: no codec's except catches it)."""


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
        fix = target.fix_by_context(ctx) if target.fix_by_context is not None else target.fix
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
