"""Durations and sizes as a config file writes them: parse to float seconds / int bytes, format for display.

A leaf: imports nothing of pollerd, so the config model, the line layer and the drivers all use it without
reaching into the config loader.
"""

from __future__ import annotations

import math
import re

__all__ = ["NUMBER", "format_duration", "format_size", "parse_duration", "parse_size", "show_value", "toml_type"]

# A plain TOML-ish number written as text ("900", "1.5", "-2e3"): a duration without a unit is seconds.
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def toml_type(value: object) -> str:
    """The TOML type name of a parsed value, for "expected X, got Y" messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def show_value(value: object) -> str:
    """A value as an error message quotes it (a table or array by its type name)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return toml_type(value)
    return repr(value)



_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_FORMS = '"250ms", "900s", "15m", "1h30m", "2d", "1w" or a number of seconds'
# 100 years. Longer is always a typo, and schedules and backfills turn durations into dates, which end at year 9999.
_DURATION_MAX = 36500 * 86400.0


def parse_duration(value: object) -> float:
    """``"15m"``, ``"1h30m"``, ``"250ms"``, ``"2d"``, ``900``, ``"900"`` -> float seconds (ValueError if not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration ({_DURATION_FORMS}), got {toml_type(value)} {show_value(value)}")
    if isinstance(value, str):
        text = re.sub(r"\s+", "", value).lower()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-") if text[:1] in "+-" and not NUMBER.fullmatch(text) else text
        if NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            pos, seconds = 0, 0.0
            for m in _DURATION_PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise ValueError(f"bad duration {value!r} (expected {_DURATION_FORMS})")
            seconds *= sign
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"bad duration {value!r} (expected {_DURATION_FORMS})")
    if seconds < 0:
        raise ValueError(f"duration {show_value(value)} is negative (expected {_DURATION_FORMS})")
    if seconds > _DURATION_MAX:
        raise ValueError(f"duration {show_value(value)} is too long (at most {format_duration(_DURATION_MAX)})")
    return seconds


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for display: 5400 -> ``"1h30m"``, 0.25 -> ``"250ms"``."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out or "0s"


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([a-z]*)")
_SIZE_FORMS = '"512MiB", "2GB", "800KiB" or a number of bytes'


def parse_size(value: object) -> int:
    """``"512MiB"``, ``"2GB"``, ``"1.5GiB"``, ``1048576``, ``"1048576"`` -> int bytes (ValueError if not).

    KB/MB/GB are powers of 1000 and KiB/MiB/GiB powers of 1024, as the units say; case does not matter."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a size ({_SIZE_FORMS}), got {toml_type(value)} {show_value(value)}")
    if isinstance(value, str):
        m = _SIZE.fullmatch(re.sub(r"\s+", "", value).lower())
        if m is None or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"bad size {value!r} (expected {_SIZE_FORMS})")
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        size = float(value)
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"bad size {show_value(value)} (expected {_SIZE_FORMS})")
    return int(size)


def format_size(n: float) -> str:
    """For display: 536870912 -> ``"512MiB"``, 1500 -> ``"1.5KiB"``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{int(n)}B"
