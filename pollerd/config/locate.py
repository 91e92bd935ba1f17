"""Where a key path is defined in a TOML text: tomllib keeps no positions, so config errors find their line here."""

from __future__ import annotations

import bisect as _bisect
import re as _re
from array import array

__all__ = ["BARE_KEY", "KeyPath", "Locator", "format_path"]

KeyPath = tuple[str | int, ...]

BARE_KEY = _re.compile(r"[A-Za-z0-9_-]+")


# A table's keys: a key's line, or a sub-table (its own line under None).
_Node = dict["str | int | None", "int | _Node"]


def _own_line(node: _Node) -> int | None:
    line = node.get(None)
    return line if isinstance(line, int) else None


class Locator:
    """Maps key paths to the line that defines them, from the raw TOML text.

    tomllib keeps no positions, so this scans the (already valid) text for table headers, array-of-table
    headers and ``key =`` lines, including keys of one-line inline tables. Values inside arrays are not
    indexed: their keys resolve to the array's own line. Lookups fall back to the longest known prefix, so a
    missing key resolves to its table header.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        # Compact, because a 10 000-meter config has ~100 000 keys and all of it is alive while the config
        # loads, which set the daemon's peak memory (issue 18): the newline offsets as machine integers, and
        # the lines as a tree with one dict per table, a key's line as a plain int and None keying the table's
        # own line (a dict of every key path and each of its prefixes was 16.7 MB).
        self._newlines = array("q", [i for i, c in enumerate(text) if c == "\n"])
        self._tree: _Node = {}
        self._arrays: dict[KeyPath, int] = {}
        try:
            self._scan()
        except (IndexError, ValueError):
            # Positions are a convenience on top of a parse tomllib already accepted; a construct this
            # scanner does not follow costs line precision, never the load.
            pass

    def find(self, path: KeyPath) -> int | None:
        node: _Node = self._tree
        line: int | None = None
        for part in path:
            child = node.get(part)
            if child is None:
                break
            if isinstance(child, int):  # a key: nothing is defined below it
                return child
            node = child
            line = _own_line(node)
        return line

    def line_of_pos(self, pos: int) -> int:
        return _bisect.bisect_left(self._newlines, pos) + 1

    # scanning ------------------------------------------------------------------------------------------------

    def _record(self, path: KeyPath, line: int) -> None:
        """The line of ``path`` and of each prefix not seen before (the first definition wins)."""
        node = self._tree
        last = len(path) - 1
        for i, part in enumerate(path):
            child = node.get(part)
            if child is None:
                if i == last:
                    node[part] = line
                    return
                child = node[part] = {None: line}
            elif isinstance(child, int):
                if i == last:
                    return
                child = node[part] = {None: child}  # a key that turns out to hold keys (an inline table)
            node = child

    def _resolve(self, parts: list[str]) -> KeyPath:
        out: KeyPath = ()
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
                m = BARE_KEY.match(t, pos)
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
        table: KeyPath = ()
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

    def _value(self, pos: int, path: KeyPath | None) -> int:
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



def format_path(path: KeyPath) -> str:
    """("meters", 2, "read") -> ``meters[2].read``, quoting keys that are not bare."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + name
    return out
