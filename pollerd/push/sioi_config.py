"""АС СиОИ document sink: its config keys, the document template and the period arithmetic (no I/O here
except reading the template file once, at config load).

Seed 003 fixes the exchange (log in, upload an XML collection document for a form code, poll the job until
it is loaded or failed; finished jobs are kept at most 2 hours) but not its syntax: the service hands the
paths, field names and status codes out on request. So every path and field name is a key with a default.

Template format (a file the user owns, relative to the config file)::

    <doc form="{form_code}" from="{date_from}" to="{date_to}">
    <!-- for meter -->
      <object id="{meter}">
      <!-- for reading -->
        <value channel="{channel}" at="{ts_local}" unit="{unit}">{value:.3f}</value>
      <!-- end -->
      </object>
    <!-- end -->
    </doc>

``{field}`` or ``{field:format-spec}`` (Python format spec) is replaced by an XML-escaped value; ``{{`` and
``}}`` are literal braces; other XML comments are copied unfilled. A ``for meter`` block repeats per meter, a ``for reading`` block per reading (of the
enclosing meter, or of the whole document at top level). Unknown fields, fields used outside their block and
unbalanced blocks are config errors naming the template's line; the template filled with sample values must
be well-formed XML.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import xml.etree.ElementTree as _ET
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal as _Decimal

from pollerd.config import fields as _cfg
from pollerd.errors import OptionError
from pollerd.model import Reading
from pollerd.units import format_duration, parse_duration

# ---------------------------------------------------------------------------------------------------------------
# Template
# ---------------------------------------------------------------------------------------------------------------

HEADER_FIELDS = ("gateway", "sink", "form_code", "period", "period_start", "period_end", "date_from",
                 "date_to", "count", "meter_count")
METER_FIELDS = ("meter",)
READING_FIELDS = ("meter", "channel", "archive", "ts", "ts_iso", "ts_local", "date", "time", "value", "unit",
                  "quality")
_NUMERIC = frozenset({"value", "ts", "count", "meter_count"})

# Block markers, then other XML comments (copied as they are: placeholders in them stay unfilled, so a template
# can document itself), then braces.
_TOKEN = re.compile(r"<!--\s*for\s+(\w+)\s*-->|<!--\s*end\s*-->|(<!--.*?-->)|\{\{|\}\}|\{([^{}]*)\}|[{}]",
                    re.IGNORECASE | re.DOTALL)
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::(.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    spec: str
    line: int


@dataclass(frozen=True, slots=True)
class Gap:
    """A line that held only a block marker: dropped from documents, kept as a newline when checking the
    template, so a parse error's line number is the template's."""


@dataclass(frozen=True, slots=True)
class Block:
    kind: str                                   # "document", "meter" or "reading"
    parts: tuple[str | Field | Gap | Block, ...]
    line: int


class TemplateError(ValueError):
    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def _xml_escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
            .replace("'", "&apos;"))


def format_value(value: float) -> str:
    """Shortest exact text of a reading value: integers without a fraction, floats as repr (no exponent
    for the magnitudes meters report)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    text = repr(float(value))
    if "e" in text:  # 1e-07 -> 0.0000001: the shortest exact digits, never an exponent
        text = format(_Decimal(text), "f")
    return text


