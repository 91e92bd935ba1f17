#!/usr/bin/env python3
"""M-Bus decode speed: pollerd's codec vs pyMeterBus on the same telegrams, in the same run.

Both sides parse the whole frame and produce every record's value and unit (pyMeterBus computes values
lazily, so the loop reads ``record.value`` and ``record.unit`` of every record; ours reads ``value`` and
``unit`` too). Telegrams: libmbus' test frames from the shared vectors folder that BOTH decoders accept.

    python scripts/bench_mbus.py [--rounds 5] [--vectors PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pollerd.protocols import mbus as m


def load_frames(folder: Path) -> list[bytes]:
    return [bytes.fromhex("".join(p.read_text().split())) for p in sorted(folder.glob("*.hex"))]


def ours(frames: list[bytes]) -> int:
    n = 0
    for raw in frames:
        for r in m.decode_telegram(raw).records:
            _ = (r.value, r.unit)
            n += 1
    return n


def theirs(frames: list[bytes]) -> int:
    import meterbus

    n = 0
    for raw in frames:
        for r in meterbus.load(raw).records:
            _ = (r.value, r.unit)
            n += 1
    return n


def rate(fn, frames: list[bytes], seconds: float) -> float:  # type: ignore[no-untyped-def]
    count = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn(frames)
        count += len(frames)
    return count / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per decoder (best one counts)")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one round")
    default = Path(os.environ.get("POLLERD_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors"))
    ap.add_argument("--vectors", type=Path, default=default / "mbus" / "libmbus" / "test-frames")
    args = ap.parse_args()
    try:
        import meterbus
    except ImportError:
        print("pyMeterBus is not installed (pip install pyMeterBus)", file=sys.stderr)
        return 2
    if not any(args.vectors.glob("*.hex")):
        print(f"no libmbus test frames (*.hex) in {args.vectors}: point --vectors or POLLERD_VECTORS at the "
              f"shared vectors folder", file=sys.stderr)
        return 2
    frames = []
    for raw in load_frames(args.vectors):
        try:
            meterbus.load(raw).records and [(r.value, r.unit) for r in meterbus.load(raw).records]
            m.decode_telegram(raw)
        except Exception:
            continue
        frames.append(raw)
    records = ours(frames)
    best_ours = best_theirs = 0.0
    for _ in range(args.rounds):
        best_ours = max(best_ours, rate(ours, frames, args.seconds))
        best_theirs = max(best_theirs, rate(theirs, frames, args.seconds))
    print(f"telegrams: {len(frames)} (libmbus test frames both decoders accept), {records} records, "
          f"{sum(map(len, frames)) / len(frames):.0f} bytes average")
    print(f"pollerd    : {best_ours:10.0f} telegrams/s ({best_ours * records / len(frames):,.0f} records/s)")
    print(f"pyMeterBus : {best_theirs:10.0f} telegrams/s ({best_theirs * records / len(frames):,.0f} records/s)")
    print(f"speed-up   : {best_ours / best_theirs:.1f}x (budget >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
