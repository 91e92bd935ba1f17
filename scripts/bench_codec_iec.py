#!/usr/bin/env python3
"""IEC 62056-21 readout parse rate: a 50-line data message (the shape of a real three-phase readout: energy
per tariff, billing values, U/I per phase, ids), framed (BCC check), split into data sets, and mapped to
channels with units normalised, as the driver does for every readout.

    python scripts/bench_codec_iec.py [--lines 50] [--seconds 2]

Prints blocks/s and data sets/s for each stage; no assertions (benchmarks live apart from the tests).
"""

from __future__ import annotations

import argparse
import time

from pollerd.drivers.iec62056 import PROFILES, decode_sets
from pollerd.protocols import iec62056 as iec


def block(lines: int) -> bytes:
    base = ["0.0.0(12345678)", "C.1.0(41000001)", "F.F(00000000)", "0.9.1(123456)", "0.9.2(250101)"]
    base += [f"1.8.{t}({13925.5 + t:010.3f}*kWh)" for t in range(5)]
    base += [f"2.8.{t}({12.5 + t:010.3f}*kWh)" for t in range(5)]
    base += [f"3.8.{t}({1.5 + t:09.3f}*kvarh)" for t in range(5)]
    base += [f"{32 + 20 * i}.7.0({230.1 + i:.1f}*V)" for i in range(3)]
    base += [f"1-0:{31 + 20 * i}.7.0*255({1.25 + i:.2f}*A)" for i in range(3)]
    base += [f"1.8.0*{m:02d}({10000 + m:010.3f}*kWh)" for m in range(1, 13)]
    base += ["14.7.0(50.00*Hz)", "16.7.0(1.234*kW)", "13.7.0(0.98)"]
    i = 0
    while len(base) < lines:
        base.append(f"0.9.{10 + i}( {i:06d})")
        i += 1
    return ("\r\n".join(base[:lines]) + "\r\n!\r\n").encode()


def rate(fn, seconds: float) -> float:  # type: ignore[no-untyped-def]
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(100):
            fn()
        n += 100
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    body = block(args.lines)
    frame = iec.encode_message(b"\x02" + body + b"\x03")
    sets = iec.parse_data_block(body)
    assert len(sets) == args.lines
    prof = PROFILES["generic"]

    def framing() -> None:
        iec.MessageFramer().feed(frame)

    def parsing() -> None:
        iec.parse_data_block(body)

    def whole() -> None:
        msg = iec.MessageFramer().feed(frame)
        decode_sets(iec.parse_data_block(msg.body), prof)  # type: ignore[union-attr]

    print(f"readout: {args.lines} lines, {len(frame)} bytes")
    for name, fn in (("frame + BCC", framing), ("parse data sets", parsing), ("frame + parse + map", whole)):
        r = rate(fn, args.seconds)
        print(f"  {name:22s} {r:10,.0f} blocks/s  {r * args.lines:12,.0f} data sets/s")
    wire = len(frame) * 10 / 9600
    print(f"  (the same block takes {wire:.2f} s on the wire at 9600 Bd)")


if __name__ == "__main__":
    main()