@dataclass(frozen=True, slots=True)
class Template:
    source: str          # file path, for messages
    root: Block

    @classmethod
    def parse(cls, text: str, source: str) -> Template:
        stack: list[tuple[str, int, list]] = [("document", 1, [])]
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() < pos:
                continue  # inside a marker line already consumed
            line = text.count("\n", 0, m.start()) + 1
            parts = stack[-1][2]
            tok = m.group(0)
            start, end = m.start(), m.end()
            gap = False
            if tok.startswith("<!--") and m.group(2) is None:
                # A marker alone on its line takes the whole line with it: documents get no blank lines.
                bol = text.rfind("\n", 0, start) + 1
                eol = text.find("\n", end)
                eol = len(text) if eol < 0 else eol
                if not text[bol:start].strip() and not text[end:eol].strip() and bol >= pos:
                    start, end, gap = bol, min(eol + 1, len(text)), True
            if start > pos:
                parts.append(text[pos:start])
            pos = end
            if m.group(1) is not None:
                kind = m.group(1).lower()
                if kind not in ("meter", "reading"):
                    raise TemplateError(f"unknown block '<!-- for {m.group(1)} -->' (blocks: for meter, "
                                        "for reading)", line)
                inside = [s[0] for s in stack]
                if kind in inside or "reading" in inside:
                    raise TemplateError(f"'<!-- for {kind} -->' cannot be inside a "
                                        f"'for {stack[-1][0]}' block", line)
                if gap:
                    parts.append(Gap())
                stack.append((kind, line, []))
            elif m.group(2) is not None:
                parts.append(tok)
            elif tok.startswith("<!--"):
                if len(stack) == 1:
                    raise TemplateError("'<!-- end -->' without a '<!-- for ... -->' block", line)
                if gap:
                    parts.append(Gap())
                kind, first, body = stack.pop()
                stack[-1][2].append(Block(kind, tuple(body), first))
            elif tok == "{{":
                parts.append("{")
            elif tok == "}}":
                parts.append("}")
            elif tok in ("{", "}"):
                raise TemplateError(f"lone {tok!r} (write {tok * 2} for a literal brace)", line)
            else:
                fm = _FIELD.fullmatch(m.group(3).strip())
                if fm is None:
                    raise TemplateError(f"bad placeholder {tok!r} (expected {{name}} or {{name:format}})", line)
                name, spec = fm.group(1), fm.group(2) or ""
                scope = {s[0] for s in stack}
                allowed = set(HEADER_FIELDS)
                if "meter" in scope:
                    allowed.update(METER_FIELDS)
                if "reading" in scope:
                    allowed.update(READING_FIELDS)
                if name not in allowed:
                    if name in READING_FIELDS or name in METER_FIELDS:
                        where = "'<!-- for reading -->'" if name not in METER_FIELDS else \
                            "'<!-- for meter -->' or '<!-- for reading -->'"
                        raise TemplateError(f"field {{{name}}} is only known inside a {where} block", line)
                    known = ", ".join(sorted(set(HEADER_FIELDS) | set(METER_FIELDS) | set(READING_FIELDS)))
                    raise TemplateError(f"unknown field {{{name}}} (known: {known})", line)
                sample: object = 1.5 if name in _NUMERIC else "x"
                try:
                    format(sample, spec)
                except (ValueError, TypeError) as exc:
                    raise TemplateError(f"bad format {spec!r} for {{{name}}}: {exc}", line) from None
                parts.append(Field(name, spec, line))
        if len(stack) > 1:
            raise TemplateError(f"'<!-- for {stack[-1][0]} -->' is never closed with '<!-- end -->'", stack[-1][1])
        if pos < len(text):
            stack[0][2].append(text[pos:])
        return cls(source, Block("document", tuple(stack[0][2]), 1))

    @classmethod
    def load(cls, path: str) -> Template:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except UnicodeDecodeError as exc:
            raise TemplateError(f"template is not UTF-8 (byte {exc.start})") from None
        except OSError as exc:
            raise TemplateError(f"cannot read the template: {exc.strerror or exc}") from None
        return cls.parse(text, path)

    # -- rendering ----------------------------------------------------------------------------------------

    def render(self, header: Mapping[str, object], readings: Sequence[Mapping[str, object]], *,
               keep_lines: bool = False) -> str:
        """Fill the template. ``readings`` are dicts of READING_FIELDS, in document order."""
        out: list[str] = []
        self._render(self.root, header, readings, out, "\n" if keep_lines else "")
        return "".join(out)

    def _render(self, block: Block, scope: Mapping[str, object], rows: Sequence[Mapping[str, object]],
                out: list[str], gap: str) -> None:
        for part in block.parts:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, Gap):
                out.append(gap)
            elif isinstance(part, Field):
                value = scope[part.name]
                if part.spec:
                    text = format(value, part.spec)
                elif isinstance(value, float):
                    text = format_value(value)
                else:
                    text = str(value)
                out.append(_xml_escape(text))
            elif part.kind == "meter":
                by_meter: dict[str, list[Mapping[str, object]]] = {}
                for r in rows:
                    by_meter.setdefault(str(r["meter"]), []).append(r)
                for meter, mine in by_meter.items():
                    self._render(part, {**scope, "meter": meter}, mine, out, gap)
            else:
                for r in rows:
                    self._render(part, {**scope, **r}, rows, out, gap)


SAMPLE_HEADER = {"gateway": "gw", "sink": "sioi", "form_code": "F1", "period": "2024-01-01",
                 "period_start": "2024-01-01T00:00:00+03:00", "period_end": "2024-01-02T00:00:00+03:00",
                 "date_from": "2024-01-01", "date_to": "2024-01-01", "count": 1, "meter_count": 1}
SAMPLE_READING = {"meter": "m1", "channel": "A+", "archive": "daily", "ts": 1704056400,
                  "ts_iso": "2023-12-31T21:00:00Z", "ts_local": "2024-01-01T00:00:00+03:00",
                  "date": "2024-01-01", "time": "00:00", "value": 1.5, "unit": "Wh", "quality": "good"}


