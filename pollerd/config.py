"""Configuration: one TOML file -> frozen dataclasses.

The dataclasses come first; the loader (:func:`load_config`), its line locator and validation follow.
Durations are float seconds. Secrets are :class:`Secret`, whose repr never shows the value.
"""

from __future__ import annotations

import bisect as _bisect
import datetime as _dt
import difflib as _difflib
import ipaddress as _ipaddress
import math
import os as _os
import re as _re
import socket as _socket
import time as _time
import zoneinfo as _zoneinfo
from collections.abc import Callable as _Callable
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from dataclasses import dataclass, field
from typing import Any as _Any
from typing import NoReturn as _NoReturn
from urllib.parse import urlsplit as _urlsplit

from pollerd.compat import tomllib as _tomllib
from pollerd.drivers import ADDRESS_PARSERS, CLOUD_KEYS, CLOUD_WAITING_TIME, DEFAULT_READ, READ_KINDS, OptionError
from pollerd.drivers import option_keys as _option_keys
from pollerd.drivers import parse_options as _parse_options
from pollerd.drivers import resolve as _resolve
from pollerd.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value (meter password, token). Never printed: repr/str give ``'***'``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    name: str                      # appears in upstream payloads; default: the host name
    spread: float = 300.0          # window (s) over which calendar (daily/weekly/monthly) cycles are spread


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str | None = None        # default: <state_dir>/pollerd.db
    keep: float = 7 * 86400.0      # local retention of rows every sink has confirmed
    commit_interval: float = 1.0   # group commit: at most this long between a write and its commit
    max_size: int | None = None    # bytes of used database pages; oldest readings evicted beyond it (quota.py)
    max_age: float | None = None   # seconds; readings with an older ts are evicted, delivered or not


@dataclass(frozen=True, slots=True)
class ApiToken:
    token: Secret
    role: str                       # "read" | "admin"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: str = "127.0.0.1:8780"
    host: str = "127.0.0.1"
    port: int = 8780
    enabled: bool = True
    tokens: tuple[ApiToken, ...] = ()   # bearer tokens for the write endpoints (raw frames, poll now)


@dataclass(frozen=True, slots=True)
class LineConfig:
    name: str
    type: str                       # "serial" | "tcp"
    # serial
    device: str | None = None
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"               # N E O M S
    stopbits: float = 1
    # tcp
    host: str | None = None
    port: int | None = None
    connect_timeout: float = 5.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    implicit: bool = False          # made from a meter's ip_address/port
    line_no: int | None = None      # where it was defined in the file, for messages


@dataclass(frozen=True, slots=True)
class MeterConfig:
    name: str
    protocol: str                   # "mercury230"
    line: str                       # name of a LineConfig (implicit lines are named "tcp:HOST:PORT")
    connection_address: int | str   # an int for most protocols; see drivers.ADDRESS_PARSERS
    number_meter: str | None = None
    password: Secret | None = None
    password_encoding: str = "digits"   # digits | ascii | hex
    access_level: int = 1
    waiting_time: float = 1.0
    pause_time: float = 0.005
    package_size: int = 16
    retries: int = 2
    period_type: str = "interval"   # interval | daily | weekly | monthly
    interval_time: float = 900.0
    at: _dt.time = _dt.time(0, 0)
    days_of_week: frozenset[int] = frozenset()   # 1=Mon..7=Sun; empty = every day
    days_of_month: frozenset[int] = frozenset()  # 1..31; empty = every day
    last_day_of_month: bool = False              # days_of_month contained "last"
    data_polling_length: float = 31 * 86400.0
    time_difference: float = 60.0
    timezone: str = "UTC"
    tn1: float | None = None
    tn2: float | None = None
    tt: float | None = None
    read: tuple[str, ...] = ("energy", "instant")
    enabled: bool = True
    options: object | None = None   # protocol-specific keys, parsed by drivers.OPTION_PARSERS
    line_no: int | None = None
    # cloud sources (drivers.CLOUD_KEYS): no line and no bus address; the account's endpoint and credentials
    url: str | None = None
    email: str | None = None
    api_key: Secret | None = None

    @property
    def is_cloud(self) -> bool:
        return self.protocol in CLOUD_KEYS


@dataclass(frozen=True, slots=True)
class SinkConfig:
    name: str
    type: str                        # "http"
    url: str
    token: Secret | None = None      # bearer
    username: str | None = None      # basic
    password: Secret | None = None
    headers: tuple[tuple[str, str], ...] = ()
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 30.0
    batch_size: int = 500
    retry_min: float = 1.0
    retry_max: float = 300.0
    line_no: int | None = None
    options: object | None = None    # type-specific keys, parsed by SINK_OPTION_PARSERS
    linger: float = 0.5              # wait this long for a partial batch to fill (push/forwarder.py)
    client_cert: str | None = None   # TLS client certificate (mTLS), PEM; may hold the key too
    client_key: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    gateway: GatewayConfig
    store: StoreConfig
    api: ApiConfig
    lines: tuple[LineConfig, ...]
    meters: tuple[MeterConfig, ...]
    sinks: tuple[SinkConfig, ...]

    def meter(self, name: str) -> MeterConfig:
        for m in self.meters:
            if m.name == name:
                return m
        raise KeyError(name)

    def line(self, name: str) -> LineConfig:
        for ln in self.lines:
            if ln.name == name:
                return ln
        raise KeyError(name)


# ---------------------------------------------------------------------------------------------------------------
# Loader and validation
# ---------------------------------------------------------------------------------------------------------------


__all__ = [
    "ApiConfig", "Config", "GatewayConfig", "LineConfig", "MeterConfig", "Secret", "SinkConfig", "StoreConfig",
    "SINK_OPTION_PARSERS", "SINK_TYPES", "format_duration", "format_size", "load_config", "parse_duration",
    "parse_size", "safe_url", "summary",
]

_Path = tuple[str | int, ...]


# --- line locator ----------------------------------------------------------------------------------------------

_BARE_KEY = _re.compile(r"[A-Za-z0-9_-]+")


