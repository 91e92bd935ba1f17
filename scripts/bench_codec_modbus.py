#!/usr/bin/env python3
"""Modbus RTU response decode: pollerd's codec vs pymodbus' RTU framer, same frames, same run.

Each side turns complete RTU reply frames (bytes on the wire) into register values:

* pollerd: ``RtuReplyFramer(request).feed(frame)`` (length from the request, CRC via crcmod's C
  extension, unit/function/byte-count checks) and ``Reply.registers()``;
* pymodbus: ``FramerRTU(DecodePDU(is_server=False)).handleFrame(frame, unit, 0)`` (the framer its client
  uses, CRC in Python) and ``pdu.registers``.

Budget (issue 4): pollerd >= 10x faster. Also prints the register-map decode rate (a merged SDM630 block
of 18 f32 values into scaled values), which is what the driver does next with each reply.

    python scripts/bench_codec_modbus.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import struct
import time

from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu.decoders import DecodePDU

from pollerd.drivers.modbus_options import parse_options
from pollerd.protocols import modbus as mb
from pollerd.protocols.crc import append_crc, crc_extension_in_use
from pollerd.protocols.modbus_map import plan_reads


def frames(unit: int, count: int) -> tuple[mb.Request, bytes]:
    req = mb.read_request(unit, mb.FC_READ_INPUT, 0, count)
    data = struct.pack(f">{count}H", *((i * 2654435761) & 0xFFFF for i in range(count)))
    return req, append_crc(bytes((unit, mb.FC_READ_INPUT, len(data))) + data)


def rate(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args()
    print(f"crcmod C extension: {crc_extension_in_use()}")
    ratios = []
    for count in (2, 36, 125):
        req, frame = frames(17, count)
        want = mb.RtuReplyFramer(req).feed(frame).registers()

        # Both closures are timed in the iteration that defines them, so the late binding B023 warns of
        # cannot bite; default arguments would change what is timed.
        def ours() -> tuple[int, ...]:
            return mb.RtuReplyFramer(req).feed(frame).registers()  # type: ignore[union-attr]  # noqa: B023

        pm = FramerRTU(DecodePDU(is_server=False))

        def theirs() -> list[int]:
            return pm.handleFrame(frame, 17, 0)[1].registers  # type: ignore[union-attr]  # noqa: B023

        assert tuple(theirs()) == want == ours(), "the two decoders disagree"
        r_ours, r_theirs = rate(ours, args.seconds), rate(theirs, args.seconds)
        ratios.append(r_ours / r_theirs)
        print(f"{count:3d} registers ({len(frame):3d}-byte frame): pollerd {r_ours:10,.0f}/s   "
              f"pymodbus {r_theirs:9,.0f}/s   x{r_ours / r_theirs:5.1f}")
    print(f"pollerd vs pymodbus RTU decode: min x{min(ratios):.1f} (budget >= 10x: "
          f"{'met' if min(ratios) >= 10 else 'NOT met'})")

    opts = parse_options({"template": "eastron-sdm630"}, "/nonexistent")
    block = plan_reads(opts.registers, 80)[0]
    data = struct.pack(f">{block.count // 2}f", *(230.5 + i for i in range(block.count // 2)))
    view = memoryview(data)

    def to_values() -> list[float | None]:
        return [s.value(view, s.address - block.start) for s in block.items]

    r = rate(to_values, args.seconds)
    print(f"register map: {len(block.items)} f32 values from one {block.count}-register block: {r:,.0f} blocks/s "
          f"({r * len(block.items):,.0f} values/s)")


if __name__ == "__main__":
    main()
