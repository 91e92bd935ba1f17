"""АС СиОИ sink keys (registered in config's sink option parsers).

Seed 003 fixes the exchange (log in, upload an XML collection document for a form code, poll the job until
it is loaded or failed; finished jobs are kept at most 2 hours) but not its syntax: the service hands the
paths, field names and status codes out on request. So every path and field name is a key with a default.

The template file is read once, here, at config load.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pollerd.config import fields as _cfg
from pollerd.errors import OptionError
from pollerd.units import format_duration, parse_duration

from .periods import PERIODS, Periods
from .template import Template, TemplateError, check_well_formed

JOB_RETENTION = 7200.0     # seed 003: finished jobs are kept in the queue at most 2 hours

_PATH_KEYS = ("auth_path", "upload_path", "status_path")
_FIELD_KEYS = ("login_field", "password_field", "token_field", "form_field", "file_field", "job_id_field",
               "status_field", "errors_field")
_STATUS_KEYS = ("status_loaded", "status_failed", "status_pending")


@dataclass(frozen=True, slots=True)
class SioiOptions:
    form_code: str
    template: Template
    template_path: str
    period: Periods
    catch_up: int = 7
    data_wait: float = 6 * 3600.0
    meters: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()
    value_scale: float = 1.0
    encoding: str = "utf-8"
    filename: str = "{form_code}_{period}.xml"
    auth_path: str = "/api/auth/login"
    upload_path: str = "/api/documents/upload"
    status_path: str = "/api/documents/status/{job_id}"
    auth_format: str = "json"
    login_field: str = "login"
    password_field: str = "password"
    token_field: str = "token"           # "" = the service keeps a session cookie instead of returning a token
    token_header: str = "Authorization"
    token_prefix: str = "Bearer "
    form_field: str = "formCode"
    file_field: str = "file"
    job_id_field: str = "jobId"
    status_field: str = "status"
    errors_field: str = "errors"
    status_loaded: tuple[str, ...] = ("loaded", "signed", "success", "done")
    status_failed: tuple[str, ...] = ("failed", "error", "rejected")
    status_pending: tuple[str, ...] = ("queued", "pending", "processing", "in_progress", "new")
    job_timeout: float = JOB_RETENTION
    status_poll: float = 30.0


KEYS = frozenset({
    "form_code", "template", "period", "at", "timezone", "catch_up", "data_wait", "meters", "channels",
    "archives", "value_scale", "encoding", "filename", "auth_format", "token_header", "token_prefix",
    "job_timeout", "status_poll", *_PATH_KEYS, *_FIELD_KEYS, *_STATUS_KEYS,
})


def _str(raw: Mapping[str, object], key: str, *, empty: bool = False) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise OptionError(f"expected a string, got {type(value).__name__} {value!r}", (key,))
    if not empty and not value.strip():
        raise OptionError("must not be empty", (key,))
    if "\n" in value or "\r" in value:
        raise OptionError("must be on one line", (key,))
    return value


def _strings(raw: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = raw[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise OptionError("expected a non-empty list of strings", (key,))
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise OptionError(f"expected a non-empty string, got {item!r}", (key, i))
    return tuple(value)


def _dur(raw: Mapping[str, object], key: str, lo: float) -> float:
    try:
        seconds = parse_duration(raw[key])
    except ValueError as exc:
        raise OptionError(str(exc), (key,)) from None
    if seconds < lo:
        raise OptionError(f"must be at least {format_duration(lo)}, got {raw[key]!r}", (key,))
    return seconds


def parse_options(raw: Mapping[str, object], base_dir: str) -> SioiOptions:
    """The sioi SinkSpec's option parser (push/registry.py): everything a document needs is checked here, at load."""
    # Each value is checked where it is set; SioiOptions(**kw) checks the names.
    kw: dict[str, Any] = {}
    if "form_code" not in raw:
        raise OptionError("missing required key 'form_code' (the collection form's code from АС СиОИ)")
    kw["form_code"] = _str(raw, "form_code")
    if "template" not in raw:
        raise OptionError("missing required key 'template' (an XML template file, e.g. \"sioi-template.xml\")")
    name = _str(raw, "template")
    path = os.path.join(base_dir, os.path.expanduser(name))
    if not os.path.isfile(path):
        raise OptionError(f"template file {name!r} does not exist ({path})", ("template",))
    encoding = _str(raw, "encoding") if "encoding" in raw else "utf-8"
    try:
        "x".encode(encoding)
    except LookupError:
        raise OptionError(f"unknown encoding {encoding!r} (e.g. \"utf-8\", \"windows-1251\")",
                          ("encoding",)) from None
    kw["encoding"] = encoding
    try:
        template = Template.load(path)
        check_well_formed(template, encoding)
    except TemplateError as exc:
        where = f"{name}:{exc.line}" if exc.line else name
        raise OptionError(f"{where}: {exc.message}", ("template",)) from None
    kw["template"], kw["template_path"] = template, path

    kind = _str(raw, "period") if "period" in raw else "daily"
    if kind not in PERIODS:
        raise OptionError(f"expected one of {', '.join(PERIODS)}, got {kind!r}", ("period",))
    # The meters' own converters, so "at" and "timezone" mean and fail the same way everywhere.
    try:
        at = _cfg._at(raw["at"], None) if "at" in raw else _dt.time(1, 0)
    except _cfg._Invalid as exc:
        raise OptionError(exc.message, ("at",)) from None
    try:
        tz = _cfg._timezone(raw["timezone"], None) if "timezone" in raw else "UTC"
    except _cfg._Invalid as exc:
        raise OptionError(exc.message, ("timezone",)) from None
    kw["period"] = Periods(kind, tz, at)

    if "catch_up" in raw:
        n = raw["catch_up"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 366:
            raise OptionError(f"expected an integer 1..366 (periods), got {n!r}", ("catch_up",))
        kw["catch_up"] = n
    if "data_wait" in raw:
        kw["data_wait"] = _dur(raw, "data_wait", 0.0)
    for key in ("meters", "channels"):
        if key in raw:
            kw[key] = _strings(raw, key)
    from pollerd.model import Archive
    archives = tuple(a.value for a in Archive)
    wanted = kw["archives"] = _strings(raw, "archives") if "archives" in raw else ()
    for i, name in enumerate(wanted):
        if name not in archives:
            # A name no reading carries would leave every document empty, silently.
            raise OptionError(f"{name!r} is not an archive{_cfg._did_you_mean(name, archives)}; "
                              f"known: {', '.join(archives)}", ("archives", i))
    if "value_scale" in raw:
        v = raw["value_scale"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v == 0:
            raise OptionError(f"expected a non-zero number (e.g. 0.001 for kWh from Wh), got {v!r}",
                              ("value_scale",))
        kw["value_scale"] = float(v)
    if "filename" in raw:
        fn = _str(raw, "filename")
        try:
            out = fn.format(form_code="F", period="P")
        except (KeyError, IndexError, ValueError) as exc:
            raise OptionError(f"bad file name pattern {fn!r}: only {{form_code}} and {{period}} are known "
                              f"({exc})", ("filename",)) from None
        if "/" in out or "\\" in out:
            raise OptionError("a file name, not a path", ("filename",))
        kw["filename"] = fn
    for key in _PATH_KEYS:
        if key in raw:
            p = _str(raw, key)
            if not p.startswith("/"):
                raise OptionError(f"a path starting with '/', relative to the sink url, got {p!r}", (key,))
            kw[key] = p
    if "status_path" in kw:
        try:
            str(kw["status_path"]).format(job_id="1")
        except (KeyError, IndexError, ValueError) as exc:
            raise OptionError(f"only {{job_id}} may appear in braces ({exc})", ("status_path",)) from None
    if "auth_format" in raw:
        fmt = _str(raw, "auth_format")
        if fmt not in ("json", "form"):
            raise OptionError(f"expected \"json\" or \"form\", got {fmt!r}", ("auth_format",))
        kw["auth_format"] = fmt
    for key in _FIELD_KEYS:
        if key in raw:
            kw[key] = _str(raw, key, empty=(key == "token_field"))
    if "token_header" in raw:
        h = _str(raw, "token_header")
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", h):
            raise OptionError(f"{h!r} is not a valid HTTP header name", ("token_header",))
        kw["token_header"] = h
    if "token_prefix" in raw:
        kw["token_prefix"] = _str(raw, "token_prefix", empty=True)
    statuses: dict[str, tuple[str, ...]] = {f.name: f.default for f in dataclasses.fields(SioiOptions)
                                            if f.name in _STATUS_KEYS and isinstance(f.default, tuple)}
    for key in _STATUS_KEYS:
        if key in raw:
            statuses[key] = kw[key] = _strings(raw, key)
    seen: dict[str, str] = {}
    for key in _STATUS_KEYS:
        for value in statuses[key]:
            other = seen.get(value.lower())
            if other is not None and other != key:
                blame = other if other in raw and key not in raw else key  # the key the user wrote
                raise OptionError(f"status {value!r} is listed in both {other} and {key}"
                                  + ("" if other in raw and key in raw else " (default)"), (blame,))
            seen[value.lower()] = key
    if "job_timeout" in raw:
        t = _dur(raw, "job_timeout", 1.0)
        if t > JOB_RETENTION:
            raise OptionError("must be at most 2h: АС СиОИ keeps jobs at most 2 hours, a later status query "
                              "cannot succeed", ("job_timeout",))
        kw["job_timeout"] = t
    if "status_poll" in raw:
        kw["status_poll"] = _dur(raw, "status_poll", 0.05)
    return SioiOptions(**kw)