class _Locator:
    """Maps key paths to the line that defines them, from the raw TOML text.

    tomllib keeps no positions, so this scans the (already valid) text for table headers, array-of-table
    headers and ``key =`` lines, including keys of one-line inline tables. Values inside arrays are not
    indexed: their keys resolve to the array's own line. Lookups fall back to the longest known prefix, so a
    missing key resolves to its table header.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._newlines = [i for i, c in enumerate(text) if c == "\n"]
        self._lines: dict[_Path, int] = {}
        self._arrays: dict[_Path, int] = {}
        try:
            self._scan()
        except (IndexError, ValueError):
            # Positions are a convenience on top of a parse tomllib already accepted; a construct this
            # scanner does not follow costs line precision, never the load.
            pass

    def find(self, path: _Path) -> int | None:
        for n in range(len(path), 0, -1):
            line = self._lines.get(path[:n])
            if line is not None:
                return line
        return None

    def line_of_pos(self, pos: int) -> int:
        return _bisect.bisect_left(self._newlines, pos) + 1

    # scanning ------------------------------------------------------------------------------------------------

    def _record(self, path: _Path, line: int) -> None:
        for n in range(1, len(path) + 1):
            self._lines.setdefault(path[:n], line)

    def _resolve(self, parts: list[str]) -> _Path:
        out: _Path = ()
        for part in parts:
            out += (part,)
            count = self._arrays.get(out)
            if count:
                out += (count - 1,)
        return out

    def _skip(self, pos: int, newlines: bool) -> int:
        t, n = self._text, len(self._text)
        while pos < n:
            c = t[pos]
            if c in " \t" or (newlines and c in "\r\n"):
                pos += 1
            elif c == "#":
                end = t.find("\n", pos)
                pos = n if end < 0 else end
            else:
                break
        return pos

    def _key(self, pos: int) -> tuple[list[str], int]:
        t = self._text
        parts: list[str] = []
        while True:
            pos = self._skip(pos, False)
            c = t[pos]
            if c == '"':
                end = pos + 1
                while t[end] != '"':
                    end += 2 if t[end] == "\\" else 1
                parts.append(t[pos + 1:end].replace('\\"', '"').replace("\\\\", "\\"))
                pos = end + 1
            elif c == "'":
                end = t.index("'", pos + 1)
                parts.append(t[pos + 1:end])
                pos = end + 1
            else:
                m = _BARE_KEY.match(t, pos)
                if m is None:
                    raise ValueError("not a key")
                parts.append(m.group())
                pos = m.end()
            pos = self._skip(pos, False)
            if pos < len(t) and t[pos] == ".":
                pos += 1
                continue
            return parts, pos

    def _scan(self) -> None:
        t, n = self._text, len(self._text)
        pos = 0
        table: _Path = ()
        while True:
            pos = self._skip(pos, True)
            if pos >= n:
                return
            line = self.line_of_pos(pos)
            if t[pos] == "[":
                is_array = t.startswith("[[", pos)
                parts, pos = self._key(pos + (2 if is_array else 1))
                pos += 2 if is_array else 1
                if is_array:
                    full = self._resolve(parts[:-1]) + (parts[-1],)
                    index = self._arrays.get(full, 0)
                    self._arrays[full] = index + 1
                    table = full + (index,)
                else:
                    table = self._resolve(parts)
                self._record(table, line)
            else:
                parts, pos = self._key(pos)
                if t[pos] != "=":
                    raise ValueError("expected '='")
                path = table + tuple(parts)
                self._record(path, line)
                pos = self._value(pos + 1, path)

    def _value(self, pos: int, path: _Path | None) -> int:
        """Skip one value; record keys of inline tables under ``path`` (None inside arrays)."""
        t = self._text
        pos = self._skip(pos, False)
        c = t[pos]
        if c == "{":
            pos += 1
            while True:
                pos = self._skip(pos, True)
                if t[pos] == "}":
                    return pos + 1
                line = self.line_of_pos(pos)
                parts, pos = self._key(pos)
                sub = None if path is None else path + tuple(parts)
                if sub is not None:
                    self._record(sub, line)
                pos = self._value(pos + 1, sub)
                pos = self._skip(pos, True)
                if t[pos] == ",":
                    pos += 1
        if c == "[":
            pos += 1
            while True:
                pos = self._skip(pos, True)
                if t[pos] == "]":
                    return pos + 1
                pos = self._value(pos, None)
                pos = self._skip(pos, True)
                if t[pos] == ",":
                    pos += 1
        for quote in ('"""', "'''"):
            if t.startswith(quote, pos):
                end = pos + 3
                while not t.startswith(quote, end):
                    end += 2 if (quote == '"""' and t[end] == "\\") else 1
                end += 3
                while end < len(t) and t[end] == quote[0]:  # up to two quotes may precede the delimiter
                    end += 1
                return end
        if c == '"':
            end = pos + 1
            while t[end] != '"':
                end += 2 if t[end] == "\\" else 1
            return end + 1
        if c == "'":
            return t.index("'", pos + 1) + 1
        end = pos
        while end < len(t) and t[end] not in ",]}\n#":
            end += 1
        return end


# --- small value helpers ---------------------------------------------------------------------------------------