def check_well_formed(template: Template, encoding: str) -> None:
    """Fill the template with one sample meter and reading and parse it: a broken tag is found at config load,
    not when the first document is due. Blocks render once each, so the filled lines match the template's."""
    text = template.render(SAMPLE_HEADER, [SAMPLE_READING], keep_lines=True)
    try:
        _ET.fromstring(text.encode(encoding, errors="xmlcharrefreplace"))
    except _ET.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        msg = re.sub(r":\s*line \d+, column \d+$", "", str(exc))
        raise TemplateError(f"not well-formed XML once filled in: {msg}", line) from None


# ---------------------------------------------------------------------------------------------------------------
# Periods: what one document covers. A period is named by its local start ("2024-05-01", or "2024-05").
# ---------------------------------------------------------------------------------------------------------------

PERIODS = ("daily", "monthly")


@dataclass(frozen=True, slots=True)
class Periods:
    kind: str              # "daily" | "monthly"
    tz: str
    at: _dt.time           # time of day (local) on the day after a period ends when its document is built

    @property
    def _zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.tz)

    def start_date(self, key: str) -> _dt.date:
        if self.kind == "daily":
            return _dt.date.fromisoformat(key)
        y, m = key.split("-")
        return _dt.date(int(y), int(m), 1)

    def key_of(self, d: _dt.date) -> str:
        return d.isoformat() if self.kind == "daily" else f"{d.year:04d}-{d.month:02d}"

    def next_date(self, d: _dt.date) -> _dt.date:
        if self.kind == "daily":
            return d + _dt.timedelta(days=1)
        return _dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)

    def prev_key(self, key: str) -> str:
        d = self.start_date(key)
        if self.kind == "daily":
            return self.key_of(d - _dt.timedelta(days=1))
        return self.key_of(_dt.date(d.year - (d.month == 1), (d.month - 2) % 12 + 1, 1))

    def next_key(self, key: str) -> str:
        return self.key_of(self.next_date(self.start_date(key)))

    def _local(self, d: _dt.date, t: _dt.time = _dt.time(0)) -> _dt.datetime:
        return _dt.datetime.combine(d, t, tzinfo=self._zone)

    def bounds(self, key: str) -> tuple[int, int]:
        """[start, end) of the period in UTC unix seconds (local midnights)."""
        d = self.start_date(key)
        return int(self._local(d).timestamp()), int(self._local(self.next_date(d)).timestamp())

    def build_time(self, key: str) -> float:
        """When the document of ``key`` is due: ``at`` on the first day after the period."""
        return self._local(self.next_date(self.start_date(key)), self.at).timestamp()

    def containing(self, ts: float) -> str:
        d = _dt.datetime.fromtimestamp(ts, self._zone).date()
        return self.key_of(d if self.kind == "daily" else d.replace(day=1))

    def header(self, key: str) -> dict[str, object]:
        d = self.start_date(key)
        end = self.next_date(d)
        return {"period": key, "period_start": self._local(d).isoformat(), "period_end": self._local(end).isoformat(),
                "date_from": d.isoformat(), "date_to": (end - _dt.timedelta(days=1)).isoformat()}

    def reading_fields(self, r: Reading, value_scale: float) -> dict[str, object]:
        utc = _dt.datetime.fromtimestamp(r.ts, _dt.timezone.utc)
        local = utc.astimezone(self._zone)
        value = r.value * value_scale if value_scale != 1.0 else r.value
        return {"meter": r.meter, "channel": r.channel, "archive": str(r.archive), "ts": r.ts,
                "ts_iso": utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "ts_local": local.isoformat(),
                "date": local.date().isoformat(), "time": local.strftime("%H:%M"), "value": float(value),
                "unit": r.unit, "quality": str(r.quality)}


# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------

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
    kw: dict[str, object] = {}
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
        at = _cfg._at(raw["at"], None) if "at" in raw else _dt.time(1, 0)  # type: ignore[arg-type]
    except _cfg._Invalid as exc:
        raise OptionError(exc.message, ("at",)) from None
    try:
        tz = _cfg._timezone(raw["timezone"], None) if "timezone" in raw else "UTC"  # type: ignore[arg-type]
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
    for key in ("meters", "channels", "archives"):
        if key in raw:
            kw[key] = _strings(raw, key)
    from pollerd.model import Archive
    archives = tuple(a.value for a in Archive)
    for i, name in enumerate(kw.get("archives", ())):  # type: ignore[arg-type]
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
    for key in _STATUS_KEYS:
        if key in raw:
            kw[key] = _strings(raw, key)
    seen: dict[str, str] = {}
    for key in _STATUS_KEYS:
        for value in kw.get(key, SioiOptions.__dataclass_fields__[key].default):  # type: ignore[attr-defined]
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
    return SioiOptions(**kw)  # type: ignore[arg-type]
