"""Field validators of the config loader: each converts one raw TOML value or raises Invalid with a message.

A converter is ``conv(value, ctx) -> converted``; :class:`Ctx` carries the file (for errors with a line), the
environment (for credentials) and the config file's directory (relative file names resolve against it).
"""

from __future__ import annotations

import datetime as _dt
import difflib as _difflib
import ipaddress as _ipaddress
import math
import os as _os
import re as _re
import zoneinfo as _zoneinfo
from collections.abc import Callable as _Callable
from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import Any as _Any
from typing import NoReturn as _NoReturn
from typing import TypeVar as _TypeVar

from pollerd.config.locate import KeyPath as _Path
from pollerd.config.locate import Locator as _Locator
from pollerd.config.locate import format_path as _fmt_path
from pollerd.errors import ConfigError
from pollerd.units import NUMBER as _NUMBER
from pollerd.units import format_duration, format_size, parse_duration, parse_size
from pollerd.units import show_value as _show
from pollerd.units import toml_type as _toml_type

_T = _TypeVar("_T")


class _Invalid(Exception):
    """A value is wrong; ``sub`` extends the key path (e.g. an index into a list)."""

    def __init__(self, message: str, sub: _Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _got(expected: str, value: object) -> _Invalid:
    if isinstance(value, (dict, list)):  # _show would repeat the type: "got array array"
        return _Invalid(f"expected {expected}, got {_toml_type(value)}")
    return _Invalid(f"expected {expected}, got {_toml_type(value)} {_show(value)}")


def _did_you_mean(word: str, choices: _Iterable[object]) -> str:
    match = _difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _one_of(choices: _Iterable[object]) -> str:
    return ", ".join(str(c) for c in choices)

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


def _str(value: object, ctx: _Ctx | None) -> str:
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


# _timezone and _at (and _str under them) need no loader context: the sioi sink options call them with None
# so that "at" and "timezone" mean and fail the same way there.
def _timezone(value: object, ctx: _Ctx | None) -> str:
    s = _str(value, ctx)
    try:
        _zoneinfo.ZoneInfo(s)
    except (_zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _Invalid(f"unknown time zone {s!r} (expected an IANA name such as 'Europe/Berlin' or 'UTC')") \
            from None
    return s


_AT = _re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


def _at(value: object, ctx: _Ctx | None) -> _dt.time:
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

class _Abandoned(Exception):
    """A table had errors, already recorded in :attr:`_Ctx.errors`; checks of the table as a whole would only
    add follow-on errors about the keys that failed, so the loader skips them."""


class _Ctx:
    def __init__(self, source: str, locator: _Locator, environ: _Mapping[str, str], base_dir: str) -> None:
        self.source = source
        self.locator = locator
        self.environ = environ
        self.base_dir = base_dir
        # Every problem found so far: `pollerd check` lists them all instead of the first one.
        self.errors: list[ConfigError] = []

    def error(self, path: _Path, message: str, *, line_path: _Path | None = None) -> ConfigError:
        line = self.locator.find(path if line_path is None else line_path)
        return ConfigError(message, path=self.source, line=line, key=_fmt_path(path) or None)

    def fail(self, path: _Path, message: str, *, line_path: _Path | None = None) -> _NoReturn:
        raise self.error(path, message, line_path=line_path)

    def attempt(self, fn: _Callable[..., _T], *args: _Any) -> _T | None:
        """``fn(*args)``, or None after recording the error that stopped it: the loader carries on with the
        next table, so one run finds the problems of every table."""
        try:
            return fn(*args)
        except ConfigError as exc:
            self.errors.append(exc)
        except _Abandoned:
            pass
        return None

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
    """Convert every key of ``table`` in file order. Each unknown or invalid key is recorded in ``ctx.errors``;
    if there was one, the table is abandoned (:class:`_Abandoned`) after all its keys were looked at.
    ``known`` (default: the spec's keys) are the names an unknown key's "did you mean" picks from."""
    out: dict[str, _Any] = {}
    failed = False
    for key, raw in table.items():
        conv = spec.get(key)
        if conv is None:
            ctx.errors.append(ctx.error(path, f"unknown key {key!r}{_did_you_mean(key, spec if known is None else known)}",
                                        line_path=path + (key,)))
            failed = True
            continue
        try:
            out[key] = conv(raw, ctx)
        except _Invalid as exc:
            ctx.errors.append(ctx.error(path + (key,) + exc.sub, exc.message))
            failed = True
    if failed:
        raise _Abandoned
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
