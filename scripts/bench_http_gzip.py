#!/usr/bin/env python3
"""Size and CPU cost of the HTTP sink's gzip body (zlib level 1, as pollerd sends it, vs level 6).

    python scripts/bench_http_gzip.py [--batch 500]

Encodes one batch of readings shaped like bench_drain.py's backlog (50 meters x 14 channels) exactly as
HttpPushClient does and compresses it. Real readings vary more than these, so expect a lower ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _bench_data import readings

from pollerd.config import SinkConfig
from pollerd.push.http import HttpPushClient, gzip_body


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=500)
    args = p.parse_args()
    rs = readings(args.batch)
    body = HttpPushClient(SinkConfig(name="b", type="http", url="http://127.0.0.1/"), "bench-gw").encode(rs)
    def level6(b: bytes) -> bytes:
        co = zlib.compressobj(6, zlib.DEFLATED, 31)
        return co.compress(b) + co.flush()

    for label, fn in (("pollerd (level 1)", gzip_body), ("level 6", level6)):
        n = 200
        t = time.perf_counter()
        for _ in range(n):
            out = fn(body)
        dt = (time.perf_counter() - t) / n
        print(f"{label:<18} {len(body):>7} -> {len(out):>6} bytes ({len(body) / len(out):4.1f}x), "
              f"{dt * 1000:.2f} ms per {args.batch}-reading batch")


if __name__ == "__main__":
    main()
