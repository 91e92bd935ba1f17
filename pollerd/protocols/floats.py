"""Numbers as meters send them: IEEE float32 values read into Python's 64-bit floats."""

from __future__ import annotations

import math
import struct

_F32 = struct.Struct(">f")


def f32_decimal(x: float) -> float:
    """The shortest decimal that is the same float32: 12.345 for the float32 nearest it, where the plain
    widening gives 12.345000267028809 (12345.000267 Wh once scaled to Wh). Bit for bit what the meter sent;
    only the binary tail the meter never meant is gone."""
    if not math.isfinite(x):
        return x
    bits = _F32.pack(x)
    for digits in (6, 7, 8, 9):
        d = float(f"{x:.{digits}g}")
        if _F32.pack(d) == bits:
            return d
    return x
