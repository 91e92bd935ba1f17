#!/usr/bin/env python3
"""Mercury 230 codec throughput on one core: reply frames per second through ReplyFramer.feed + decode.

Three reply kinds: energy (05 00 00, 19-byte frame -> decode_energy), instantaneous group (08 16 00,
15-byte frame -> decode_aux_group) and load-profile records (06 03 .. 0F, 18-byte frame ->
decode_profile_record). Each frame is fed whole to a fresh framer, as the line does for one exchange.
Budget (issue 3): > 300k frames/s for each kind in CPython.

    python scripts/bench_codec_mercury230.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import time

from pollerd.protocols import mercury230 as m
from pollerd.protocols.crc import append_crc, crc_extension_in_use


def cases() -> list[tuple[str, m.Request, bytes, object]]:
    addr = 0x31
    energy = m.read_energy(addr)
    group = m.read_aux_group(addr, 0x00)
    profile = m.read_profile(addr, 0xD6E0)
    rec = m.ProfileRecord(0, dt.datetime(2025, 3, 1, 13, 30), 30, 420, 0, 37, None)
    return [
        ("energy 05", energy, append_crc(bytes((addr,)) + m.encode_energy(3196200, None, 300444, 12)),
         m.decode_energy),
        ("instant 08 16", group, append_crc(bytes((addr,)) + m.encode_aux_group(0x00, (3000.0, 1000.0, 1500.0, 500.0))),
         lambda data: m.decode_aux_group(0x00, data)),
        ("profile 06 03", profile, append_crc(bytes((addr,)) + m.encode_profile_record(rec)),
         m.decode_profile_record),
    ]


def bench(request: m.Request, frame: bytes, decode, seconds: float) -> tuple[int, float]:
    framer_cls = m.ReplyFramer
    n = 0
    batch = 10_000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            decode(framer_cls(request).feed(frame).data)
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per case (default 2)")
    args = ap.parse_args()
    print(f"python {platform.python_version()} ({platform.python_implementation()}), "
          f"crc C extension: {crc_extension_in_use()}")
    worst = float("inf")
    for name, request, frame, decode in cases():
        decode(m.ReplyFramer(request).feed(frame).data)  # correctness before speed
        n, elapsed = bench(request, frame, decode, args.seconds)
        rate = n / elapsed
        worst = min(worst, rate)
        print(f"{name:15s} {len(frame):3d}-byte frame  {rate:12,.0f} frames/s  ({n} in {elapsed:.2f} s)")
    verdict = "within" if worst > 300_000 else "BELOW"
    print(f"slowest {worst:,.0f} frames/s: {verdict} the 300k frames/s budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