class _Invalid(Exception):
    """A value is wrong; ``sub`` extends the key path (e.g. an index into a list)."""

    def __init__(self, message: str, sub: _Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _fmt_path(path: _Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + name
    return out


def _toml_type(value: object) -> str:
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


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _toml_type(value)
    return repr(value)


def _got(expected: str, value: object) -> _Invalid:
    if isinstance(value, (dict, list)):  # _show would repeat the type: "got array array"
        return _Invalid(f"expected {expected}, got {_toml_type(value)}")
    return _Invalid(f"expected {expected}, got {_toml_type(value)} {_show(value)}")


def _did_you_mean(word: str, choices: _Iterable[object]) -> str:
    match = _difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _one_of(choices: _Iterable[object]) -> str:
    return ", ".join(str(c) for c in choices)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = _re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_NUMBER = _re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DURATION_FORMS = '"250ms", "900s", "15m", "1h30m", "2d", "1w" or a number of seconds'
# 100 years. Longer is always a typo, and schedules and backfills turn durations into dates, which end at year 9999.
_DURATION_MAX = 36500 * 86400.0


def parse_duration(value: object) -> float:
    """``"15m"``, ``"1h30m"``, ``"250ms"``, ``"2d"``, ``900``, ``"900"`` -> float seconds (ValueError if not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration ({_DURATION_FORMS}), got {_toml_type(value)} {_show(value)}")
    if isinstance(value, str):
        text = _re.sub(r"\s+", "", value).lower()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-") if text[:1] in "+-" and not _NUMBER.fullmatch(text) else text
        if _NUMBER.fullmatch(text):
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
        raise ValueError(f"duration {_show(value)} is negative (expected {_DURATION_FORMS})")
    if seconds > _DURATION_MAX:
        raise ValueError(f"duration {_show(value)} is too long (at most {format_duration(_DURATION_MAX)})")
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
_SIZE = _re.compile(r"(\d+(?:\.\d+)?)([a-z]*)")
_SIZE_FORMS = '"512MiB", "2GB", "800KiB" or a number of bytes'


def parse_size(value: object) -> int:
    """``"512MiB"``, ``"2GB"``, ``"1.5GiB"``, ``1048576``, ``"1048576"`` -> int bytes (ValueError if not).

    KB/MB/GB are powers of 1000 and KiB/MiB/GiB powers of 1024, as the units say; case does not matter."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a size ({_SIZE_FORMS}), got {_toml_type(value)} {_show(value)}")
    if isinstance(value, str):
        m = _SIZE.fullmatch(_re.sub(r"\s+", "", value).lower())
        if m is None or m.group(2) not in _SIZE_UNITS:
            raise ValueError(f"bad size {value!r} (expected {_SIZE_FORMS})")
        size = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        size = float(value)
    if not math.isfinite(size) or size < 0:
        raise ValueError(f"bad size {_show(value)} (expected {_SIZE_FORMS})")
    return int(size)


def format_size(n: float) -> str:
    """For display: 536870912 -> ``"512MiB"``, 1500 -> ``"1.5KiB"``."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{int(n)}B"


def _size(lo: int) -> _Callable[[object, _Ctx], int]:
    def conv(value: object, ctx: _Ctx) -> int:
        try:
            n = parse_size(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if n < lo:
            raise _Invalid(f"must be at least {format_size(lo)}, got {_show(value)}")
        return n
    return conv


def _duration(lo: float = 0.0, *, above: bool = False) -> _Callable[[object, _Ctx], float]:
    def conv(value: object, ctx: _Ctx) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None
        if above and not seconds > lo:
            raise _Invalid(f"must be > {format_duration(lo)}, got {_show(value)}")
        if seconds < lo:
            raise _Invalid(f"must be at least {format_duration(lo)}, got {_show(value)}")
        return seconds
    return conv


def _as_int(value: object) -> int:
    # Seed 004 sent every value as a string, so numeric strings are as good as integers.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise _got("an integer", value)


def _int(lo: int, hi: int) -> _Callable[[object, _Ctx], int]:
    def conv(value: object, ctx: _Ctx) -> int:
        n = _as_int(value)
        if not lo <= n <= hi:
            raise _Invalid(f"{n} is not in {lo}..{hi}")
        return n
    return conv


def _int_in(allowed: tuple[int, ...]) -> _Callable[[object, _Ctx], int]:
    def conv(value: object, ctx: _Ctx) -> int:
        n = _as_int(value)
        if n not in allowed:
            raise _Invalid(f"{n} is not one of {_one_of(allowed)}")
        return n
    return conv


def _positive_number(value: object, ctx: _Ctx) -> float:
    if (isinstance(value, (int, float)) and not isinstance(value, bool)) or (isinstance(value, str) and _NUMBER.fullmatch(value.strip())):
        x = float(value)
    else:
        raise _got("a number", value)
    if not (math.isfinite(x) and x > 0):
        raise _Invalid(f"must be > 0, got {_show(value)}")
    return x


def _address(value: object, ctx: _Ctx) -> int:
    # The range depends on the protocol, which may come later in the table; checked per meter.
    return _as_int(value)


def _bool(value: object, ctx: _Ctx) -> bool:
    if not isinstance(value, bool):
        raise _got("true or false", value)
    return value


def _str(value: object, ctx: _Ctx) -> str:
    if not isinstance(value, str):
        raise _got("a string", value)
    if not value.strip():
        raise _Invalid("must not be empty")
    return value


def _choice(choices: tuple[str, ...], *, fold: bool = False) -> _Callable[[object, _Ctx], str]:
    def conv(value: object, ctx: _Ctx) -> str:
        s = _str(value, ctx)
        key = s.upper() if fold else s
        if key not in choices:
            raise _Invalid(f"{s!r} is not one of {_one_of(choices)}{_did_you_mean(s, choices)}")
        return key
    return conv


_NAME = _re.compile(r"[A-Za-z0-9_.:-]+")


def _name(value: object, ctx: _Ctx) -> str:
    s = _str(value, ctx)
    if not _NAME.fullmatch(s):
        raise _Invalid(f"{s!r} is not a valid name (letters, digits and _ . : - only)")
    return s


def _host(value: object, ctx: _Ctx) -> str:
    s = _str(value, ctx).strip()
    if any(c.isspace() for c in s) or "/" in s:
        raise _Invalid(f"{s!r} is not a host name or IP address")
    return s


def _timezone(value: object, ctx: _Ctx) -> str:
    s = _str(value, ctx)
    try:
        _zoneinfo.ZoneInfo(s)
    except (_zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"unknown time zone {s!r} (expected an IANA name such as 'Europe/Berlin' or 'UTC')") \
            from None
    return s


_AT = _re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def _at(value: object, ctx: _Ctx) -> _dt.time:
    if isinstance(value, _dt.time):  # a TOML local time: at = 06:30:00
        return value.replace(microsecond=0)
    if not isinstance(value, str):
        raise _got('a time of day ("HH:MM" or "HH:MM:SS")', value)
    m = _AT.fullmatch(value.strip())
    if m is None:
        raise _Invalid(f'bad time of day {value!r} (expected "HH:MM" or "HH:MM:SS")')
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if h > 23 or mi > 59 or s > 59:
        raise _Invalid(f'bad time of day {value!r} (hours 0..23, minutes and seconds 0..59)')
    return _dt.time(h, mi, s)


def _list_items(value: object, what: str) -> list[object]:
    # A comma string ("1,2,5") is how seed 004 stored these filters.
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        raise _got(f"a list of {what} or a comma-separated string", value)
    return value


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _days_of_week(value: object, ctx: _Ctx) -> frozenset[int]:
    out: set[int] = set()
    for i, item in enumerate(_list_items(value, "days 1..7 or mon..sun")):
        sub: _Path = (i,) if isinstance(value, list) else ()
        if isinstance(item, str) and not item.strip().lstrip("+-").isdigit():
            word = item.strip().lower()
            if word in _WEEKDAYS:
                out.add(_WEEKDAYS.index(word) + 1)
            elif word in _WEEKDAY_NAMES:
                out.add(_WEEKDAY_NAMES.index(word) + 1)
            else:
                raise _Invalid(f"{item!r} is not a day of the week (1..7 or mon..sun)"
                               f"{_did_you_mean(word, _WEEKDAYS)}", sub)
            continue
        try:
            n = _as_int(item)
        except _Invalid as exc:
            raise _Invalid(exc.message, sub) from None
        if not 1 <= n <= 7:
            raise _Invalid(f"{n} is not in 1..7 (1 = Monday) or mon..sun", sub)
        out.add(n)
    return frozenset(out)


def _days_of_month(value: object, ctx: _Ctx) -> tuple[frozenset[int], bool]:
    out: set[int] = set()
    last = False
    for i, item in enumerate(_list_items(value, "days 1..31 or \"last\"")):
        sub: _Path = (i,) if isinstance(value, list) else ()
        if isinstance(item, str) and item.strip().lower() == "last":
            last = True
            continue
        try:
            n = _as_int(item)
        except _Invalid:
            raise _Invalid(f"{_show(item)} is not a day of the month (1..31 or \"last\")", sub) from None
        if not 1 <= n <= 31:
            raise _Invalid(f"{n} is not in 1..31", sub)
        out.add(n)
    return frozenset(out), last


def _string_list(value: object, ctx: _Ctx) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _got("a list of strings", value)
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Invalid(f"expected a string, got {_toml_type(item)} {_show(item)}", (i,))
        if item in out:
            raise _Invalid(f"{item!r} is listed twice", (i,))
        out.append(item)
    return tuple(out)


def _digits(value: object, ctx: _Ctx) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _got("a string of digits", value)
    s = value.strip()
    if not s.isdigit() or not s.isascii():
        raise _Invalid(f"{value!r} is not a string of digits")
    return s


def _secret_value(value: object, ctx: _Ctx) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        # The value itself stays out of the message: it may be a secret.
        raise _Invalid(f"expected a string, got {_toml_type(value)}")
    if not value:
        raise _Invalid("must not be empty")
    return value


class _SecretRef:
    """A secret to be read later: "give only one of password, password_file" must win over "file missing"."""

    __slots__ = ("read",)

    def __init__(self, read: _Callable[[], str]) -> None:
        self.read = read


def _secret_file(value: object, ctx: _Ctx) -> _SecretRef:
    name = _str(value, ctx)
    path = _os.path.join(ctx.base_dir, _os.path.expanduser(name))
    return _SecretRef(lambda: ctx.read_secret(path, f"file {name!r}", f"file {name!r} does not exist"))


def _secret_credential(value: object, ctx: _Ctx) -> _SecretRef:
    name = _str(value, ctx)
    if "/" in name or name in (".", ".."):
        raise _Invalid(f"{name!r} is not a credential name (no '/')")

    def read() -> str:
        directory = ctx.environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise _Invalid("$CREDENTIALS_DIRECTORY is not set (a credential needs systemd LoadCredential=)")
        return ctx.read_secret(_os.path.join(directory, name), f"credential {name!r}",
                               f"credential {name!r} not found in $CREDENTIALS_DIRECTORY ({directory})")
    return _SecretRef(read)


def _secret(ctx: _Ctx, path: _Path, fields: dict[str, _Any], keys: tuple[str, ...]) -> tuple[str, str] | None:
    """The one secret given among ``keys`` as (key, value), reading files/credentials now."""
    key = _first_of(ctx, path, fields, keys)
    if key is None:
        return None
    value = fields[key]
    if isinstance(value, _SecretRef):
        try:
            value = value.read()
        except _Invalid as exc:
            ctx.fail(path + (key,), exc.message)
    return key, value


def _url_of(schemes: tuple[str, ...]) -> _Callable[[object, _Ctx], str]:
    def conv(value: object, ctx: _Ctx) -> str:
        s = _str(value, ctx).strip()
        m = _re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/\s?#]+)([^\s]*)", s)
        if m is None or m.group(1).lower() not in schemes:
            shown = _re.sub(r"(?<=://)[^/@]*@", "***@", s)  # never echo credentials embedded in a URL
            raise _Invalid(f"{shown!r} is not an {' or '.join(x + '://' for x in schemes)} URL")
        if "@" in m.group(2):
            # A URL ends up in logs and reprs; credentials belong in the secret-aware keys.
            raise _Invalid("credentials in the URL are not accepted; use username + password or token")
        # The clients parse host and port only when they start (yarl): a bad one must fail here, not there.
        a = _re.fullmatch(r"(?:\[([^\]]*)\]|([^:\[\]]+))(?::([^:]*))?", m.group(2))
        if a is None or (a.group(1) is not None and not _is_ipv6(a.group(1))):
            raise _Invalid(f"{m.group(2)!r} in the URL is not a host, host:port or [IPv6]:port")
        port = a.group(3)
        if port is not None and not (port.isascii() and port.isdigit()):
            raise _Invalid(f"the port {port!r} in the URL is not a number")
        if port is not None and not 1 <= int(port) <= 65535:
            raise _Invalid(f"port {int(port)} is not in 1..65535")
        return s
    return conv


_url = _url_of(("http", "https"))


def _is_ipv6(text: str) -> bool:
    try:
        _ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _headers(value: object, ctx: _Ctx) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _got("a table of strings", value)
    out = []
    for k, v in value.items():
        if not _re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", k):
            raise _Invalid(f"{k!r} is not a valid HTTP header name", (k,))
        if not isinstance(v, str):
            raise _Invalid(f"expected a string, got {_toml_type(v)}", (k,))
        if "\n" in v or "\r" in v:
            raise _Invalid("header values must be on one line", (k,))
        out.append((k, v))
    return tuple(out)


def _existing_file(value: object, ctx: _Ctx) -> str:
    name = _str(value, ctx)
    path = _os.path.join(ctx.base_dir, _os.path.expanduser(name))
    if not _os.path.isfile(path):
        raise _Invalid(f"file {name!r} does not exist")
    return path


def _listen(value: object, ctx: _Ctx) -> tuple[str, str, int]:
    s = _str(value, ctx).strip()
    m = _re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s\[\]]+):(\d+)", s)
    if m is None:
        raise _Invalid(f'{s!r} is not "host:port" (e.g. "127.0.0.1:8780" or "[::1]:8780")')
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if m.group(1):
        try:
            _ipaddress.IPv6Address(host)
        except ValueError:
            raise _Invalid(f"{host!r} is not an IPv6 address") from None
    if not 1 <= port <= 65535:
        raise _Invalid(f"port {port} is not in 1..65535")
    return s, host, port


# --- context and table walking ---------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, source: str, locator: _Locator, environ: _Mapping[str, str], base_dir: str) -> None:
        self.source = source
        self.locator = locator
        self.environ = environ
        self.base_dir = base_dir

    def fail(self, path: _Path, message: str, *, line_path: _Path | None = None) -> _NoReturn:
        line = self.locator.find(path if line_path is None else line_path)
        raise ConfigError(message, path=self.source, line=line, key=_fmt_path(path) or None)

    def read_secret(self, path: str, label: str, missing: str) -> str:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise _Invalid(missing) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise _Invalid(f"cannot read {label}: {getattr(exc, 'strerror', None) or exc}") from None
        # Files written by `echo` or an editor end in a newline that is not part of the secret.
        text = text.rstrip("\r\n")
        if not text:
            raise _Invalid(f"{label} is empty")
        return text


_Spec = dict[str, _Callable[[_Any, _Ctx], _Any]]


def _walk(ctx: _Ctx, table: dict[str, _Any], path: _Path, spec: _Spec,
          known: _Iterable[str] | None = None) -> dict[str, _Any]:
    """Convert every key of ``table`` in file order; the first unknown or invalid key is the error.
    ``known`` (default: the spec's keys) are the names an unknown key's "did you mean" picks from."""
    out: dict[str, _Any] = {}
    for key, raw in table.items():
        conv = spec.get(key)
        if conv is None:
            ctx.fail(path, f"unknown key {key!r}{_did_you_mean(key, spec if known is None else known)}",
                     line_path=path + (key,))
        try:
            out[key] = conv(raw, ctx)
        except _Invalid as exc:
            ctx.fail(path + (key,) + exc.sub, exc.message)
    return out


def _table(ctx: _Ctx, doc: dict[str, _Any], key: str) -> dict[str, _Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        ctx.fail((key,), f"expected a table [{key}], got {_toml_type(value)}")
    return value


def _array_of_tables(ctx: _Ctx, doc: dict[str, _Any], key: str) -> list[dict[str, _Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        ctx.fail((key,), f"expected an array of tables [[{key}]], got {_toml_type(value)}")
    return value


def _first_of(ctx: _Ctx, path: _Path, fields: dict[str, _Any], keys: tuple[str, ...]) -> str | None:
    """At most one of ``keys``; the error points at the second one given."""
    given = [k for k in fields if k in keys]
    if len(given) > 1:
        ctx.fail(path + (given[1],), f"give only one of {', '.join(keys)} (got {given[0]} and {given[1]})")
    return given[0] if given else None


def _require(ctx: _Ctx, path: _Path, fields: dict[str, _Any], key: str, why: str = "") -> _Any:
    if key not in fields:
        ctx.fail(path, f"missing required key {key!r}{why}")
    return fields[key]


# --- sections --------------------------------------------------------------------------------------------------

_GATEWAY: _Spec = {"name": _name, "spread": _duration()}
_STORE: _Spec = {"path": _str, "keep": _duration(1.0), "commit_interval": _duration(0.0),
                 # Below 1 MiB the WAL and the schema alone would keep the quota permanently exceeded.
                 "max_size": _size(1024**2), "max_age": _duration(60.0)}
_API: _Spec = {"listen": _listen, "enabled": _bool, "tokens": lambda value, ctx: value}
_API_TOKEN: _Spec = {"token": _secret_value, "token_file": _secret_file, "token_credential": _secret_credential,
                     "role": _choice(("read", "admin"))}

_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200)
_SERIAL_KEYS = ("device", "baudrate", "bytesize", "parity", "stopbits")
_TCP_KEYS = ("host", "port", "connect_timeout")
_LINE_TYPES = ("serial", "tcp")


def _stopbits(value: object, ctx: _Ctx) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _got("1, 1.5 or 2", value)
    if value not in (1, 1.5, 2):
        raise _Invalid(f"{value:g} is not one of 1, 1.5, 2")
    return float(value) if value == 1.5 else int(value)


_LINE: _Spec = {
    "name": _name, "type": _choice(_LINE_TYPES),
    "device": _str, "baudrate": _int_in(_BAUDRATES), "bytesize": _int(5, 8),
    "parity": _choice(("N", "E", "O", "M", "S"), fold=True), "stopbits": _stopbits,
    "host": _host, "port": _int(1, 65535), "connect_timeout": _duration(0.0, above=True),
    "reconnect_min": _duration(0.0, above=True), "reconnect_max": _duration(0.0, above=True),
}

# Bus address range per protocol, where the protocol fixes one (Mercury: 0 is broadcast, 255 reserved).
_ADDRESS_RANGE: dict[str, tuple[int, int]] = {"mercury230": (1, 254), "modbus": (1, 255)}
# Password length in bytes per protocol, where the protocol fixes one (Mercury: 6 bytes).
_PASSWORD_BYTES: dict[str, int] = {"mercury230": 6}
_PASSWORD_KEYS = ("password", "password_file", "password_credential")
_TOKEN_KEYS = ("token", "token_file", "token_credential")
_API_KEY_KEYS = ("api_key", "api_key_file", "api_key_credential")
# Keys that place a meter on a bus; a cloud source (drivers.CLOUD_KEYS) has none of them.
_BUS_KEYS = ("line", "ip_address", "port", "connection_address", "password_encoding", "access_level")

_METER: _Spec = {
    "name": _name, "protocol": _str, "line": _name, "ip_address": _host, "port": _int(1, 65535),
    "connection_address": _address,
    "number_meter": _digits,
    "password": _secret_value, "password_file": _secret_file, "password_credential": _secret_credential,
    "password_encoding": _choice(("digits", "ascii", "hex")),
    "access_level": _int_in((1, 2)),
    "waiting_time": _duration(0.0, above=True), "pause_time": _duration(),
    "package_size": _int(1, 255), "retries": _int(0, 10),
    "period_type": _choice(("interval", "daily", "weekly", "monthly")),
    "periodType": _choice(("interval", "daily", "weekly", "monthly")),
    "interval_time": _duration(1.0), "at": _at,
    "days_of_week": _days_of_week, "days_of_month": _days_of_month,
    "data_polling_length": _duration(), "time_difference": _duration(),
    "timezone": _timezone, "tn1": _positive_number, "tn2": _positive_number, "tt": _positive_number,
    "read": _string_list, "enabled": _bool,
    "url": _url, "email": _str,
    "api_key": _secret_value, "api_key_file": _secret_file, "api_key_credential": _secret_credential,
}

# Sink types and the common keys each accepts; a new push client adds its entry here.
SINK_TYPES: dict[str, frozenset[str]] = {
    "http": frozenset({
        "url", "token", "token_file", "token_credential", "username", "password", "password_file",
        "password_credential", "headers", "verify_tls", "ca_file", "timeout", "batch_size", "retry_min",
        "retry_max", "linger", "client_cert", "client_key",
    }),
    # MQTT has no bearer tokens or HTTP headers; username + password go into CONNECT.
    "mqtt": frozenset({
        "url", "username", "password", "password_file", "password_credential", "verify_tls", "ca_file",
        "client_cert", "client_key", "timeout", "batch_size", "linger", "retry_min", "retry_max",
    }),
    # АС СиОИ document upload (pollerd.push.sioi): login + password, no batches.
    "sioi": frozenset({
        "url", "username", "password", "password_file", "password_credential", "verify_tls", "ca_file",
        "timeout", "retry_min", "retry_max",
    }),
}

# URL schemes per sink type, where they are not http/https.
SINK_URL_SCHEMES: dict[str, tuple[str, ...]] = {"mqtt": ("mqtt", "mqtts")}

# Type-specific sink keys: type -> (key names, "module:function"). The function takes (the sink's raw values of
# those keys, the config file's directory) and returns a frozen options object for SinkConfig.options; it raises
# drivers.OptionError with the key path below the sink table. Imported lazily (push modules import this one).
# A plugin loaded through the `pollerd.push` entry points (pollerd/push/plugins.py) registers its parser as a
# callable instead of a reference.
SINK_OPTION_PARSERS: dict[str, tuple[frozenset[str], str | _Callable[..., object]]] = {
    "http": (frozenset({"gzip", "accept_html"}), "pollerd.push.http:parse_options"),
    "mqtt": (frozenset({"topic", "payload", "qos", "retain", "client_id", "keepalive", "status_topic"}),
             "pollerd.push.mqtt_options:parse_options"),
    "sioi": (frozenset({
        "form_code", "template", "period", "at", "timezone", "catch_up", "data_wait", "meters", "channels",
        "archives", "value_scale", "encoding", "filename", "auth_format", "token_header", "token_prefix",
        "job_timeout", "status_poll", "auth_path", "upload_path", "status_path", "login_field", "password_field",
        "token_field", "form_field", "file_field", "job_id_field", "status_field", "errors_field",
        "status_loaded", "status_failed", "status_pending",
    }), "pollerd.push.sioi.options:parse_options"),
}

# Sink types that cannot work without credentials: type -> groups of keys, one key of each group required.
SINK_REQUIRED_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "sioi": (("username",), ("password", "password_file", "password_credential")),
}


def _sink_type(value: object, ctx: _Ctx) -> str:
    # Looked up at call time, not captured at import: plugin sink types arrive later (load_entry_points).
    return _choice(tuple(SINK_TYPES))(value, ctx)


_SINK: _Spec = {
    "name": _name, "type": _sink_type, "url": _url,
    "token": _secret_value, "token_file": _secret_file, "token_credential": _secret_credential,
    "username": _str,
    "password": _secret_value, "password_file": _secret_file, "password_credential": _secret_credential,
    "headers": _headers, "verify_tls": _bool, "ca_file": _existing_file,
    "timeout": _duration(0.0, above=True), "batch_size": _int(1, 10000),
    "retry_min": _duration(0.0, above=True), "retry_max": _duration(0.0, above=True),
    "linger": _duration(), "client_cert": _existing_file, "client_key": _existing_file,
}

_SECTIONS = ("gateway", "store", "api", "lines", "meters", "sinks")


def _load_gateway(ctx: _Ctx, doc: dict[str, _Any]) -> GatewayConfig:
    f = _walk(ctx, _table(ctx, doc, "gateway"), ("gateway",), _GATEWAY)
    name = f.get("name") or _socket.gethostname() or "pollerd"
    return GatewayConfig(name=name, spread=f.get("spread", 300.0))


def _load_store(ctx: _Ctx, doc: dict[str, _Any]) -> StoreConfig:
    f = _walk(ctx, _table(ctx, doc, "store"), ("store",), _STORE)
    path = f.get("path")
    if path is not None:
        path = _os.path.join(ctx.base_dir, _os.path.expanduser(path))
    kw = {k: f[k] for k in ("keep", "commit_interval", "max_size", "max_age") if k in f}
    return StoreConfig(path=path, **kw)


def _load_api(ctx: _Ctx, doc: dict[str, _Any]) -> ApiConfig:
    f = _walk(ctx, _table(ctx, doc, "api"), ("api",), _API)
    kw: dict[str, _Any] = {}
    if "listen" in f:
        kw["listen"], kw["host"], kw["port"] = f["listen"]
    if "enabled" in f:
        kw["enabled"] = f["enabled"]
    if "tokens" in f:
        raw = f["tokens"]
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            ctx.fail(("api", "tokens"), 'expected a list of tables like [{ token_file = "...", role = "admin" }]')
        tokens = []
        for i, table in enumerate(raw):
            path = ("api", "tokens", i)
            t = _walk(ctx, table, path, _API_TOKEN)
            secret = _secret(ctx, path, t, _TOKEN_KEYS)
            if secret is None:
                ctx.fail(path, "missing token (one of token, token_file, token_credential)")
            if len(secret[1]) < 16:
                ctx.fail(path + (secret[0],), "an API token must be at least 16 characters")
            for j, other in enumerate(tokens):
                if other.token.reveal() == secret[1]:  # the message names the entries, never the value
                    ctx.fail(path + (secret[0],), f"the same token as api.tokens[{j}]; a token has one role")
            tokens.append(ApiToken(Secret(secret[1]), _require(ctx, path, t, "role", ' ("read" or "admin")')))
        kw["tokens"] = tuple(tokens)
    return ApiConfig(**kw)


def _load_line(ctx: _Ctx, table: dict[str, _Any], path: _Path) -> LineConfig:
    f = _walk(ctx, table, path, _LINE)
    _require(ctx, path, f, "name")
    kind = _require(ctx, path, f, "type", ' ("serial" or "tcp")')
    foreign = _TCP_KEYS if kind == "serial" else _SERIAL_KEYS
    for key in f:
        if key in foreign:
            ctx.fail(path + (key,), f"key {key!r} does not apply to a {kind} line")
    if kind == "serial":
        _require(ctx, path, f, "device", " for a serial line")
    else:
        _require(ctx, path, f, "host", " for a tcp line")
        _require(ctx, path, f, "port", " for a tcp line")
    if f.get("reconnect_min", 1.0) > f.get("reconnect_max", 60.0):
        ctx.fail(path + ("reconnect_min",), f"reconnect_min ({format_duration(f['reconnect_min'])}) is greater "
                 f"than reconnect_max ({format_duration(f.get('reconnect_max', 60.0))})")
    return LineConfig(line_no=ctx.locator.find(path), **f)


def _load_meter(ctx: _Ctx, table: dict[str, _Any], path: _Path) -> tuple[dict[str, _Any], dict[str, _Any]]:
    """Field checks of one meter; cross-references (line names, addresses) come later."""
    # Protocol-specific keys (register maps, profiles...) and non-integer addresses are the driver's to
    # parse; the rest of the table goes through the common spec.
    extra_keys = _option_keys(table.get("protocol"))
    proto_raw = table.get("protocol")
    addr_parser = ADDRESS_PARSERS.get(proto_raw) if isinstance(proto_raw, str) else None  # str-enum keys
    common = {k: v for k, v in table.items()
              if k not in extra_keys and not (addr_parser and k == "connection_address")}
    f = _walk(ctx, common, path, _METER, _METER.keys() | extra_keys)  # "did you mean" knows the protocol's keys
    name = _require(ctx, path, f, "name")
    protocol = _require(ctx, path, f, "protocol")
    if protocol not in READ_KINDS:
        ctx.fail(path + ("protocol",), f"unknown protocol {protocol!r}{_did_you_mean(protocol, READ_KINDS)}; "
                 f"known: {_one_of(sorted(str(p) for p in READ_KINDS))}")
    cloud = protocol in CLOUD_KEYS
    if cloud:
        for key in f:
            if key in _BUS_KEYS:
                ctx.fail(path + (key,), f"key {key!r} does not apply to {protocol}: a cloud source is reached "
                         "at its 'url', not on a line")
        for key in CLOUD_KEYS[protocol]:
            given = _API_KEY_KEYS if key == "api_key" else _PASSWORD_KEYS if key == "password" else (key,)
            if not any(k in f for k in given):
                ctx.fail(path, f"missing required key {key!r} for {protocol}"
                         + (f" (or {', '.join(given[1:])})" if len(given) > 1 else ""))
        address: int | str = 0
    elif "url" in f or "email" in f or any(k in f for k in _API_KEY_KEYS):
        key = next(k for k in f if k in ("url", "email") + _API_KEY_KEYS)
        ctx.fail(path + (key,), f"key {key!r} applies to cloud sources ({', '.join(sorted(CLOUD_KEYS))}), "
                 f"not to {protocol}")
    elif addr_parser:
        if "connection_address" not in table:
            ctx.fail(path, "missing required key 'connection_address'")
        try:
            address = _resolve(addr_parser)(table["connection_address"])
        except OptionError as exc:
            ctx.fail(path + ("connection_address",) + exc.key, exc.message)
    else:
        address = _require(ctx, path, f, "connection_address")
        lo, hi = _ADDRESS_RANGE.get(protocol, (0, 0xFFFFFFFF))
        if not lo <= address <= hi:
            ctx.fail(path + ("connection_address",), f"{address} is not in {lo}..{hi} for {protocol}")
    options = None
    if extra_keys:
        try:
            options = _parse_options(protocol, {k: v for k, v in table.items() if k in extra_keys},
                                     ctx.base_dir)
        except OptionError as exc:
            ctx.fail(path + exc.key, exc.message)

    if cloud:
        pass
    elif "line" in f and ("ip_address" in f or "port" in f):
        other = "ip_address" if "ip_address" in f else "port"
        ctx.fail(path + (other,), "give either 'line' or 'ip_address' + 'port', not both")
    elif "line" not in f:
        if "ip_address" not in f and "port" not in f:
            ctx.fail(path, "missing 'line' (or 'ip_address' + 'port')")
        _require(ctx, path, f, "ip_address", " (with 'port')")
        _require(ctx, path, f, "port", " (with 'ip_address')")

    password = _secret(ctx, path, f, _PASSWORD_KEYS)
    if password is not None and not cloud:  # a cloud account's password is free text
        _check_password(ctx, path + (password[0],), password[1], f.get("password_encoding", "digits"),
                        _PASSWORD_BYTES.get(protocol))
    api_key = _secret(ctx, path, f, _API_KEY_KEYS)

    period_key = _first_of(ctx, path, f, ("period_type", "periodType"))
    period = f[period_key] if period_key else "interval"
    dow = f.get("days_of_week", frozenset())
    dom, last = f.get("days_of_month", (frozenset(), False))
    if period == "weekly" and not dow:
        ctx.fail(path + (period_key,), 'a weekly schedule needs days_of_week (e.g. days_of_week = ["mon"])')
    if period == "monthly" and not (dom or last):
        ctx.fail(path + (period_key,), 'a monthly schedule needs days_of_month (e.g. days_of_month = [1])')
    if period == "interval" and "at" in f:
        ctx.fail(path + ("at",), "'at' applies to daily, weekly and monthly schedules, not interval")

    kinds = READ_KINDS[protocol]  # type: ignore[index]
    read = f.get("read", DEFAULT_READ[protocol])  # type: ignore[index]
    for i, kind in enumerate(read):
        if kind not in kinds:
            ctx.fail(path + ("read", i), f"{protocol} cannot read {kind!r}{_did_you_mean(kind, kinds)}; "
                     f"it can read: {', '.join(kinds)}")
    if getattr(options, "clock_correction", False) and "clock" not in read:
        ctx.fail(path + ("clock_correction",), 'corrects the clock it reads: add "clock" to read')

    kw: dict[str, _Any] = {
        "name": name, "protocol": str(protocol), "line": f.get("line", ""), "connection_address": address,
        "password": Secret(password[1]) if password else None, "period_type": period,
        "days_of_week": dow, "days_of_month": dom, "last_day_of_month": last, "read": tuple(read),
        "options": options, "line_no": ctx.locator.find(path),
        "api_key": Secret(api_key[1]) if api_key else None,
    }
    for key in ("number_meter", "password_encoding", "access_level", "waiting_time", "pause_time",
                "package_size", "retries", "interval_time", "at", "data_polling_length", "time_difference",
                "timezone", "tn1", "tn2", "tt", "enabled", "url", "email"):
        if key in f:
            kw[key] = f[key]
    if cloud and "waiting_time" not in f:
        kw["waiting_time"] = CLOUD_WAITING_TIME  # a server answering a page of archives, not a meter on a bus
    return kw, f


def _check_schedule_runs(ctx: _Ctx, path: _Path, meter: MeterConfig, spread: float) -> None:
    """Refuse a schedule that never runs: an interval grid can miss every allowed day (a 7-day interval
    lands on one weekday). The daemon would otherwise fail at start, with every other meter."""
    from pollerd.schedule import Schedule  # schedule imports this module's types; keep the edge one-way

    if meter.period_type != "interval" or not (meter.days_of_week or meter.days_of_month
                                               or meter.last_day_of_month):
        return
    sched = Schedule.from_meter(meter, spread)
    now = _time.time()
    try:
        sched.next_run(now)
    except ValueError:
        pass
    else:
        return
    free = Schedule(sched.period_type, sched.interval, sched.at, frozenset(), frozenset(), False, sched.tz,
                    sched.offset)
    runs, t = [], now
    for _ in range(3):
        t = free.next_run(t)
        runs.append(_dt.datetime.fromtimestamp(t, sched.tz).strftime("%a %Y-%m-%d"))
    key = "days_of_week" if meter.days_of_week else "days_of_month"
    ctx.fail(path + (key,), f"this schedule never runs: every {format_duration(meter.interval_time)} "
             f"(+{format_duration(round(sched.offset))} spread) never falls on an allowed day; its runs would "
             f"be {', '.join(runs)}, ... ({meter.timezone}). For runs on chosen days use period_type = "
             f'"daily" or "weekly" with at')


def _check_password(ctx: _Ctx, path: _Path, value: str, encoding: str, size: int | None) -> None:
    # Never echo the password itself: only its shape.
    if encoding == "digits":
        if not (value.isascii() and value.isdigit() and len(value) == 6):
            ctx.fail(path, f"with password_encoding \"digits\" the password must be exactly 6 digits "
                     f"(got {len(value)} characters)")
    elif encoding == "hex":
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            ctx.fail(path, "with password_encoding \"hex\" the password must be hex digits")
        if size is not None and len(raw) != size:
            ctx.fail(path, f"with password_encoding \"hex\" the password must be {size} bytes "
                     f"({size * 2} hex digits), got {len(raw)} bytes")
    else:
        if not value.isascii():
            ctx.fail(path, "with password_encoding \"ascii\" the password must be ASCII")
        if size is not None and len(value) != size:
            ctx.fail(path, f"with password_encoding \"ascii\" the password must be {size} characters, "
                     f"got {len(value)}")


def _load_sink(ctx: _Ctx, table: dict[str, _Any], path: _Path) -> SinkConfig:
    kind0 = table.get("type")
    if not isinstance(kind0, str):
        kind0 = None  # not a name to look up (a list is not even hashable); _walk reports the type
    if isinstance(kind0, str) and kind0 not in SINK_TYPES:
        # Not built in: look through the installed plugins once, then validate as usual.
        from pollerd.push.plugins import load_entry_points
        broken = load_entry_points()
        if kind0 in broken:
            ctx.fail(path + ("type",), broken[kind0])
    extra_keys, parser = SINK_OPTION_PARSERS.get(kind0, (frozenset(), ""))  # type: ignore[arg-type]
    spec = {**_SINK, "url": _url_of(SINK_URL_SCHEMES[kind0])} if kind0 in SINK_URL_SCHEMES else _SINK
    # "Did you mean" offers the keys this type takes, its own (type-specific) keys included.
    known = SINK_TYPES[kind0] | extra_keys | {"name", "type"} if kind0 in SINK_TYPES else None  # type: ignore[index]
    f = _walk(ctx, {k: v for k, v in table.items() if k not in extra_keys}, path, spec, known)
    _require(ctx, path, f, "name")
    kind = _require(ctx, path, f, "type", f" ({', '.join(SINK_TYPES)})")
    allowed = SINK_TYPES[kind]
    for key in f:
        if key not in allowed and key not in ("name", "type"):
            ctx.fail(path + (key,), f"key {key!r} does not apply to a {kind} sink")
    url = _require(ctx, path, f, "url")
    for group in SINK_REQUIRED_KEYS.get(kind, ()):
        if not any(k in f for k in group):
            ctx.fail(path, f"missing required key {group[0]!r} for a {kind} sink"
                     + (f" (or {', '.join(group[1:])})" if len(group) > 1 else ""))
    auth = [k for k in f if k in _TOKEN_KEYS or k in _PASSWORD_KEYS or k == "username"]
    for key in auth:
        if (key in _TOKEN_KEYS) != (auth[0] in _TOKEN_KEYS):
            ctx.fail(path + (key,), "give either a bearer token (token, token_file, token_credential) or "
                     "basic auth (username + password), not both")
    pw_given = [k for k in f if k in _PASSWORD_KEYS]
    if pw_given and "username" not in f:
        ctx.fail(path + (pw_given[0],), "basic auth needs 'username' too")
    if "username" in f and not pw_given:
        ctx.fail(path + ("username",), "basic auth needs 'password' (or password_file, password_credential) too")
    token = _secret(ctx, path, f, _TOKEN_KEYS)
    password = _secret(ctx, path, f, _PASSWORD_KEYS)
    if f.get("retry_min", 1.0) > f.get("retry_max", 300.0):
        ctx.fail(path + ("retry_min",), f"retry_min ({format_duration(f['retry_min'])}) is greater than "
                 f"retry_max ({format_duration(f.get('retry_max', 300.0))})")
    kw: dict[str, _Any] = {
        "name": f["name"], "type": kind, "url": url,
        "token": Secret(token[1]) if token else None,
        "password": Secret(password[1]) if password else None,
        "line_no": ctx.locator.find(path),
    }
    for key in ("username", "headers", "verify_tls", "ca_file", "timeout", "batch_size", "retry_min",
                "retry_max", "linger", "client_cert", "client_key"):
        if key in f:
            kw[key] = f[key]
    _check_client_cert(ctx, path, f)
    if parser:
        try:
            kw["options"] = (parser if callable(parser) else _resolve(parser))({k: v for k, v in table.items() if k in extra_keys}, ctx.base_dir)
        except OptionError as exc:
            ctx.fail(path + exc.key, exc.message)
    return SinkConfig(**kw)


def _check_client_cert(ctx: _Ctx, path: _Path, f: dict[str, _Any]) -> None:
    """A client certificate that does not load fails now, at startup, not at the first TLS handshake."""
    if "client_key" in f and "client_cert" not in f:
        ctx.fail(path + ("client_key",), "client_key needs client_cert too")
    if "client_cert" not in f:
        return
    import ssl
    try:
        ssl.create_default_context().load_cert_chain(f["client_cert"], f.get("client_key"))
    except (OSError, ssl.SSLError) as exc:
        what = "client_cert and client_key do not" if "client_key" in f else "client_cert does not"
        ctx.fail(path + ("client_cert",), f"{what} load as a PEM certificate and its private key "
                 f"(an encrypted key is not supported): {getattr(exc, 'reason', None) or exc}")


def _unique(ctx: _Ctx, section: str, names: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            ctx.fail((section, i, "name"), f"duplicate name {name!r} (also {section}[{seen[name]}])")
        seen[name] = i


def _endpoint_name(host: str, port: int) -> str:
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


def load_config(path: str | _os.PathLike[str], *, environ: _Mapping[str, str] | None = None) -> Config:
    """Read and validate one TOML file. Raises :class:`ConfigError` naming file, line and key path.

    Relative file names inside the config (password_file, ca_file, store.path) are relative to the
    config file's directory, so a config works the same whatever the daemon's working directory is.
    """
    source = _os.fspath(path)
    env = _os.environ if environ is None else environ
    try:
        with open(source, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 (byte 0x{raw[exc.start]:02x})", path=source, line=line) from None
    try:
        doc = _tomllib.loads(text)
    except _tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
        if m:
            line = int(m.group(1))
            msg = msg[:m.start()] + f" (column {m.group(2)})" + msg[m.end():]
        else:
            line = text.count("\n") + 1
        raise ConfigError(f"syntax error: {msg}", path=source, line=line) from None

    ctx = _Ctx(source, _Locator(text), env, _os.path.dirname(_os.path.abspath(source)))
    for key in doc:
        if key not in _SECTIONS:
            ctx.fail((), f"unknown section {key!r}{_did_you_mean(key, _SECTIONS)}", line_path=(key,))

    gateway = _load_gateway(ctx, doc)
    store = _load_store(ctx, doc)
    api = _load_api(ctx, doc)
    lines = [_load_line(ctx, t, ("lines", i)) for i, t in enumerate(_array_of_tables(ctx, doc, "lines"))]
    meters = [_load_meter(ctx, t, ("meters", i)) for i, t in enumerate(_array_of_tables(ctx, doc, "meters"))]
    sinks = [_load_sink(ctx, t, ("sinks", i)) for i, t in enumerate(_array_of_tables(ctx, doc, "sinks"))]

    _unique(ctx, "lines", [ln.name for ln in lines])
    _unique(ctx, "meters", [kw["name"] for kw, _ in meters])
    _unique(ctx, "sinks", [s.name for s in sinks])

    by_name = {ln.name: ln for ln in lines}
    by_endpoint: dict[tuple[str, int], LineConfig] = {}
    for i, ln in enumerate(lines):
        if ln.type == "tcp":
            key = (ln.host.lower(), ln.port)  # type: ignore[union-attr]
            if key in by_endpoint:
                ctx.fail(("lines", i, "host"), f"line {ln.name!r} uses the same endpoint {ln.host}:{ln.port} as "
                         f"line {by_endpoint[key].name!r}; one converter is one bus, name it once")
            by_endpoint[key] = ln

    implicit: list[LineConfig] = []
    built: list[MeterConfig] = []
    used_address: dict[tuple[str, int], str] = {}
    for i, (kw, f) in enumerate(meters):
        path: _Path = ("meters", i)
        if kw["protocol"] in CLOUD_KEYS:
            built.append(MeterConfig(**kw))
            continue
        if "line" in f:
            if f["line"] not in by_name:
                ctx.fail(path + ("line",), f"unknown line {f['line']!r}{_did_you_mean(f['line'], by_name)}"
                         + ("" if by_name else " (no [[lines]] are defined)"))
        else:
            host, port = f["ip_address"], f["port"]
            line = by_endpoint.get((host.lower(), port))
            if line is None:
                # A converter reachable at one endpoint is one bus: meters naming the same endpoint share it.
                name = _endpoint_name(host, port)
                if name in by_name:
                    ctx.fail(path + ("ip_address",), f"implicit line name {name!r} clashes with a [[lines]] name")
                line = LineConfig(name=name, type="tcp", host=host, port=port, implicit=True,
                                  line_no=ctx.locator.find(path + ("ip_address",)))
                by_name[name] = line
                by_endpoint[(host.lower(), port)] = line
                implicit.append(line)
            kw["line"] = line.name
        meter = MeterConfig(**kw)
        if meter.enabled:
            slot = (meter.line, meter.connection_address)
            if slot in used_address:
                ctx.fail(path + ("connection_address",), f"address {meter.connection_address} is already used "
                         f"by meter {used_address[slot]!r} on line {meter.line!r}")
            used_address[slot] = meter.name
        built.append(meter)
    for i, meter in enumerate(built):
        _check_schedule_runs(ctx, ("meters", i), meter, gateway.spread)
    meter_names = [m.name for m in built]
    for i, sink in enumerate(sinks):
        # A document sink (sioi) that names a meter not in this file would wait for its readings every period.
        for k, name in enumerate(getattr(sink.options, "meters", ())):
            if name not in meter_names:
                ctx.fail(("sinks", i, "meters", k), f"no meter named {name!r} in this file"
                         f"{_did_you_mean(name, meter_names)}")

    if store.max_age is not None:
        for i, meter in enumerate(built):
            # A backfill reaching further back than max_age would be evicted as it arrives (quota.py).
            if (meter.enabled and meter.data_polling_length > store.max_age
                    and set(meter.read) & {"profile", "hourly", "daily", "monthly", "yearly"}):
                ctx.fail(("store", "max_age"), f"max_age {format_duration(store.max_age)} is shorter than "
                         f"meters[{i}] ({meter.name}) data_polling_length "
                         f"{format_duration(meter.data_polling_length)}: its backfilled archives would be "
                         f"evicted as they arrive; raise max_age or shorten data_polling_length")

    return Config(source=source, gateway=gateway, store=store, api=api, lines=tuple(lines) + tuple(implicit),
                  meters=tuple(built), sinks=tuple(sinks))


# --- summary ---------------------------------------------------------------------------------------------------

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def describe_schedule(meter: MeterConfig, spread: float) -> str:
    """A meter's schedule in words, with its spread offset: what `pollerd check` shows."""
    from pollerd.schedule import Schedule  # schedule imports this module's types; keep the edge one-way

    sched = Schedule.from_meter(meter, spread)
    filters = []
    if meter.days_of_week:
        filters.append("on " + ", ".join(_DAY_NAMES[d - 1] for d in sorted(meter.days_of_week)))
    if meter.days_of_month or meter.last_day_of_month:
        days = [str(d) for d in sorted(meter.days_of_month)]
        text = ("on days " if len(days) > 1 else "on day ") + ", ".join(days) if days else "on"
        if meter.last_day_of_month:
            text += (" and" if days else "") + " the last day"
        filters.append(text + " of the month")
    where = (" " + " and ".join(filters)) if filters else ""
    if meter.period_type == "interval":
        text = f"every {format_duration(meter.interval_time)}{where}"
    else:
        at = meter.at.strftime("%H:%M:%S" if meter.at.second else "%H:%M")
        text = f"{meter.period_type}{where} at {at} {meter.timezone}"
    return f"{text} (+{format_duration(round(sched.offset))} spread)"


def safe_url(url: str) -> str:
    """A URL as logs and `pollerd check` may show it: no user info, no query, no fragment (API keys often
    ride in the query). "<invalid url>" when it does not parse."""
    from yarl import URL  # lazy: aiohttp's URL type, loaded by the daemon anyway

    try:
        return str(URL(url).with_user(None).with_password(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid url>"


def _shown_url(url: str | None) -> str:
    """`pollerd check`'s form of a URL: safe_url(), saying so when a query was left out."""
    if not url:
        return str(url)
    return safe_url(url) + (" (query hidden)" if _urlsplit(url).query else "")


def summary(config: Config) -> str:
    """Human-readable overview for `pollerd check`. Secrets are shown only as set/not set."""
    g, s, a = config.gateway, config.store, config.api
    out = [
        f"config:  {config.source}",
        f"gateway: {g.name} (calendar polls spread over {format_duration(g.spread)})",
        f"store:   {s.path or '<state dir>/pollerd.db'} (keep {format_duration(s.keep)}, "
        f"commit every {format_duration(s.commit_interval)}"
        + (f", max size {format_size(s.max_size)}" if s.max_size else "")
        + (f", max age {format_duration(s.max_age)}" if s.max_age else "") + ")",
        f"api:     {'http://' + a.listen if a.enabled else 'disabled'}",
        f"lines:   {len(config.lines)}",
    ]
    for ln in config.lines:
        if ln.type == "serial":
            where = f"serial {ln.device} {ln.baudrate} {ln.bytesize}{ln.parity}{ln.stopbits:g}"
        else:
            where = f"tcp {ln.host}:{ln.port}" + (" (implicit)" if ln.implicit else "")
        members = [m for m in config.meters if m.line == ln.name]
        out.append(f"  {ln.name}: {where}, {len(members)} meter(s)")
        for m in members:
            state = "" if m.enabled else " [disabled]"
            pw = ", password set" if m.password is not None else ""
            serial = f" #{m.number_meter}" if m.number_meter else ""
            out.append(f"    {m.name}{state}: {m.protocol}{serial} @ {m.connection_address}{pw}; "
                       f"{describe_schedule(m, g.spread)}; reads {', '.join(m.read)}")
    clouds = [m for m in config.meters if m.is_cloud]
    if clouds:
        out.append(f"cloud sources: {len(clouds)}")
    for m in clouds:
        state = "" if m.enabled else " [disabled]"
        who = f" as {m.email}" if m.email else (", api key set" if m.api_key is not None else "")
        out.append(f"  {m.name}{state}: {m.protocol} {_shown_url(m.url)}{who}; {describe_schedule(m, g.spread)}; "
                   f"reads {', '.join(m.read)}")
    out.append(f"sinks:   {len(config.sinks)}")
    for sk in config.sinks:
        auth = "bearer token" if sk.token else (f"basic auth as {sk.username}" if sk.username else "no auth")
        extra = f", headers: {', '.join(k for k, _ in sk.headers)}" if sk.headers else ""
        tls = "" if sk.verify_tls else ", TLS NOT verified"
        if sk.type == "sioi" and sk.options is not None:  # a document sink: no batches
            o: _Any = sk.options
            out.append(f"  {sk.name}: sioi {_shown_url(sk.url)} (login {sk.username}, form {o.form_code}, "
                       f"{o.period.kind} document at {o.period.at.strftime('%H:%M')} {o.period.tz}, template "
                       f"{_os.path.basename(o.template_path)}{tls})")
            continue
        out.append(f"  {sk.name}: {sk.type} {_shown_url(sk.url)} ({auth}, batch {sk.batch_size}{extra}{tls})")
    return "\n".join(out)

