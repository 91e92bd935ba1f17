"""АС СиОИ document template engine: a small XML template language filled with a period's header and
readings.

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

import math
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal as _Decimal
from typing import Any

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
        stack: list[tuple[str, int, list[Any]]] = [("document", 1, [])]
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
        ElementTree.fromstring(text.encode(encoding, errors="xmlcharrefreplace"))
    except ElementTree.ParseError as exc:
        line = exc.position[0] if getattr(exc, "position", None) else None
        msg = re.sub(r":\s*line \d+, column \d+$", "", str(exc))
        raise TemplateError(f"not well-formed XML once filled in: {msg}", line) from None
